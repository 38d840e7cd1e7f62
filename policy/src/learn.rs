//! Learning aggregation: observations from the kernel side become a per-container
//! [`Learner`], whose deltas are merged into the image's profile in the store.
//!
//! The key builders here ([`exec_key`], [`file_key`], [`net_key`]) are the only place where
//! an observation is normalised; the monitor checks (`check`) use the same functions, so a
//! behaviour that was learned always matches itself later.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::error::{PolicyError, Result};
use crate::model::{
    Access, Body, Direction, Evidence, ExecKey, Family, FileKey, NetKey, Origin, Phase,
    ProfileDelta, Protocol,
};
use crate::net::Peer;
use crate::pattern;
use crate::syscalls;
use crate::timestamp::Timestamp;

/// An exec as the kernel side reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecObservation {
    /// The path given to execve (`/bin/cat`, `/proc/self/exe`, `./run.sh`).
    pub filename: String,
    /// The file executed, symlinks resolved (`/bin/busybox`); empty if unknown.
    pub resolved: String,
    /// `argv[0]` of the new program (`cat`, `-sh`, `/usr/bin/python3`).
    pub argv0: String,
    /// Program name (comm) of the parent, `None` if the parent is outside the container
    /// (runc, the shim).
    pub parent: Option<String>,
}

/// A socket operation as the kernel side reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetObservation {
    pub family: Family,
    pub protocol: Protocol,
    pub direction: Direction,
    /// The container's own address (needed for bind, listen, accept).
    pub local: Option<SocketAddr>,
    /// The other side (needed for connect and send on inet sockets).
    pub remote: Option<SocketAddr>,
    /// The socket path for unix sockets (`@name` for abstract ones).
    pub unix_path: Option<String>,
}

/// One observed item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// An x86_64 syscall number.
    Syscall(u32),
    Exec(ExecObservation),
    File {
        path: String,
        access: Access,
    },
    Net(NetObservation),
}

/// An observed item with its time and process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub at: Timestamp,
    pub origin: Origin,
    pub what: Observed,
}

/// A profile category, for lost-event accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Syscalls,
    Execs,
    Files,
    Network,
}

/// Who is learning and since when.
#[derive(Debug, Clone)]
pub struct LearnerConfig {
    pub container_id: String,
    /// Image name for people (`docker.io/library/redis:7`), if known.
    pub image_name: Option<String>,
    /// The runtime the container runs under, as `runc 1.1.5`.
    pub runtime: Option<String>,
    /// When the entrypoint was started.
    pub started: Timestamp,
    /// Seconds after `started` that count as start-up (the learning key `startup_secs`).
    pub startup_secs: u64,
}

/// Accumulates one container's observations between flushes.
#[derive(Debug)]
pub struct Learner {
    config: LearnerConfig,
    startup_until: Timestamp,
    last_take: Timestamp,
    taken_once: bool,
    credited: HashSet<Credited>,
    pending: Body,
}

/// Entries this container has already been counted for (`Evidence::containers`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Credited {
    Syscall(String),
    Exec(ExecKey),
    File(FileKey),
    Net(NetKey),
}

impl Learner {
    pub fn new(config: LearnerConfig) -> Self {
        let startup_until = config.started.plus(config.startup_secs);
        let last_take = config.started;
        Self {
            config,
            startup_until,
            last_take,
            taken_once: false,
            credited: HashSet::new(),
            pending: Body::default(),
        }
    }

    /// Ends start-up early (for example when the workload reports ready).
    pub fn end_startup(&mut self, at: Timestamp) {
        self.startup_until = self.startup_until.min(at);
    }

    /// Records one observation. Runtime-internal execs (runc re-executing itself) are
    /// dropped; an unknown syscall number or an incomplete socket report is an error and
    /// nothing is recorded.
    pub fn observe(&mut self, obs: &Observation) -> Result<()> {
        let phase = if obs.at < self.startup_until {
            Phase::Startup
        } else {
            Phase::Steady
        };
        let evidence = Evidence::once(obs.at, phase, obs.origin);
        match &obs.what {
            Observed::Syscall(nr) => {
                let name = syscalls::name(*nr)
                    .ok_or_else(|| PolicyError::UnknownSyscall(format!("number {nr}")))?;
                fold(&mut self.pending.syscalls, name.to_string(), evidence);
            }
            Observed::Exec(exec) => match exec_key(exec) {
                Some(key) => fold(&mut self.pending.execs, key, evidence),
                None => return Ok(()),
            },
            Observed::File { path, access } => {
                fold(&mut self.pending.files, file_key(path, *access), evidence)
            }
            Observed::Net(net) => fold(&mut self.pending.network, net_key(net)?, evidence),
        }
        self.pending.coverage.events += 1;
        Ok(())
    }

    /// Counts events the kernel side could not deliver.
    pub fn lost(&mut self, category: Category, count: u64) {
        let lost = &mut self.pending.coverage.lost;
        let slot = match category {
            Category::Syscalls => &mut lost.syscalls,
            Category::Execs => &mut lost.execs,
            Category::Files => &mut lost.files,
            Category::Network => &mut lost.network,
        };
        *slot = slot.saturating_add(count);
    }

    /// Everything observed since the last call, ready for `Store::merge_into`. Each entry
    /// counts this container once over all deltas, so periodic flushes never inflate
    /// `containers`.
    pub fn take_delta(&mut self, now: Timestamp) -> ProfileDelta {
        let mut delta = std::mem::take(&mut self.pending);
        if !self.taken_once {
            delta.coverage.containers = 1;
            delta.names.extend(self.config.image_name.clone());
            delta.runtime.extend(self.config.runtime.clone());
            self.taken_once = true;
        }
        delta.coverage.seconds = now.secs_since(self.last_take);
        self.last_take = self.last_take.max(now);
        self.credit(&mut delta);
        delta
    }

    /// The container this learner belongs to.
    pub fn container_id(&self) -> &str {
        &self.config.container_id
    }

    fn credit(&mut self, delta: &mut Body) {
        let credited = &mut self.credited;
        for (name, ev) in delta.syscalls.iter_mut() {
            ev.containers = u64::from(credited.insert(Credited::Syscall(name.clone())));
        }
        for (key, ev) in delta.execs.iter_mut() {
            ev.containers = u64::from(credited.insert(Credited::Exec(key.clone())));
        }
        for (key, ev) in delta.files.iter_mut() {
            ev.containers = u64::from(credited.insert(Credited::File(key.clone())));
        }
        for (key, ev) in delta.network.iter_mut() {
            ev.containers = u64::from(credited.insert(Credited::Net(key.clone())));
        }
    }
}

fn fold<K: Ord>(map: &mut std::collections::BTreeMap<K, Evidence>, key: K, evidence: Evidence) {
    match map.get_mut(&key) {
        Some(existing) => existing.merge(&evidence),
        None => {
            map.insert(key, evidence);
        }
    }
}

/// Whether a program name belongs to the runtime rather than the workload.
fn is_runtime_program(name: &str) -> bool {
    name.starts_with("runc") || name.starts_with("containerd-shim")
}

/// The exec identity of an observation, or `None` for the runtime's own re-execs (runc's
/// `memfd:runc_cloned` copy, `runc:[2:INIT]`), which are never learned.
pub fn exec_key(exec: &ExecObservation) -> Option<ExecKey> {
    let resolved = if exec.resolved.is_empty() {
        exec.filename.as_str()
    } else {
        exec.resolved.as_str()
    };
    let program = basename(if exec.argv0.is_empty() {
        resolved
    } else {
        exec.argv0.trim_start_matches('-')
    });
    if resolved.starts_with("memfd:") || is_runtime_program(program) {
        return None;
    }
    let invoked = if is_self_reference(&exec.filename) {
        format!("{}/{program}", dirname(resolved))
    } else {
        exec.filename.clone()
    };
    let parent = exec.parent.clone().filter(|p| !is_runtime_program(p));
    Some(ExecKey {
        path: resolved.to_string(),
        program: program.to_string(),
        parent,
        invoked,
    })
}

/// `/proc/self/exe`, `/proc/<pid>/exe`, `/proc/self/fd/<n>`, `/dev/fd/<n>`: paths that name
/// the running or an open file rather than a program.
fn is_self_reference(path: &str) -> bool {
    let collapsed = pattern::collapse(path);
    matches!(
        collapsed.as_str(),
        "/proc/self/exe" | "/proc/*/exe" | "/proc/self/fd/*" | "/proc/*/fd/*" | "/dev/fd/*"
    )
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "",
        Some(i) => &path[..i],
        None => ".",
    }
}

/// The file entry for an observed path: the path collapsed into a pattern.
pub fn file_key(path: &str, access: Access) -> FileKey {
    FileKey {
        path: pattern::collapse(path),
        access,
    }
}

/// The network entry for an observed socket operation (see `NetKey` for which side is kept).
pub fn net_key(net: &NetObservation) -> Result<NetKey> {
    let missing = |side: &str| {
        PolicyError::invalid(
            "network observation",
            format!(
                "{:?} on a {:?} socket lacks the {side} address",
                net.direction, net.family
            ),
        )
    };
    let (peer, port) = if net.family == Family::Unix {
        let path = net
            .unix_path
            .as_deref()
            .ok_or_else(|| missing("socket path"))?;
        (Peer::Path(pattern::collapse(path)), None)
    } else {
        match net.direction {
            Direction::Connect | Direction::Send => {
                let remote = net.remote.ok_or_else(|| missing("remote"))?;
                (Peer::addr(remote.ip()), Some(remote.port()))
            }
            Direction::Bind | Direction::Listen => {
                let local = net.local.ok_or_else(|| missing("local"))?;
                (Peer::addr(local.ip()), Some(local.port()))
            }
            Direction::Accept => {
                let local = net.local.ok_or_else(|| missing("local"))?;
                (Peer::Any, Some(local.port()))
            }
        }
    };
    Ok(NetKey {
        family: net.family,
        protocol: net.protocol,
        direction: net.direction,
        peer,
        port,
    })
}
