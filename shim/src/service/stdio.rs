//! A process' stdio: the fifos (or files) containerd names, joined to the process by pipes
//! or by its pty master, with copy tasks in between.
//!
//! The stdin fifo is opened for reading and also held open for writing by the shim, so the
//! copy sees EOF only after containerd closed its end *and* asked for `CloseIO` (as the Go
//! shim does). Output fifos are opened read-write, so opening never blocks on a reader.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::console::{Console, ConsoleSocket};
use super::error::{TaskError, TaskResult};
use crate::runc::ProcessStdio;

const COPY_BUF: usize = 32 * 1024;

/// The stdio paths containerd handed over for one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Stdin fifo, or empty.
    pub stdin: String,
    /// Stdout fifo / `file://` URI, or empty.
    pub stdout: String,
    /// Stderr fifo / `file://` URI, or empty (unused with a terminal).
    pub stderr: String,
    /// Whether the process has a terminal.
    pub terminal: bool,
}

/// The running copy tasks of one process.
pub struct ProcessIo {
    stdin_hold: Option<pipe::Sender>,
    console: Weak<Console>,
    drained: watch::Receiver<bool>,
    tasks: Vec<AbortHandle>,
}

impl ProcessIo {
    /// Drops the shim's own writer on the stdin fifo (`CloseIO`): the copy ends, and the
    /// process sees EOF, once containerd's writer is closed too.
    pub fn close_stdin(&mut self) {
        self.stdin_hold = None;
    }

    /// Sets the terminal size; a process without a terminal ignores it.
    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        match self.console.upgrade() {
            Some(console) => console.resize(width, height),
            None => Ok(()),
        }
    }

    /// A handle that resolves once all output reached EOF.
    pub fn drained(&self) -> watch::Receiver<bool> {
        self.drained.clone()
    }

    /// Stops every copy task now, closing fifos, pipes and the pty master.
    pub fn shutdown(&mut self) {
        self.stdin_hold = None;
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits until output drained, at most `limit` (a background child may hold the pipe).
pub async fn wait_drained(mut drained: watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, drained.wait_for(|d| *d))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// How a process about to be launched gets its stdio.
pub enum Wiring {
    /// Pipes, copying once runc succeeded.
    Pipes(PendingPipes),
    /// A console socket runc will send the pty master to.
    Console(ConsoleSocket),
}

/// How long runc gets to hand over a pty master once `create`/`exec` returned.
pub const CONSOLE_LIMIT: Duration = Duration::from_secs(10);

/// Prepares stdio before `runc create` / `runc exec`: what runc gets, and the shim's side.
pub async fn wire(paths: &StdioPaths) -> TaskResult<(Wiring, ProcessStdio)> {
    if paths.terminal {
        return Ok((
            Wiring::Console(ConsoleSocket::new()?),
            ProcessStdio::default(),
        ));
    }
    let (stdio, io) = open_pipes(paths).await?;
    Ok((Wiring::Pipes(io), stdio))
}

impl Wiring {
    /// The socket to pass as `--console-socket`.
    pub fn console_socket(&self) -> Option<&Path> {
        match self {
            Wiring::Console(s) => Some(s.path()),
            Wiring::Pipes(_) => None,
        }
    }

    /// After runc returned: the copiers (receiving the pty master for a terminal).
    pub async fn finish(self, paths: &StdioPaths) -> TaskResult<ProcessIo> {
        match self {
            Wiring::Pipes(pending) => Ok(pending.start()),
            Wiring::Console(s) => {
                attach_console(s.receive_master(CONSOLE_LIMIT).await?, paths).await
            }
        }
    }
}

/// Opened fifos and pipes whose copying starts once runc succeeded: output runc itself
/// writes on failure must not reach the container's log (the Go shim copies only then too).
pub struct PendingPipes {
    stdin: Option<(pipe::Receiver, pipe::Sender, pipe::Sender)>,
    outputs: Vec<(pipe::Receiver, Output)>,
}

impl PendingPipes {
    /// Starts the copy tasks.
    pub fn start(self) -> ProcessIo {
        let mut tasks = Vec::new();
        let stdin_hold = self.stdin.map(|(fifo, hold, tx)| {
            tasks.push(tokio::spawn(copy_then_close(fifo, tx)).abort_handle());
            hold
        });
        let outputs = self
            .outputs
            .into_iter()
            .map(|(rx, dest)| tokio::spawn(copy_then_close(rx, dest)))
            .collect();
        let (drained, handles) = supervise(outputs, None);
        tasks.extend(handles);
        ProcessIo {
            stdin_hold,
            console: Weak::new(),
            drained,
            tasks,
        }
    }
}

/// Opens the fifos and makes the pipes for a process without a terminal.
pub async fn open_pipes(paths: &StdioPaths) -> TaskResult<(ProcessStdio, PendingPipes)> {
    let mut stdio = ProcessStdio::default();
    let mut pending = PendingPipes {
        stdin: None,
        outputs: Vec::new(),
    };
    if !paths.stdin.is_empty() {
        let (fifo, hold) = open_stdin_fifo(&paths.stdin)?;
        let (tx, rx) = pipe::pipe().map_err(|e| TaskError::io("create stdin pipe", e))?;
        stdio.stdin = Some(blocking(rx.into_blocking_fd(), "stdin pipe")?);
        pending.stdin = Some((fifo, hold, tx));
    }
    for (path, slot) in [
        (&paths.stdout, &mut stdio.stdout),
        (&paths.stderr, &mut stdio.stderr),
    ] {
        if path.is_empty() {
            continue;
        }
        let dest = open_output(path).await?;
        let (tx, rx) = pipe::pipe().map_err(|e| TaskError::io("create output pipe", e))?;
        *slot = Some(blocking(tx.into_blocking_fd(), "output pipe")?);
        pending.outputs.push((rx, dest));
    }
    Ok((stdio, pending))
}

/// Joins a pty master (received from runc) to the fifos.
pub async fn attach_console(master: OwnedFd, paths: &StdioPaths) -> TaskResult<ProcessIo> {
    let console = Arc::new(Console::new(master).map_err(|e| TaskError::io("use pty master", e))?);
    let mut tasks = Vec::new();
    let (stdin_hold, input) = match paths.stdin.as_str() {
        "" => (None, None),
        path => {
            let (fifo, hold) = open_stdin_fifo(path)?;
            let task = tokio::spawn(console_input(fifo, console.clone()));
            (Some(hold), Some(task.abort_handle()))
        }
    };
    let dest = match paths.stdout.as_str() {
        "" => None,
        path => Some(open_output(path).await?),
    };
    let weak = Arc::downgrade(&console);
    let output = tokio::spawn(console_output(console, dest));
    tasks.extend(input.clone());
    let (drained, handles) = supervise(vec![output], input);
    tasks.extend(handles);
    Ok(ProcessIo {
        stdin_hold,
        console: weak,
        drained,
        tasks,
    })
}

fn blocking(fd: io::Result<OwnedFd>, what: &str) -> TaskResult<OwnedFd> {
    fd.map_err(|e| TaskError::io(format!("prepare {what}"), e))
}

/// Opens the stdin fifo for reading plus a holder writer (see the module docs).
fn open_stdin_fifo(path: &str) -> TaskResult<(pipe::Receiver, pipe::Sender)> {
    let fifo = pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|e| TaskError::io(format!("open stdin fifo {path}"), e))?;
    let hold = pipe::OpenOptions::new()
        .open_sender(path)
        .map_err(|e| TaskError::io(format!("hold stdin fifo {path}"), e))?;
    Ok((fifo, hold))
}

type Output = Box<dyn AsyncWrite + Send + Unpin>;

/// Opens where a stream goes: a fifo (plain path or `fifo://`) or a `file://` URI.
async fn open_output(uri: &str) -> TaskResult<Output> {
    if let Some(path) = uri.strip_prefix("file://") {
        return open_log_file(Path::new(path)).await;
    }
    if uri.starts_with("binary://") {
        let msg = format!("stdio {uri}: binary:// logging is not supported by vigil");
        return Err(TaskError::Unimplemented(msg));
    }
    let path = uri.strip_prefix("fifo://").unwrap_or(uri);
    let fifo = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(|e| TaskError::io(format!("open output fifo {path}"), e))?;
    Ok(Box::new(fifo))
}

async fn open_log_file(path: &Path) -> TaskResult<Output> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| TaskError::io(format!("create folder {}", dir.display()), e))?;
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| TaskError::io(format!("open log file {}", path.display()), e))?;
    Ok(Box::new(file))
}

async fn copy_then_close<R, W>(mut from: R, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.flush().await;
}

/// Copies stdin into the pty; on EOF hangs the terminal up, as the Go shim closes it.
async fn console_input(mut fifo: pipe::Receiver, console: Arc<Console>) {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match fifo.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if console.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    console.hang_up();
}

/// Copies pty output until the terminal is gone (EIO once no process holds the slave).
async fn console_output(console: Arc<Console>, mut dest: Option<Output>) {
    let mut buf = vec![0u8; COPY_BUF];
    while let Ok(n) = console.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Some(d) = dest.as_mut() {
            if d.write_all(&buf[..n]).await.is_err() {
                dest = None;
            }
        }
    }
    if let Some(d) = dest.as_mut() {
        let _ = d.flush().await;
    }
}

/// Marks `drained` once every output task ended; then stops `after` (the pty's input).
fn supervise(
    outputs: Vec<tokio::task::JoinHandle<()>>,
    after: Option<AbortHandle>,
) -> (watch::Receiver<bool>, Vec<AbortHandle>) {
    let (tx, rx) = watch::channel(false);
    let mut handles: Vec<AbortHandle> = outputs.iter().map(|h| h.abort_handle()).collect();
    let supervisor = tokio::spawn(async move {
        for h in outputs {
            let _ = h.await;
        }
        if let Some(a) = after {
            a.abort();
        }
        let _ = tx.send(true);
    });
    handles.push(supervisor.abort_handle());
    (rx, handles)
}
