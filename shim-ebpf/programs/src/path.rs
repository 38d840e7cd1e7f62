//! Resolving a `struct path` to its name below the task's root, like the kernel's d_path()
//! (fs/d_path.c, prepend_path at v6.18), which tracepoints may not call.
//!
//! The walk goes from the file's dentry up through `d_parent`; at the root of a mount it
//! continues from the mount point in the parent mount (`struct mount`, fs/mount.h). It stops
//! at the task's `fs->root` (the container's root after pivot_root) or at the namespace's
//! root mount.

use aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes;
use vigil_ebpf_common::{fnv_byte, path_flags, KernelOffsets, ResolvedPath, FNV_OFFSET};
use vigil_ebpf_common::{NAME_LEN, PATH_DEPTH};

use crate::kernel::{read_ptr, read};

/// Mount crossings allowed on top of `PATH_DEPTH` components.
const MOUNT_HOPS: usize = 8;

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
        let path = KPath { mnt: read_ptr(p, off.path_mnt), dentry: read_ptr(p, off.path_dentry) };
        (path.mnt != 0 && path.dentry != 0).then_some(path)
    }
}

/// The root of `task` (`task->fs->root`).
#[inline(always)]
pub fn task_root(off: &KernelOffsets, task: u64) -> Option<KPath> {
    KPath::at(off, read_ptr(task, off.task_fs), off.fs_root)
}

/// Fills `out` with the components of `file` below `root`; returns `path_flags` bits.
#[inline(always)]
pub fn resolve(off: &KernelOffsets, file: KPath, root: KPath, out: &mut ResolvedPath) -> u8 {
    let mut flags = 0;
    let mut cur = file;
    let mut depth = 0usize;
    out.depth = 0;
    for _ in 0..PATH_DEPTH + MOUNT_HOPS {
        if cur == root {
            break;
        }
        match step(off, &mut cur) {
            Step::Done => break,
            Step::Crossed => continue,
            Step::Component(name) => {
                let Some(slot) = out.names.get_mut(depth) else {
                    flags |= path_flags::TRUNCATED;
                    break;
                };
                // SAFETY: the helper copies at most NAME_LEN bytes, NUL included, from
                // kernel memory into the slot; a fault returns an error.
                match unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, slot) } {
                    Ok(bytes) if bytes.len() >= NAME_LEN - 1 => flags |= path_flags::NAME_CUT,
                    Ok(_) => {}
                    Err(_) => return flags | path_flags::UNRESOLVED,
                }
                depth += 1;
            }
        }
    }
    out.depth = depth as u32;
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

/// `vigil_ebpf_common::path_hash` of the joined components, root first.
#[inline(always)]
fn hash(path: &ResolvedPath) -> u64 {
    let mut h = FNV_OFFSET;
    let depth = path.depth as usize;
    for i in 0..PATH_DEPTH {
        if i >= depth {
            break;
        }
        let Some(name) = path.names.get(depth - 1 - i) else { break };
        h = fnv_byte(h, b'/');
        for j in 0..NAME_LEN - 1 {
            let b = name[j];
            if b == 0 {
                break;
            }
            h = fnv_byte(h, b);
        }
    }
    h
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
