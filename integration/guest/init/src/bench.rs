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
/// in a few seconds each. `getppid` meets no vigil program: its ratios between settings
/// show how much the (shared) host's load moved the others.
const OPS: [(&str, u64); 4] = [
    ("open", 20_000),
    ("exec", 300),
    ("connect", 10_000),
    ("getppid", 100_000),
];

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
pub type Stats = BTreeMap<&'static str, (u64, u64)>;

/// Rounds per setting; the median is reported. Settings alternate within a round, so a
/// burst of load on the (shared, emulating) host hits each of them alike.
const ROUNDS: usize = 3;

/// A setting to measure: its name and the cgroup its loops run in.
pub type Setting<'a> = (&'a str, &'a Cgroup);

/// Measures every operation in every setting, `ROUNDS` times alternating, and reports the
/// median per (operation, setting). With `node`, also reports each program's `bpf_stats`
/// accumulated per setting.
/// `after_setting` runs after each setting's loops (the caller drains ring buffers there:
/// every exec in a registered container is an event).
pub fn measure(
    settings: &[Setting<'_>],
    node: Option<&Node>,
    after_setting: &mut dyn FnMut(),
    report: &mut Reporter,
) -> Result<(), String> {
    for (_, cgroup) in settings {
        for (op, iterations) in OPS {
            // A tenth as warm-up, discarded: caches and TCG's translations start cold.
            one_run(cgroup, op, iterations / 10)?;
        }
    }
    let mut samples: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut stats: BTreeMap<&str, Stats> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for (setting, cgroup) in settings {
            let before = node.map(snapshot).unwrap_or_default();
            for (op, iterations) in OPS {
                samples
                    .entry((op, setting))
                    .or_default()
                    .push(one_run(cgroup, op, iterations)?);
            }
            let after = node.map(snapshot).unwrap_or_default();
            accumulate(stats.entry(setting).or_default(), &before, &after);
            after_setting();
        }
    }
    for (setting, _) in settings {
        for (op, iterations) in OPS {
            let ns_per_op = median(samples.remove(&(op, *setting)).unwrap_or_default());
            let (op, setting) = (op.into(), setting.to_string());
            report.line(Line::Bench {
                op,
                setting,
                ns_per_op,
                iterations,
            });
        }
    }
    for (setting, per_program) in stats {
        report_stats(setting, &per_program, report);
    }
    Ok(())
}

/// One `/init bench OP N` in `cgroup`: nanoseconds per operation.
fn one_run(cgroup: &Cgroup, op: &str, iterations: u64) -> Result<f64, String> {
    let ran = run(cgroup, "/init", &["bench", op, &iterations.to_string()]);
    ran.stdout
        .trim()
        .strip_prefix("ns_per_op=")
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("bench {op} in {}: {}", cgroup.name, ran.describe()))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn accumulate(total: &mut Stats, before: &Stats, after: &Stats) {
    for (name, (count, ns)) in after {
        let (count0, ns0) = before.get(name).copied().unwrap_or((0, 0));
        let entry = total.entry(name).or_default();
        entry.0 += count - count0;
        entry.1 += ns - ns0;
    }
}

/// Turns on run-time statistics for every BPF program (kernel.bpf_stats_enabled).
pub fn enable_stats() -> Result<(), String> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .map_err(|e| format!("enable bpf_stats: {e}"))
}

/// Current statistics of the pinned programs.
fn snapshot(node: &Node) -> Stats {
    let progs = node.pin_dir().join("progs");
    PROGRAMS
        .iter()
        .filter_map(|name| {
            let info = ProgramInfo::from_pin(progs.join(name)).ok()?;
            Some((*name, (info.run_count(), info.run_time().as_nanos() as u64)))
        })
        .collect()
}

/// Reports each program's accumulated statistics under `setting`; programs that never ran
/// are left out.
fn report_stats(setting: &str, stats: &Stats, report: &mut Reporter) {
    for (name, (run_cnt, run_time_ns)) in stats.iter().filter(|(_, (count, _))| *count > 0) {
        report.line(Line::BpfStats {
            program: format!("{setting}/{name}"),
            run_cnt: *run_cnt,
            run_time_ns: *run_time_ns,
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
