//! Boots the guest under `qemu-system-x86_64 -accel tcg` and collects its serial console.
//!
//! TCG, not KVM: `-enable-kvm` hung on this kind of host (see ../shared/ENVIRONMENT.md). The
//! guest has no network device; its tests use loopback only.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Environment variable naming the qemu binary (default `qemu-system-x86_64` on PATH).
pub const QEMU_ENV: &str = "VIGIL_QEMU";

/// The kernel command line without `lsm=`; see [`Boot::lsm`].
const KERNEL_APPEND: &str = "console=ttyS0 panic=-1 quiet";

/// What to boot.
#[derive(Clone, Debug)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The `lsm=` list: `lockdown,capability,bpf` runs the BPF LSM (without `bpf`, LSM
    /// programs attach but are never called).
    pub lsm: String,
    /// Passed to the guest's init as `vigil.suite=`.
    pub suite: String,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// Every console byte is copied here, for diagnosis after the run.
    pub console_log: PathBuf,
}

/// A guest that ran to power-off.
#[derive(Debug)]
pub struct Console {
    pub lines: Vec<String>,
    pub elapsed: Duration,
}

/// Why a boot did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot start {qemu}: {source}; install qemu-system-x86 or set {QEMU_ENV}")]
    Spawn {
        qemu: String,
        source: std::io::Error,
    },
    #[error("guest did not power off within {secs} s; console in {log}", secs = .timeout.as_secs())]
    Timeout { timeout: Duration, log: PathBuf },
    #[error("qemu exited with {status}: {stderr}; console in {log}")]
    Qemu {
        status: std::process::ExitStatus,
        stderr: String,
        log: PathBuf,
    },
    #[error("cannot write the console log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The qemu binary to use.
pub fn qemu_binary() -> String {
    std::env::var(QEMU_ENV).unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// True when the qemu binary can be run at all (`--version` succeeds).
pub fn qemu_available() -> Result<(), String> {
    let qemu = qemu_binary();
    match Command::new(&qemu)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{qemu} --version` exited with {status}")),
        Err(err) => Err(format!(
            "{qemu} not runnable ({err}); apt-get install qemu-system-x86"
        )),
    }
}

/// Boots the guest and returns its console once it powers off.
pub fn boot(spec: &Boot) -> Result<Console, BootError> {
    let qemu = qemu_binary();
    let started = Instant::now();
    let mut child = command(&qemu, spec)
        .spawn()
        .map_err(|source| BootError::Spawn {
            qemu: qemu.clone(),
            source,
        })?;
    let log = fs::File::create(&spec.console_log).map_err(|source| BootError::Log {
        path: spec.console_log.clone(),
        source,
    })?;
    let lines = spawn_reader(child.stdout.take().expect("stdout is piped"), log);

    let status = wait_with_timeout(&mut child, spec.timeout);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(BootError::Timeout {
            timeout: spec.timeout,
            log: spec.console_log.clone(),
        });
    };
    let lines: Vec<String> = lines.into_iter().collect();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let stderr = stderr.trim().to_owned();
        return Err(BootError::Qemu {
            status,
            stderr,
            log: spec.console_log.clone(),
        });
    }
    Ok(Console {
        lines,
        elapsed: started.elapsed(),
    })
}

fn command(qemu: &str, spec: &Boot) -> Command {
    let mut command = Command::new(qemu);
    command
        .args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-nic", "none", "-serial", "stdio", "-smp", "1"])
        .args(["-m", &format!("{}M", spec.memory_mb)])
        .arg("-kernel")
        .arg(&spec.kernel)
        .arg("-initrd")
        .arg(&spec.initrd)
        .arg("-append")
        .arg(format!(
            "{KERNEL_APPEND} lsm={} vigil.suite={}",
            spec.lsm, spec.suite
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent. qemu dies
    // with the runner (killed, interrupted, timed out by a caller): no guest is left behind.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Reads console lines on a thread, copying them to `log`; the receiver ends at EOF.
fn spawn_reader(stdout: impl Read + Send + 'static, mut log: fs::File) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut raw = Vec::new();
        while reader.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
            let _ = log.write_all(&raw);
            let line = String::from_utf8_lossy(&raw).into_owned();
            raw.clear();
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(_) => return None,
        }
    }
    None
}

/// Last `count` lines of a console log, for error messages.
pub fn tail(log: &Path, count: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}
