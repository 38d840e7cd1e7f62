//! The LSM tier's cases: each denial fails with EPERM before it takes effect and produces
//! the expected event; each allowed action of the same kind succeeds; the other cgroup is
//! unaffected; field cases V09 and V20.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use vigil_guest::layout::{ALLOWED_FILE, DROPPER, MERGED_ROOT, SECRET_FILE};
use vigil_shim::bpf::{Event, LsmHook, Mechanism, NetDirection, Verdict};

use crate::console::Reporter;
use crate::world::{self, probe, run, World};

/// A case's outcome: the detail of a pass, or why it failed.
type Outcome = Result<String, String>;
/// A named case.
type Case = (&'static str, fn(&mut World) -> Outcome);

/// Runs every case against `world`.
pub fn run_all(world: &mut World, report: &mut Reporter) {
    let cases: &[Case] = &[
        ("exec_allowed", exec_allowed),
        ("v20_denied_entrypoint_eperm", denied_entrypoint),
        ("exec_denied_from_shell", exec_denied_from_shell),
        ("open_read_denied", open_read_denied),
        ("open_write_denied", open_write_denied),
        ("open_allowed_exact_ids_prefix", open_allowed),
        ("connect_denied_and_allowed", connect),
        ("bind_denied_and_allowed", bind),
        ("ptrace_across_containers", ptrace),
        ("kill_across_containers", kill),
        ("mount_denied", mount),
        ("monitor_reports_and_allows", monitor),
        ("other_cgroup_unaffected", other_unaffected),
        ("v09_busybox_exec_identity", v09),
        ("no_events_lost", no_events_lost),
        ("unregister_stops_guarding", unregister),
    ];
    for (name, case) in cases {
        report.case(name, case(world));
    }
}

fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn eperm(result: Result<(), String>, what: &str) -> Result<(), String> {
    match result {
        Err(e) if e == "errno=1" => Ok(()),
        Err(e) => Err(format!("{what}: {e}, wanted errno=1 (EPERM)")),
        Ok(()) => Err(format!("{what}: succeeded, wanted EPERM")),
    }
}

fn allowed(result: Result<(), String>, what: &str) -> Result<(), String> {
    result.map_err(|e| format!("{what}: {e}, wanted success"))
}

fn exec_allowed(w: &mut World) -> Outcome {
    let ran = run(&w.enforced.cgroup, "/bin/cat", &[ALLOWED_FILE]);
    expect(
        ran.code == Some(0) && ran.stdout.trim() == "vigil-guest",
        || ran.describe(),
    )?;
    Ok("/bin/cat (busybox applet cat) ran and read /etc/hostname".into())
}

fn blocked_exec(path: &'static str) -> impl Fn(&Event) -> bool {
    move |e| {
        matches!(e, Event::Exec(x) if x.mechanism == Mechanism::Lsm
            && x.verdict == Verdict::Blocked && x.exe_path.as_deref() == Some(path))
    }
}

/// A process that has not exec'd in the container yet (as runc's init) execs a denied file.
fn denied_entrypoint(w: &mut World) -> Outcome {
    let marker = "/tmp/dropper-ran";
    let started = Instant::now();
    let ran = run(&w.enforced.cgroup, DROPPER, &[marker]);
    let elapsed = started.elapsed();
    let errno = ran.spawn_error.as_ref().and_then(|e| e.raw_os_error());
    expect(errno == Some(libc::EPERM), || {
        format!("exec {DROPPER}: {}", ran.describe())
    })?;
    expect(!Path::new(marker).exists(), || {
        format!("{marker} exists: the program ran")
    })?;
    expect(elapsed < Duration::from_secs(5), || {
        format!("took {elapsed:?}")
    })?;
    let found = w.enforced.find(blocked_exec(DROPPER));
    let count = w
        .enforced
        .events()
        .iter()
        .filter(|e| blocked_exec(DROPPER)(e))
        .count();
    expect(found.is_some() && count == 1, || {
        format!("{count} lsm exec events for {DROPPER}")
    })?;
    Ok(format!(
        "execve EPERM in {elapsed:?}, never ran, exactly one event (mechanism lsm)"
    ))
}

fn exec_denied_from_shell(w: &mut World) -> Outcome {
    let marker = "/tmp/dropper-ran-2";
    let script = format!("{DROPPER} {marker}; echo rc=$?");
    let ran = run(&w.enforced.cgroup, "/bin/sh", &["-c", &script]);
    expect(
        ran.stdout.contains("rc=126") || ran.stdout.contains("rc=127"),
        || ran.describe(),
    )?;
    expect(ran.stderr.contains("not permitted"), || ran.describe())?;
    expect(!Path::new(marker).exists(), || {
        format!("{marker} exists: the program ran")
    })?;
    Ok(format!("sh: {}", ran.stderr.trim()))
}

fn blocked_file(path: &'static str, write: bool) -> impl Fn(&Event) -> bool {
    move |e| {
        matches!(e, Event::File(f) if f.mechanism == Mechanism::Lsm && f.raw_path == path
            && f.result == -libc::EPERM && f.access.write == write)
    }
}

fn open_read_denied(w: &mut World) -> Outcome {
    eperm(
        probe(&w.enforced.cgroup, &["read", SECRET_FILE]),
        "open /etc/shadow for read",
    )?;
    let event = w.enforced.find(blocked_file(SECRET_FILE, false));
    expect(event.is_some(), || {
        format!("no lsm file event for {SECRET_FILE}")
    })?;
    Ok("open(O_RDONLY) of /etc/shadow: EPERM, event with access read".into())
}

fn open_write_denied(w: &mut World) -> Outcome {
    let before = std::fs::read_to_string(ALLOWED_FILE).unwrap_or_default();
    eperm(
        probe(&w.enforced.cgroup, &["write", ALLOWED_FILE]),
        "open /etc/hostname for write",
    )?;
    let event = w.enforced.find(blocked_file(ALLOWED_FILE, true));
    expect(event.is_some(), || {
        format!("no lsm write event for {ALLOWED_FILE}")
    })?;
    let after = std::fs::read_to_string(ALLOWED_FILE).unwrap_or_default();
    expect(before == after, || "the file changed".into())?;
    Ok("open(O_WRONLY) of a read-only-allowed file: EPERM, content unchanged".into())
}

fn open_allowed(w: &mut World) -> Outcome {
    let cg = &w.enforced.cgroup;
    allowed(
        probe(cg, &["read", ALLOWED_FILE]),
        "read /etc/hostname (exact rule)",
    )?;
    allowed(
        probe(cg, &["read", "/proc/self/maps"]),
        "read /proc/self/maps (/proc/*/maps)",
    )?;
    eperm(
        probe(cg, &["read", "/proc/self/status"]),
        "read /proc/self/status (no rule)",
    )?;
    std::fs::create_dir_all("/tmp/granted/deep").map_err(|e| format!("mkdir: {e}"))?;
    std::fs::write("/tmp/granted/deep/f", b"x").map_err(|e| format!("write: {e}"))?;
    allowed(
        probe(cg, &["write", "/tmp/granted/deep/f"]),
        "write below /tmp/granted/**",
    )?;
    Ok("exact, /proc/<pid>/maps via an id rule, and a folder rule: allowed".into())
}

fn blocked_net(direction: NetDirection, port: u16) -> impl Fn(&Event) -> bool {
    move |e| {
        matches!(e, Event::Net(n) if n.mechanism == Mechanism::Lsm && n.verdict == Verdict::Blocked
            && n.direction == direction && n.port == port)
    }
}

fn connect(w: &mut World) -> Outcome {
    let (ok, denied) = (world::ALLOWED_CONNECT_PORT, world::DENIED_CONNECT_PORT);
    let cg = &w.enforced.cgroup;
    eperm(
        probe(cg, &["connect", &denied.to_string()]),
        "connect 127.0.0.1:7003",
    )?;
    allowed(
        probe(cg, &["connect", &ok.to_string()]),
        "connect 127.0.0.1:7001",
    )?;
    let event = w.enforced.find(blocked_net(NetDirection::Connect, denied));
    expect(event.is_some(), || {
        "no lsm connect event for port 7003".into()
    })?;
    Ok("connect to a listening 127.0.0.1:7003 EPERM (event), :7001 allowed".into())
}

fn bind(w: &mut World) -> Outcome {
    let (ok, denied) = (world::ALLOWED_BIND_PORT, world::DENIED_BIND_PORT);
    let cg = &w.enforced.cgroup;
    eperm(
        probe(cg, &["bind", &denied.to_string()]),
        "bind 127.0.0.1:7004",
    )?;
    allowed(probe(cg, &["bind", &ok.to_string()]), "bind 127.0.0.1:7002")?;
    let event = w.enforced.find(blocked_net(NetDirection::Bind, denied));
    expect(event.is_some(), || "no lsm bind event for port 7004".into())?;
    Ok("bind :7004 EPERM (event), :7002 allowed".into())
}

/// A `sleep 30` in `cgroup`, killed when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn start(cgroup: &crate::cgroup::Cgroup) -> Result<Sleeper, String> {
        let child = cgroup.command("/bin/sleep", &["30"]).spawn();
        let child = child.map_err(|e| format!("start sleep in {}: {e}", cgroup.name))?;
        std::thread::sleep(Duration::from_millis(200)); // let it exec
        Ok(Sleeper(child))
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lsm_event(hook: LsmHook, verdict: Verdict, target: u32) -> impl Fn(&Event) -> bool {
    move |e| {
        matches!(e, Event::Lsm(l) if l.hook == hook && l.verdict == verdict
            && (target == 0 || l.target_pid == target))
    }
}

fn ptrace(w: &mut World) -> Outcome {
    let outside = Sleeper::start(&w.other)?;
    let inside = Sleeper::start(&w.enforced.cgroup)?;
    let cg = &w.enforced.cgroup;
    eperm(
        probe(cg, &["ptrace", &outside.pid()]),
        "PTRACE_ATTACH to another cgroup",
    )?;
    allowed(
        probe(cg, &["ptrace", &inside.pid()]),
        "PTRACE_ATTACH inside the container",
    )?;
    let target = outside.0.id();
    let event = w
        .enforced
        .find(lsm_event(LsmHook::Ptrace, Verdict::Blocked, target));
    expect(event.is_some(), || {
        format!("no lsm ptrace event for pid {target}")
    })?;
    Ok("attach to a process outside: EPERM (event); inside: allowed".into())
}

fn kill(w: &mut World) -> Outcome {
    let outside = Sleeper::start(&w.other)?;
    let inside = Sleeper::start(&w.enforced.cgroup)?;
    let cg = &w.enforced.cgroup;
    eperm(
        probe(cg, &["kill", &outside.pid()]),
        "kill(pid, 0) to another cgroup",
    )?;
    allowed(
        probe(cg, &["kill", &inside.pid()]),
        "kill(pid, 0) inside the container",
    )?;
    let target = outside.0.id();
    let event = w
        .enforced
        .find(lsm_event(LsmHook::Kill, Verdict::Blocked, target));
    expect(event.is_some(), || {
        format!("no lsm kill event for pid {target}")
    })?;
    Ok("signal to a process outside: EPERM (event); inside: allowed".into())
}

fn mount(w: &mut World) -> Outcome {
    eperm(
        probe(&w.enforced.cgroup, &["mount", "/tmp/mnt-enforced"]),
        "mount tmpfs",
    )?;
    let event = w
        .enforced
        .find(lsm_event(LsmHook::Mount, Verdict::Blocked, 0));
    let text = match event {
        Some(Event::Lsm(l)) => l.text,
        _ => return Err("no lsm mount event".into()),
    };
    expect(text == "/tmp/mnt-enforced", || {
        format!("mount event names {text:?}")
    })?;
    Ok("mount(2) without a mount rule: EPERM, event names the mount point".into())
}

fn monitor(w: &mut World) -> Outcome {
    let cg = w.monitored.cgroup.clone();
    allowed(
        probe(&cg, &["read", SECRET_FILE]),
        "monitor: read /etc/shadow",
    )?;
    let event = w.monitored.find(|e| {
        matches!(e, Event::File(f) if f.mechanism == Mechanism::Lsm && f.raw_path == SECRET_FILE
            && f.result == 0)
    });
    expect(event.is_some(), || {
        "no monitor file event for /etc/shadow".into()
    })?;
    let marker = "/tmp/dropper-ran-monitor";
    let ran = run(&cg, DROPPER, &[marker]);
    expect(ran.code == Some(0) && Path::new(marker).exists(), || {
        ran.describe()
    })?;
    Ok("deviations allowed; file deviation reported with mechanism lsm".into())
}

fn other_unaffected(w: &mut World) -> Outcome {
    let cg = &w.other;
    let marker = "/tmp/dropper-ran-other";
    let ran = run(cg, DROPPER, &[marker]);
    expect(ran.code == Some(0) && Path::new(marker).exists(), || {
        ran.describe()
    })?;
    allowed(probe(cg, &["read", SECRET_FILE]), "read /etc/shadow")?;
    allowed(probe(cg, &["write", ALLOWED_FILE]), "write /etc/hostname")?;
    allowed(
        probe(cg, &["connect", &world::DENIED_CONNECT_PORT.to_string()]),
        "connect",
    )?;
    allowed(
        probe(cg, &["bind", &world::DENIED_BIND_PORT.to_string()]),
        "bind",
    )?;
    allowed(probe(cg, &["mount", "/tmp/mnt-other"]), "mount")?;
    Ok("every action denied in the enforced cgroup succeeds in an unregistered one".into())
}

fn killed_nc(e: &Event) -> bool {
    matches!(e, Event::Exec(x) if x.verdict == Verdict::Killed
        && x.argv.first().is_some_and(|a| a.ends_with("nc")))
}

fn v09(w: &mut World) -> Outcome {
    let cg = &w.enforced.cgroup;
    let cat = "cat /etc/hostname >/dev/null; /bin/cat /etc/hostname";
    let ran = run(cg, "/bin/sh", &["-c", cat]);
    expect(
        ran.code == Some(0) && ran.stdout.trim() == "vigil-guest",
        || ran.describe(),
    )?;
    let nc = "nc -w1 127.0.0.1 9 </dev/null; /bin/nc -w1 127.0.0.1 9 </dev/null; echo after";
    let ran = run(cg, "/bin/sh", &["-c", nc]);
    expect(ran.stdout.trim() == "after", || ran.describe())?;
    let merged_cat = run(cg, &format!("{MERGED_ROOT}/bin/cat"), &[ALLOWED_FILE]);
    expect(merged_cat.code == Some(0), || {
        format!("merged cat: {}", merged_cat.describe())
    })?;
    let merged_nc = run(
        cg,
        &format!("{MERGED_ROOT}/usr/bin/nc"),
        &["-w1", "127.0.0.1", "9"],
    );
    expect(merged_nc.signal == Some(9), || {
        format!("merged nc: {}", merged_nc.describe())
    })?;
    let _ = w.enforced.find(killed_nc);
    let kills: Vec<String> = w
        .enforced
        .events()
        .iter()
        .filter(|e| killed_nc(e))
        .map(exe)
        .collect();
    expect(kills.len() == 3, || {
        format!("nc kill events: {kills:?}, wanted 3")
    })?;
    Ok(format!(
        "cat in every spelling ran; nc killed at exec 3 times: {kills:?}"
    ))
}

fn exe(e: &Event) -> String {
    match e {
        Event::Exec(x) => format!("{} as {}", x.exe_path.as_deref().unwrap_or("?"), x.invoked),
        _ => String::new(),
    }
}

/// Without the LSM tier a denied exec starts and is killed before its first instruction.
pub fn fallback_kill(w: &mut World) -> Outcome {
    let marker = "/tmp/dropper-ran-fallback";
    let ran = run(&w.enforced.cgroup, DROPPER, &[marker]);
    expect(ran.signal == Some(libc::SIGKILL), || ran.describe())?;
    expect(!Path::new(marker).exists(), || {
        format!("{marker} exists: the program ran")
    })?;
    let killed = w.enforced.find(|e| {
        matches!(e, Event::Exec(x) if x.verdict == Verdict::Killed
            && x.mechanism == Mechanism::Tracing && x.exe_path.as_deref() == Some(DROPPER))
    });
    expect(killed.is_some(), || "no killed exec event".into())?;
    Ok("execve succeeded, then SIGKILL at sched_process_exec; event mechanism tracing".into())
}

/// After Delete's unregister the cgroup is an ordinary one again; the programs stay.
fn unregister(w: &mut World) -> Outcome {
    let registration = w
        .enforced
        .registration
        .take()
        .ok_or("already unregistered")?;
    registration
        .unregister()
        .map_err(|e| format!("unregister: {e}"))?;
    let marker = "/tmp/dropper-ran-after";
    let ran = run(&w.enforced.cgroup, DROPPER, &[marker]);
    expect(ran.code == Some(0) && Path::new(marker).exists(), || {
        ran.describe()
    })?;
    expect(matches!(w.node.tier(), vigil_shim::bpf::Tier::Lsm), || {
        "LSM tier gone".into()
    })?;
    Ok("the dropper runs once the cgroup is unregistered; LSM programs stay attached".into())
}

/// Without the LSM tier an exec the profile allows runs: the fallback's own path hash and
/// applet check admit it (a wrong hash in the kernel would kill it).
pub fn fallback_allows(w: &mut World) -> Outcome {
    let ran = run(&w.enforced.cgroup, "/bin/cat", &[ALLOWED_FILE]);
    expect(
        ran.code == Some(0) && ran.stdout.trim() == "vigil-guest",
        || ran.describe(),
    )?;
    let sh = run(&w.enforced.cgroup, "/bin/sh", &["-c", "cat /etc/hostname"]);
    expect(
        sh.code == Some(0) && sh.stdout.trim() == "vigil-guest",
        || sh.describe(),
    )?;
    Ok("/bin/cat and a /proc/self/exe re-exec of cat ran under the fallback tier".into())
}

/// Every event of the run reached user space (the benchmark's thousand execs included).
fn no_events_lost(w: &mut World) -> Outcome {
    let mut counts = Vec::new();
    for guarded in [&w.enforced, &w.monitored] {
        let registration = guarded
            .registration
            .as_ref()
            .ok_or("unregistered too early")?;
        let lost = registration
            .lost_events()
            .map_err(|e| format!("lost count: {e}"))?;
        counts.push(format!("{} lost {lost}", guarded.cgroup.name));
        expect(lost == 0, || counts.join(", "))?;
    }
    Ok(counts.join(", "))
}
