//! The guest's fixture: the node's program set, test cgroups, two registrations (enforce
//! and monitor) with small allow lists, loopback listeners, and running commands in a
//! cgroup.

use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use vigil_guest::layout;
use vigil_shim::bpf::{
    Event, EventReader, ExecRule, FileRule, LsmPolicy, Mode, NetDirection, NetRule, Node, Protocol,
    RegisterRequest, Registration,
};

use crate::cgroup::Cgroup;

/// Where the guest pins the program set (a folder of its own, as tests must).
pub const PIN_ROOT: &str = "/sys/fs/bpf/vigil-guest";
/// Listener the enforced container may connect to.
pub const ALLOWED_CONNECT_PORT: u16 = 7001;
/// Local port the enforced container may bind.
pub const ALLOWED_BIND_PORT: u16 = 7002;
/// Listener the enforced container may not connect to (it exists: a refusal is the hook's).
pub const DENIED_CONNECT_PORT: u16 = 7003;
/// Local port the enforced container may not bind.
pub const DENIED_BIND_PORT: u16 = 7004;
/// UDP peer of the connect benchmark (allowed).
pub const BENCH_UDP_PORT: u16 = 7005;
/// Applets of /bin/busybox the enforced container may run (not `nc`: V09).
const APPLETS: &[&str] = &["sh", "cat", "echo", "true", "sleep", "touch"];

/// A registered test cgroup with its events.
pub struct Guarded {
    pub cgroup: Cgroup,
    /// `None` once a case unregistered it.
    pub registration: Option<Registration>,
    reader: EventReader,
    seen: Vec<Event>,
}

impl Guarded {
    /// Every event received so far (drains the ring buffer first).
    pub fn events(&mut self) -> &[Event] {
        self.reader.drain(&mut self.seen);
        &self.seen
    }

    /// Reads and drops every event received so far (the benchmark's execs).
    pub fn discard_events(&mut self) {
        self.events();
        self.seen.clear();
    }

    /// The first event matching `wanted`, waiting up to a second for it to arrive.
    pub fn find(&mut self, wanted: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if let Some(event) = self.events().iter().find(|e| wanted(e)) {
                return Some(event.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Everything the cases use.
pub struct World {
    pub node: Node,
    pub enforced: Guarded,
    pub monitored: Guarded,
    /// A cgroup nobody registered.
    pub other: Cgroup,
}

impl World {
    /// Opens (loads and pins) the program set and registers the two guarded cgroups.
    pub fn open() -> Result<World, String> {
        let node = Node::open(Path::new(PIN_ROOT)).map_err(|e| format!("open node: {e}"))?;
        let enforced = register(&node, Cgroup::create("enforced")?, Mode::Enforce)?;
        let monitored = register(&node, Cgroup::create("monitored")?, Mode::Monitor)?;
        let other = Cgroup::create("other")?;
        Ok(World {
            node,
            enforced,
            monitored,
            other,
        })
    }
}

fn register(node: &Node, cgroup: Cgroup, mode: Mode) -> Result<Guarded, String> {
    register_with(node, cgroup, mode, exec_rules(), net_rules(), &lsm_policy())
}

/// Registers `cgroup` with these allow lists (what a compiled profile gives the node).
pub fn register_with(
    node: &Node,
    cgroup: Cgroup,
    mode: Mode,
    exec_allow: Vec<ExecRule>,
    net_allow: Vec<NetRule>,
    policy: &LsmPolicy,
) -> Result<Guarded, String> {
    let request = RegisterRequest {
        cgroup_id: cgroup.id,
        init_pid: 0,
        mode,
        watch_syscalls: false,
        exec_allow,
        net_allow,
    };
    let what = |step: &str, e: &dyn std::fmt::Display| format!("{step} {}: {e}", cgroup.name);
    let mut registration = node.register(&request).map_err(|e| what("register", &e))?;
    registration
        .set_lsm_policy(policy)
        .map_err(|e| what("set LSM policy of", &e))?;
    let reader = registration
        .take_events()
        .map_err(|e| what("events of", &e))?
        .ok_or_else(|| what("events of", &"already taken"))?;
    Ok(Guarded {
        cgroup,
        registration: Some(registration),
        reader,
        seen: Vec::new(),
    })
}

fn exec_rules() -> Vec<ExecRule> {
    let applet = |path: &str, name: &str| ExecRule::Applet {
        path: path.into(),
        name: name.into(),
    };
    let mut rules = vec![ExecRule::Path("/init".into())];
    rules.extend(APPLETS.iter().map(|name| applet(layout::BUSYBOX, name)));
    rules.push(applet(
        &format!("{}/usr/bin/busybox", layout::MERGED_ROOT),
        "cat",
    ));
    rules
}

fn net_rules() -> Vec<NetRule> {
    let rule = |direction, protocol, addr: Ipv4Addr, prefix_len, port| NetRule {
        direction,
        protocol,
        addr: IpAddr::V4(addr),
        prefix_len,
        port: Some(port),
    };
    vec![
        rule(
            NetDirection::Connect,
            Protocol::Tcp,
            Ipv4Addr::LOCALHOST,
            32,
            ALLOWED_CONNECT_PORT,
        ),
        rule(
            NetDirection::Connect,
            Protocol::Udp,
            Ipv4Addr::LOCALHOST,
            32,
            BENCH_UDP_PORT,
        ),
        rule(
            NetDirection::Bind,
            Protocol::Tcp,
            Ipv4Addr::UNSPECIFIED,
            0,
            ALLOWED_BIND_PORT,
        ),
    ]
}

fn lsm_policy() -> LsmPolicy {
    let file = |pattern: &str, write| FileRule {
        pattern: pattern.into(),
        read: true,
        write,
    };
    LsmPolicy {
        files: vec![
            file(layout::ALLOWED_FILE, false),
            file("/etc/passwd", false),
            file("/dev/null", true),
            file("/proc/*/maps", false),
            file("/tmp/granted/**", true),
        ],
        mount: false,
    }
}

/// Accepts connections on the loopback ports the cases connect to, on background threads.
pub fn start_listeners() -> Result<(), String> {
    for port in [ALLOWED_CONNECT_PORT, DENIED_CONNECT_PORT] {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| format!("listen on 127.0.0.1:{port}: {e}"))?;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        });
    }
    Ok(())
}

/// What a command did.
pub struct Ran {
    /// The spawn's own error: exec refused (EPERM for a denied entrypoint).
    pub spawn_error: Option<io::Error>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// One line for a case's detail.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.spawn_error {
            return format!("spawn failed: {e}");
        }
        let status = match (self.code, self.signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => "no status".into(),
        };
        let out = self.stdout.trim().replace('\n', " / ");
        let err = self.stderr.trim().replace('\n', " / ");
        format!("{status}, stdout {out:?}, stderr {err:?}")
    }
}

/// Runs `program args` inside `cgroup` and waits for it.
pub fn run(cgroup: &Cgroup, program: &str, args: &[&str]) -> Ran {
    run_command(cgroup.command(program, args))
}

/// Runs `command` and waits for it.
pub fn run_command(mut command: std::process::Command) -> Ran {
    use std::os::unix::process::ExitStatusExt;
    match command.output() {
        Ok(Output {
            status,
            stdout,
            stderr,
        }) => Ran {
            spawn_error: None,
            code: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        },
        Err(e) => Ran {
            spawn_error: Some(e),
            code: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
        },
    }
}

/// `/init probe ACTION ARGS...` inside `cgroup`: `Ok(())` or the errno.
pub fn probe(cgroup: &Cgroup, args: &[&str]) -> Result<(), String> {
    probe_in(cgroup, None, args)
}

/// [`probe`], with `root` as the probe's root directory when given (its copy of `/init`).
pub fn probe_in(cgroup: &Cgroup, root: Option<&str>, args: &[&str]) -> Result<(), String> {
    let mut argv = vec!["probe"];
    argv.extend_from_slice(args);
    let ran = match root {
        Some(root) => run_command(cgroup.command_in(root, "/init", &argv)),
        None => run(cgroup, "/init", &argv),
    };
    match ran.stdout.trim() {
        "ok" => Ok(()),
        out if out.starts_with("errno=") => Err(out.to_string()),
        _ => Err(format!("probe {args:?}: {}", ran.describe())),
    }
}
