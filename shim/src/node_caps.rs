//! What this node can do, probed for real: shared by the shim at start-up and `vigil doctor`.
//!
//! [`probe`] reads /proc and /sys, loads minimal BPF programs (nothing is attached) and asks
//! the configured runc for its version. [`decide_tier`] and [`NodeCaps::support`] are pure:
//! they turn the checks into the enforcement tier and into what each mode lacks, which the
//! fail policy ([`crate::mode::fail`]) consumes. [`probe_cached`] probes once per process.

mod bpf_load;
mod probe;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::audit::Mechanism;
use crate::config::NodeConfig;
use crate::mode::fail::{Missing, NodeSupport};

/// The file mechanism of the fallback tier (no LSM-BPF). Chosen by the guard: fanotify
/// permission events on the container's own rootfs superblock (`guard::fanotify`).
pub const FALLBACK_FILE_MECHANISM: Mechanism = Mechanism::Fanotify;

/// What the probe needs from the node config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The OCI runtime binary (path or name on PATH).
    pub runc_binary: PathBuf,
    /// Where node-wide eBPF objects are pinned.
    pub bpf_pin_root: PathBuf,
}

impl From<&NodeConfig> for ProbeConfig {
    fn from(config: &NodeConfig) -> Self {
        ProbeConfig {
            runc_binary: config.runc_binary.clone(),
            bpf_pin_root: config.bpf_pin_root.clone(),
        }
    }
}

/// Each capability probed, in the order `vigil doctor` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    /// Kernel BTF at /sys/kernel/btf/vmlinux.
    Btf,
    /// bpffs under `bpf_pin_root`.
    Bpffs,
    /// Tracepoint and socket-filter programs load.
    BpfPrograms,
    /// A tracepoint program may call `bpf_send_signal` (exec kill).
    ExecKill,
    /// cgroup sock_addr programs load.
    CgroupSockAddr,
    /// `bpf` is in the active LSM list.
    LsmActive,
    /// An `lsm/` program loads.
    LsmBpf,
    /// Seccomp filter mode.
    SeccompFilter,
    /// `SECCOMP_RET_USER_NOTIF`.
    SeccompUserNotif,
    /// fanotify permission events.
    Fanotify,
    /// A cgroup2 mount.
    Cgroup2,
    /// The configured runc answers `--version`.
    Runc,
    /// containerd on PATH (informational).
    Containerd,
}

impl CheckId {
    /// Every check, in print order.
    pub const ALL: [CheckId; 13] = [
        CheckId::Btf,
        CheckId::Bpffs,
        CheckId::BpfPrograms,
        CheckId::ExecKill,
        CheckId::CgroupSockAddr,
        CheckId::LsmActive,
        CheckId::LsmBpf,
        CheckId::SeccompFilter,
        CheckId::SeccompUserNotif,
        CheckId::Fanotify,
        CheckId::Cgroup2,
        CheckId::Runc,
        CheckId::Containerd,
    ];

    /// What a person reads.
    pub fn label(self) -> &'static str {
        match self {
            CheckId::Btf => "kernel BTF",
            CheckId::Bpffs => "bpffs at the pin root",
            CheckId::BpfPrograms => "BPF programs",
            CheckId::ExecKill => "exec kill (bpf_send_signal)",
            CheckId::CgroupSockAddr => "cgroup sock_addr hooks",
            CheckId::LsmActive => "bpf in active LSMs",
            CheckId::LsmBpf => "LSM-BPF programs",
            CheckId::SeccompFilter => "seccomp filters",
            CheckId::SeccompUserNotif => "seccomp user notification",
            CheckId::Fanotify => "fanotify permission events",
            CheckId::Cgroup2 => "cgroup v2",
            CheckId::Runc => "runc",
            CheckId::Containerd => "containerd",
        }
    }

    /// What to do when it is missing.
    pub fn fix(self) -> &'static str {
        match self {
            CheckId::Btf => "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            CheckId::Bpffs => "mount bpffs (mount -t bpf bpf /sys/fs/bpf) or set bpf_pin_root",
            CheckId::BpfPrograms | CheckId::ExecKill | CheckId::CgroupSockAddr => {
                "run the shim as root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) on a kernel with \
                 CONFIG_BPF_SYSCALL=y"
            }
            CheckId::LsmActive => {
                "boot with bpf in the lsm= kernel parameter (the list is read from \
                 /sys/kernel/security/lsm: mount securityfs there if it is absent)"
            }
            CheckId::LsmBpf => {
                "boot a kernel with CONFIG_BPF_LSM=y and bpf in lsm=; until then the fallback \
                 tier applies"
            }
            CheckId::SeccompFilter | CheckId::SeccompUserNotif => {
                "use a kernel with CONFIG_SECCOMP_FILTER=y (5.0 or newer for user notification)"
            }
            CheckId::Fanotify => "use a kernel with CONFIG_FANOTIFY_ACCESS_PERMISSIONS=y",
            CheckId::Cgroup2 => "mount cgroup2 (unified or hybrid hierarchy)",
            CheckId::Runc => "install runc or set runc_binary in the node config",
            CheckId::Containerd => "install containerd (only needed to run containers)",
        }
    }
}

/// One probed capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Which.
    pub id: CheckId,
    /// Whether it is there.
    pub ok: bool,
    /// The evidence: what was read or loaded, or the error.
    pub detail: String,
}

impl Check {
    fn missing(&self) -> Missing {
        Missing::new(
            format!("{}: {}", self.id.label(), self.detail),
            self.id.fix(),
        )
    }
}

/// How enforcement works on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// LSM-BPF hooks deny exec and file access.
    Lsm,
    /// No LSM-BPF: exec killed at `sched_process_exec`, files by the fallback mechanism.
    Fallback,
    /// The node cannot enforce.
    None,
}

/// The enforcement tier and the mechanism for each kind of behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierPlan {
    /// The tier.
    pub tier: Tier,
    /// Why this tier, in one sentence.
    pub reason: String,
    /// What denies syscalls.
    pub syscalls: Option<Mechanism>,
    /// What denies exec.
    pub exec: Option<Mechanism>,
    /// What denies file access.
    pub files: Option<Mechanism>,
    /// What denies network operations.
    pub network: Option<Mechanism>,
}

/// Everything probed on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCaps {
    /// `uname -r`.
    pub kernel_release: String,
    /// Where cgroup2 is mounted.
    pub cgroup2_mount: Option<PathBuf>,
    /// `runc --version`.
    pub runc_version: Option<String>,
    /// `containerd --version`, if on PATH.
    pub containerd_version: Option<String>,
    /// Every check, in [`CheckId::ALL`] order.
    pub checks: Vec<Check>,
    /// The enforcement tier.
    pub tier: TierPlan,
}

impl NodeCaps {
    /// Builds the capabilities from checks (probed or, in tests, made up).
    pub fn from_checks(kernel_release: String, checks: Vec<Check>) -> NodeCaps {
        let tier = decide_tier(&checks);
        NodeCaps {
            kernel_release,
            cgroup2_mount: None,
            runc_version: None,
            containerd_version: None,
            checks,
            tier,
        }
    }

    /// The check `id`; a check that was not made counts as missing.
    pub fn check(&self, id: CheckId) -> Check {
        self.checks
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .unwrap_or(Check {
                id,
                ok: false,
                detail: "not probed".into(),
            })
    }

    fn lacking(&self, ids: &[CheckId]) -> Vec<Missing> {
        ids.iter()
            .map(|id| self.check(*id))
            .filter(|c| !c.ok)
            .map(|c| c.missing())
            .collect()
    }

    /// What each mode lacks on this node, for the fail policy.
    pub fn support(&self) -> NodeSupport {
        use CheckId::*;
        let learn = self.lacking(&[BpfPrograms, Bpffs, Cgroup2]);
        let mut monitor = learn.clone();
        monitor.extend(self.lacking(&[SeccompFilter, SeccompUserNotif, CgroupSockAddr]));
        let mut enforce = monitor.clone();
        if self.tier.tier == Tier::None {
            let fix = "see `vigil doctor` for each missing piece";
            enforce.push(Missing::new(
                format!("an enforcement tier ({})", self.tier.reason),
                fix,
            ));
        }
        let result = |m: Vec<Missing>| if m.is_empty() { Ok(()) } else { Err(m) };
        NodeSupport {
            learn: result(learn),
            monitor: result(monitor),
            enforce: result(enforce),
        }
    }
}

/// Chooses the enforcement tier from the checks.
pub fn decide_tier(checks: &[Check]) -> TierPlan {
    let ok = |id: CheckId| checks.iter().any(|c| c.id == id && c.ok);
    let detail = |id: CheckId| {
        checks
            .iter()
            .find(|c| c.id == id)
            .map_or("not probed".to_owned(), |c| c.detail.clone())
    };
    let syscalls = ok(CheckId::SeccompFilter).then_some(Mechanism::Seccomp);
    let network = ok(CheckId::CgroupSockAddr).then_some(Mechanism::CgroupSock);

    let lsm = [CheckId::Btf, CheckId::LsmActive, CheckId::LsmBpf];
    let common = ok(CheckId::BpfPrograms) && network.is_some() && syscalls.is_some();
    if lsm.iter().all(|id| ok(*id)) && common {
        let reason = format!("LSM-BPF is available ({})", detail(CheckId::LsmBpf));
        let (exec, files) = (Some(Mechanism::Lsm), Some(Mechanism::Lsm));
        return TierPlan {
            tier: Tier::Lsm,
            reason,
            syscalls,
            exec,
            files,
            network,
        };
    }

    // The load attempt is the decisive evidence, so it comes first.
    let lsm_failures: Vec<String> = [CheckId::LsmBpf, CheckId::LsmActive, CheckId::Btf]
        .into_iter()
        .filter(|id| !ok(*id))
        .map(detail)
        .collect();
    let no_lsm = if lsm_failures.is_empty() {
        "the rest of the LSM tier is missing".to_owned()
    } else {
        lsm_failures.join("; ")
    };
    let needed = [
        CheckId::BpfPrograms,
        CheckId::ExecKill,
        CheckId::CgroupSockAddr,
        CheckId::SeccompFilter,
        CheckId::Fanotify,
    ];
    let lacking: Vec<&str> = needed
        .iter()
        .filter(|id| !ok(**id))
        .map(|id| id.label())
        .collect();
    if lacking.is_empty() {
        let reason = format!(
            "LSM-BPF unavailable ({no_lsm}); exec is killed at sched_process_exec, files are \
             guarded by {}, network by cgroup sock_addr hooks",
            FALLBACK_FILE_MECHANISM.as_str()
        );
        let (exec, files) = (Some(Mechanism::Signal), Some(FALLBACK_FILE_MECHANISM));
        return TierPlan {
            tier: Tier::Fallback,
            reason,
            syscalls,
            exec,
            files,
            network,
        };
    }
    let reason = format!(
        "LSM-BPF unavailable ({no_lsm}) and the fallback lacks {}",
        lacking.join(", ")
    );
    TierPlan {
        tier: Tier::None,
        reason,
        syscalls,
        exec: None,
        files: None,
        network,
    }
}

/// Probes the node now.
pub fn probe(config: &ProbeConfig) -> NodeCaps {
    let (seccomp_filter, seccomp_notify) = probe::seccomp();
    let (cgroup2, cgroup2_mount) = probe::cgroup2();
    let (runc, runc_version) = probe::runc(config);
    let (containerd, containerd_version) = probe::containerd();
    let checks = vec![
        probe::btf(),
        probe::bpffs(&config.bpf_pin_root),
        probe::bpf_programs(),
        probe::exec_kill(),
        probe::cgroup_sock_addr(),
        probe::lsm_active(),
        probe::lsm_bpf(),
        seccomp_filter,
        seccomp_notify,
        probe::fanotify(),
        cgroup2,
        runc,
        containerd,
    ];
    NodeCaps {
        cgroup2_mount,
        runc_version,
        containerd_version,
        ..NodeCaps::from_checks(probe::kernel_release(), checks)
    }
}

/// Probes once per process (per config), then answers from the cache.
pub fn probe_cached(config: &ProbeConfig) -> Arc<NodeCaps> {
    static CACHE: Mutex<Option<(ProbeConfig, Arc<NodeCaps>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((cached_for, caps)) = cache.as_ref() {
        if cached_for == config {
            return caps.clone();
        }
    }
    let caps = Arc::new(probe(config));
    *cache = Some((config.clone(), caps.clone()));
    caps
}

/// [`probe_cached`], also remembered in `file` for this boot: a shim process lives for one
/// pod, and probing loads a dozen BPF programs (about 0.1 s), so later shims of the same boot
/// read the answer instead. The file is keyed by the boot id, the kernel, the runc binary
/// (path, size, modification time), this build and the config; any difference probes again.
/// `vigil doctor` always probes.
pub fn probe_cached_on_disk(config: &ProbeConfig, file: &std::path::Path) -> Arc<NodeCaps> {
    let key = disk_key(config);
    let cached = std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice::<DiskCache>(&b).ok())
        .filter(|c| c.key == key);
    if let Some(cached) = cached {
        return Arc::new(cached.caps);
    }
    let caps = probe_cached(config);
    let entry = DiskCache {
        key,
        caps: (*caps).clone(),
    };
    if let Ok(bytes) = serde_json::to_vec(&entry) {
        let dir = file.parent().unwrap_or(std::path::Path::new("."));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| tempfile::NamedTempFile::new_in(dir))
            .and_then(|mut tmp| {
                std::io::Write::write_all(&mut tmp, &bytes)?;
                tmp.persist(file).map_err(|e| e.error)?;
                Ok(())
            });
        if let Err(e) = written {
            tracing::debug!(file = %file.display(), error = %e, "capability cache not written");
        }
    }
    caps
}

#[derive(Serialize, Deserialize)]
struct DiskCache {
    key: String,
    caps: NodeCaps,
}

fn disk_key(config: &ProbeConfig) -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let runc = which(&config.runc_binary)
        .and_then(|p| std::fs::metadata(&p).ok().map(|m| (p, m)))
        .map(|(p, m)| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{}:{mtime}", p.display(), m.len())
        })
        .unwrap_or_default();
    format!(
        "{}|{}|{runc}|{}|{}",
        boot.trim(),
        probe::kernel_release(),
        crate::bpf::object_version(),
        config.bpf_pin_root.display()
    )
}

fn which(binary: &std::path::Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return Some(binary.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests;
