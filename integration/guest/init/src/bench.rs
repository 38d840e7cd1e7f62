//! The cost of open, exec and connect with no program loaded, with vigil's programs for an
//! unregistered cgroup, and for a registered (enforced) one, measured in one guest run;
//! plus `bpf_stats` (run time and count) of each program while the loops ran.

use std::collections::BTreeMap;
use std::path::Path;

use aya::programs::ProgramInfo;
use vigil_guest::report::Line;
use vigil_shim::bpf::Node;

use crate::cgroup::Cgroup;
use crate::console::Reporter;
use crate::world::run;

/// (operation, iterations): enough to dwarf timer noise under TCG, short enough to finish
/// in a few seconds each.
const OPS: [(&str, u64); 3] = [("open", 20_000), ("exec", 300), ("connect", 10_000)];

/// Programs whose statistics are reported (everything the cases can reach).
const PROGRAMS: [&str; 10] = [
    "vigil_lsm_bprm_check",
    "vigil_lsm_file_open",
    "vigil_lsm_socket_connect",
    "vigil_lsm_socket_bind",
    "vigil_lsm_ptrace",
    "vigil_lsm_task_kill",
    "vigil_sched_exec",
    "vigil_sched_fork",
    "vigil_sched_exit",
    "vigil_connect4",
];

/// Per program: (run count, run time ns).
type Stats = BTreeMap<&'static str, (u64, u64)>;

/// Runs the loops of every operation in `cgroup` and reports them under `setting`.
pub fn measure(setting: &str, cgroup: &Cgroup, report: &mut Reporter) -> Result<(), String> {
    for (op, iterations) in OPS {
        // A tenth as warm-up, discarded: TCG's translation cache and the page cache are
        // cold for the first setting otherwise.
        let _ = run(
            cgroup,
            "/init",
            &["bench", op, &(iterations / 10).to_string()],
        );
        let n = iterations.to_string();
        let ran = run(cgroup, "/init", &["bench", op, &n]);
        let ns = ran
            .stdout
            .trim()
            .strip_prefix("ns_per_op=")
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("bench {op} in {}: {}", cgroup.name, ran.describe()))?;
        report.line(Line::Bench {
            op: op.into(),
            setting: setting.into(),
            ns_per_op: ns,
            iterations,
        });
    }
    Ok(())
}

/// Turns on run-time statistics for every BPF program (kernel.bpf_stats_enabled).
pub fn enable_stats() -> Result<(), String> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .map_err(|e| format!("enable bpf_stats: {e}"))
}

/// Current statistics of the pinned programs.
pub fn snapshot(node: &Node) -> Stats {
    let progs = node.pin_dir().join("progs");
    PROGRAMS
        .iter()
        .filter_map(|name| {
            let info = ProgramInfo::from_pin(progs.join(name)).ok()?;
            Some((*name, (info.run_count(), info.run_time().as_nanos() as u64)))
        })
        .collect()
}

/// Reports what each program ran between two snapshots, under `setting`.
pub fn report_stats(setting: &str, before: &Stats, after: &Stats, report: &mut Reporter) {
    for (name, (count, ns)) in after {
        let (count0, ns0) = before.get(name).copied().unwrap_or((0, 0));
        report.line(Line::BpfStats {
            program: format!("{setting}/{name}"),
            run_cnt: count - count0,
            run_time_ns: ns - ns0,
        });
    }
}

/// True when the pin folder holds any LSM program or link (used to check all-or-none).
pub fn any_lsm_pin(node: &Node) -> bool {
    let dir = node.pin_dir();
    ["progs", "links"].iter().any(|sub| {
        std::fs::read_dir(Path::new(&dir).join(sub))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("vigil_lsm_"))
    })
}
