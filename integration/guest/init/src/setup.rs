//! Turns the bare initramfs into a system the tests can use: pseudo file systems, loopback.

use std::fs;
use std::io;

use nix::mount::{mount, MsFlags};

/// (source, target, file system type) mounted in this order.
const MOUNTS: &[(&str, &str, &str)] = &[
    ("proc", "/proc", "proc"),
    ("sysfs", "/sys", "sysfs"),
    ("devtmpfs", "/dev", "devtmpfs"),
    ("securityfs", "/sys/kernel/security", "securityfs"),
    ("bpf", "/sys/fs/bpf", "bpf"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
    ("tmpfs", "/tmp", "tmpfs"),
];

/// Mounts every file system in [`MOUNTS`]; the error names the one that failed.
pub fn mount_all() -> Result<(), String> {
    for (source, target, fstype) in MOUNTS {
        mount(
            Some(*source),
            *target,
            Some(*fstype),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("mount {fstype} on {target}: {e}"))?;
    }
    Ok(())
}

/// Brings the loopback interface up (SIOCSIFFLAGS with IFF_UP), for connect and bind tests.
pub fn loopback_up() -> Result<(), String> {
    // SAFETY: plain socket(2); the descriptor is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(format!(
            "socket for SIOCSIFFLAGS: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
    // SAFETY: SIOCSIFFLAGS reads one ifreq, which lives until the call returns.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) };
    let err = io::Error::last_os_error();
    // SAFETY: fd is ours and not used after this.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(format!("SIOCSIFFLAGS up on lo: {err}"));
    }
    Ok(())
}

/// The active LSMs, as /sys/kernel/security/lsm lists them.
pub fn active_lsms() -> Result<String, String> {
    fs::read_to_string("/sys/kernel/security/lsm")
        .map_err(|e| format!("read /sys/kernel/security/lsm: {e}"))
}

/// Syncs and powers the machine off; qemu (`-no-reboot`) exits.
pub fn power_off() -> ! {
    // SAFETY: sync(2) and reboot(2) take no pointers; as PID 1 we may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot(2) returns only on error; exiting PID 1 panics the kernel, and panic=-1 with
    // -no-reboot ends qemu as well.
    std::process::exit(1)
}

/// The `vigil.suite=` value of the kernel command line.
pub fn suite() -> Option<String> {
    let cmdline = fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("vigil.suite="))
        .map(str::to_owned)
}
