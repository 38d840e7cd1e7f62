//! Maps only the LSM tier uses; the rest are shared (`crate::maps`).

use aya_ebpf::{
    btf_maps::{HashMap, PerCpuArray},
    macros::btf_map,
};
use vigil_ebpf_common::{FileAllowKey, LsmEvent, PathHasher, LSM_PATH_LEN, LSM_PREFIX_DEPTH};

/// Enforce and monitor: files a registration may open, with the allowed access bits.
#[btf_map]
pub static VIGIL_FILE_ALLOW: HashMap<FileAllowKey, u32, 65536> = HashMap::new();

/// generation -> `vigil_ebpf_common::lsm_rule` bits of that registration.
#[btf_map]
pub static VIGIL_LSM_RULES: HashMap<u32, u32, 4096> = HashMap::new();

/// Per-CPU room for a resolved path, its folder hashes and an [`LsmEvent`] (the BPF stack
/// holds 512 bytes).
#[repr(C)]
pub struct LsmScratch {
    pub path: [u8; LSM_PATH_LEN],
    /// Hash of the path's first `i` components (the folder holding component `i`).
    pub folders: [u64; LSM_PREFIX_DEPTH],
    /// The same with id-like components hashed as `*`.
    pub folders_ids: [u64; LSM_PREFIX_DEPTH],
    /// The hashing state the `bpf_loop` callback updates, in map memory on purpose (see
    /// `dpath::resolve`).
    pub hasher: PathHasher,
    /// Bytes of `path`, NUL excluded.
    pub len: u64,
    pub event: LsmEvent,
}

#[btf_map]
pub static VIGIL_LSM_SCRATCH: PerCpuArray<LsmScratch, 1> = PerCpuArray::new();
