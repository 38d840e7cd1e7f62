//! Running a command with a deadline and capturing what it did.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What a finished (or timed-out) command did.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code, or `128 + signal` when it was killed by a signal (as a shell reports it).
    pub rc: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// The deadline passed and the command's process group was killed.
    pub timed_out: bool,
}

impl Output {
    /// Fails unless the command exited 0 within its deadline; the error carries its output.
    pub fn ok(self) -> Result<Output> {
        if self.timed_out || self.rc != 0 {
            bail!("{}", self.describe());
        }
        Ok(self)
    }

    /// One paragraph naming the command, its status and its output, for failure messages.
    pub fn describe(&self) -> String {
        let status = if self.timed_out {
            format!("timed out after {:.1?}", self.elapsed)
        } else {
            format!("exited rc={} after {:.1?}", self.rc, self.elapsed)
        };
        format!(
            "`{}` {status}\n  stdout: {}\n  stderr: {}",
            self.cmdline,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` in its own process group, feeding `stdin`, and kills the whole group if it is
/// still running after `timeout`.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let cmdline = cmdline_of(cmd);
    let started = Instant::now();
    let mut child = spawn(cmd, stdin.is_some()).with_context(|| format!("spawn `{cmdline}`"))?;
    let feeder = stdin.map(|bytes| feed_stdin(&mut child, bytes.to_vec()));
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    let (status, timed_out) = wait_deadline(&mut child, started + timeout)?;
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let (signal, rc) = decode_status(status);
    Ok(Output {
        cmdline,
        rc,
        signal,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
        timed_out,
    })
}

/// Starts `cmd` in the background (own process group, output captured, stdin empty).
pub fn spawn_background(cmd: &mut Command) -> Result<Background> {
    start_background(cmd, false)
}

/// Starts `cmd` in the background with a stdin pipe the caller writes and closes through
/// [`Background::stdin`] (dropping the pipe closes it).
pub fn spawn_background_piped(cmd: &mut Command) -> Result<Background> {
    start_background(cmd, true)
}

fn start_background(cmd: &mut Command, piped_stdin: bool) -> Result<Background> {
    let cmdline = cmdline_of(cmd);
    let mut child = spawn(cmd, piped_stdin).with_context(|| format!("spawn `{cmdline}`"))?;
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    Ok(Background {
        cmdline,
        started: Instant::now(),
        child: Some(child),
        out,
        err,
    })
}

/// A command running in the background; killed (with its process group) when dropped.
pub struct Background {
    cmdline: String,
    started: Instant,
    child: Option<Child>,
    out: JoinHandle<String>,
    err: JoinHandle<String>,
}

impl Background {
    /// The process id of the command.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The command's stdin pipe (only for [`spawn_background_piped`]); take it to write and
    /// drop it to close.
    pub fn stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// Waits for the command to end; kills its group after `timeout` from now.
    pub fn wait(mut self, timeout: Duration) -> Result<Output> {
        let mut child = self
            .child
            .take()
            .context("background command already waited")?;
        let (status, timed_out) = wait_deadline(&mut child, Instant::now() + timeout)?;
        let (signal, rc) = decode_status(status);
        let out = std::mem::replace(&mut self.out, thread::spawn(String::new));
        let err = std::mem::replace(&mut self.err, thread::spawn(String::new));
        Ok(Output {
            cmdline: self.cmdline.clone(),
            rc,
            signal,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
            elapsed: self.started.elapsed(),
            timed_out,
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
        }
    }
}

fn spawn(cmd: &mut Command, piped_stdin: bool) -> std::io::Result<Child> {
    let stdin = if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}

fn feed_stdin(child: &mut Child, bytes: Vec<u8>) -> JoinHandle<()> {
    let mut pipe = child.stdin.take();
    thread::spawn(move || {
        if let Some(pipe) = pipe.as_mut() {
            let _ = pipe.write_all(&bytes);
        }
        drop(pipe);
    })
}

fn collect<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_deadline(child: &mut Child, deadline: Instant) -> Result<(ExitStatus, bool)> {
    loop {
        if let Some(status) = child.try_wait().context("wait for child")? {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            kill_group(child);
            let status = child.wait().context("wait for killed child")?;
            return Ok((status, true));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn kill_group(child: &Child) {
    let pgid = child.id() as i32;
    // SAFETY: kill(2) with a negative pid signals the process group we created for this child
    // (process_group(0) made the child its leader); no memory is touched.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn decode_status(status: ExitStatus) -> (Option<i32>, i32) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (None, code),
        (None, Some(sig)) => (Some(sig), 128 + sig),
        (None, None) => (None, -1),
    }
}

/// The command line as a person would type it (arguments with spaces quoted).
pub fn cmdline_of(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| shell_quote(&a.to_string_lossy())));
    parts.join(" ")
}

/// Quotes `s` for `sh` when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The first line `program arg` prints (`containerd --version`), or `program: unknown`.
pub fn first_line(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| format!("{program}: unknown"))
}

/// The machine a benchmark ran on: containerd, runc, any `extra` programs' versions, the
/// kernel and the CPU count, on one line.
pub fn machine_line(extra: &[&str]) -> String {
    let mut parts = vec![
        first_line("containerd", "--version"),
        first_line("runc", "--version"),
    ];
    parts.extend(extra.iter().map(|p| first_line(p, "--version")));
    parts.push(format!("kernel {}", first_line("uname", "-r")));
    parts.push(format!(
        "{} cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    parts.join("; ")
}
