//! The two bpf(2) commands aya 0.14 does not offer for map-of-maps: creating a standalone
//! ring buffer to insert into `VIGIL_RINGS`, and deleting an index of an array of maps.
//!
//! `union bpf_attr` layouts: include/uapi/linux/bpf.h at v6.18 (BPF_MAP_CREATE: map_type,
//! key_size, value_size, max_entries, map_flags, ...; BPF_MAP_*_ELEM: map_fd, pad, key,
//! value, flags).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
/// Bytes of `union bpf_attr` passed; the kernel accepts a larger, zero-filled buffer.
const ATTR_LEN: usize = 128;

fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_LEN]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, writable, zero-initialised buffer of ATTR_LEN bytes, at least
    // as large as the command's part of union bpf_attr; the kernel reads at most that.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_LEN as u32) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

fn put_u32(attr: &mut [u8; ATTR_LEN], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_LEN], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Creates a ring buffer map of `bytes` bytes named `vigil_ring`.
pub fn create_ringbuf(bytes: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_LEN];
    put_u32(&mut attr, 0, BPF_MAP_TYPE_RINGBUF);
    put_u32(&mut attr, 12, bytes);
    // map_name: after map_type, key_size, value_size, max_entries, map_flags, inner_map_fd,
    // numa_node (7 x u32).
    attr[28..38].copy_from_slice(b"vigil_ring");
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Deletes index `key` of an array-of-maps (drops the outer map's reference to the inner).
pub fn delete_u32(map: BorrowedFd<'_>, key: u32) -> io::Result<()> {
    let mut attr = [0u8; ATTR_LEN];
    put_u32(&mut attr, 0, map.as_raw_fd() as u32);
    put_u64(&mut attr, 8, &key as *const u32 as u64);
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(|_| ()),
    }
}
