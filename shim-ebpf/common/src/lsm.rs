//! Keys, records and names of the LSM-BPF tier (shim-ebpf/programs/src/lsm/).
//!
//! The LSM programs share the other tier's maps (`VIGIL_CONTAINERS`, `VIGIL_TASKS`,
//! `VIGIL_EXEC_ALLOW`, `VIGIL_NET_ALLOW`, the per-slot ring buffers); what only they need is
//! here: the file allow set, per-registration rules for hooks seccomp cannot scope, the
//! record for those hooks, and the struct offsets they read.

use crate::{fnv_byte, EventHeader, FNV_OFFSET, NAME_LEN, RAW_PATH_LEN};

/// Bytes of the buffer `bpf_d_path` resolves a path into, NUL included. A longer path fails
/// with ENAMETOOLONG; enforce then treats the file as not allowed.
pub const LSM_PATH_LEN: usize = 256;
/// Folder levels of a path whose prefixes are looked up against [`file_rule::PREFIX`] rules.
pub const LSM_PREFIX_DEPTH: usize = 16;

/// Kinds of a [`FileAllowKey`].
pub mod file_rule {
    /// The whole path, as [`crate::file_hash`] hashes it.
    pub const EXACT: u32 = 1;
    /// A folder: the rule covers every path below it.
    pub const PREFIX: u32 = 2;
    /// Added to EXACT or PREFIX: the hash was made with id-like components as `*`
    /// ([`crate::is_id_component`]: pids, fds, container ids, UUIDs), as the profile
    /// collapses them (`/proc/*/stat`).
    pub const IDS_AS_STAR: u32 = 4;
}

/// `VIGIL_FILE_ALLOW` key. The value holds the allowed [`crate::access`] bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileAllowKey {
    pub generation: u32,
    /// Bits of [`file_rule`].
    pub kind: u32,
    pub hash: u64,
}

/// A path component the profile collapses to `*` as a whole (policy/src/pattern.rs rules 2
/// to 4): only digits; or 12 or more hex digits with at least one digit; or a 36-byte UUID
/// (hex digits and dashes).
pub fn is_id_component(component: &[u8]) -> bool {
    let mut shape = IdShape::new();
    for byte in component {
        shape.push(*byte);
    }
    shape.is_id()
}

/// What is known about a component so far, one byte at a time (the kernel's loop).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IdShape {
    len: usize,
    digits: bool,
    hex: bool,
    hex_or_dash: bool,
    has_digit: bool,
}

impl IdShape {
    #[inline(always)]
    pub const fn new() -> Self {
        Self {
            len: 0,
            digits: true,
            hex: true,
            hex_or_dash: true,
            has_digit: false,
        }
    }

    #[inline(always)]
    pub fn push(&mut self, byte: u8) {
        let digit = byte.is_ascii_digit();
        let hex = byte.is_ascii_hexdigit();
        self.len += 1;
        self.digits &= digit;
        self.hex &= hex;
        self.hex_or_dash &= hex || byte == b'-';
        self.has_digit |= digit;
    }

    #[inline(always)]
    pub fn is_id(&self) -> bool {
        self.len > 0
            && (self.digits
                || (self.hex && self.has_digit && self.len >= 12)
                || (self.hex_or_dash && self.len == 36))
    }
}

impl Default for IdShape {
    fn default() -> Self {
        Self::new()
    }
}

/// Hash of a resolved path for `VIGIL_FILE_ALLOW`: [`crate::path_hash`] (each component as
/// `'/'` and at most `NAME_LEN - 1` bytes), with id-like components hashed as `*` when
/// `ids_as_star` is set.
pub fn file_hash(path: &[u8], ids_as_star: bool) -> u64 {
    let mut hash = FNV_OFFSET;
    for component in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        hash = fnv_byte(hash, b'/');
        if ids_as_star && is_id_component(component) {
            hash = fnv_byte(hash, b'*');
            continue;
        }
        for byte in component.iter().take(NAME_LEN - 1) {
            hash = fnv_byte(hash, *byte);
        }
    }
    hash
}

/// The hashes the kernel looks up for one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathHashes {
    /// `file_hash(path, false)`, equal to `path_hash`.
    pub exact: u64,
    /// `file_hash(path, true)`.
    pub ids: u64,
    /// Entries filled in the folder arrays (at most `LSM_PREFIX_DEPTH`).
    pub folders: usize,
}

/// The hashes of a resolved path, fed one byte at a time (the kernel's `bpf_loop` callback
/// and [`hash_resolved`] share it). `folders[i]` / `folders_ids[i]` receive the hashes of
/// the first `i` components: the folder holding component `i`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathHasher {
    exact: u64,
    ids: u64,
    /// `ids` before the current component, to replace an id-like component by `*`.
    ids_before: u64,
    depth: u64,
    shape: IdShape,
}

impl PathHasher {
    #[inline(always)]
    pub const fn new() -> Self {
        Self {
            exact: FNV_OFFSET,
            ids: FNV_OFFSET,
            ids_before: FNV_OFFSET,
            depth: 0,
            shape: IdShape::new(),
        }
    }

    /// Adds one byte of the path.
    #[inline(always)]
    pub fn push(
        &mut self,
        byte: u8,
        folders: &mut [u64; LSM_PREFIX_DEPTH],
        folders_ids: &mut [u64; LSM_PREFIX_DEPTH],
    ) {
        if byte == b'/' {
            self.end_component();
            return;
        }
        if self.shape.len == 0 {
            let depth = self.depth as usize;
            if let (Some(f), Some(fi)) = (folders.get_mut(depth), folders_ids.get_mut(depth)) {
                (*f, *fi) = (self.exact, self.ids);
                self.depth += 1;
            }
            self.ids_before = self.ids;
            self.exact = fnv_byte(self.exact, b'/');
            self.ids = fnv_byte(self.ids, b'/');
        }
        if self.shape.len < NAME_LEN - 1 {
            self.exact = fnv_byte(self.exact, byte);
            self.ids = fnv_byte(self.ids, byte);
        }
        self.shape.push(byte);
    }

    #[inline(always)]
    fn end_component(&mut self) {
        if self.shape.is_id() {
            self.ids = fnv_byte(fnv_byte(self.ids_before, b'/'), b'*');
        }
        self.shape = IdShape::new();
    }

    /// The hashes of the bytes pushed so far.
    #[inline(always)]
    pub fn finish(&mut self) -> PathHashes {
        self.end_component();
        PathHashes {
            exact: self.exact,
            ids: self.ids,
            folders: self.depth as usize,
        }
    }
}

impl Default for PathHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Hashes `path[..len]` (a resolved path, `/`-separated) as the kernel does.
pub fn hash_resolved(
    path: &[u8; LSM_PATH_LEN],
    len: usize,
    folders: &mut [u64; LSM_PREFIX_DEPTH],
    folders_ids: &mut [u64; LSM_PREFIX_DEPTH],
) -> PathHashes {
    let mut hasher = PathHasher::new();
    for byte in path.iter().take(len) {
        hasher.push(*byte, folders, folders_ids);
    }
    hasher.finish()
}

/// `VIGIL_LSM_RULES` value bits, keyed by registration number (generation).
pub mod lsm_rule {
    /// The profile allows mount(2): `sb_mount` lets the container's processes mount.
    pub const MOUNT: u32 = 1;
}

/// Hooks named in an [`LsmEvent`].
pub mod lsm_hook {
    /// `ptrace_access_check`: a process reached for a task outside its container.
    pub const PTRACE: u8 = 1;
    /// `sb_mount`: a mount by a process of the container.
    pub const MOUNT: u8 = 2;
    /// `task_kill`: a signal to a task outside the container.
    pub const KILL: u8 = 3;
}

/// A hook without a record of its own (`EventKind::Lsm`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsmEvent {
    pub header: EventHeader,
    /// One of [`lsm_hook`].
    pub hook: u8,
    /// One of [`crate::verdict`]: BLOCKED in enforce, OBSERVED in monitor.
    pub verdict: u8,
    pub _pad: [u8; 2],
    /// The target's thread-group id (ptrace, kill); 0 for mount.
    pub target_tgid: u32,
    /// The ptrace mode bits, the signal number, or the low 32 bits of the mount flags.
    pub detail: u32,
    pub _pad2: u32,
    /// The mount point (resolved with `bpf_d_path`), or the target's comm; NUL-terminated.
    pub text: [u8; RAW_PATH_LEN],
}

impl Default for LsmEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            hook: 0,
            verdict: 0,
            _pad: [0; 2],
            target_tgid: 0,
            detail: 0,
            _pad2: 0,
            text: [0; RAW_PATH_LEN],
        }
    }
}

/// Byte offsets of the struct fields the LSM programs read, from the running kernel's BTF,
/// stored in the `VIGIL_LSM_OFFSETS` global (read-only, frozen) before the programs load.
/// Read one field at a time from the global: the verifier then knows each as a constant,
/// which it needs to keep BTF types through `base + offset` (for `bpf_d_path`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmOffsets {
    /// 1 once user space filled the rest.
    pub ready: u32,
    /// `struct linux_binprm`: `file`, `filename`, `buf` (the first bytes of the file).
    pub binprm_file: u32,
    pub binprm_filename: u32,
    pub binprm_buf: u32,
    /// `struct file`: `f_path`, `f_mode`, `f_flags`.
    pub file_path: u32,
    pub file_mode: u32,
    pub file_flags: u32,
    /// `struct socket`: `type` (SOCK_STREAM, SOCK_DGRAM, ...).
    pub socket_type: u32,
    /// `struct task_struct`: `tgid`, `comm`.
    pub task_tgid: u32,
    pub task_comm: u32,
}

/// Names of the LSM programs and the hooks they attach to.
pub mod lsm_program {
    pub const BPRM_CHECK: &str = "vigil_lsm_bprm_check";
    pub const FILE_OPEN: &str = "vigil_lsm_file_open";
    pub const SOCKET_CONNECT: &str = "vigil_lsm_socket_connect";
    pub const SOCKET_BIND: &str = "vigil_lsm_socket_bind";
    pub const PTRACE: &str = "vigil_lsm_ptrace";
    pub const SB_MOUNT: &str = "vigil_lsm_sb_mount";
    pub const TASK_KILL: &str = "vigil_lsm_task_kill";

    /// Every LSM program with its hook (`bpf_lsm_<hook>` in the kernel's BTF).
    pub const ALL: [(&str, &str); 7] = [
        (BPRM_CHECK, "bprm_check_security"),
        (FILE_OPEN, "file_open"),
        (SOCKET_CONNECT, "socket_connect"),
        (SOCKET_BIND, "socket_bind"),
        (PTRACE, "ptrace_access_check"),
        (SB_MOUNT, "sb_mount"),
        (TASK_KILL, "task_kill"),
    ];
}

/// Names of the LSM tier's own maps and global.
pub mod lsm_map {
    pub const FILE_ALLOW: &str = "VIGIL_FILE_ALLOW";
    pub const RULES: &str = "VIGIL_LSM_RULES";
    pub const SCRATCH: &str = "VIGIL_LSM_SCRATCH";
    pub const OFFSETS_GLOBAL: &str = "VIGIL_LSM_OFFSETS";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] records of integers and byte arrays with explicit padding: every
    // bit pattern is valid and no byte is uninitialised padding.
    unsafe impl aya::Pod for super::FileAllowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LsmOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LsmEvent {}
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::format;

    use super::*;

    fn kernel_hashes(path: &str) -> (PathHashes, [u64; LSM_PREFIX_DEPTH], [u64; LSM_PREFIX_DEPTH]) {
        let mut buf = [0u8; LSM_PATH_LEN];
        buf[..path.len()].copy_from_slice(path.as_bytes());
        let (mut folders, mut ids) = ([0; LSM_PREFIX_DEPTH], [0; LSM_PREFIX_DEPTH]);
        let hashes = hash_resolved(&buf, path.len(), &mut folders, &mut ids);
        (hashes, folders, ids)
    }

    #[test]
    fn file_hash_matches_path_hash_without_collapsing() {
        assert_eq!(
            file_hash(b"/etc/passwd", false),
            crate::path_hash(b"/etc/passwd")
        );
        assert_eq!(
            file_hash(b"/proc/42/stat", false),
            crate::path_hash(b"/proc/42/stat")
        );
    }

    #[test]
    fn id_components_hash_as_star() {
        let pattern = crate::path_hash(b"/proc/*/stat");
        assert_eq!(file_hash(b"/proc/42/stat", true), pattern);
        assert_eq!(file_hash(b"/proc/*/stat", true), pattern);
        assert_ne!(file_hash(b"/proc/self/stat", true), pattern);
        assert_ne!(
            file_hash(b"/proc/4a/stat", true),
            pattern,
            "short hex is a name"
        );
        let id = "0123456789abcdef0123";
        assert_eq!(
            file_hash(format!("/run/c/{id}/x").as_bytes(), true),
            crate::path_hash(b"/run/c/*/x")
        );
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        assert!(is_id_component(uuid.as_bytes()));
        assert!(
            !is_id_component(b"deadbeefcafe"),
            "hex without a digit is a word"
        );
    }

    #[test]
    fn the_kernel_pass_agrees_with_file_hash() {
        for path in [
            "/",
            "/etc/passwd",
            "/proc/42/fd/3",
            "//usr//lib/",
            "/a/0123456789ab",
        ] {
            let (hashes, _, _) = kernel_hashes(path);
            assert_eq!(hashes.exact, file_hash(path.as_bytes(), false), "{path}");
            assert_eq!(hashes.ids, file_hash(path.as_bytes(), true), "{path}");
        }
        let long = format!("/x/{}", "n".repeat(100));
        assert_eq!(
            kernel_hashes(&long).0.exact,
            crate::path_hash(long.as_bytes())
        );
    }

    #[test]
    fn folders_are_the_prefixes_of_each_component() {
        let (hashes, folders, ids) = kernel_hashes("/proc/42/status");
        assert_eq!(hashes.folders, 3);
        assert_eq!(folders[0], file_hash(b"/", false));
        assert_eq!(folders[1], file_hash(b"/proc", false));
        assert_eq!(folders[2], file_hash(b"/proc/42", false));
        assert_eq!(ids[2], file_hash(b"/proc/*", true));
    }
}
