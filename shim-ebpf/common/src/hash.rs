//! The hashes the kernel computes and user space reproduces to fill allow and seen sets.
//!
//! 64-bit FNV-1a (<http://www.isthe.com/chongo/tech/comp/fnv/>), byte at a time, because
//! the verifier accepts a bounded byte loop and user space needs no table.

use crate::NAME_LEN;

/// FNV-1a 64-bit offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Adds one byte to an FNV-1a hash.
#[inline(always)]
pub const fn fnv_byte(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// Hash of a resolved path: for each component from the root down, `'/'` then at most
/// `NAME_LEN - 1` bytes of the component. "/" hashes to [`FNV_OFFSET`].
pub fn path_hash(path: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    for component in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        hash = fnv_byte(hash, b'/');
        for byte in component.iter().take(NAME_LEN - 1) {
            hash = fnv_byte(hash, *byte);
        }
    }
    hash
}

/// Hash of a resolved path hash and an applet name (argv[0]'s basename, at most
/// `NAME_LEN - 1` bytes): the identity of one applet of a multi-call binary.
pub fn exec_name_hash(path_hash: u64, name: &[u8]) -> u64 {
    let mut hash = fnv_byte(path_hash, 0);
    for byte in name.iter().take(NAME_LEN - 1) {
        hash = fnv_byte(hash, *byte);
    }
    hash
}

/// [`exec_name_hash`] of `argv[start..end]`, written for the verifier: a fixed bound and
/// checked indexing. The kernel calls it with argv[0]'s basename.
#[inline(always)]
pub fn exec_name_hash_step(path_hash: u64, argv: &[u8], start: usize, end: usize) -> u64 {
    let mut hash = fnv_byte(path_hash, 0);
    for i in 0..NAME_LEN - 1 {
        let idx = start + i;
        if idx >= end {
            break;
        }
        let Some(byte) = argv.get(idx) else { break };
        hash = fnv_byte(hash, *byte);
    }
    hash
}

/// The basename of argv[0] (the applet name a multi-call binary dispatches on).
pub fn applet_name(argv0: &[u8]) -> &[u8] {
    match argv0.iter().rposition(|b| *b == b'/') {
        Some(i) => &argv0[i + 1..],
        None => argv0,
    }
}

/// Hash of a raw byte string (a path as the program passed it), at most `limit` bytes.
pub fn bytes_hash(bytes: &[u8], limit: usize) -> u64 {
    let mut hash = FNV_OFFSET;
    for byte in bytes.iter().take(limit) {
        hash = fnv_byte(hash, *byte);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_hash_ignores_duplicate_slashes_and_root() {
        assert_eq!(path_hash(b"/"), FNV_OFFSET);
        assert_eq!(path_hash(b"/bin//busybox"), path_hash(b"/bin/busybox"));
        assert_ne!(path_hash(b"/bin/busybox"), path_hash(b"/usr/bin/busybox"));
    }

    #[test]
    fn long_components_hash_as_truncated() {
        let long = [b'a'; 100];
        let cut = [b'a'; NAME_LEN - 1];
        let mut p1 = b"/x/".to_vec();
        p1.extend_from_slice(&long);
        let mut p2 = b"/x/".to_vec();
        p2.extend_from_slice(&cut);
        assert_eq!(path_hash(&p1), path_hash(&p2));
    }

    #[test]
    fn applet_is_the_basename() {
        assert_eq!(applet_name(b"/bin/nc"), b"nc");
        assert_eq!(applet_name(b"cat"), b"cat");
        let bin = path_hash(b"/bin/busybox");
        assert_ne!(exec_name_hash(bin, b"cat"), exec_name_hash(bin, b"nc"));
        let argv = b"/bin/cat\0/etc/passwd\0";
        assert_eq!(
            exec_name_hash_step(bin, argv, 5, 8),
            exec_name_hash(bin, b"cat")
        );
    }
}
