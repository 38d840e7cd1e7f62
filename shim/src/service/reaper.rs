//! The shim is a subreaper: it waits for every child, its own runc invocations and the
//! container processes reparented to it alike.
//!
//! One `waitpid(-1)` loop runs on SIGCHLD. An exit whose pid a [`Spawner`] caller registered
//! goes to that caller; every other exit goes to the task service's exit stream. Spawning
//! and registering happen under the same lock the dispatcher takes, so a child that dies
//! before its pid is registered is still matched.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::runc::{exit_code, Spawned, Spawner};

/// A process that ended and was not started through the reaper.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// Its pid.
    pub pid: i32,
    /// Exit code, 128+signal when killed.
    pub code: i32,
    /// When the shim reaped it.
    pub at: SystemTime,
}

/// Waits for all children; see the module docs.
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<i32>>>,
    others: mpsc::UnboundedSender<Exit>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts reaping. Call before the first spawn.
    pub fn start() -> io::Result<(Arc<Reaper>, mpsc::UnboundedReceiver<Exit>)> {
        let mut sigchld = signal(SignalKind::child())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let reaper = Arc::new(Reaper {
            waiters: Mutex::new(HashMap::new()),
            others: tx,
        });
        let weak = Arc::downgrade(&reaper);
        tokio::spawn(async move {
            loop {
                let Some(reaper) = weak.upgrade() else { return };
                reaper.reap_all();
                drop(reaper);
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok((reaper, rx))
    }

    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if let Some((pid, code)) = exit_code(status) {
                        self.dispatch(pid, code);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed; retrying on next SIGCHLD");
                    return;
                }
            }
        }
    }

    fn dispatch(&self, pid: i32, code: i32) {
        let waiter = self.lock().remove(&pid);
        match waiter {
            Some(tx) => {
                let _ = tx.send(code);
            }
            None => {
                let exit = Exit {
                    pid,
                    code,
                    at: SystemTime::now(),
                };
                let _ = self.others.send(exit);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<i32>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Spawner for Reaper {
    fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let mut waiters = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id();
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid as i32, tx);
        Ok(Spawned::new(pid, rx))
    }
}
