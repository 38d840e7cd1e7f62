//! File guard for kernels without LSM-BPF: fanotify permission events on the container's
//! root filesystem.
//!
//! The container's rootfs is an overlay mounted by the shim, so it is a superblock of its own:
//! a `FAN_MARK_FILESYSTEM` mark on it sees every open through that overlay, in any mount
//! namespace (runc's pivot_root gives the container a different mount of the same
//! superblock, which a `FAN_MARK_MOUNT` mark would miss), and nothing else on the host.
//! A rootfs that shares its superblock with its parent folder (a plain bind mount) would
//! put a mark on the whole host filesystem, so [`FileGuard::start`] refuses it.
//!
//! The kernel holds the opening thread in `fsnotify_open_perm()` until the shim answers, so a
//! denied open fails with EPERM before any content is read or written and before O_TRUNC
//! truncates. fanotify does not say whether the open was for reading or writing; the thread is
//! stopped inside its open syscall, so its flags are read from `/proc/<tid>/syscall` (the
//! registers saved at syscall entry, which the caller cannot change any more). A create
//! (O_CREAT of a new file) makes the empty file before the permission event: a denied create
//! can leave an empty file behind.
//!
//! If the shim dies, the kernel allows pending and future events once the fanotify fd is
//! closed (fanotify(7)), so a dead shim never blocks a container's opens.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::PollFlags;

use super::wake::Wake;

/// How a file is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// O_RDONLY.
    Read,
    /// O_WRONLY or O_RDWR, or O_CREAT / O_TRUNC.
    Write,
    /// Opened to be executed (execve of the file, or the ELF interpreter).
    Exec,
    /// Opened by the kernel on the thread's behalf outside an open syscall (loading an
    /// executable's pieces): not an access the program chose.
    Kernel,
}

/// One open the kernel is holding until the shim answers.
#[derive(Debug, Clone)]
pub struct FileAccess {
    /// Thread that opens the file (host pid namespace).
    pub tid: u32,
    /// Path inside the container (the rootfs prefix removed).
    pub path: String,
    /// What the open is for.
    pub access: Access,
    /// The opened file's identity (`st_dev`, `st_ino`), when it could be read.
    pub inode: Option<(u64, u64)>,
}

/// Decides each open by a process of the container. Called on the guard's thread while the
/// opener waits: must not block.
pub trait FileResponder: Send + Sync + 'static {
    /// `true` allows the open; `false` fails it with EPERM.
    fn allow(&self, access: &FileAccess) -> bool;
    /// Whether `tid` belongs to the container (opens by host processes are always allowed).
    fn is_member(&self, tid: u32) -> bool;
}

/// Why the file guard cannot run for a container.
#[derive(Debug, thiserror::Error)]
pub enum FileGuardError {
    /// The rootfs shares its filesystem with the host, so a mark would cover the host too.
    #[error(
        "file guard needs the container rootfs {0} to be a filesystem of its own (an overlay \
         snapshot); a plain folder or bind mount would put the host's files under the guard"
    )]
    SharedFilesystem(PathBuf),
    /// A fanotify call failed.
    #[error("file guard: {call} on {path} failed: {source}")]
    Fanotify {
        /// The failing call.
        call: &'static str,
        /// The rootfs.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A running file guard. Dropping it removes the mark: later opens are no longer checked.
pub struct FileGuard {
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl FileGuard {
    /// Starts guarding every open below `rootfs`, the container's root as mounted on the host.
    pub fn start(
        rootfs: &Path,
        responder: Arc<dyn FileResponder>,
    ) -> Result<FileGuard, FileGuardError> {
        ensure_own_filesystem(rootfs)?;
        let fan = init(rootfs)?;
        mark(&fan, rootfs)?;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Wake::new().map_err(|source| fail("eventfd", rootfs, source))?);
        let (flag, waker) = (stop.clone(), wake.clone());
        let prefix = rootfs.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("fanotify".into())
            .spawn(move || serve(fan, &prefix, &flag, &waker, responder.as_ref()))
            .map_err(|source| fail("spawn", rootfs, source))?;
        Ok(FileGuard {
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.fire();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn fail(call: &'static str, path: &Path, source: io::Error) -> FileGuardError {
    FileGuardError::Fanotify {
        call,
        path: path.to_path_buf(),
        source,
    }
}

fn ensure_own_filesystem(rootfs: &Path) -> Result<(), FileGuardError> {
    let parent = rootfs.parent().unwrap_or(Path::new("/"));
    let own = std::fs::metadata(rootfs).map_err(|e| fail("stat", rootfs, e))?;
    let up = std::fs::metadata(parent).map_err(|e| fail("stat", parent, e))?;
    if own.dev() == up.dev() {
        return Err(FileGuardError::SharedFilesystem(rootfs.to_path_buf()));
    }
    Ok(())
}

fn init(rootfs: &Path) -> Result<OwnedFd, FileGuardError> {
    let flags = libc::FAN_CLOEXEC | libc::FAN_CLASS_CONTENT | libc::FAN_REPORT_TID;
    let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
    // SAFETY: fanotify_init takes two flag words and returns a new fd or -1.
    let fd = unsafe { libc::fanotify_init(flags, event_flags) };
    if fd < 0 {
        return Err(fail("fanotify_init", rootfs, io::Error::last_os_error()));
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mark(fan: &OwnedFd, rootfs: &Path) -> Result<(), FileGuardError> {
    let path = std::ffi::CString::new(rootfs.as_os_str().as_encoded_bytes())
        .map_err(|e| fail("fanotify_mark", rootfs, io::Error::other(e)))?;
    let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
    let mask = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM;
    // SAFETY: valid fanotify fd and NUL-terminated path.
    let rc =
        unsafe { libc::fanotify_mark(fan.as_raw_fd(), flags, mask, libc::AT_FDCWD, path.as_ptr()) };
    if rc != 0 {
        return Err(fail("fanotify_mark", rootfs, io::Error::last_os_error()));
    }
    Ok(())
}

const META: usize = size_of::<libc::fanotify_event_metadata>();

fn serve(
    fan: OwnedFd,
    rootfs: &Path,
    stop: &AtomicBool,
    wake: &Wake,
    responder: &dyn FileResponder,
) {
    let mut buf = vec![0u8; 64 * META];
    while !stop.load(Ordering::Relaxed) {
        let (events, _) = wake.wait(fan.as_fd(), Duration::from_millis(200));
        if !events.contains(PollFlags::POLLIN) {
            continue;
        }
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let mut offset = 0;
        while offset + META <= n as usize {
            // SAFETY: the kernel wrote whole records; read_unaligned copes with any offset.
            let meta: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(offset).cast()) };
            if meta.vers != libc::FANOTIFY_METADATA_VERSION || meta.event_len < META as u32 {
                tracing::warn!(version = meta.vers, "fanotify: unexpected event record");
                break;
            }
            answer(&fan, &meta, rootfs, responder);
            offset += meta.event_len as usize;
        }
    }
}

fn answer(
    fan: &OwnedFd,
    meta: &libc::fanotify_event_metadata,
    rootfs: &Path,
    responder: &dyn FileResponder,
) {
    if meta.fd < 0 {
        return;
    }
    // SAFETY: the kernel installed this fd for the event; it is ours to close.
    let file = unsafe { OwnedFd::from_raw_fd(meta.fd) };
    let tid = meta.pid as u32;
    let allowed = if responder.is_member(tid) {
        let access = FileAccess {
            tid,
            path: container_path(&file, rootfs),
            access: access_kind(tid, meta.mask),
            inode: nix::sys::stat::fstat(file.as_raw_fd())
                .ok()
                .map(|st| (st.st_dev, st.st_ino)),
        };
        responder.allow(&access)
    } else {
        true
    };
    let response = libc::fanotify_response {
        fd: file.as_raw_fd(),
        response: if allowed {
            libc::FAN_ALLOW
        } else {
            libc::FAN_DENY
        },
    };
    // SAFETY: writes one fanotify_response from a valid local.
    let rc = unsafe {
        libc::write(
            fan.as_raw_fd(),
            (&response as *const libc::fanotify_response).cast(),
            size_of::<libc::fanotify_response>(),
        )
    };
    if rc < 0 {
        tracing::warn!(error = %io::Error::last_os_error(), tid, "fanotify: answer not delivered");
    }
}

/// The path of the event's file inside the container.
fn container_path(file: &OwnedFd, rootfs: &Path) -> String {
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    let host = std::fs::read_link(link).unwrap_or_default();
    let text =
        |p: &Path| crate::bpf::escaped(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()));
    match host.strip_prefix(rootfs) {
        Ok(inside) => format!("/{}", text(inside)),
        Err(_) => text(&host),
    }
}

/// Read, write or exec, from the event mask and the opener's syscall arguments.
fn access_kind(tid: u32, mask: u64) -> Access {
    if mask & libc::FAN_OPEN_EXEC_PERM != 0 {
        return Access::Exec;
    }
    match opener_syscall(tid) {
        Opener::Open(flags) if is_write(flags) => Access::Write,
        Opener::Open(_) => Access::Read,
        // The kernel opening an executable's pieces on the thread's behalf.
        Opener::Other(nr) if nr == libc::SYS_execve || nr == libc::SYS_execveat => Access::Kernel,
        // An open not made by an open syscall (io_uring's IORING_OP_OPENAT, from
        // io_uring_enter or one of its worker threads) or one whose syscall cannot be read:
        // its flags are unknown, so it is judged as a write, the stricter reading.
        Opener::Other(_) | Opener::Unknown => Access::Write,
    }
}

fn is_write(flags: u64) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
}

/// The syscall a thread waiting for a permission answer is in.
enum Opener {
    /// An open-family syscall, with its flags.
    Open(u64),
    /// Another syscall, by number.
    Other(i64),
    /// Not readable (the thread is gone, or never showed a syscall).
    Unknown,
}

/// How often `/proc/<tid>/syscall` is read again while it says `running`: the kernel queues
/// the event before the opener goes to sleep waiting for the answer, so the first reads
/// can race with it (seen on a one-CPU guest for up to ~40 reads).
const RUNNING_RETRIES: u32 = 2000;

/// The syscall `tid` is stopped in, from `/proc/<tid>/syscall` (proc(5): "the number of the
/// system call being executed, followed by the values of the argument registers", in hex).
fn opener_syscall(tid: u32) -> Opener {
    for attempt in 0..RUNNING_RETRIES {
        let mut text = String::new();
        let read = File::open(format!("/proc/{tid}/syscall"))
            .and_then(|mut f| f.read_to_string(&mut text));
        if read.is_err() {
            return Opener::Unknown;
        }
        if text.trim_start().starts_with("running") {
            if attempt < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
            continue;
        }
        return parse_syscall(tid, &text);
    }
    Opener::Unknown
}

fn parse_syscall(tid: u32, text: &str) -> Opener {
    let mut fields = text.split_whitespace();
    let Some(nr) = fields.next().and_then(|f| f.parse::<i64>().ok()) else {
        return Opener::Unknown;
    };
    let args: Vec<u64> = fields
        .take(6)
        .filter_map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .collect();
    let flags = match nr {
        libc::SYS_open => args.get(1).copied(),
        libc::SYS_openat => args.get(2).copied(),
        libc::SYS_creat => Some((libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64),
        libc::SYS_openat2 => args.get(2).and_then(|a| read_open_how_flags(tid, *a)),
        libc::SYS_open_by_handle_at => args.get(2).copied(),
        _ => return Opener::Other(nr),
    };
    // An open whose flags cannot be read counts as a write: the stricter reading.
    Opener::Open(flags.unwrap_or(libc::O_RDWR as u64))
}

/// `struct open_how` starts with `__u64 flags` (include/uapi/linux/openat2.h).
fn read_open_how_flags(tid: u32, address: u64) -> Option<u64> {
    let mut flags = [0u8; 8];
    let local = libc::iovec {
        iov_base: flags.as_mut_ptr().cast(),
        iov_len: flags.len(),
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: flags.len(),
    };
    // SAFETY: reads 8 bytes from another process into a local buffer of 8 bytes.
    let n = unsafe { libc::process_vm_readv(tid as i32, &local, 1, &remote, 1, 0) };
    (n == 8).then(|| u64::from_ne_bytes(flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_means_any_write_mode_or_create_or_truncate() {
        assert!(!is_write(libc::O_RDONLY as u64));
        assert!(is_write(libc::O_WRONLY as u64));
        assert!(is_write(libc::O_RDWR as u64));
        assert!(is_write((libc::O_RDONLY | libc::O_TRUNC) as u64));
        assert!(is_write((libc::O_RDONLY | libc::O_CREAT) as u64));
    }

    #[test]
    fn a_plain_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        struct AllowAll;
        impl FileResponder for AllowAll {
            fn allow(&self, _: &FileAccess) -> bool {
                true
            }
            fn is_member(&self, _: u32) -> bool {
                true
            }
        }
        let err = FileGuard::start(&rootfs, Arc::new(AllowAll))
            .err()
            .expect("refused");
        assert!(matches!(err, FileGuardError::SharedFilesystem(_)), "{err}");
    }

    /// Denies reading /secret and writing below /bin for `sh` and `cat` processes only.
    struct TestPolicy;

    impl FileResponder for TestPolicy {
        fn allow(&self, access: &FileAccess) -> bool {
            !(access.path == "/secret"
                || access.path.starts_with("/bin/") && access.access == Access::Write)
        }
        fn is_member(&self, tid: u32) -> bool {
            let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).unwrap_or_default();
            matches!(comm.trim(), "sh" | "cat")
        }
    }

    fn sh(script: &str) -> (i32, String) {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn denies_reads_and_writes_on_a_real_filesystem_as_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping fanotify test: needs root (CAP_SYS_ADMIN) for permission events");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::create_dir(root.join("bin")).unwrap();
        std::fs::write(root.join("secret"), "s3cret").unwrap();
        std::fs::write(root.join("open"), "hello").unwrap();
        std::fs::write(root.join("bin/tool"), "original").unwrap();
        let guard = FileGuard::start(&root, Arc::new(TestPolicy)).unwrap();
        let r = root.display();

        let (rc, out) = sh(&format!("cat {r}/open"));
        let (rc_secret, out_secret) = sh(&format!("cat {r}/secret"));
        let (rc_write, _) = sh(&format!("echo evil > {r}/bin/tool"));
        let content = std::fs::read_to_string(root.join("bin/tool")).unwrap();
        drop(guard);
        let (rc_after, _) = sh(&format!("cat {r}/secret"));
        nix::mount::umount(&root).unwrap();

        assert_eq!((rc, out.as_str()), (0, "hello"));
        assert_ne!(rc_secret, 0, "reading /secret must fail");
        assert_eq!(out_secret, "");
        assert_ne!(rc_write, 0, "writing below /bin must fail");
        assert_eq!(
            content, "original",
            "a denied write leaves the content untouched"
        );
        assert_eq!(rc_after, 0, "no guard, no denial");
    }
}
