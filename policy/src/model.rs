//! The profile document: what one image was seen doing, with evidence per entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::entries;
use crate::error::{PolicyError, Result};
use crate::net::Peer;
use crate::timestamp::Timestamp;

/// The schema version this crate writes and the newest it reads.
pub const SCHEMA: u32 = 1;

/// An image config digest (`sha256:` and 64 lowercase hex digits): the image ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Validates `text` as `sha256:<64 hex>`; upper-case hex is folded to lower case.
    pub fn parse(text: &str) -> Result<Self> {
        let hex = text.strip_prefix("sha256:").ok_or_else(|| {
            PolicyError::invalid(format!("digest {text:?}"), "it must start with sha256:")
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PolicyError::invalid(
                format!("digest {text:?}"),
                "it must be sha256: followed by 64 hex digits (the image ID)",
            ));
        }
        Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
    }

    /// The 64 hex digits, used as the file name in the store.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, as `docker images` shows an image ID.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// The full `sha256:...` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Digest {
    type Error = PolicyError;
    fn try_from(text: String) -> Result<Self> {
        Digest::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a profile is still being learned or has settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Learning,
    Stable,
}

/// When in a container's life an entry was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Within the start-up window after the entrypoint's exec.
    Startup,
    /// After start-up settled.
    Steady,
}

/// Which process tree showed an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The container's init process and its descendants.
    Main,
    /// A `ctr task exec` / `kubectl exec` session and its descendants.
    Exec,
}

/// How an entry was observed: when, how often, by how many containers, in which contexts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Observations folded into this entry (the kernel side folds repeats, so this counts
    /// reports, not raw calls).
    pub count: u64,
    /// Distinct containers that showed it.
    pub containers: u64,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub phases: BTreeSet<Phase>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub origins: BTreeSet<Origin>,
}

impl Evidence {
    /// Evidence of one observation.
    pub fn once(at: Timestamp, phase: Phase, origin: Origin) -> Self {
        Self {
            first_seen: at,
            last_seen: at,
            count: 1,
            containers: 0,
            phases: BTreeSet::from([phase]),
            origins: BTreeSet::from([origin]),
        }
    }

    /// Folds `other` in: earliest first, latest last, counts added, contexts united.
    pub fn merge(&mut self, other: &Evidence) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count = self.count.saturating_add(other.count);
        self.containers = self.containers.saturating_add(other.containers);
        self.phases.extend(other.phases.iter().copied());
        self.origins.extend(other.origins.iter().copied());
    }
}

/// A program run in the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExecKey {
    /// The file the kernel executed, symlinks resolved (`/bin/busybox` for an applet).
    pub path: String,
    /// The program as invoked: basename of `argv[0]` (`cat`).
    pub program: String,
    /// The program name of the parent process; absent when the runtime started it (the
    /// entrypoint, the first process of an exec session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The path as invoked (`/bin/cat`); for a `/proc/self/exe` re-exec, the resolved file's
    /// folder joined with the program name.
    pub invoked: String,
}

/// How a file was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Create,
    Exec,
}

impl Access {
    /// The lowercase name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Create => "create",
            Access::Exec => "exec",
        }
    }
}

/// A file path pattern (see `pattern`) with the access made to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub path: String,
    pub access: Access,
}

/// Address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Inet6,
    Unix,
}

/// Transport protocol of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Unix stream / seqpacket sockets.
    Stream,
    /// Unix datagram sockets.
    Dgram,
    Raw,
}

/// What the container did with the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Connect,
    Bind,
    Listen,
    Accept,
    Send,
}

/// A network entry: who the container talks to, or where it listens.
///
/// `peer` and `port` are the remote side for `connect` and `send`, the local address and port
/// for `bind` and `listen`, and any peer with the local port for `accept`. A client's
/// ephemeral port is never recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NetKey {
    pub family: Family,
    pub protocol: Protocol,
    pub direction: Direction,
    pub peer: Peer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Kernel events the learner knows it missed, per category. Non-zero means "incomplete",
/// which is not the same as "saw nothing".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    #[serde(default)]
    pub syscalls: u64,
    #[serde(default)]
    pub execs: u64,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub network: u64,
}

impl Lost {
    /// All categories added up.
    pub fn total(&self) -> u64 {
        self.syscalls
            .saturating_add(self.execs)
            .saturating_add(self.files)
            .saturating_add(self.network)
    }

    fn merge(&mut self, other: &Lost) {
        self.syscalls = self.syscalls.saturating_add(other.syscalls);
        self.execs = self.execs.saturating_add(other.execs);
        self.files = self.files.saturating_add(other.files);
        self.network = self.network.saturating_add(other.network);
    }
}

/// How much observation stands behind a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Containers that contributed.
    pub containers: u64,
    /// Seconds of learning, added over containers.
    pub seconds: u64,
    /// Observations received (after kernel-side folding).
    pub events: u64,
    /// Events known to be lost.
    #[serde(default)]
    pub lost: Lost,
}

impl Coverage {
    fn merge(&mut self, other: &Coverage) {
        self.containers = self.containers.saturating_add(other.containers);
        self.seconds = self.seconds.saturating_add(other.seconds);
        self.events = self.events.saturating_add(other.events);
        self.lost.merge(&other.lost);
    }
}

/// The mergeable part of a profile: everything observed. A learner's delta is one of these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// Image names (`docker.io/library/nginx:1.27`) seen with this digest.
    #[serde(default)]
    pub names: BTreeSet<String>,
    /// Runtimes the observations were made under (`runc 1.1.5`).
    #[serde(default)]
    pub runtime: BTreeSet<String>,
    #[serde(default)]
    pub coverage: Coverage,
    /// x86_64 syscall name to evidence.
    #[serde(default)]
    pub syscalls: BTreeMap<String, Evidence>,
    #[serde(default, with = "entries")]
    pub execs: BTreeMap<ExecKey, Evidence>,
    #[serde(default, with = "entries")]
    pub files: BTreeMap<FileKey, Evidence>,
    #[serde(default, with = "entries")]
    pub network: BTreeMap<NetKey, Evidence>,
}

/// A learner's contribution to a profile; merged into the store with `Store::merge_into`.
pub type ProfileDelta = Body;

impl Body {
    /// Folds `other` into `self`. Associative and commutative, so any number of learners on
    /// any number of nodes can contribute in any order.
    pub fn merge(&mut self, other: &Body) {
        self.names.extend(other.names.iter().cloned());
        self.runtime.extend(other.runtime.iter().cloned());
        self.coverage.merge(&other.coverage);
        merge_map(&mut self.syscalls, &other.syscalls);
        merge_map(&mut self.execs, &other.execs);
        merge_map(&mut self.files, &other.files);
        merge_map(&mut self.network, &other.network);
    }

    /// True when nothing at all was recorded.
    pub fn is_empty(&self) -> bool {
        *self == Body::default()
    }

    /// Number of entries in all four categories.
    pub fn entry_count(&self) -> usize {
        self.syscalls.len() + self.execs.len() + self.files.len() + self.network.len()
    }
}

fn merge_map<K: Ord + Clone>(into: &mut BTreeMap<K, Evidence>, from: &BTreeMap<K, Evidence>) {
    for (key, evidence) in from {
        match into.get_mut(key) {
            Some(existing) => existing.merge(evidence),
            None => {
                into.insert(key.clone(), evidence.clone());
            }
        }
    }
}

/// Confidence per category, in [0, 1] (see `stability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    pub syscalls: f64,
    pub execs: f64,
    pub files: f64,
    pub network: f64,
}

impl Confidence {
    /// Component-wise minimum: a merged profile is no more certain than either part until
    /// `stability::refresh` recomputes it.
    pub fn lower(&self, other: &Confidence) -> Confidence {
        Confidence {
            syscalls: self.syscalls.min(other.syscalls),
            execs: self.execs.min(other.execs),
            files: self.files.min(other.files),
            network: self.network.min(other.network),
        }
    }
}

/// One image's profile: the document stored as `<state_dir>/profiles/<digest-hex>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub schema: u32,
    pub digest: Digest,
    pub state: State,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// Confidence as of `updated`; recomputed on every write.
    #[serde(default)]
    pub confidence: Confidence,
    #[serde(flatten)]
    pub body: Body,
}

impl Profile {
    /// An empty profile in `learning` state.
    pub fn new(digest: Digest, now: Timestamp) -> Self {
        Self {
            schema: SCHEMA,
            digest,
            state: State::Learning,
            created: now,
            updated: now,
            confidence: Confidence::default(),
            body: Body::default(),
        }
    }

    /// Folds `other` (a profile of the same image) in. Associative and commutative: the
    /// state is the further one (`stable` wins), times widen, bodies merge. Confidence is a
    /// snapshot: the lower one is kept until
    /// the caller recomputes it (`stability::refresh`).
    pub fn merge(&mut self, other: &Profile) -> Result<()> {
        if self.digest != other.digest {
            return Err(PolicyError::DigestMismatch {
                left: self.digest.to_string(),
                right: other.digest.to_string(),
            });
        }
        self.state = self.state.max(other.state);
        self.confidence = self.confidence.lower(&other.confidence);
        self.created = self.created.min(other.created);
        self.updated = self.updated.max(other.updated);
        self.body.merge(&other.body);
        Ok(())
    }
}
