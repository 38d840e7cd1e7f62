//! `bench-guard`: what vigil's guard costs a real application and the node, side by side, in
//! one run on one private containerd (issue 4's benchmark).
//!
//! 1. **Application.** redis-server in `local/redis:latest`, loaded by redis-benchmark run
//!    *inside* the container (`ctr task exec`, 127.0.0.1: the container has only loopback),
//!    under containerd's stock runc shim and vigil `off`, `monitor` and `enforce`. The profile
//!    comes from `learn` runs under the same load earlier in the same run. Each round starts a
//!    fresh container per variant (so only one exists at a time: a monitor's tracepoints, if
//!    it had any, could not tax the others), the variants take turns with the order rotated
//!    every round, and the table shows medians over rounds and the median of the per-round
//!    ratios to runc (paired, so drift on this shared machine cancels).
//! 2. **The node.** ns per getppid(2) of this process, outside any container: with nothing
//!    running, with an idle enforced / monitored / learning redis container, and with a
//!    `sys_exit` tracepoint attached by bpftrace (`tracepoint:raw_syscalls:sys_exit` filtered
//!    to the enforced container's cgroup): the alternative to seccomp user notification for
//!    reporting denied syscalls. Phases interleaved per round, medians.
//! 3. **A notified syscall.** A static helper bind-mounted into `local/busybox:latest` times
//!    getppid (in the profile) and getsid (never learned, so the compiled filter sends it to
//!    the shim's seccomp listener: continued in monitor, denied in enforce) inside the
//!    container, under runc and vigil off / monitor / enforce.
//!
//! This machine is shared: other sessions build (CPU) and run learning containers, whose
//! `sys_enter`/`sys_exit` tracepoints tax every syscall of the node. Each sample waits (up to
//! a minute) until no such tracepoint of another vigil is pinned, a thread watches bpffs
//! during the sample, and the medians use the clean samples when at least three are. The
//! application table also shows each variant's best round (the least disturbed), and `vigil
//! off` against runc is the yardstick of the noise: off changes nothing in the data path.
//! Per-sample figures go to stderr.
//!
//! Prints figures; asserts nothing about them. Needs root, containerd, runc, gcc (helper),
//! redis-benchmark on the host (the image is built from it), optionally bpftrace
//! (scripts/setup.sh installs all). The vigil shim is copied from `VIGIL_SHIM_DIR`, else from
//! target/release, into a private folder first, so a rebuild during the run changes nothing.
//!
//! `bench-guard [--rounds N] [--requests N] [--clients N] [--calls N] [--notified N]
//! [--no-bpftrace] [--markdown]`

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vigil_integration::images::compile;
use vigil_integration::{paths, prereq, Containerd, Image, Options, Run, Runtime};

/// The redis port inside the containers (each has its own network namespace).
const PORT: &str = "6379";

/// One configuration under test.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Variant {
    label: &'static str,
    runtime: Runtime,
    /// `vigil.dev/mode` annotation, if any.
    mode: Option<&'static str>,
}

const RUNC: Variant = Variant {
    label: "runc shim (Go)",
    runtime: Runtime::Runc,
    mode: None,
};
const OFF: Variant = Variant {
    label: "vigil off",
    runtime: Runtime::Vigil,
    mode: Some("off"),
};
const MONITOR: Variant = Variant {
    label: "vigil monitor",
    runtime: Runtime::Vigil,
    mode: Some("monitor"),
};
const ENFORCE: Variant = Variant {
    label: "vigil enforce",
    runtime: Runtime::Vigil,
    mode: Some("enforce"),
};
const LEARN: Variant = Variant {
    label: "vigil learn",
    runtime: Runtime::Vigil,
    mode: Some("learn"),
};

/// The compared variants, reference first.
const VARIANTS: [Variant; 4] = [RUNC, OFF, MONITOR, ENFORCE];

struct Args {
    rounds: usize,
    requests: u32,
    clients: u32,
    calls: u64,
    notified: u64,
    bpftrace: bool,
    markdown: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        rounds: 9,
        requests: 100_000,
        clients: 50,
        calls: 2_000_000,
        notified: 20_000,
        bpftrace: true,
        markdown: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--requests" => args.requests = value()?.parse().context("--requests")?,
            "--clients" => args.clients = value()?.parse().context("--clients")?,
            "--calls" => args.calls = value()?.parse().context("--calls")?,
            "--notified" => args.notified = value()?.parse().context("--notified")?,
            "--no-bpftrace" => args.bpftrace = false,
            "--markdown" => args.markdown = true,
            "-h" | "--help" => {
                println!(
                    "usage: bench-guard [--rounds N] [--requests N] [--clients N] [--calls N] \
                     [--notified N] [--no-bpftrace] [--markdown]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    ensure!(
        args.rounds >= 1 && args.requests >= 1 && args.clients >= 1,
        "counts must be at least 1"
    );
    ensure!(
        args.calls >= 1000 && args.notified >= 100,
        "--calls must be at least 1000 and --notified at least 100"
    );
    Ok(args)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-guard: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    prereq::containers().map_err(anyhow::Error::msg)?;
    for program in ["redis-benchmark", "redis-server", "gcc"] {
        prereq::program(program).map_err(anyhow::Error::msg)?;
    }
    let shim_src = shim_source()?;
    let shim_copy = private_shim(&shim_src)?;
    std::env::set_var("VIGIL_SHIM_DIR", shim_copy.path());
    let bpftrace = if args.bpftrace {
        bpftrace_ready()
    } else {
        Err("--no-bpftrace".to_string())
    };
    let helper = Helper::build()?;

    let c = Containerd::start(&Options {
        images: vec![Image::Redis, Image::Busybox],
        ..Options::default()
    })?;
    let watch = Watch::start(c.bpf_pin_root());
    let mut b = Bench {
        c: &c,
        args: &args,
        helper: &helper,
        watch: &watch,
        serial: 0,
    };
    println!("bench-guard: private containerd in {}", c.dir().display());
    println!(
        "vigil shim: {} (copied from {})",
        shim_copy.path().join(paths::SHIM_BINARY).display(),
        shim_src.display()
    );
    let info = machine_info();
    let load_before = loadavg();

    // Learn: the profiles the monitor and enforce rounds compare with, under the same load.
    let mut learned = Vec::new();
    for i in 0..2 {
        eprintln!("learn: redis run {}/2", i + 1);
        let before = profiles_stamp(&c);
        learned.push(b.redis_round(LEARN)?);
        wait_profile_change(&c, &before)?;
    }
    for i in 0..2 {
        eprintln!("learn: helper run {}/2", i + 1);
        let before = profiles_stamp(&c);
        b.sysloop(LEARN, args.calls / 10, 0)?;
        wait_profile_change(&c, &before)?;
    }

    let app = b.application_rounds()?;
    let node = b.node_rounds(bpftrace.is_ok())?;
    let notify = b.notify_rounds()?;
    let load_after = loadavg();

    let report = Report {
        args: &args,
        info,
        load: format!("load average before {load_before}, after {load_after}"),
        learned,
        app,
        node,
        notify,
        bpftrace: bpftrace.err(),
    };
    report.print();
    if args.markdown {
        report.markdown();
    }
    let problems = c.shutdown();
    for p in &problems {
        eprintln!("bench-guard: cleanup: {p}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Set-up

/// Where the shim is copied from: `VIGIL_SHIM_DIR`, else target/release.
fn shim_source() -> Result<PathBuf> {
    let dir = match std::env::var_os("VIGIL_SHIM_DIR") {
        Some(d) => PathBuf::from(d),
        None => paths::target_dir().join("release"),
    };
    ensure!(
        dir.join(paths::SHIM_BINARY).is_file(),
        "{} not built (cargo build --release -p vigil-shim) or set VIGIL_SHIM_DIR",
        dir.join(paths::SHIM_BINARY).display()
    );
    Ok(dir)
}

/// A private copy of the shim (and the `vigil` command beside it, if built).
fn private_shim(src: &Path) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("vigil-bench-guard-shim-")
        .tempdir_in("/tmp")?;
    for name in [paths::SHIM_BINARY, "vigil"] {
        let from = src.join(name);
        if from.is_file() {
            fs::copy(&from, dir.path().join(name))
                .with_context(|| format!("copy {}", from.display()))?;
        }
    }
    Ok(dir)
}

fn machine_info() -> String {
    vigil_integration::cmd::machine_line(&["redis-benchmark"])
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Whether bpftrace can attach to `raw_syscalls:sys_exit` (mounting tracefs if it is not).
fn bpftrace_ready() -> Result<(), String> {
    prereq::program("bpftrace")?;
    let events = |root: &str| {
        Path::new(root)
            .join("events/raw_syscalls/sys_exit")
            .is_dir()
    };
    if events("/sys/kernel/tracing") || events("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    let out = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .output()
        .map_err(|e| format!("mount tracefs: {e}"))?;
    if !out.status.success() || !events("/sys/kernel/tracing") {
        return Err(format!(
            "tracefs is not mounted and mounting it failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    eprintln!("bench-guard: mounted tracefs at /sys/kernel/tracing (bpftrace needs it)");
    Ok(())
}

/// The profile store's files with size and mtime, to see a flush land.
fn profiles_stamp(c: &Containerd) -> Vec<(PathBuf, u64, i64, i64)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, i64, i64)>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => walk(&path, out),
                Ok(m) => out.push((path, m.len(), m.mtime(), m.mtime_nsec())),
                Err(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&c.vigil_state_dir().join("profiles"), &mut out);
    out.sort();
    out
}

fn wait_profile_change(c: &Containerd, before: &[(PathBuf, u64, i64, i64)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while profiles_stamp(c) == before {
        ensure!(
            Instant::now() < deadline,
            "the learn run left no profile update within 60 s; containerd log:\n{}",
            c.log_tail(15)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the atomic rename and the index settle.
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// The syscall-timing helper: a static program bind-mounted at /bench/sysloop.
struct Helper {
    dir: tempfile::TempDir,
}

/// `sysloop ALLOWED NOTIFIED`: ALLOWED getppid calls, then NOTIFIED getsid calls, each timed;
/// prints `getppid NS getsid NS rc RC errno E` (the last getsid's result). The learn runs pass
/// NOTIFIED = 0, so getsid never enters the profile and every other call is the same.
const SYSLOOP_C: &str = r#"#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static double timed(long nr, long calls, long *rc, int *err) {
  double start = now_ns();
  for (long i = 0; i < calls; i++) {
    errno = 0;
    *rc = syscall(nr, 0);
    *err = errno;
  }
  return calls > 0 ? (now_ns() - start) / (double)calls : 0.0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: sysloop ALLOWED_CALLS NOTIFIED_CALLS\n");
    return 2;
  }
  long rc = 0;
  int err = 0;
  double allowed = timed(SYS_getppid, atol(argv[1]), &rc, &err);
  rc = 0;
  err = 0;
  double notified = timed(SYS_getsid, atol(argv[2]), &rc, &err);
  printf("getppid %.1f getsid %.1f rc %ld errno %d\n", allowed, notified, rc, err);
  return 0;
}
"#;

impl Helper {
    fn build() -> Result<Helper> {
        let src_dir = paths::cache_dir().join("bench-guard");
        fs::create_dir_all(&src_dir)?;
        let src = src_dir.join("sysloop.c");
        if fs::read_to_string(&src).ok().as_deref() != Some(SYSLOOP_C) {
            fs::write(&src, SYSLOOP_C)?;
        }
        let binary = compile::static_binary(&src)?;
        let dir = tempfile::Builder::new()
            .prefix("vigil-bench-guard-helper-")
            .tempdir_in("/tmp")?;
        fs::copy(&binary, dir.path().join("sysloop"))?;
        Ok(Helper { dir })
    }

    fn mount_flag(&self) -> String {
        format!(
            "type=bind,src={},dst=/bench,options=rbind:ro",
            self.dir.path().display()
        )
    }
}

// ---------------------------------------------------------------------------------------
// Measurements

struct Bench<'a> {
    c: &'a Containerd,
    args: &'a Args,
    helper: &'a Helper,
    watch: &'a Watch,
    serial: usize,
}

/// One redis-benchmark result.
#[derive(Clone, Copy, Default)]
struct Redis {
    set_rps: f64,
    get_rps: f64,
    set_p99: f64,
    get_p99: f64,
}

/// One sysloop result, ns per call.
#[derive(Clone, Copy)]
struct Sysloop {
    allowed: f64,
    notified: f64,
    rc: i64,
    errno: i32,
}

/// Application rounds: per variant, one result per round and the audit events they caused.
struct AppResults {
    samples: Vec<Vec<Redis>>,
    audit: Vec<usize>,
    /// Per variant and round: whether no foreign syscall tracepoint was seen during it.
    clean: Vec<Vec<bool>>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NodePhase {
    Nothing,
    Enforce,
    Monitor,
    Learn,
    SysExit,
}

impl NodePhase {
    fn label(self) -> &'static str {
        match self {
            NodePhase::Nothing => "no container running",
            NodePhase::Enforce => "an enforced redis container running (idle)",
            NodePhase::Monitor => "a monitored redis container running (idle)",
            NodePhase::Learn => "a learning redis container running (idle)",
            NodePhase::SysExit => "enforced container + bpftrace sys_exit, cgroup filter",
        }
    }
}

/// Node rounds: per phase, one value per round.
struct NodeResults {
    samples: BTreeMap<NodePhase, Vec<f64>>,
    /// Per phase and round: whether no foreign syscall tracepoint was seen during it.
    clean: BTreeMap<NodePhase, Vec<bool>>,
}

/// Notify rounds: per variant, one result per round, and the audit events they caused.
struct NotifyResults {
    samples: Vec<Vec<Sysloop>>,
    audit: Vec<usize>,
    /// Per variant and round: whether no foreign syscall tracepoint was seen during it.
    clean: Vec<Vec<bool>>,
}

impl Bench<'_> {
    fn id(&mut self, what: &str, v: Variant) -> String {
        self.serial += 1;
        format!(
            "bg-{what}-{}-{}-{}",
            v.runtime.label(),
            v.mode.unwrap_or("default"),
            self.serial
        )
    }

    fn with_mode(run: Run, v: Variant) -> Run {
        match v.mode {
            Some(mode) => run.flags(&["--annotation", &format!("vigil.dev/mode={mode}")]),
            None => run,
        }
    }

    /// Starts an idle redis-server container in `v` and waits until it listens.
    fn start_redis(&mut self, v: Variant) -> Result<(String, i32)> {
        let id = self.id("redis", v);
        let run = Self::with_mode(
            Run::new(v.runtime, Image::Redis, &id)
                .detach()
                .flags(&["--null-io"]),
            v,
        )
        .cmd(&[
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            PORT,
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        self.c
            .run(&run, Duration::from_secs(60))?
            .ok()
            .with_context(|| format!("{}: start redis ({id})", v.label))?;
        let pid = self
            .c
            .wait_task_status(&id, "RUNNING", Duration::from_secs(20))?
            .pid;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !listening(pid, PORT.parse()?) {
            if Instant::now() >= deadline {
                self.c.remove(&id);
                bail!("{}: redis ({id}) did not listen within 20 s", v.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((id, pid))
    }

    /// One redis container in `v` under redis-benchmark from inside it.
    fn redis_round(&mut self, v: Variant) -> Result<Redis> {
        let (id, _) = self.start_redis(v)?;
        let requests = self.args.requests.to_string();
        let clients = self.args.clients.to_string();
        let out = self.c.exec(
            &id,
            "load",
            &[
                "redis-benchmark",
                "-h",
                "127.0.0.1",
                "-p",
                PORT,
                "-n",
                &requests,
                "-c",
                &clients,
                "-t",
                "set,get",
                "--csv",
            ],
            Duration::from_secs(600),
        );
        self.c.remove(&id);
        let out = out?
            .ok()
            .with_context(|| format!("{}: redis-benchmark in {id}", v.label))?;
        parse_csv(&out.stdout).with_context(|| format!("{}: {}", v.label, out.describe()))
    }

    /// One `sysloop` container in `v`.
    fn sysloop(&mut self, v: Variant, allowed: u64, notified: u64) -> Result<Sysloop> {
        let id = self.id("sys", v);
        let mount = self.helper.mount_flag();
        let run = Self::with_mode(
            Run::new(v.runtime, Image::Busybox, &id).flags(&["--mount", &mount]),
            v,
        )
        .cmd(&[
            "/bench/sysloop",
            &allowed.to_string(),
            &notified.to_string(),
        ]);
        let out = self.c.run(&run, Duration::from_secs(300));
        if self.c.task(&id).ok().flatten().is_some() {
            self.c.remove(&id);
        }
        let out = out?
            .ok()
            .with_context(|| format!("{}: sysloop in {id}", v.label))?;
        parse_sysloop(&out.stdout).with_context(|| format!("{}: {}", v.label, out.describe()))
    }

    fn application_rounds(&mut self) -> Result<AppResults> {
        let mut res = AppResults {
            samples: vec![Vec::new(); VARIANTS.len()],
            audit: vec![0; VARIANTS.len()],
            clean: vec![Vec::new(); VARIANTS.len()],
        };
        for round in 0..self.args.rounds {
            for k in 0..VARIANTS.len() {
                let i = (round + k) % VARIANTS.len();
                let mark = audit_lines(self.c);
                self.watch.begin();
                let r = self.redis_round(VARIANTS[i])?;
                res.clean[i].push(self.watch.end(true));
                eprintln!(
                    "  app round {round} {}: SET {:.0}/s p99 {} ms, GET {:.0}/s p99 {} ms{}",
                    VARIANTS[i].label,
                    r.set_rps,
                    r.set_p99,
                    r.get_rps,
                    r.get_p99,
                    if res.clean[i][round] {
                        ""
                    } else {
                        " (not clean)"
                    }
                );
                res.samples[i].push(r);
                res.audit[i] += settled_audit_lines(self.c).saturating_sub(mark);
            }
            eprintln!("application: {}/{} rounds", round + 1, self.args.rounds);
        }
        Ok(res)
    }

    fn node_rounds(&mut self, bpftrace: bool) -> Result<NodeResults> {
        let mut phases = vec![
            NodePhase::Nothing,
            NodePhase::Enforce,
            NodePhase::Monitor,
            NodePhase::Learn,
        ];
        if bpftrace {
            phases.push(NodePhase::SysExit);
        }
        let mut res = NodeResults {
            samples: BTreeMap::new(),
            clean: BTreeMap::new(),
        };
        for round in 0..self.args.rounds {
            for k in 0..phases.len() {
                let phase = phases[(round + k) % phases.len()];
                self.watch.begin();
                let ns = self.node_phase(phase)?;
                eprintln!("  node round {round} {}: {ns:.1} ns", phase.label());
                // The learn phase attaches sys_enter/sys_exit itself: bpftool's list cannot
                // tell them from another user's, the pin scan can.
                let clean = self.watch.end(phase != NodePhase::Learn);
                res.samples.entry(phase).or_default().push(ns);
                res.clean.entry(phase).or_default().push(clean);
            }
            eprintln!("node: {}/{} rounds", round + 1, self.args.rounds);
        }
        Ok(res)
    }

    /// The getppid cost outside containers in `phase`: the median of three loops.
    fn node_phase(&mut self, phase: NodePhase) -> Result<f64> {
        let container = match phase {
            NodePhase::Nothing => None,
            NodePhase::Enforce | NodePhase::SysExit => Some(self.start_redis(ENFORCE)?),
            NodePhase::Monitor => Some(self.start_redis(MONITOR)?),
            NodePhase::Learn => Some(self.start_redis(LEARN)?),
        };
        let result = (|| {
            let _tracer = match (phase, &container) {
                (NodePhase::SysExit, Some((_, pid))) => Some(Bpftrace::attach(cgroup_id(*pid)?)?),
                _ => None,
            };
            std::thread::sleep(Duration::from_millis(500));
            let mut loops: Vec<f64> = (0..3).map(|_| getppid_ns(self.args.calls)).collect();
            loops.sort_by(f64::total_cmp);
            Ok(loops[1])
        })();
        if let Some((id, _)) = container {
            self.c.remove(&id);
        }
        result
    }

    fn notify_rounds(&mut self) -> Result<NotifyResults> {
        let mut res = NotifyResults {
            samples: vec![Vec::new(); VARIANTS.len()],
            audit: vec![0; VARIANTS.len()],
            clean: vec![Vec::new(); VARIANTS.len()],
        };
        for round in 0..self.args.rounds {
            for k in 0..VARIANTS.len() {
                let i = (round + k) % VARIANTS.len();
                let mark = audit_lines(self.c);
                self.watch.begin();
                let r = self.sysloop(VARIANTS[i], self.args.calls, self.args.notified)?;
                res.clean[i].push(self.watch.end(true));
                eprintln!(
                    "  notify round {round} {}: getppid {:.1} ns, getsid {:.1} ns",
                    VARIANTS[i].label, r.allowed, r.notified
                );
                res.samples[i].push(r);
                res.audit[i] += settled_audit_lines(self.c).saturating_sub(mark);
            }
            eprintln!("notify: {}/{} rounds", round + 1, self.args.rounds);
        }
        Ok(res)
    }
}

/// Whether task `pid`'s network namespace has a TCP socket listening on 127.0.0.1:`port`.
fn listening(pid: i32, port: u16) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    text.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 3 && cols[1] == local && cols[3] == "0A"
    })
}

/// The cgroup2 id (directory inode) of `pid`'s cgroup.
fn cgroup_id(pid: i32) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .with_context(|| format!("no cgroup2 line for pid {pid}"))?;
    let mount = prereq::cgroup2_mount().context("no cgroup2 mount")?;
    let dir = mount.join(rel.trim().trim_start_matches('/'));
    Ok(fs::metadata(&dir)
        .with_context(|| format!("stat {}", dir.display()))?
        .ino())
}

/// `raw_syscalls` tracepoint links attached on the node right now (bpftool's link list):
/// vigil attaches `sys_enter`/`sys_exit` raw tracepoints only while something learns.
fn syscall_tracepoints() -> usize {
    let Ok(out) = Command::new("bpftool")
        .args(["-j", "link", "list"])
        .output()
    else {
        return 0;
    };
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links
        .iter()
        .filter(|l| {
            l["type"] == "raw_tracepoint"
                && matches!(l["tp_name"].as_str(), Some("sys_enter" | "sys_exit"))
        })
        .count()
}

/// Whether another user's vigil has its syscall tracepoints pinned right now
/// (`/sys/fs/bpf/<root>/<version>/links/vigil_sys_{enter,exit}`), ignoring ours.
fn foreign_pins(own: &Path) -> bool {
    let Ok(roots) = fs::read_dir("/sys/fs/bpf") else {
        return false;
    };
    roots.flatten().any(|root| {
        let root = root.path();
        root != own
            && fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .any(|v| {
                    let links = v.path().join("links");
                    links.join("vigil_sys_enter").exists() || links.join("vigil_sys_exit").exists()
                })
    })
}

/// Watches for syscall tracepoints this bench did not attach (another user of this shared
/// machine learning a container): they tax every syscall on the node, so a round that saw
/// one is left out of the medians when enough clean rounds remain.
struct Watch {
    own: PathBuf,
    dirty: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    /// Starts a thread that scans bpffs every 100 ms.
    fn start(own: &Path) -> Watch {
        let w = Watch {
            own: own.to_path_buf(),
            dirty: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (own, dirty, stop) = (w.own.clone(), w.dirty.clone(), w.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if foreign_pins(&own) {
                    dirty.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        w
    }

    /// Waits (up to a minute) until no foreign syscall tracepoint is attached, then starts a
    /// sample.
    fn begin(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while (foreign_pins(&self.own) || syscall_tracepoints() > 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        self.dirty.store(false, Ordering::Relaxed);
    }

    /// Whether the sample was clean; `list` also asks bpftool (not while our own learner
    /// runs).
    fn end(&self, list: bool) -> bool {
        let dirty = self.dirty.swap(false, Ordering::Relaxed)
            || foreign_pins(&self.own)
            || (list && syscall_tracepoints() > 0);
        !dirty
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// ns per getppid of this process over `calls` calls.
fn getppid_ns(calls: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// A bpftrace process with a `raw_syscalls:sys_exit` program filtered to one cgroup; stopped
/// (SIGINT, then SIGKILL) on drop.
struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    fn attach(cgroup: u64) -> Result<Bpftrace> {
        let script = format!(
            "tracepoint:raw_syscalls:sys_exit /cgroup == {cgroup}/ {{ }} \
             BEGIN {{ printf(\"ready\\n\"); }}"
        );
        let mut child = Command::new("bpftrace")
            .args(["-e", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn bpftrace")?;
        let stdout = child.stdout.take().context("bpftrace stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let tracer = Bpftrace { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                // BEGIN runs once every probe is attached.
                Ok(line) if line.trim() == "ready" => return Ok(tracer),
                Ok(_) => continue,
                Err(_) => bail!("bpftrace did not attach within 60 s ({script})"),
            }
        }
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the child this struct spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn audit_lines(c: &Containerd) -> usize {
    fs::read_to_string(c.audit_log())
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The audit log's line count once it has been quiet for half a second (the writer is
/// asynchronous).
fn settled_audit_lines(c: &Containerd) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = audit_lines(c);
    let mut quiet = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let n = audit_lines(c);
        if n != last {
            last = n;
            quiet = Instant::now();
        } else if quiet.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
    last
}

/// redis-benchmark `--csv`: `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
/// "p95_latency_ms","p99_latency_ms","max_latency_ms"` then one row per test.
fn parse_csv(text: &str) -> Result<Redis> {
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| {
            l.split(',')
                .map(|f| f.trim().trim_matches('"').to_string())
                .collect()
        })
        .collect();
    let header = rows
        .iter()
        .find(|r| r.first().is_some_and(|f| f == "test"))
        .context("no CSV header")?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no {name} column"))
    };
    let (rps, p99) = (col("rps")?, col("p99_latency_ms")?);
    let field = |test: &str, i: usize| -> Result<f64> {
        let row = rows
            .iter()
            .find(|r| r.first().is_some_and(|f| f == test))
            .with_context(|| format!("no {test} row"))?;
        row.get(i)
            .with_context(|| format!("short {test} row"))?
            .parse()
            .with_context(|| format!("{test} column {i}"))
    };
    Ok(Redis {
        set_rps: field("SET", rps)?,
        get_rps: field("GET", rps)?,
        set_p99: field("SET", p99)?,
        get_p99: field("GET", p99)?,
    })
}

fn parse_sysloop(text: &str) -> Result<Sysloop> {
    let line = text
        .lines()
        .find(|l| l.starts_with("getppid "))
        .context("no sysloop line")?;
    let w: Vec<&str> = line.split_whitespace().collect();
    ensure!(w.len() == 8, "sysloop line {line:?}");
    Ok(Sysloop {
        allowed: w[1].parse()?,
        notified: w[3].parse()?,
        rc: w[5].parse()?,
        errno: w[7].parse()?,
    })
}

// ---------------------------------------------------------------------------------------
// Report

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn pct(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

/// The rounds a row's median uses: its clean ones when at least three are, else all.
fn rounds_of(clean: &[bool]) -> Vec<usize> {
    rounds_where(clean.len(), |i| clean[i])
}

/// The rounds a paired comparison uses: those where both samples are clean, when at least
/// three are, else all.
fn rounds_both(a: &[bool], b: &[bool]) -> Vec<usize> {
    rounds_where(a.len().min(b.len()), |i| a[i] && b[i])
}

fn rounds_where(n: usize, ok: impl Fn(usize) -> bool) -> Vec<usize> {
    let good: Vec<usize> = (0..n).filter(|&i| ok(i)).collect();
    if good.len() >= 3 {
        good
    } else {
        (0..n).collect()
    }
}

fn pick<T: Copy>(values: &[T], rounds: &[usize]) -> Vec<T> {
    rounds
        .iter()
        .filter_map(|&i| values.get(i).copied())
        .collect()
}

/// Median of `f(a_i) / f(b_i)` over `rounds`.
fn paired_ratio<T>(a: &[T], b: &[T], rounds: &[usize], f: impl Fn(&T) -> f64) -> f64 {
    median(rounds.iter().map(|&i| f(&a[i]) / f(&b[i])))
}

/// Median of `f(a_i) - f(b_i)` over `rounds`.
fn paired_diff<T>(a: &[T], b: &[T], rounds: &[usize], f: impl Fn(&T) -> f64) -> f64 {
    median(rounds.iter().map(|&i| f(&a[i]) - f(&b[i])))
}

fn clean_count(clean: &[bool]) -> String {
    format!("{}/{}", clean.iter().filter(|c| **c).count(), clean.len())
}

/// What the "clean" columns mean.
const CLEAN_NOTE: &str = "clean = samples during which no other user's sys_enter/sys_exit \
    tracepoint was attached on this shared machine (it taxes every syscall of the node); each \
    median uses a row's clean samples and each ratio the rounds where both samples are clean, \
    when at least 3 are, else all";

struct Report<'a> {
    args: &'a Args,
    info: String,
    load: String,
    learned: Vec<Redis>,
    app: AppResults,
    node: NodeResults,
    notify: NotifyResults,
    bpftrace: Option<String>,
}

/// A table: a title, headers and rows of cells (first cell is the row's label).
struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    fn print(&self) {
        println!("\n{}", self.title);
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].len())
                .chain([self.headers[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i == 0 {
                    s += &format!("{c:<w$}", w = widths[0]);
                } else {
                    s += &format!("  {c:>w$}", w = widths[i]);
                }
            }
            s
        };
        println!("{}", line(&self.headers));
        for r in &self.rows {
            println!("{}", line(r));
        }
        for n in &self.notes {
            println!("{n}");
        }
    }

    fn markdown(&self) {
        println!("\n{}\n", self.title);
        println!("| {} |", self.headers.join(" | "));
        println!("|---|{}", "---:|".repeat(self.headers.len() - 1));
        for r in &self.rows {
            println!("| {} |", r.join(" | "));
        }
        if !self.notes.is_empty() {
            println!();
            for n in &self.notes {
                println!("- {n}");
            }
        }
    }
}

impl Report<'_> {
    fn tables(&self) -> Vec<Table> {
        vec![self.app_table(), self.node_table(), self.notify_table()]
    }

    fn print(&self) {
        println!("\n{}\n{}", self.info, self.load);
        for t in self.tables() {
            t.print();
        }
    }

    fn markdown(&self) {
        println!("\n---- markdown ----");
        println!("\n{}; {}", self.info, self.load);
        for t in self.tables() {
            t.markdown();
        }
    }

    fn app_table(&self) -> Table {
        let s = &self.app.samples;
        let clean = &self.app.clean;
        // Per-round ratios to runc (paired), then their median.
        let ratio = |i: usize, f: fn(&Redis) -> f64| {
            paired_ratio(&s[i], &s[0], &rounds_both(&clean[i], &clean[0]), f)
        };
        let set = |r: &Redis| r.set_rps;
        let get = |r: &Redis| r.get_rps;
        let set99 = |r: &Redis| r.set_p99;
        let get99 = |r: &Redis| r.get_p99;
        // The best round: the one least disturbed by the rest of this shared machine.
        let best = |i: usize, f: fn(&Redis) -> f64| {
            pick(&s[i], &rounds_of(&clean[i]))
                .iter()
                .map(f)
                .fold(f64::NAN, f64::max)
        };
        let mut rows = Vec::new();
        for (i, v) in VARIANTS.iter().enumerate() {
            let m = |f: fn(&Redis) -> f64| median(pick(&s[i], &rounds_of(&clean[i])).iter().map(f));
            let vs = |f: fn(&Redis) -> f64| {
                if i == 0 {
                    "-".to_string()
                } else {
                    pct(ratio(i, f))
                }
            };
            rows.push(vec![
                v.label.to_string(),
                format!("{:.0}", m(set)),
                vs(set),
                format!("{:.0}", best(i, set)),
                format!("{:.0}", m(get)),
                vs(get),
                format!("{:.0}", best(i, get)),
                format!("{:.3}", m(set99)),
                vs(set99),
                format!("{:.3}", m(get99)),
                vs(get99),
                self.app.audit[i].to_string(),
                clean_count(&clean[i]),
            ]);
        }
        let learn = |f: fn(&Redis) -> f64| median(self.learned.iter().map(f));
        rows.push(vec![
            format!("(vigil learn, {} runs first)", self.learned.len()),
            format!("{:.0}", learn(set)),
            String::new(),
            String::new(),
            format!("{:.0}", learn(get)),
            String::new(),
            String::new(),
            format!("{:.3}", learn(set99)),
            String::new(),
            format!("{:.3}", learn(get99)),
            String::new(),
            String::new(),
            String::new(),
        ]);
        Table {
            title: format!(
                "redis in local/redis:latest: redis-benchmark -h 127.0.0.1 -n {} -c {} -t set,get \
                 --csv via `ctr task exec` inside the container; {} rounds, variants interleaved \
                 (order rotated), fresh container per round; medians; vs runc = median of \
                 per-round ratios",
                self.args.requests, self.args.clients, self.args.rounds
            ),
            headers: [
                "shim",
                "SET req/s",
                "vs runc",
                "SET best",
                "GET req/s",
                "vs runc",
                "GET best",
                "SET p99 ms",
                "vs runc",
                "GET p99 ms",
                "vs runc",
                "audit events",
                "clean",
            ]
            .map(String::from)
            .to_vec(),
            rows,
            notes: vec![
                CLEAN_NOTE.to_string(),
                format!(
                    "target (not a pass/fail): enforce within 3% of runc's throughput: SET {}, \
                     GET {}",
                    pct(ratio(3, set)),
                    pct(ratio(3, get))
                ),
                format!(
                    "best round of each (least disturbed), enforce vs runc: SET {}, GET {}; \
                     off vs runc: SET {}, GET {}",
                    pct(best(3, set) / best(0, set)),
                    pct(best(3, get) / best(0, get)),
                    pct(best(1, set) / best(0, set)),
                    pct(best(1, get) / best(0, get))
                ),
                "audit events: all events written during the measured rounds (all rounds); a \
                 profile learned under the same load should leave none"
                    .to_string(),
            ],
        }
    }

    fn node_table(&self) -> Table {
        let samples = &self.node.samples;
        let clean = &self.node.clean;
        let none = NodePhase::Nothing;
        let id = |x: &f64| *x;
        let mut rows = Vec::new();
        for (phase, values) in samples {
            let c = &clean[phase];
            let first = *phase == none;
            let both = rounds_both(c, &clean[&none]);
            let base = &samples[&none];
            rows.push(vec![
                phase.label().to_string(),
                format!("{:.1}", median(pick(values, &rounds_of(c)))),
                if first {
                    "-".into()
                } else {
                    format!("{:+.1}", paired_diff(values, base, &both, id))
                },
                if first {
                    "-".into()
                } else {
                    pct(paired_ratio(values, base, &both, id))
                },
                clean_count(c),
            ]);
        }
        let mut notes = vec![CLEAN_NOTE.to_string()];
        let (t, e) = (NodePhase::SysExit, NodePhase::Enforce);
        if let (Some(tv), Some(ev)) = (samples.get(&t), samples.get(&e)) {
            let both = rounds_both(&clean[&t], &clean[&e]);
            notes.push(format!(
                "the sys_exit tracepoint alone (its row vs the enforced-container row, same \
                 rounds): {:+.1} ns/call, {}",
                paired_diff(tv, ev, &both, id),
                pct(paired_ratio(tv, ev, &both, id))
            ));
        }
        if let Some(why) = &self.bpftrace {
            notes.push(format!("bpftrace sys_exit row skipped: {why}"));
        }
        Table {
            title: format!(
                "getppid(2) from this process, outside any container, ns/call: median over \
                 rounds (phases interleaved, order rotated) of the median of 3 loops of {} \
                 calls; vs none = median of per-round differences and ratios",
                self.args.calls
            ),
            headers: ["while", "ns/call", "vs none ns", "vs none", "clean"]
                .map(String::from)
                .to_vec(),
            rows,
            notes,
        }
    }

    fn notify_table(&self) -> Table {
        let s = &self.notify.samples;
        let clean = &self.notify.clean;
        let mut rows = Vec::new();
        for (i, v) in VARIANTS.iter().enumerate() {
            let own = pick(&s[i], &rounds_of(&clean[i]));
            let allowed = median(own.iter().map(|x| x.allowed));
            let notified = median(own.iter().map(|x| x.notified));
            let both = rounds_both(&clean[i], &clean[0]);
            let vs_runc = paired_diff(&s[i], &s[0], &both, |x| x.allowed);
            let what = match v.mode {
                Some("monitor") => "notified, continued",
                Some("enforce") => "notified, denied",
                _ => "no filter rule",
            };
            rows.push(vec![
                v.label.to_string(),
                format!("{allowed:.1}"),
                if i == 0 {
                    "-".into()
                } else {
                    format!("{vs_runc:+.1}")
                },
                format!("{notified:.1}"),
                what.to_string(),
                s[i].last()
                    .map_or(String::new(), |l| format!("rc {} errno {}", l.rc, l.errno)),
                self.notify.audit[i].to_string(),
                clean_count(&clean[i]),
            ]);
        }
        Table {
            title: format!(
                "inside a busybox container, ns/call: getppid {} calls (in the profile), getsid {} \
                 calls (never learned: the compiled filter sends it to the shim's seccomp \
                 listener); rounds interleaved, medians",
                self.args.calls, self.args.notified
            ),
            headers: [
                "shim",
                "getppid ns",
                "vs runc ns",
                "getsid ns",
                "getsid path",
                "getsid result",
                "audit events",
                "clean",
            ]
            .map(String::from)
            .to_vec(),
            rows,
            notes: vec![
                CLEAN_NOTE.to_string(),
                "audit events: monitor and enforce report the unlearned getsid once per process \
                 (one per round expected, all rounds counted), runc and off none"
                    .to_string(),
            ],
        }
    }
}
