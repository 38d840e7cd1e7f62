//! Struct field offsets of the running kernel, from its BTF (/sys/kernel/btf/vmlinux).
//!
//! Format: Documentation/bpf/btf.rst at v6.18 ("Type Encoding"). Only what member lookup
//! needs is parsed: each type's name, kind and vlen, and the members of structs and unions.

use std::{collections::HashMap, path::Path};

use vigil_ebpf_common::KernelOffsets;

use super::{BpfError, Result};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// The referenced type for modifiers and typedefs.
    target: u32,
    members: Vec<Member>,
}

/// Parsed type section of a BTF blob.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

impl Btf {
    /// Reads and parses the BTF at `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| btf_error(path, e.to_string()))?;
        Self::parse(&data).map_err(|reason| btf_error(path, reason))
    }

    fn parse(data: &[u8]) -> std::result::Result<Self, String> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if u16_at(0) != Some(BTF_MAGIC) {
            return Err("bad magic (not little-endian BTF)".into());
        }
        let u32_at = |o: usize| -> std::result::Result<u32, String> {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| format!("truncated at byte {o}"))
        };
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("string section out of bounds")?
            .to_vec();
        let start = hdr_len + type_off;
        let types = parse_types(&u32_at, start, start + type_len)?;
        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
        };
        btf.index_structs();
        Ok(btf)
    }

    fn index_structs(&mut self) {
        for (i, t) in self.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && !t.members.is_empty() {
                let name = self.name(t.name).to_string();
                self.structs.entry(name).or_insert(i as u32);
            }
        }
    }

    fn name(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and modifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.get(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.target
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `field` in `struct name`, looking inside anonymous structs and unions.
    pub fn offset(&self, name: &str, field: &str) -> Option<u32> {
        let id = *self.structs.get(name)?;
        self.member_offset(id, field, 0)
    }

    fn member_offset(&self, id: u32, field: &str, depth: u32) -> Option<u32> {
        let t = self.get(id)?;
        if depth > 4 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &t.members {
            if m.name != 0 && self.name(m.name) == field {
                return Some(m.bit_offset / 8);
            }
        }
        t.members.iter().filter(|m| m.name == 0).find_map(|m| {
            let inner = self.member_offset(self.resolve(m.type_id), field, depth + 1)?;
            Some(m.bit_offset / 8 + inner)
        })
    }
}

fn btf_error(path: &Path, reason: String) -> BpfError {
    BpfError::Btf {
        path: path.to_path_buf(),
        reason,
    }
}

/// Walks the type section; entry 0 is the implicit void type.
fn parse_types(
    u32_at: &dyn Fn(usize) -> std::result::Result<u32, String>,
    mut pos: usize,
    end: usize,
) -> std::result::Result<Vec<Type>, String> {
    let mut types = vec![Type {
        name: 0,
        kind: 0,
        target: 0,
        members: Vec::new(),
    }];
    while pos < end {
        let (name, info, target) = (u32_at(pos)?, u32_at(pos + 4)?, u32_at(pos + 8)?);
        pos += 12;
        let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
        let mut members = Vec::new();
        if matches!(kind, KIND_STRUCT | KIND_UNION) {
            for i in 0..vlen {
                let at = pos + i * 12;
                let raw = u32_at(at + 8)?;
                let bit_offset = if kind_flag == 1 {
                    raw & 0x00ff_ffff
                } else {
                    raw
                };
                members.push(Member {
                    name: u32_at(at)?,
                    type_id: u32_at(at + 4)?,
                    bit_offset,
                });
            }
        }
        pos += trailing_bytes(kind, vlen)?;
        types.push(Type {
            name,
            kind,
            target,
            members,
        });
    }
    Ok(types)
}

/// Bytes that follow a type's 12-byte header, per kind (btf.rst, "Type Encoding").
fn trailing_bytes(kind: u32, vlen: usize) -> std::result::Result<usize, String> {
    Ok(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
        other => return Err(format!("unknown BTF kind {other}")),
    })
}

/// Offsets of every field the programs read, from the kernel BTF at `path`.
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets> {
    let btf = Btf::from_file(path)?;
    let f = |s: &str, m: &str| {
        btf.offset(s, m)
            .ok_or_else(|| btf_error(path, format!("no field {m} in struct {s}")))
    };
    // `struct sock` starts with `struct sock_common __sk_common` (include/net/sock.h).
    let common = f("sock", "__sk_common")?;
    Ok(KernelOffsets {
        ready: 1,
        task_pid: f("task_struct", "pid")?,
        task_tgid: f("task_struct", "tgid")?,
        task_real_parent: f("task_struct", "real_parent")?,
        task_comm: f("task_struct", "comm")?,
        task_mm: f("task_struct", "mm")?,
        task_fs: f("task_struct", "fs")?,
        task_files: f("task_struct", "files")?,
        mm_arg_start: f("mm_struct", "arg_start")?,
        mm_arg_end: f("mm_struct", "arg_end")?,
        fs_root: f("fs_struct", "root")?,
        path_mnt: f("path", "mnt")?,
        path_dentry: f("path", "dentry")?,
        dentry_parent: f("dentry", "d_parent")?,
        dentry_name: f("dentry", "d_name")?,
        qstr_name: f("qstr", "name")?,
        mount_mnt: f("mount", "mnt")?,
        mount_parent: f("mount", "mnt_parent")?,
        mount_mountpoint: f("mount", "mnt_mountpoint")?,
        vfsmount_root: f("vfsmount", "mnt_root")?,
        file_path: f("file", "f_path")?,
        binprm_file: f("linux_binprm", "file")?,
        binprm_filename: f("linux_binprm", "filename")?,
        files_fdt: f("files_struct", "fdt")?,
        fdt_fd: f("fdtable", "fd")?,
        fdt_max_fds: f("fdtable", "max_fds")?,
        file_private_data: f("file", "private_data")?,
        socket_file: f("socket", "file")?,
        socket_sk: f("socket", "sk")?,
        sk_family: common + f("sock_common", "skc_family")?,
        sk_num: common + f("sock_common", "skc_num")?,
        sk_rcv_saddr: common + f("sock_common", "skc_rcv_saddr")?,
        // Only with CONFIG_IPV6; 0 makes the programs report IPv6 local addresses as `::`.
        sk_v6_rcv_saddr: btf
            .offset("sock_common", "skc_v6_rcv_saddr")
            .map_or(0, |o| common + o),
        sk_protocol: f("sock", "sk_protocol")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_fields_in_the_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipping: {VMLINUX_BTF} is missing (kernel without BTF)");
            return;
        }
        let off = kernel_offsets(path).expect("offsets");
        // mm_struct's fields sit in an anonymous struct; arg_end follows arg_start.
        assert_eq!(off.mm_arg_end, off.mm_arg_start + 8);
        assert_eq!(off.path_dentry, 8);
        // `pid_t pid; pid_t tgid;` are adjacent in task_struct (include/linux/sched.h).
        assert_eq!(off.task_tgid, off.task_pid + 4);
        // sock_common (include/net/sock.h): the address pair, the hash (4 bytes), then
        // `__be16 skc_dport; __u16 skc_num;`, then the family.
        assert_eq!(off.sk_num, off.sk_rcv_saddr + 10);
        assert_eq!(off.sk_family, off.sk_num + 2);
        // struct socket (include/linux/net.h): `struct file *file; struct sock *sk;`.
        assert_eq!(off.socket_sk, off.socket_file + 8);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all").is_err());
    }
}
