//! `vigil-demo`: vigil's main job on a real application. Starts a private containerd (own
//! config, root, state and socket under a temporary folder; never the system's) with the
//! vigil runtime, imports the offline redis image, then:
//!
//! 1. **learns**: runs redis-server through `io.containerd.vigil.v2` in `vigil.dev/mode=learn`
//!    under real load (redis-cli, an exec probe through `ctr task exec`, redis-benchmark)
//!    and stops it, so that the shim merges what it saw into the image's profile;
//! 2. **shows the profile** with `vigil profile show`;
//! 3. **enforces**: runs redis again in `vigil.dev/mode=enforce` under the same load and
//!    checks that the audit log stays empty;
//! 4. **attacks** the enforced container (a shell, /etc/shadow, a write below /usr, a
//!    connection to a port the profile lacks, a syscall the profile lacks), printing each
//!    attack's result and the audit event that reports it, then a summary table;
//!
//! and tears everything down, also on Ctrl-C or SIGTERM.
//!
//! The demo is a list of steps ([`STEPS`]), each a function on [`Demo`] printing
//! `[n/N] title` first; add a step by adding a function and a line.
//!
//! Usage: `vigil-demo [--prefix DIR] [--requests N]`. `--prefix` is where
//! `containerd-shim-vigil-v2` and `vigil` are installed (default /usr/local/bin);
//! `--requests` is redis-benchmark's request count per test (default 50000).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use serde_json::Value;
use vigil_integration::cmd::{self, Output};
use vigil_integration::{paths, prereq, procs, Containerd, Image, Options, Run, Runtime};

/// The learning container's id.
const LEARN_ID: &str = "vigil-demo-learn";
/// The enforced container's id.
const ENFORCE_ID: &str = "vigil-demo-enforce";
/// How long to wait for an audit event that should come.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The private containerd, reachable from the signal thread for teardown.
static CONTAINERD: OnceLock<Arc<Containerd>> = OnceLock::new();

/// A step: its title and what it does.
type Step = (&'static str, fn(&mut Demo) -> Result<()>);

/// The demo, in order.
const STEPS: &[Step] = &[
    (
        "check this machine and the installed binaries",
        check_machine,
    ),
    (
        "start a private containerd with the vigil runtime",
        start_containerd,
    ),
    ("import the offline redis image", import_image),
    (
        "learn: run redis-server through vigil with vigil.dev/mode=learn",
        learn_start,
    ),
    (
        "learn: real load (redis-cli, an exec probe, redis-benchmark)",
        learn_load,
    ),
    (
        "learn: stop it; the shim merges what it saw into the image's profile",
        learn_stop,
    ),
    ("show the profile (vigil profile show)", show_profile),
    (
        "enforce: run redis-server again with vigil.dev/mode=enforce",
        enforce_start,
    ),
    (
        "enforce: the same load; the audit log must stay empty",
        enforce_load,
    ),
    (
        "attack 1: spawn a shell the profile never ran",
        attack_shell,
    ),
    ("attack 2: read /etc/shadow", attack_shadow),
    ("attack 3: write a file below /usr", attack_write_usr),
    (
        "attack 4: connect to a port the profile never connected to",
        attack_connect,
    ),
    (
        "attack 5: a syscall the profile lacks (chroot)",
        attack_syscall,
    ),
    ("summary", summary),
    ("stop it and clean up", stop_and_clean),
];

/// One attack's outcome, for the summary.
struct Outcome {
    attack: &'static str,
    blocked: bool,
    mechanism: String,
    evidence: String,
}

/// redis-benchmark's requests per second, by test.
type Rates = Vec<(String, f64)>;

/// What the steps share.
struct Demo {
    prefix: PathBuf,
    requests: u32,
    /// redis's port, the same in both runs (the profile holds it).
    port: u16,
    shim_pid: Option<i32>,
    learn_rates: Rates,
    enforce_rates: Rates,
    /// Audit log lines before the enforced container was created.
    enforce_mark: usize,
    /// A server on the host that the profile never connected to, and its connection count.
    decoy: Option<(u16, Arc<AtomicUsize>)>,
    outcomes: Vec<Outcome>,
    /// What went wrong without stopping the demo (false positives, attacks let through).
    problems: Vec<String>,
}

impl Demo {
    fn c(&self) -> Result<&Arc<Containerd>> {
        CONTAINERD
            .get()
            .context("the private containerd is not started")
    }
}

fn main() {
    let demo = match parse_args() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vigil-demo: {e:#}");
            eprintln!("usage: vigil-demo [--prefix DIR] [--requests N]");
            std::process::exit(2);
        }
    };
    if let Err(e) = watch_signals() {
        eprintln!("vigil-demo: {e:#}");
        std::process::exit(1);
    }
    let rc = match run_steps(demo) {
        Ok(()) => {
            println!("vigil-demo: done");
            0
        }
        Err(_) if INTERRUPTED.load(Ordering::SeqCst) => 130,
        Err(e) => {
            eprintln!("vigil-demo: FAILED: {e:#}");
            if let Some(c) = CONTAINERD.get() {
                eprintln!("vigil-demo: containerd's log ends:\n{}", c.log_tail(15));
            }
            1
        }
    };
    let clean = teardown();
    std::process::exit(if clean { rc } else { 1 });
}

fn parse_args() -> Result<Demo> {
    let mut demo = Demo {
        prefix: PathBuf::from("/usr/local/bin"),
        requests: 50_000,
        port: 0,
        shim_pid: None,
        learn_rates: Vec::new(),
        enforce_rates: Vec::new(),
        enforce_mark: 0,
        decoy: None,
        outcomes: Vec::new(),
        problems: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--prefix" => demo.prefix = PathBuf::from(value()?),
            "--requests" => {
                demo.requests = value()?.parse().context("--requests")?;
                ensure!(demo.requests > 0, "--requests must be positive");
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(demo)
}

fn run_steps(mut demo: Demo) -> Result<()> {
    let total = STEPS.len();
    for (n, (title, step)) in STEPS.iter().enumerate() {
        println!("\n[{}/{total}] {title}", n + 1);
        let started = Instant::now();
        step(&mut demo).with_context(|| format!("step {} ({title})", n + 1))?;
        println!("      ({:.1} s)", started.elapsed().as_secs_f64());
    }
    if !demo.problems.is_empty() {
        for p in &demo.problems {
            eprintln!("vigil-demo: PROBLEM: {p}");
        }
        bail!("{} problem(s), listed above", demo.problems.len());
    }
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread and handles them in one: tear down,
/// exit 130.
fn watch_signals() -> Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("block signals")?;
    std::thread::spawn(move || {
        if let Ok(signal) = set.wait() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("\nvigil-demo: {signal}: tearing everything down");
            teardown();
            std::process::exit(130);
        }
    });
    Ok(())
}

/// Set once a signal asked the demo to stop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The teardown's outcome, once it ran (the signal thread and the main thread may both ask).
static TEARDOWN: Mutex<Option<bool>> = Mutex::new(None);

/// Stops the private containerd and removes what it left and its folder; true when nothing
/// is left. Runs once; later calls wait for it and return its outcome.
fn teardown() -> bool {
    let mut done = TEARDOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(clean) = *done {
        return clean;
    }
    let clean = match CONTAINERD.get() {
        None => true,
        Some(c) => {
            let problems = c.shutdown();
            for p in &problems {
                eprintln!("vigil-demo: cleanup: {p}");
            }
            // FIFOs of bundles containerd had no chance to remove go with the folder.
            let mut left = c.leftovers();
            left.fifos.clear();
            let removed = std::fs::remove_dir_all(c.dir());
            if let Err(e) = &removed {
                eprintln!("vigil-demo: remove {}: {e}", c.dir().display());
            }
            if !left.is_empty() {
                eprintln!("vigil-demo: left behind: {left:?}");
            }
            problems.is_empty() && left.is_empty() && removed.is_ok()
        }
    };
    if clean {
        println!("teardown: private containerd stopped, its folder removed, nothing left behind");
    }
    *done = Some(clean);
    clean
}

fn say(text: &str) {
    for line in text.lines() {
        println!("      {line}");
    }
}

fn check_machine(demo: &mut Demo) -> Result<()> {
    prereq::containers().map_err(anyhow::Error::msg)?;
    for program in ["redis-cli", "redis-benchmark"] {
        prereq::program(program).map_err(anyhow::Error::msg)?;
    }
    let shim = demo.prefix.join(paths::SHIM_BINARY);
    let cli = demo.prefix.join("vigil");
    for binary in [&shim, &cli] {
        ensure!(
            binary.is_file(),
            "{} is not installed (scripts/demo.sh installs it)",
            binary.display()
        );
    }
    // Use the installed shim, not a build folder.
    std::env::set_var("VIGIL_SHIM_DIR", &demo.prefix);
    let version = |p: &str| {
        let out = Command::new(p).arg("--version").output().ok()?;
        String::from_utf8(out.stdout)
            .ok()?
            .lines()
            .next()
            .map(str::to_string)
    };
    say(&format!(
        "{} | {}",
        version("containerd").unwrap_or_default(),
        version("runc").unwrap_or_default()
    ));
    say(&format!("shim: {}", shim.display()));
    say(&format!("cli:  {}", cli.display()));
    Ok(())
}

fn start_containerd(demo: &mut Demo) -> Result<()> {
    let c = Containerd::start(&Options::default())?;
    let c = CONTAINERD.get_or_init(|| Arc::new(c));
    say(&format!("folder:  {}", c.dir().display()));
    say(&format!("socket:  {}", c.socket().display()));
    say(&format!(
        "config:  {}",
        c.dir().join("containerd.toml").display()
    ));
    say("runtime: [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vigil]");
    say("         runtime_type = \"io.containerd.vigil.v2\"");
    say(&format!(
        "vigil config (VIGIL_CONFIG): {}",
        c.vigil_config_path().display()
    ));
    say(&format!(
        "vigil state (profiles): {}",
        c.vigil_state_dir().display()
    ));
    say(&format!("audit log: {}", c.audit_log().display()));
    let out = cmd::run(
        Command::new(demo.prefix.join("vigil"))
            .arg("doctor")
            .env("VIGIL_CONFIG", c.vigil_config_path()),
        None,
        Duration::from_secs(30),
    )?;
    say("$ vigil doctor");
    say(out.stdout.trim_end());
    Ok(())
}

fn import_image(demo: &mut Demo) -> Result<()> {
    let c = demo.c()?;
    let tar = Image::Redis.tar()?;
    say(&format!(
        "OCI layout built offline from this machine's redis-server and its libraries, plus \
         busybox: {}",
        tar.display()
    ));
    c.import(Image::Redis)?;
    let out = c.ctr(&["images", "ls", "-q"])?.ok()?;
    say(&out.stdout);
    Ok(())
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------
// redis through vigil

/// Starts redis-server in container `id` with `vigil.dev/mode=mode` on `demo.port` and waits
/// until it answers.
fn start_redis(demo: &mut Demo, id: &str, mode: &str) -> Result<()> {
    let c = demo.c()?;
    let port = demo.port.to_string();
    let annotation = format!("vigil.dev/mode={mode}");
    let run = Run::new(Runtime::Vigil, Image::Redis, id)
        .detach()
        .flags(&["--net-host", "--null-io", "--annotation", &annotation])
        .cmd(&[
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
    say(&format!(
        "$ ctr run -d --runtime {} --net-host --null-io --annotation {annotation} {} {id} \\\n      \
         redis-server --bind 127.0.0.1 --port {port} --save '' --appendonly no",
        Runtime::Vigil.runtime_type(),
        Image::Redis.name()
    ));
    c.run(&run, Duration::from_secs(60))?.ok()?;
    let task = c.wait_task_status(id, "RUNNING", Duration::from_secs(20))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", demo.port)).is_err() {
        let running = c.task(id)?.is_some_and(|t| t.status == "RUNNING");
        ensure!(
            running,
            "redis-server exited at start (is port {port} taken?)"
        );
        ensure!(
            Instant::now() < deadline,
            "redis did not listen on 127.0.0.1:{port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Something else could hold the port (it was free when chosen): the task must still run.
    std::thread::sleep(Duration::from_millis(200));
    let running = c.task(id)?.is_some_and(|t| t.status == "RUNNING");
    ensure!(
        running,
        "redis-server exited at start (is port {port} taken?)"
    );
    let shim = c.shim_pid(id)?;
    let exe = std::fs::read_link(format!("/proc/{shim}/exe"))?;
    say(&format!(
        "redis-server pid {} is listening on 127.0.0.1:{port} (host network)",
        task.pid
    ));
    say(&format!(
        "its shim: pid {shim}, {} (PSS {} KiB)",
        exe.display(),
        procs::pss_kib(shim)?
    ));
    ensure!(
        exe.ends_with(paths::SHIM_BINARY),
        "the container is served by {}, not vigil",
        exe.display()
    );
    demo.shim_pid = Some(shim);
    Ok(())
}

fn show(out: &Output) {
    say(&format!("$ {}", short(&out.cmdline)));
    if !out.stdout.trim().is_empty() {
        say(out.stdout.trim_end());
    }
    if !out.stderr.trim().is_empty() {
        say(out.stderr.trim_end());
    }
}

/// A command line without the private socket, namespace and fifo folder, for reading.
fn short(cmdline: &str) -> String {
    let mut words: Vec<&str> = cmdline.split(' ').collect();
    let mut i = 0;
    while i < words.len() {
        if matches!(words[i], "-a" | "-n" | "--fifo-dir") && i + 1 < words.len() {
            words.drain(i..i + 2);
        } else {
            i += 1;
        }
    }
    words.join(" ")
}

fn redis_cli(demo: &Demo, args: &[&str]) -> Result<Output> {
    let mut cli = Command::new("redis-cli");
    cli.args(["-h", "127.0.0.1", "-p", &demo.port.to_string()])
        .args(args);
    cmd::run(&mut cli, None, Duration::from_secs(20))?.ok()
}

/// The exec probe: what a liveness probe through `ctr task exec` / `kubectl exec` would run.
/// Learning it puts `sh`, `cat` and `nc` into the profile, each with only what it did here.
fn probe_script(port: u16) -> String {
    format!("cat /etc/hostname; echo PING | nc -w 1 127.0.0.1 {port}")
}

/// The same client traffic in both runs: redis-cli from the host, a redis-cli and the probe
/// inside the container through `ctr task exec`.
fn talk(demo: &Demo, id: &str) -> Result<()> {
    let c = demo.c()?;
    let out = redis_cli(demo, &["ping"])?;
    show(&out);
    ensure!(out.stdout.trim() == "PONG", "redis did not answer PING");
    let out = redis_cli(demo, &["set", "greeting", "hello from a vigil container"])?;
    show(&out);
    let port = demo.port.to_string();
    let args = ["redis-cli", "-p", port.as_str(), "get", "greeting"];
    let out = c.exec(id, "cli", &args, Duration::from_secs(30))?.ok()?;
    show(&out);
    ensure!(
        out.stdout.trim() == "hello from a vigil container",
        "exec in the container read {:?}",
        out.stdout
    );
    let script = probe_script(demo.port);
    for i in 0..2 {
        let out = c
            .exec(
                id,
                &format!("probe{i}"),
                &["sh", "-c", &script],
                Duration::from_secs(30),
            )?
            .ok()?;
        if i == 0 {
            show(&out);
        }
        ensure!(
            out.stdout.contains("+PONG"),
            "the probe got no PONG: {}",
            out.describe()
        );
    }
    say("(the probe ran twice)");
    Ok(())
}

/// redis-benchmark from the host against the container; its requests per second by test.
fn benchmark(demo: &Demo) -> Result<Rates> {
    let mut bench = Command::new("redis-benchmark");
    bench.args([
        "-h",
        "127.0.0.1",
        "-p",
        &demo.port.to_string(),
        "-q",
        "-c",
        "20",
        "-n",
        &demo.requests.to_string(),
        "-t",
        "ping,set,get,incr,lpush",
    ]);
    say(&format!("$ {}", cmd::cmdline_of(&bench)));
    let out = cmd::run(&mut bench, None, Duration::from_secs(300))?.ok()?;
    let mut rates = Vec::new();
    for line in out.stdout.split(['\r', '\n']) {
        let line = line.trim();
        let Some((test, rest)) = line.split_once(": ") else {
            continue;
        };
        // redis-benchmark 7 follows the rate with `, p50=...`.
        let Some((rate, _)) = rest.split_once(" requests per second") else {
            continue;
        };
        if let Ok(rate) = rate.trim().parse::<f64>() {
            say(line);
            rates.push((test.to_string(), rate));
        }
    }
    ensure!(
        !rates.is_empty(),
        "redis-benchmark printed no results: {}",
        out.describe()
    );
    Ok(rates)
}

/// Stops container `id` (SIGTERM), deletes it and waits for its shim to exit.
fn stop_redis(demo: &mut Demo, id: &str) -> Result<()> {
    let c = demo.c()?;
    let out = c.ctr(&["task", "kill", "-s", "SIGTERM", id])?.ok()?;
    show(&out);
    c.wait_task_status(id, "STOPPED", Duration::from_secs(30))?;
    let out = c.ctr(&["task", "delete", id])?.ok()?;
    show(&out);
    c.ctr(&["container", "rm", id])?.ok()?;
    if let Some(shim) = demo.shim_pid.take() {
        let gone = procs::wait_gone(&[shim], Duration::from_secs(10)).is_empty();
        ensure!(gone, "vigil's shim {shim} outlived its container");
        say(&format!("shim {shim} exited with its container"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// learn

fn learn_start(demo: &mut Demo) -> Result<()> {
    demo.port = free_port()?;
    say("learn: every exec, file open, connection and syscall of the container is recorded");
    start_redis(demo, LEARN_ID, "learn")
}

fn learn_load(demo: &mut Demo) -> Result<()> {
    talk(demo, LEARN_ID)?;
    demo.learn_rates = benchmark(demo)?;
    if let Some(shim) = demo.shim_pid {
        say(&format!(
            "vigil's shim after the benchmark: PSS {} KiB, {} threads",
            procs::pss_kib(shim)?,
            procs::thread_count(shim)?
        ));
    }
    Ok(())
}

/// `vigil --state-dir <private state> ARGS...`.
fn vigil(demo: &Demo, args: &[&str]) -> Result<Output> {
    let c = demo.c()?;
    let mut command = Command::new(demo.prefix.join("vigil"));
    command
        .arg("--state-dir")
        .arg(c.vigil_state_dir())
        .args(args);
    cmd::run(&mut command, None, Duration::from_secs(30))
}

fn learn_stop(demo: &mut Demo) -> Result<()> {
    stop_redis(demo, LEARN_ID)?;
    // Delete merges before it answers; allow the store a moment anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = vigil(demo, &["profile", "list"])?;
        if out.rc == 0 && out.stdout.contains(Image::Redis.name()) {
            break out;
        }
        ensure!(
            Instant::now() < deadline,
            "no profile for {} after the learning run: {}",
            Image::Redis.name(),
            out.describe()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    say("$ vigil --state-dir <private state> profile list");
    say(out.stdout.trim_end());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// the profile

/// How many entries of each list section of `vigil profile show` to print.
const SECTION_ENTRIES: usize = 30;

fn show_profile(demo: &mut Demo) -> Result<()> {
    let out = vigil(demo, &["profile", "show", Image::Redis.name()])?.ok()?;
    say(&format!(
        "$ vigil --state-dir {} profile show {}",
        demo.c()?.vigil_state_dir().display(),
        Image::Redis.name()
    ));
    say(&trim_profile(&out.stdout, SECTION_ENTRIES));
    say("(each entry's counts and times left out; `vigil profile show --json` has everything)");
    Ok(())
}

/// `vigil profile show` without the per-entry detail lines (indented four spaces) of its
/// list sections (`execs (5):` and below), each section cut to `max` entries.
fn trim_profile(text: &str, max: usize) -> String {
    let mut kept = Vec::new();
    let mut in_lists = false;
    let mut entries = 0;
    let mut hidden = 0;
    let flush = |kept: &mut Vec<String>, hidden: &mut usize| {
        if *hidden > 0 {
            kept.push(format!("  ... and {} more", *hidden));
            *hidden = 0;
        }
    };
    for line in text.lines() {
        let heading = !line.starts_with(' ') && line.trim_end().ends_with("):");
        if heading {
            flush(&mut kept, &mut hidden);
            in_lists = true;
            entries = 0;
        } else if in_lists && line.starts_with("    ") {
            continue;
        } else if in_lists && line.starts_with("  ") {
            entries += 1;
            if entries > max {
                hidden += 1;
                continue;
            }
        } else if line.trim().is_empty() {
            flush(&mut kept, &mut hidden);
        }
        kept.push(line.to_string());
    }
    flush(&mut kept, &mut hidden);
    kept.join("\n")
}

// ---------------------------------------------------------------------------------------
// enforce

/// Every audit event in the log, in order.
fn audit_events(demo: &Demo) -> Result<Vec<Value>> {
    vigil_integration::audit_log::read(&demo.c()?.audit_log())
}

/// Events after `mark`, once at least `min` arrived (or [`EVENT_WAIT`] passed) and the log
/// has been quiet for half a second (the writer is asynchronous).
fn events_since(demo: &Demo, mark: usize, min: usize) -> Result<Vec<Value>> {
    vigil_integration::audit_log::events_since(&demo.c()?.audit_log(), mark, min, EVENT_WAIT)
}

fn field<'a>(ev: &'a Value, key: &str) -> &'a Value {
    &ev["output_fields"][key]
}

/// A field as text (numbers too); "-" when absent.
fn text(ev: &Value, key: &str) -> String {
    match field(ev, key) {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// An event as a few readable lines.
fn show_event(ev: &Value) {
    let rule = ev["rule"].as_str().unwrap_or_default();
    say(&format!(
        "audit: {rule} | {} by {}",
        text(ev, "vigil.action"),
        text(ev, "vigil.mechanism")
    ));
    let mut what = format!(
        "       proc.name={} proc.exepath={} proc.pname={}",
        text(ev, "proc.name"),
        text(ev, "proc.exepath"),
        text(ev, "proc.pname")
    );
    for key in ["evt.type", "fd.name", "vigil.access"] {
        if !field(ev, key).is_null() {
            what.push_str(&format!(" {key}={}", text(ev, key)));
        }
    }
    say(&what);
    say(&format!(
        "       container.id={} mode={}",
        text(ev, "container.id"),
        text(ev, "vigil.mode")
    ));
}

fn enforce_start(demo: &mut Demo) -> Result<()> {
    demo.enforce_mark = audit_events(demo)?.len();
    say("enforce: whatever the profile lacks is refused in the kernel and reported");
    start_redis(demo, ENFORCE_ID, "enforce")
}

fn enforce_load(demo: &mut Demo) -> Result<()> {
    talk(demo, ENFORCE_ID)?;
    demo.enforce_rates = benchmark(demo)?;
    say("requests per second, learn -> enforce (learning pays for its recording programs;");
    say("in enforce the profile's own syscalls never leave the kernel):");
    for (test, rate) in &demo.enforce_rates {
        let learned = demo
            .learn_rates
            .iter()
            .find(|(t, _)| t == test)
            .map(|(_, r)| *r);
        let change = learned
            .map(|l| format!("{:+.1}%", (rate - l) / l * 100.0))
            .unwrap_or_default();
        say(&format!(
            "  {test:<28} {:>10.0} -> {rate:>10.0}  {change}",
            learned.unwrap_or(0.0)
        ));
    }
    // A second of grace for anything still queued in the writer.
    std::thread::sleep(Duration::from_secs(1));
    let events = events_since(demo, demo.enforce_mark, 0)?;
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| field(e, "container.id").as_str() == Some(ENFORCE_ID))
        .collect();
    say(&format!(
        "audit log: {} event(s) for {ENFORCE_ID} since it was created",
        mine.len()
    ));
    if mine.is_empty() {
        say("no false positives: the load stayed inside the profile");
    } else {
        for ev in &mine {
            show_event(ev);
        }
        demo.problems.push(format!(
            "{} audit event(s) under the learned load in enforce (false positives)",
            mine.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// attacks

/// Runs `args` through `ctr task exec` in the enforced container, prints it and what came
/// back, and returns it with the audit events it caused.
fn attack_exec(demo: &Demo, exec_id: &str, args: &[&str]) -> Result<(Output, Vec<Value>)> {
    let c = demo.c()?;
    let mark = audit_events(demo)?.len();
    let out = c.exec(ENFORCE_ID, exec_id, args, Duration::from_secs(30))?;
    ensure!(!out.timed_out, "{}", out.describe());
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect();
    say(&format!(
        "$ ctr task exec --exec-id {exec_id} {ENFORCE_ID} {}",
        shown.join(" ")
    ));
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        say(&format!("  | {line}"));
    }
    let status = match (out.signal, out.rc) {
        (Some(s), rc) => format!("exit {rc} (ctr killed by signal {s})"),
        (None, 137) => "exit 137 = 128 + SIGKILL: the process was killed".to_string(),
        (None, rc) => format!("exit {rc}"),
    };
    say(&format!("  -> {status}"));
    let events = events_since(demo, mark, 1)?;
    Ok((out, events))
}

/// Prints the events, judges the attack and records the outcome: blocked when the attack's
/// effect is absent (`prevented`) and an event says `blocked` or `killed` with the
/// `expected` mechanism.
fn judge(
    demo: &mut Demo,
    attack: &'static str,
    prevented: bool,
    evidence: String,
    events: &[Value],
    expected: &str,
) {
    if events.is_empty() {
        say("audit: no event (!)");
    }
    for ev in events {
        show_event(ev);
    }
    let stopping = events.iter().find(|e| {
        field(e, "container.id").as_str() == Some(ENFORCE_ID)
            && matches!(
                field(e, "vigil.action").as_str(),
                Some("blocked" | "killed")
            )
    });
    let mechanism = stopping
        .map(|e| text(e, "vigil.mechanism"))
        .unwrap_or_else(|| "-".to_string());
    let blocked = prevented && stopping.is_some();
    say(&format!(
        "=> {}: {evidence}",
        if blocked { "BLOCKED" } else { "NOT BLOCKED" }
    ));
    if !blocked {
        demo.problems.push(format!(
            "{attack}: not blocked ({evidence}; {} event(s))",
            events.len()
        ));
    } else if mechanism != expected && mechanism != "lsm" {
        // The LSM-BPF tier answers with `lsm`; the fallback tier with `expected`.
        say(&format!(
            "(the fallback tier's mechanism is {expected}; this one was {mechanism})"
        ));
    }
    demo.outcomes.push(Outcome {
        attack,
        blocked,
        mechanism,
        evidence,
    });
}

fn attack_shell(demo: &mut Demo) -> Result<()> {
    say("the probe made `sh` part of the profile; `ash` (busybox's other shell) never ran");
    let (out, events) = attack_exec(demo, "attack-shell", &["ash", "-c", "id"])?;
    let prevented = !out.stdout.contains("uid=");
    let evidence = if prevented {
        format!("the shell never ran (exit {})", out.rc)
    } else {
        "the shell ran `id`".to_string()
    };
    judge(
        demo,
        "spawn a shell (ash)",
        prevented,
        evidence,
        &events,
        "signal",
    );
    Ok(())
}

fn attack_shadow(demo: &mut Demo) -> Result<()> {
    say("through the profiled `sh` and `cat`, which only ever read /etc/hostname");
    let (out, events) = attack_exec(
        demo,
        "attack-shadow",
        &["sh", "-c", "cat /etc/shadow; echo cat exit=$?"],
    )?;
    let prevented = !out.stdout.contains("root:");
    let evidence = if prevented {
        "no byte of /etc/shadow came out".to_string()
    } else {
        "/etc/shadow was printed".to_string()
    };
    judge(
        demo,
        "read /etc/shadow",
        prevented,
        evidence,
        &events,
        "fanotify",
    );
    Ok(())
}

fn attack_write_usr(demo: &mut Demo) -> Result<()> {
    say("a shell redirect, the way a dropper would plant a binary");
    let (_, events) = attack_exec(
        demo,
        "attack-write",
        &["sh", "-c", "echo evil > /usr/bin/evil; echo write exit=$?"],
    )?;
    let c = demo.c()?;
    let file = c
        .bundle(c.namespace(), ENFORCE_ID)
        .join("rootfs/usr/bin/evil");
    let (prevented, evidence) = match std::fs::read(&file) {
        Err(_) => (true, "/usr/bin/evil does not exist".to_string()),
        Ok(bytes) if bytes.is_empty() => (
            true,
            "/usr/bin/evil is empty: the create happened, the write did not".to_string(),
        ),
        Ok(bytes) => (false, format!("/usr/bin/evil holds {} bytes", bytes.len())),
    };
    say(&format!("host view of the container's rootfs: {evidence}"));
    judge(
        demo,
        "write below /usr",
        prevented,
        evidence,
        &events,
        "fanotify",
    );
    Ok(())
}

/// Starts a server on 127.0.0.1 that counts connections, for the connect attack.
fn start_decoy() -> Result<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("start the decoy server")?;
    let port = listener.local_addr()?.port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf);
        }
    });
    Ok((port, hits))
}

fn attack_connect(demo: &mut Demo) -> Result<()> {
    let (port, hits) = start_decoy()?;
    demo.decoy = Some((port, hits.clone()));
    say(&format!(
        "a server on the host at 127.0.0.1:{port}; the profiled `nc` only ever connected to \
         redis at 127.0.0.1:{}",
        demo.port
    ));
    let script = format!("echo hi | nc -w 1 127.0.0.1 {port}; echo nc exit=$?");
    let (_, events) = attack_exec(demo, "attack-connect", &["sh", "-c", &script])?;
    let n = hits.load(Ordering::SeqCst);
    say(&format!("the server on {port} accepted {n} connection(s)"));
    let evidence = format!("{n} connection(s) reached 127.0.0.1:{port}");
    judge(
        demo,
        "connect to a new port",
        n == 0,
        evidence,
        &events,
        "cgroup-sock",
    );
    Ok(())
}

fn attack_syscall(demo: &mut Demo) -> Result<()> {
    say("busybox's chroot applet runs inside the profiled shell (a fork, no exec); redis never");
    say("called chroot(2), the first step of the classic chroot escape");
    let (out, events) = attack_exec(
        demo,
        "attack-chroot",
        &["sh", "-c", "chroot / /bin/true; echo chroot exit=$?"],
    )?;
    let prevented = out.stdout.contains("chroot exit=") && !out.stdout.contains("chroot exit=0");
    let evidence = if prevented {
        "chroot(2) failed with EPERM".to_string()
    } else {
        "chroot(2) succeeded".to_string()
    };
    judge(
        demo,
        "syscall chroot",
        prevented,
        evidence,
        &events,
        "seccomp-notify",
    );
    Ok(())
}

fn summary(demo: &mut Demo) -> Result<()> {
    say(&format!(
        "{:<26} {:<9} {:<15} evidence",
        "attack", "blocked?", "mechanism"
    ));
    for o in &demo.outcomes {
        say(&format!(
            "{:<26} {:<9} {:<15} {}",
            o.attack,
            if o.blocked { "yes" } else { "NO" },
            o.mechanism,
            o.evidence
        ));
    }
    let blocked = demo.outcomes.iter().filter(|o| o.blocked).count();
    say(&format!(
        "{blocked} of {} attacks blocked and reported; the learned load caused {} event(s)",
        demo.outcomes.len(),
        if demo.problems.iter().any(|p| p.contains("false positives")) {
            "some"
        } else {
            "no"
        }
    ));
    let c = demo.c()?;
    let out = vigil(
        demo,
        &[
            "audit",
            "tail",
            "--file",
            &c.audit_log().to_string_lossy(),
            "-n",
            "10",
        ],
    )?;
    say("$ vigil audit tail -n 10 --file <private audit log>");
    say(out.stdout.trim_end());
    Ok(())
}

fn stop_and_clean(demo: &mut Demo) -> Result<()> {
    stop_redis(demo, ENFORCE_ID)?;
    let c = demo.c()?;
    let left = c.leftovers();
    ensure!(left.is_empty(), "left behind: {left:?}");
    say("no process, mount, cgroup, fifo or runc state left");
    Ok(())
}
