//! containerd-shim-vigil-v2: a containerd task service over runc that guards containers.

pub mod audit;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod guard;
pub mod image;
pub mod logging;
pub mod mode;
pub mod node_caps;
pub mod runc;
pub mod service;
