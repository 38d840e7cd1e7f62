//! What /proc says about a process of the container, for audit events.
//!
//! Everything here is best effort: the process may be gone by the time it is read (a killed
//! exec, a short-lived child), in which case the event carries what the kernel record had.

use std::path::Path;

use crate::audit::Process;

/// The process `pid` as an audit [`Process`]: executable (relative to the container's root),
/// argv, parent and uid, from /proc.
pub fn describe(pid: u32, rootfs: &Path) -> Process {
    let mut process = Process::new(pid);
    if let Some(exe) = exe_in_container(pid, rootfs) {
        process = process.exepath(exe.as_bytes());
    }
    if let Some(comm) = comm(pid) {
        process = process.name(comm.as_bytes());
    }
    if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        process = process.argv(&cmdline);
    }
    if let Some(status) = status(pid) {
        let pname = comm(status.ppid).unwrap_or_default();
        process = process
            .parent(Some(status.ppid), pname.as_bytes())
            .uid(status.uid);
    }
    process
}

/// `/proc/<pid>/comm` without its newline.
pub fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

/// The process's executable as the container sees it (the host's rootfs prefix removed);
/// `None` when the process is gone.
pub fn exe_in_container(pid: u32, rootfs: &Path) -> Option<String> {
    let host = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text =
        |p: &Path| crate::bpf::escaped(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()));
    Some(match host.strip_prefix(rootfs) {
        Ok(inside) => format!("/{}", text(inside)),
        Err(_) => text(&host),
    })
}

/// Thread group, parent pid and effective uid from `/proc/<pid>/status`.
pub struct Status {
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
}

/// Reads `/proc/<pid>/status`.
pub fn status(pid: u32) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let tgid = field("Tgid:")?.next()?.parse().ok()?;
    let ppid = field("PPid:")?.next()?.parse().ok()?;
    // Uid: real, effective, saved, filesystem.
    let uid = field("Uid:")?.nth(1)?.parse().ok()?;
    Some(Status { tgid, ppid, uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_process() {
        let me = std::process::id();
        let s = status(me).expect("own status");
        assert_eq!(s.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw() as u32);
        assert_eq!(s.tgid, me);
        assert!(comm(me).is_some_and(|c| !c.is_empty()));
    }
}
