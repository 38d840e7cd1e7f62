//! vigil's eBPF side in user space: the loader of the node-wide program set, the registry
//! of guarded containers, and the reader of their events. See docs/ebpf.md.
//!
//! ```no_run
//! # fn main() -> Result<(), vigil_shim::bpf::BpfError> {
//! use vigil_shim::bpf::{cgroup_id_of, Mode, Node, RegisterRequest};
//! let node = Node::open(std::path::Path::new("/sys/fs/bpf/vigil"))?;
//! let init_pid = 4242;
//! let mut reg = node.register(&RegisterRequest {
//!     cgroup_id: cgroup_id_of(init_pid)?,
//!     init_pid,
//!     mode: Mode::Learn,
//!     watch_syscalls: true,
//!     exec_allow: vec![],
//!     net_allow: vec![],
//! })?;
//! let mut events = reg.take_events()?.expect("first call");
//! let mut batch = Vec::new();
//! events.drain(&mut batch);
//! reg.unregister()?;
//! # Ok(()) }
//! ```

mod btf;
mod cgroup;
mod error;
mod events;
mod lsm;
mod node;
mod object;
mod pins;
mod registration;
mod sys;

pub use btf::VMLINUX_BTF;
pub use cgroup::{cgroup2_mount, cgroup_id, cgroup_id_of, cgroup_path_of};
pub use error::{BpfError, Result};
pub use events::{
    decode, escaped, Access, AsyncEventReader, Event, EventReader, ExecInfo, FileInfo, Mechanism,
    NetInfo, Process, Verdict,
};
pub use lsm::{
    check_active as lsm_check_active, probe as lsm_probe, FileKey, FileRule, LsmHook, LsmInfo,
    LsmPolicy, LsmUnavailable, Tier, LSM_LIST,
};
pub use node::{Mode, Node, RegisterRequest};
pub use object::version as object_version;
pub use registration::{ExecRule, NetDirection, NetRule, Protocol, Registration};
