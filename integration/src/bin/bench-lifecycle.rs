//! `bench-lifecycle`: container lifecycle latency and shim memory, side by side, for
//! containerd's stock runc shim and vigil's shim, in one run on one private containerd.
//!
//! Latency: `ctr run -d` (create + start) and `ctr task delete` + `ctr container rm`
//! (delete) of a busybox `sleep` container, timed from the outside; the kill and the wait for
//! STOPPED between them are not counted. The runtimes take turns container by container
//! (interleaved, order rotated each round) so drift on this shared machine hits all alike.
//! Memory: PSS (/proc/PID/smaps_rollup) of the shim processes with 1 and with N running
//! containers (one runtime at a time), per container.
//!
//! Needs root, containerd, runc and a built shim (`VIGIL_SHIM_DIR`, else the newer of
//! target/debug and target/release). `--count N` (default 30), `--many N` (default 20),
//! `--markdown` also prints a table for docs/benchmarks.md.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vigil_integration::{paths, prereq, procs, Containerd, Image, Options, Run, Runtime};

/// One configuration under test.
#[derive(Clone, Copy)]
struct Variant {
    label: &'static str,
    runtime: Runtime,
    /// `vigil.dev/mode` annotation, if any.
    mode: Option<&'static str>,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        label: "runc shim (Go)",
        runtime: Runtime::Runc,
        mode: None,
    },
    Variant {
        label: "vigil mode=off",
        runtime: Runtime::Vigil,
        mode: Some("off"),
    },
    Variant {
        label: "vigil mode=learn",
        runtime: Runtime::Vigil,
        mode: Some("learn"),
    },
];

struct Args {
    count: usize,
    many: usize,
    markdown: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        count: 30,
        many: 20,
        markdown: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--count" => args.count = it.next().context("--count N")?.parse()?,
            "--many" => args.many = it.next().context("--many N")?.parse()?,
            "--markdown" => args.markdown = true,
            "-h" | "--help" => {
                println!("usage: bench-lifecycle [--count N] [--many N] [--markdown]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    ensure!(
        args.count >= 1 && args.many >= 1,
        "counts must be at least 1"
    );
    Ok(args)
}

/// Latency samples of one variant, in milliseconds.
#[derive(Default)]
struct Samples {
    create_start: Vec<f64>,
    delete: Vec<f64>,
    total: Vec<f64>,
}

/// Memory of one variant, KiB.
struct Memory {
    one: u64,
    many_total: u64,
    many_shims: usize,
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench-lifecycle: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    prereq::containers().map_err(anyhow::Error::msg)?;
    let shim_dir = prereq::vigil_shim().map_err(anyhow::Error::msg)?;
    let c = Containerd::start(&Options {
        images: vec![Image::Busybox],
        ..Options::default()
    })?;
    println!(
        "bench-lifecycle: private containerd in {}",
        c.dir().display()
    );
    println!(
        "vigil shim: {}",
        shim_dir.join(paths::SHIM_BINARY).display()
    );
    println!("{}", versions());

    // One untimed round first: page cache, snapshotter, first shim start of each binary.
    for v in VARIANTS {
        lifecycle(&c, v, "warm")?;
    }
    let mut samples: Vec<Samples> = VARIANTS.iter().map(|_| Samples::default()).collect();
    for round in 0..args.count {
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            let (cs, del) = lifecycle(&c, VARIANTS[i], &format!("r{round}"))?;
            samples[i].create_start.push(cs);
            samples[i].delete.push(del);
            samples[i].total.push(cs + del);
        }
        eprint!("\rlatency: {}/{} rounds", round + 1, args.count);
    }
    eprintln!();

    let mut memory = Vec::new();
    for v in VARIANTS {
        memory.push(measure_memory(&c, v, args.many)?);
    }
    let guard = guard_note(&c);
    print_table(&args, &samples, &memory, &guard);
    if args.markdown {
        print_markdown(&args, &samples, &memory, &guard);
    }
    Ok(())
}

fn versions() -> String {
    vigil_integration::cmd::machine_line(&[])
}

fn run_of(v: Variant, id: &str) -> Run {
    let mut run = Run::new(v.runtime, Image::Busybox, id)
        .detach()
        .flags(&["--null-io"]);
    if let Some(mode) = v.mode {
        run = run.flags(&["--annotation", &format!("vigil.dev/mode={mode}")]);
    }
    run.cmd(&["sleep", "600"])
}

fn container_id(v: Variant, tag: &str) -> String {
    let mode = v.mode.unwrap_or("default");
    format!("bench-{}-{mode}-{tag}", v.runtime.label())
}

/// One container's create + start and delete, in milliseconds.
fn lifecycle(c: &Containerd, v: Variant, tag: &str) -> Result<(f64, f64)> {
    let id = container_id(v, tag);
    let run = run_of(v, &id);
    let t = Instant::now();
    c.run(&run, Duration::from_secs(60))?
        .ok()
        .with_context(|| format!("{}: ctr run -d {id}", v.label))?;
    let create_start = ms(t.elapsed());
    c.wait_task_status(&id, "RUNNING", Duration::from_secs(10))?;
    stop(c, &id)?;
    let t = Instant::now();
    c.ctr(&["task", "delete", &id])?
        .ok()
        .with_context(|| format!("{}: ctr task delete {id}", v.label))?;
    c.ctr(&["container", "rm", &id])?
        .ok()
        .with_context(|| format!("{}: ctr container rm {id}", v.label))?;
    Ok((create_start, ms(t.elapsed())))
}

fn stop(c: &Containerd, id: &str) -> Result<()> {
    c.ctr(&["task", "kill", "-s", "KILL", id])?.ok()?;
    c.wait_task_status(id, "STOPPED", Duration::from_secs(20))?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// PSS of the shims with one container, then with `many`, then removes them.
fn measure_memory(c: &Containerd, v: Variant, many: usize) -> Result<Memory> {
    let ids: Vec<String> = (0..many.max(1))
        .map(|i| container_id(v, &format!("m{i}")))
        .collect();
    let result = (|| {
        c.run(&run_of(v, &ids[0]), Duration::from_secs(60))?.ok()?;
        let one = settled_pss(c, &ids[..1])?.0;
        for id in &ids[1..] {
            c.run(&run_of(v, id), Duration::from_secs(60))?.ok()?;
        }
        let (many_total, many_shims) = settled_pss(c, &ids)?;
        Ok(Memory {
            one,
            many_total,
            many_shims,
        })
    })();
    for id in &ids {
        c.remove(id);
    }
    result
}

/// Total PSS (KiB) of the distinct shims serving `ids`, after they settle (1 s without a
/// container start), and how many shims that is.
fn settled_pss(c: &Containerd, ids: &[String]) -> Result<(u64, usize)> {
    std::thread::sleep(Duration::from_secs(2));
    let mut shims = Vec::new();
    for id in ids {
        c.wait_task_status(id, "RUNNING", Duration::from_secs(10))?;
        shims.push(c.shim_pid(id)?);
    }
    shims.sort_unstable();
    shims.dedup();
    let mut total = 0;
    for pid in &shims {
        total += procs::pss_kib(*pid)?;
    }
    Ok((total, shims.len()))
}

/// Whether the learn runs did anything a guard does (pins, audit lines, profiles).
fn guard_note(c: &Containerd) -> String {
    let pins = std::fs::read_dir(c.bpf_pin_root()).is_ok_and(|mut d| d.next().is_some());
    let audit = std::fs::metadata(c.audit_log()).is_ok_and(|m| m.len() > 0);
    let profiles = std::fs::read_dir(c.vigil_state_dir().join("profiles"))
        .is_ok_and(|mut d| d.next().is_some());
    if pins || audit || profiles {
        format!(
            "guard active in learn runs (bpffs pins: {pins}, audit lines: {audit}, profiles: {profiles})"
        )
    } else {
        "guard not wired in this build: mode=learn left no pins, audit lines or profiles, so it \
         measures the same path as mode=off"
            .to_string()
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Row {
    label: &'static str,
    cells: Vec<String>,
}

fn rows(samples: &[Samples], memory: &[Memory]) -> Vec<Row> {
    VARIANTS
        .iter()
        .zip(samples.iter().zip(memory))
        .map(|(v, (s, m))| Row {
            label: v.label,
            cells: vec![
                format!("{:.0}", percentile(&s.create_start, 50.0)),
                format!("{:.0}", percentile(&s.delete, 50.0)),
                format!("{:.0}", percentile(&s.total, 50.0)),
                format!("{:.0}", percentile(&s.total, 95.0)),
                format!("{:.2}", mib(m.one)),
                format!("{:.2}", mib(m.many_total) / m.many_shims.max(1) as f64),
                format!("{}", m.many_shims),
            ],
        })
        .collect()
}

fn headers(args: &Args) -> Vec<String> {
    vec![
        "create+start p50 ms".into(),
        "delete p50 ms".into(),
        "total p50 ms".into(),
        "total p95 ms".into(),
        "PSS 1 ctr MiB".into(),
        format!("PSS/ctr at {} MiB", args.many),
        format!("shims at {}", args.many),
    ]
}

fn verdicts(samples: &[Samples], memory: &[Memory]) -> Vec<String> {
    let p50 = |i: usize| percentile(&samples[i].total, 50.0);
    let p95 = |i: usize| percentile(&samples[i].total, 95.0);
    let per = |i: usize| memory[i].many_total as f64 / memory[i].many_shims.max(1) as f64;
    let mut out = Vec::new();
    for i in 1..VARIANTS.len() {
        let lat = p50(i) / p50(0);
        let lat95 = p95(i) / p95(0);
        let mem1 = memory[i].one as f64 / memory[0].one as f64;
        let mem_many = per(i) / per(0);
        out.push(format!(
            "{}: latency p50 {:+.0}% / p95 {:+.0}% vs runc (target <= +10%: {}); \
             PSS {:.0}% of runc's with 1 container, {:.0}% at N (target <= 50%: {})",
            VARIANTS[i].label,
            (lat - 1.0) * 100.0,
            (lat95 - 1.0) * 100.0,
            if lat <= 1.10 { "met" } else { "NOT met" },
            mem1 * 100.0,
            mem_many * 100.0,
            if mem1 <= 0.5 && mem_many <= 0.5 {
                "met"
            } else {
                "NOT met"
            },
        ));
    }
    out
}

fn print_table(args: &Args, samples: &[Samples], memory: &[Memory], guard: &str) {
    let headers = headers(args);
    let rows = rows(samples, memory);
    println!();
    println!(
        "lifecycle over {} containers per runtime (interleaved); memory with 1 and {} containers",
        args.count, args.many
    );
    print!("{:<18}", "");
    for h in &headers {
        print!(" {h:>20}");
    }
    println!();
    for row in &rows {
        print!("{:<18}", row.label);
        for c in &row.cells {
            print!(" {c:>20}");
        }
        println!();
    }
    for v in verdicts(samples, memory) {
        println!("{v}");
    }
    println!("{guard}");
}

fn print_markdown(args: &Args, samples: &[Samples], memory: &[Memory], guard: &str) {
    let headers = headers(args);
    println!();
    println!("| shim | {} |", headers.join(" | "));
    println!("|---|{}", "---:|".repeat(headers.len()));
    for row in rows(samples, memory) {
        println!("| {} | {} |", row.label, row.cells.join(" | "));
    }
    println!();
    for v in verdicts(samples, memory) {
        println!("- {v}");
    }
    println!("- {guard}");
}
