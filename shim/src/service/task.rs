//! The ttrpc Task service containerd talks to.
//!
//! No lock is held across an await that waits for a process or its I/O: the container
//! table is locked only to look up, insert or remove; each process has its own short state
//! lock and a lifecycle lock that serialises runc calls on that process alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::TaskDelete;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::shim::oci::ProcessDetails;
use containerd_shim::protos::shim::shim::CheckpointTaskRequest;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use tokio::sync::mpsc;

use super::cgroup::metrics;
use super::container::{Container, Shared};
use super::create;
use super::error::{TaskError, TaskResult};
use super::events::{timestamp, EventSink};
use super::exits::ExitBook;
use super::process::{Exited, Status};
use super::reaper::{Exit, Reaper};
use crate::guard::Guard;

/// The task service of one shim process (one container, or one pod's containers).
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    exit: Arc<ExitSignal>,
    socket: String,
}

impl TaskService {
    /// Starts the reaper and the exit loop; `events` feeds containerd. `watch_oom` is off
    /// only for a fake runtime whose processes share the caller's cgroups.
    pub fn new(
        namespace: &str,
        guard: Arc<dyn Guard>,
        events: EventSink,
        exit: Arc<ExitSignal>,
        socket: &str,
        watch_oom: bool,
    ) -> std::io::Result<TaskService> {
        let (reaper, exits) = Reaper::start()?;
        let shared = Arc::new(Shared {
            namespace: namespace.to_string(),
            spawner: reaper,
            events,
            guard,
            book: ExitBook::default(),
            watch_oom,
        });
        let inner = Arc::new(Inner {
            shared,
            containers: Mutex::new(HashMap::new()),
            exit,
            socket: socket.to_string(),
        });
        tokio::spawn(exit_loop(Arc::downgrade(&inner), exits));
        Ok(TaskService { inner })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn container(&self, id: &str) -> TaskResult<Arc<Container>> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::NotFound(format!("container {id}")))
    }
}

/// Hands every reaped container process to its container.
async fn exit_loop(inner: std::sync::Weak<Inner>, mut exits: mpsc::UnboundedReceiver<Exit>) {
    while let Some(exit) = exits.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let Some(owner) = inner.shared.book.take(&exit) else {
            continue;
        };
        let exited = Exited {
            code: exit.code as u32,
            at: exit.at,
        };
        if let Some(e) = owner.process.offer_exit(exited) {
            owner.container.finish_exit(&owner.process, e);
        }
    }
}

fn delete_response(pid: u32, exit: Option<Exited>) -> DeleteResponse {
    DeleteResponse {
        pid,
        exit_status: exit.map_or(0, |e| e.code),
        exited_at: Some(timestamp(exit.map_or_else(SystemTime::now, |e| e.at))).into(),
        ..Default::default()
    }
}

fn any_of(message: &dyn containerd_shim::protos::protobuf::MessageDyn) -> Option<Any> {
    let value = message.write_to_bytes_dyn().ok()?;
    let type_url = message.descriptor_dyn().full_name().to_string();
    Some(Any {
        type_url,
        value,
        ..Default::default()
    })
}

impl TaskService {
    async fn do_create(&self, req: CreateTaskRequest) -> TaskResult<CreateTaskResponse> {
        if self.table().contains_key(&req.id) {
            return Err(TaskError::AlreadyExists(format!("container {}", req.id)));
        }
        let c = create::create(&self.inner.shared, &req).await?;
        self.table().insert(req.id.clone(), c.clone());
        create::announce(&c, &req);
        Ok(CreateTaskResponse {
            pid: c.init.pid(),
            ..Default::default()
        })
    }

    async fn do_delete(&self, req: DeleteRequest) -> TaskResult<DeleteResponse> {
        let c = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            let p = c.delete_exec(&req.exec_id).await?;
            return Ok(delete_response(p.pid(), p.exited()));
        }
        c.delete_init().await?;
        self.table().remove(&req.id);
        let (pid, exit) = (c.init.pid(), c.init.exited());
        let resp = delete_response(pid, exit);
        self.inner.shared.events.send(TaskDelete {
            container_id: c.id.clone(),
            pid,
            exit_status: resp.exit_status,
            exited_at: resp.exited_at.clone(),
            ..Default::default()
        });
        tracing::info!(id = %c.id, pid, status = resp.exit_status, "container deleted");
        Ok(resp)
    }

    async fn do_pids(&self, req: PidsRequest) -> TaskResult<PidsResponse> {
        let c = self.container(&req.id)?;
        let pids = c
            .runc
            .ps(&c.id)
            .await
            .map_err(|e| TaskError::runtime("failed to list pids", e))?;
        let execs: HashMap<u32, String> = c
            .execs()
            .values()
            .map(|p| (p.pid(), p.exec_id.clone()))
            .collect();
        let processes = pids
            .into_iter()
            .map(|pid| {
                let pid = pid as u32;
                let info = execs.get(&pid).and_then(|exec_id| {
                    any_of(&ProcessDetails {
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    })
                });
                ProcessInfo {
                    pid,
                    info: info.into(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn do_update(&self, req: UpdateTaskRequest) -> TaskResult<()> {
        let c = self.container(&req.id)?;
        let value = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        if !serde_json::from_slice::<serde_json::Value>(&value).is_ok_and(|v| v.is_object()) {
            return Err(TaskError::InvalidArgument(
                "update: resources are not a JSON object".into(),
            ));
        }
        let file = tempfile::Builder::new()
            .prefix(".update-")
            .tempfile_in(&c.bundle)
            .map_err(|e| TaskError::io("create resources file", e))?;
        std::fs::write(file.path(), &value)
            .map_err(|e| TaskError::io("write resources file", e))?;
        c.runc
            .update(&c.id, file.path())
            .await
            .map_err(|e| TaskError::runtime("OCI runtime update failed", e))?;
        tracing::info!(id = %c.id, pid = c.init.pid(), "container resources updated");
        Ok(())
    }

    fn do_shutdown(&self) {
        if !self.table().is_empty() {
            return;
        }
        let path = self.inner.socket.trim_start_matches("unix://");
        if !path.is_empty() {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::debug!(socket = path, error = %e, "remove shim socket");
            }
        }
        tracing::info!("no containers left; shim exits");
        self.inner.exit.signal();
    }
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let exit = p.exited();
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                c.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.display().to_string(),
            pid: p.pid(),
            status: p.status().proto().into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        Ok(self.do_create(req).await?)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let c = self.container(&req.id)?;
        let pid = if req.exec_id.is_empty() {
            c.start_init().await?
        } else {
            c.start_exec(&req.exec_id).await?
        };
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        Ok(self.do_delete(req).await?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        Ok(self.do_pids(req).await?)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        self.container(&req.id)?.pause().await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        self.container(&req.id)?.resume().await?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        let msg = format!("checkpoint of container {}: not supported by vigil", req.id);
        Err(TaskError::Unimplemented(msg).into())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let c = self.container(&req.id)?;
        c.kill(&req.exec_id, req.signal, req.all).await?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        self.container(&req.id)?.add_exec(&req)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        if p.status() == Status::Stopped {
            return Err(TaskError::Internal("cannot resize a stopped container".into()).into());
        }
        let resized = p
            .with_io(|io| io.resize(req.width, req.height))
            .unwrap_or(Ok(()));
        resized.map_err(|e| TaskError::io("resize terminal", e))?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        if req.stdin {
            p.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        self.do_update(req).await?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        let exit = p.wait().await;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let c = self.container(&req.id)?;
        let stats = c.cgroups.as_ref().and_then(metrics).ok_or_else(|| {
            TaskError::FailedPrecondition(format!("container {}: its cgroup was not found", c.id))
        })?;
        Ok(StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let task_pid = self.container(&req.id).map_or(0, |c| c.init.pid());
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        self.do_shutdown();
        Ok(Empty::new())
    }
}
