//! Maps shared by every program family. Names are those in `vigil_ebpf_common::map`.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use vigil_ebpf_common::{
    Container, ExecEvent, ExecKey, FileEvent, NetKey, PendingOpen, SeenKey, SyscallBits, Task,
    MAX_SLOTS, RING_BYTES,
};

const SLOTS: usize = MAX_SLOTS as usize;

/// cgroup id -> registered container.
#[btf_map]
pub static VIGIL_CONTAINERS: HashMap<u64, Container, 4096> = HashMap::new();

/// tgid -> the container and session of a process that exec'd in it (or descends from one).
#[btf_map]
pub static VIGIL_TASKS: HashMap<u32, Task, 65536> = HashMap::new();

/// slot * 2 + session kind -> syscall numbers already reported.
#[btf_map]
pub static VIGIL_SYSCALLS_SEEN: Array<SyscallBits, { SLOTS * 2 }> = Array::new();

/// Folded behaviour (files, network, renames) already reported, per registration.
#[btf_map]
pub static VIGIL_SEEN: LruHashMap<SeenKey, u8, 65536> = LruHashMap::new();

/// Enforce: exec identities a registration may run.
#[btf_map]
pub static VIGIL_EXEC_ALLOW: HashMap<ExecKey, u32, 65536> = HashMap::new();

/// Enforce: network tuples (address prefixes) a registration may use.
#[btf_map]
pub static VIGIL_NET_ALLOW: LpmTrie<NetKey, u32, 65536> = LpmTrie::new();

/// slot -> events dropped because the slot's ring buffer was full (per CPU; user space sums).
#[btf_map]
pub static VIGIL_LOST: PerCpuArray<u64, SLOTS> = PerCpuArray::new();

/// slot -> the ring buffer of the shim that registered the slot.
#[btf_map]
pub static VIGIL_RINGS: ArrayOfMaps<RingBuf<u8, { RING_BYTES as usize }>, SLOTS> =
    ArrayOfMaps::new();

/// pid_tgid -> an open* or accept* syscall between sys_enter and sys_exit.
#[btf_map]
pub static VIGIL_PENDING_OPENS: LruHashMap<u64, PendingOpen, 16384> = LruHashMap::new();

/// Node state kept by user space: index 0 = the last registration number handed out.
#[btf_map]
pub static VIGIL_NODE: Array<u64, 4> = Array::new();

/// Per-CPU room to build records larger than the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    pub exec: ExecEvent,
    pub file: FileEvent,
    /// Values passed through memory so the verifier forgets their exact value (see
    /// [`crate::kernel::launder`]).
    pub tmp: [u64; 2],
}

#[btf_map]
pub static VIGIL_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();
