//! Keys and values of the node-wide maps.

/// What the kernel does for a registered container.
pub mod mode {
    /// Record new behaviour.
    pub const LEARN: u8 = 1;
    /// Record new behaviour; user space compares it with the profile and reports.
    pub const MONITOR: u8 = 2;
    /// Deny exec and network outside the allow maps (and report it).
    pub const ENFORCE: u8 = 3;
}

/// Flags of a [`Container`].
pub mod container_flags {
    /// The container needs the syscall tracepoints (syscall numbers and file opens).
    pub const NEEDS_SYSCALLS: u8 = 1;
}

/// `VIGIL_CONTAINERS` value, keyed by the cgroup id (inode of the cgroup2 directory).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// Index into the per-slot maps (ring buffer, syscall bitmap, lost counter).
    pub slot: u32,
    /// Registration number, unique per node for the life of the pins; keys allow sets and
    /// seen sets so a reused slot never inherits another container's entries.
    pub generation: u32,
    /// Thread-group id of the container's init while it waits to exec the entrypoint.
    pub init_tgid: u32,
    /// One of [`mode`].
    pub mode: u8,
    /// Bits of [`container_flags`].
    pub flags: u8,
    pub _pad: [u8; 2],
}

/// `VIGIL_TASKS` value, keyed by thread-group id: a process that belongs to a container and
/// has exec'd there (or was forked from one that did). Processes that entered the cgroup from
/// outside (runc init) are absent until their first exec, so the runtime's own setup is not
/// recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Task {
    pub slot: u32,
    pub generation: u32,
    /// 0 for the container's main process tree; for an exec session (`ctr task exec`), the
    /// tgid of the process that started it.
    pub session: u32,
    pub _pad: u32,
}

/// Session kinds of the syscall bitmap: index = slot * 2 + kind.
pub const SESSION_MAIN: u32 = 0;
pub const SESSION_EXEC: u32 = 1;

/// `VIGIL_SYSCALLS_SEEN` value: one bit per syscall number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallBits {
    pub words: [u64; crate::SYSCALL_WORDS],
}

/// `VIGIL_SEEN` key: folded behaviour already reported for one registration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeenKey {
    pub generation: u32,
    /// An [`crate::EventKind`] value, with event-specific bits above bit 8.
    pub kind: u32,
    pub hash: u64,
}

/// `VIGIL_EXEC_ALLOW` key. `hash` is [`crate::exec_path_hash`] of the resolved file
/// (value [`EXEC_ANY_NAME`]: any argv[0]) or [`crate::exec_name_hash`] of the resolved file
/// and the applet name (argv[0]'s basename), for multi-call binaries such as busybox.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecKey {
    pub generation: u32,
    pub _pad: u32,
    pub hash: u64,
}

/// `VIGIL_EXEC_ALLOW` value bit: the file may run under any name.
pub const EXEC_ANY_NAME: u32 = 1;
/// `VIGIL_EXEC_ALLOW` value bit: this entry names one applet of a multi-call binary.
pub const EXEC_THIS_NAME: u32 = 2;

/// Directions of network behaviour.
pub mod direction {
    /// connect(2), TCP or UDP.
    pub const CONNECT: u8 = 1;
    /// sendmsg(2)/sendto(2) with an address, UDP.
    pub const SEND: u8 = 2;
    /// bind(2) to a fixed port: a server's listening or receiving port.
    pub const BIND: u8 = 3;
    /// accept(2)/accept4(2) returned a TCP connection: the local address and port it came
    /// in on (never the peer's). Observed only, never enforced (no `VIGIL_NET_ALLOW` entry
    /// has this direction).
    pub const ACCEPT: u8 = 4;
}

/// Data part of a `VIGIL_NET_ALLOW` (LPM trie) key. The fixed fields come first so that a
/// prefix length of `NET_FIXED_BITS + n` matches them exactly and the first `n` bits of the
/// address. IPv4 addresses are stored v4-mapped (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKey {
    pub generation: u32,
    pub direction: u8,
    /// IPPROTO_TCP (6) or IPPROTO_UDP (17).
    pub protocol: u8,
    /// Port in network byte order; 0 in an allow entry means any port.
    pub port_be: u16,
    pub addr: [u8; 16],
}

/// Bits of a [`NetKey`] before the address.
pub const NET_FIXED_BITS: u32 = 64;

/// `VIGIL_PENDING_OPENS` value, keyed by pid_tgid: an open* or accept* syscall seen at
/// sys_enter, completed at sys_exit (`nr` says which; an accept uses no other field than
/// slot, generation and session).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingOpen {
    /// User-space pointer to the path.
    pub path_ptr: u64,
    /// open(2) flags.
    pub flags: u64,
    pub slot: u32,
    pub generation: u32,
    pub session: u32,
    pub nr: u32,
}

/// Offsets of kernel struct fields, read from the running kernel's BTF at load time and
/// stored in the `VIGIL_OFFSETS` global (the programs are not CO-RE relocated).
/// Every field is a byte offset; `ready` is 1 once user space filled them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub ready: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub fs_root: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub qstr_name: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    pub file_path: u32,
    pub binprm_file: u32,
    pub binprm_filename: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    /// `file->private_data` (a socket file's `struct socket *`).
    pub file_private_data: u32,
    /// `socket->file` and `socket->sk`.
    pub socket_file: u32,
    pub socket_sk: u32,
    /// `sock->__sk_common.skc_family`, `.skc_num` (local port, host order) and
    /// `.skc_rcv_saddr` (local IPv4 address).
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_rcv_saddr: u32,
    /// `sock->__sk_common.skc_v6_rcv_saddr`; 0 on a kernel without IPv6.
    pub sk_v6_rcv_saddr: u32,
    /// `sock->sk_protocol` (a u16 since Linux 5.6).
    pub sk_protocol: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], made only of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is valid and no byte is uninitialised padding.
    unsafe impl aya::Pod for super::Container {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Task {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallBits {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SeenKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
}
