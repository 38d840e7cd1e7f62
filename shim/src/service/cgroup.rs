//! Where a container's cgroups are, and its resource usage for `Stats`.
//!
//! Hosts differ: cgroup v1 controllers (memory on v1 here, with cgroup2 beside them at
//! /sys/fs/cgroup/unified) or a pure cgroup2 tree. Paths come from the process'
//! /proc/PID/cgroup and the mount table, never from a fixed folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;

/// A process' cgroup folders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    /// v1 controller name -> folder.
    pub v1: HashMap<String, PathBuf>,
    /// Folder in the cgroup2 tree, if mounted.
    pub v2: Option<PathBuf>,
}

impl CgroupPaths {
    /// Finds the cgroups of `pid`; `None` if its /proc entry is gone.
    pub fn of_pid(pid: u32) -> Option<CgroupPaths> {
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Some(resolve(&own, &mounts))
    }

    /// The v1 folder of `controller`.
    pub fn v1(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(PathBuf::as_path)
    }

    /// Whether memory is a v1 controller here (hybrid or legacy host).
    pub fn memory_on_v1(&self) -> bool {
        self.v1.contains_key("memory")
    }
}

struct CgroupMount {
    root: String,
    point: PathBuf,
    controllers: Vec<String>,
    v2: bool,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo.lines().filter_map(parse_cgroup_mount).collect()
}

fn parse_cgroup_mount(line: &str) -> Option<CgroupMount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    let fstype = *fields.get(sep + 1)?;
    let supers = fields.get(sep + 3).copied().unwrap_or("");
    let v2 = match fstype {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    Some(CgroupMount {
        root: fields.get(3)?.to_string(),
        point: PathBuf::from(fields.get(4)?),
        controllers: supers
            .split(',')
            .map(|s| s.trim_start_matches("name=").to_string())
            .collect(),
        v2,
    })
}

fn resolve(proc_cgroup: &str, mountinfo: &str) -> CgroupPaths {
    let mounts = cgroup_mounts(mountinfo);
    let mut paths = CgroupPaths::default();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            paths.v2 = mounts.iter().find(|m| m.v2).map(|m| join(m, path));
            continue;
        }
        for c in ctrls.split(',') {
            let c = c.trim_start_matches("name=");
            let found = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|x| x == c));
            if let Some(m) = found {
                paths.v1.insert(c.to_string(), join(m, path));
            }
        }
    }
    paths
}

fn join(m: &CgroupMount, path: &str) -> PathBuf {
    let rel = path.strip_prefix(m.root.as_str()).unwrap_or(path);
    m.point.join(rel.trim_start_matches('/'))
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    text.trim().parse().unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
pub fn read_flat_keyed(path: &Path) -> Option<HashMap<String, u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let map = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    Some(map)
}

/// The container's metrics as containerd's `Stats` expects them (v1 or v2 message).
pub fn metrics(paths: &CgroupPaths) -> Option<Any> {
    let (type_url, value) = if paths.memory_on_v1() || paths.v2.is_none() {
        (
            "io.containerd.cgroups.v1.Metrics",
            v1_metrics(paths).write_to_bytes().ok()?,
        )
    } else {
        (
            "io.containerd.cgroups.v2.Metrics",
            v2_metrics(paths.v2.as_deref()?).write_to_bytes().ok()?,
        )
    };
    Some(Any {
        type_url: type_url.to_string(),
        value,
        ..Default::default()
    })
}

fn v1_metrics(paths: &CgroupPaths) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(dir) = paths.v1("pids") {
        let limit = std::fs::read_to_string(dir.join("pids.max")).unwrap_or_default();
        m.pids = Some(v1::PidsStat {
            current: read_u64(dir, "pids.current"),
            limit: limit.trim().parse().unwrap_or(0),
            ..Default::default()
        })
        .into();
    }
    if let Some(dir) = paths.v1("cpuacct") {
        m.cpu = Some(v1_cpu(dir, paths.v1("cpu"))).into();
    }
    if let Some(dir) = paths.v1("memory") {
        m.memory = Some(v1_memory(dir)).into();
        if let Some(oc) = read_flat_keyed(&dir.join("memory.oom_control")) {
            let get = |k: &str| oc.get(k).copied().unwrap_or(0);
            m.memory_oom_control = Some(v1::MemoryOomControl {
                oom_kill_disable: get("oom_kill_disable"),
                under_oom: get("under_oom"),
                oom_kill: get("oom_kill"),
                ..Default::default()
            })
            .into();
        }
    }
    m
}

fn v1_cpu(cpuacct: &Path, cpu: Option<&Path>) -> v1::CPUStat {
    let per_cpu = std::fs::read_to_string(cpuacct.join("cpuacct.usage_percpu")).unwrap_or_default();
    let usage = v1::CPUUsage {
        total: read_u64(cpuacct, "cpuacct.usage"),
        user: read_u64(cpuacct, "cpuacct.usage_user"),
        kernel: read_u64(cpuacct, "cpuacct.usage_sys"),
        per_cpu: per_cpu
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect(),
        ..Default::default()
    };
    let stat = cpu
        .and_then(|d| read_flat_keyed(&d.join("cpu.stat")))
        .unwrap_or_default();
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let throttling = v1::Throttle {
        periods: get("nr_periods"),
        throttled_periods: get("nr_throttled"),
        throttled_time: get("throttled_time"),
        ..Default::default()
    };
    v1::CPUStat {
        usage: Some(usage).into(),
        throttling: Some(throttling).into(),
        ..Default::default()
    }
}

fn v1_entry(dir: &Path, prefix: &str) -> v1::MemoryEntry {
    v1::MemoryEntry {
        limit: read_u64(dir, &format!("{prefix}.limit_in_bytes")),
        usage: read_u64(dir, &format!("{prefix}.usage_in_bytes")),
        max: read_u64(dir, &format!("{prefix}.max_usage_in_bytes")),
        failcnt: read_u64(dir, &format!("{prefix}.failcnt")),
        ..Default::default()
    }
}

fn v1_memory(dir: &Path) -> v1::MemoryStat {
    let s = read_flat_keyed(&dir.join("memory.stat")).unwrap_or_default();
    let get = |k: &str| s.get(k).copied().unwrap_or(0);
    v1::MemoryStat {
        cache: get("cache"),
        rss: get("rss"),
        rss_huge: get("rss_huge"),
        mapped_file: get("mapped_file"),
        dirty: get("dirty"),
        writeback: get("writeback"),
        pg_pg_in: get("pgpgin"),
        pg_pg_out: get("pgpgout"),
        pg_fault: get("pgfault"),
        pg_maj_fault: get("pgmajfault"),
        inactive_anon: get("inactive_anon"),
        active_anon: get("active_anon"),
        inactive_file: get("inactive_file"),
        active_file: get("active_file"),
        unevictable: get("unevictable"),
        hierarchical_memory_limit: get("hierarchical_memory_limit"),
        hierarchical_swap_limit: get("hierarchical_memsw_limit"),
        total_cache: get("total_cache"),
        total_rss: get("total_rss"),
        total_mapped_file: get("total_mapped_file"),
        total_inactive_anon: get("total_inactive_anon"),
        total_active_anon: get("total_active_anon"),
        total_inactive_file: get("total_inactive_file"),
        total_active_file: get("total_active_file"),
        total_unevictable: get("total_unevictable"),
        usage: Some(v1_entry(dir, "memory")).into(),
        swap: Some(v1_entry(dir, "memory.memsw")).into(),
        kernel: Some(v1_entry(dir, "memory.kmem")).into(),
        kernel_tcp: Some(v1_entry(dir, "memory.kmem.tcp")).into(),
        ..Default::default()
    }
}

fn max_or_zero(dir: &Path, file: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    text.trim().parse().unwrap_or(0)
}

fn v2_metrics(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = Some(v2::PidsStat {
        current: read_u64(dir, "pids.current"),
        limit: max_or_zero(dir, "pids.max"),
        ..Default::default()
    })
    .into();
    let c = read_flat_keyed(&dir.join("cpu.stat")).unwrap_or_default();
    let cget = |k: &str| c.get(k).copied().unwrap_or(0);
    m.cpu = Some(v2::CPUStat {
        usage_usec: cget("usage_usec"),
        user_usec: cget("user_usec"),
        system_usec: cget("system_usec"),
        nr_periods: cget("nr_periods"),
        nr_throttled: cget("nr_throttled"),
        throttled_usec: cget("throttled_usec"),
        ..Default::default()
    })
    .into();
    let s = read_flat_keyed(&dir.join("memory.stat")).unwrap_or_default();
    let sget = |k: &str| s.get(k).copied().unwrap_or(0);
    m.memory = Some(v2::MemoryStat {
        anon: sget("anon"),
        file: sget("file"),
        kernel_stack: sget("kernel_stack"),
        slab: sget("slab"),
        sock: sget("sock"),
        shmem: sget("shmem"),
        file_mapped: sget("file_mapped"),
        pgfault: sget("pgfault"),
        pgmajfault: sget("pgmajfault"),
        usage: read_u64(dir, "memory.current"),
        usage_limit: max_or_zero(dir, "memory.max"),
        swap_usage: read_u64(dir, "memory.swap.current"),
        swap_limit: max_or_zero(dir, "memory.swap.max"),
        ..Default::default()
    })
    .into();
    let e = read_flat_keyed(&dir.join("memory.events")).unwrap_or_default();
    let eget = |k: &str| e.get(k).copied().unwrap_or(0);
    m.memory_events = Some(v2::MemoryEvents {
        low: eget("low"),
        high: eget("high"),
        max: eget("max"),
        oom: eget("oom"),
        oom_kill: eget("oom_kill"),
        ..Default::default()
    })
    .into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn hybrid_host_puts_memory_on_v1_and_finds_the_unified_tree() {
        let own =
            "4:memory:/default/c1\n2:cpuacct:/default/c1\n1:cpu:/default/c1\n0::/default/c1\n";
        let p = resolve(own, HYBRID_MOUNTS);
        assert!(p.memory_on_v1());
        assert_eq!(
            p.v1("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/default/c1"))
        );
        assert_eq!(
            p.v1("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu/default/c1"))
        );
        assert_eq!(
            p.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/default/c1"))
        );
    }

    #[test]
    fn pure_v2_host() {
        let mounts = "25 20 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let p = resolve("0::/system.slice/x.scope\n", mounts);
        assert!(!p.memory_on_v1());
        assert_eq!(
            p.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/system.slice/x.scope"))
        );
    }

    #[test]
    fn flat_keyed_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.oom_control");
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(read_flat_keyed(&f).unwrap()["oom_kill"], 2);
    }
}
