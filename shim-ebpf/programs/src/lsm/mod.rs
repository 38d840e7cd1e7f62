//! The LSM-BPF tier: hooks that refuse with EPERM before an operation takes effect.
//!
//! Every program finds the current task's container with the shared maps (`crate::scope`:
//! the cgroup or one of its ancestors in `VIGIL_CONTAINERS`), judges with the shared allow
//! sets where the other tier has one (`VIGIL_EXEC_ALLOW`, `VIGIL_NET_ALLOW`), and reports
//! into the container's ring buffer with `mechanism::LSM`. Unregistered cgroups cost one
//! map lookup per hook (plus one per ancestor level).
//!
//! Hook arguments are those of include/linux/lsm_hook_defs.h at v6.1; a BPF LSM program
//! gets them in order, followed by the return value of the LSM programs that ran before it
//! on the same hook, which a program passes on when it is not 0.
//!
//! Who is judged: exec and network for every process in the container's cgroup (runc's init
//! execs the entrypoint from there); files, ptrace, mount and kill only for processes that
//! exec'd in the container (`VIGIL_TASKS`), so runc's own setup before the entrypoint is
//! never refused (seccomp, likewise, applies from runc's last exec).
//!
//! In monitor, exec and network deviations are reported by the other tier's programs
//! (`sched_process_exec`, the cgroup sock_addr hooks), which stay attached; the LSM
//! programs report what nothing else sees: files, ptrace, mount and kill.

mod dpath;
mod exec;
mod file;
mod maps;
mod net;
mod offsets;
mod task;

use vigil_ebpf_common::{mode, verdict, Container, EventKind};

/// errno of a refusal (include/uapi/asm-generic/errno-base.h).
const EPERM: i32 = 1;

/// The hook's answer for a deviation: refuse in enforce, let it happen otherwise.
#[inline(always)]
fn refuse_if_enforced(c: &Container) -> i32 {
    if c.mode == mode::ENFORCE {
        -EPERM
    } else {
        0
    }
}

/// Whether to send a report: every refusal, and in monitor the first time a deviation
/// (`fold`: what identifies it) occurs in the registration.
#[inline(always)]
fn should_report(c: &Container, kind: EventKind, verdict: u8, fold: u64) -> bool {
    verdict == verdict::BLOCKED
        || crate::emit::first_time(c.generation, seen_kind(kind, verdict), fold)
}

/// `SeenKey::kind` of an LSM report: the record kind with LSM and the verdict above bit 8,
/// so the other tier's folded reports never hide an LSM one.
#[inline(always)]
fn seen_kind(kind: EventKind, verdict: u8) -> u32 {
    kind as u32 | 1 << 8 | (verdict as u32) << 9
}
