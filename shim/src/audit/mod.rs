//! The audit log: Falco-shaped JSON lines, written asynchronously, optionally POSTed to
//! falcosidekick.
//!
//! Callers make events with a [`ContainerAudit`] (which carries the container's identity, mode
//! and profile, so no event can lack them) and hand them to an [`AuditHandle`], which never
//! blocks. The format is the contract in `docs/audit-format.md`.

pub mod event;
pub mod http;
pub mod writer;

use std::io;
use std::path::PathBuf;

pub use event::{
    Action, AuditEvent, ContainerAudit, ContainerIdentity, Deviation, EventBuilder, FileAccess,
    L4Proto, Mechanism, NetOp, OutputFields, Priority, Process, Rule,
};
pub use http::HttpOptions;
pub use writer::{AuditConfig, AuditHandle, AuditStats};

/// Why the audit log or one of its events could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit log's folder cannot be created.
    #[error(
        "create audit log folder {path}: {source}; create it, fix its permissions, or set \
         audit_log in the node config"
    )]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The audit log cannot be opened for appending.
    #[error(
        "open audit log {path} for appending: {source}; fix its permissions or set audit_log \
         in the node config"
    )]
    OpenLog {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `audit_http_url` cannot be used.
    #[error("audit_http_url {url:?} cannot be used: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// An event's container identity is incomplete.
    #[error(
        "audit identity needs a container id and an image name, got id {id:?} and image \
         {image:?}; pass the ids containerd gave the container"
    )]
    Identity {
        /// The id given.
        id: String,
        /// The image given.
        image: String,
    },
}

#[cfg(test)]
mod tests;
