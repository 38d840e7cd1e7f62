//! The runtime floor: syscalls the runtime itself makes after it has installed the
//! container's seccomp filter, which every compiled filter must allow.
//!
//! Floors live in `profiles/base/runc-X.Y.json`, derived by
//! `profiles/base/derive-runc-floor.sh` (docs/profile-format.md says how).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::syscalls;

/// Floors shipped with this build: (file name, document).
const BUILTIN: &[(&str, &str)] = &[(
    "profiles/base/runc-1.1.json",
    include_str!("../../profiles/base/runc-1.1.json"),
)];

/// A runtime floor document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFloor {
    pub schema: u32,
    /// Always `runtime-floor`.
    pub kind: String,
    /// Always `runc` for now.
    pub runtime: String,
    /// The `major.minor` release series this floor is for (`1.1`).
    pub versions: String,
    /// How the floor was obtained.
    pub derived_from: String,
    /// Syscall name → the runc code paths (or reasons) that need it.
    pub syscalls: BTreeMap<String, Vec<String>>,
}

impl RuntimeFloor {
    /// Parses and validates a floor document; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let invalid =
            |reason: String| PolicyError::invalid(format!("runtime floor {origin}"), reason);
        let floor: RuntimeFloor = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if floor.kind != "runtime-floor" || floor.schema != 1 {
            return Err(invalid("expected kind runtime-floor and schema 1".into()));
        }
        if floor.syscalls.is_empty() {
            return Err(invalid("it names no syscall".into()));
        }
        if let Some(bad) = floor
            .syscalls
            .keys()
            .find(|s| syscalls::number(s).is_none())
        {
            return Err(invalid(format!("unknown x86_64 syscall {bad}")));
        }
        Ok(floor)
    }

    /// The built-in floor for a runc version as `runc --version` prints it (`1.1.5`,
    /// `1.1.5+ds1`). Only the release series (`1.1`) is compared.
    pub fn for_runc(version: &str) -> Result<Self> {
        let series = release_series(version)
            .ok_or_else(|| PolicyError::UnknownRuntime(version.to_string()))?;
        for (origin, text) in BUILTIN {
            let floor = Self::parse(text, origin)?;
            if floor.runtime == "runc" && floor.versions == series {
                return Ok(floor);
            }
        }
        Err(PolicyError::UnknownRuntime(version.to_string()))
    }

    /// Every built-in floor, with the file it came from.
    pub fn builtin() -> Result<Vec<(&'static str, RuntimeFloor)>> {
        BUILTIN
            .iter()
            .map(|(origin, text)| Ok((*origin, Self::parse(text, origin)?)))
            .collect()
    }

    /// The part of the floor a process with this `noNewPrivileges` setting needs. With
    /// no_new_privs runc installs the filter just before the exec, so the paths traced with
    /// it (`*-nnp`) suffice; without it (`*-nonnp`) runc drops privileges under the filter and
    /// needs everything. Exit/signal and Go-runtime entries apply to both.
    pub fn for_process(&self, no_new_privileges: bool) -> RuntimeFloor {
        let mut floor = self.clone();
        if no_new_privileges {
            floor
                .syscalls
                .retain(|_, paths| paths.iter().any(|p| !p.ends_with("-nonnp")));
        }
        floor
    }

    /// The floor of a process whose filter sends calls outside the profile to a listener
    /// the shim answers (vigil's monitor and enforce): [`RuntimeFloor::for_process`], plus
    /// the floor's other entries numbered below [`crate::seccomp::ENOSYS_FROM`]. runc init's
    /// own calls outside this set reach the listener, which allows them (runc init is not
    /// the workload); the credential calls of the no_new_privs-off part stay allowed because
    /// programs started as another user make them too (busybox drops privileges with setgid
    /// and setuid at start), while newer calls such as faccessat2 and clone3 keep answering
    /// ENOSYS to the workload, whose libc then falls back.
    pub fn with_listener(&self, no_new_privileges: bool) -> RuntimeFloor {
        let part = self.for_process(no_new_privileges);
        let mut floor = self.clone();
        floor.syscalls.retain(|name, _| {
            part.syscalls.contains_key(name)
                || syscalls::number(name).is_some_and(|n| n < crate::seccomp::ENOSYS_FROM)
        });
        floor
    }

    /// The floor's syscall names.
    pub fn syscalls(&self) -> impl Iterator<Item = &str> {
        self.syscalls.keys().map(String::as_str)
    }
}

/// `1.1.5+ds1` → `1.1`.
fn release_series(version: &str) -> Option<String> {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major = parts
        .next()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!major.is_empty() && !minor.is_empty()).then(|| format!("{major}.{minor}"))
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    #[test]
    fn the_listener_floor_keeps_credential_calls_and_drops_newer_ones_under_nnp() {
        let full = RuntimeFloor::for_runc("1.1.5").expect("builtin floor");
        let floor = full.with_listener(true);
        let names: Vec<&str> = floor.syscalls().collect();
        for needed in ["setuid", "setgid", "exit_group", "write"] {
            if full.syscalls().any(|n| n == needed) {
                assert!(names.contains(&needed), "{needed} missing");
            }
        }
        let part = full.for_process(true);
        if !part.syscalls().any(|n| n == "faccessat2") {
            assert!(
                !names.contains(&"faccessat2"),
                "faccessat2 must look absent"
            );
        }
        for name in names {
            let n = syscalls::number(name).expect("known syscall");
            let in_part = part.syscalls().any(|p| p == name);
            assert!(n < crate::seccomp::ENOSYS_FROM || in_part, "{name} ({n})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_floor_covers_exit_and_signal_paths() {
        let floor = RuntimeFloor::for_runc("1.1.5+ds1").unwrap();
        for name in [
            "exit",
            "exit_group",
            "rt_sigreturn",
            "restart_syscall",
            "execve",
        ] {
            assert!(
                floor.syscalls.contains_key(name),
                "{name} missing from the floor"
            );
        }
        // V01: the no_new_privs=false path runs these under the filter.
        for name in ["capset", "setgroups", "setgid", "setuid", "fstatfs"] {
            assert!(
                floor.syscalls.contains_key(name),
                "{name} missing from the floor"
            );
        }
    }

    #[test]
    fn no_new_privs_floor_leaves_out_privilege_dropping() {
        let full = RuntimeFloor::for_runc("1.1.5").unwrap();
        let nnp = full.for_process(true);
        for name in ["capset", "setuid", "setgroups", "faccessat2"] {
            assert!(
                !nnp.syscalls.contains_key(name),
                "{name} is only needed without nnp"
            );
        }
        for name in ["fstatfs", "execve", "exit_group", "rt_sigreturn", "futex"] {
            assert!(
                nnp.syscalls.contains_key(name),
                "{name} is needed with nnp too"
            );
        }
        assert_eq!(full.for_process(false), full);
    }

    #[test]
    fn unknown_series_is_an_error_naming_the_version() {
        let err = RuntimeFloor::for_runc("9.9.0").unwrap_err().to_string();
        assert!(err.contains("9.9.0"), "{err}");
        assert!(RuntimeFloor::for_runc("garbage").is_err());
    }

    #[test]
    fn release_series_strips_patch_and_suffix() {
        assert_eq!(release_series("1.1.5+ds1").as_deref(), Some("1.1"));
        assert_eq!(release_series("v1.2.0-rc.1").as_deref(), Some("1.2"));
        assert_eq!(release_series("1"), None);
    }
}
