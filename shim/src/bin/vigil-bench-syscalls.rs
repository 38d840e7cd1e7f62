//! Prints what vigil's syscall tracepoints cost, and how its ring buffers keep up.
//!
//! Run as root: `cargo run --release -p vigil-shim --bin vigil-bench-syscalls [-- CALLS]`.
//! Uses a private pin root and private cgroups, removed at the end. Asserts nothing.
//!
//! Figures: getppid(2) loop cost for a process outside any container (no programs; node
//! loaded, nobody learning; one container learning; after learning ended), the same inside
//! the learning container, then events/s and losses under a storm of new items (opens of
//! distinct missing paths: every call is a new file entry and crosses the ring buffer).

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use vigil_shim::bpf::{cgroup2_mount, cgroup_id, Event, Mode, Node, RegisterRequest};

const DEFAULT_CALLS: u64 = 5_000_000;
const STORM_CALLS: u64 = 200_000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--loop") => child_loop(parse(args.get(2))?),
        Some("--storm") => child_storm(parse(args.get(2))?),
        other => bench(
            other
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(DEFAULT_CALLS),
        ),
    }
}

fn parse(arg: Option<&String>) -> Result<u64> {
    arg.context("missing count")?
        .parse()
        .context("count must be a number")
}

/// ns per getppid over `calls` calls.
fn getppid_ns(calls: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn child_loop(calls: u64) -> Result<()> {
    println!("{:.1}", getppid_ns(calls));
    Ok(())
}

/// Opens `calls` distinct missing paths as fast as it can; prints calls per second.
fn child_storm(calls: u64) -> Result<()> {
    let start = Instant::now();
    for i in 0..calls {
        let path = std::ffi::CString::new(format!("/nonexistent/vigil-storm/{i}"))?;
        // SAFETY: a NUL-terminated path; the call fails with ENOENT and returns no fd.
        unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    }
    println!("{:.0}", calls as f64 / start.elapsed().as_secs_f64());
    Ok(())
}

fn bench(calls: u64) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: the benchmark loads eBPF programs and creates cgroups");
    }
    let fx = Fixture::new()?;
    println!("getppid loop, {calls} calls, ns per call (lower is better)");
    row("outside, no vigil programs loaded", getppid_ns(calls));
    let node = Node::open(&fx.pins).context("open node")?;
    row(
        "outside, programs loaded, nothing learning",
        getppid_ns(calls),
    );

    let dir = fx.cgroup("learner")?;
    let exe = std::env::current_exe()?;
    let mut child = spawn_held(&dir, &exe, &format!("--loop {calls}"))?;
    let mut reg = node
        .register(&learner(&dir, child.id())?)
        .context("register learner")?;
    let mut events = reg.take_events()?.context("event reader")?;
    row("outside, one container learning", getppid_ns(calls));
    release(&mut child)?;
    let inside: f64 = read_line(child)?.trim().parse().context("child output")?;
    row("inside the learning container", inside);
    events.drain(&mut Vec::new());
    reg.unregister()?;
    row("outside, after learning ended", getppid_ns(calls));
    println!("sys_enter attached now: {}", node.syscall_hooks_attached());
    storm(&fx, &node, &exe)
}

fn storm(fx: &Fixture, node: &Node, exe: &Path) -> Result<()> {
    let dir = fx.cgroup("storm")?;
    let mut child = spawn_held(&dir, exe, &format!("--storm {STORM_CALLS}"))?;
    let mut reg = node
        .register(&learner(&dir, child.id())?)
        .context("register storm")?;
    let mut reader = reg.take_events()?.context("event reader")?;
    let mut batch = Vec::new();
    let (mut files, start) = (0u64, Instant::now());
    release(&mut child)?;
    while child.try_wait()?.is_none() {
        wait_readable(&reader, 50);
        files += count_files(&mut reader, &mut batch);
    }
    files += count_files(&mut reader, &mut batch);
    let secs = start.elapsed().as_secs_f64();
    let rate = read_line(child)?;
    println!("\nstorm: {STORM_CALLS} opens of distinct missing paths in one learning container");
    println!(
        "  container syscall rate        {:>12} opens/s",
        rate.trim()
    );
    println!(
        "  file events received         {files:>12} ({:.0} events/s)",
        files as f64 / secs
    );
    println!("  events lost (ring full)      {:>12}", reg.lost_events()?);
    reg.unregister()?;
    Ok(())
}

fn count_files(reader: &mut vigil_shim::bpf::EventReader, batch: &mut Vec<Event>) -> u64 {
    batch.clear();
    reader.drain(batch);
    batch.iter().filter(|e| matches!(e, Event::File(_))).count() as u64
}

/// Sleeps until the ring buffer has data (the kernel wakes epoll/poll waiters) or `ms` pass,
/// as the shim's async reader does, instead of spinning on the shared CPUs.
fn wait_readable(reader: &vigil_shim::bpf::EventReader, ms: i32) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: reader.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the ring buffer's descriptor, which outlives the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

fn row(what: &str, ns: f64) {
    println!("  {what:<45} {ns:>8.1}");
}

fn learner(dir: &Path, pid: u32) -> Result<RegisterRequest> {
    Ok(RegisterRequest {
        cgroup_id: cgroup_id(dir)?,
        init_pid: pid,
        mode: Mode::Learn,
        watch_syscalls: true,
        exec_allow: vec![],
        net_allow: vec![],
    })
}

/// Starts `exe args` in `cgroup`, held before its exec until [`release`].
fn spawn_held(cgroup: &Path, exe: &Path, args: &str) -> Result<Child> {
    let procs = cgroup.join("cgroup.procs");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("read _ && exec {} {args}", exe.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // SAFETY: the closure only writes a file and returns.
    unsafe {
        cmd.pre_exec(move || fs::write(&procs, "0"));
    }
    cmd.spawn().context("spawn child")
}

fn release(child: &mut Child) -> Result<()> {
    child
        .stdin
        .take()
        .context("child stdin")?
        .write_all(b"go\n")?;
    Ok(())
}

fn read_line(child: Child) -> Result<String> {
    let mut line = String::new();
    BufReader::new(child.stdout.context("child stdout")?).read_line(&mut line)?;
    Ok(line)
}

/// The private pin root and cgroups, removed on drop.
struct Fixture {
    pins: PathBuf,
    cgroups: PathBuf,
}

impl Fixture {
    fn new() -> Result<Fixture> {
        let tag = format!("vigil-bench-{}", std::process::id());
        let cgroups = cgroup2_mount()?.join(&tag);
        fs::create_dir_all(&cgroups)?;
        Ok(Fixture {
            pins: Path::new("/sys/fs/bpf").join(tag),
            cgroups,
        })
    }

    fn cgroup(&self, name: &str) -> Result<PathBuf> {
        let dir = self.cgroups.join(name);
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        remove_pins(&self.pins);
        if let Ok(entries) = fs::read_dir(&self.cgroups) {
            for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = fs::write(entry.path().join("cgroup.kill"), "1");
                let _ = fs::remove_dir(entry.path());
            }
        }
        let _ = fs::remove_dir(&self.cgroups);
    }
}

fn remove_pins(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            remove_pins(&entry.path());
        } else {
            let _ = fs::remove_file(entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}
