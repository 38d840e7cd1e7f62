//! One process of a container: the init process or an exec, its state and its exit.

use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use containerd_shim::protos::types::task::Status as ProtoStatus;
use tokio::sync::watch;

use super::stdio::{ProcessIo, StdioPaths};

/// Lifecycle state, as containerd sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Started, not exited.
    Running,
    /// Frozen (init only).
    Paused,
    /// Exited.
    Stopped,
}

impl Status {
    /// The protobuf enum.
    pub fn proto(self) -> ProtoStatus {
        match self {
            Status::Created => ProtoStatus::CREATED,
            Status::Running => ProtoStatus::RUNNING,
            Status::Paused => ProtoStatus::PAUSED,
            Status::Stopped => ProtoStatus::STOPPED,
        }
    }
}

/// How and when a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    /// Exit code, 128+signal when killed.
    pub code: u32,
    /// When the shim reaped it.
    pub at: SystemTime,
}

#[derive(Debug)]
struct State {
    status: Status,
    pid: u32,
    /// A lifecycle call is publishing this process' create/start event: hold exits until
    /// it has, so TaskExit never overtakes TaskCreate / TaskStart.
    holding: bool,
    held: Option<Exited>,
    exited: Option<Exited>,
}

/// A container process.
pub struct Process {
    /// `""` for the init process.
    pub exec_id: String,
    /// Its stdio as containerd named it.
    pub stdio: StdioPaths,
    /// Exec only: the OCI process JSON to hand to `runc exec`.
    pub spec: Vec<u8>,
    /// Serialises lifecycle calls that run runc for this process.
    pub op: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    exit_tx: watch::Sender<Option<Exited>>,
    io: Mutex<IoSlot>,
}

/// The stdio copiers, and a `CloseIO` that arrived before they existed (containerd's client
/// may close stdin while Start is still running runc).
#[derive(Default)]
struct IoSlot {
    io: Option<ProcessIo>,
    stdin_closed: bool,
}

impl Process {
    /// A process in state `Created` that holds exits until [`Process::release`].
    pub fn new(exec_id: &str, stdio: StdioPaths, spec: Vec<u8>) -> Process {
        let (exit_tx, _) = watch::channel(None);
        Process {
            exec_id: exec_id.to_string(),
            stdio,
            spec,
            op: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                status: Status::Created,
                pid: 0,
                holding: false,
                held: None,
                exited: None,
            }),
            exit_tx,
            io: Mutex::new(IoSlot::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pid, 0 before it exists.
    pub fn pid(&self) -> u32 {
        self.state().pid
    }

    /// Current state.
    pub fn status(&self) -> Status {
        self.state().status
    }

    /// The exit, once it happened.
    pub fn exited(&self) -> Option<Exited> {
        self.state().exited
    }

    /// Sets the pid and state (`Created` after create, `Running` after start / exec).
    pub fn set_pid_status(&self, pid: u32, status: Status) {
        let mut s = self.state();
        s.pid = pid;
        if s.status != Status::Stopped {
            s.status = status;
        }
    }

    /// Changes state unless the process already stopped; returns whether it changed.
    pub fn transition(&self, from: Status, to: Status) -> bool {
        let mut s = self.state();
        if s.status != from {
            return false;
        }
        s.status = to;
        true
    }

    /// Starts holding exits (before runc create / start).
    pub fn hold(&self) {
        self.state().holding = true;
    }

    /// Stops holding: moves to `now` (unless stopped), runs `publish` under the state lock,
    /// and returns an exit that arrived meanwhile.
    pub fn release(&self, now: Option<Status>, publish: impl FnOnce()) -> Option<Exited> {
        let mut s = self.state();
        if let Some(status) = now.filter(|_| s.status != Status::Stopped) {
            s.status = status;
        }
        publish();
        s.holding = false;
        s.held.take()
    }

    /// Records an exit from the reaper: `Some` if the caller should finish it now, `None`
    /// if it is held for a lifecycle call in progress (or a duplicate).
    pub fn offer_exit(&self, exit: Exited) -> Option<Exited> {
        let mut s = self.state();
        if s.exited.is_some() {
            return None;
        }
        if s.holding {
            s.held = Some(exit);
            return None;
        }
        Some(exit)
    }

    /// Marks the process stopped; `publish` runs before waiters wake (TaskExit first).
    pub fn finish_exit(&self, exit: Exited, publish: impl FnOnce()) {
        {
            let mut s = self.state();
            if s.exited.is_some() {
                return;
            }
            s.status = Status::Stopped;
            s.exited = Some(exit);
            publish();
        }
        self.exit_tx.send_replace(Some(exit));
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> Exited {
        let mut rx = self.exit_tx.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as self; this cannot end without an exit.
                std::future::pending::<()>().await;
            }
        }
    }

    fn io_slot(&self) -> MutexGuard<'_, IoSlot> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the stdio copiers, applying an earlier `CloseIO`.
    pub fn set_io(&self, mut io: ProcessIo) {
        let mut slot = self.io_slot();
        if slot.stdin_closed {
            io.close_stdin();
        }
        slot.io = Some(io);
    }

    /// `CloseIO`: stop holding stdin open, now or as soon as the copiers exist.
    pub fn close_stdin(&self) {
        let mut slot = self.io_slot();
        slot.stdin_closed = true;
        if let Some(io) = slot.io.as_mut() {
            io.close_stdin();
        }
    }

    /// Runs `f` on the stdio copiers, if any.
    pub fn with_io<T>(&self, f: impl FnOnce(&mut ProcessIo) -> T) -> Option<T> {
        self.io_slot().io.as_mut().map(f)
    }

    /// Takes the stdio copiers out (for draining and closing at delete).
    pub fn take_io(&self) -> Option<ProcessIo> {
        self.io_slot().io.take()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn exit(code: u32) -> Exited {
        Exited {
            code,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn held_exit_comes_out_after_the_start_event() {
        let p = Process::new("", StdioPaths::default(), Vec::new());
        p.hold();
        assert_eq!(p.offer_exit(exit(3)), None, "held while starting");
        let mut order = Vec::new();
        let held = p.release(Some(Status::Running), || order.push("start"));
        assert_eq!(held, Some(exit(3)));
        p.finish_exit(held.unwrap(), || order.push("exit"));
        assert_eq!(order, ["start", "exit"]);
        assert_eq!(p.status(), Status::Stopped);
    }

    #[test]
    fn exit_is_finished_once() {
        let p = Process::new("e1", StdioPaths::default(), Vec::new());
        p.set_pid_status(42, Status::Running);
        let e = p.offer_exit(exit(0)).unwrap();
        let mut n = 0;
        p.finish_exit(e, || n += 1);
        p.finish_exit(e, || n += 1);
        assert_eq!(n, 1);
        assert_eq!(p.offer_exit(exit(1)), None);
        assert!(
            !p.transition(Status::Running, Status::Paused),
            "a stopped process stays stopped"
        );
    }

    #[tokio::test]
    async fn wait_returns_the_exit() {
        let p = std::sync::Arc::new(Process::new("", StdioPaths::default(), Vec::new()));
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.finish_exit(exit(137), || {});
        assert_eq!(waiter.await.unwrap().code, 137);
        assert_eq!(p.wait().await.code, 137, "a late waiter sees it too");
    }
}
