//! Reading a reviewed or shared profile file and checking it before it enters the store.

use std::path::Path;

use crate::error::{PolicyError, Result};
use crate::model::{Evidence, Profile};
use crate::pattern;
use crate::store::parse_profile;
use crate::syscalls;

/// Reads and validates a profile document from `path`.
pub fn read_profile_file(path: &Path) -> Result<Profile> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let profile = parse_profile(&text, path)?;
    validate(&profile).map_err(|reason| PolicyError::Invalid {
        what: format!("profile {}", path.display()),
        reason,
    })?;
    Ok(profile)
}

/// Checks what serde cannot: known syscalls, usable patterns, sane evidence.
pub fn validate(profile: &Profile) -> Result<(), String> {
    let body = &profile.body;
    if let Some(bad) = body.syscalls.keys().find(|s| syscalls::number(s).is_none()) {
        return Err(format!("syscall {bad:?} is not an x86_64 syscall name"));
    }
    for key in body.execs.keys() {
        if !key.path.starts_with('/') || key.program.is_empty() {
            return Err(format!(
                "exec entry {:?} needs an absolute path and a program name",
                key.path
            ));
        }
    }
    for key in body.files.keys() {
        pattern::validate(&key.path).map_err(|e| format!("file entry {:?}: {e}", key.path))?;
    }
    let evidence = body
        .syscalls
        .values()
        .chain(body.execs.values())
        .chain(body.files.values())
        .chain(body.network.values());
    check_evidence(evidence)?;
    let c = &profile.confidence;
    if [c.syscalls, c.execs, c.files, c.network]
        .iter()
        .any(|v| !(0.0..=1.0).contains(v))
    {
        return Err("confidence values must lie in [0, 1]".into());
    }
    if profile.created > profile.updated {
        return Err("created is later than updated".into());
    }
    Ok(())
}

fn check_evidence<'a>(mut evidence: impl Iterator<Item = &'a Evidence>) -> Result<(), String> {
    match evidence.find(|e| e.first_seen > e.last_seen) {
        Some(e) => Err(format!(
            "an entry was first seen ({}) after it was last seen ({})",
            e.first_seen, e.last_seen
        )),
        None => Ok(()),
    }
}
