//! One guarded container, from `runc create` to Delete: its eBPF registration, its event
//! reader, its learner, its seccomp listener and its file guard.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch as signal;
use vigil_policy::learn::{exec_key, ExecObservation, NetObservation, Observation, Observed};
use vigil_policy::model::{Access, Direction, Family, Origin, Protocol};
use vigil_policy::seccomp::CompiledSeccomp;
use vigil_policy::{syscalls, Digest, Learner, LearnerConfig, LearningKeys, Store, Timestamp};

use super::plan::Plan;
use super::procinfo;
use crate::audit::{
    self, Action, AuditHandle, ContainerAudit, Deviation, FileAccess as AuditAccess, L4Proto,
    Mechanism, NetOp,
};
use crate::bpf::{
    self, cgroup_id_of, AsyncEventReader, Event, NetDirection, Node, RegisterRequest, Registration,
    Verdict,
};
use crate::config::{FailPolicy, Mode};
use crate::guard::fanotify::{self, FileGuard, FileResponder};
use crate::guard::notify::{self, Listener, NotifyRequest, ProcessState, Responder};
use crate::guard::{ContainerGuard, GuardError};

/// How often a learning container's observations are merged into the store.
const FLUSH_PERIOD: Duration = Duration::from_secs(30);
/// How long Delete waits for the audit writer to take the container's last events.
const AUDIT_FLUSH: Duration = Duration::from_secs(2);
/// Distinct deviations remembered per container for de-duplication; beyond this every one
/// is reported.
const REPORTED_CAP: usize = 65_536;

/// Everything [`super::VigilGuard::prepare`] decided for the container.
pub struct WatchSetup {
    /// The node's LSM-BPF programs are attached: they, not fanotify, judge file opens.
    pub lsm: bool,
    pub id: String,
    pub mode: Mode,
    pub fail_policy: FailPolicy,
    /// The rootfs as mounted on the host (`<bundle>/rootfs`).
    pub rootfs: PathBuf,
    /// `runc 1.1.5`, for the profile.
    pub runtime: Option<String>,
    pub image_name: String,
    pub digest: Digest,
    pub store: Store,
    pub keys: LearningKeys,
    pub node: Node,
    pub audit: AuditHandle,
    pub context: ContainerAudit,
    /// The profile, in monitor and enforce.
    pub plan: Option<Plan>,
    /// The listener's socket and the compiled filter, in monitor and enforce.
    pub seccomp: Option<(PathBuf, CompiledSeccomp)>,
}

/// What the event reader, the seccomp listener and the file guard share.
struct Shared {
    id: String,
    mode: Mode,
    rootfs: PathBuf,
    audit: AuditHandle,
    context: ContainerAudit,
    plan: Option<Plan>,
    compiled: Option<CompiledSeccomp>,
    /// The container's registration, from `created` to Delete: which processes are the
    /// workload's.
    tracker: Mutex<Option<Arc<Registration>>>,
    /// Deviations already reported (process, kind, what).
    reported: Mutex<HashSet<String>>,
    /// The files the profile runs, as they were before the workload started: path inside the
    /// container to (`st_dev`, `st_ino`). An exec of the same path that opens another file
    /// (one renamed over it) is not the profile's program.
    exec_files: Mutex<HashMap<String, (u64, u64)>>,
    /// What the exec events said about recent processes, for events about processes that
    /// are gone by the time they are described.
    recent: Mutex<HashMap<u32, audit::Process>>,
    learning: Option<Learning>,
}

/// A learning container's learner and where its profile goes.
struct Learning {
    learner: Mutex<Learner>,
    store: Store,
    digest: Digest,
    keys: LearningKeys,
    stable: Mutex<bool>,
}

/// The per-container guard handed to the task service.
pub struct Watch {
    shared: Arc<Shared>,
    node: Node,
    fail_policy: FailPolicy,
    lsm: bool,
    listener: Mutex<Option<Listener>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

/// What runs between `created` and Delete.
struct Running {
    registration: Arc<Registration>,
    file_guard: Option<FileGuard>,
    stop: signal::Sender<bool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Binds the seccomp listener (runc connects to it during `runc create`).
    pub fn prepare(setup: WatchSetup) -> Result<Watch, String> {
        let learning = (setup.mode == Mode::Learn).then(|| Learning {
            learner: Mutex::new(Learner::new(LearnerConfig {
                container_id: setup.id.clone(),
                image_name: Some(setup.image_name.clone()),
                runtime: setup.runtime.clone(),
                started: Timestamp::now(),
                startup_secs: setup.keys.startup_secs,
            })),
            store: setup.store,
            digest: setup.digest,
            keys: setup.keys,
            stable: Mutex::new(false),
        });
        let (listener_path, compiled) = match setup.seccomp {
            Some((path, compiled)) => (Some(path), Some(compiled)),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            id: setup.id,
            mode: setup.mode,
            rootfs: setup.rootfs,
            audit: setup.audit,
            context: setup.context,
            plan: setup.plan,
            compiled,
            tracker: Mutex::new(None),
            reported: Mutex::new(HashSet::new()),
            exec_files: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            learning,
        });
        let listener =
            match listener_path {
                Some(path) => {
                    let _ = std::fs::remove_file(&path);
                    let responder: Arc<dyn Responder> = Arc::new(SyscallResponder(shared.clone()));
                    Some(Listener::bind(&path, responder).map_err(|e| {
                        format!("bind the seccomp listener {}: {e}", path.display())
                    })?)
                }
                None => None,
            };
        Ok(Watch {
            shared,
            node: setup.node,
            fail_policy: setup.fail_policy,
            lsm: setup.lsm,
            listener: Mutex::new(listener),
            running: tokio::sync::Mutex::new(None),
        })
    }

    fn register(&self, init_pid: u32) -> Result<Registration, String> {
        let cgroup_id = cgroup_id_of(init_pid).map_err(|e| e.to_string())?;
        let shared = &self.shared;
        let (mode, exec_allow, net_allow) = match (shared.mode, &shared.plan) {
            (Mode::Enforce, Some(plan)) => {
                (bpf::Mode::Enforce, plan.exec_rules(), plan.net_rules())
            }
            (Mode::Monitor, _) => (bpf::Mode::Monitor, Vec::new(), Vec::new()),
            _ => (bpf::Mode::Learn, Vec::new(), Vec::new()),
        };
        let request = RegisterRequest {
            cgroup_id,
            init_pid,
            mode,
            watch_syscalls: mode == bpf::Mode::Learn,
            exec_allow,
            net_allow,
        };
        self.node.register(&request).map_err(|e| e.to_string())
    }

    fn start_file_guard(&self) -> Result<Option<FileGuard>, String> {
        if !matches!(self.shared.mode, Mode::Monitor | Mode::Enforce) || self.lsm {
            return Ok(None);
        }
        let responder: Arc<dyn FileResponder> = Arc::new(FileDecider(self.shared.clone()));
        match FileGuard::start(&self.shared.rootfs, responder) {
            Ok(guard) => Ok(Some(guard)),
            Err(e) if self.fail_policy == FailPolicy::Open => {
                let event = self
                    .shared
                    .context
                    .start_notice(&crate::mode::fail::StartNotice::FailOpen {
                        requested: self.shared.mode,
                        effective: self.shared.mode,
                        missing: vec![crate::mode::fail::Missing::new(
                            format!("the file guard ({e})"),
                            "run the container on an overlay snapshot",
                        )],
                    })
                    .output(format!(
                        "files are not guarded in this container: {e}; fail_policy is open"
                    ));
                self.shared.audit.emit(event);
                Ok(None)
            }
            Err(e) => Err(format!(
                "cannot guard the container's files: {e}; fail_policy is closed (set \
                 fail_policy = \"open\" to start it without the file guard, with an audit \
                 event)"
            )),
        }
    }
}

#[async_trait]
impl ContainerGuard for Watch {
    async fn created(&self, init_pid: u32) -> Result<(), GuardError> {
        self.shared.record_exec_files();
        let mut registration = self.register(init_pid).map_err(|e| {
            GuardError::Unavailable(format!("cannot register the container's cgroup: {e}"))
        })?;
        let reader = registration
            .take_events()
            .map_err(|e| e.to_string())
            .and_then(|r| r.ok_or_else(|| "no event reader".to_string()))
            .and_then(|r| r.into_async().map_err(|e| e.to_string()));
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let _ = registration.unregister();
                return Err(GuardError::Unavailable(format!(
                    "cannot read the container's events: {e}"
                )));
            }
        };
        if let (true, Some(plan)) = (self.lsm, &self.shared.plan) {
            if let Err(e) = registration.set_lsm_policy(&plan.lsm_policy()) {
                let _ = registration.unregister();
                return Err(GuardError::Unavailable(format!(
                    "cannot fill the LSM tier's file rules: {e}"
                )));
            }
        }
        let file_guard = match self.start_file_guard() {
            Ok(g) => g,
            Err(e) => {
                let _ = registration.unregister();
                return Err(GuardError::Unavailable(e));
            }
        };
        let registration = Arc::new(registration);
        *self
            .shared
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(registration.clone());
        let (stop, stopped) = signal::channel(false);
        let task = tokio::spawn(read_events(
            self.shared.clone(),
            reader,
            registration.clone(),
            stopped,
        ));
        *self.running.lock().await = Some(Running {
            registration,
            file_guard,
            stop,
            reader: task,
        });
        Ok(())
    }

    async fn deleted(&self) {
        let running = self.running.lock().await.take();
        if let Some(running) = running {
            let _ = running.stop.send(true);
            if let Err(e) = running.reader.await {
                tracing::warn!(id = %self.shared.id, error = %e, "event reader ended badly");
            }
            drop(running.file_guard);
            self.shared
                .tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            self.shared.report_lost(&running.registration);
            match Arc::try_unwrap(running.registration) {
                Ok(registration) => {
                    if let Err(e) = registration.unregister() {
                        tracing::warn!(id = %self.shared.id, error = %e, "unregister");
                    }
                }
                Err(_) => tracing::warn!(id = %self.shared.id, "registration still shared"),
            }
        }
        if self.shared.learning.is_some() {
            let shared = self.shared.clone();
            let _ = tokio::task::spawn_blocking(move || shared.merge(learning_of(&shared))).await;
        }
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(listener);
        let audit = self.shared.audit.clone();
        let _ = tokio::task::spawn_blocking(move || audit.flush(AUDIT_FLUSH)).await;
    }
}

fn learning_of(shared: &Shared) -> &Learning {
    shared
        .learning
        .as_ref()
        .expect("called only for learning containers")
}

/// Reads the container's events until Delete, merging learned behaviour periodically.
async fn read_events(
    shared: Arc<Shared>,
    mut reader: AsyncEventReader,
    registration: Arc<Registration>,
    mut stop: signal::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(FLUSH_PERIOD);
    tick.tick().await;
    let mut batch = Vec::new();
    loop {
        let last = tokio::select! {
            read = reader.next_batch(&mut batch) => {
                if let Err(e) = read {
                    tracing::warn!(id = %shared.id, error = %e, "event ring unreadable");
                    true
                } else {
                    false
                }
            }
            _ = tick.tick() => {
                shared.report_lost(&registration);
                if shared.learning.is_some() {
                    let s = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || s.merge(learning_of(&s))).await;
                }
                false
            }
            _ = stop.changed() => {
                reader.drain_now(&mut batch);
                true
            }
        };
        for event in batch.drain(..) {
            shared.handle(event);
        }
        if last {
            return;
        }
    }
}

impl Shared {
    fn handle(&self, event: Event) {
        match &self.learning {
            Some(learning) => self.learn(learning, event),
            None => self.judge(event),
        }
    }

    /// Learn: every event becomes an observation.
    fn learn(&self, learning: &Learning, event: Event) {
        let Some((origin, what)) = observation(event) else {
            return;
        };
        let obs = Observation {
            at: Timestamp::now(),
            origin,
            what,
        };
        let mut learner = learning.learner.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = learner.observe(&obs) {
            tracing::debug!(id = %self.id, error = %e, "observation not recorded");
        }
    }

    /// Merges what was learned since the last merge into the store.
    fn merge(&self, learning: &Learning) {
        let delta = {
            let mut learner = learning.learner.lock().unwrap_or_else(|e| e.into_inner());
            learner.take_delta(Timestamp::now())
        };
        match learning
            .store
            .merge_into(&learning.digest, &delta, &learning.keys, Timestamp::now())
        {
            Ok(profile) => {
                let stable = profile.state == vigil_policy::State::Stable;
                let mut was = learning.stable.lock().unwrap_or_else(|e| e.into_inner());
                if stable && !*was {
                    let c = &profile.confidence;
                    let confidence = c.syscalls.min(c.execs).min(c.files).min(c.network);
                    self.audit.emit(self.context.profile_stable(confidence));
                }
                *was = stable;
            }
            Err(e) => {
                // The learner's delta is lost with this error; say so where operators look.
                tracing::error!(id = %self.id, error = %e, "cannot merge the learned profile");
                let event = self
                    .context
                    .start_notice(&crate::mode::fail::StartNotice::ProfileUnusable {
                        missing: crate::mode::fail::Missing::new(
                            format!("a writable profile ({e})"),
                            "fix or remove the profile file, then relearn",
                        ),
                    })
                    .output(format!("learned behaviour could not be saved: {e}"));
                self.audit.emit(event);
            }
        }
    }

    fn report_lost(&self, registration: &Registration) {
        let Ok(lost) = registration.lost_events() else {
            return;
        };
        let key = format!("lost:{lost}");
        if lost == 0 || !self.first_time(key) {
            return;
        }
        if let Some(learning) = &self.learning {
            // The ring does not say which kind of record it dropped; file records are
            // by far the most numerous, so the loss is booked there (docs/limitations.md).
            let mut learner = learning.learner.lock().unwrap_or_else(|e| e.into_inner());
            learner.lost(vigil_policy::learn::Category::Files, lost);
        }
        self.audit.emit(
            self.context
                .lost_events(lost, "the container's event ring buffer"),
        );
    }

    /// Whether `key` is reported for the first time (deviations are reported once per
    /// process and item).
    fn first_time(&self, key: String) -> bool {
        let mut seen = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= REPORTED_CAP {
            return true;
        }
        seen.insert(key)
    }

    /// Monitor and enforce: kernel verdicts and deviations from the profile become audit
    /// events.
    fn judge(&self, event: Event) {
        let Some(plan) = &self.plan else {
            return;
        };
        match event {
            Event::Exec(exec) => {
                let exe = exec
                    .exe_path
                    .clone()
                    .unwrap_or_else(|| exec.invoked.clone());
                let argv0 = exec.argv.first().cloned().unwrap_or_default();
                let observed = ExecObservation {
                    filename: exec.invoked.clone(),
                    resolved: exe.clone(),
                    argv0: argv0.clone(),
                    parent: Some(exec.parent_comm.clone()),
                };
                let key = exec_key(&observed);
                let program = match &key {
                    Some(key) => key.program.clone(),
                    None => argv0.rsplit('/').next().unwrap_or(&argv0).to_string(),
                };
                // Every exec is remembered, so later events about the process describe it
                // even once it is gone.
                let process = self.remember(&exec, &exe, &program);
                let Some(key) = key else {
                    return;
                };
                let (action, mechanism) = match (exec.verdict, exec.mechanism) {
                    (Verdict::Killed, _) => (Action::Killed, Mechanism::Signal),
                    (Verdict::Blocked, bpf::Mechanism::Lsm) => (Action::Blocked, Mechanism::Lsm),
                    (Verdict::Blocked, _) => (Action::Blocked, Mechanism::Signal),
                    _ if self.mode == Mode::Monitor
                        && !plan.allows_exec(&key.path, &key.program) =>
                    {
                        (Action::Alerted, Mechanism::Tracepoint)
                    }
                    _ => return,
                };
                let deviation = Deviation::Exec {
                    filename: key.invoked.into_bytes(),
                };
                self.audit.emit(
                    self.context
                        .deviation(deviation, action, mechanism)
                        .process(process)
                        .confidence(plan.profile.confidence.execs),
                );
            }
            Event::Net(net) => {
                let (action, mechanism) = match (net.verdict, net.mechanism) {
                    (Verdict::Blocked | Verdict::Killed, bpf::Mechanism::Lsm) => {
                        (Action::Blocked, Mechanism::Lsm)
                    }
                    (Verdict::Blocked | Verdict::Killed, _) => {
                        (Action::Blocked, Mechanism::CgroupSock)
                    }
                    _ if self.mode == Mode::Monitor => {
                        let Some((_, Observed::Net(obs))) = observation(Event::Net(net.clone()))
                        else {
                            return;
                        };
                        let allowed = vigil_policy::learn::net_key(&obs)
                            .map(|k| plan.matcher.allows_net(&k))
                            .unwrap_or(false);
                        if allowed {
                            return;
                        }
                        (Action::Alerted, Mechanism::CgroupSock)
                    }
                    _ => return,
                };
                let op = match net.direction {
                    NetDirection::Connect | NetDirection::Send => NetOp::Connect,
                    NetDirection::Bind | NetDirection::Accept => NetOp::Bind,
                };
                let proto = match net.protocol {
                    bpf::Protocol::Tcp => L4Proto::Tcp,
                    bpf::Protocol::Udp => L4Proto::Udp,
                };
                let key = format!("net:{}:{op:?}:{}:{}", net.process.pid, net.addr, net.port);
                if action == Action::Alerted && !self.first_time(key) {
                    return;
                }
                let process = self.process_of(&net.process);
                let deviation = Deviation::Network {
                    op,
                    proto,
                    addr: net.addr,
                    port: net.port,
                };
                self.audit.emit(
                    self.context
                        .deviation(deviation, action, mechanism)
                        .process(process)
                        .confidence(plan.profile.confidence.network),
                );
            }
            // The LSM tier's file_open reports only opens outside the profile.
            Event::File(file) if file.mechanism == bpf::Mechanism::Lsm => {
                let action = if self.mode == Mode::Enforce {
                    Action::Blocked
                } else {
                    Action::Alerted
                };
                let access = if file.access.write || file.access.create || file.access.truncate {
                    AuditAccess::Write
                } else {
                    AuditAccess::Read
                };
                let path = file.path.clone().unwrap_or_else(|| file.raw_path.clone());
                let process = self.process_of(&file.process);
                let deviation = Deviation::File {
                    path: path.into_bytes(),
                    access,
                    syscall: "open".into(),
                };
                self.audit.emit(
                    self.context
                        .deviation(deviation, action, Mechanism::Lsm)
                        .process(process)
                        .confidence(plan.profile.confidence.files),
                );
            }
            Event::Lsm(lsm) if matches!(lsm.verdict, Verdict::Blocked | Verdict::Killed) => {
                let name = format!("{:?}", lsm.hook).to_lowercase();
                let process = self.process_of(&lsm.process);
                self.audit.emit(
                    self.context
                        .deviation(Deviation::Syscall { name }, Action::Blocked, Mechanism::Lsm)
                        .process(process),
                );
            }
            _ => {}
        }
    }

    /// Remembers what an exec event says about its process (bounded), and returns it.
    fn remember(&self, exec: &bpf::ExecInfo, exe: &str, program: &str) -> audit::Process {
        let argv = exec.argv.join("\0");
        let process = audit::Process::new(exec.process.pid)
            .exepath(exe.as_bytes())
            .name(program.as_bytes())
            .argv(argv.as_bytes())
            .parent(Some(exec.process.ppid), exec.parent_comm.as_bytes())
            .uid(exec.process.uid);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= 4096 {
            recent.clear();
        }
        recent.insert(exec.process.pid, process.clone());
        process
    }

    /// Records the identity of every file the profile executes, before the workload runs.
    fn record_exec_files(&self) {
        let Some(plan) = &self.plan else {
            return;
        };
        let Ok(root) = std::fs::canonicalize(&self.rootfs) else {
            return;
        };
        let mut files = self.exec_files.lock().unwrap_or_else(|e| e.into_inner());
        for (path, _) in &plan.execs {
            let host = root.join(path.trim_start_matches('/'));
            // Only a path that stays inside the rootfs (no symlink leading out of it).
            let Ok(real) = std::fs::canonicalize(&host) else {
                continue;
            };
            if !real.starts_with(&root) {
                continue;
            }
            if let Ok(meta) = std::fs::metadata(&real) {
                use std::os::unix::fs::MetadataExt;
                files.insert(path.clone(), (meta.dev(), meta.ino()));
            }
        }
    }

    /// An audit process from a kernel record: as its exec event described it, else from
    /// /proc while it is there, else from the record alone.
    fn process_of(&self, p: &bpf::Process) -> audit::Process {
        // The exec event's account first: /proc of a process that already exited but is not
        // reaped yet (a zombie) has no command line or executable any more.
        let known = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p.pid)
            .cloned();
        if let Some(known) = known {
            return known;
        }
        if procinfo::status(p.pid).is_some() {
            return procinfo::describe(p.pid, &self.rootfs);
        }
        let pname = procinfo::comm(p.ppid).unwrap_or_default();
        audit::Process::new(p.pid)
            .name(p.comm.as_bytes())
            .parent(Some(p.ppid), pname.as_bytes())
            .uid(p.uid)
    }

    /// What the shim's own checks (files, exec identity) do with a deviation: allow and
    /// report it in monitor, refuse and report it in enforce.
    fn user_space_verdict(&self) -> (bool, Action) {
        if self.mode == Mode::Enforce {
            (false, Action::Blocked)
        } else {
            (true, Action::Alerted)
        }
    }

    /// Whether a thread belongs to the container's workload (see
    /// [`Registration::tracks`]): the runtime's own steps (runc init before it executes the
    /// entrypoint or an exec's program) are never judged.
    fn is_workload(&self, tid: u32) -> bool {
        let tracker = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (Some(tracker), Some(status)) = (tracker, procinfo::status(tid)) else {
            return false;
        };
        tracker.tracks(status.tgid)
    }
}

/// A kernel event as a learner's observation; `None` for what is not learned (failed or
/// O_PATH opens, renames, LSM records).
fn observation(event: Event) -> Option<(Origin, Observed)> {
    let origin = |p: &bpf::Process| {
        if p.exec_session.is_some() {
            Origin::Exec
        } else {
            Origin::Main
        }
    };
    Some(match event {
        Event::Syscall { process, nr } => (origin(&process), Observed::Syscall(nr)),
        Event::Exec(exec) => (
            origin(&exec.process),
            Observed::Exec(ExecObservation {
                filename: exec.invoked.clone(),
                resolved: exec.exe_path.clone().unwrap_or_default(),
                argv0: exec.argv.first().cloned().unwrap_or_default(),
                parent: Some(exec.parent_comm.clone()),
            }),
        ),
        Event::File(file) => {
            let path = file.path.clone()?;
            if file.result < 0 || file.access.path_only {
                return None;
            }
            let access = if file.access.create {
                Access::Create
            } else if file.access.write || file.access.truncate {
                Access::Write
            } else {
                Access::Read
            };
            (origin(&file.process), Observed::File { path, access })
        }
        Event::Net(net) => {
            let family = if net.addr.is_ipv4() {
                Family::Inet
            } else {
                Family::Inet6
            };
            let protocol = match net.protocol {
                bpf::Protocol::Tcp => Protocol::Tcp,
                bpf::Protocol::Udp => Protocol::Udp,
            };
            let sock = std::net::SocketAddr::new(net.addr, net.port);
            let (direction, local, remote) = match net.direction {
                NetDirection::Connect => (Direction::Connect, None, Some(sock)),
                NetDirection::Send => (Direction::Send, None, Some(sock)),
                NetDirection::Bind => (Direction::Bind, Some(sock), None),
                NetDirection::Accept => (Direction::Accept, Some(sock), None),
            };
            (
                origin(&net.process),
                Observed::Net(NetObservation {
                    family,
                    protocol,
                    direction,
                    local,
                    remote,
                    unix_path: None,
                }),
            )
        }
        Event::Rename { .. } | Event::Lsm(_) => return None,
    })
}

/// Answers the container's seccomp notifications: syscalls outside the profile.
struct SyscallResponder(Arc<Shared>);

impl Responder for SyscallResponder {
    fn decide(&self, req: &NotifyRequest, _origin: &ProcessState) -> notify::Verdict {
        let shared = &self.0;
        if !shared.is_workload(req.pid) {
            // runc's own steps under the filter are the floor's business, never a deviation.
            return notify::Verdict::Continue;
        }
        let name = syscalls::name(req.syscall as u32)
            .map(str::to_string)
            .unwrap_or_else(|| format!("syscall_{}", req.syscall));
        let (verdict, action) = match (shared.mode, &shared.compiled) {
            (Mode::Enforce, Some(compiled)) => (
                notify::Verdict::Deny(compiled.denial_errno(&name) as i32),
                Action::Blocked,
            ),
            _ => (notify::Verdict::Continue, Action::Alerted),
        };
        if shared.first_time(format!("sys:{}:{name}", req.pid)) {
            let process = procinfo::describe(req.pid, &shared.rootfs);
            let mut event = shared
                .context
                .deviation(
                    Deviation::Syscall { name },
                    action,
                    Mechanism::SeccompNotify,
                )
                .process(process);
            if let Some(plan) = &shared.plan {
                event = event.confidence(plan.profile.confidence.syscalls);
            }
            shared.audit.emit(event);
        }
        verdict
    }
}

/// Decides the container's file opens (fanotify).
struct FileDecider(Arc<Shared>);

impl FileDecider {
    /// An exec's open of a file the profile runs must open that very file: a file renamed
    /// over it (a dropped binary under an allowed name) is refused with EPERM before it
    /// runs. Other files are the exec hook's business (program identity needs argv).
    fn allow_exec_file(&self, plan: &Plan, access: &fanotify::FileAccess) -> bool {
        let shared = &self.0;
        // A file unlinked after it was opened (its name kept, with O_PATH, through
        // /proc/self/fd or execveat) is named `<path> (deleted)`; the kernel's exec check
        // still sees `<path>`, so the identity is checked under that name too.
        let path = access
            .path
            .strip_suffix(" (deleted)")
            .unwrap_or(&access.path);
        let expected = shared
            .exec_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied();
        let (Some(expected), Some(found)) = (expected, access.inode) else {
            return true;
        };
        if expected == found {
            return true;
        }
        let (allow, action) = shared.user_space_verdict();
        let process = procinfo::describe(access.tid, &shared.rootfs);
        let deviation = Deviation::Exec {
            filename: access.path.clone().into_bytes(),
        };
        shared.audit.emit(
            shared
                .context
                .deviation(deviation, action, Mechanism::Fanotify)
                .process(process)
                .confidence(plan.profile.confidence.execs)
                .output(format!(
                    "{} exec of {}: the file is not the one the profile runs (replaced in \
                     the container)",
                    if allow { "unexpected" } else { "blocked" },
                    access.path
                )),
        );
        allow
    }
}

impl FileResponder for FileDecider {
    fn is_member(&self, tid: u32) -> bool {
        self.0.is_workload(tid)
    }

    fn allow(&self, access: &fanotify::FileAccess) -> bool {
        let shared = &self.0;
        let Some(plan) = &shared.plan else {
            return true;
        };
        let (kind, audit_kind) = match access.access {
            fanotify::Access::Exec => return self.allow_exec_file(plan, access),
            // Loading by the kernel for an exec is not an open by the program.
            fanotify::Access::Kernel => return true,
            fanotify::Access::Read => (Access::Read, AuditAccess::Read),
            fanotify::Access::Write => (Access::Write, AuditAccess::Write),
        };
        if plan.matcher.allows_file(&access.path, kind) {
            return true;
        }
        let (allow, action) = shared.user_space_verdict();
        let key = format!("file:{}:{:?}:{}", access.tid, kind, access.path);
        if shared.first_time(key) || !allow {
            let process = procinfo::describe(access.tid, &shared.rootfs);
            let deviation = Deviation::File {
                path: access.path.clone().into_bytes(),
                access: audit_kind,
                syscall: "open".into(),
            };
            shared.audit.emit(
                shared
                    .context
                    .deviation(deviation, action, Mechanism::Fanotify)
                    .process(process)
                    .confidence(plan.profile.confidence.files),
            );
        }
        allow
    }
}
