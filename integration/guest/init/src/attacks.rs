//! The attack list of the enforce issue, run the same way under both tiers: each attack must
//! be blocked (refused, or killed before the new program's first instruction) in the
//! `lsm` boot (LSM-BPF) and in the `nolsm` boot (fallback tier).
//!
//! The attacker is a container-like process: in its own cgroup, registered in enforce, with
//! a root of its own (chroot into a tmpfs laid out like an image: busybox with applet links,
//! /etc, /tmp), so paths read as they would inside a container. What each tier has in the
//! guest is what the shim gives it:
//! - LSM tier: the LSM programs, plus the other tier's programs (sched_process_exec kills a
//!   denied applet of an allowed multi-call binary in both tiers).
//! - fallback tier: sched_process_exec kills, the cgroup sock_addr hooks, and for files
//!   vigil's fanotify guard (`vigil_shim::guard::fanotify::FileGuard`) on the attacker's root,
//!   answered from the same file rules by a responder of this program (the shim's own
//!   responder, built from a profile, is tested with real containers on the host).
//! - both: syscalls the profile lacks are denied by seccomp, which runc installs from the
//!   compiled profile; here the attacker installs an equivalent filter itself.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use vigil_guest::layout;
use vigil_shim::bpf::{
    Event, ExecRule, FileRule, LsmPolicy, Mechanism, Mode, NetDirection, NetRule, Node, Protocol,
    Verdict,
};
use vigil_shim::guard::fanotify::{Access, FileAccess, FileGuard, FileResponder};

use crate::cgroup::Cgroup;
use crate::console::Reporter;
use crate::world::{self, probe_in, run_command, Guarded};

/// The attacker's root: a tmpfs of its own (the fanotify guard marks its superblock).
const ROOT: &str = "/ctr";
/// Name of the attacker's cgroup.
const CGROUP: &str = "attacked";

/// Which tier the boot runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TierKind {
    Lsm,
    Fallback,
}

/// A case's outcome: the detail of a pass, or why it failed.
type Outcome = Result<String, String>;
/// One attack against the fixture.
type Attack = fn(&mut Attacker) -> Outcome;

/// The file rules of the attacker's profile: (path or folder ending in `/`, write allowed).
const FILE_RULES: &[(&str, bool)] = &[
    ("/etc/passwd", false),
    ("/etc/hostname", false),
    ("/bin/busybox", false),
    ("/dev/null", true),
    ("/tmp/", true),
];

/// Runs the whole attack list; every attack is reported as `attack_<name>`.
pub fn run_all(node: &Node, tier: TierKind, report: &mut Reporter) {
    let mut attacker = match Attacker::start(node, tier) {
        Ok(attacker) => attacker,
        Err(cause) => {
            for name in vigil_guest::cases::ATTACKS {
                report.case(&format!("attack_{name}"), Err(format!("fixture: {cause}")));
            }
            return;
        }
    };
    let attacks: [(&str, Attack); 8] = [
        ("spawn_shell", spawn_shell),
        ("read_shadow", read_shadow),
        ("write_below_bin", write_below_bin),
        ("drop_and_run_in_tmp", drop_and_run),
        ("downloader", downloader),
        ("connect_unlisted", connect_unlisted),
        ("listen_new_port", listen_new_port),
        ("syscalls_ptrace_mount_unshare_keyctl", syscalls),
    ];
    for (name, attack) in attacks {
        report.case(&format!("attack_{name}"), attack(&mut attacker));
    }
}

struct Attacker {
    tier: TierKind,
    guarded: Guarded,
    /// The fallback tier's file guard (dropped, so unmarked, at the end).
    _files: Option<FileGuard>,
    /// A process outside the container (the ptrace target).
    outsider: std::process::Child,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.outsider.kill();
        let _ = self.outsider.wait();
    }
}

impl Attacker {
    fn start(node: &Node, tier: TierKind) -> Result<Attacker, String> {
        build_root()?;
        let cgroup = Cgroup::create(CGROUP)?;
        let exec = vec![
            ExecRule::Path("/init".into()),
            ExecRule::Applet {
                path: layout::BUSYBOX.into(),
                name: "cat".into(),
            },
        ];
        let net = vec![NetRule {
            direction: NetDirection::Connect,
            protocol: Protocol::Tcp,
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            prefix_len: 32,
            port: Some(world::ALLOWED_CONNECT_PORT),
        }];
        let files = FILE_RULES
            .iter()
            .map(|(path, write)| FileRule {
                pattern: match path.strip_suffix('/') {
                    Some(folder) => format!("{folder}/**"),
                    None => path.to_string(),
                },
                read: true,
                write: *write,
            })
            .collect();
        let policy = LsmPolicy {
            files,
            mount: false,
        };
        let guarded = world::register_with(node, cgroup, Mode::Enforce, exec, net, &policy)?;
        let files = match tier {
            TierKind::Lsm => None,
            TierKind::Fallback => Some(
                FileGuard::start(Path::new(ROOT), Arc::new(Rules))
                    .map_err(|e| format!("file guard: {e}"))?,
            ),
        };
        let outsider = std::process::Command::new("/bin/sleep")
            .arg("60")
            .spawn()
            .map_err(|e| format!("start the outside process: {e}"))?;
        Ok(Attacker {
            tier,
            guarded,
            _files: files,
            outsider,
        })
    }

    fn probe(&self, args: &[&str]) -> Result<(), String> {
        probe_in(&self.guarded.cgroup, Some(ROOT), args)
    }

    fn run(&self, program: &str, args: &[&str]) -> world::Ran {
        run_command(self.guarded.cgroup.command_in(ROOT, program, args))
    }

    /// The mechanism this tier's eBPF programs report a refusal with.
    fn refusing(&self) -> Mechanism {
        match self.tier {
            TierKind::Lsm => Mechanism::Lsm,
            TierKind::Fallback => Mechanism::Tracing,
        }
    }

    fn tier_name(&self) -> &'static str {
        match self.tier {
            TierKind::Lsm => "LSM tier",
            TierKind::Fallback => "fallback tier",
        }
    }
}

/// Lays out the attacker's root: a tmpfs with busybox and applet links, /etc, /tmp,
/// /dev/null and a copy of this program as /init (the probe helper).
fn build_root() -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    fs::create_dir_all(ROOT).map_err(|e| io("mkdir /ctr", e))?;
    nix::mount::mount(
        Some("tmpfs"),
        ROOT,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mount tmpfs on {ROOT}: {e}"))?;
    for dir in ["bin", "etc", "tmp", "dev"] {
        fs::create_dir_all(format!("{ROOT}/{dir}")).map_err(|e| io(dir, e))?;
    }
    let at = |path: &str| format!("{ROOT}{path}");
    fs::copy("/proc/self/exe", at("/init")).map_err(|e| io("copy /init", e))?;
    fs::copy(layout::BUSYBOX, at(layout::BUSYBOX)).map_err(|e| io("copy busybox", e))?;
    for applet in ["sh", "cat", "wget", "true"] {
        symlink("busybox", at(&format!("/bin/{applet}"))).map_err(|e| io(applet, e))?;
    }
    for (path, mode, text) in layout::FILES {
        fs::write(at(path), text).map_err(|e| io(path, e))?;
        fs::set_permissions(at(path), fs::Permissions::from_mode(*mode))
            .map_err(|e| io(path, e))?;
    }
    fs::set_permissions(at("/tmp"), fs::Permissions::from_mode(0o1777))
        .map_err(|e| io("/tmp", e))?;
    nix::sys::stat::mknod(
        at("/dev/null").as_str(),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .map_err(|e| format!("mknod /dev/null: {e}"))?;
    Ok(())
}

/// The fallback tier's file decisions for the attacker: [`FILE_RULES`] for reads and writes;
/// opens for exec (and the kernel's opens while loading a program) are left to the exec
/// programs.
struct Rules;

impl FileResponder for Rules {
    fn allow(&self, access: &FileAccess) -> bool {
        let write = match access.access {
            Access::Read => false,
            Access::Write => true,
            // Opens for exec and the kernel's own opens while loading a program.
            _ => return true,
        };
        FILE_RULES.iter().any(|(rule, may_write)| {
            let covers = match rule.strip_suffix('/') {
                Some(_) => access.path.starts_with(rule),
                None => access.path == *rule,
            };
            covers && (*may_write || !write)
        })
    }

    fn is_member(&self, tid: u32) -> bool {
        fs::read_to_string(format!("/proc/{tid}/cgroup"))
            .is_ok_and(|text| text.lines().any(|l| l == format!("0::/{CGROUP}")))
    }
}

fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn refused(result: Result<(), String>, what: &str) -> Result<(), String> {
    match result {
        Err(e) if e == "errno=1" => Ok(()),
        Err(e) => Err(format!("{what}: {e}, wanted errno=1 (EPERM)")),
        Ok(()) => Err(format!("{what}: succeeded, wanted EPERM")),
    }
}

fn killed_exec(argv0: &'static str) -> impl Fn(&Event) -> bool {
    move |e| {
        matches!(e, Event::Exec(x) if x.verdict == Verdict::Killed
            && x.argv.first().is_some_and(|a| a == argv0))
    }
}

/// A shell is an applet of the image's busybox: its file is allowed (cat is), the applet is
/// not, so both tiers kill it at exec, before it runs a command.
fn spawn_shell(a: &mut Attacker) -> Outcome {
    let ran = a.run("/bin/sh", &["-c", "echo shell-ran"]);
    expect(!ran.stdout.contains("shell-ran"), || {
        format!("the shell ran: {}", ran.describe())
    })?;
    expect(ran.signal == Some(libc::SIGKILL), || ran.describe())?;
    let event = a.guarded.find(killed_exec("/bin/sh"));
    expect(event.is_some(), || {
        "no killed exec event for /bin/sh".into()
    })?;
    Ok(format!(
        "blocked ({}): /bin/sh killed at exec, nothing ran, event",
        a.tier_name()
    ))
}

fn read_shadow(a: &mut Attacker) -> Outcome {
    refused(a.probe(&["read", "/etc/shadow"]), "open /etc/shadow")?;
    let how = if a.tier == TierKind::Lsm {
        let event = a.guarded.find(|e| {
            matches!(e, Event::File(f) if f.mechanism == Mechanism::Lsm
                && f.raw_path == "/etc/shadow" && f.result == -libc::EPERM)
        });
        expect(event.is_some(), || "no lsm file event".into())?;
        "EPERM at file_open, event"
    } else {
        "EPERM from the fanotify guard"
    };
    Ok(format!("blocked ({}): {how}", a.tier_name()))
}

fn write_below_bin(a: &mut Attacker) -> Outcome {
    refused(
        a.probe(&["create", "/bin/evil"]),
        "open /bin/evil O_CREAT|O_WRONLY",
    )?;
    let content = fs::read(format!("{ROOT}/bin/evil")).unwrap_or_default();
    expect(content.is_empty(), || {
        format!("{} bytes written to /bin/evil", content.len())
    })?;
    let left = Path::new(&format!("{ROOT}/bin/evil")).exists();
    Ok(format!(
        "blocked ({}): EPERM, nothing written{}",
        a.tier_name(),
        if left {
            " (the create left an empty file, as documented)"
        } else {
            ""
        }
    ))
}

/// Writing into /tmp is allowed (the profile has it); running what was written is not.
fn drop_and_run(a: &mut Attacker) -> Outcome {
    a.probe(&["drop", layout::BUSYBOX, "/tmp/touch"])
        .map_err(|e| format!("dropping /tmp/touch (allowed): {e}"))?;
    let ran = a.run("/tmp/touch", &["/tmp/dropped-ran"]);
    expect(
        !Path::new(&format!("{ROOT}/tmp/dropped-ran")).exists(),
        || format!("the dropped binary ran: {}", ran.describe()),
    )?;
    let how = match a.tier {
        TierKind::Lsm => {
            let errno = ran.spawn_error.as_ref().and_then(|e| e.raw_os_error());
            expect(errno == Some(libc::EPERM), || ran.describe())?;
            "execve EPERM at bprm_check_security"
        }
        TierKind::Fallback => {
            expect(ran.signal == Some(libc::SIGKILL), || ran.describe())?;
            "killed at sched_process_exec"
        }
    };
    let mechanism = a.refusing();
    let event = a.guarded.find(|e| {
        matches!(e, Event::Exec(x) if x.mechanism == mechanism
            && x.exe_path.as_deref() == Some("/tmp/touch"))
    });
    expect(event.is_some(), || "no exec event for /tmp/touch".into())?;
    Ok(format!("blocked ({}): {how}, event", a.tier_name()))
}

fn downloader(a: &mut Attacker) -> Outcome {
    let url = format!("http://127.0.0.1:{}/", world::ALLOWED_CONNECT_PORT);
    let ran = a.run("/bin/wget", &["-q", "-O", "/tmp/payload", &url]);
    expect(ran.signal == Some(libc::SIGKILL), || ran.describe())?;
    expect(!Path::new(&format!("{ROOT}/tmp/payload")).exists(), || {
        "/tmp/payload was written".into()
    })?;
    let event = a.guarded.find(killed_exec("/bin/wget"));
    expect(event.is_some(), || "no killed exec event for wget".into())?;
    Ok(format!(
        "blocked ({}): wget killed at exec, nothing downloaded, event",
        a.tier_name()
    ))
}

fn net_refused(a: &mut Attacker, direction: NetDirection, port: u16) -> Outcome {
    let action = match direction {
        NetDirection::Connect => "connect",
        _ => "bind",
    };
    refused(
        a.probe(&[action, &port.to_string()]),
        &format!("{action} 127.0.0.1:{port}"),
    )?;
    let mechanism = a.refusing();
    let event = a.guarded.find(|e| {
        matches!(e, Event::Net(n) if n.verdict == Verdict::Blocked && n.mechanism == mechanism
            && n.direction == direction && n.port == port)
    });
    expect(event.is_some(), || {
        format!("no blocked {action} event for port {port} ({mechanism:?})")
    })?;
    let hook = match (a.tier, direction) {
        (TierKind::Lsm, NetDirection::Connect) => "socket_connect",
        (TierKind::Lsm, _) => "socket_bind",
        (TierKind::Fallback, NetDirection::Connect) => "cgroup connect4",
        (TierKind::Fallback, _) => "cgroup bind4",
    };
    Ok(format!(
        "blocked ({}): {action} :{port} EPERM at {hook}, event",
        a.tier_name()
    ))
}

fn connect_unlisted(a: &mut Attacker) -> Outcome {
    allowed_connect(a)?;
    net_refused(a, NetDirection::Connect, world::DENIED_CONNECT_PORT)
}

/// The listed peer works, so a refusal is the rule's, not a broken network.
fn allowed_connect(a: &mut Attacker) -> Result<(), String> {
    let port = world::ALLOWED_CONNECT_PORT.to_string();
    a.probe(&["connect", &port])
        .map_err(|e| format!("connect to the listed 127.0.0.1:{port}: {e}"))
}

fn listen_new_port(a: &mut Attacker) -> Outcome {
    net_refused(a, NetDirection::Bind, world::DENIED_BIND_PORT)
}

/// Syscalls the profile lacks: seccomp (from the compiled profile) in both tiers.
fn syscalls(a: &mut Attacker) -> Outcome {
    let target = a.outsider.id().to_string();
    refused(
        a.probe(&["syscalls", &target]),
        "ptrace, mount, unshare, keyctl under the profile's seccomp filter",
    )?;
    Ok(format!(
        "blocked ({}): ptrace, mount, unshare and keyctl EPERM (seccomp)",
        a.tier_name()
    ))
}
