//! Reads of kernel structs at offsets user space found in the running kernel's BTF.
//!
//! The programs are not CO-RE relocated (Rust's BPF target emits no field relocations), so
//! struct layouts are never compiled in: the loader parses /sys/kernel/btf/vmlinux and sets
//! the `VIGIL_OFFSETS` global before loading (read-only data, frozen, so the verifier sees
//! the values as constants).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use vigil_ebpf_common::KernelOffsets;

#[unsafe(no_mangle)]
pub(crate) static VIGIL_OFFSETS: KernelOffsets = KernelOffsets {
    ready: 0,
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_comm: 0,
    task_mm: 0,
    task_fs: 0,
    task_files: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    fs_root: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    qstr_name: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    file_path: 0,
    binprm_file: 0,
    binprm_filename: 0,
    files_fdt: 0,
    fdt_fd: 0,
    fdt_max_fds: 0,
    file_private_data: 0,
    socket_file: 0,
    socket_sk: 0,
    sk_family: 0,
    sk_num: 0,
    sk_rcv_saddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_protocol: 0,
};

/// The offsets as set by the loader.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a static; volatile so the compiler does not fold the
    // all-zero initialiser into the code (the loader rewrites the value at load time).
    unsafe { core::ptr::read_volatile(&raw const VIGIL_OFFSETS) }
}

/// Reads a `T` at `base + offset` in kernel memory; `None` on a NULL base or a fault.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-tolerant accessor;
    // a bad address yields an error, never a crash.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// Reads a kernel pointer at `base + offset`.
#[inline(always)]
pub fn read_ptr(base: u64, offset: u32) -> u64 {
    read::<u64>(base, offset).unwrap_or(0)
}

/// The current task's `struct task_struct *`.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: the helper takes no argument and returns the current task pointer.
    unsafe { bpf_get_current_task() }
}

/// `task->real_parent->tgid`, 0 when unknown.
#[inline(always)]
pub fn parent_tgid(off: &KernelOffsets, task: u64) -> u32 {
    if off.ready == 0 {
        return 0;
    }
    let parent = read_ptr(task, off.task_real_parent);
    read::<u32>(parent, off.task_tgid).unwrap_or(0)
}

/// Returns `value` after a round trip through map memory. The verifier tracks a loop's exit
/// index as an exact constant, so every exit point would otherwise start its own copy of
/// the rest of the program (exponential verification); a value loaded from a map is an
/// unknown scalar, and the copies merge again.
#[inline(always)]
pub fn launder(slot: &mut u64, value: u64) -> u64 {
    // SAFETY: `slot` is a valid, aligned u64 in the per-CPU scratch map; the volatile
    // accesses keep the compiler from forwarding the stored value.
    unsafe {
        core::ptr::write_volatile(slot, value);
        core::ptr::read_volatile(slot)
    }
}
