//! Syscall tracepoints: new syscall numbers, file opens and accepted connections, attached
//! only while a container needs them (every attached `sys_enter`/`sys_exit` program taxes
//! every syscall on the node).
//!
//! Raw tracepoint arguments (include/trace/events/syscalls.h at v6.18):
//! sys_enter(struct pt_regs *regs, long id), sys_exit(struct pt_regs *regs, long ret).
//! Syscall arguments are read from `pt_regs` with the x86-64 syscall convention
//! (arch/x86/include/asm/ptrace.h: di at 112, si at 104, dx at 96, r10 at 56).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use vigil_ebpf_common::{
    access, container_flags, path_flags, Container, EventKind, FileEvent, PendingOpen,
    SyscallEvent, Task, MAX_SYSCALLS, NAME_LEN, PATH_DEPTH, SESSION_EXEC, SESSION_MAIN,
};

use crate::{
    emit, kernel,
    maps::{VIGIL_PENDING_OPENS, VIGIL_SCRATCH, VIGIL_SYSCALLS_SEEN},
    net, path, scope,
};

const PT_REGS_DI: u32 = 112;
const PT_REGS_SI: u32 = 104;
const PT_REGS_DX: u32 = 96;

// x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
const NR_OPEN: u32 = 2;
const NR_CREAT: u32 = 85;
const NR_OPENAT: u32 = 257;
const NR_OPENAT2: u32 = 437;
const NR_ACCEPT: u32 = 43;
const NR_ACCEPT4: u32 = 288;

// include/uapi/asm-generic/fcntl.h
const O_ACCMODE: u64 = 0o3;
const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_PATH: u64 = 0o10000000;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn vigil_sys_enter(ctx: RawTracePointContext) -> i32 {
    let Some(c) = scope::current_container() else {
        return 0;
    };
    if c.flags & container_flags::NEEDS_SYSCALLS == 0 {
        return 0;
    }
    // Untracked: the runtime's own setup before the first exec (see maps::VIGIL_TASKS).
    let Some(task) = scope::current_task(&c) else {
        return 0;
    };
    let regs = ctx.arg::<u64>(0);
    let nr = ctx.arg::<u64>(1) as u32;
    note_syscall(&c, &task, nr);
    // accept/accept4: only the number is kept; sys_exit reads the new socket (crate::net).
    let pending = if nr == NR_ACCEPT || nr == NR_ACCEPT4 {
        Some(PendingOpen {
            nr,
            ..PendingOpen::default()
        })
    } else {
        open_args(regs, nr)
    };
    if let Some(pending) = pending {
        let pending = PendingOpen {
            slot: c.slot,
            generation: c.generation,
            session: task.session,
            ..pending
        };
        let _ = VIGIL_PENDING_OPENS.insert(bpf_get_current_pid_tgid(), pending, 0);
    }
    0
}

/// Reports `nr` if this container's session kind has not made it before.
#[inline(always)]
fn note_syscall(c: &Container, task: &Task, nr: u32) {
    if nr >= MAX_SYSCALLS {
        return;
    }
    let kind = if task.session == 0 {
        SESSION_MAIN
    } else {
        SESSION_EXEC
    };
    let Some(bits) = VIGIL_SYSCALLS_SEEN.get_ptr_mut(c.slot * 2 + kind) else {
        return;
    };
    let (word, bit) = ((nr / 64) as usize, 1u64 << (nr % 64));
    // SAFETY: a live array element; racing CPUs can at worst both report the number (a
    // duplicate event) or lose a bit (reported again later), never corrupt memory.
    let words = unsafe { &mut (*bits).words };
    let Some(w) = words.get_mut(word) else { return };
    if *w & bit != 0 {
        return;
    }
    *w |= bit;
    let ev = SyscallEvent {
        header: emit::header(EventKind::Syscall, c.slot, task.session),
        nr,
        _pad: 0,
    };
    emit::send(c.slot, &ev);
}

/// The path pointer and flags of an open-family syscall.
#[inline(always)]
fn open_args(regs: u64, nr: u32) -> Option<PendingOpen> {
    let (path_ptr, flags) = match nr {
        NR_OPEN => (
            kernel::read_ptr(regs, PT_REGS_DI),
            kernel::read_ptr(regs, PT_REGS_SI),
        ),
        NR_CREAT => (
            kernel::read_ptr(regs, PT_REGS_DI),
            O_CREAT | O_WRONLY | O_TRUNC,
        ),
        NR_OPENAT => (
            kernel::read_ptr(regs, PT_REGS_SI),
            kernel::read_ptr(regs, PT_REGS_DX),
        ),
        // openat2(dfd, path, struct open_how *how, size): how->flags is the first u64.
        NR_OPENAT2 => {
            let how = kernel::read_ptr(regs, PT_REGS_DX);
            // SAFETY: reads 8 bytes of the caller's memory; a fault returns an error.
            let flags = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how as *const u64) };
            (kernel::read_ptr(regs, PT_REGS_SI), flags.unwrap_or(0))
        }
        _ => return None,
    };
    Some(PendingOpen {
        path_ptr,
        flags,
        nr,
        ..PendingOpen::default()
    })
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn vigil_sys_exit(ctx: RawTracePointContext) -> i32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let Some(pending) = (unsafe { VIGIL_PENDING_OPENS.get(id).copied() }) else {
        return 0;
    };
    let _ = VIGIL_PENDING_OPENS.remove(id);
    let ret = ctx.arg::<i64>(1);
    if pending.nr == NR_ACCEPT || pending.nr == NR_ACCEPT4 {
        if ret >= 0 {
            net::accepted(&pending, ret as u32);
        }
        return 0;
    }
    let Some(scratch) = VIGIL_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let ev = unsafe { &mut (*scratch).file };
    fill_file(ev, &pending, ret);
    let hash = if ev.flags & path_flags::UNRESOLVED == 0 {
        ev.path.hash
    } else {
        path::raw_hash(&ev.raw_path)
    };
    let kind = EventKind::File as u32 | (ev.access as u32) << 8 | ((ret < 0) as u32) << 16;
    if emit::first_time(pending.generation, kind, hash) {
        emit::send_prefix(pending.slot, ev, used_len(ev));
    }
    0
}

/// Bytes of `ev` that carry data: the resolved path's used names only (a failed open has
/// none). Keeps a storm of new files within the ring buffer's bandwidth.
#[inline(always)]
fn used_len(ev: &FileEvent) -> usize {
    let names = core::mem::offset_of!(FileEvent, path.names);
    if ev.flags & path_flags::UNRESOLVED != 0 {
        return names;
    }
    names + (ev.path.depth as usize & (PATH_DEPTH * 2 - 1)) * NAME_LEN
}

#[inline(always)]
fn fill_file(ev: &mut FileEvent, pending: &PendingOpen, ret: i64) {
    ev.header = emit::header(EventKind::File, pending.slot, pending.session);
    ev.access = access_bits(pending.flags);
    ev.result = ret as i32;
    ev.nr = pending.nr;
    ev.flags = path_flags::UNRESOLVED;
    ev.path.depth = 0;
    ev.path.hash = 0;
    ev.raw_path[0] = 0;
    // SAFETY: copies a bounded string from the caller's memory; a fault returns an error.
    let _ =
        unsafe { bpf_probe_read_user_str_bytes(pending.path_ptr as *const u8, &mut ev.raw_path) };
    let off = kernel::offsets();
    if ret < 0 || off.ready == 0 {
        return;
    }
    let task = kernel::current_task();
    let file = path::fd_file(&off, task, ret as u32);
    if let (Some(file), Some(root)) = (path::file_path(&off, file), path::task_root(&off, task)) {
        ev.flags = path::resolve(&off, file, root, &mut ev.path);
    }
}

#[inline(always)]
fn access_bits(flags: u64) -> u8 {
    if flags & O_PATH != 0 {
        return access::PATH_ONLY;
    }
    let mut bits = match flags & O_ACCMODE {
        O_WRONLY => access::WRITE,
        O_RDWR => access::READ | access::WRITE,
        _ => access::READ,
    };
    if flags & O_CREAT != 0 {
        bits |= access::CREATE;
    }
    if flags & O_TRUNC != 0 {
        bits |= access::TRUNCATE;
    }
    bits
}
