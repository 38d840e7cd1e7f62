//! Matching reaped pids to container processes.
//!
//! A process' pid is known only after runc returns, and the process may already have died
//! (and been reaped) by then. While a launch is in flight, exits of unknown pids are kept;
//! the launch then either registers its pid or claims the exit that came first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::container::Container;
use super::process::{Exited, Process};
use super::reaper::Exit;

/// Who a pid belongs to.
#[derive(Clone)]
pub struct Owner {
    /// The container.
    pub container: Arc<Container>,
    /// The process.
    pub process: Arc<Process>,
}

#[derive(Default)]
struct Book {
    by_pid: HashMap<u32, Owner>,
    launches: usize,
    early: Vec<Exit>,
}

/// The pid -> process table.
#[derive(Default)]
pub struct ExitBook {
    book: Mutex<Book>,
}

impl ExitBook {
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A launch (runc create / exec) begins: keep exits of unknown pids from now on.
    pub fn begin_launch(&self) {
        self.lock().launches += 1;
    }

    /// The launch failed.
    pub fn abort_launch(&self) {
        let mut b = self.lock();
        b.launches = b.launches.saturating_sub(1);
        if b.launches == 0 {
            b.early.clear();
        }
    }

    /// The launch produced `pid`: register it, running `announce` under the table lock (so
    /// no exit of `pid` is handled before it). Returns the exit if the process already died.
    pub fn finish_launch(&self, pid: u32, owner: Owner, announce: impl FnOnce()) -> Option<Exited> {
        let mut b = self.lock();
        b.launches = b.launches.saturating_sub(1);
        let early = b
            .early
            .iter()
            .position(|e| e.pid as u32 == pid)
            .map(|i| b.early.remove(i));
        if early.is_none() {
            b.by_pid.insert(pid, owner);
        }
        announce();
        if b.launches == 0 {
            b.early.clear();
        }
        early.map(|e| Exited {
            code: e.code as u32,
            at: e.at,
        })
    }

    /// Takes the owner of a reaped pid; keeps the exit if a launch may claim it.
    pub fn take(&self, exit: &Exit) -> Option<Owner> {
        let mut b = self.lock();
        let owner = b.by_pid.remove(&(exit.pid as u32));
        if owner.is_none() && b.launches > 0 {
            b.early.push(*exit);
        }
        owner
    }

    /// Forgets `process`' pid (its container is being deleted).
    pub fn forget(&self, pid: u32, process: &Arc<Process>) {
        let mut b = self.lock();
        if b.by_pid
            .get(&pid)
            .is_some_and(|o| Arc::ptr_eq(&o.process, process))
        {
            b.by_pid.remove(&pid);
        }
    }
}
