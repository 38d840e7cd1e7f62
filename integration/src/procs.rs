//! Reading processes from /proc: parents, command lines, memory, fds.

use std::path::Path;

use anyhow::{Context, Result};

/// Every live process id.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The NUL-separated command line of `pid` as a list (empty for kernel threads or gone pids).
pub fn cmdline(pid: i32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The parent of `pid`, from /proc/PID/stat.
pub fn ppid(pid: i32) -> Option<i32> {
    stat_field(pid, 1)?.parse().ok()
}

/// The one-letter state of `pid` (`R`, `S`, `Z`, ...).
pub fn state(pid: i32) -> Option<char> {
    stat_field(pid, 0)?.chars().next()
}

/// Field `n` of /proc/PID/stat counted after the `(comm)` field (0 = state).
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(n).map(str::to_string)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Processes whose command line has `-address SOCKET` (the shims a containerd started).
pub fn shims_of(socket: &Path) -> Vec<i32> {
    let socket = socket.to_string_lossy();
    all_pids()
        .into_iter()
        .filter(|pid| {
            let args = cmdline(*pid);
            args.windows(2)
                .any(|w| w[0] == "-address" && w[1] == socket)
        })
        .collect()
}

/// The `-id` argument of a shim's command line.
pub fn shim_id(pid: i32) -> Option<String> {
    let args = cmdline(pid);
    args.windows(2)
        .find(|w| w[0] == "-id")
        .map(|w| w[1].clone())
}

/// Proportional set size of `pid` in KiB, from /proc/PID/smaps_rollup.
pub fn pss_kib(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no Pss line in {path}"))
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: i32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("read {dir}"))?
        .count())
}

/// Open file descriptors of `pid` whose target contains `needle` (for example `ptmx`).
pub fn fds_matching(pid: i32, needle: &str) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))?;
    Ok(entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains(needle))
        .count())
}

/// Number of threads of `pid`.
pub fn thread_count(pid: i32) -> Result<usize> {
    let dir = format!("/proc/{pid}/task");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("read {dir}"))?
        .count())
}

/// Sends `signal` to `pid`, ignoring a pid that is already gone.
pub fn kill(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

/// Waits up to `timeout` for every pid in `pids` to be gone; returns those still alive.
pub fn wait_gone(pids: &[i32], timeout: std::time::Duration) -> Vec<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if alive.is_empty() || std::time::Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
