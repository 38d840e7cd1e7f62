//! What one profile allows that another does not, both ways.

use std::fmt;

use serde::Serialize;

use crate::check::Matcher;
use crate::model::{Body, ExecKey, FileKey, NetKey};

/// Entries of one side that the other side does not allow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Section {
    pub syscalls: Vec<String>,
    pub execs: Vec<ExecKey>,
    pub files: Vec<FileKey>,
    pub network: Vec<NetKey>,
}

impl Section {
    pub fn is_empty(&self) -> bool {
        self.syscalls.is_empty()
            && self.execs.is_empty()
            && self.files.is_empty()
            && self.network.is_empty()
    }
}

/// `added`: what B allows that A does not; `removed`: what A allows that B does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProfileDiff {
    pub added: Section,
    pub removed: Section,
}

/// Compares A with B by what each allows (patterns and ranges are taken into account, the
/// invoked path of an exec is not: see `check`).
pub fn diff(a: &Body, b: &Body) -> ProfileDiff {
    ProfileDiff {
        added: not_allowed(b, &Matcher::new(a, None)),
        removed: not_allowed(a, &Matcher::new(b, None)),
    }
}

/// Entries of `side` that `other` does not allow.
fn not_allowed(side: &Body, other: &Matcher) -> Section {
    Section {
        syscalls: side
            .syscalls
            .keys()
            .filter(|name| !other.allows_syscall_name(name))
            .cloned()
            .collect(),
        execs: side
            .execs
            .keys()
            .filter(|k| !other.allows_exec(k))
            .cloned()
            .collect(),
        files: side
            .files
            .keys()
            .filter(|k| !other.allows_file(&k.path, k.access))
            .cloned()
            .collect(),
        network: side
            .network
            .keys()
            .filter(|k| !other.allows_net(k))
            .cloned()
            .collect(),
    }
}

impl ProfileDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// One readable line per entry, as `diff` prints it.
pub fn describe_exec(k: &ExecKey) -> String {
    let parent = k.parent.as_deref().unwrap_or("-");
    format!(
        "{} ({}, invoked {}, parent {parent})",
        k.program, k.path, k.invoked
    )
}

/// One readable line for a network entry.
pub fn describe_net(k: &NetKey) -> String {
    let port = k.port.map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{} {}/{} {}{port}",
        json_word(&k.direction),
        json_word(&k.family),
        json_word(&k.protocol),
        k.peer
    )
}

/// The lowercase word serde writes for a unit enum variant.
pub(crate) fn json_word<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn write_section(f: &mut fmt::Formatter<'_>, sign: char, s: &Section) -> fmt::Result {
    for name in &s.syscalls {
        writeln!(f, "  {sign} syscall {name}")?;
    }
    for k in &s.execs {
        writeln!(f, "  {sign} exec    {}", describe_exec(k))?;
    }
    for k in &s.files {
        writeln!(f, "  {sign} file    {} {}", k.access.as_str(), k.path)?;
    }
    for k in &s.network {
        writeln!(f, "  {sign} network {}", describe_net(k))?;
    }
    Ok(())
}

impl fmt::Display for ProfileDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(
                f,
                "no difference: each profile allows exactly what the other does"
            );
        }
        writeln!(f, "B allows, A does not:")?;
        if self.added.is_empty() {
            writeln!(f, "  (nothing)")?;
        }
        write_section(f, '+', &self.added)?;
        writeln!(f, "A allows, B does not:")?;
        if self.removed.is_empty() {
            writeln!(f, "  (nothing)")?;
        }
        write_section(f, '-', &self.removed)
    }
}
