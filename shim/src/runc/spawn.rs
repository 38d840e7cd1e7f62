//! Starting child processes and learning how they ended.

use std::io;
use std::process::Command;

use nix::sys::wait::WaitStatus;
use tokio::sync::oneshot;

use super::RuncError;

/// A started child; [`Spawned::wait`] yields its exit code.
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    exit: oneshot::Receiver<i32>,
}

impl Spawned {
    /// A child whose exit code will arrive on `exit`.
    pub fn new(pid: u32, exit: oneshot::Receiver<i32>) -> Self {
        Spawned { pid, exit }
    }

    /// Waits for the exit code (128+signal when killed by a signal).
    pub async fn wait(self) -> Result<i32, RuncError> {
        let pid = self.pid;
        self.exit.await.map_err(|_| {
            let msg = format!("exit status of child {pid} was lost");
            RuncError::Io(io::Error::other(msg))
        })
    }
}

/// Starts processes and reports their exit codes.
pub trait Spawner: Send + Sync {
    /// Starts `cmd`. The implementation, not the caller, waits for the child.
    fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned>;
}

/// Waits for each child on a thread of its own; for short-lived actions without a reaper.
pub struct DirectSpawner;

impl Spawner for DirectSpawner {
    fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let code = match child.wait() {
                Ok(status) => status_code(status),
                Err(_) => 255,
            };
            let _ = tx.send(code);
        });
        Ok(Spawned::new(pid, rx))
    }
}

fn status_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

/// containerd's exit code for a wait status: the exit code, or 128+signal.
pub fn exit_code(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}
