//! What a test needs from the machine; a missing piece is a skip with its cause.

use std::path::{Path, PathBuf};

/// Programs every end-to-end case runs.
pub const BASE_PROGRAMS: [&str; 4] = ["containerd", "ctr", "runc", "containerd-shim-runc-v2"];

/// Finds `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The cgroup2 mount point (`/sys/fs/cgroup` on pure v2, `/sys/fs/cgroup/unified` on hybrid).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(mount_point)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Ok` when the machine can run containers through a private containerd, else the cause.
pub fn containers() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("not running as root (run the e2e suite with sudo or as root)".into());
    }
    for program in BASE_PROGRAMS {
        if which(program).is_none() {
            return Err(format!(
                "{program} not found on PATH (scripts/setup.sh installs it)"
            ));
        }
    }
    if cgroup2_mount().is_none() {
        return Err("no cgroup2 mount (vigil needs the cgroup2 tree)".into());
    }
    Ok(())
}

/// `Ok` when `program` is on `PATH`, else a skip reason naming it.
pub fn program(program: &str) -> Result<(), String> {
    match which(program) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{program} not found on PATH (scripts/setup.sh installs it)"
        )),
    }
}

/// `Ok` when the vigil shim is built, else a skip reason saying how to build it.
pub fn vigil_shim() -> Result<PathBuf, String> {
    crate::paths::shim_dir().ok_or_else(|| {
        format!(
            "{} not built (run `cargo build -p vigil-shim` or set VIGIL_SHIM_DIR)",
            crate::paths::SHIM_BINARY
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal_spaces() {
        assert_eq!(unescape_mount(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }
}
