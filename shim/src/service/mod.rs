//! The containerd task service over runc: lifecycle of containers and their processes, their
//! stdio and terminals, exits and OOM kills, and the shim's `start` / `delete` actions.
//!
//! Behaviour follows containerd's Go `io.containerd.runc.v2` shim, the reference every
//! conformance test compares against.

pub mod bundle;
pub mod cgroup;
pub mod console;
pub mod container;
pub mod create;
pub mod error;
pub mod events;
mod exec;
pub mod exits;
pub mod mount;
pub mod oom;
pub mod process;
pub mod reaper;
pub mod shim;
pub mod stdio;
pub mod task;

pub use shim::{framework_config, ShimService, RUNTIME_ID};
pub use task::TaskService;
