//! Records the kernel programs write into a container's ring buffer.
//!
//! Each record starts with an [`EventHeader`]; `kind` says which record follows.

use crate::{ARGV_LEN, COMM_LEN, NAME_LEN, PATH_DEPTH, RAW_PATH_LEN};

/// Values of [`EventHeader::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// [`SyscallEvent`]: a syscall number the container had not made before.
    Syscall = 1,
    /// [`ExecEvent`]: every exec in the container (not folded).
    Exec = 2,
    /// [`FileEvent`]: a new (path, access, result) of an open.
    File = 3,
    /// [`NetEvent`]: a new (direction, protocol, address, port, verdict).
    Net = 4,
    /// [`RenameEvent`]: a process renamed itself (busybox runs no-exec applets this way).
    Rename = 5,
    /// [`crate::LsmEvent`]: an LSM hook with no record of its own (ptrace, mount, kill).
    Lsm = 6,
}

impl EventKind {
    /// The kind for a raw header value.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Syscall,
            2 => Self::Exec,
            3 => Self::File,
            4 => Self::Net,
            5 => Self::Rename,
            6 => Self::Lsm,
            _ => return None,
        })
    }
}

/// What the kernel did about the behaviour an event reports.
pub mod verdict {
    /// Observed only (learn, monitor, or allowed in enforce).
    pub const OBSERVED: u8 = 0;
    /// Enforce: the behaviour was in the container's allow set.
    pub const ALLOWED: u8 = 1;
    /// Enforce: the operation was refused (sock_addr hook returned 0: EPERM).
    pub const BLOCKED: u8 = 2;
    /// Enforce: the process was sent SIGKILL before its new image ran.
    pub const KILLED: u8 = 3;
}

/// Which kernel mechanism acted, in [`ExecEvent`], [`FileEvent`] and [`NetEvent`].
pub mod mechanism {
    /// The record kind's usual program: `sched_process_exec` for exec (a kill), the syscall
    /// tracepoints for files, the cgroup sock_addr hooks for network.
    pub const DEFAULT: u8 = 0;
    /// An LSM-BPF program (shim-ebpf/programs/src/lsm): denied with EPERM before the
    /// operation took effect, or reported a deviation in monitor.
    pub const LSM: u8 = 1;
}

/// Common start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    pub slot: u32,
    /// `bpf_ktime_get_boot_ns()`.
    pub boot_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Thread-group id (the process id user space sees).
    pub tgid: u32,
    /// Parent's thread-group id (`real_parent->tgid`); 0 where unknown (network hooks).
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// 0 for the main process tree, else the tgid that started the exec session.
    pub session: u32,
    /// `current->comm` when the event was made.
    pub comm: [u8; COMM_LEN],
}

/// A syscall number made for the first time by the container's main tree or exec sessions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallEvent {
    pub header: EventHeader,
    pub nr: u32,
    pub _pad: u32,
}

/// Bits of [`ExecEvent::flags`] and [`FileEvent::flags`].
pub mod path_flags {
    /// The resolved path had more than `PATH_DEPTH` components; the top ones are missing.
    pub const TRUNCATED: u8 = 1;
    /// A component was longer than `NAME_LEN - 1` bytes and was cut.
    pub const NAME_CUT: u8 = 2;
    /// No resolved path (kernel offsets missing or the walk failed).
    pub const UNRESOLVED: u8 = 4;
    /// argv was longer than `ARGV_LEN` and was cut.
    pub const ARGV_CUT: u8 = 8;
}

/// A path resolved in the kernel: components from the leaf up, relative to the task's root.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedPath {
    /// Number of valid entries in `names` (0 for "/").
    pub depth: u32,
    pub _pad: u32,
    /// [`crate::path_hash`] of the joined path, computed in the kernel.
    pub hash: u64,
    /// `names[0]` is the file's own name, `names[depth - 1]` the top-level folder.
    pub names: [[u8; NAME_LEN]; PATH_DEPTH],
}

impl Default for ResolvedPath {
    fn default() -> Self {
        Self {
            depth: 0,
            _pad: 0,
            hash: 0,
            names: [[0; NAME_LEN]; PATH_DEPTH],
        }
    }
}

/// An exec that completed in a registered container (`sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// One of [`verdict`].
    pub verdict: u8,
    /// Bits of [`path_flags`].
    pub flags: u8,
    /// One of [`mechanism`].
    pub mechanism: u8,
    pub _pad: u8,
    /// Bytes used in `argv`.
    pub argv_len: u32,
    /// [`crate::exec_name_hash`] of the resolved file and argv[0]'s basename.
    pub name_hash: u64,
    /// The parent process's comm.
    pub parent_comm: [u8; COMM_LEN],
    /// `bprm->filename`: the path as passed to execve (may be relative or /proc/self/exe).
    pub filename: [u8; RAW_PATH_LEN],
    /// NUL-separated arguments from the new image's `mm->arg_start`.
    pub argv: [u8; ARGV_LEN],
    /// The file that was executed, resolved (`bprm->file`).
    pub path: ResolvedPath,
}

/// Access bits of a [`FileEvent`].
pub mod access {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const CREATE: u8 = 4;
    pub const EXEC: u8 = 8;
    pub const TRUNCATE: u8 = 16;
    /// O_PATH: the file is located, not opened for reading or writing.
    pub const PATH_ONLY: u8 = 32;
}

/// A new (file, access, result) from open, openat, openat2 or creat.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileEvent {
    pub header: EventHeader,
    /// Bits of [`access`].
    pub access: u8,
    /// Bits of [`path_flags`].
    pub flags: u8,
    /// One of [`mechanism`].
    pub mechanism: u8,
    pub _pad: u8,
    /// The syscall's return value: a file descriptor, or -errno.
    pub result: i32,
    /// The syscall number (open, openat, openat2, creat).
    pub nr: u32,
    pub _pad2: u32,
    /// The path as passed by the program.
    pub raw_path: [u8; RAW_PATH_LEN],
    /// The opened file, resolved through the new descriptor (depth 0 and UNRESOLVED when
    /// the open failed).
    pub path: ResolvedPath,
}

/// A new network tuple, or a verdict on one, from the container's cgroup sock_addr hooks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEvent {
    pub header: EventHeader,
    /// One of [`verdict`].
    pub verdict: u8,
    /// One of [`crate::direction`].
    pub direction: u8,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u8,
    /// AF_INET (2) or AF_INET6 (10): the socket's family.
    pub family: u8,
    /// Port in host byte order: the peer's for connect/send, the local one for bind.
    pub port: u16,
    /// One of [`mechanism`].
    pub mechanism: u8,
    pub _pad: u8,
    /// IPv6 address, or v4-mapped IPv4 address: the peer for connect/send, local for bind.
    pub addr: [u8; 16],
}

/// A task renamed itself (`task_rename`, from prctl(PR_SET_NAME) or an exec).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameEvent {
    pub header: EventHeader,
    pub new_comm: [u8; COMM_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] records of integers and byte arrays with explicit padding: every
    // bit pattern is valid.
    unsafe impl aya::Pod for super::EventHeader {}
}
