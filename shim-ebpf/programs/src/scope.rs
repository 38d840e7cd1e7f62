//! Which registered container (if any) the current task belongs to.

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
};
use vigil_ebpf_common::{Container, Task, ANCESTOR_LEVELS};

use crate::maps::{VIGIL_CONTAINERS, VIGIL_TASKS};

/// The container whose cgroup is the current task's cgroup or one of its ancestors.
#[inline(always)]
pub fn current_container() -> Option<Container> {
    // SAFETY: helper without arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    if let Some(c) = lookup(own) {
        return Some(c);
    }
    // Level 0 is the root; walk down until the task's own cgroup (or past the hierarchy's
    // depth, where the helper returns 0).
    for level in 1..ANCESTOR_LEVELS {
        // SAFETY: the helper returns 0 for a level deeper than the task's cgroup.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == own {
            return None;
        }
        if let Some(c) = lookup(id) {
            return Some(c);
        }
    }
    None
}

#[inline(always)]
fn lookup(cgroup_id: u64) -> Option<Container> {
    // SAFETY: the value is copied out at once; a concurrent delete can only make the copy
    // stale, never invalid.
    unsafe { VIGIL_CONTAINERS.get(cgroup_id).copied() }
}

/// The current thread group's entry, if it belongs to this registration.
#[inline(always)]
pub fn current_task(c: &Container) -> Option<Task> {
    task_by_tgid(current_tgid(), c)
}

/// The entry of `tgid`, if it belongs to this registration.
#[inline(always)]
pub fn task_by_tgid(tgid: u32, c: &Container) -> Option<Task> {
    // SAFETY: copied out at once, as above.
    let task = unsafe { VIGIL_TASKS.get(tgid).copied() }?;
    (task.generation == c.generation).then_some(task)
}

/// The current thread-group id.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}
