//! The probes themselves: files under /proc and /sys, real BPF loads, and the runc binary.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::statfs::BPF_FS_MAGIC;

use super::bpf_load::{attach_type, btf_func_id, errno_text, prog_type, Probe};
use super::{Check, CheckId, ProbeConfig};

/// Where the kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Active LSMs, comma-separated (securityfs).
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";
/// Seccomp actions this kernel supports.
pub const SECCOMP_ACTIONS: &str = "/proc/sys/kernel/seccomp/actions_avail";
/// The LSM hook a probe program attaches to.
const LSM_PROBE_HOOK: &str = "bpf_lsm_bprm_check_security";
/// How long `runc --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

fn check(id: CheckId, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            id,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            id,
            ok: false,
            detail,
        },
    }
}

pub(super) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

pub(super) fn btf() -> Check {
    let result = match std::fs::metadata(VMLINUX_BTF) {
        Ok(m) => Ok(format!("{VMLINUX_BTF} ({} KiB)", m.len() / 1024)),
        Err(e) => Err(format!("{VMLINUX_BTF}: {e}")),
    };
    check(CheckId::Btf, result)
}

/// bpffs must back the pin root, or the closest folder above it that exists (the shim
/// creates the rest).
pub(super) fn bpffs(pin_root: &Path) -> Check {
    let Some(existing) = pin_root.ancestors().find(|p| p.exists()) else {
        return check(
            CheckId::Bpffs,
            Err(format!("no folder of {} exists", pin_root.display())),
        );
    };
    let result = match nix::sys::statfs::statfs(existing) {
        Ok(fs) if fs.filesystem_type() == BPF_FS_MAGIC => {
            Ok(format!("{} is on bpffs", existing.display()))
        }
        Ok(_) => Err(format!(
            "{} (for bpf_pin_root {}) is not on bpffs",
            existing.display(),
            pin_root.display()
        )),
        Err(e) => Err(format!("statfs {}: {e}", existing.display())),
    };
    check(CheckId::Bpffs, result)
}

fn load(id: CheckId, probe: &Probe, what: &str) -> Check {
    check(
        id,
        probe
            .load()
            .map(|()| format!("{what} loaded"))
            .map_err(|e| format!("{what}: bpf(BPF_PROG_LOAD) failed: {}", errno_text(&e))),
    )
}

pub(super) fn bpf_programs() -> Check {
    let tp = Probe::returning(prog_type::TRACEPOINT, attach_type::NONE, 0);
    let first = load(CheckId::BpfPrograms, &tp, "tracepoint program");
    if !first.ok {
        return first;
    }
    let filter = Probe::returning(prog_type::SOCKET_FILTER, attach_type::NONE, 0);
    let second = load(CheckId::BpfPrograms, &filter, "socket filter");
    let detail = "tracepoint and socket filter programs load".to_owned();
    if second.ok {
        Check { detail, ..second }
    } else {
        second
    }
}

pub(super) fn exec_kill() -> Check {
    load(
        CheckId::ExecKill,
        &Probe::send_signal(),
        "tracepoint program calling bpf_send_signal",
    )
}

pub(super) fn cgroup_sock_addr() -> Check {
    let probe = Probe::returning(
        prog_type::CGROUP_SOCK_ADDR,
        attach_type::CGROUP_INET4_CONNECT,
        1,
    );
    load(CheckId::CgroupSockAddr, &probe, "cgroup/connect4 program")
}

pub(super) fn lsm_active() -> Check {
    let result = match std::fs::read_to_string(LSM_LIST) {
        Ok(list) if lsm_list_has_bpf(&list) => Ok(format!("bpf is active ({})", list.trim())),
        Ok(list) => Err(format!(
            "bpf is not in the active LSM list ({})",
            list.trim()
        )),
        Err(e) => Err(format!("{LSM_LIST}: {e} (is securityfs mounted?)")),
    };
    check(CheckId::LsmActive, result)
}

pub(super) fn lsm_list_has_bpf(list: &str) -> bool {
    list.trim().split(',').any(|l| l == "bpf")
}

pub(super) fn lsm_bpf() -> Check {
    let id = match btf_func_id(Path::new(VMLINUX_BTF), LSM_PROBE_HOOK) {
        Ok(id) => id,
        Err(e) => return check(CheckId::LsmBpf, Err(format!("no attach target: {e}"))),
    };
    let minimal = load(
        CheckId::LsmBpf,
        &Probe::lsm(id),
        &format!("lsm/{} program", &LSM_PROBE_HOOK[8..]),
    );
    if !minimal.ok {
        return minimal;
    }
    // A minimal program loads; the tier needs vigil's own set to pass this kernel's verifier
    // and attach, all of them (the shim's start-up does the same before choosing the tier).
    check(
        CheckId::LsmBpf,
        crate::bpf::lsm_probe()
            .map(|()| "vigil's LSM programs load and attach".to_owned())
            .map_err(|why| format!("vigil's LSM programs: {why}")),
    )
}

pub(super) fn seccomp() -> (Check, Check) {
    match std::fs::read_to_string(SECCOMP_ACTIONS) {
        Ok(actions) => {
            let filter = check(
                CheckId::SeccompFilter,
                Ok(format!("actions: {}", actions.trim())),
            );
            let notify = if seccomp_has_user_notif(&actions) {
                Ok("SECCOMP_RET_USER_NOTIF available".to_owned())
            } else {
                Err(format!(
                    "user_notif is not in {SECCOMP_ACTIONS} ({})",
                    actions.trim()
                ))
            };
            (filter, check(CheckId::SeccompUserNotif, notify))
        }
        Err(e) => {
            let why = format!("{SECCOMP_ACTIONS}: {e} (kernel without CONFIG_SECCOMP_FILTER?)");
            (
                check(CheckId::SeccompFilter, Err(why.clone())),
                check(CheckId::SeccompUserNotif, Err(why)),
            )
        }
    }
}

pub(super) fn seccomp_has_user_notif(actions: &str) -> bool {
    actions.split_whitespace().any(|a| a == "user_notif")
}

/// fanotify with permission events (`FAN_CLASS_CONTENT`), as the fallback file guard needs.
/// Only the group is created; nothing is marked.
pub(super) fn fanotify() -> Check {
    let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
    // SAFETY: fanotify_init takes two integer flag words and returns a new fd or -1.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return check(
            CheckId::Fanotify,
            Err(format!(
                "fanotify_init(FAN_CLASS_CONTENT): {}",
                errno_text(&e)
            )),
        );
    }
    // SAFETY: fd is a new descriptor that nothing else owns; wrapping it closes it on drop.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    check(
        CheckId::Fanotify,
        Ok("permission events available (FAN_CLASS_CONTENT)".into()),
    )
}

pub(super) fn cgroup2() -> (Check, Option<PathBuf>) {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => match cgroup2_mount(&text) {
            Some(path) => {
                let hybrid = path != Path::new("/sys/fs/cgroup");
                let kind = if hybrid {
                    "hybrid: v1 controllers beside it"
                } else {
                    "unified"
                };
                let detail = format!("cgroup2 mounted at {} ({kind})", path.display());
                (check(CheckId::Cgroup2, Ok(detail)), Some(path))
            }
            None => (
                check(
                    CheckId::Cgroup2,
                    Err("no cgroup2 mount in /proc/self/mountinfo".into()),
                ),
                None,
            ),
        },
        Err(e) => (
            check(CheckId::Cgroup2, Err(format!("/proc/self/mountinfo: {e}"))),
            None,
        ),
    }
}

/// The first cgroup2 mount point in mountinfo text (proc(5): fields, ` - `, fstype, ...).
pub(super) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        if rest.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        fields
            .split_whitespace()
            .nth(4)
            .map(|p| PathBuf::from(unescape_octal(p)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        match code.and_then(|d| u8::from_str_radix(d, 8).ok()) {
            Some(b) if bytes[i] == b'\\' => {
                out.push(b);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// runc's version and libseccomp's, from `<runc_binary> --version`.
pub(super) fn runc(config: &ProbeConfig) -> (Check, Option<String>) {
    let binary = &config.runc_binary;
    match run_version(binary) {
        Ok(out) => match parse_runc_version(&out) {
            Some((version, seccomp)) => {
                let lib = seccomp
                    .map(|s| format!(", libseccomp {s}"))
                    .unwrap_or_default();
                let detail = format!("{} is runc {version}{lib}", binary.display());
                (check(CheckId::Runc, Ok(detail)), Some(version))
            }
            None => {
                let first = out.lines().next().unwrap_or("").to_owned();
                (
                    check(
                        CheckId::Runc,
                        Err(format!("{} --version said {first:?}", binary.display())),
                    ),
                    None,
                )
            }
        },
        Err(e) => (
            check(
                CheckId::Runc,
                Err(format!("{} --version: {e}", binary.display())),
            ),
            None,
        ),
    }
}

/// `runc version 1.1.5+ds1` and `libseccomp: 2.5.4` lines.
pub(super) fn parse_runc_version(out: &str) -> Option<(String, Option<String>)> {
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix("runc version "))?
        .trim()
        .to_owned();
    let seccomp = out
        .lines()
        .find_map(|l| l.strip_prefix("libseccomp: "))
        .map(|s| s.trim().to_owned());
    Some((version, seccomp))
}

/// containerd's version, if a `containerd` binary is on PATH (informational).
pub(super) fn containerd() -> (Check, Option<String>) {
    match run_version(Path::new("containerd")) {
        // `containerd github.com/containerd/containerd 1.6.20 1.6.20~ds1-1+b1`
        Ok(out) => match out.split_whitespace().nth(2) {
            Some(v) => (
                check(CheckId::Containerd, Ok(format!("containerd {v}"))),
                Some(v.to_owned()),
            ),
            None => (
                check(
                    CheckId::Containerd,
                    Err(format!("unexpected --version output {out:?}")),
                ),
                None,
            ),
        },
        Err(e) => (
            check(
                CheckId::Containerd,
                Err(format!("containerd --version: {e}")),
            ),
            None,
        ),
    }
}

/// Runs `<binary> --version` with a deadline; stdout on success.
fn run_version(binary: &Path) -> Result<String, String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Read until the child closes its stdout rather than waiting for its exit status: inside
    // the shim a SIGCHLD reaper may collect the child first (the wait then says ECHILD).
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let read = std::io::Read::read_to_string(&mut stdout, &mut text);
        let _ = tx.send(read.map(|_| text));
    });
    let out = match rx.recv_timeout(VERSION_TIMEOUT) {
        Ok(read) => read.map_err(|e| e.to_string())?,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {VERSION_TIMEOUT:?}"));
        }
    };
    match child.wait() {
        Ok(status) if !status.success() => Err(format!("exited with {status}")),
        // ECHILD: reaped by someone else; the output is what counts.
        Ok(_) | Err(_) => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_mountinfo() {
        let hybrid = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
33 25 0:27 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:28 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:29 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 25 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let spaced = "30 25 0:26 / /mnt/my\\040cg rw shared:4 - cgroup2 none rw";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
        assert_eq!(
            cgroup2_mount("35 33 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw"),
            None
        );
    }

    #[test]
    fn reads_lsm_lists_seccomp_actions_and_runc_versions() {
        assert!(lsm_list_has_bpf(
            "lockdown,capability,landlock,yama,apparmor,bpf\n"
        ));
        assert!(!lsm_list_has_bpf("lockdown,capability,bpfx"));
        let actions = "kill_process kill_thread trap errno user_notif trace log allow\n";
        assert!(seccomp_has_user_notif(actions));
        assert!(!seccomp_has_user_notif("kill_process errno allow"));
        let out = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n\
                   go: go1.19.8\nlibseccomp: 2.5.4\n";
        assert_eq!(
            parse_runc_version(out),
            Some(("1.1.5+ds1".into(), Some("2.5.4".into())))
        );
        assert_eq!(parse_runc_version("crun version 1.8"), None);
    }

    #[test]
    fn a_missing_runc_is_reported_not_fatal() {
        let config = ProbeConfig {
            runc_binary: PathBuf::from("/nonexistent/runc"),
            bpf_pin_root: PathBuf::from("/sys/fs/bpf/vigil"),
        };
        let (check, version) = runc(&config);
        assert!(!check.ok && version.is_none());
        assert!(
            check.detail.contains("/nonexistent/runc --version"),
            "{}",
            check.detail
        );
    }
}
