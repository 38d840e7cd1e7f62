//! The container's root filesystem: containerd's rootfs mounts into `<bundle>/rootfs`, and
//! every mount below that folder undone at delete.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// One mount from `CreateTaskRequest.rootfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// Filesystem type (`overlay`, `bind`, ...).
    pub kind: String,
    /// Source.
    pub source: String,
    /// fstab-style options.
    pub options: Vec<String>,
}

/// Why a rootfs step failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// mount(2) failed.
    #[error("mount rootfs {kind} {device} on {target}: {errno}")]
    Mount {
        /// Filesystem type.
        kind: String,
        /// Source.
        device: String,
        /// Target folder.
        target: String,
        /// Cause.
        errno: Errno,
    },
    /// Options longer than mount(2) accepts.
    #[error("mount rootfs {kind}: options are {len} bytes, more than the {max} mount(2) takes")]
    OptionsTooLong {
        /// Filesystem type.
        kind: String,
        /// Their length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The target folder could not be made or the mount table read.
    #[error("{step} {path}: {source}")]
    Io {
        /// What was done.
        step: &'static str,
        /// On what.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A mount under the rootfs could not be removed.
    #[error("unmount {path}: {errno}")]
    Unmount {
        /// The mount point.
        path: String,
        /// Cause.
        errno: Errno,
    },
}

/// Mount flags and the rest of the options, split as mount(8) does.
#[derive(Debug, PartialEq, Eq)]
struct ParsedOptions {
    flags: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> ParsedOptions {
    let mut out = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for opt in options {
        match flag(opt) {
            Some((f, true)) => out.flags.remove(f),
            Some((f, false)) if is_propagation(f) => out.propagation |= f,
            Some((f, false)) => out.flags |= f,
            None => out.data.push(opt.clone()),
        }
    }
    out
}

fn is_propagation(f: MsFlags) -> bool {
    let p = MsFlags::MS_SHARED | MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE | MsFlags::MS_UNBINDABLE;
    p.intersects(f)
}

/// The flag an option sets, and whether the option clears it instead.
fn flag(opt: &str) -> Option<(MsFlags, bool)> {
    use MsFlags as F;
    let f = match opt {
        "async" => (F::MS_SYNCHRONOUS, true),
        "atime" => (F::MS_NOATIME, true),
        "bind" => (F::MS_BIND, false),
        "defaults" => (F::empty(), false),
        "dev" => (F::MS_NODEV, true),
        "diratime" => (F::MS_NODIRATIME, true),
        "dirsync" => (F::MS_DIRSYNC, false),
        "exec" => (F::MS_NOEXEC, true),
        "mand" => (F::MS_MANDLOCK, false),
        "noatime" => (F::MS_NOATIME, false),
        "nodev" => (F::MS_NODEV, false),
        "nodiratime" => (F::MS_NODIRATIME, false),
        "noexec" => (F::MS_NOEXEC, false),
        "nomand" => (F::MS_MANDLOCK, true),
        "norelatime" => (F::MS_RELATIME, true),
        "nostrictatime" => (F::MS_STRICTATIME, true),
        "nosuid" => (F::MS_NOSUID, false),
        "rbind" => (F::MS_BIND | F::MS_REC, false),
        "relatime" => (F::MS_RELATIME, false),
        "remount" => (F::MS_REMOUNT, false),
        "ro" => (F::MS_RDONLY, false),
        "rw" => (F::MS_RDONLY, true),
        "strictatime" => (F::MS_STRICTATIME, false),
        "suid" => (F::MS_NOSUID, true),
        "sync" => (F::MS_SYNCHRONOUS, false),
        "private" => (F::MS_PRIVATE, false),
        "rprivate" => (F::MS_PRIVATE | F::MS_REC, false),
        "shared" => (F::MS_SHARED, false),
        "rshared" => (F::MS_SHARED | F::MS_REC, false),
        "slave" => (F::MS_SLAVE, false),
        "rslave" => (F::MS_SLAVE | F::MS_REC, false),
        "unbindable" => (F::MS_UNBINDABLE, false),
        "runbindable" => (F::MS_UNBINDABLE | F::MS_REC, false),
        _ => return None,
    };
    Some(f)
}

/// Mounts every rootfs mount on `target`, in order; undoes what it did if one fails.
pub fn mount_all(mounts: &[RootfsMount], target: &Path) -> Result<(), MountError> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            if i > 0 {
                let _ = unmount_all(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &RootfsMount, target: &Path) -> Result<(), MountError> {
    let mut opts = parse_options(&m.options);
    let max = page_size();
    // Like containerd: an overlay option string near a page gets its lowerdirs relative
    // to their common parent, mounted from inside that folder.
    let mut folder = None;
    if m.kind == "overlay" && opts.data.join(",").len() >= max.saturating_sub(512) {
        if let Some((dir, data)) = compact_lowerdir(&opts.data) {
            folder = Some(dir);
            opts.data = data;
        }
    }
    let data = opts.data.join(",");
    if data.len() >= max {
        let kind = m.kind.clone();
        return Err(MountError::OptionsTooLong {
            kind,
            len: data.len(),
            max,
        });
    }
    let err = |errno| MountError::Mount {
        kind: m.kind.clone(),
        device: m.source.clone(),
        target: target.display().to_string(),
        errno,
    };
    let fstype = (!m.kind.is_empty() && m.kind != "bind").then_some(m.kind.as_str());
    let data = (!data.is_empty()).then_some(data.as_str());
    let first = || mount(Some(m.source.as_str()), target, fstype, opts.flags, data);
    match &folder {
        Some(dir) => in_folder(dir, first),
        None => first(),
    }
    .map_err(err)?;
    if !opts.propagation.is_empty() {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )
        .map_err(err)?;
    }
    // A bind mount ignores MS_RDONLY on the first call; read-only needs a remount.
    let bind_ro = MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if opts.flags.contains(bind_ro) {
        let flags = opts.flags | MsFlags::MS_REMOUNT;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(err)?;
    }
    Ok(())
}

/// `lowerdir=` rewritten relative to the lowerdirs' common parent folder, and that folder.
fn compact_lowerdir(data: &[String]) -> Option<(PathBuf, Vec<String>)> {
    let idx = data.iter().position(|o| o.starts_with("lowerdir="))?;
    let dirs: Vec<&str> = data[idx]["lowerdir=".len()..].split(':').collect();
    let first = *dirs.first()?;
    let mut common = first.len();
    for d in &dirs[1..] {
        common = common.min(
            first
                .bytes()
                .zip(d.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    let prefix = &first[..first[..common].rfind('/')? + 1];
    if prefix.len() <= 1 {
        return None;
    }
    let relative: Vec<&str> = dirs.iter().map(|d| &d[prefix.len()..]).collect();
    let mut out = data.to_vec();
    out[idx] = format!("lowerdir={}", relative.join(":"));
    Some((PathBuf::from(prefix), out))
}

/// Runs `f` on a thread whose working folder (unshared from the process) is `dir`.
fn in_folder<T: Send>(dir: &Path, f: impl FnOnce() -> nix::Result<T> + Send) -> nix::Result<T> {
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::chdir(dir)?;
            f()
        });
        worker.join().unwrap_or(Err(Errno::EIO))
    })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects; it returns -1 for an unknown name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Unmounts everything at or below `target`, deepest first.
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    let mut points = mounts_under(target)?;
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        unmount_stacked(&p)?;
    }
    Ok(())
}

/// Unmounts until nothing is mounted at `path` (mounts can be stacked).
fn unmount_stacked(path: &Path) -> Result<(), MountError> {
    loop {
        match umount2(path, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                tracing::warn!(path = %path.display(), "mount busy; detaching it lazily");
                return umount2(path, MntFlags::MNT_DETACH).map_err(|errno| MountError::Unmount {
                    path: path.display().to_string(),
                    errno,
                });
            }
            Err(errno) => {
                let path = path.display().to_string();
                return Err(MountError::Unmount { path, errno });
            }
        }
    }
}

/// Mount points at or below `target`, from /proc/self/mountinfo.
fn mounts_under(target: &Path) -> Result<Vec<PathBuf>, MountError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| MountError::Io {
            step: "read",
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
    Ok(parse_mountinfo_under(&info, target))
}

fn parse_mountinfo_under(info: &str, target: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .filter(|p| p.starts_with(target))
        .collect();
    out.dedup();
    out
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let oct = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        match (bytes[i], oct.and_then(|d| u8::from_str_radix(d, 8).ok())) {
            (b'\\', Some(v)) => {
                out.push(v);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> ParsedOptions {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let p = opts(&["rbind", "ro", "nosuid", "rprivate"]);
        assert_eq!(
            p.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert!(p.data.is_empty());

        let p = opts(&["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"]);
        assert_eq!(p.flags, MsFlags::empty());
        assert_eq!(
            p.data,
            ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"]
        );
    }

    #[test]
    fn later_options_clear_earlier_flags() {
        assert_eq!(opts(&["ro", "rw"]).flags, MsFlags::empty());
        assert_eq!(opts(&["noexec", "exec", "nodev"]).flags, MsFlags::MS_NODEV);
    }

    #[test]
    fn mountinfo_is_filtered_and_unescaped() {
        let info = "\
36 35 98:0 / /run/b/rootfs rw - overlay overlay rw
37 36 98:0 / /run/b/rootfs/proc rw - proc proc rw
38 35 98:0 / /run/b/rootfs2 rw - tmpfs t rw
39 35 98:0 / /run/b/rootfs/with\\040space rw - tmpfs t rw
";
        let got = parse_mountinfo_under(info, Path::new("/run/b/rootfs"));
        let want: Vec<PathBuf> = [
            "/run/b/rootfs",
            "/run/b/rootfs/proc",
            "/run/b/rootfs/with space",
        ]
        .map(PathBuf::from)
        .to_vec();
        assert_eq!(got, want);
    }

    #[test]
    fn long_lowerdir_lists_become_relative_to_their_common_parent() {
        let base = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";
        let lower: Vec<String> = (1..=80).map(|i| format!("{base}/{i}/fs")).collect();
        let data = vec![
            "index=off".to_string(),
            format!("lowerdir={}", lower.join(":")),
        ];
        let (dir, out) = compact_lowerdir(&data).unwrap();
        assert_eq!(dir, PathBuf::from(format!("{base}/")));
        assert!(out[1].starts_with("lowerdir=1/fs:2/fs:3/fs"), "{}", out[1]);
        assert!(out[1].len() < 4096 - 512);
        assert_eq!(out[0], "index=off");
        let unrelated = vec!["lowerdir=/a/x:/b/y".to_string()];
        assert!(compact_lowerdir(&unrelated).is_none());
    }

    #[test]
    fn in_folder_changes_only_the_worker_threads_folder() {
        let before = std::env::current_dir().unwrap();
        let seen = in_folder(Path::new("/proc"), nix::unistd::getcwd).unwrap();
        assert_eq!(seen, PathBuf::from("/proc"));
        assert_eq!(std::env::current_dir().unwrap(), before);
    }

    #[test]
    fn too_long_options_are_refused_before_mounting() {
        let m = RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!(
                "lowerdir=/a{}:/b{}",
                "/x".repeat(1100),
                "/y".repeat(1100)
            )],
        };
        let err = mount_one(&m, Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(err, MountError::OptionsTooLong { .. }), "{err}");
    }
}
