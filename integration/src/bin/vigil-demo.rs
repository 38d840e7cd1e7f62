//! `vigil-demo`: vigil running a real application. Starts a private containerd (own config,
//! root, state and socket under a temporary folder; never the system's) with the vigil
//! runtime, imports the offline redis image, runs redis-server through
//! `io.containerd.vigil.v2`, talks to it, runs redis-benchmark against it, and tears
//! everything down, also on Ctrl-C or SIGTERM.
//!
//! The demo is a list of steps ([`STEPS`]), each a function on [`Demo`] printing
//! `[n/N] title` first; add a step by adding a function and a line.
//!
//! Usage: `vigil-demo [--prefix DIR] [--mode MODE] [--requests N]`. `--prefix` is where
//! `containerd-shim-vigil-v2` and `vigil` are installed (default /usr/local/bin); `--mode`
//! sets `vigil.dev/mode` on the container (default: none, the node's default).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use vigil_integration::cmd::{self, Output};
use vigil_integration::{paths, prereq, procs, Containerd, Image, Options, Run, Runtime};

/// The container's id.
const ID: &str = "vigil-demo-redis";

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
    ("run redis-server through vigil", run_redis),
    ("talk to it", talk),
    ("benchmark it with redis-benchmark", benchmark),
    ("stop it and clean up", stop_and_clean),
];

/// What the steps share.
struct Demo {
    prefix: PathBuf,
    mode: Option<String>,
    requests: u32,
    port: u16,
    shim_pid: Option<i32>,
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
            eprintln!("usage: vigil-demo [--prefix DIR] [--mode MODE] [--requests N]");
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
            1
        }
    };
    let clean = teardown();
    std::process::exit(if clean { rc } else { 1 });
}

fn parse_args() -> Result<Demo> {
    let mut demo = Demo {
        prefix: PathBuf::from("/usr/local/bin"),
        mode: None,
        requests: 50_000,
        port: 0,
        shim_pid: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--prefix" => demo.prefix = PathBuf::from(value()?),
            "--mode" => demo.mode = Some(value()?),
            "--requests" => demo.requests = value()?.parse().context("--requests")?,
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
    let doctor = Command::new(demo.prefix.join("vigil"))
        .arg("doctor")
        .env("VIGIL_CONFIG", c.vigil_config_path())
        .output();
    if let Ok(out) = doctor {
        say("vigil doctor:");
        say(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

fn import_image(demo: &mut Demo) -> Result<()> {
    let c = demo.c()?;
    let tar = Image::Redis.tar()?;
    say(&format!(
        "OCI layout built offline from this machine's redis-server and its libraries: {}",
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

fn run_redis(demo: &mut Demo) -> Result<()> {
    demo.port = free_port()?;
    let c = demo.c()?;
    let port = demo.port.to_string();
    let mut run = Run::new(Runtime::Vigil, Image::Redis, ID)
        .detach()
        .flags(&["--net-host", "--null-io"]);
    if let Some(mode) = &demo.mode {
        run = run.flags(&["--annotation", &format!("vigil.dev/mode={mode}")]);
    }
    let run = run.cmd(&[
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
        "ctr run -d --runtime {} --net-host {}{} {ID} redis-server --bind 127.0.0.1 --port {port}",
        Runtime::Vigil.runtime_type(),
        demo.mode
            .as_ref()
            .map(|m| format!("--annotation vigil.dev/mode={m} "))
            .unwrap_or_default(),
        Image::Redis.name()
    ));
    c.run(&run, Duration::from_secs(60))?.ok()?;
    let task = c.wait_task_status(ID, "RUNNING", Duration::from_secs(20))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", demo.port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "redis did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let shim = c.shim_pid(ID)?;
    demo.shim_pid = Some(shim);
    let exe = std::fs::read_link(format!("/proc/{shim}/exe"))?;
    say(&format!(
        "redis-server pid {} is listening on 127.0.0.1:{port}",
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
    Ok(())
}

fn show(out: &Output) {
    say(&format!("$ {}", short(&out.cmdline)));
    say(out.stdout.trim_end());
    if !out.stderr.trim().is_empty() {
        say(out.stderr.trim_end());
    }
}

/// A command line without the private socket and fifo folder, for reading.
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

fn talk(demo: &mut Demo) -> Result<()> {
    let c = demo.c()?;
    let out = c.ctr(&["task", "ls"])?.ok()?;
    show(&out);
    let out = c.ctr(&["task", "ps", ID])?.ok()?;
    show(&out);

    let out = redis_cli(demo, &["ping"])?;
    show(&out);
    ensure!(out.stdout.trim() == "PONG", "redis did not answer PING");
    let out = redis_cli(demo, &["set", "greeting", "hello from a vigil container"])?;
    show(&out);

    // An exec through the shim, reading back what the host wrote.
    let port = demo.port.to_string();
    let args = ["redis-cli", "-p", port.as_str(), "get", "greeting"];
    let out = c.exec(ID, "cli", &args, Duration::from_secs(30))?.ok()?;
    show(&out);
    ensure!(
        out.stdout.trim() == "hello from a vigil container",
        "exec in the container read {:?}",
        out.stdout
    );
    let out = redis_cli(demo, &["info", "server"])?;
    let version = out
        .stdout
        .lines()
        .find(|l| l.starts_with("redis_version"))
        .unwrap_or("");
    say(&format!("redis {version}"));
    Ok(())
}

fn benchmark(demo: &mut Demo) -> Result<()> {
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
    let out = cmd::run(&mut bench, None, Duration::from_secs(300))?.ok()?;
    say(&format!("$ {}", cmd::cmdline_of(&bench)));
    let results: Vec<&str> = out
        .stdout
        .split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .collect();
    ensure!(
        !results.is_empty(),
        "redis-benchmark printed no results: {}",
        out.describe()
    );
    for line in results {
        say(line.trim());
    }
    if let Some(shim) = demo.shim_pid {
        say(&format!(
            "vigil's shim after the benchmark: PSS {} KiB, {} threads",
            procs::pss_kib(shim)?,
            procs::thread_count(shim)?
        ));
    }
    Ok(())
}

fn stop_and_clean(demo: &mut Demo) -> Result<()> {
    let c = demo.c()?;
    let out = c.ctr(&["task", "kill", "-s", "SIGTERM", ID])?.ok()?;
    show(&out);
    c.wait_task_status(ID, "STOPPED", Duration::from_secs(30))?;
    let out = c.ctr(&["task", "delete", ID])?.ok()?;
    show(&out);
    c.ctr(&["container", "rm", ID])?.ok()?;
    if let Some(shim) = demo.shim_pid {
        let gone = procs::wait_gone(&[shim], Duration::from_secs(10)).is_empty();
        ensure!(gone, "vigil's shim {shim} outlived its container");
        say(&format!("shim {shim} exited with its container"));
    }
    let left = c.leftovers();
    ensure!(left.is_empty(), "left behind: {left:?}");
    say("no process, mount, cgroup, fifo or runc state left");
    Ok(())
}
