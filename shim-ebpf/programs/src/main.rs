//! vigil's kernel programs. Built for `bpfel-unknown-none` by `shim/build.rs` and embedded
//! in the shim, which loads them once per node (see docs/ebpf.md).
//!
//! One module per hook family; the maps every family shares live in [`maps`], the helpers
//! that find a task's container in [`scope`]. A new family (for example LSM programs) is a
//! new module that uses those two.
#![no_std]
#![no_main]

mod emit;
mod kernel;
mod lsm;
mod maps;
mod net;
mod path;
mod process;
mod scope;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this; a panic path is
    // only emitted for code that LLVM could not prove unreachable.
    unsafe { core::hint::unreachable_unchecked() }
}

/// License of the object; GPL because `bpf_probe_read_kernel`, `bpf_send_signal` and the
/// ring buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
