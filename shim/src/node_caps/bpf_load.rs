//! Real load attempts of minimal BPF programs, to learn what this kernel lets vigil do.
//!
//! Each probe loads a two-to-four instruction program with `bpf(BPF_PROG_LOAD)` and closes it
//! at once; nothing is attached. The errno of a refusal is the evidence `vigil doctor` shows
//! (on the test host an LSM program fails with EPERM although `bpf` is an active LSM).
//!
//! Layouts: `union bpf_attr` (BPF_PROG_LOAD part) and `struct bpf_insn` from
//! include/uapi/linux/bpf.h at v6.18; the BTF type encoding from Documentation/bpf/btf.rst.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

const BPF_PROG_LOAD: libc::c_long = 5;

/// `enum bpf_prog_type`.
pub(crate) mod prog_type {
    pub const SOCKET_FILTER: u32 = 1;
    pub const TRACEPOINT: u32 = 5;
    pub const CGROUP_SOCK_ADDR: u32 = 18;
    pub const LSM: u32 = 29;
}

/// `enum bpf_attach_type`.
pub(crate) mod attach_type {
    pub const NONE: u32 = 0;
    pub const CGROUP_INET4_CONNECT: u32 = 10;
    pub const LSM_MAC: u32 = 27;
}

/// `BPF_FUNC_send_signal`.
const HELPER_SEND_SIGNAL: i32 = 109;

/// The BPF_PROG_LOAD part of `union bpf_attr`, up to `attach_btf_id`. The kernel accepts a
/// shorter attr and treats the rest as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 112);

/// One `struct bpf_insn`, little-endian: code, dst/src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from((dst & 0xf) | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// `r<dst> = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
fn mov_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}

/// `call helper` (BPF_JMP | BPF_CALL).
fn call(helper: i32) -> u64 {
    insn(0x85, 0, 0, 0, helper)
}

/// `exit` (BPF_JMP | BPF_EXIT).
fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0)
}

/// What to load.
pub(crate) struct Probe {
    pub prog_type: u32,
    pub attach_type: u32,
    pub attach_btf_id: u32,
    insns: Vec<u64>,
}

impl Probe {
    /// `return ret;` as a program of this type.
    pub fn returning(prog_type: u32, attach_type: u32, ret: i32) -> Probe {
        Probe {
            prog_type,
            attach_type,
            attach_btf_id: 0,
            insns: vec![mov_imm(0, ret), exit()],
        }
    }

    /// A tracepoint program that calls `bpf_send_signal(SIGKILL)`: the fallback tier's exec
    /// kill. The verifier rejects the call where the helper is unavailable.
    pub fn send_signal() -> Probe {
        let insns = vec![
            mov_imm(1, libc::SIGKILL),
            call(HELPER_SEND_SIGNAL),
            mov_imm(0, 0),
            exit(),
        ];
        Probe {
            prog_type: prog_type::TRACEPOINT,
            attach_type: attach_type::NONE,
            attach_btf_id: 0,
            insns,
        }
    }

    /// An `lsm/<hook>` program returning 0, attached by BTF id.
    pub fn lsm(attach_btf_id: u32) -> Probe {
        Probe {
            attach_btf_id,
            ..Probe::returning(prog_type::LSM, attach_type::LSM_MAC, 0)
        }
    }

    /// Loads the program and closes it again.
    pub fn load(&self) -> io::Result<()> {
        let license: &CStr = c"GPL";
        let mut attr = ProgLoadAttr {
            prog_type: self.prog_type,
            insn_cnt: self.insns.len() as u32,
            insns: self.insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            expected_attach_type: self.attach_type,
            attach_btf_id: self.attach_btf_id,
            ..ProgLoadAttr::default()
        };
        attr.prog_name[..11].copy_from_slice(b"vigil_probe");
        let size = std::mem::size_of::<ProgLoadAttr>() as u32;
        // SAFETY: attr is a fully initialised ProgLoadAttr laid out as the kernel's
        // BPF_PROG_LOAD attr prefix; insns and license point to live memory for the duration
        // of the call; size matches the buffer, so the kernel reads nothing beyond it.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &mut attr, size) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns; dropping closes it.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        Ok(())
    }
}

/// `errno` as its name and text: `EPERM (Operation not permitted)`.
pub(crate) fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let errno = nix::errno::Errno::from_raw(code);
            format!("{errno:?} ({})", errno.desc())
        }
        None => e.to_string(),
    }
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_FUNC: u32 = 12;

/// The type id of the function `name` in the BTF blob at `path` (an `lsm/` program's attach
/// target is the BTF id of `bpf_lsm_<hook>`).
pub(crate) fn btf_func_id(path: &Path, name: &str) -> Result<u32, String> {
    let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    find_func(&data, name)?.ok_or_else(|| format!("{name} is not in {}", path.display()))
}

/// Walks the type section of a BTF blob looking for a FUNC named `name`.
pub(crate) fn find_func(data: &[u8], name: &str) -> Result<Option<u32>, String> {
    let u32_at = |o: usize| -> Result<u32, String> {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("BTF truncated at byte {o}"))
    };
    if data.get(0..2) != Some(&BTF_MAGIC.to_le_bytes()[..]) {
        return Err("not little-endian BTF (bad magic)".into());
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = hdr_len + u32_at(16)? as usize;
    let name_at = |off: u32| {
        let rest = data.get(str_off + off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())]
    };

    let (mut at, end) = (hdr_len + type_off, hdr_len + type_off + type_len);
    let mut id = 1;
    while at < end {
        let (name_off, info) = (u32_at(at)?, u32_at(at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == KIND_FUNC && name_at(name_off) == name.as_bytes() {
            return Ok(Some(id));
        }
        at += 12 + trailing_bytes(kind, vlen).ok_or_else(|| format!("unknown BTF kind {kind}"))?;
        id += 1;
    }
    Ok(None)
}

/// Bytes that follow the 12-byte `struct btf_type` for each kind.
fn trailing_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // INT, VAR, DECL_TAG: one u32.
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG: nothing.
        2 | 7..=12 | 16 | 18 => 0,
        // ARRAY: struct btf_array.
        3 => 12,
        // STRUCT, UNION: btf_member; DATASEC: btf_var_secinfo; ENUM64: btf_enum64.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM: btf_enum; FUNC_PROTO: btf_param.
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: INT "int", FUNC_PROTO with one param, FUNC "bpf_lsm_file_open".
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0bpf_lsm_file_open\0".to_vec();
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
        push(&[1, 1 << 24, 4, 32]); // [1] INT int, size 4, 32 bits
        push(&[0, (13 << 24) | 1, 1, 0, 1]); // [2] FUNC_PROTO returning [1], one param of [1]
        push(&[5, 12 << 24, 2]); // [3] FUNC bpf_lsm_file_open -> [2]
        let mut data = Vec::new();
        data.extend(BTF_MAGIC.to_le_bytes());
        data.extend([1, 0]); // version, flags
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend(w.to_le_bytes());
        }
        data.extend(types);
        data.extend(strings);
        data
    }

    #[test]
    fn finds_a_function_by_name_past_other_kinds() {
        let data = blob();
        assert_eq!(find_func(&data, "bpf_lsm_file_open"), Ok(Some(3)));
        assert_eq!(find_func(&data, "int"), Ok(None), "an INT is not a FUNC");
        assert!(find_func(&data[..30], "x").is_err());
        assert!(find_func(b"nope-nope-nope-nope-nope", "x").is_err());
    }

    #[test]
    fn finds_lsm_hooks_in_the_running_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipping: {} absent (kernel without BTF)", path.display());
            return;
        }
        let id = btf_func_id(path, "bpf_lsm_bprm_check_security").expect("hook in vmlinux BTF");
        assert!(id > 0);
        assert!(btf_func_id(path, "vigil_no_such_function").is_err());
    }

    #[test]
    fn encodes_instructions_like_the_kernel() {
        // r0 = 1; exit, as `bpftool prog dump xlated opcodes` shows them.
        assert_eq!(mov_imm(0, 1).to_le_bytes(), [0xb7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(mov_imm(1, 9).to_le_bytes(), [0xb7, 1, 0, 0, 9, 0, 0, 0]);
        assert_eq!(call(109).to_le_bytes(), [0x85, 0, 0, 0, 109, 0, 0, 0]);
        assert_eq!(exit().to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn names_errnos() {
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(errno_text(&e), "EPERM (Operation not permitted)");
        assert_eq!(errno_text(&io::Error::other("x")), "x");
    }
}
