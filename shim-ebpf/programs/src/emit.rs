//! Sending records to a slot's ring buffer, counting what could not be sent.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
};
use vigil_ebpf_common::{EventHeader, EventKind, SeenKey};

use crate::{
    kernel,
    maps::{VIGIL_LOST, VIGIL_RINGS, VIGIL_SEEN},
};

/// A header for the current task.
#[inline(always)]
pub fn header(kind: EventKind, slot: u32, session: u32) -> EventHeader {
    let (pid_tgid, uid_gid) = (bpf_get_current_pid_tgid(), bpf_get_current_uid_gid());
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let off = kernel::offsets();
    EventHeader {
        kind: kind as u32,
        slot,
        boot_ns: now,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        ppid: kernel::parent_tgid(&off, kernel::current_task()),
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        session,
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// Copies `record` into the slot's ring buffer; counts a loss when the buffer is full or
/// the slot has none.
#[inline(always)]
pub fn send<T>(slot: u32, record: &T) {
    let sent = match VIGIL_RINGS.get(slot) {
        Some(ring) => ring.output_untyped::<T>(record, 0).is_ok(),
        None => false,
    };
    if !sent {
        count_lost(slot);
    }
}

/// Sends the first `len` bytes of `record` (a record whose tail is unused), counting a loss
/// like [`send`]. `len` is clamped to the record's size.
#[inline(always)]
pub fn send_prefix<T>(slot: u32, record: &T, len: usize) {
    let len = len.min(core::mem::size_of::<T>());
    // SAFETY: `record` is a live T; the slice covers at most its size_of::<T>() bytes.
    let bytes = unsafe { core::slice::from_raw_parts((record as *const T).cast::<u8>(), len) };
    let sent = match VIGIL_RINGS.get(slot) {
        Some(ring) => ring.output_untyped::<[u8]>(bytes, 0).is_ok(),
        None => false,
    };
    if !sent {
        count_lost(slot);
    }
}

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(counter) = VIGIL_LOST.get_ptr_mut(slot) {
        // SAFETY: a live element of this CPU's copy of a per-CPU array; programs on one CPU
        // do not nest, so the increment races with nothing.
        unsafe { *counter += 1 };
    }
}

/// True the first time this (registration, kind, hash) is seen; later calls return false.
/// An LRU eviction makes an old item new again (a duplicate event, never a missing one).
#[inline(always)]
pub fn first_time(generation: u32, kind: u32, hash: u64) -> bool {
    let key = SeenKey {
        generation,
        kind,
        hash,
    };
    // SAFETY: only presence is tested; the value is not read.
    if unsafe { VIGIL_SEEN.get(key) }.is_some() {
        return false;
    }
    // A failed insert only means the item may be reported again.
    let _ = VIGIL_SEEN.insert(key, 1u8, 0);
    true
}
