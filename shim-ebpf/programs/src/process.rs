//! Process tracking and exec: sched_process_exec / fork / exit and task_rename.
//!
//! Raw tracepoint arguments are the tracepoint's TP_PROTO (include/trace/events/sched.h and
//! include/trace/events/task.h at v6.18):
//! - sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
//! - sched_process_fork(struct task_struct *parent, struct task_struct *child)
//! - sched_process_free(struct task_struct *p)
//! - task_rename(struct task_struct *task, const char *comm)

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf, bpf_send_signal},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use vigil_ebpf_common::{
    exec_name_hash_step, mode, path_flags, verdict, Container, EventKind, ExecEvent, ExecKey,
    KernelOffsets, RenameEvent, Task, ARGV_LEN, COMM_LEN, EXEC_ANY_NAME, NAME_LEN,
};

use crate::{
    emit, kernel,
    maps::{VIGIL_EXEC_ALLOW, VIGIL_SCRATCH, VIGIL_TASKS},
    path, scope,
};

const SIGKILL: u32 = 9;

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn vigil_sched_exec(ctx: RawTracePointContext) -> i32 {
    let Some(c) = scope::current_container() else {
        return 0;
    };
    let task = ctx.arg::<u64>(0);
    let bprm = ctx.arg::<u64>(2);
    let session = adopt(&c);
    let Some(scratch) = VIGIL_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU scratch element is valid for the program's run and used by one
    // program at a time on this CPU (tracing programs do not nest on a CPU).
    let (ev, tmp) = unsafe { (&mut (*scratch).exec, &mut (*scratch).tmp) };
    fill_exec(ev, tmp, &c, session, task, bprm);
    if c.mode == mode::ENFORCE {
        ev.verdict = judge(ev, &c);
        if ev.verdict == verdict::KILLED {
            // SAFETY: signals the current task, which is past the point of no return and
            // has not run an instruction of the new image; SIGKILL cannot be caught.
            unsafe { bpf_send_signal(SIGKILL) };
        }
    } else {
        ev.verdict = verdict::OBSERVED;
    }
    emit::send(c.slot, ev);
    0
}

/// Makes sure the current process is tracked; returns its session. A process that exec's
/// without an entry came into the cgroup from outside: the container's init (main tree) or
/// the process of an exec session (`runc exec`).
#[inline(always)]
fn adopt(c: &Container) -> u32 {
    if let Some(task) = scope::current_task(c) {
        return task.session;
    }
    let tgid = scope::current_tgid();
    let session = if tgid == c.init_tgid { 0 } else { tgid };
    let task = Task {
        slot: c.slot,
        generation: c.generation,
        session,
        _pad: 0,
    };
    let _ = VIGIL_TASKS.insert(tgid, task, 0);
    session
}

#[inline(always)]
fn fill_exec(
    ev: &mut ExecEvent,
    tmp: &mut [u64; 2],
    c: &Container,
    session: u32,
    task: u64,
    bprm: u64,
) {
    ev.header = emit::header(EventKind::Exec, c.slot, session);
    ev.flags = 0;
    ev.argv_len = 0;
    ev.filename[0] = 0;
    ev.path.depth = 0;
    ev.path.hash = 0;
    let off = kernel::offsets();
    if off.ready == 0 {
        ev.flags = path_flags::UNRESOLVED;
        return;
    }
    let filename = kernel::read_ptr(bprm, off.binprm_filename);
    // SAFETY: copies a kernel string of bounded length; a fault returns an error.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(filename as *const u8, &mut ev.filename) };
    ev.parent_comm = parent_comm(&off, task);
    read_argv(&off, task, ev);
    ev.flags |= resolve_exe(&off, task, bprm, ev);
    ev.name_hash = applet_hash(ev, tmp);
}

#[inline(always)]
fn parent_comm(off: &KernelOffsets, task: u64) -> [u8; COMM_LEN] {
    let parent = kernel::read_ptr(task, off.task_real_parent);
    kernel::read::<[u8; COMM_LEN]>(parent, off.task_comm).unwrap_or_default()
}

/// Copies the new image's argv block (`mm->arg_start..arg_end`, in user memory).
#[inline(always)]
fn read_argv(off: &KernelOffsets, task: u64, ev: &mut ExecEvent) {
    let mm = kernel::read_ptr(task, off.task_mm);
    let start = kernel::read_ptr(mm, off.mm_arg_start);
    let end = kernel::read_ptr(mm, off.mm_arg_end);
    if start == 0 || end <= start {
        return;
    }
    let mut len = (end - start) as usize;
    if len > ARGV_LEN {
        len = ARGV_LEN;
        ev.flags |= path_flags::ARGV_CUT;
    }
    let Some(dst) = ev.argv.get_mut(..len) else {
        return;
    };
    // SAFETY: copies at most ARGV_LEN bytes of the current task's user memory, which
    // the kernel wrote during this exec; a fault returns an error.
    if unsafe { bpf_probe_read_user_buf(start as *const u8, dst) }.is_ok() {
        ev.argv_len = len as u32;
    }
}

/// Resolves `bprm->file` below the task's root.
#[inline(always)]
fn resolve_exe(off: &KernelOffsets, task: u64, bprm: u64, ev: &mut ExecEvent) -> u8 {
    let file = kernel::read_ptr(bprm, off.binprm_file);
    match (path::file_path(off, file), path::task_root(off, task)) {
        (Some(file), Some(root)) => path::resolve(off, file, root, &mut ev.path),
        _ => path_flags::UNRESOLVED,
    }
}

/// [`exec_name_hash_step`] of argv[0]'s basename. Two loops whose only branches leave them;
/// their exit indexes are laundered so the verifier's work stays linear.
#[inline(always)]
fn applet_hash(ev: &ExecEvent, tmp: &mut [u64; 2]) -> u64 {
    let argv = &ev.argv;
    let mut end = ARGV_LEN;
    for i in 0..ARGV_LEN {
        if argv[i] == 0 {
            end = i;
            break;
        }
    }
    let end = (kernel::launder(&mut tmp[0], end as u64) as usize).min(ARGV_LEN);
    // 1 when argv[0] does not end within the bytes kept: its basename, which a multi-call
    // binary dispatches on, is then unknown, and the hash below becomes 0, which no allow
    // entry has (enforce kills unless the file may run under any name). Computed without a
    // branch: a branch here made 6.1's verifier walk the loops below twice, past its
    // jump-sequence limit.
    const _: () = assert!(ARGV_LEN == 256);
    let cut = (end >> 8) as u64;
    let mut start = 0;
    for k in 0..ARGV_LEN {
        if k >= end {
            break;
        }
        let i = end - 1 - k;
        if argv.get(i).copied() == Some(b'/') {
            start = i + 1;
            break;
        }
    }
    // Bounded by a mask, not a comparison: the 6.1 verifier (Debian 12) bounds a register
    // only against constants and refuses `argv + start` with an unbounded start, while a
    // `min(ARGV_LEN)` branch made 6.18's verifier walk the name loop once per start value
    // (over its 1M-instruction budget). `start` is at most `end` <= ARGV_LEN, a power of
    // two; only start == ARGV_LEN (argv[0] ending in '/', no name) wraps to 0.
    const _: () = assert!(ARGV_LEN.is_power_of_two());
    let start = (kernel::launder(&mut tmp[1], start as u64) as usize & (ARGV_LEN - 1)).min(end);
    let end = end.min(start + NAME_LEN - 1);
    exec_name_hash_step(ev.path.hash, argv, start, end).wrapping_mul(1 - cut)
}

/// Enforce: allowed if the resolved file may run under any name, or under this applet name.
#[inline(always)]
fn judge(ev: &ExecEvent, c: &Container) -> u8 {
    if ev.flags & (path_flags::UNRESOLVED | path_flags::TRUNCATED) != 0 {
        return verdict::KILLED;
    }
    let by_path = ExecKey {
        generation: c.generation,
        _pad: 0,
        hash: ev.path.hash,
    };
    // SAFETY: the value is copied out at once.
    if let Some(bits) = unsafe { VIGIL_EXEC_ALLOW.get(by_path).copied() } {
        if bits & EXEC_ANY_NAME != 0 {
            return verdict::ALLOWED;
        }
    }
    let by_name = ExecKey {
        generation: c.generation,
        _pad: 0,
        hash: ev.name_hash,
    };
    // SAFETY: only presence is tested.
    if unsafe { VIGIL_EXEC_ALLOW.get(by_name) }.is_some() {
        return verdict::ALLOWED;
    }
    verdict::KILLED
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn vigil_sched_fork(ctx: RawTracePointContext) -> i32 {
    let off = kernel::offsets();
    let child = ctx.arg::<u64>(1);
    let (Some(pid), Some(tgid)) = (
        kernel::read::<u32>(child, off.task_pid),
        kernel::read::<u32>(child, off.task_tgid),
    ) else {
        return 0;
    };
    if pid != tgid || off.ready == 0 {
        return 0; // a new thread: its process is tracked already
    }
    // SAFETY: copied out at once.
    if let Some(parent) = unsafe { VIGIL_TASKS.get(scope::current_tgid()).copied() } {
        let _ = VIGIL_TASKS.insert(tgid, parent, 0);
    }
    0
}

/// A process's entry goes when its thread-group leader's task is freed, which happens only
/// after every thread of the group is gone (a leader that exits first stays a zombie until
/// then). Removing it at the leader's own exit would let the remaining threads run
/// untracked, and so unjudged, by ending the main thread first.
#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn vigil_sched_free(ctx: RawTracePointContext) -> i32 {
    let off = kernel::offsets();
    let task = ctx.arg::<u64>(0);
    let (Some(pid), Some(tgid)) = (
        kernel::read::<u32>(task, off.task_pid),
        kernel::read::<u32>(task, off.task_tgid),
    ) else {
        return 0;
    };
    if pid == tgid && off.ready != 0 {
        let _ = VIGIL_TASKS.remove(tgid);
    }
    0
}

#[raw_tracepoint(tracepoint = "task_rename")]
pub fn vigil_task_rename(ctx: RawTracePointContext) -> i32 {
    let off = kernel::offsets();
    let target = ctx.arg::<u64>(0);
    if target != kernel::current_task() || off.ready == 0 {
        return 0; // a write to another task's /proc/PID/comm: reported by that task's exec
    }
    let Some(c) = scope::current_container() else {
        return 0;
    };
    let Some(task) = scope::current_task(&c) else {
        return 0;
    };
    let mut ev = RenameEvent {
        header: emit::header(EventKind::Rename, c.slot, task.session),
        new_comm: [0; COMM_LEN],
    };
    let comm = ctx.arg::<u64>(1);
    // SAFETY: copies at most COMM_LEN bytes of a kernel string; a fault returns an error.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(comm as *const u8, &mut ev.new_comm) };
    let hash = path::raw_hash(&ev.new_comm);
    if emit::first_time(c.generation, EventKind::Rename as u32, hash) {
        emit::send(c.slot, &ev);
    }
    0
}
