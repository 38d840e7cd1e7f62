//! Exec: an extra process in a running container (`ctr task exec`, `kubectl exec`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::ExecProcessRequest;
use containerd_shim::protos::events::task::{TaskExecAdded, TaskExecStarted};

use super::container::Container;
use super::error::{TaskError, TaskResult};
use super::exits::Owner;
use super::process::{Process, Status};
use super::stdio::{wire, ProcessIo, StdioPaths};
use crate::runc::{read_pid_file, LaunchOpts};

impl Container {
    /// Registers an exec (not started yet) and announces it.
    pub fn add_exec(&self, req: &ExecProcessRequest) -> TaskResult<()> {
        if req.exec_id.is_empty() {
            return Err(TaskError::InvalidArgument("exec: exec id is empty".into()));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        if !serde_json::from_slice::<serde_json::Value>(&spec).is_ok_and(|v| v.is_object()) {
            let msg = format!(
                "exec {}: the process spec is not a JSON object",
                req.exec_id
            );
            return Err(TaskError::InvalidArgument(msg));
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        {
            let mut execs = self.execs();
            if execs.contains_key(&req.exec_id) {
                return Err(TaskError::AlreadyExists(format!("id {}", req.exec_id)));
            }
            let p = Arc::new(Process::new(&req.exec_id, stdio, spec));
            execs.insert(req.exec_id.clone(), p);
        }
        self.shared.events.send(TaskExecAdded {
            container_id: self.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        tracing::debug!(id = %self.id, exec_id = %req.exec_id, "exec added");
        Ok(())
    }

    /// `runc exec --detach`; publishes TaskExecStarted before any exit of the process.
    pub async fn start_exec(self: &Arc<Self>, exec_id: &str) -> TaskResult<u32> {
        let p = self.process(exec_id)?;
        let _op = p.op.lock().await;
        if p.status() != Status::Created {
            return Err(TaskError::FailedPrecondition(format!(
                "process {exec_id} was already started"
            )));
        }
        let (pid, io) = self.launch_exec(&p).await?;
        p.set_io(io);
        let owner = Owner {
            container: self.clone(),
            process: p.clone(),
        };
        let early = self.shared.book.finish_launch(pid, owner, || {
            p.set_pid_status(pid, Status::Running);
            self.shared.events.send(TaskExecStarted {
                container_id: self.id.clone(),
                exec_id: exec_id.to_string(),
                pid,
                ..Default::default()
            });
        });
        self.guard.exec_started(exec_id, pid).await;
        if let Some(exit) = early.and_then(|e| p.offer_exit(e)) {
            self.finish_exit(&p, exit);
        }
        tracing::info!(id = %self.id, exec_id, pid, "exec started");
        Ok(pid)
    }

    /// Runs runc; on success the launch is still open (the caller registers the pid).
    async fn launch_exec(&self, p: &Process) -> TaskResult<(u32, ProcessIo)> {
        let files = ExecFiles::new(&self.bundle, &p.spec)?;
        let (wiring, stdio) = wire(&p.stdio).await?;
        let socket = wiring.console_socket().map(Path::to_path_buf);
        let (pid_file, log) = (files.pid(), files.log());
        let opts = LaunchOpts {
            pid_file: &pid_file,
            console_socket: socket.as_deref(),
            log: &log,
        };
        self.shared.book.begin_launch();
        let launched = async {
            self.runc
                .exec(&self.id, &files.process(), &opts, stdio)
                .await
                .map_err(|e| TaskError::runtime("OCI runtime exec failed", e))?;
            let pid = read_pid_file(&files.pid())
                .await
                .map_err(|e| TaskError::io("read exec pid", e))?;
            let io = match wiring.finish(&p.stdio).await {
                Ok(io) => io,
                Err(e) => {
                    // A terminal process without its terminal is useless: end it.
                    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return Err(e);
                }
            };
            Ok::<_, TaskError>((pid, io))
        }
        .await;
        if launched.is_err() {
            self.shared.book.abort_launch();
        }
        launched
    }
}

/// Per-exec files in a private folder of the bundle: process spec, pid file, runc's log.
struct ExecFiles {
    dir: tempfile::TempDir,
}

impl ExecFiles {
    fn new(bundle: &Path, spec: &[u8]) -> TaskResult<ExecFiles> {
        let dir = tempfile::Builder::new()
            .prefix(".exec-")
            .tempdir_in(bundle)
            .map_err(|e| TaskError::io(format!("create exec folder in {}", bundle.display()), e))?;
        let files = ExecFiles { dir };
        std::fs::write(files.process(), spec)
            .map_err(|e| TaskError::io("write exec process spec", e))?;
        Ok(files)
    }

    fn process(&self) -> PathBuf {
        self.dir.path().join("process.json")
    }

    fn pid(&self) -> PathBuf {
        self.dir.path().join("pid")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log.json")
    }
}
