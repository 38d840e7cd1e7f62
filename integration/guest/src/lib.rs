//! Runs vigil's LSM-BPF tests in a guest kernel.
//!
//! The host's kernel refuses LSM programs, so the tests boot Debian's cloud kernel (6.1,
//! `CONFIG_BPF_LSM=y`) under `qemu-system-x86_64 -accel tcg` with `lsm=lockdown,capability,bpf`
//! and a small initramfs whose init is the static guest test program (`vigil-guest-init`).
//! The guest prints [`report`] lines on its serial console; the host parses them. A machine
//! that cannot boot the guest reports the tests as skipped, with the cause.

pub mod cases;
pub mod initramfs;
pub mod kernel;
pub mod layout;
pub mod qemu;
pub mod report;
pub mod runner;
