//! Checking observed behaviour against a profile (monitor reports, enforce decisions).
//!
//! Observations are normalised by the same key builders the learner uses, so whatever was
//! learned matches itself. Build a [`Matcher`] once per container and call
//! [`Matcher::check`] per event.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::Result;
use crate::floor::RuntimeFloor;
use crate::learn::{exec_key, file_key, net_key, Category, Observed};
use crate::model::{Access, Body, ExecKey, FileKey, NetKey};
use crate::pattern;
use crate::syscalls;

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Covered by the profile (or the runtime floor, or the runtime's own activity).
    Allowed,
    /// Not covered: report (monitor) or block (enforce).
    Deviation(Deviation),
}

/// What deviated, for the audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deviation {
    pub category: Category,
    /// One readable line: `exec of nc (/bin/busybox, parent sh) is not in the profile`.
    pub summary: String,
}

/// A profile prepared for fast checks.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    syscalls: HashSet<String>,
    /// (resolved path, program) → parents seen.
    execs: HashMap<(String, String), BTreeSet<Option<String>>>,
    literal_files: HashSet<(String, Access)>,
    file_patterns: Vec<FileKey>,
    network: Vec<NetKey>,
}

impl Matcher {
    /// Prepares `body`; the floor's syscalls count as allowed too.
    pub fn new(body: &Body, floor: Option<&RuntimeFloor>) -> Self {
        let mut m = Matcher::default();
        m.syscalls.extend(body.syscalls.keys().cloned());
        if let Some(floor) = floor {
            m.syscalls.extend(floor.syscalls().map(str::to_string));
        }
        for key in body.execs.keys() {
            m.execs
                .entry((key.path.clone(), key.program.clone()))
                .or_default()
                .insert(key.parent.clone());
        }
        for key in body.files.keys() {
            if pattern::is_literal(&key.path) {
                m.literal_files.insert((key.path.clone(), key.access));
            } else {
                m.file_patterns.push(key.clone());
            }
        }
        m.network.extend(body.network.keys().cloned());
        m
    }

    /// Checks one observation. An incomplete socket report is an error.
    pub fn check(&self, what: &Observed) -> Result<Verdict> {
        Ok(match what {
            Observed::Syscall(nr) => self.check_syscall(*nr),
            Observed::Exec(exec) => match exec_key(exec) {
                Some(key) => self.check_exec(&key),
                None => Verdict::Allowed,
            },
            Observed::File { path, access } => self.check_file(&file_key(path, *access), path),
            Observed::Net(net) => self.check_net(&net_key(net)?),
        })
    }

    /// Whether a syscall name is allowed (profile or floor).
    pub fn allows_syscall_name(&self, name: &str) -> bool {
        self.syscalls.contains(name)
    }

    /// Checks an x86_64 syscall number.
    pub fn check_syscall(&self, nr: u32) -> Verdict {
        match syscalls::name(nr) {
            Some(name) if self.syscalls.contains(name) => Verdict::Allowed,
            Some(name) => deviation(
                Category::Syscalls,
                format!("syscall {name} is not in the profile"),
            ),
            None => deviation(Category::Syscalls, format!("unknown syscall number {nr}")),
        }
    }

    /// Whether the exec identity (resolved file, program, parent) was learned. The invoked
    /// path is not compared: one file has several names (applet links, /bin -> usr/bin).
    pub fn allows_exec(&self, key: &ExecKey) -> bool {
        self.execs
            .get(&(key.path.clone(), key.program.clone()))
            .is_some_and(|parents| parents.contains(&key.parent))
    }

    fn check_exec(&self, key: &ExecKey) -> Verdict {
        if self.allows_exec(key) {
            return Verdict::Allowed;
        }
        let parent = key.parent.as_deref().unwrap_or("the runtime");
        deviation(
            Category::Execs,
            format!(
                "exec of {} ({}, invoked as {}, parent {parent}) is not in the profile",
                key.program, key.path, key.invoked
            ),
        )
    }

    /// Whether a path (raw or collapsed) with this access is covered. A `create` entry also
    /// covers `write` to the same path.
    pub fn allows_file(&self, path: &str, access: Access) -> bool {
        let collapsed = pattern::collapse(path);
        let accesses: &[Access] = match access {
            Access::Write => &[Access::Write, Access::Create],
            _ => std::slice::from_ref(&access),
        };
        accesses.iter().any(|a| {
            self.literal_files.contains(&(collapsed.clone(), *a))
                || self.file_patterns.iter().any(|k| {
                    k.access == *a
                        && (pattern::matches(&k.path, path)
                            || pattern::matches(&k.path, &collapsed))
                })
        })
    }

    fn check_file(&self, key: &FileKey, raw: &str) -> Verdict {
        if self.allows_file(raw, key.access) {
            return Verdict::Allowed;
        }
        deviation(
            Category::Files,
            format!("{} of {raw} is not in the profile", key.access.as_str()),
        )
    }

    /// Whether a network key is covered: same family, protocol and direction, a peer range
    /// that contains it, and the same port (an entry without port allows any).
    pub fn allows_net(&self, key: &NetKey) -> bool {
        self.network.iter().any(|e| net_covers(e, key))
    }

    fn check_net(&self, key: &NetKey) -> Verdict {
        if self.allows_net(key) {
            return Verdict::Allowed;
        }
        let port = key.port.map(|p| format!(" port {p}")).unwrap_or_default();
        deviation(
            Category::Network,
            format!(
                "{:?} {:?}/{:?} {}{port} is not in the profile",
                key.direction, key.family, key.protocol, key.peer
            )
            .to_lowercase(),
        )
    }
}

/// Whether entry `e` allows what `k` describes.
pub fn net_covers(e: &NetKey, k: &NetKey) -> bool {
    e.family == k.family
        && e.protocol == k.protocol
        && e.direction == k.direction
        && e.peer.covers(&k.peer)
        && (e.port.is_none() || e.port == k.port)
}

fn deviation(category: Category, summary: String) -> Verdict {
    Verdict::Deviation(Deviation { category, summary })
}
