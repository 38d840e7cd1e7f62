//! Hooks for what seccomp sees only as a syscall number: reaching into another container's
//! (or the host's) processes, and mounting.
//!
//! - `ptrace_access_check(struct task_struct *child, unsigned int mode)`: ptrace attach, and
//!   every ptrace_may_access() check (/proc/PID/mem, environ, fd, process_vm_readv).
//! - `task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
//!   const struct cred *cred)`: kill(2), tgkill(2), sigqueue, from user space.
//! - `sb_mount(const char *dev_name, const struct path *path, const char *type,
//!   unsigned long flags, void *data)`: mount(2).
//!
//! A target is in the same container when its thread group has an entry of the same
//! registration in `VIGIL_TASKS`; anything else (other containers, the host, runc) is
//! outside.

use aya_ebpf::{bindings::path, helpers::generated::bpf_d_path, macros::lsm, programs::LsmContext};
use vigil_ebpf_common::{
    lsm_hook, lsm_rule, mode, verdict, Container, EventKind, LsmEvent, Task, RAW_PATH_LEN,
};

use super::{
    maps::{VIGIL_LSM_RULES, VIGIL_LSM_SCRATCH},
    offsets, refuse_if_enforced, should_report,
};
use crate::{emit, kernel, scope};

/// include/linux/ptrace.h at v6.1: the check is for an internal question (what /proc/PID/stat
/// shows), not an access the process asked for; refused silently.
const PTRACE_MODE_NOAUDIT: u32 = 0x04;
/// The FNV-1a 64-bit prime (vigil_ebpf_common::hash).
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[lsm(hook = "ptrace_access_check")]
pub fn vigil_lsm_ptrace(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    let Some((c, task)) = guarded() else { return 0 };
    let child: u64 = ctx.arg(0);
    let ptrace_mode: u32 = ctx.arg(1);
    let Some(target) = outside(&c, child) else {
        return 0;
    };
    if ptrace_mode & PTRACE_MODE_NOAUDIT == 0 {
        report(
            &c,
            &task,
            lsm_hook::PTRACE,
            target,
            ptrace_mode,
            Text::Comm(child),
        );
    }
    refuse_if_enforced(&c)
}

#[lsm(hook = "task_kill")]
pub fn vigil_lsm_task_kill(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return retval;
    }
    let Some((c, task)) = guarded() else { return 0 };
    let p: u64 = ctx.arg(0);
    let sig: i32 = ctx.arg(2);
    let Some(target) = outside(&c, p) else {
        return 0;
    };
    report(&c, &task, lsm_hook::KILL, target, sig as u32, Text::Comm(p));
    refuse_if_enforced(&c)
}

#[lsm(hook = "sb_mount")]
pub fn vigil_lsm_sb_mount(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(5);
    if retval != 0 {
        return retval;
    }
    let Some((c, task)) = guarded() else { return 0 };
    // SAFETY: the value is copied out at once.
    let rules = unsafe { VIGIL_LSM_RULES.get(c.generation).copied() }.unwrap_or(0);
    if rules & lsm_rule::MOUNT != 0 {
        return 0;
    }
    let mount_point: *const u8 = ctx.arg(1);
    let flags: u64 = ctx.arg(3);
    report(
        &c,
        &task,
        lsm_hook::MOUNT,
        0,
        flags as u32,
        Text::Path(mount_point),
    );
    refuse_if_enforced(&c)
}

/// The current task's container and entry, for a task that exec'd in a container that is
/// monitored or enforced.
#[inline(always)]
fn guarded() -> Option<(Container, Task)> {
    let c = scope::current_container()?;
    if c.mode == mode::LEARN || offsets::ready() == 0 {
        return None;
    }
    let task = scope::current_task(&c)?;
    Some((c, task))
}

/// The target's tgid when it is outside the current task's container.
#[inline(always)]
fn outside(c: &Container, target: u64) -> Option<u32> {
    let tgid = kernel::read::<u32>(target, offsets::task_tgid())?;
    scope::task_by_tgid(tgid, c).is_none().then_some(tgid)
}

/// What an [`LsmEvent`] carries as text.
enum Text {
    /// The comm of this `struct task_struct *`.
    Comm(u64),
    /// The name of this BTF `struct path *`.
    Path(*const u8),
}

#[inline(always)]
fn report(c: &Container, task: &Task, hook: u8, target: u32, detail: u32, text: Text) {
    let v = if c.mode == mode::ENFORCE {
        verdict::BLOCKED
    } else {
        verdict::OBSERVED
    };
    // Folding key: hook, target and detail mixed FNV-style, word-wise (a byte iterator
    // over two stack arrays compiled to reads the 6.1 verifier refused).
    let mut fold = vigil_ebpf_common::fnv_byte(vigil_ebpf_common::FNV_OFFSET, hook);
    fold = (fold ^ u64::from(target)).wrapping_mul(FNV_PRIME);
    fold = (fold ^ u64::from(detail)).wrapping_mul(FNV_PRIME);
    if !should_report(c, EventKind::Lsm, v, fold) {
        return;
    }
    let Some(scratch) = VIGIL_LSM_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch element lives for the program's run; no nesting.
    let ev: &mut LsmEvent = unsafe { &mut (*scratch).event };
    ev.header = emit::header(EventKind::Lsm, c.slot, task.session);
    ev.hook = hook;
    ev.verdict = v;
    ev.target_tgid = target;
    ev.detail = detail;
    ev.text[0] = 0;
    match text {
        Text::Comm(t) => {
            let comm = kernel::read::<[u8; 16]>(t, offsets::task_comm()).unwrap_or_default();
            ev.text[..16].copy_from_slice(&comm);
        }
        Text::Path(p) => {
            // SAFETY: `p` is sb_mount's BTF `struct path *`; the buffer is the event's.
            let buf = ev.text.as_mut_ptr();
            unsafe { bpf_d_path(p as *mut path, buf as *mut _, RAW_PATH_LEN as u32) };
        }
    }
    emit::send(c.slot, ev);
}
