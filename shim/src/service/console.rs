//! Terminals: the console socket runc hands the pty master over, and the master itself.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::error::{TaskError, TaskResult};

/// A listening socket for `runc --console-socket`, in a private temporary folder.
pub struct ConsoleSocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Binds a fresh socket under the system's temporary folder (short enough for sun_path).
    pub fn new() -> TaskResult<ConsoleSocket> {
        let dir = tempfile::Builder::new()
            .prefix("vigil-pty")
            .tempdir()
            .map_err(|e| TaskError::io("create console socket folder", e))?;
        let path = dir.path().join("pty.sock");
        let listener = UnixListener::bind(&path)
            .map_err(|e| TaskError::io(format!("bind console socket {}", path.display()), e))?;
        Ok(ConsoleSocket {
            _dir: dir,
            path,
            listener,
        })
    }

    /// Where runc should connect.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the pty master runc sent after `create` / `exec` returned.
    pub async fn receive_master(&self, limit: Duration) -> TaskResult<OwnedFd> {
        let accept = tokio::time::timeout(limit, self.listener.accept());
        let (stream, _) = accept
            .await
            .map_err(|_| {
                TaskError::Internal("runc sent no pty master to the console socket".into())
            })?
            .map_err(|e| TaskError::io("accept on console socket", e))?;
        loop {
            stream
                .readable()
                .await
                .map_err(|e| TaskError::io("read console socket", e))?;
            match stream.try_io(Interest::READABLE, || recv_fd(stream.as_raw_fd())) {
                Ok(fd) => return Ok(fd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(TaskError::io("receive pty master", e)),
            }
        }
    }
}

/// Reads one message carrying one fd (runc sends the pty's name with the master).
fn recv_fd(socket: RawFd) -> io::Result<OwnedFd> {
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let flags = MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = recvmsg::<UnixAddr>(socket, &mut iov, Some(&mut cmsg), flags)?;
    let mut received = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            received.extend(fds);
        }
    }
    let mut owned: Vec<OwnedFd> = received
        .into_iter()
        // SAFETY: SCM_RIGHTS just installed these fds in this process; nothing else owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    match owned.len() {
        1 => Ok(owned.remove(0)),
        0 if msg.bytes == 0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "runc closed the console socket",
        )),
        n => Err(io::Error::other(format!(
            "expected one pty master, got {n} fds"
        ))),
    }
}

/// Registers an owned fd with the tokio reactor.
pub fn register_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open, and as_raw_fd returns the same fd, until it is dropped,
    // which happens only when the AsyncFd owning it is dropped.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// A pty master held by the shim.
pub struct Console {
    master: AsyncFd<OwnedFd>,
    hung_up: watch::Sender<bool>,
}

impl Console {
    /// Takes the master, switching it to non-blocking mode.
    pub fn new(master: OwnedFd) -> io::Result<Console> {
        let flags = OFlag::from_bits_truncate(fcntl(master.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            master.as_raw_fd(),
            FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
        )?;
        let (hung_up, _) = watch::channel(false);
        Ok(Console {
            master: register_fd(master)?,
            hung_up,
        })
    }

    /// Sets the window size (`TIOCSWINSZ`).
    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: the fd is a live pty master owned by self; TIOCSWINSZ reads one winsize
        // from the pointer, which points at a local that outlives the call.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops readers: the terminal is being closed.
    pub fn hang_up(&self) {
        self.hung_up.send_replace(true);
    }

    /// Reads output; 0 once no process holds the slave (EIO) or after [`Console::hang_up`].
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut hung_up = self.hung_up.subscribe();
        tokio::select! {
            r = self.read_master(buf) => r,
            _ = hung_up.wait_for(|h| *h) => Ok(0),
        }
    }

    async fn read_master(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from))
            {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf` into the terminal.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref().as_fd(), buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
