//! One container: its init process, its execs, and the runc verbs that act on them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::protos::events::task::{TaskExit, TaskPaused, TaskResumed};

use super::bundle::BundleSpec;
use super::cgroup::CgroupPaths;
use super::error::{TaskError, TaskResult};
use super::events::{timestamp, EventSink};
use super::exits::ExitBook;
use super::mount;
use super::oom::OomWatch;
use super::process::{Exited, Process, Status};
use super::stdio::wait_drained;
use crate::guard::{ContainerGuard, Guard};
use crate::runc::{Runc, Spawner};

/// How long Delete waits for a process' output to drain before closing its stdio.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long Delete of a created container waits for the exit of the init runc killed.
const CREATED_EXIT_LIMIT: Duration = Duration::from_secs(1);

/// What every container of this shim shares.
pub struct Shared {
    /// containerd namespace.
    pub namespace: String,
    /// Starts runc (through the reaper).
    pub spawner: Arc<dyn Spawner>,
    /// Event queue to containerd.
    pub events: EventSink,
    /// The node's guard.
    pub guard: Arc<dyn Guard>,
    /// pid -> process.
    pub book: ExitBook,
    /// Watch each container's memory cgroup for OOM kills. Off only where container
    /// processes have no cgroup of their own (a fake runtime in tests).
    pub watch_oom: bool,
}

/// A container known to this shim.
pub struct Container {
    /// containerd's id.
    pub id: String,
    /// Bundle folder.
    pub bundle: PathBuf,
    /// The init process.
    pub init: Arc<Process>,
    pub(super) runc: Runc,
    pub(super) shared: Arc<Shared>,
    pub(super) guard: Box<dyn ContainerGuard>,
    pub(super) spec: BundleSpec,
    pub(super) rootfs: Option<PathBuf>,
    pub(super) cgroups: Option<CgroupPaths>,
    pub(super) oom: Option<Arc<OomWatch>>,
    pub(super) execs: Mutex<HashMap<String, Arc<Process>>>,
}

impl Container {
    pub(super) fn execs(&self) -> MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The init process (`exec_id` empty) or an exec.
    pub fn process(&self, exec_id: &str) -> TaskResult<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs().get(exec_id).cloned().ok_or_else(|| {
            TaskError::NotFound(format!("process {exec_id} of container {}", self.id))
        })
    }

    fn events(&self) -> &EventSink {
        &self.shared.events
    }

    /// Records a process' exit and publishes it (TaskOOM first when the kernel counted an
    /// OOM kill in this container that was not reported yet).
    pub fn finish_exit(self: &Arc<Self>, p: &Arc<Process>, exit: Exited) {
        let is_init = p.exec_id.is_empty();
        let pid = p.pid();
        p.finish_exit(exit, || {
            if let Some(oom) = self.oom.as_ref().filter(|_| is_init) {
                oom.check();
            }
            self.events().send(TaskExit {
                container_id: self.id.clone(),
                id: if is_init {
                    self.id.clone()
                } else {
                    p.exec_id.clone()
                },
                pid,
                exit_status: exit.code,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            });
        });
        tracing::info!(id = %self.id, exec_id = %p.exec_id, pid, status = exit.code, "process exited");
        if is_init {
            self.after_init_exit(exit);
        }
    }

    fn after_init_exit(self: &Arc<Self>, exit: Exited) {
        let me = self.clone();
        tokio::spawn(async move {
            // Without a pid namespace of its own nothing else ends the other processes.
            if me.spec.shares_pid_ns {
                if let Err(e) = me.runc.kill(&me.id, libc::SIGKILL as u32, true).await {
                    tracing::debug!(id = %me.id, error = %e, "kill remaining processes");
                }
            }
            me.guard.exited(exit.code).await;
        });
    }

    /// `runc start` for the init process.
    pub async fn start_init(self: &Arc<Self>) -> TaskResult<u32> {
        let p = self.init.clone();
        let _op = p.op.lock().await;
        expect_created(&p)?;
        p.hold();
        if let Err(e) = self.runc.start(&self.id).await {
            if let Some(exit) = p.release(None, || {}) {
                self.finish_exit(&p, exit);
            }
            return Err(TaskError::runtime("OCI runtime start failed", e));
        }
        let pid = p.pid();
        let held = p.release(Some(Status::Running), || {
            self.events()
                .send(containerd_shim::protos::events::task::TaskStart {
                    container_id: self.id.clone(),
                    pid,
                    ..Default::default()
                });
        });
        if let Some(exit) = held {
            self.finish_exit(&p, exit);
        }
        tracing::info!(id = %self.id, pid, "container started");
        Ok(pid)
    }

    /// Sends a signal to the init process (through runc) or to an exec.
    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> TaskResult<()> {
        let p = self.process(exec_id)?;
        if !exec_id.is_empty() {
            if p.pid() == 0 {
                // A Start in flight holds `op` until runc exec returned the pid; the Go shim's
                // kill waits on its pid lock the same way instead of answering "not created"
                // for a process that already runs.
                let _op = p.op.lock().await;
            }
            return kill_exec(&p, signal);
        }
        self.runc.kill(&self.id, signal, all).await.map_err(|e| {
            if e.is_not_found() {
                TaskError::NotFound("process already finished".into())
            } else {
                TaskError::runtime("unknown error after kill", e)
            }
        })?;
        tracing::info!(id = %self.id, pid = p.pid(), signal, all, "signalled container");
        Ok(())
    }

    /// `runc pause`.
    pub async fn pause(&self) -> TaskResult<()> {
        let _op = self.init.op.lock().await;
        if self.init.status() != Status::Running {
            return Err(TaskError::FailedPrecondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        self.runc
            .pause(&self.id)
            .await
            .map_err(|e| TaskError::runtime("OCI runtime pause failed", e))?;
        self.init.transition(Status::Running, Status::Paused);
        self.events().send(TaskPaused {
            container_id: self.id.clone(),
            ..Default::default()
        });
        tracing::info!(id = %self.id, pid = self.init.pid(), "container paused");
        Ok(())
    }

    /// `runc resume`.
    pub async fn resume(&self) -> TaskResult<()> {
        let _op = self.init.op.lock().await;
        if self.init.status() != Status::Paused {
            return Err(TaskError::FailedPrecondition(format!(
                "container {} is not paused",
                self.id
            )));
        }
        self.runc
            .resume(&self.id)
            .await
            .map_err(|e| TaskError::runtime("OCI runtime resume failed", e))?;
        self.init.transition(Status::Paused, Status::Running);
        self.events().send(TaskResumed {
            container_id: self.id.clone(),
            ..Default::default()
        });
        tracing::info!(id = %self.id, pid = self.init.pid(), "container resumed");
        Ok(())
    }

    /// Removes an exec that is not running; waits (bounded) for its output first.
    pub async fn delete_exec(&self, exec_id: &str) -> TaskResult<Arc<Process>> {
        let p = self.process(exec_id)?;
        {
            let _op = p.op.lock().await;
            if p.status() == Status::Running {
                let msg = format!("cannot delete running process {exec_id}");
                return Err(TaskError::FailedPrecondition(msg));
            }
            close_io(&p).await;
            self.execs().remove(exec_id);
            self.shared.book.forget(p.pid(), &p);
        }
        tracing::info!(id = %self.id, exec_id, pid = p.pid(), "exec deleted");
        Ok(p)
    }

    /// Removes the container from runc and the node: the init must not be running.
    pub async fn delete_init(&self) -> TaskResult<()> {
        let p = self.init.clone();
        let _op = p.op.lock().await;
        let was_created = match p.status() {
            Status::Running => return Err(busy("cannot delete a running process")),
            Status::Paused => return Err(busy("cannot delete a paused process")),
            Status::Created => true,
            Status::Stopped => false,
        };
        close_io(&p).await;
        let result = match self.runc.delete(&self.id, false).await {
            Err(e) if !e.to_string().contains("does not exist") => {
                Err(TaskError::runtime("failed to delete task", e))
            }
            _ => Ok(()),
        };
        // runc kills a created init: report that exit (137) before TaskDelete, as the Go
        // shim's reaper does, unless the reaper is slower than a second.
        if was_created && result.is_ok() {
            let _ = tokio::time::timeout(CREATED_EXIT_LIMIT, p.wait()).await;
        }
        self.shared.book.forget(p.pid(), &p);
        self.release_node_state().await;
        result
    }

    /// Everything but runc's state: execs' stdio, OOM watch, guard, rootfs.
    pub(super) async fn release_node_state(&self) {
        let execs: Vec<_> = self.execs().drain().map(|(_, p)| p).collect();
        for e in execs {
            self.shared.book.forget(e.pid(), &e);
            drop(e.take_io());
        }
        if let Some(oom) = &self.oom {
            oom.stop();
        }
        self.guard.deleted().await;
        if let Some(rootfs) = &self.rootfs {
            if let Err(e) = mount::unmount_all(rootfs) {
                tracing::warn!(id = %self.id, error = %e, "rootfs unmount failed; continuing");
            }
        }
    }
}

fn busy(msg: &str) -> TaskError {
    TaskError::FailedPrecondition(msg.to_string())
}

fn expect_created(p: &Process) -> TaskResult<()> {
    match p.status() {
        Status::Created => Ok(()),
        Status::Stopped => Err(TaskError::FailedPrecondition(
            "cannot start a stopped process".into(),
        )),
        Status::Running | Status::Paused => Err(TaskError::FailedPrecondition(
            "cannot start an already running process".into(),
        )),
    }
}

/// Waits up to [`DRAIN_LIMIT`] for output, then closes the process' stdio.
async fn close_io(p: &Process) {
    let Some(mut io) = p.take_io() else { return };
    if !wait_drained(io.drained(), DRAIN_LIMIT).await {
        tracing::debug!(exec_id = %p.exec_id, "output still open after drain limit; closing it");
    }
    io.shutdown();
}

fn kill_exec(p: &Process, signal: u32) -> TaskResult<()> {
    let pid = p.pid();
    if pid == 0 {
        return Err(TaskError::FailedPrecondition(format!(
            "process {} not created",
            p.exec_id
        )));
    }
    if p.exited().is_some() {
        return Err(TaskError::NotFound("process already finished".into()));
    }
    let sig = i32::try_from(signal)
        .map_err(|_| TaskError::InvalidArgument(format!("bad signal {signal}")))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(TaskError::NotFound("process already finished".into()));
        }
        return Err(TaskError::io(
            format!("signal {sig} to exec {}", p.exec_id),
            err,
        ));
    }
    tracing::info!(exec_id = %p.exec_id, pid, signal, "signalled exec");
    Ok(())
}
