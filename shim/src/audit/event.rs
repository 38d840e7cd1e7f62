//! Audit events, shaped like Falco alerts, and the typed builder that makes them.
//!
//! An event can only be made through a [`ContainerAudit`], which is built from a
//! [`ContainerIdentity`] with a non-empty container id and an image: no event can leave
//! without the container, image, mode and mechanism (field case V14).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::OffsetDateTime;

use super::AuditError;
use crate::mode::fail::{Missing, StartNotice};
use crate::mode::Mode;

/// The `source` of every vigil event (Falco puts `syscall` or a plugin name there).
pub const SOURCE: &str = "vigil";

/// Falco's priorities, spelled as Falco spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Priority {
    /// Falco `Emergency`.
    Emergency,
    /// Falco `Alert`.
    Alert,
    /// Falco `Critical`: a deviation blocked or killed in enforce.
    Critical,
    /// Falco `Error`: the node could not do what a container asked for.
    Error,
    /// Falco `Warning`: a deviation allowed in monitor; lost or dropped events.
    Warning,
    /// Falco `Notice`: a mode change.
    Notice,
    /// Falco `Informational`: learning milestones.
    Informational,
    /// Falco `Debug`.
    Debug,
}

/// What vigil did about the behaviour (`vigil.action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Denied before it took effect.
    Blocked,
    /// The process was killed.
    Killed,
    /// Reported and allowed (monitor, and every event about vigil itself).
    #[default]
    Alerted,
    /// Recorded into the profile.
    Learned,
}

impl Action {
    /// The spelling in `vigil.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Blocked => "blocked",
            Action::Killed => "killed",
            Action::Alerted => "alerted",
            Action::Learned => "learned",
        }
    }
}

/// What acted or observed (`vigil.mechanism`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// The container's seccomp filter, compiled from the profile (errno action).
    Seccomp,
    /// A seccomp user-notification rule answered by the shim's listener.
    SeccompNotify,
    /// An LSM-BPF program (`bprm_check_security`, `file_open`, ...).
    Lsm,
    /// SIGKILL sent by a BPF program at `sched_process_exec`.
    Signal,
    /// A cgroup sock_addr program (connect, bind, sendmsg) on the container's cgroup.
    CgroupSock,
    /// A fanotify permission event answered by the shim.
    Fanotify,
    /// A tracepoint program that observes without acting (learn, monitor).
    Tracepoint,
    /// The shim itself: events about modes, lost events and the audit log.
    #[default]
    Shim,
}

impl Mechanism {
    /// Every mechanism, in the docs' order.
    pub const ALL: [Mechanism; 8] = [
        Mechanism::Seccomp,
        Mechanism::SeccompNotify,
        Mechanism::Lsm,
        Mechanism::Signal,
        Mechanism::CgroupSock,
        Mechanism::Fanotify,
        Mechanism::Tracepoint,
        Mechanism::Shim,
    ];

    /// The spelling in `vigil.mechanism`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Seccomp => "seccomp",
            Mechanism::SeccompNotify => "seccomp-notify",
            Mechanism::Lsm => "lsm",
            Mechanism::Signal => "signal",
            Mechanism::CgroupSock => "cgroup-sock",
            Mechanism::Fanotify => "fanotify",
            Mechanism::Tracepoint => "tracepoint",
            Mechanism::Shim => "shim",
        }
    }
}

/// The rule an event reports (`rule`, always prefixed `vigil: `).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A syscall outside the profile.
    UnexpectedSyscall,
    /// An exec outside the profile.
    UnexpectedExec,
    /// A file access outside the profile.
    UnexpectedFile,
    /// A connection, bind or listen outside the profile.
    UnexpectedNetwork,
    /// The mode for an image's containers changed (for example after a promotion).
    ModeChange,
    /// Started in a weaker mode than asked because of `fail_policy = "open"`.
    FailOpenStart,
    /// The profile is corrupt or empty; learning replaces it.
    ProfileUnusable,
    /// The audit log cannot be written; events go to the HTTP sink and the shim log.
    AuditUnwritable,
    /// Kernel events were lost (ring buffer full); the count says how many.
    LostEvents,
    /// A learning milestone: the profile became stable.
    ProfileStable,
    /// Audit events were dropped because the queue was full; the count says how many.
    AuditOverflow,
}

impl Rule {
    /// Every rule, in the docs' order.
    pub const ALL: [Rule; 11] = [
        Rule::UnexpectedSyscall,
        Rule::UnexpectedExec,
        Rule::UnexpectedFile,
        Rule::UnexpectedNetwork,
        Rule::ModeChange,
        Rule::FailOpenStart,
        Rule::ProfileUnusable,
        Rule::AuditUnwritable,
        Rule::LostEvents,
        Rule::ProfileStable,
        Rule::AuditOverflow,
    ];

    /// The `rule` field.
    pub fn name(self) -> &'static str {
        match self {
            Rule::UnexpectedSyscall => "vigil: unexpected syscall",
            Rule::UnexpectedExec => "vigil: unexpected exec",
            Rule::UnexpectedFile => "vigil: unexpected file access",
            Rule::UnexpectedNetwork => "vigil: unexpected network activity",
            Rule::ModeChange => "vigil: mode change",
            Rule::FailOpenStart => "vigil: fail-open start",
            Rule::ProfileUnusable => "vigil: profile unusable",
            Rule::AuditUnwritable => "vigil: audit log unwritable",
            Rule::LostEvents => "vigil: lost events",
            Rule::ProfileStable => "vigil: profile stable",
            Rule::AuditOverflow => "vigil: audit overflow",
        }
    }

    /// The second tag: what the rule is about.
    pub fn category(self) -> &'static str {
        match self {
            Rule::UnexpectedSyscall => "syscall",
            Rule::UnexpectedExec => "process",
            Rule::UnexpectedFile => "filesystem",
            Rule::UnexpectedNetwork => "network",
            Rule::ModeChange | Rule::FailOpenStart => "mode",
            Rule::ProfileUnusable | Rule::ProfileStable => "profile",
            Rule::AuditUnwritable | Rule::LostEvents | Rule::AuditOverflow => "audit",
        }
    }

    fn priority(self, action: Action) -> Priority {
        match self {
            Rule::UnexpectedSyscall
            | Rule::UnexpectedExec
            | Rule::UnexpectedFile
            | Rule::UnexpectedNetwork => match action {
                Action::Blocked | Action::Killed => Priority::Critical,
                Action::Alerted => Priority::Warning,
                Action::Learned => Priority::Informational,
            },
            Rule::FailOpenStart | Rule::AuditUnwritable => Priority::Error,
            Rule::ProfileUnusable | Rule::LostEvents | Rule::AuditOverflow => Priority::Warning,
            Rule::ModeChange => Priority::Notice,
            Rule::ProfileStable => Priority::Informational,
        }
    }
}

/// One audit record: one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    /// [`Rule::name`].
    pub rule: String,
    /// Falco priority.
    pub priority: Priority,
    /// Always `vigil`.
    pub source: String,
    /// The node's hostname.
    pub hostname: String,
    /// `vigil`, the rule's category, the mode.
    pub tags: Vec<String>,
    /// One sentence for a person.
    pub output: String,
    /// The fields, by Falco's names where Falco has one.
    pub output_fields: OutputFields,
}

/// `output_fields`: identity fields are always present (null when unknown), the others only
/// when the event has them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputFields {
    /// containerd's container id.
    #[serde(rename = "container.id")]
    pub container_id: String,
    /// CRI container name.
    #[serde(rename = "container.name")]
    pub container_name: Option<String>,
    /// Image name as the user wrote it (`local/busybox:latest`).
    #[serde(rename = "container.image.repository")]
    pub image_repository: String,
    /// Image config digest, the profile store's key.
    #[serde(rename = "container.image.digest")]
    pub image_digest: Option<String>,
    /// Kubernetes namespace.
    #[serde(rename = "k8s.ns.name")]
    pub k8s_ns: Option<String>,
    /// Kubernetes pod name.
    #[serde(rename = "k8s.pod.name")]
    pub k8s_pod: Option<String>,
    /// Process id, host pid namespace.
    #[serde(rename = "proc.pid", default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Parent process id, host pid namespace.
    #[serde(rename = "proc.ppid", default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// The resolved executable file (`/bin/busybox` for an applet).
    #[serde(
        rename = "proc.exepath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exepath: Option<String>,
    /// `argv[0]` as given (Falco's `proc.exe`).
    #[serde(rename = "proc.exe", default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The program as invoked (`nc` for busybox's nc applet).
    #[serde(rename = "proc.name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Program and arguments, space-separated.
    #[serde(
        rename = "proc.cmdline",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cmdline: Option<String>,
    /// The parent's program name.
    #[serde(
        rename = "proc.pname",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pname: Option<String>,
    /// Effective user id inside the container's user namespace view.
    #[serde(rename = "user.uid", default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// File path, or `ip:port` for a socket.
    #[serde(rename = "fd.name", default, skip_serializing_if = "Option::is_none")]
    pub fd_name: Option<String>,
    /// Server address (the remote end of a connect, the local end of a bind or listen).
    #[serde(rename = "fd.sip", default, skip_serializing_if = "Option::is_none")]
    pub fd_sip: Option<String>,
    /// Server port.
    #[serde(rename = "fd.sport", default, skip_serializing_if = "Option::is_none")]
    pub fd_sport: Option<u16>,
    /// `tcp` or `udp`.
    #[serde(
        rename = "fd.l4proto",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub fd_l4proto: Option<String>,
    /// Syscall or operation name (`execve`, `openat`, `connect`, `ptrace`).
    #[serde(rename = "evt.type", default, skip_serializing_if = "Option::is_none")]
    pub evt_type: Option<String>,
    /// The container's mode.
    #[serde(rename = "vigil.mode")]
    pub mode: String,
    /// [`Action`].
    #[serde(rename = "vigil.action")]
    pub action: Action,
    /// [`Mechanism`].
    #[serde(rename = "vigil.mechanism")]
    pub mechanism: Mechanism,
    /// Profile compared with: the image digest, or the name from `vigil.dev/profile`.
    #[serde(rename = "vigil.profile")]
    pub profile: Option<String>,
    /// The profile's confidence for this category, 0 to 1.
    #[serde(rename = "vigil.confidence")]
    pub confidence: Option<f64>,
    /// The path as passed to execve (`/bin/nc`, `/proc/self/exe`).
    #[serde(
        rename = "vigil.exec.filename",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exec_filename: Option<String>,
    /// The access asked for (`read`, `write`, `create`, `exec`; `connect`, `bind`, `listen`).
    #[serde(
        rename = "vigil.access",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub access: Option<String>,
    /// Mode asked for, on fail-open and mode-change events.
    #[serde(
        rename = "vigil.requested_mode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub requested_mode: Option<String>,
    /// Lost or dropped events, on lost-events and overflow events.
    #[serde(
        rename = "vigil.count",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub count: Option<u64>,
    /// Why, for events about vigil itself.
    #[serde(
        rename = "vigil.reason",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
}

/// Who a container is; required to make any event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    id: String,
    image: String,
    /// Image config digest.
    pub image_digest: Option<String>,
    /// CRI container name.
    pub name: Option<String>,
    /// Kubernetes namespace.
    pub k8s_namespace: Option<String>,
    /// Kubernetes pod name.
    pub pod: Option<String>,
}

impl ContainerIdentity {
    /// A container by id and image name; both must be non-empty.
    pub fn new(id: &str, image: &str) -> Result<ContainerIdentity, AuditError> {
        if id.trim().is_empty() || image.trim().is_empty() {
            return Err(AuditError::Identity {
                id: id.to_owned(),
                image: image.to_owned(),
            });
        }
        Ok(ContainerIdentity {
            id: id.to_owned(),
            image: image.to_owned(),
            image_digest: None,
            name: None,
            k8s_namespace: None,
            pod: None,
        })
    }

    /// containerd's container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The image name.
    pub fn image(&self) -> &str {
        &self.image
    }
}

/// A process an event is about. Build it with [`Process::new`] and the setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    pid: u32,
    ppid: Option<u32>,
    exepath: Option<String>,
    exe: Option<String>,
    name: Option<String>,
    cmdline: Option<String>,
    pname: Option<String>,
    uid: Option<u32>,
}

impl Process {
    /// A process by pid (host pid namespace).
    pub fn new(pid: u32) -> Process {
        Process {
            pid,
            ..Process::default()
        }
    }

    /// The resolved executable file, raw bytes from the kernel.
    pub fn exepath(mut self, path: &[u8]) -> Process {
        self.exepath = Some(text(path));
        self
    }

    /// The program name as invoked (`argv[0]`'s file name, or the comm for a no-exec applet).
    pub fn name(mut self, name: &[u8]) -> Process {
        self.name = Some(text(name));
        self
    }

    /// argv as the kernel holds it: NUL-separated. Sets `proc.cmdline`, `proc.exe` and,
    /// unless set already, `proc.name`.
    pub fn argv(mut self, nul_separated: &[u8]) -> Process {
        let args: Vec<&[u8]> = nul_separated
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        let Some(first) = args.first() else {
            return self;
        };
        let base = first.rsplit(|b| *b == b'/').next().unwrap_or(first);
        let name = self.name.get_or_insert_with(|| text(base)).clone();
        self.exe = Some(text(first));
        // As Falco's: the program name followed by the arguments (`nc -w1 127.0.0.1 9` for
        // `/bin/nc -w1 127.0.0.1 9`).
        let rest = args[1..].iter().map(|a| text(a));
        self.cmdline = Some(
            std::iter::once(name)
                .chain(rest)
                .collect::<Vec<_>>()
                .join(" "),
        );
        self
    }

    /// Parent pid and program name.
    pub fn parent(mut self, ppid: Option<u32>, pname: &[u8]) -> Process {
        self.ppid = ppid.filter(|p| *p != 0);
        self.pname = Some(text(pname)).filter(|p| !p.is_empty());
        self
    }

    /// Effective uid.
    pub fn uid(mut self, uid: u32) -> Process {
        self.uid = Some(uid);
        self
    }

    fn label(&self) -> String {
        let name = self
            .name
            .as_deref()
            .or(self.exe.as_deref())
            .unwrap_or("process");
        format!("{name} (pid {})", self.pid)
    }
}

/// Kinds of file access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileAccess {
    /// Open for reading.
    Read,
    /// Open for writing (or truncate).
    Write,
    /// Create a new file.
    Create,
    /// Open to execute.
    Exec,
}

impl FileAccess {
    fn as_str(self) -> &'static str {
        match self {
            FileAccess::Read => "read",
            FileAccess::Write => "write",
            FileAccess::Create => "create",
            FileAccess::Exec => "exec",
        }
    }
}

/// Network operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetOp {
    /// Outbound connect (or a UDP sendmsg to a new peer).
    Connect,
    /// Bind to a local address.
    Bind,
    /// Listen on a bound socket.
    Listen,
}

impl NetOp {
    fn as_str(self) -> &'static str {
        match self {
            NetOp::Connect => "connect",
            NetOp::Bind => "bind",
            NetOp::Listen => "listen",
        }
    }
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl L4Proto {
    fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

/// What a container did that its profile lacks. Each kind carries the fields its rule needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deviation {
    /// A syscall by name (`ptrace`, `times`).
    Syscall {
        /// Syscall name.
        name: String,
    },
    /// An exec.
    Exec {
        /// The path passed to execve, raw (`/bin/nc`, `/proc/self/exe`).
        filename: Vec<u8>,
    },
    /// A file access.
    File {
        /// Path inside the container, raw.
        path: Vec<u8>,
        /// What for.
        access: FileAccess,
        /// Syscall (`openat`, `open`, `creat`).
        syscall: String,
    },
    /// A network operation.
    Network {
        /// Which.
        op: NetOp,
        /// Protocol.
        proto: L4Proto,
        /// Remote address for connect, local for bind and listen.
        addr: IpAddr,
        /// Port to go with `addr`.
        port: u16,
    },
}

impl Deviation {
    fn rule(&self) -> Rule {
        match self {
            Deviation::Syscall { .. } => Rule::UnexpectedSyscall,
            Deviation::Exec { .. } => Rule::UnexpectedExec,
            Deviation::File { .. } => Rule::UnexpectedFile,
            Deviation::Network { .. } => Rule::UnexpectedNetwork,
        }
    }
}

/// What the events of one container share: identity, mode, profile.
#[derive(Debug, Clone)]
pub struct ContainerAudit {
    identity: Arc<ContainerIdentity>,
    mode: Mode,
    profile: Option<String>,
}

impl ContainerAudit {
    /// The audit context of a container running in `mode`, compared with `profile` (the
    /// image digest or the name from `vigil.dev/profile`; `None` while there is none).
    pub fn new(identity: ContainerIdentity, mode: Mode, profile: Option<String>) -> Self {
        ContainerAudit {
            identity: Arc::new(identity),
            mode,
            profile,
        }
    }

    /// The container.
    pub fn identity(&self) -> &ContainerIdentity {
        &self.identity
    }

    /// The container's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A deviation from the profile: what happened, what vigil did, which mechanism did it.
    pub fn deviation(
        &self,
        deviation: Deviation,
        action: Action,
        mechanism: Mechanism,
    ) -> EventBuilder {
        EventBuilder::new(self, deviation.rule(), action, mechanism).deviation(deviation)
    }

    /// The events a [`StartNotice`] from the fail policy must produce.
    pub fn start_notice(&self, notice: &StartNotice) -> EventBuilder {
        let b = |rule| EventBuilder::new(self, rule, Action::Alerted, Mechanism::Shim);
        match notice {
            StartNotice::FailOpen {
                requested,
                effective,
                missing,
            } => {
                let why = join_missing(missing);
                b(Rule::FailOpenStart)
                    .requested_mode(*requested)
                    .reason(&why)
                    .output(format!(
                        "started in {effective} instead of {requested}: {why}"
                    ))
            }
            StartNotice::AuditUnwritable { reason } => {
                b(Rule::AuditUnwritable).reason(reason).output(format!(
                    "audit log unwritable, events go to the shim log: {reason}"
                ))
            }
            StartNotice::ProfileUnusable { missing } => b(Rule::ProfileUnusable)
                .reason(&missing.to_string())
                .output(format!("learning over an unusable profile: {missing}")),
        }
    }

    /// The mode for this image's containers changed from `from` to this container's mode.
    pub fn mode_change(&self, from: Mode, reason: &str) -> EventBuilder {
        let to = self.mode;
        EventBuilder::new(self, Rule::ModeChange, Action::Alerted, Mechanism::Shim)
            .requested_mode(from)
            .reason(reason)
            .output(format!("mode changed from {from} to {to}: {reason}"))
    }

    /// `count` kernel events were lost at `place` (a ring buffer, a map).
    pub fn lost_events(&self, count: u64, place: &str) -> EventBuilder {
        EventBuilder::new(self, Rule::LostEvents, Action::Alerted, Mechanism::Shim)
            .count(count)
            .reason(place)
            .output(format!(
                "{count} kernel events lost at {place}; behaviour may be missing"
            ))
    }

    /// The profile became stable with this confidence.
    pub fn profile_stable(&self, confidence: f64) -> EventBuilder {
        EventBuilder::new(self, Rule::ProfileStable, Action::Learned, Mechanism::Shim)
            .confidence(confidence)
            .output(format!("profile is stable (confidence {confidence:.2})"))
    }

    /// `count` events of this container were dropped because the audit queue was full.
    pub(crate) fn overflow(&self, count: u64) -> EventBuilder {
        EventBuilder::new(self, Rule::AuditOverflow, Action::Alerted, Mechanism::Shim)
            .count(count)
            .reason("audit queue full")
            .output(format!(
                "{count} audit events dropped: the audit queue was full"
            ))
    }
}

fn join_missing(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(Missing::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fills in one event. Finish with [`EventBuilder::build`] or `AuditHandle::emit`.
#[derive(Debug, Clone)]
#[must_use = "an event does nothing until it is built and emitted"]
pub struct EventBuilder {
    pub(crate) context: ContainerAudit,
    rule: Rule,
    fields: OutputFields,
    output: Option<String>,
    what: Option<String>,
    process: Option<Process>,
}

impl EventBuilder {
    fn new(ctx: &ContainerAudit, rule: Rule, action: Action, mechanism: Mechanism) -> Self {
        let id = &ctx.identity;
        let fields = OutputFields {
            container_id: id.id.clone(),
            container_name: id.name.clone(),
            image_repository: id.image.clone(),
            image_digest: id.image_digest.clone(),
            k8s_ns: id.k8s_namespace.clone(),
            k8s_pod: id.pod.clone(),
            mode: ctx.mode.as_str().to_owned(),
            action,
            mechanism,
            profile: ctx.profile.clone(),
            ..OutputFields::default()
        };
        EventBuilder {
            context: ctx.clone(),
            rule,
            fields,
            output: None,
            what: None,
            process: None,
        }
    }

    fn deviation(mut self, deviation: Deviation) -> Self {
        let f = &mut self.fields;
        let what = match deviation {
            Deviation::Syscall { name } => {
                let what = format!("syscall {name}");
                f.evt_type = Some(name);
                what
            }
            Deviation::Exec { filename } => {
                f.evt_type = Some("execve".into());
                f.exec_filename = Some(text(&filename));
                String::new()
            }
            Deviation::File {
                path,
                access,
                syscall,
            } => {
                f.evt_type = Some(syscall);
                f.access = Some(access.as_str().into());
                f.fd_name = Some(text(&path));
                format!("{} of {}", access.as_str(), text(&path))
            }
            Deviation::Network {
                op,
                proto,
                addr,
                port,
            } => network_fields(f, op, proto, addr, port),
        };
        self.what = Some(what);
        self
    }

    /// The process the event is about.
    pub fn process(mut self, process: Process) -> Self {
        let f = &mut self.fields;
        f.pid = Some(process.pid);
        f.ppid = process.ppid;
        f.exepath.clone_from(&process.exepath);
        f.exe.clone_from(&process.exe);
        f.name.clone_from(&process.name);
        f.cmdline.clone_from(&process.cmdline);
        f.pname.clone_from(&process.pname);
        f.uid = process.uid;
        self.process = Some(process);
        self
    }

    /// The profile's confidence for the event's category (0 to 1; clamped).
    pub fn confidence(mut self, confidence: f64) -> Self {
        self.fields.confidence = Some(confidence.clamp(0.0, 1.0));
        self
    }

    fn requested_mode(mut self, mode: Mode) -> Self {
        self.fields.requested_mode = Some(mode.as_str().to_owned());
        self
    }

    fn count(mut self, count: u64) -> Self {
        self.fields.count = Some(count);
        self
    }

    fn reason(mut self, reason: &str) -> Self {
        self.fields.reason = Some(reason.to_owned());
        self
    }

    /// Replaces the event's one-line description.
    pub fn output(mut self, output: String) -> Self {
        self.output = Some(output);
        self
    }

    /// The container the event belongs to.
    pub fn context(&self) -> &ContainerAudit {
        &self.context
    }

    /// The finished event, stamped with the current time and this node's hostname.
    pub fn build(self) -> AuditEvent {
        self.build_at(OffsetDateTime::now_utc(), hostname())
    }

    pub(crate) fn build_at(self, now: OffsetDateTime, hostname: &str) -> AuditEvent {
        let mode = self.context.mode;
        let output = self.sentence();
        AuditEvent {
            time: rfc3339_nanos(now),
            rule: self.rule.name().to_owned(),
            priority: self.rule.priority(self.fields.action),
            source: SOURCE.to_owned(),
            hostname: hostname.to_owned(),
            tags: vec![
                SOURCE.into(),
                self.rule.category().into(),
                mode.as_str().into(),
            ],
            output,
            output_fields: self.fields,
        }
    }

    /// `blocked exec of /bin/nc by nc (pid 42), parent sh: nc -w1 ... (container=...)`.
    fn sentence(&self) -> String {
        let f = &self.fields;
        let mut s = match (&self.output, &self.what) {
            (Some(out), _) => out.clone(),
            (None, what) => {
                let verb = match f.action {
                    Action::Alerted => "unexpected",
                    other => other.as_str(),
                };
                let what = match self.rule {
                    Rule::UnexpectedExec => self.exec_what(),
                    _ => what.clone().unwrap_or_else(|| "behaviour".to_owned()),
                };
                format!("{verb} {what}")
            }
        };
        if let Some(p) = &self.process {
            let _ = write!(s, " by {}", p.label());
            if let Some(pname) = &p.pname {
                let _ = write!(s, ", parent {pname}");
            }
            if let Some(cmdline) = &p.cmdline {
                let _ = write!(s, ": {cmdline}");
            }
        }
        let _ = write!(
            s,
            " (container={} image={} pod={} mode={} mechanism={})",
            f.container_id,
            f.image_repository,
            pod_label(f),
            f.mode,
            f.mechanism.as_str()
        );
        s
    }
}

impl EventBuilder {
    /// `exec of /bin/busybox (invoked as /proc/self/exe)`: the resolved file first, as the
    /// kernel acted on it.
    fn exec_what(&self) -> String {
        let f = &self.fields;
        let file = f
            .exepath
            .as_deref()
            .or(f.exec_filename.as_deref())
            .unwrap_or("?");
        let mut what = format!("exec of {file}");
        if let Some(invoked) = f.exec_filename.as_deref().filter(|i| *i != file) {
            let _ = write!(what, " (invoked as {invoked})");
        }
        what
    }
}

fn network_fields(
    f: &mut OutputFields,
    op: NetOp,
    proto: L4Proto,
    addr: IpAddr,
    port: u16,
) -> String {
    let endpoint = match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    f.evt_type = Some(op.as_str().into());
    f.access = Some(op.as_str().into());
    f.fd_sip = Some(addr.to_string());
    f.fd_sport = Some(port);
    f.fd_l4proto = Some(proto.as_str().into());
    f.fd_name = Some(endpoint.clone());
    format!("{} {} {endpoint}", op.as_str(), proto.as_str())
}

fn pod_label(f: &OutputFields) -> String {
    match (&f.k8s_ns, &f.k8s_pod) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        _ => "<none>".to_owned(),
    }
}

/// Bytes from the kernel as text: valid UTF-8 is kept, every other byte becomes `\xNN`, so
/// no byte is lost or silently replaced. JSON escaping then takes care of quotes and control
/// characters.
pub fn text(bytes: &[u8]) -> String {
    crate::bpf::escaped(bytes)
}

/// RFC 3339 in UTC with nine fractional digits, as Falco writes `time`.
pub fn rfc3339_nanos(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    let utc = t.to_offset(time::UtcOffset::UTC);
    utc.format(&format)
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

/// This node's hostname, read once (`/proc/sys/kernel/hostname`).
pub fn hostname() -> &'static str {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    HOSTNAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    })
}
