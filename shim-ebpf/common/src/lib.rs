//! Records shared by vigil's kernel programs and the shim.
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the kernel side
//! (`bpfel-unknown-none`) and user space (x86-64) agree byte for byte. The `user` feature
//! implements aya's `Pod` for the types user space reads from or writes into maps.
#![no_std]

pub mod event;
pub mod hash;
pub mod lsm;
pub mod maps;

pub use event::*;
pub use hash::*;
pub use lsm::*;
pub use maps::*;

/// How many containers a node can have registered at once (slots in per-slot maps).
pub const MAX_SLOTS: u32 = 1024;
/// Syscall numbers covered by the per-slot seen bitmap (x86-64 tops out near 470).
pub const MAX_SYSCALLS: u32 = 512;
/// Words of the per-slot, per-session-kind syscall bitmap.
pub const SYSCALL_WORDS: usize = (MAX_SYSCALLS / 64) as usize;
/// Cgroup levels looked at above the current cgroup when matching a registered container.
pub const ANCESTOR_LEVELS: i32 = 12;
/// Path components kept for a resolved path (deeper paths are flagged truncated).
pub const PATH_DEPTH: usize = 16;
/// Bytes kept per path component, NUL included; longer names are truncated to 63 bytes.
pub const NAME_LEN: usize = 64;
/// Bytes kept of a path as the program passed it (execve filename, openat pathname).
pub const RAW_PATH_LEN: usize = 256;
/// Bytes kept of an argv block (NUL-separated arguments).
pub const ARGV_LEN: usize = 256;
/// Length of a task's comm, NUL included (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of every per-slot ring buffer (a power of two, a multiple of the page size).
pub const RING_BYTES: u32 = 1 << 20;

/// Names of the programs in the object, as user space looks them up.
pub mod program {
    pub const SYS_ENTER: &str = "vigil_sys_enter";
    pub const SYS_EXIT: &str = "vigil_sys_exit";
    pub const EXEC: &str = "vigil_sched_exec";
    pub const FORK: &str = "vigil_sched_fork";
    pub const FREE: &str = "vigil_sched_free";
    pub const RENAME: &str = "vigil_task_rename";
    pub const CONNECT4: &str = "vigil_connect4";
    pub const CONNECT6: &str = "vigil_connect6";
    pub const SENDMSG4: &str = "vigil_sendmsg4";
    pub const SENDMSG6: &str = "vigil_sendmsg6";
    pub const BIND4: &str = "vigil_bind4";
    pub const BIND6: &str = "vigil_bind6";
}

/// Names of the maps in the object.
pub mod map {
    pub const CONTAINERS: &str = "VIGIL_CONTAINERS";
    pub const TASKS: &str = "VIGIL_TASKS";
    pub const SYSCALLS_SEEN: &str = "VIGIL_SYSCALLS_SEEN";
    pub const SEEN: &str = "VIGIL_SEEN";
    pub const EXEC_ALLOW: &str = "VIGIL_EXEC_ALLOW";
    pub const NET_ALLOW: &str = "VIGIL_NET_ALLOW";
    pub const LOST: &str = "VIGIL_LOST";
    pub const RINGS: &str = "VIGIL_RINGS";
    pub const PENDING_OPENS: &str = "VIGIL_PENDING_OPENS";
    pub const SCRATCH: &str = "VIGIL_SCRATCH";
    pub const NODE: &str = "VIGIL_NODE";
    /// The global holding [`crate::KernelOffsets`], set at load time.
    pub const OFFSETS_GLOBAL: &str = "VIGIL_OFFSETS";
}
