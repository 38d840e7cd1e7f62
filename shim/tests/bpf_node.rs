//! Privileged tests of the eBPF loader and programs: a private pin root under /sys/fs/bpf,
//! cgroups created under the cgroup2 mount, processes forked into them. They skip with a
//! printed reason when not root or when bpffs, BTF or the programs are missing.

use std::{
    fs,
    io::Write,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use vigil_shim::bpf::{
    cgroup2_mount, cgroup_id, Event, ExecInfo, ExecRule, Mode, NetDirection, NetRule, Node,
    Protocol, RegisterRequest, Verdict,
};

/// The tests share kernel state (tracepoints, cgroups): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new(vigil_shim::bpf::VMLINUX_BTF).exists() {
        return Some("kernel has no BTF at /sys/kernel/btf/vmlinux".into());
    }
    if !ensure_bpffs() {
        return Some("no bpffs at /sys/fs/bpf and mounting one failed".into());
    }
    if cgroup2_mount().is_err() {
        return Some("no cgroup2 mount".into());
    }
    if Command::new("bpftool").arg("version").output().is_err() {
        return Some("bpftool missing (package bpftool): needed to check links".into());
    }
    None
}

/// Mounts bpffs at /sys/fs/bpf when it is absent (as `mount -t bpf bpf /sys/fs/bpf`).
fn ensure_bpffs() -> bool {
    let is_bpffs = || {
        // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let ok = unsafe { libc::statfs(c"/sys/fs/bpf".as_ptr(), &mut st) } == 0;
        ok && st.f_type as i64 == 0xcafe_4a11
    };
    if is_bpffs() {
        return true;
    }
    let _ = Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status();
    is_bpffs()
}

macro_rules! require_privileges {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

/// A private pin root and cgroups, removed on drop (also when the test fails).
struct Fixture {
    pins: PathBuf,
    cgroup_root: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let tag = format!("vigil-test-{}-{name}", std::process::id());
        let pins = Path::new("/sys/fs/bpf").join(&tag);
        let cgroup_root = cgroup2_mount().unwrap().join(&tag);
        fs::create_dir_all(&cgroup_root).unwrap();
        Fixture { pins, cgroup_root }
    }

    fn cgroup(&self, name: &str) -> (PathBuf, u64) {
        let dir = self.cgroup_root.join(name);
        fs::create_dir_all(&dir).unwrap();
        let id = cgroup_id(&dir).unwrap();
        (dir, id)
    }

    fn open(&self) -> Node {
        match Node::open(&self.pins) {
            Ok(node) => node,
            Err(vigil_shim::bpf::BpfError::NoPrograms) => {
                panic!("the shim was built in stub mode: unset VIGIL_EBPF_STUB")
            }
            Err(e) => panic!("open node: {e}"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        remove_tree(&self.pins, false);
        remove_tree(&self.cgroup_root, true);
    }
}

/// Removes pins (files) or cgroups (dirs only; their processes are killed first).
fn remove_tree(dir: &Path, cgroups: bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&path, cgroups);
        } else if !cgroups {
            let _ = fs::remove_file(&path);
        }
    }
    if cgroups {
        let _ = fs::write(dir.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if fs::remove_dir(dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Starts `bash -c script` inside `cgroup`, held before its exec until [`release`] (like a
/// container's init after `runc create`).
fn spawn_held(cgroup: &Path, script: &str) -> Child {
    spawn_held_exec(cgroup, &format!("/bin/bash -c '{script}'"))
}

/// Like [`spawn_held`], exec'ing `command` (a shell word list) when released.
fn spawn_held_exec(cgroup: &Path, command: &str) -> Child {
    let procs = cgroup.join("cgroup.procs");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("read _ && exec {command}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only writes a file and returns; no allocation-sensitive state.
    unsafe {
        cmd.pre_exec(move || fs::write(&procs, "0"));
    }
    cmd.spawn().expect("spawn held child")
}

fn release(child: &mut Child) {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn drain_for(reader: &mut vigil_shim::bpf::EventReader, wait: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    let end = Instant::now() + wait;
    while Instant::now() < end {
        reader.drain(&mut events);
        std::thread::sleep(Duration::from_millis(20));
    }
    events
}

fn learn(cgroup_id: u64, pid: u32) -> RegisterRequest {
    RegisterRequest {
        cgroup_id,
        init_pid: pid,
        mode: Mode::Learn,
        watch_syscalls: true,
        exec_allow: vec![],
        net_allow: vec![],
    }
}

#[test]
fn learning_records_syscalls_exec_files_and_connects() {
    require_privileges!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Fixture::new("learn");
    let node = fx.open();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (dir, id) = fx.cgroup("c1");
    let script = format!(
        "cat /etc/hostname >/dev/null; exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"
    );
    let mut child = spawn_held(&dir, &script);
    let mut reg = node.register(&learn(id, child.id())).unwrap();
    let mut reader = reg.take_events().unwrap().unwrap();
    release(&mut child);
    let (code, out) = finish(child);
    assert_eq!((code, out.trim()), (0, "connected"));
    let events = drain_for(&mut reader, Duration::from_millis(300));

    let syscalls: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Syscall { nr, .. } => Some(*nr),
            _ => None,
        })
        .collect();
    assert!(syscalls.contains(&257), "openat missing from {syscalls:?}");
    assert!(syscalls.contains(&42), "connect missing from {syscalls:?}");
    let mut unique = syscalls.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        syscalls.len(),
        "a syscall number was reported twice"
    );

    let cat = events.iter().find_map(|e| match e {
        Event::Exec(x) if x.argv.first().map(String::as_str) == Some("cat") => Some(x),
        _ => None,
    });
    let cat = cat.unwrap_or_else(|| panic!("no exec of cat in {events:#?}"));
    assert_eq!(cat.argv, ["cat", "/etc/hostname"]);
    assert!(
        cat.exe_path.as_deref().unwrap().ends_with("bin/cat"),
        "{cat:?}"
    );
    assert_eq!(cat.parent_comm, "bash");
    assert_eq!(cat.process.exec_session, None);

    let hostname = events.iter().any(|e| {
        matches!(e, Event::File(f) if f.path.as_deref() == Some("/etc/hostname")
            && f.access.read && !f.access.write && f.result >= 0)
    });
    assert!(hostname, "no read open of /etc/hostname in {events:#?}");

    let connect = events.iter().any(|e| {
        matches!(e, Event::Net(n) if n.direction == NetDirection::Connect
            && n.protocol == Protocol::Tcp && n.port == port
            && n.addr == std::net::IpAddr::from([127, 0, 0, 1]) && n.verdict == Verdict::Observed)
    });
    assert!(connect, "no connect to 127.0.0.1:{port} in {events:#?}");
    assert_eq!(reg.lost_events().unwrap(), 0);
    reg.unregister().unwrap();
}

/// A TCP server in a cgroup: listens on 127.0.0.1 (an IPv4 socket, accepted twice, once with
/// the accept syscall and once with accept4) and on ::ffff:127.0.0.1 (a dual-stack IPv6
/// socket, whose accepted IPv4 connection is v4-mapped), prints both ports, accepts three
/// connections, prints "done".
const ACCEPT_SERVER: &str = r#"
import ctypes, socket
v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
v4.bind(("127.0.0.1", 0)); v4.listen(4)
v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
v6.bind(("::ffff:127.0.0.1", 0)); v6.listen(4)
print(v4.getsockname()[1], v6.getsockname()[1], flush=True)
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.syscall(43, v4.fileno(), None, None)  # accept(2)
assert fd >= 0, ctypes.get_errno()
v4.accept()  # accept4(2)
v6.accept()
print("done", flush=True)
"#;

/// Starts [`ACCEPT_SERVER`] held in `cgroup`; returns it with the script's file.
fn spawn_accept_server(cgroup: &Path, name: &str) -> (Child, PathBuf) {
    let script =
        std::env::temp_dir().join(format!("vigil-accept-{}-{name}.py", std::process::id()));
    fs::write(&script, ACCEPT_SERVER).unwrap();
    let child = spawn_held_exec(cgroup, &format!("{PYTHON} {}", script.display()));
    (child, script)
}

/// Connects three times to a released [`ACCEPT_SERVER`]; returns its (IPv4, IPv6) ports.
fn drive_accept_server(child: &mut Child) -> (u16, u16) {
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "server printed {line:?}");
    for port in [ports[0], ports[0], ports[1]] {
        let _conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    (ports[0], ports[1])
}

#[test]
fn learning_records_accepted_connections() {
    require_privileges!();
    if !Path::new(PYTHON).exists() {
        eprintln!("skipping: {PYTHON} missing");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Fixture::new("accept");
    let node = fx.open();
    let (learn_dir, learn_id) = fx.cgroup("learner");
    let (mon_dir, mon_id) = fx.cgroup("monitor");
    let (other_dir, _) = fx.cgroup("other");
    let (mut learner, script1) = spawn_accept_server(&learn_dir, "learner");
    let (mut monitored, script2) = spawn_accept_server(&mon_dir, "monitor");
    let (mut outsider, script3) = spawn_accept_server(&other_dir, "other");
    let mut reg = node.register(&learn(learn_id, learner.id())).unwrap();
    let mut reader = reg.take_events().unwrap().unwrap();
    // A registered container that does not learn (monitor without syscall tracepoints).
    let monitor = RegisterRequest {
        mode: Mode::Monitor,
        watch_syscalls: false,
        ..learn(mon_id, monitored.id())
    };
    let mut mon_reg = node.register(&monitor).unwrap();
    let mut mon_reader = mon_reg.take_events().unwrap().unwrap();

    let learner_pid = learner.id();
    let mut ports = Vec::new();
    for child in [&mut learner, &mut monitored, &mut outsider] {
        release(child);
        ports.push(drive_accept_server(child));
    }
    for (child, script) in [
        (learner, script1),
        (monitored, script2),
        (outsider, script3),
    ] {
        assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
        let _ = fs::remove_file(script);
    }
    let events = drain_for(&mut reader, Duration::from_millis(300));
    let mon_events = drain_for(&mut mon_reader, Duration::from_millis(50));

    let accepts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Net(n) if n.direction == NetDirection::Accept => Some(n),
            _ => None,
        })
        .collect();
    let (v4_port, v6_port) = ports[0];
    for port in [v4_port, v6_port] {
        // Two accepts on the IPv4 port (accept, accept4) fold into one record.
        let on_port: Vec<_> = accepts.iter().filter(|n| n.port == port).collect();
        assert_eq!(on_port.len(), 1, "accepts on {port}: {accepts:#?}");
        let n = on_port[0];
        assert_eq!(
            (n.protocol, n.addr, n.verdict, n.process.pid),
            (
                Protocol::Tcp,
                std::net::IpAddr::from([127, 0, 0, 1]),
                Verdict::Observed,
                learner_pid
            ),
            "{n:?}"
        );
    }
    assert_eq!(accepts.len(), 2, "unexpected accepts: {accepts:#?}");
    let mon_accepts = mon_events
        .iter()
        .filter(|e| matches!(e, Event::Net(n) if n.direction == NetDirection::Accept))
        .count();
    assert_eq!(
        mon_accepts, 0,
        "accepts recorded for a container that does not learn"
    );
    assert_eq!(reg.lost_events().unwrap(), 0);
    mon_reg.unregister().unwrap();
    reg.unregister().unwrap();
}

#[test]
fn enforce_kills_unknown_execs_and_blocks_unknown_connects() {
    require_privileges!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Fixture::new("enforce");
    let node = fx.open();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let (p1, p2) = (
        allowed.local_addr().unwrap().port(),
        denied.local_addr().unwrap().port(),
    );
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("marker");
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{p1} && echo ok1; exec 4<>/dev/tcp/127.0.0.1/{p2} \
         || echo blocked2; touch {m}; echo after",
        m = marker.display()
    );
    let (dir, id) = fx.cgroup("enforced");
    let mut child = spawn_held(&dir, &script);
    let bash = fs::canonicalize("/bin/bash")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let req = RegisterRequest {
        cgroup_id: id,
        init_pid: child.id(),
        mode: Mode::Enforce,
        watch_syscalls: false,
        exec_allow: vec![ExecRule::Path(bash)],
        net_allow: vec![NetRule {
            direction: NetDirection::Connect,
            protocol: Protocol::Tcp,
            addr: [127, 0, 0, 1].into(),
            prefix_len: 32,
            port: Some(p1),
        }],
    };
    let mut reg = node.register(&req).unwrap();
    assert!(
        !node.syscall_hooks_attached(),
        "enforce alone must not attach sys_enter"
    );
    let mut reader = reg.take_events().unwrap().unwrap();
    release(&mut child);
    let (_, out) = finish(child);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["ok1", "blocked2", "after"]
    );
    assert!(!marker.exists(), "the killed touch ran");
    let events = drain_for(&mut reader, Duration::from_millis(300));
    let killed = events.iter().any(|e| {
        matches!(e, Event::Exec(x) if x.verdict == Verdict::Killed
            && x.exe_path.as_deref().is_some_and(|p| p.ends_with("bin/touch")))
    });
    assert!(killed, "no killed exec of touch in {events:#?}");
    let blocked = events
        .iter()
        .any(|e| matches!(e, Event::Net(n) if n.verdict == Verdict::Blocked && n.port == p2));
    assert!(blocked, "no blocked connect to {p2} in {events:#?}");

    // Another cgroup is not affected.
    let (other, _) = fx.cgroup("other");
    let mut child = spawn_held(&other, &script);
    release(&mut child);
    let (_, out) = finish(child);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["ok1", "after"]);
    assert!(
        marker.exists(),
        "touch outside the enforced cgroup must run"
    );
    reg.unregister().unwrap();
}

#[test]
fn sys_enter_follows_learners_and_nodes_share_programs() {
    require_privileges!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Fixture::new("share");
    let first = fx.open();
    let exec_prog = prog_id(&first.pin_dir().join("progs/vigil_sched_exec"));
    let second = fx.open();
    assert_eq!(first.pin_dir(), second.pin_dir());
    assert_eq!(
        exec_prog,
        prog_id(&second.pin_dir().join("progs/vigil_sched_exec"))
    );
    let sys_enter = prog_id(&first.pin_dir().join("progs/vigil_sys_enter"));
    assert!(
        !kernel_has_link(sys_enter),
        "sys_enter attached with no learner"
    );

    let (dir, id) = fx.cgroup("learner");
    let mut child = spawn_held(&dir, "true");
    let mut reg = second.register(&learn(id, child.id())).unwrap();
    assert!(
        kernel_has_link(sys_enter),
        "sys_enter not attached while learning"
    );
    assert!(first.syscall_hooks_attached());
    let mut reader = reg.take_events().unwrap().unwrap();
    reg.unregister().unwrap();
    assert!(
        !kernel_has_link(sys_enter),
        "sys_enter still attached after the learner left"
    );

    // Nothing is recorded after unregister.
    release(&mut child);
    finish(child);
    assert_eq!(drain_for(&mut reader, Duration::from_millis(200)), vec![]);
}

#[test]
fn reconcile_drops_a_crashed_shims_registration() {
    require_privileges!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Fixture::new("reconcile");
    let node = fx.open();
    let sys_enter = prog_id(&node.pin_dir().join("progs/vigil_sys_enter"));
    let (dir, id) = fx.cgroup("crashed");
    let mut child = spawn_held(&dir, "true");
    let reg = node.register(&learn(id, child.id())).unwrap();
    drop(reg); // the shim "crashes": no unregister
    release(&mut child);
    finish(child);
    fs::remove_dir(&dir).unwrap();
    assert!(kernel_has_link(sys_enter));
    let reopened = fx.open(); // a later shim's start reconciles
    assert!(
        !kernel_has_link(sys_enter),
        "a vanished learner kept sys_enter attached"
    );
    assert!(!reopened.pin_dir().join(format!("links/cg-{id}")).exists());
}

#[test]
fn busybox_applets_exec_sessions_and_renames() {
    require_privileges!();
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipping: {BUSYBOX} missing (package busybox-static)");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Fixture::new("busybox");
    let node = fx.open();
    let (dir, id) = fx.cgroup("learner");
    let mut init = spawn_held_exec(
        &dir,
        &format!("{BUSYBOX} sh -c 'id -u >/dev/null; sleep 1'"),
    );
    let mut reg = node.register(&learn(id, init.id())).unwrap();
    let mut reader = reg.take_events().unwrap().unwrap();
    release(&mut init);
    // A second process entering the cgroup from outside, like `runc exec`.
    let mut session = spawn_held_exec(&dir, "/bin/cat /etc/hostname");
    let session_pid = session.id();
    release(&mut session);
    finish(session);
    finish(init);
    let events = drain_for(&mut reader, Duration::from_millis(300));

    let sleep = exec_with_argv0(&events, "sleep").expect("exec of the sleep applet");
    assert_eq!(sleep.invoked, "/proc/self/exe");
    assert_eq!(sleep.exe_path.as_deref(), Some(BUSYBOX));
    assert_eq!(sleep.process.exec_session, None);
    let renamed = events.iter().any(|e| {
        matches!(e, Event::Rename { process, new_comm } if new_comm == "id"
            && process.exec_session.is_none())
    });
    assert!(
        renamed,
        "no rename to `id` (busybox no-exec applet) in {events:#?}"
    );
    let cat = exec_with_argv0(&events, "/bin/cat").expect("exec in the session");
    assert_eq!(
        (cat.process.pid, cat.process.exec_session),
        (session_pid, Some(session_pid))
    );
    reg.unregister().unwrap();
}

#[test]
fn enforce_tells_busybox_applets_apart() {
    require_privileges!();
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipping: {BUSYBOX} missing (package busybox-static)");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Fixture::new("applets");
    let node = fx.open();
    let (dir, id) = fx.cgroup("enforced");
    let script = "cat /etc/hostname >/dev/null && echo cat-ok; nc -w1 127.0.0.1 9 </dev/null; \
                  echo after";
    let mut child = spawn_held_exec(&dir, &format!("{BUSYBOX} sh -c '{script}'"));
    let applet = |name: &str| ExecRule::Applet {
        path: BUSYBOX.into(),
        name: name.into(),
    };
    let req = RegisterRequest {
        cgroup_id: id,
        init_pid: child.id(),
        mode: Mode::Enforce,
        watch_syscalls: false,
        exec_allow: vec![applet("busybox"), applet("cat")],
        net_allow: vec![],
    };
    let mut reg = node.register(&req).unwrap();
    let mut reader = reg.take_events().unwrap().unwrap();
    release(&mut child);
    let (_, out) = finish(child);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["cat-ok", "after"]);
    let events = drain_for(&mut reader, Duration::from_millis(300));
    let nc = exec_with_argv0(&events, "nc").expect("exec of nc");
    assert_eq!(
        (nc.verdict, nc.exe_path.as_deref()),
        (Verdict::Killed, Some(BUSYBOX))
    );
    assert_eq!(nc.argv, ["nc", "-w1", "127.0.0.1", "9"]);
    assert_eq!(
        exec_with_argv0(&events, "cat").map(|c| c.verdict),
        Some(Verdict::Allowed)
    );
    reg.unregister().unwrap();
}

#[test]
fn concurrent_first_starts_load_once() {
    require_privileges!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fx = Fixture::new("race");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let pins = fx.pins.clone();
            std::thread::spawn(move || Node::open(&pins).map(|n| n.pin_dir()))
        })
        .collect();
    let dirs: Vec<PathBuf> = opens
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(dirs.windows(2).all(|w| w[0] == w[1]));
    // A second load would have replaced the first one's pins and links: the pinned exec
    // program is the one the kernel has a link for, and it has exactly one.
    let exec = prog_id(&dirs[0].join("progs/vigil_sched_exec"));
    assert_eq!(link_count(exec), 1);
}

/// Debian's busybox-static, resolved (merged /usr: /bin -> usr/bin).
const BUSYBOX: &str = "/usr/bin/busybox";

/// Debian's python3 (not a version manager's shim script).
const PYTHON: &str = "/usr/bin/python3";

fn exec_with_argv0<'a>(events: &'a [Event], argv0: &str) -> Option<&'a ExecInfo> {
    events.iter().find_map(|e| match e {
        Event::Exec(x) if x.argv.first().map(String::as_str) == Some(argv0) => Some(x),
        _ => None,
    })
}

/// The id of a pinned program, from bpftool.
fn prog_id(pin: &Path) -> u64 {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "pinned"])
        .arg(pin)
        .output();
    let out = out.expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v["id"].as_u64().expect("program id")
}

/// Whether the kernel has a link for program `id` (independent of vigil's own pins).
fn kernel_has_link(id: u64) -> bool {
    link_count(id) > 0
}

/// How many links the kernel has for program `id`.
fn link_count(id: u64) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let links = v.as_array().into_iter().flatten();
    links.filter(|l| l["prog_id"].as_u64() == Some(id)).count()
}
