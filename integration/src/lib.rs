//! The end-to-end bench of vigil: a private containerd per test ([`containerd::Containerd`]),
//! images built offline ([`images::Image`]), `ctr` helpers ([`ctr`]), event following
//! ([`events::Events`]), a CRI client ([`cri`]) and teardown of everything a test started
//! ([`cleanup`]). The runner and cases live in `tests/e2e.rs` and `tests/e2e/`.

pub mod audit_log;
pub mod cleanup;
pub mod cmd;
pub mod containerd;
pub mod cri;
pub mod ctr;
pub mod events;
pub mod images;
pub mod paths;
pub mod prereq;
pub mod procs;
pub mod runtime;

pub use containerd::{Containerd, Options};
pub use ctr::{Run, Task};
pub use images::Image;
pub use runtime::Runtime;
