//! Errors of the eBPF loader, registry and event reader.

use std::{io, path::PathBuf};

/// Why a node's programs could not be loaded or a container not registered.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The shim was built in stub mode (`VIGIL_EBPF_STUB=1` or clippy without bpf-linker).
    #[error(
        "this shim was built without eBPF programs (stub build): rebuild with bpf-linker \
         installed and VIGIL_EBPF_STUB unset"
    )]
    NoPrograms,
    /// The pin root is not on a bpffs.
    #[error("{path} is not on a bpf filesystem: mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs { path: PathBuf },
    /// A filesystem step on the pin root or a cgroup failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The kernel's BTF could not be read or lacks a field the programs need.
    #[error(
        "read kernel BTF {path}: {reason} (vigil needs a kernel built with CONFIG_DEBUG_INFO_BTF)"
    )]
    Btf { path: PathBuf, reason: String },
    /// The object could not be loaded.
    #[error("load vigil's eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program could not be loaded, pinned, opened or attached.
    #[error("{what} program {name}: {source}")]
    Program {
        what: &'static str,
        name: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The embedded object lacks a program the loader expects (a build mismatch).
    #[error("program {0} is not in vigil's eBPF object: rebuild the shim")]
    MissingProgram(String),
    /// A link could not be pinned or opened.
    #[error("{what} link {path}: {reason}")]
    Link {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A map could not be found, pinned, opened, read or written.
    #[error("{what} map {name}: {reason}")]
    Map {
        what: &'static str,
        name: String,
        reason: String,
    },
    /// Every container slot is taken.
    #[error("no free container slot: all {0} slots of this node are registered")]
    NoSlot(u32),
    /// The cgroup is registered already (by a shim that still runs, or not yet reconciled).
    #[error("cgroup {0} is registered already; unregister it first")]
    AlreadyRegistered(u64),
    /// No cgroup2 hierarchy is mounted.
    #[error("no cgroup2 mount in /proc/self/mountinfo: vigil needs the unified hierarchy")]
    NoCgroup2,
    /// A process has no cgroup2 membership line.
    #[error("no `0::` line in /proc/{pid}/cgroup: the process is gone or not in cgroup2")]
    NoCgroupOf { pid: u32 },
    /// A network rule cannot be expressed.
    #[error("invalid network rule {rule}: {reason}")]
    BadRule { rule: String, reason: &'static str },
}

impl BpfError {
    pub(crate) fn map(what: &'static str, name: &str, reason: impl std::fmt::Display) -> Self {
        Self::Map {
            what,
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn program(
        what: &'static str,
        name: &str,
        source: aya::programs::ProgramError,
    ) -> Self {
        Self::Program {
            what,
            name: name.to_string(),
            source: Box::new(source),
        }
    }
}

/// Result of the bpf module.
pub type Result<T, E = BpfError> = std::result::Result<T, E>;
