//! Struct offsets for the LSM programs, set by user space from the kernel's BTF.
//!
//! Each accessor reads one field of the frozen read-only global, so the verifier sees a
//! known constant. That matters: `btf_ptr + offset` keeps its BTF type (what `bpf_d_path`
//! requires of its `struct path *`) only when the offset is a constant; a copy of the whole
//! struct on the stack would turn the u32 fields at offset % 8 == 4 into unknown scalars.

use vigil_ebpf_common::LsmOffsets;

#[unsafe(no_mangle)]
static VIGIL_LSM_OFFSETS: LsmOffsets = LsmOffsets {
    ready: 0,
    binprm_file: 0,
    binprm_filename: 0,
    binprm_buf: 0,
    file_path: 0,
    file_mode: 0,
    file_flags: 0,
    socket_type: 0,
    task_tgid: 0,
    task_comm: 0,
};

macro_rules! offset {
    ($($field:ident),* $(,)?) => {$(
        #[inline(always)]
        pub fn $field() -> u32 {
            // SAFETY: a volatile read of one field of a static; volatile keeps the compiler
            // from folding the all-zero initialiser (the loader rewrites the value).
            unsafe { core::ptr::read_volatile(&raw const VIGIL_LSM_OFFSETS.$field) }
        }
    )*};
}

offset!(
    ready,
    binprm_file,
    binprm_filename,
    binprm_buf,
    file_path,
    file_mode,
    file_flags,
    socket_type,
    task_tgid,
    task_comm,
);
