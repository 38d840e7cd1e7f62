//! The seccomp user-notification listener.
//!
//! The compiled profile sends every known syscall outside it to `SCMP_ACT_NOTIFY`, and the
//! OCI spec's `linux.seccomp.listenerPath` names a unix socket this module owns. runc connects
//! to it once per process it starts under the filter (the init process, then each exec),
//! sends the process state as JSON and the notification fd as `SCM_RIGHTS` (runc 1.1
//! `libcontainer/utils.SendFds`), then closes the connection. For each fd a thread answers
//! notifications: the [`Responder`] decides, per request, to let the call run (monitor) or to
//! fail it with an errno (enforce), and reports it.
//!
//! A process blocked in a notified syscall waits for the answer, so the answering threads do
//! nothing slow: the responder queues its audit event and returns. When the shim dies the
//! kernel sees the listener fd closed and fails pending and later notified calls with ENOSYS
//! (seccomp_unotify(2)), so the container never hangs on a dead shim.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::wake::Wake;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde::Deserialize;

/// One syscall the kernel stopped because the filter said `SCMP_ACT_NOTIFY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyRequest {
    /// Thread id of the caller, in the shim's pid namespace.
    pub pid: u32,
    /// Syscall number for `arch`.
    pub syscall: i32,
    /// `AUDIT_ARCH_*` of the call.
    pub arch: u32,
    /// Raw arguments.
    pub args: [u64; 6],
}

/// How to answer a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the kernel run the syscall as if no filter had stopped it.
    Continue,
    /// Fail the syscall with this errno (positive, for example `libc::EPERM`).
    Deny(i32),
}

/// What runc told the listener about the process whose fd it handed over.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessState {
    /// Pid of the process that installed the filter (runc init, before exec).
    #[serde(default)]
    pub pid: i32,
    /// `linux.seccomp.listenerMetadata` from the spec.
    #[serde(default)]
    pub metadata: String,
    /// The container's state (`id`, `bundle`, ...).
    #[serde(default)]
    pub state: ContainerState,
}

/// The part of the OCI state runc sends that the listener uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerState {
    /// Container id as runc knows it (containerd's container id).
    #[serde(default)]
    pub id: String,
}

/// Decides and reports each notification. Called on the answering threads: must not block.
pub trait Responder: Send + Sync + 'static {
    /// Answer one stopped syscall of a process runc described in `origin`.
    fn decide(&self, req: &NotifyRequest, origin: &ProcessState) -> Verdict;
}

/// A bound listener socket and its accepting thread. Dropping it stops accepting and removes
/// the socket file; threads already answering a process keep going until its filter is gone.
pub struct Listener {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    accepter: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds `path` (replacing a stale socket file) and starts accepting runc's connections.
    pub fn bind(path: &Path, responder: Arc<dyn Responder>) -> io::Result<Listener> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let socket = UnixListener::bind(path)?;
        socket.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Wake::new()?);
        let (flag, waker) = (stop.clone(), wake.clone());
        let accepter = std::thread::Builder::new()
            .name("seccomp-accept".into())
            .spawn(move || accept_loop(socket, &flag, &waker, responder))?;
        Ok(Listener {
            path: path.to_path_buf(),
            stop,
            wake,
            accepter: Some(accepter),
        })
    }

    /// The socket path to put in `linux.seccomp.listenerPath`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.fire();
        if let Some(handle) = self.accepter.take() {
            let _ = handle.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

const POLL_PERIOD: Duration = Duration::from_millis(200);

fn accept_loop(
    socket: UnixListener,
    stop: &AtomicBool,
    wake: &Wake,
    responder: Arc<dyn Responder>,
) {
    while !stop.load(Ordering::Relaxed) {
        match socket.accept() {
            Ok((conn, _)) => {
                if let Err(e) = take_handover(conn, responder.clone()) {
                    tracing::warn!(error = %e, "seccomp listener: bad handover from runc");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wake.wait(socket.as_fd(), POLL_PERIOD);
            }
            Err(e) => {
                tracing::warn!(error = %e, "seccomp listener: accept failed");
                std::thread::sleep(POLL_PERIOD);
            }
        }
    }
}

/// Reads runc's state message and notification fd, then starts answering on that fd.
fn take_handover(conn: UnixStream, responder: Arc<dyn Responder>) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (mut message, fd) = receive_fd(&conn)?;
    let origin = loop {
        match serde_json::from_slice::<ProcessState>(&message) {
            Ok(origin) => break origin,
            // runc sends the state in one sendmsg, but a stream may deliver it in pieces.
            Err(e) if e.is_eof() => {
                let mut more = [0u8; 4096];
                match (&conn).read(&mut more)? {
                    0 => return Err(invalid(format!("state from runc is cut short: {e}"))),
                    n => message.extend_from_slice(&more[..n]),
                }
            }
            Err(e) => return Err(invalid(format!("state from runc is not JSON: {e}"))),
        }
    };
    std::thread::Builder::new()
        .name("seccomp-notify".into())
        .spawn(move || answer_loop(fd, &origin, responder.as_ref()))?;
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn receive_fd(conn: &UnixStream) -> io::Result<(Vec<u8>, OwnedFd)> {
    let mut data = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received);
        }
    }
    let len = msg.bytes;
    // SAFETY: every fd in an SCM_RIGHTS message is a new descriptor owned by this process.
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    if owned.len() != 1 {
        return Err(invalid(format!(
            "expected one seccomp fd from runc, got {}",
            owned.len()
        )));
    }
    data.truncate(len);
    Ok((data, owned.remove(0)))
}

fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, period: Duration) -> PollFlags {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(period).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(n) if n > 0 => fds[0].revents().unwrap_or(PollFlags::empty()),
        _ => PollFlags::empty(),
    }
}

/// Answers notifications on one filter's fd until every process using the filter is gone.
pub fn answer_loop(fd: OwnedFd, origin: &ProcessState, responder: &dyn Responder) {
    let sizes = match notif_sizes() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "seccomp listener: cannot read notification sizes");
            return;
        }
    };
    let mut request = vec![0u64; usize::from(sizes.seccomp_notif).div_ceil(8)];
    let mut response = vec![0u64; usize::from(sizes.seccomp_notif_resp).div_ceil(8)];
    loop {
        let events = wait_readable(fd.as_fd(), POLL_PERIOD);
        if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            return;
        }
        if !events.contains(PollFlags::POLLIN) {
            continue;
        }
        let Some(req) = receive(&fd, &mut request) else {
            continue;
        };
        let verdict = responder.decide(&req.0, origin);
        send(&fd, &mut response, req.1, verdict);
    }
}

fn notif_sizes() -> io::Result<libc::seccomp_notif_sizes> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one seccomp_notif_sizes to the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut _,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    sizes.seccomp_notif = sizes
        .seccomp_notif
        .max(size_of::<libc::seccomp_notif>() as u16);
    sizes.seccomp_notif_resp = sizes
        .seccomp_notif_resp
        .max(size_of::<libc::seccomp_notif_resp>() as u16);
    Ok(sizes)
}

/// Receives one notification; `None` when it vanished (the caller was killed) or failed.
fn receive(fd: &OwnedFd, buf: &mut [u64]) -> Option<(NotifyRequest, u64)> {
    buf.fill(0);
    // SAFETY: buf is zeroed, 8-byte aligned and at least the kernel's seccomp_notif size.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: the kernel filled a seccomp_notif at the start of buf, which is large enough.
    let notif = unsafe { &*(buf.as_ptr() as *const libc::seccomp_notif) };
    let req = NotifyRequest {
        pid: notif.pid,
        syscall: notif.data.nr,
        arch: notif.data.arch,
        args: notif.data.args,
    };
    Some((req, notif.id))
}

fn send(fd: &OwnedFd, buf: &mut [u64], id: u64, verdict: Verdict) {
    buf.fill(0);
    // SAFETY: buf is zeroed, 8-byte aligned and at least the kernel's seccomp_notif_resp size.
    let resp = unsafe { &mut *(buf.as_mut_ptr() as *mut libc::seccomp_notif_resp) };
    resp.id = id;
    match verdict {
        Verdict::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        Verdict::Deny(errno) => resp.error = -errno,
    }
    // SAFETY: resp points into buf, valid for the ioctl's read of seccomp_notif_resp.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        // ENOENT: the caller died while we decided; nothing is waiting for the answer.
        tracing::debug!(error = %io::Error::last_os_error(), id, "seccomp notify answer not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Denies getppid with EPERM once, then lets it run; records what it saw.
    struct Recorder(Mutex<Vec<NotifyRequest>>);

    impl Responder for Recorder {
        fn decide(&self, req: &NotifyRequest, _origin: &ProcessState) -> Verdict {
            let mut seen = self.0.lock().unwrap();
            seen.push(*req);
            if seen.len() == 1 {
                Verdict::Deny(libc::EPERM)
            } else {
                Verdict::Continue
            }
        }
    }

    /// A classic BPF filter: getppid -> USER_NOTIF, everything else -> ALLOW.
    fn install_notify_filter() -> io::Result<OwnedFd> {
        let nr_offset = 0u32; // offsetof(struct seccomp_data, nr)
        let prog = [
            libc::sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: nr_offset,
            }, // ld [nr]
            libc::sock_filter {
                code: 0x15,
                jt: 0,
                jf: 1,
                k: libc::SYS_getppid as u32,
            },
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_USER_NOTIF,
            },
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut _,
        };
        // SAFETY: plain prctl/seccomp calls on the current thread with valid pointers.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &fprog as *const _,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(OwnedFd::from_raw_fd(fd as i32))
        }
    }

    #[test]
    fn answers_deny_then_continue_on_a_real_filter() {
        let (fd_tx, fd_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        // The filter binds only the thread that installs it (no TSYNC), so the test thread
        // and the answering thread stay unfiltered.
        let caller = std::thread::spawn(move || {
            fd_tx.send(install_notify_filter()).unwrap();
            go_rx.recv().unwrap();
            // SAFETY: getppid has no preconditions; raw syscall so glibc caches nothing.
            let first = unsafe { libc::syscall(libc::SYS_getppid) };
            let errno = io::Error::last_os_error().raw_os_error();
            // SAFETY: as above.
            let second = unsafe { libc::syscall(libc::SYS_getppid) };
            (first, errno, second)
        });
        let fd = fd_rx
            .recv()
            .unwrap()
            .expect("install a seccomp filter with a listener");
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        let answering = recorder.clone();
        let answer = std::thread::spawn(move || {
            answer_loop(fd, &ProcessState::default(), answering.as_ref());
        });
        go_tx.send(()).unwrap();
        let (first, errno, second) = caller.join().unwrap();
        answer.join().unwrap();

        assert_eq!(first, -1, "first getppid must be denied");
        assert_eq!(errno, Some(libc::EPERM));
        // SAFETY: getppid has no preconditions.
        assert_eq!(second, unsafe { libc::syscall(libc::SYS_getppid) });
        let seen = recorder.0.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|r| r.syscall == libc::SYS_getppid as i32));
    }
}
