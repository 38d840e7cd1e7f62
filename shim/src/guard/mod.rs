//! The seam between the task service and everything that watches or guards a container.
//!
//! The task service knows nothing about profiles, eBPF or audit: it calls a [`Guard`] at
//! Create (before `runc create`, so the guard may rewrite the bundle's `config.json`) and
//! then drives the per-container [`ContainerGuard`] it got back through the container's life.

pub mod fanotify;
pub mod notify;
pub mod vigil;
mod wake;

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;

use crate::config::NodeConfig;

/// What the task service knows about a container when containerd asks to create it.
#[derive(Debug, Clone)]
pub struct CreateRequest<'a> {
    /// containerd's container id.
    pub id: &'a str,
    /// containerd namespace (`k8s.io` for CRI, `default` for `ctr`).
    pub namespace: &'a str,
    /// Bundle folder holding `config.json` and `rootfs/`.
    pub bundle: &'a Path,
    /// The OCI annotations of `config.json` (CRI's and vigil's).
    pub annotations: &'a HashMap<String, String>,
    /// The node config this container was created under (from its runtime options).
    pub config: &'a NodeConfig,
}

/// Why a guard refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The request itself is wrong (bad annotation, unknown profile): never retried, never
    /// overridden by the fail policy. The message names what is wrong and what to do.
    #[error("{0}")]
    InvalidRequest(String),
    /// The node cannot honour a valid request and the fail policy says refuse.
    #[error("{0}")]
    Unavailable(String),
}

/// A node-wide guard, shared by every container this shim serves.
#[async_trait]
pub trait Guard: Send + Sync + 'static {
    /// Runs before `runc create`. May rewrite `<bundle>/config.json`. An error refuses the
    /// container and its message reaches `ctr` / the kubelet.
    async fn prepare(&self, req: &CreateRequest<'_>)
        -> Result<Box<dyn ContainerGuard>, GuardError>;
}

/// The guard of one container, from Create to Delete.
#[async_trait]
pub trait ContainerGuard: Send + Sync {
    /// After `runc create`: the init process exists in its cgroup, stopped before it execs
    /// the entrypoint. An error makes Create fail and the container is removed.
    async fn created(&self, init_pid: u32) -> Result<(), GuardError>;

    /// A process from `ctr task exec` / `kubectl exec` was started.
    async fn exec_started(&self, _exec_id: &str, _pid: u32) {}

    /// The init process exited with this status (wait status as containerd reports it).
    async fn exited(&self, _status: u32) {}

    /// The container is being deleted: last flush, unregister, release resources.
    async fn deleted(&self) {}
}

/// The guard for `off` and for builds without guarding: does nothing at all.
pub struct NoGuard;

struct NoContainerGuard;

#[async_trait]
impl Guard for NoGuard {
    async fn prepare(
        &self,
        _req: &CreateRequest<'_>,
    ) -> Result<Box<dyn ContainerGuard>, GuardError> {
        Ok(Box::new(NoContainerGuard))
    }
}

#[async_trait]
impl ContainerGuard for NoContainerGuard {
    async fn created(&self, _init_pid: u32) -> Result<(), GuardError> {
        Ok(())
    }
}
