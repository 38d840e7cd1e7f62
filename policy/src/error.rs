//! The one error type of the policy crate.

use std::path::PathBuf;

/// What went wrong in the profile model, the store or a compiler. Messages are lowercase, name
/// the file, key or syscall at fault, and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A profile file exists but cannot be read.
    #[error("cannot read profile {path}: {source}; check its permissions")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A profile file is not a valid profile document; learners never overwrite it.
    #[error("profile {path} is corrupt: {reason}; repair it or move it away, learners leave it")]
    Corrupt { path: PathBuf, reason: String },
    /// A profile file was written by a newer vigil.
    #[error(
        "profile {path} has schema {found}, this vigil reads up to {supported}; upgrade vigil \
         (learners leave the file untouched)"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
    /// Writing, syncing, renaming or locking in the store failed.
    #[error("cannot {step} {path}: {source}; check that the state dir is writable")]
    Write {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A document given by a person or a tool is not acceptable.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    /// A reference (name, digest or prefix) names no profile or more than one.
    #[error("{0}")]
    Reference(String),
    /// A syscall name or number is not in the x86_64 table.
    #[error("unknown x86_64 syscall {0}; use a name from policy/src/syscalls_x86_64.rs")]
    UnknownSyscall(String),
    /// Two profiles of different images were merged.
    #[error("cannot merge profile of {left} with profile of {right}: the image digests differ")]
    DigestMismatch { left: String, right: String },
    /// The compiled seccomp filter would be unusable.
    #[error("cannot compile a seccomp filter: {0}")]
    Seccomp(String),
    /// No runtime floor is known for this runtime version.
    #[error(
        "no runtime floor for runc {0}; derive one with profiles/base/derive-runc-floor.sh \
         --json and add it to profiles/base/"
    )]
    UnknownRuntime(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;

impl PolicyError {
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
