//! `bprm_check_security(struct linux_binprm *bprm)`: refuse to run a file the container's
//! exec allow set does not name.
//!
//! The hook runs once per binary handler round (fs/exec.c, search_binary_handler at v6.1):
//! for a script, first with the script as `bprm->file`, then with its interpreter. A `#!`
//! script is let through here and its interpreter judged in the next round, as the other
//! tier (which sees only the final image at sched_process_exec) does. argv is not readable
//! yet (it sits in the new mm), so an allow entry for one applet of a multi-call binary
//! admits the file; the other tier's sched_process_exec kills a denied applet.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes},
    macros::lsm,
    programs::LsmContext,
};
use vigil_ebpf_common::{
    mechanism, mode, path_flags, verdict, Container, EventKind, ExecEvent, ExecKey,
};

use super::{dpath, maps::VIGIL_LSM_SCRATCH, offsets, refuse_if_enforced};
use crate::{emit, kernel, maps, path, scope};

#[lsm(hook = "bprm_check_security")]
pub fn vigil_lsm_bprm_check(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    let Some(c) = scope::current_container() else {
        return 0;
    };
    if c.mode != mode::ENFORCE || offsets::ready() == 0 {
        return 0;
    }
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: `bprm` is the hook's BTF-typed argument.
    if unsafe { is_script(bprm) } {
        return 0;
    }
    // SAFETY: as above; `file` is read with a direct load at a constant offset.
    let (allowed, flags) = unsafe { judge(bprm, &c) };
    if allowed {
        return 0;
    }
    // Enforce only: every refused exec is reported.
    report(&c, bprm as u64, flags);
    refuse_if_enforced(&c)
}

/// True when the file starts with `#!` (`bprm->buf` holds its first bytes by now).
unsafe fn is_script(bprm: *const u8) -> bool {
    let mut magic = [0u8; 2];
    let at = (bprm as u64 + offsets::binprm_buf() as u64) as *const u8;
    // SAFETY: reads two bytes of the binprm with the fault-tolerant helper.
    let read = unsafe { bpf_probe_read_kernel_buf(at, &mut magic) };
    read.is_ok() && magic == *b"#!"
}

/// (allowed, path flags) of `bprm->file`.
#[inline(always)]
unsafe fn judge(bprm: *const u8, c: &Container) -> (bool, u8) {
    let Some(scratch) = VIGIL_LSM_SCRATCH.get_ptr_mut(0) else {
        return (false, 0);
    };
    // SAFETY: the per-CPU scratch element lives for the program's run; LSM programs do not
    // nest on a CPU.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: direct loads through BTF pointers at constant offsets keep the BTF types:
    // `bprm->file` is a `struct file *`, `&file->f_path` a `struct path *`.
    let file = unsafe { load_ptr(bprm, offsets::binprm_file()) };
    let f_path = unsafe { file.add(offsets::file_path() as usize) };
    // SAFETY: f_path is a BTF `struct path *` as above.
    let hashes = match unsafe { dpath::resolve(f_path, scratch) } {
        Ok(hashes) => hashes,
        Err(_) => return (false, path_flags::UNRESOLVED),
    };
    let key = ExecKey {
        generation: c.generation,
        _pad: 0,
        hash: hashes.exact,
    };
    // SAFETY: presence test only. Any entry (the file under any name, or one applet of it)
    // admits the file here.
    let allowed = unsafe { maps::VIGIL_EXEC_ALLOW.get(key) }.is_some();
    (allowed, 0)
}

/// Loads the pointer at `base + offset` with a plain load (BPF_PROBE_MEM after the
/// verifier's rewrite), so a BTF-typed base yields a BTF-typed result.
///
/// # Safety
/// `base` must be a BTF-typed kernel pointer and `offset` a constant naming a pointer field.
#[inline(always)]
pub(super) unsafe fn load_ptr(base: *const u8, offset: u32) -> *const u8 {
    // SAFETY: per the contract; the kernel turns faults of BTF loads into zero.
    unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const *const u8) }
}

/// Sends an exec record with verdict BLOCKED and `mechanism::LSM`: the path as passed, the
/// file resolved by the other tier's walker (for the same components it records), no argv.
#[inline(always)]
fn report(c: &Container, bprm: u64, flags: u8) {
    let Some(scratch) = maps::VIGIL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the shared per-CPU scratch; tracing programs that also use it do not run
    // inside an LSM program on this CPU.
    let ev: &mut ExecEvent = unsafe { &mut (*scratch).exec };
    let session = scope::current_task(c).map(|t| t.session).unwrap_or(0);
    ev.header = emit::header(EventKind::Exec, c.slot, session);
    ev.verdict = verdict::BLOCKED;
    ev.mechanism = mechanism::LSM;
    ev.flags = flags;
    ev.argv_len = 0;
    ev.name_hash = 0;
    let off = kernel::offsets();
    let task = kernel::current_task();
    let parent = kernel::read_ptr(task, off.task_real_parent);
    ev.parent_comm = kernel::read(parent, off.task_comm).unwrap_or_default();
    let filename = kernel::read_ptr(bprm, offsets::binprm_filename());
    // SAFETY: copies a bounded kernel string; a fault returns an error.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(filename as *const u8, &mut ev.filename) };
    let file = kernel::read_ptr(bprm, offsets::binprm_file());
    match (path::file_path(&off, file), path::task_root(&off, task)) {
        (Some(file), Some(root)) => ev.flags |= path::resolve(&off, file, root, &mut ev.path),
        _ => ev.flags |= path_flags::UNRESOLVED,
    }
    emit::send(c.slot, ev);
}
