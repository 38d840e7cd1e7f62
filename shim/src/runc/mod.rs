//! A thin driver for the runc command line.
//!
//! Each verb builds one `runc` invocation with the global flags the node config asks for
//! (`--root`, `--systemd-cgroup`, `--log`). Commands whose own stdio is the container's
//! (`create`, `exec`) report errors through a private JSON log file; the others through
//! their captured stderr. Processes are started by a [`Spawner`], so the shim's reaper
//! (which waits for every child) and a plain waiter both work.

mod errors;
mod spawn;

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

pub use errors::{last_log_error, RuncError};
pub use spawn::{exit_code, DirectSpawner, Spawned, Spawner};

/// How to reach runc for one container.
#[derive(Clone)]
pub struct Runc {
    /// Binary name or path.
    pub binary: PathBuf,
    /// State root (`--root`).
    pub root: PathBuf,
    /// Pass `--systemd-cgroup` (the spec's cgroupsPath is `slice:prefix:name`).
    pub systemd_cgroup: bool,
    spawner: Arc<dyn Spawner>,
}

/// The stdio a container process gets from `runc create` / `runc exec`.
#[derive(Default)]
pub struct ProcessStdio {
    /// Read end for the process' stdin; `None` = /dev/null.
    pub stdin: Option<OwnedFd>,
    /// Write end for stdout; `None` = /dev/null.
    pub stdout: Option<OwnedFd>,
    /// Write end for stderr; `None` = /dev/null.
    pub stderr: Option<OwnedFd>,
}

/// Options shared by `runc create` and `runc exec`.
pub struct LaunchOpts<'a> {
    /// Where runc writes the new process' pid.
    pub pid_file: &'a Path,
    /// Unix socket runc sends the pty master to, for a terminal.
    pub console_socket: Option<&'a Path>,
    /// JSON log for this invocation; its last error explains a failure.
    pub log: &'a Path,
}

/// `runc state` output (the fields the shim reads).
#[derive(Debug, Clone, Deserialize)]
pub struct State {
    /// Init pid.
    #[serde(default)]
    pub pid: i32,
    /// created, running, paused, stopped.
    pub status: String,
}

impl Runc {
    /// A driver for `binary` with state under `root`.
    pub fn new(binary: PathBuf, root: PathBuf, systemd: bool, spawner: Arc<dyn Spawner>) -> Self {
        Runc {
            binary,
            root,
            systemd_cgroup: systemd,
            spawner,
        }
    }

    fn command(&self, log: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        if let Some(log) = log {
            cmd.arg("--log").arg(log).args(["--log-format", "json"]);
        }
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.env_remove("NOTIFY_SOCKET");
        cmd
    }

    /// `runc create`: the init process exists, stopped before exec.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        opts: &LaunchOpts<'_>,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let mut cmd = self.command(Some(opts.log));
        cmd.arg("create").arg("--bundle").arg(bundle);
        launch_args(&mut cmd, opts);
        cmd.arg(id);
        self.run_launch(cmd, "create", opts.log, stdio).await
    }

    /// `runc exec --detach` of the process described by `process_json`.
    pub async fn exec(
        &self,
        id: &str,
        process_json: &Path,
        opts: &LaunchOpts<'_>,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let mut cmd = self.command(Some(opts.log));
        cmd.args(["exec", "--detach", "--process"])
            .arg(process_json);
        launch_args(&mut cmd, opts);
        cmd.arg(id);
        self.run_launch(cmd, "exec", opts.log, stdio).await
    }

    /// `runc start`.
    pub async fn start(&self, id: &str) -> Result<(), RuncError> {
        self.run_simple("start", &[id.into()]).await.map(drop)
    }

    /// `runc kill [--all] ID SIGNAL`.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = Vec::new();
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        self.run_simple("kill", &args).await.map(drop)
    }

    /// `runc delete [--force]`.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = Vec::new();
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        self.run_simple("delete", &args).await.map(drop)
    }

    /// `runc pause`.
    pub async fn pause(&self, id: &str) -> Result<(), RuncError> {
        self.run_simple("pause", &[id.into()]).await.map(drop)
    }

    /// `runc resume`.
    pub async fn resume(&self, id: &str) -> Result<(), RuncError> {
        self.run_simple("resume", &[id.into()]).await.map(drop)
    }

    /// `runc update --resources FILE`.
    pub async fn update(&self, id: &str, resources: &Path) -> Result<(), RuncError> {
        let args = ["--resources".into(), resources.into(), id.into()];
        self.run_simple("update", &args).await.map(drop)
    }

    /// `runc ps --format json`: pids in the container's cgroup.
    pub async fn ps(&self, id: &str) -> Result<Vec<i32>, RuncError> {
        let args = ["--format".into(), "json".into(), id.into()];
        let out = self.run_simple("ps", &args).await?;
        let pids: Option<Vec<i32>> = serde_json::from_slice(&out)
            .map_err(|source| RuncError::Parse { verb: "ps", source })?;
        Ok(pids.unwrap_or_default())
    }

    /// `runc state`.
    pub async fn state(&self, id: &str) -> Result<State, RuncError> {
        let out = self.run_simple("state", &[id.into()]).await?;
        serde_json::from_slice(&out).map_err(|source| RuncError::Parse {
            verb: "state",
            source,
        })
    }

    /// Runs a verb whose stdio the shim owns; returns stdout, or stderr's last line as error.
    async fn run_simple(
        &self,
        verb: &'static str,
        args: &[OsString],
    ) -> Result<Vec<u8>, RuncError> {
        let mut cmd = self.command(None);
        cmd.arg(verb).args(args).stdin(Stdio::null());
        let (out_tx, out_rx) = pipe::pipe().map_err(RuncError::Io)?;
        let (err_tx, err_rx) = pipe::pipe().map_err(RuncError::Io)?;
        cmd.stdout(out_tx.into_blocking_fd().map_err(RuncError::Io)?);
        cmd.stderr(err_tx.into_blocking_fd().map_err(RuncError::Io)?);
        let spawned = self.spawn(&mut cmd)?;
        drop(cmd);
        let (stdout, stderr, code) =
            tokio::join!(read_all(out_rx), read_all(err_rx), spawned.wait());
        let code = code?;
        if code == 0 {
            return Ok(stdout);
        }
        Err(RuncError::failed(verb, code, errors::last_line(&stderr)))
    }

    /// Runs `create` / `exec`, whose stdio becomes the new process' stdio.
    async fn run_launch(
        &self,
        mut cmd: Command,
        verb: &'static str,
        log: &Path,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from));
        cmd.stdout(stdio.stdout.map_or_else(Stdio::null, Stdio::from));
        cmd.stderr(stdio.stderr.map_or_else(Stdio::null, Stdio::from));
        let spawned = self.spawn(&mut cmd)?;
        // The child has its copies; ours must close so EOF reaches the shim's readers.
        drop(cmd);
        let code = spawned.wait().await?;
        if code == 0 {
            return Ok(());
        }
        let msg = last_log_error(log).await;
        Err(RuncError::failed(verb, code, msg))
    }

    fn spawn(&self, cmd: &mut Command) -> Result<Spawned, RuncError> {
        self.spawner.spawn(cmd).map_err(|source| RuncError::Spawn {
            binary: self.binary.clone(),
            source,
        })
    }
}

fn launch_args(cmd: &mut Command, opts: &LaunchOpts<'_>) {
    cmd.arg("--pid-file").arg(opts.pid_file);
    if let Some(socket) = opts.console_socket {
        cmd.arg("--console-socket").arg(socket);
    }
}

async fn read_all(mut rx: pipe::Receiver) -> Vec<u8> {
    let mut buf = Vec::new();
    // A read error leaves what was read; the exit code decides success.
    let _ = rx.read_to_end(&mut buf).await;
    buf
}

/// Whether a spec's cgroupsPath asks for the systemd driver (`slice:prefix:name`).
pub fn is_systemd_cgroup_path(path: &str) -> bool {
    !path.starts_with('/') && path.split(':').count() == 3
}

/// Reads a pid file runc wrote.
pub async fn read_pid_file(path: &Path) -> io::Result<u32> {
    let text = tokio::fs::read_to_string(path).await?;
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| {
            let msg = format!(
                "pid file {} holds {:?}, not a pid",
                path.display(),
                text.trim()
            );
            io::Error::new(io::ErrorKind::InvalidData, msg)
        })
}

#[cfg(test)]
mod tests;
