//! `file_open(struct file *file)`: refuse to open a file for an access the container's file
//! allow set does not grant.
//!
//! Called from do_dentry_open (fs/open.c at v6.1) once the file exists, so a refused
//! O_CREAT open can leave an empty new file (docs/lsm-tier.md). The access comes from
//! `file->f_mode`: FMODE_READ, FMODE_WRITE. The kernel's own opens of a binary or an
//! interpreter for execve and uselib carry `__FMODE_EXEC` in `f_flags` (fs/exec.c,
//! `open_exec_flags` at v6.1; `f_mode` does not get FMODE_EXEC there) and are left to
//! bprm_check_security. O_PATH opens never reach this hook.

use aya_ebpf::{helpers::bpf_probe_read_kernel_str_bytes, macros::lsm, programs::LsmContext};
use vigil_ebpf_common::{
    access, file_rule, mechanism, mode, path_flags, verdict, Container, EventKind, FileAllowKey,
    FileEvent, PathHashes, LSM_PREFIX_DEPTH,
};

use super::{
    dpath::{self, Unresolved},
    maps::{LsmScratch, VIGIL_FILE_ALLOW, VIGIL_LSM_SCRATCH},
    offsets, refuse_if_enforced, should_report,
};
use crate::{emit, kernel, maps, path, scope};

/// include/linux/fs.h at v6.1.
const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
/// `__FMODE_EXEC` in `f_flags`, the value of FMODE_EXEC (include/linux/fs.h at v6.1).
const FMODE_EXEC: u32 = 0x20;

#[lsm(hook = "file_open")]
pub fn vigil_lsm_file_open(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    let Some(c) = scope::current_container() else {
        return 0;
    };
    if c.mode == mode::LEARN || offsets::ready() == 0 {
        return 0;
    }
    let Some(task) = scope::current_task(&c) else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is the hook's BTF-typed argument; f_mode is a u32 field.
    let f_mode = unsafe { kernel_u32(file, offsets::file_mode()) };
    // SAFETY: as above; f_flags is a u32 field.
    let f_flags = unsafe { kernel_u32(file, offsets::file_flags()) };
    let wanted = access_bits(f_mode);
    if (f_mode | f_flags) & FMODE_EXEC != 0 || wanted == 0 {
        return 0;
    }
    let Some(scratch) = VIGIL_LSM_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU scratch element lives for the program's run; no nesting.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: `&file->f_path` at a constant offset of a BTF `struct file *`.
    let f_path = unsafe { file.add(offsets::file_path() as usize) };
    let (allowed, hash) = match unsafe { dpath::resolve(f_path, scratch) } {
        Ok(hashes) => (
            granted(&c, scratch, &hashes, wanted) & wanted == wanted,
            hashes.exact,
        ),
        Err(Unresolved::Pseudo) => return 0,
        Err(Unresolved::Failed) => (false, 0),
    };
    if allowed {
        return 0;
    }
    let v = if c.mode == mode::ENFORCE {
        verdict::BLOCKED
    } else {
        verdict::OBSERVED
    };
    let fold = vigil_ebpf_common::fnv_byte(hash, wanted);
    if should_report(&c, EventKind::File, v, fold) {
        report(&c, task.session, file as u64, wanted, scratch);
    }
    refuse_if_enforced(&c)
}

/// Reads a u32 field of a BTF-typed kernel object.
///
/// # Safety
/// `base` must be a BTF-typed kernel pointer and `offset` a constant naming a u32 field.
#[inline(always)]
unsafe fn kernel_u32(base: *const u8, offset: u32) -> u32 {
    // SAFETY: per the contract.
    unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const u32) }
}

#[inline(always)]
fn access_bits(f_mode: u32) -> u8 {
    let mut bits = 0;
    if f_mode & FMODE_READ != 0 {
        bits |= access::READ;
    }
    if f_mode & FMODE_WRITE != 0 {
        bits |= access::WRITE;
    }
    bits
}

/// The access bits the matching rules grant, looked up until `wanted` is covered: the
/// exact path first (the common case: one lookup), then each folder from the root down.
#[inline(always)]
fn granted(c: &Container, scratch: &LsmScratch, hashes: &PathHashes, wanted: u8) -> u8 {
    let mut bits = lookup(c, file_rule::EXACT, hashes.exact);
    if bits & wanted != wanted && hashes.ids != hashes.exact {
        bits |= lookup(c, file_rule::EXACT | file_rule::IDS_AS_STAR, hashes.ids);
    }
    for i in 0..LSM_PREFIX_DEPTH {
        if i >= hashes.folders || bits & wanted == wanted {
            break;
        }
        bits |= lookup(c, file_rule::PREFIX, scratch.folders[i]);
        let ids = scratch.folders_ids[i];
        if ids != scratch.folders[i] {
            bits |= lookup(c, file_rule::PREFIX | file_rule::IDS_AS_STAR, ids);
        }
    }
    bits
}

#[inline(always)]
fn lookup(c: &Container, kind: u32, hash: u64) -> u8 {
    let key = FileAllowKey {
        generation: c.generation,
        kind,
        hash,
    };
    // SAFETY: the value is copied out at once.
    unsafe { VIGIL_FILE_ALLOW.get(key).copied() }.unwrap_or(0) as u8
}

/// Sends a file record with `mechanism::LSM`: the d_path string as `raw_path` and the
/// components from the other tier's walker as `path`.
#[inline(always)]
fn report(c: &Container, session: u32, file: u64, wanted: u8, scratch: &LsmScratch) {
    let Some(shared) = maps::VIGIL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the shared per-CPU scratch; no tracing program runs inside this one.
    let ev: &mut FileEvent = unsafe { &mut (*shared).file };
    ev.header = emit::header(EventKind::File, c.slot, session);
    ev.access = wanted;
    ev.mechanism = mechanism::LSM;
    ev.flags = 0;
    ev.nr = 0;
    ev.result = refuse_if_enforced(c);
    // SAFETY: copies the NUL-terminated resolved path between two map values.
    let copied =
        unsafe { bpf_probe_read_kernel_str_bytes(scratch.path.as_ptr(), &mut ev.raw_path) };
    if copied.is_err() {
        ev.raw_path[0] = 0;
    }
    let off = kernel::offsets();
    match (
        path::file_path(&off, file),
        path::task_root(&off, kernel::current_task()),
    ) {
        (Some(f), Some(root)) => ev.flags = path::resolve(&off, f, root, &mut ev.path),
        _ => ev.flags = path_flags::UNRESOLVED,
    }
    emit::send(c.slot, ev);
}
