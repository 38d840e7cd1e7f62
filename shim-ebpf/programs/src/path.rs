//! Resolving a `struct path` to its name below the task's root, like the kernel's d_path()
//! (fs/d_path.c, prepend_path at v6.18), which tracepoints may not call.
//!
//! The walk goes from the file's dentry up through `d_parent`; at the root of a mount it
//! continues from the mount point in the parent mount (`struct mount`, fs/mount.h). It stops
//! at the task's `fs->root` (the container's root after pivot_root) or at the namespace's
//! root mount.

use aya_ebpf::helpers::{bpf_loop, bpf_probe_read_kernel_str_bytes};
use vigil_ebpf_common::{fnv_byte, path_flags, KernelOffsets, ResolvedPath, FNV_OFFSET};
use vigil_ebpf_common::{NAME_LEN, PATH_DEPTH};

use crate::kernel::{read, read_ptr};

/// A `struct path`: (vfsmount, dentry).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KPath {
    pub mnt: u64,
    pub dentry: u64,
}

impl KPath {
    /// Reads the `struct path` embedded at `base + offset`.
    #[inline(always)]
    pub fn at(off: &KernelOffsets, base: u64, offset: u32) -> Option<Self> {
        if base == 0 {
            return None;
        }
        let p = base + offset as u64;
        let path = KPath {
            mnt: read_ptr(p, off.path_mnt),
            dentry: read_ptr(p, off.path_dentry),
        };
        (path.mnt != 0 && path.dentry != 0).then_some(path)
    }
}

/// The root of `task` (`task->fs->root`).
#[inline(always)]
pub fn task_root(off: &KernelOffsets, task: u64) -> Option<KPath> {
    KPath::at(off, read_ptr(task, off.task_fs), off.fs_root)
}

/// Fills `out` with the components of `file` below `root`; returns `path_flags` bits.
///
/// Written for the verifier: iteration `i` always fills `names[i]` (an empty name for a
/// mount crossing) and every branch either continues or leaves the loop, so the states of
/// one iteration differ only in unknown kernel pointers and are pruned.
#[inline(always)]
pub fn resolve(off: &KernelOffsets, file: KPath, root: KPath, out: &mut ResolvedPath) -> u8 {
    let mut cur = file;
    let mut used = 0;
    let mut flags = path_flags::TRUNCATED;
    for i in 0..PATH_DEPTH {
        if cur == root {
            flags = 0;
            break;
        }
        let name = match step(off, &mut cur) {
            Step::Done => {
                flags = 0;
                break;
            }
            Step::Crossed => 0,
            Step::Component(name) => name,
        };
        let slot = &mut out.names[i];
        slot[0] = 0;
        // SAFETY: the helper copies at most NAME_LEN bytes, NUL included, from kernel
        // memory into the slot; a fault returns an error.
        if name != 0 && unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, slot) }.is_err()
        {
            return path_flags::UNRESOLVED;
        }
        used = i + 1;
    }
    if cur == root {
        flags = 0;
    }
    out.depth = used as u32;
    out.hash = hash(out);
    flags
}

enum Step {
    Done,
    Crossed,
    Component(u64),
}

/// One step up: the name of the current dentry (then moves to its parent), or a crossing
/// from a mount's root to its mount point.
#[inline(always)]
fn step(off: &KernelOffsets, cur: &mut KPath) -> Step {
    let mnt_root = read_ptr(cur.mnt, off.vfsmount_root);
    if cur.dentry == mnt_root {
        // container_of(vfsmount, struct mount, mnt)
        let mount = cur.mnt.wrapping_sub(off.mount_mnt as u64);
        let parent = read_ptr(mount, off.mount_parent);
        if parent == 0 || parent == mount {
            return Step::Done;
        }
        cur.dentry = read_ptr(mount, off.mount_mountpoint);
        cur.mnt = parent + off.mount_mnt as u64;
        return Step::Crossed;
    }
    let parent = read_ptr(cur.dentry, off.dentry_parent);
    if parent == 0 || parent == cur.dentry {
        return Step::Done;
    }
    let name = read_ptr(cur.dentry + off.dentry_name as u64, off.qstr_name);
    cur.dentry = parent;
    if name == 0 {
        return Step::Done;
    }
    Step::Component(name)
}

/// State of [`hash`] between `bpf_loop` iterations (lives on the caller's stack).
#[repr(C)]
struct HashState {
    path: *const ResolvedPath,
    depth: u64,
    hash: u64,
    /// The rest of the current component is past its NUL (or it is a mount crossing).
    skip: u64,
}

/// `vigil_ebpf_common::path_hash` of the joined components, root first.
///
/// Runs under `bpf_loop` (kernel 5.17+): the verifier checks the callback once instead of
/// every (component, byte) iteration, which nested data-dependent loops would multiply.
#[inline(always)]
fn hash(path: &ResolvedPath) -> u64 {
    let mut state = HashState {
        path,
        // SAFETY: a plain field of a valid struct; volatile so the load is not replaced by
        // the exact loop index that produced it (see kernel::launder).
        depth: unsafe { core::ptr::read_volatile(&path.depth) } as u64,
        hash: FNV_OFFSET,
        skip: 1,
    };
    let total = (PATH_DEPTH * NAME_LEN) as u32;
    // SAFETY: the callback is a static BPF function of the expected signature and the
    // context points at `state` on this stack frame, alive for the whole call.
    unsafe {
        bpf_loop(
            total,
            hash_step as *mut core::ffi::c_void,
            (&raw mut state).cast(),
            0,
        )
    };
    state.hash
}

/// One byte of [`hash`]: iteration `index` is byte `index % NAME_LEN` of the
/// `index / NAME_LEN`-th component from the root. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn hash_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer given by `hash`: a live HashState.
    let st = unsafe { &mut *(ctx as *mut HashState) };
    let (component, byte) = (index / NAME_LEN as u64, (index % NAME_LEN as u64) as usize);
    if component >= st.depth {
        return 1;
    }
    let slot = (st.depth - 1 - component) as usize & (PATH_DEPTH - 1);
    // SAFETY: `path` points into the per-CPU scratch map value, valid during the program.
    let name = unsafe { &(*st.path).names[slot] };
    if byte == 0 {
        st.skip = u64::from(name[0] == 0); // an empty name is a mount crossing
        if st.skip == 0 {
            st.hash = fnv_byte(st.hash, b'/');
        }
    }
    if st.skip != 0 || byte >= NAME_LEN - 1 {
        return 0;
    }
    let b = name[byte & (NAME_LEN - 1)];
    if b == 0 {
        st.skip = 1;
        return 0;
    }
    st.hash = fnv_byte(st.hash, b);
    0
}

/// Hash of a NUL-terminated byte buffer (a path as the program passed it).
#[inline(always)]
pub fn raw_hash(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes.iter() {
        if *b == 0 {
            break;
        }
        h = fnv_byte(h, *b);
    }
    h
}

/// Reads a `struct file *`'s path.
#[inline(always)]
pub fn file_path(off: &KernelOffsets, file: u64) -> Option<KPath> {
    KPath::at(off, file, off.file_path)
}

/// The `struct file *` of descriptor `fd` of `task` (`task->files->fdt->fd[fd]`).
#[inline(always)]
pub fn fd_file(off: &KernelOffsets, task: u64, fd: u32) -> u64 {
    let fdt = read_ptr(read_ptr(task, off.task_files), off.files_fdt);
    let max = read::<u32>(fdt, off.fdt_max_fds).unwrap_or(0);
    if fd >= max {
        return 0;
    }
    let array = read_ptr(fdt, off.fdt_fd);
    read_ptr(array, fd.wrapping_mul(8))
}
