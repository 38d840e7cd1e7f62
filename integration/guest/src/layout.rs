//! What the guest's root file system holds, shared by the host (which builds the initramfs)
//! and the guest tests (which exec and open these paths).

/// The statically linked busybox every applet link points at.
pub const BUSYBOX: &str = "/bin/busybox";
/// Applets linked in /bin as symlinks to [`BUSYBOX`] (Debian's busybox-static layout).
pub const APPLETS: &[&str] = &[
    "sh", "cat", "nc", "echo", "true", "touch", "sleep", "ls", "rm",
];
/// A second copy of busybox that no allow list names, a "dropped binary": running it must
/// fail with EPERM in an enforced container. Named `touch` so busybox runs that applet: the
/// file it creates proves whether it ran.
pub const DROPPER: &str = "/usr/local/bin/touch";
/// A merged-/usr tree: `MERGED_ROOT/bin -> usr/bin`, busybox in `MERGED_ROOT/usr/bin`.
pub const MERGED_ROOT: &str = "/merged";
/// A file the enforced container may read.
pub const ALLOWED_FILE: &str = "/etc/hostname";
/// A file the enforced container may not open.
pub const SECRET_FILE: &str = "/etc/shadow";
/// Files and their contents.
pub const FILES: &[(&str, u32, &str)] = &[
    ("/etc/hostname", 0o644, "vigil-guest\n"),
    ("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
    ("/etc/shadow", 0o600, "root:*:19000:0:99999:7:::\n"),
];
/// Empty directories the guest's init mounts file systems on or writes into.
pub const DIRS: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/run", "/root"];
