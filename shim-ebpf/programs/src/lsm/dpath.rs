//! Paths resolved in the kernel with `bpf_d_path` and hashed for the allow sets.
//!
//! `bpf_d_path` (kernel/trace/bpf_trace.c at v6.1) is d_path(): the name of a `struct path`
//! below the calling task's root (`current->fs->root`, the container's root after
//! pivot_root), taken under the rename seqlock, so it cannot be swapped the way a user
//! pointer can. Symlinks are already resolved: the path is that of the file the kernel
//! opened. A deleted file gets a " (deleted)" suffix; a pseudo file (pipe, socket, anon
//! inode) a name without a leading `/`. LSM programs may call it only from the hooks in
//! `sleepable_lsm_hooks` (kernel/bpf/bpf_lsm.c at v6.1), which include bprm_check_security,
//! file_open and sb_mount.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::path,
    helpers::generated::{bpf_d_path, bpf_loop},
};
use vigil_ebpf_common::{PathHasher, PathHashes, LSM_PATH_LEN};

use super::maps::LsmScratch;

/// Why a path has no hashes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// bpf_d_path failed (ENAMETOOLONG beyond `LSM_PATH_LEN`, or a fault).
    Failed,
    /// Not below a root: a pseudo file such as `pipe:[123]`.
    Pseudo,
}

/// Resolves `p` into `scratch.path` and hashes it, filling `scratch.folders*`.
///
/// # Safety
/// `p` must be a `struct path *` the verifier knows by its BTF type (a hook argument, or a
/// field of one reached with direct loads at constant offsets).
#[inline(always)]
pub unsafe fn resolve(p: *const u8, scratch: &mut LsmScratch) -> Result<PathHashes, Unresolved> {
    let buf = scratch.path.as_mut_ptr();
    // SAFETY: the buffer is LSM_PATH_LEN bytes of a per-CPU map value; `p` is a BTF
    // `struct path *` as the caller promises.
    let len = unsafe { bpf_d_path(p as *mut path, buf as *mut _, LSM_PATH_LEN as u32) };
    if len <= 0 {
        scratch.path[0] = 0;
        return Err(Unresolved::Failed);
    }
    if scratch.path[0] != b'/' {
        return Err(Unresolved::Pseudo);
    }
    // `len` counts the terminating NUL.
    scratch.len = len as u64 - 1;
    scratch.hasher = PathHasher::new();
    let mut walk = Walk {
        scratch: &raw mut *scratch,
    };
    // A bpf_loop callback (kernel 5.17+) per 8 bytes: the verifier checks the callback
    // once, where a bounded loop over 256 bytes with this much state exceeded its 1M
    // instruction budget on 6.1. Before 6.7 that one check starts from the caller's state,
    // and branches it finds decided are hard-wired; state kept in map memory is unknown to
    // the verifier, so every branch on it stays.
    // SAFETY: `hash_bytes` has bpf_loop's callback signature; `walk` outlives the call.
    unsafe {
        bpf_loop(
            (LSM_PATH_LEN / CHUNK) as u32,
            hash_bytes as *mut c_void,
            (&mut walk as *mut Walk).cast(),
            0,
        )
    };
    Ok(scratch.hasher.finish())
}

/// What `hash_byte` gets: the scratch value holding the path and the hashing state.
#[repr(C)]
struct Walk {
    scratch: *mut LsmScratch,
}

/// Bytes hashed per callback: fewer indirect calls, a still small callback to verify.
const CHUNK: usize = 8;

/// bpf_loop callback: hashes bytes `index * CHUNK ..`; returns 1 (stop) at the path's end.
#[inline(never)]
extern "C" fn hash_bytes(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes the `Walk` given by `resolve`, alive on its stack.
    let walk = unsafe { &*(ctx as *const Walk) };
    // SAFETY: the per-CPU scratch value `resolve` was handed, valid for the program's run.
    let scratch = unsafe { &mut *walk.scratch };
    let LsmScratch {
        path,
        hasher,
        folders,
        folders_ids,
        len,
        ..
    } = scratch;
    // Masked, not compared: bpf_loop never passes an index of LSM_PATH_LEN / CHUNK or more,
    // and a mask is a bound the 6.1 verifier tracks through the multiplication (it kept the
    // offset unbounded after a comparison LLVM folded into another register).
    let base = (index as usize & (LSM_PATH_LEN / CHUNK - 1)) * CHUNK;
    for j in 0..CHUNK {
        let i = base + j;
        if i as u64 >= *len || i >= LSM_PATH_LEN {
            return 1;
        }
        hasher.push(path[i], folders, folders_ids);
    }
    0
}
