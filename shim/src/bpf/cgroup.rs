//! cgroup2 lookups: where the unified hierarchy is mounted and a cgroup's id.
//!
//! The id the kernel programs see (`bpf_get_current_cgroup_id`) is the inode number of the
//! cgroup's directory in the cgroup2 mount (kernfs node id; see cgroup_id() in
//! include/linux/cgroup.h at v6.18).

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{BpfError, Result};

/// The cgroup2 mount point from /proc/self/mountinfo (/sys/fs/cgroup on pure v2 hosts,
/// /sys/fs/cgroup/unified on hybrid ones).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| BpfError::io("read", "/proc/self/mountinfo", e))?;
    parse_cgroup2_mount(&info).ok_or(BpfError::NoCgroup2)
}

/// Finds the mount point of the first `cgroup2` filesystem in mountinfo text
/// (proc(5): fields up to " - ", then fstype).
fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(|p| PathBuf::from(unescape(p)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&code, 8) {
                out.push(v as char);
                continue;
            }
            out.push(c);
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

/// The cgroup2 path of `pid` relative to the mount (`0::/default/ID` -> `default/ID`).
pub fn cgroup_path_of(pid: u32) -> Result<PathBuf> {
    let file = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&file).map_err(|e| BpfError::io("read", &file, e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .ok_or(BpfError::NoCgroupOf { pid })
}

/// The id of the cgroup directory `dir`.
pub fn cgroup_id(dir: &Path) -> Result<u64> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|e| BpfError::io("stat cgroup", dir, e))
}

/// The id of `pid`'s cgroup2 cgroup.
pub fn cgroup_id_of(pid: u32) -> Result<u64> {
    let mount = cgroup2_mount()?;
    cgroup_id(&mount.join(cgroup_path_of(pid)?))
}

/// Ids of every cgroup under `mount` (used to drop registrations whose cgroup is gone).
pub fn live_cgroup_ids(mount: &Path) -> Result<HashSet<u64>> {
    let mut ids = HashSet::new();
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if dir == mount => return Err(BpfError::io("list cgroups in", dir, e)),
            Err(_) => continue, // removed while walking
        };
        if let Ok(meta) = fs::metadata(&dir) {
            ids.insert(meta.ino());
        }
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(entry.path());
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_pure_mounts() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "29 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }
}
