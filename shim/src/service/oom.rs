//! OOM kills in a container's memory cgroup, reported as TaskOOM before the matching exit.
//!
//! cgroup v1 (memory here): an eventfd registered through `cgroup.event_control` on
//! `memory.oom_control` wakes on each OOM. cgroup v2: inotify on `memory.events`, which the
//! kernel marks modified on each event. Either way the `oom_kill` counter decides whether an
//! OOM kill happened that was not reported yet; the exit path checks the same counter before
//! it publishes TaskExit, so the order is OOM, then exit.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::protos::events::task::TaskOOM;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::AsyncFd;
use tokio::task::AbortHandle;

use super::cgroup::{read_flat_keyed, CgroupPaths};
use super::console::register_fd;
use super::events::EventSink;

/// Watches one container's memory cgroup.
pub struct OomWatch {
    counter: PathBuf,
    reported: Mutex<u64>,
    container_id: String,
    events: EventSink,
    task: Mutex<Option<AbortHandle>>,
}

impl OomWatch {
    /// Starts watching; `None` (logged) when the cgroup has no usable memory controller.
    pub fn start(id: &str, paths: &CgroupPaths, events: EventSink) -> Option<Arc<OomWatch>> {
        let (counter, source) = match (paths.v1("memory"), paths.v2.as_deref()) {
            (Some(dir), _) => (
                dir.join("memory.oom_control"),
                Source::V1(dir.to_path_buf()),
            ),
            (None, Some(dir)) => (dir.join("memory.events"), Source::V2(dir.to_path_buf())),
            (None, None) => return None,
        };
        let baseline = oom_kills(&counter)?;
        let watch = Arc::new(OomWatch {
            counter,
            reported: Mutex::new(baseline),
            container_id: id.to_string(),
            events,
            task: Mutex::new(None),
        });
        match source.open() {
            Ok(waker) => {
                let task = tokio::spawn(watch_loop(Arc::downgrade(&watch), waker));
                *watch.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
            }
            Err(e) => {
                tracing::warn!(id, error = %e, "oom notifications unavailable; exits still checked")
            }
        }
        Some(watch)
    }

    /// Publishes TaskOOM if the kernel counted an OOM kill not reported yet.
    pub fn check(&self) -> bool {
        let Some(now) = oom_kills(&self.counter) else {
            return false;
        };
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if now <= *reported {
            return false;
        }
        *reported = now;
        self.events.send(TaskOOM {
            container_id: self.container_id.clone(),
            ..Default::default()
        });
        tracing::info!(id = %self.container_id, oom_kills = now, "container hit its memory limit");
        true
    }

    /// Stops watching.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

impl Drop for OomWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn oom_kills(counter: &Path) -> Option<u64> {
    read_flat_keyed(counter)?.get("oom_kill").copied()
}

enum Source {
    V1(PathBuf),
    V2(PathBuf),
}

/// Something that becomes readable when the cgroup saw an OOM event.
struct Waker {
    fd: AsyncFd<OwnedFd>,
    // v1: the memory.oom_control fd must stay open while the eventfd is registered.
    _keep: Option<File>,
}

impl Source {
    fn open(&self) -> std::io::Result<Waker> {
        match self {
            Source::V1(dir) => open_v1(dir),
            Source::V2(dir) => open_v2(dir),
        }
    }
}

fn open_v1(dir: &Path) -> std::io::Result<Waker> {
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    let efd = OwnedFd::from(efd);
    let control = File::open(dir.join("memory.oom_control"))?;
    let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.event_control"))?
        .write_all(line.as_bytes())?;
    Ok(Waker {
        fd: register_fd(efd)?,
        _keep: Some(control),
    })
}

fn open_v2(dir: &Path) -> std::io::Result<Waker> {
    // SAFETY: inotify_init1 takes flags only and returns a new fd or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by inotify_init1 and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = std::ffi::CString::new(dir.join("memory.events").as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: fd is a live inotify fd and path a NUL-terminated string that outlives the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
    if wd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Waker {
        fd: register_fd(fd)?,
        _keep: None,
    })
}

async fn watch_loop(watch: std::sync::Weak<OomWatch>, waker: Waker) {
    let mut buf = [0u8; 4096];
    loop {
        let Ok(mut guard) = waker.fd.readable().await else {
            return;
        };
        let read =
            guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), &mut buf).map_err(Into::into));
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_would_block) => continue,
        }
        let Some(w) = watch.upgrade() else { return };
        // The event fires when the OOM starts; the kill (and the counter) follow shortly.
        for _ in 0..10 {
            if w.check() || !w.counter.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
