//! The LSM-BPF tier in user space: struct offsets for the LSM programs, attaching all of
//! them or none, the tier probe the shim and `vigil doctor` use, the file and mount rules of
//! a registration, and decoding of the LSM-only record. Kernel side:
//! shim-ebpf/programs/src/lsm/; docs/lsm-tier.md says what each hook decides.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, MapData},
    programs::{links::FdLink, Lsm, ProgramError},
    Ebpf, EbpfLoader,
};
use vigil_ebpf_common::{
    access, file_hash, file_rule, lsm_hook, lsm_map, lsm_program, lsm_rule, map, verdict,
    FileAllowKey, LsmEvent, LsmOffsets,
};

use super::{
    btf::{self, Btf},
    events::{Process, Verdict},
    pins::{self, Layout},
    BpfError, Node, Registration, Result,
};

/// Where securityfs lists the active LSMs, in order.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Why the LSM-BPF tier cannot be used on this node; the fallback tier is used instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LsmUnavailable {
    #[error(
        "cannot read {LSM_LIST} ({reason}): mount securityfs \
         (`mount -t securityfs securityfs /sys/kernel/security`)"
    )]
    NoSecurityfs { reason: String },
    #[error(
        "the BPF LSM is not active (active LSMs: {active}); boot the kernel with \
         `lsm={active},bpf` (it needs CONFIG_BPF_LSM=y)"
    )]
    NotActive { active: String },
    #[error("kernel BTF unusable for LSM programs: {reason}")]
    Btf { reason: String },
    #[error("vigil's eBPF object could not be prepared: {reason}")]
    Object { reason: String },
    #[error("the kernel refused to load LSM program {program} (hook {hook}): {reason}")]
    Load {
        program: &'static str,
        hook: &'static str,
        reason: String,
    },
    #[error("the kernel refused to attach LSM program {program} (hook {hook}): {reason}")]
    Attach {
        program: &'static str,
        hook: &'static str,
        reason: String,
    },
    #[error("pinning LSM link {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
}

/// Offsets of the fields the LSM programs read, from the kernel's BTF.
pub(crate) fn offsets(btf: &Btf, path: &Path) -> Result<LsmOffsets> {
    let f = |s: &str, m: &str| {
        btf.offset(s, m).ok_or_else(|| BpfError::Btf {
            path: path.to_path_buf(),
            reason: format!("no field {m} in struct {s}"),
        })
    };
    Ok(LsmOffsets {
        ready: 1,
        binprm_file: f("linux_binprm", "file")?,
        binprm_filename: f("linux_binprm", "filename")?,
        binprm_buf: f("linux_binprm", "buf")?,
        file_path: f("file", "f_path")?,
        file_mode: f("file", "f_mode")?,
        file_flags: f("file", "f_flags")?,
        socket_type: f("socket", "type")?,
        task_tgid: f("task_struct", "tgid")?,
        task_comm: f("task_struct", "comm")?,
    })
}

/// Offsets read from the kernel BTF at its usual place.
pub(crate) fn kernel_offsets() -> Result<LsmOffsets> {
    let path = Path::new(btf::VMLINUX_BTF);
    offsets(&Btf::from_file(path)?, path)
}

/// Checks that `bpf` is among the active LSMs (an LSM program attaches on a kernel that
/// does not run the BPF LSM, but is never called).
pub fn check_active() -> std::result::Result<(), LsmUnavailable> {
    let list = fs::read_to_string(LSM_LIST).map_err(|e| LsmUnavailable::NoSecurityfs {
        reason: e.to_string(),
    })?;
    let active = list.trim().to_string();
    if active.split(',').any(|lsm| lsm == "bpf") {
        Ok(())
    } else {
        Err(LsmUnavailable::NotActive { active })
    }
}

/// Loads and attaches every LSM program of `ebpf`, or none: on any failure the links made
/// so far are dropped (detached) and the reason returned. With `layout`, programs and links
/// are pinned (and a failed pin removes every LSM pin again).
pub(crate) fn attach_all(
    ebpf: &mut Ebpf,
    layout: Option<&Layout>,
) -> std::result::Result<Vec<FdLink>, LsmUnavailable> {
    check_active()?;
    let btf = aya::Btf::from_sys_fs().map_err(|e| LsmUnavailable::Btf {
        reason: e.to_string(),
    })?;
    for (program, hook) in lsm_program::ALL {
        let prog = lsm_mut(ebpf, program, hook)?;
        prog.load(hook, &btf).map_err(|e| LsmUnavailable::Load {
            program,
            hook,
            reason: describe(&e),
        })?;
    }
    let mut links = Vec::with_capacity(lsm_program::ALL.len());
    for (program, hook) in lsm_program::ALL {
        let prog = lsm_mut(ebpf, program, hook)?;
        let attach = |e: ProgramError| LsmUnavailable::Attach {
            program,
            hook,
            reason: describe(&e),
        };
        let id = prog.attach().map_err(attach)?;
        links.push(FdLink::from(prog.take_link(id).map_err(attach)?));
    }
    let Some(layout) = layout else {
        return Ok(links);
    };
    if let Err(e) = pin_all(ebpf, layout, links) {
        detach_all(layout);
        return Err(e);
    }
    Ok(Vec::new())
}

fn lsm_mut<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
    hook: &'static str,
) -> std::result::Result<&'a mut Lsm, LsmUnavailable> {
    let missing = || LsmUnavailable::Object {
        reason: format!("no program {program} in it"),
    };
    let prog = ebpf.program_mut(program).ok_or_else(missing)?;
    prog.try_into()
        .map_err(|e: ProgramError| LsmUnavailable::Load {
            program,
            hook,
            reason: describe(&e),
        })
}

fn pin_all(
    ebpf: &mut Ebpf,
    layout: &Layout,
    links: Vec<FdLink>,
) -> std::result::Result<(), LsmUnavailable> {
    let pin_error = |path: PathBuf, reason: String| LsmUnavailable::Pin { path, reason };
    for ((program, hook), link) in lsm_program::ALL.into_iter().zip(links) {
        let prog_pin = layout.prog(program);
        lsm_mut(ebpf, program, hook)?
            .pin(&prog_pin)
            .map_err(|e| pin_error(prog_pin.clone(), e.to_string()))?;
        let link_pin = layout.link(program);
        pins::pin_link(link, &link_pin).map_err(|e| pin_error(link_pin, e.to_string()))?;
    }
    Ok(())
}

/// Removes every LSM link and program pin: the programs detach once nothing holds them.
pub(crate) fn detach_all(layout: &Layout) {
    for (program, _) in lsm_program::ALL {
        let _ = pins::remove_pin(&layout.link(program));
        let _ = pins::remove_pin(&layout.prog(program));
    }
}

/// True when every LSM program of the set is attached (its link pinned).
pub(crate) fn attached(layout: &Layout) -> bool {
    lsm_program::ALL
        .iter()
        .all(|(program, _)| layout.link(program).exists())
}

/// An error with its causes and, for a verifier rejection, the log's last lines.
fn describe(e: &ProgramError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if let ProgramError::LoadError { verifier_log, .. } = e {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        if !tail.is_empty() {
            text.push_str("; verifier: ");
            text.push_str(&tail.join(" | "));
        }
    }
    text
}

/// The tier probe: loads vigil's object with fresh (unpinned) maps, loads and attaches every
/// LSM program, then drops them all again. `Ok` means the shim would get the LSM tier here;
/// the error says why not, so the fallback tier is chosen and `vigil doctor` can say so.
/// The programs are attached for an instant; with empty maps they allow everything.
pub fn probe() -> std::result::Result<(), LsmUnavailable> {
    check_active()?;
    let object = |e: BpfError| LsmUnavailable::Object {
        reason: e.to_string(),
    };
    let bytes = super::object::bytes().map_err(object)?;
    let kernel = btf::kernel_offsets(Path::new(btf::VMLINUX_BTF)).map_err(object)?;
    let lsm = kernel_offsets().map_err(object)?;
    let mut ebpf = EbpfLoader::new()
        .override_global(map::OFFSETS_GLOBAL, &kernel, true)
        .override_global(lsm_map::OFFSETS_GLOBAL, &lsm, true)
        .load(bytes)
        .map_err(|e| LsmUnavailable::Object {
            reason: e.to_string(),
        })?;
    let links = attach_all(&mut ebpf, None)?;
    drop(links);
    Ok(())
}

/// Which enforcement tier a node's program set gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tier {
    /// LSM-BPF programs deny exec, file, network, ptrace, mount and kill with EPERM.
    Lsm,
    /// exec killed at sched_process_exec, files by the user-space guard, network by cgroup
    /// hooks; `reason` says why the LSM tier is not in use.
    Fallback { reason: String },
}

impl Node {
    /// The tier this node's pinned program set gives. When the LSM programs are not
    /// attached, the reason is found again with [`probe`].
    pub fn tier(&self) -> Tier {
        if attached(&self.locked().layout) {
            return Tier::Lsm;
        }
        let reason = match probe() {
            Err(why) => why.to_string(),
            Ok(()) => "the LSM programs load here but the shim that pinned this program set \
                       did not attach them; remove its pin folder to reload"
                .to_string(),
        };
        Tier::Fallback { reason }
    }
}

/// A file pattern of a profile (policy/src/pattern.rs syntax: `*` within a segment, `**` as
/// a whole segment) and the access it grants, for `VIGIL_FILE_ALLOW`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRule {
    pub pattern: String,
    pub read: bool,
    pub write: bool,
}

/// How a [`FileRule`] is matched in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileKey {
    /// Bits of `vigil_ebpf_common::file_rule`.
    pub kind: u32,
    pub hash: u64,
    /// The kernel matches more than the pattern: a wildcard inside a segment (`tmp.*`) or
    /// a `**` before the end allows the whole folder above it.
    pub widened: bool,
}

impl FileRule {
    /// The kernel key: the exact path; a `*` segment as "an id-like name" (the profile's
    /// pids, fds, container ids); a trailing `**` as a folder rule; anything else widened to
    /// the folder above its first wildcard.
    pub fn key(&self) -> Result<FileKey> {
        let segments: Vec<&str> = self.pattern.split('/').filter(|s| !s.is_empty()).collect();
        if !self.pattern.starts_with('/') {
            return Err(BpfError::BadRule {
                rule: self.pattern.clone(),
                reason: "file patterns must be absolute",
            });
        }
        let Some(first) = segments.iter().position(|s| s.contains('*')) else {
            let hash = file_hash(self.pattern.as_bytes(), false);
            return Ok(FileKey {
                kind: file_rule::EXACT,
                hash,
                widened: false,
            });
        };
        let stars_only = segments[first..]
            .iter()
            .all(|s| *s == "*" || !s.contains('*'));
        let trailing_any = segments.last() == Some(&"**")
            && segments[..segments.len() - 1]
                .iter()
                .all(|s| *s == "*" || !s.contains('*'));
        let joined = |parts: &[&str]| format!("/{}", parts.join("/"));
        let stars = segments.contains(&"*");
        let ids = |kind| kind | if stars { file_rule::IDS_AS_STAR } else { 0 };
        if stars_only {
            let hash = file_hash(self.pattern.as_bytes(), true);
            return Ok(FileKey {
                kind: ids(file_rule::EXACT),
                hash,
                widened: false,
            });
        }
        if trailing_any {
            let folder = joined(&segments[..segments.len() - 1]);
            let hash = file_hash(folder.as_bytes(), stars);
            return Ok(FileKey {
                kind: ids(file_rule::PREFIX),
                hash,
                widened: false,
            });
        }
        let folder = joined(&segments[..first]);
        let hash = file_hash(folder.as_bytes(), false);
        Ok(FileKey {
            kind: file_rule::PREFIX,
            hash,
            widened: true,
        })
    }

    fn access_bits(&self) -> u32 {
        let mut bits = 0;
        if self.read {
            bits |= u32::from(access::READ);
        }
        if self.write {
            bits |= u32::from(access::WRITE);
        }
        bits
    }
}

/// What a registration may do under the LSM tier beyond the shared exec and network sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LsmPolicy {
    pub files: Vec<FileRule>,
    /// The profile allows mount(2) (then `sb_mount` does not refuse).
    pub mount: bool,
}

impl Registration {
    /// Fills the LSM tier's file allow set and rules of this container. Call after
    /// [`Node::register`] and before `runc start`: those hooks judge only processes that
    /// exec'd in the container, so nothing is judged before the entrypoint runs. Returns the
    /// patterns the kernel matches more widely than the profile (see [`FileKey::widened`]).
    pub fn set_lsm_policy(&self, policy: &LsmPolicy) -> Result<Vec<String>> {
        let generation = self.generation();
        self.node()
            .with_lock(|inner| fill(&inner.layout, generation, policy))
    }
}

fn fill(layout: &Layout, generation: u32, policy: &LsmPolicy) -> Result<Vec<String>> {
    let mut files: HashMap<MapData, FileAllowKey, u32> = open(layout, lsm_map::FILE_ALLOW)?;
    let mut widened = Vec::new();
    for rule in &policy.files {
        let key = rule.key()?;
        if key.widened {
            widened.push(rule.pattern.clone());
        }
        let map_key = FileAllowKey {
            generation,
            kind: key.kind,
            hash: key.hash,
        };
        let old = files.get(&map_key, 0).unwrap_or(0);
        files
            .insert(map_key, old | rule.access_bits(), 0)
            .map_err(|e| BpfError::map("insert into", lsm_map::FILE_ALLOW, e))?;
    }
    let mut rules: HashMap<MapData, u32, u32> = open(layout, lsm_map::RULES)?;
    let bits = if policy.mount { lsm_rule::MOUNT } else { 0 };
    rules
        .insert(generation, bits, 0)
        .map_err(|e| BpfError::map("insert into", lsm_map::RULES, e))?;
    Ok(widened)
}

/// Removes the LSM maps' entries of `generations` (unregister, reconcile).
pub(crate) fn drop_generations(layout: &Layout, generations: &HashSet<u32>) -> Result<()> {
    let mut files: HashMap<MapData, FileAllowKey, u32> = open(layout, lsm_map::FILE_ALLOW)?;
    let stale: Vec<FileAllowKey> = files
        .keys()
        .flatten()
        .filter(|k| generations.contains(&k.generation))
        .collect();
    for key in stale {
        let _ = files.remove(&key);
    }
    let mut rules: HashMap<MapData, u32, u32> = open(layout, lsm_map::RULES)?;
    for generation in generations {
        let _ = rules.remove(generation);
    }
    Ok(())
}

/// Registration numbers that still own LSM map entries.
pub(crate) fn generations(layout: &Layout) -> Result<HashSet<u32>> {
    let files: HashMap<MapData, FileAllowKey, u32> = open(layout, lsm_map::FILE_ALLOW)?;
    let rules: HashMap<MapData, u32, u32> = open(layout, lsm_map::RULES)?;
    let mut set: HashSet<u32> = files.keys().flatten().map(|k| k.generation).collect();
    set.extend(rules.keys().flatten());
    Ok(set)
}

/// The LSM tier's maps, pinned with the others.
pub(crate) const MAPS: [&str; 3] = [lsm_map::FILE_ALLOW, lsm_map::RULES, lsm_map::SCRATCH];

fn open<K: aya::Pod, V: aya::Pod>(layout: &Layout, name: &str) -> Result<HashMap<MapData, K, V>> {
    let data =
        MapData::from_pin(layout.map(name)).map_err(|e| BpfError::map("open pinned", name, e))?;
    HashMap::try_from(aya::maps::Map::HashMap(data))
        .map_err(|e| BpfError::map("open pinned", name, e))
}

/// Hooks of an [`LsmInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsmHook {
    /// ptrace or /proc access to a task outside the container.
    Ptrace,
    /// mount(2) by a process of the container.
    Mount,
    /// A signal to a task outside the container.
    Kill,
}

/// A decoded `EventKind::Lsm` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsmInfo {
    pub process: Process,
    pub hook: LsmHook,
    /// `Blocked` in enforce, `Observed` in monitor.
    pub verdict: Verdict,
    /// The target's pid (ptrace, kill); 0 for mount.
    pub target_pid: u32,
    /// ptrace mode bits, signal number, or the mount flags' low 32 bits.
    pub detail: u32,
    /// The mount point, or the target's comm.
    pub text: String,
}

/// Decodes an LSM-only record; `None` for an unknown hook.
pub(crate) fn lsm_info(ev: &LsmEvent, process: Process) -> Option<LsmInfo> {
    let hook = match ev.hook {
        lsm_hook::PTRACE => LsmHook::Ptrace,
        lsm_hook::MOUNT => LsmHook::Mount,
        lsm_hook::KILL => LsmHook::Kill,
        _ => return None,
    };
    let end = ev
        .text
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(ev.text.len());
    Some(LsmInfo {
        process,
        hook,
        verdict: if ev.verdict == verdict::BLOCKED {
            Verdict::Blocked
        } else {
            Verdict::Observed
        },
        target_pid: ev.target_tgid,
        detail: ev.detail,
        text: String::from_utf8_lossy(&ev.text[..end]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> FileKey {
        FileRule {
            pattern: pattern.into(),
            read: true,
            write: false,
        }
        .key()
        .expect(pattern)
    }

    #[test]
    fn exact_paths_hash_like_the_kernel() {
        let key = rule("/etc/hostname");
        assert_eq!(key.kind, file_rule::EXACT);
        assert_eq!(key.hash, vigil_ebpf_common::path_hash(b"/etc/hostname"));
        assert!(!key.widened);
    }

    #[test]
    fn star_segments_match_ids() {
        let key = rule("/proc/*/stat");
        assert_eq!(key.kind, file_rule::EXACT | file_rule::IDS_AS_STAR);
        assert_eq!(key.hash, file_hash(b"/proc/4242/stat", true));
        assert!(!key.widened);
    }

    #[test]
    fn trailing_double_star_is_a_folder() {
        let key = rule("/usr/lib/**");
        assert_eq!(key.kind, file_rule::PREFIX);
        assert_eq!(key.hash, file_hash(b"/usr/lib", false));
        let key = rule("/proc/*/fd/**");
        assert_eq!(key.kind, file_rule::PREFIX | file_rule::IDS_AS_STAR);
        assert_eq!(key.hash, file_hash(b"/proc/17/fd", true));
    }

    #[test]
    fn partial_wildcards_widen_to_the_folder_above() {
        let key = rule("/tmp/tmp.*/data");
        assert_eq!((key.kind, key.widened), (file_rule::PREFIX, true));
        assert_eq!(key.hash, file_hash(b"/tmp", false));
        let key = rule("/a/**/b");
        assert_eq!((key.kind, key.widened), (file_rule::PREFIX, true));
        assert_eq!(key.hash, file_hash(b"/a", false));
    }

    #[test]
    fn relative_patterns_are_refused() {
        let err = FileRule {
            pattern: "etc/x".into(),
            read: true,
            write: false,
        }
        .key();
        assert!(matches!(err, Err(BpfError::BadRule { .. })));
    }

    #[test]
    fn lsm_records_decode() {
        let mut ev = LsmEvent {
            hook: lsm_hook::MOUNT,
            verdict: verdict::BLOCKED,
            ..LsmEvent::default()
        };
        ev.text[..4].copy_from_slice(b"/mnt");
        let process = Process {
            pid: 1,
            tid: 1,
            ppid: 0,
            uid: 0,
            gid: 0,
            exec_session: None,
            comm: "sh".into(),
            boot_ns: 0,
        };
        let info = lsm_info(&ev, process).expect("known hook");
        assert_eq!(
            (info.hook, info.verdict, info.text.as_str()),
            (LsmHook::Mount, Verdict::Blocked, "/mnt")
        );
        assert_eq!(lsm_info(&LsmEvent { hook: 99, ..ev }, info.process), None);
    }
}
