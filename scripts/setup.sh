#!/usr/bin/env bash
# Installs everything vigil's build and tests need on Debian 12, idempotently:
# containerd and runc, LLVM 22 and bpftool for the eBPF side, qemu and the
# guest kernel's tools, the applications the bench images carry, the Rust
# component rust-src and bpf-linker. Run as root. Safe to run again.
set -euo pipefail

# The repository's pinned toolchain (rust-toolchain.toml) applies inside it; rustup's cargo
# for a root shell that has not sourced ~/.cargo/env.
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [[ $(id -u) -ne 0 ]]; then
    echo "setup: run as root (it installs Debian packages)" >&2
    exit 1
fi

packages=(
    # containers
    containerd runc
    # eBPF toolchain (LLVM must match rustc's, which is LLVM 22)
    llvm-22-dev libpolly-22-dev clang-22 libzstd-dev zlib1g-dev bpftool
    # containerd's API crates compile .proto files
    protobuf-compiler
    # guest-kernel tests (LSM-BPF tier) and offline images
    qemu-system-x86 cpio busybox-static
    # real application images and their load generators; ground truth
    redis-server redis-tools nginx-light wrk strace
    # C helpers built into the test images
    gcc libc6-dev
    # a test's helper server (shim/tests/bpf_node.rs)
    python3
    # tools the scripts use
    iproute2 util-linux kmod procps curl ca-certificates
    # bench-guard's sys_exit tracepoint comparison
    bpftrace
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "setup: Debian packages present"
fi

# Debian enables and starts the system containerd and the packaged servers when
# they are installed; vigil's tests never use them, but they should not hold
# ports or sockets the tests might want. Leave a system containerd that was
# running before alone.
for svc in redis-server nginx; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "setup: adding rust-src"
    rustup component add rust-src
fi

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! "$cargo_bin/bpf-linker" --version 2>/dev/null | grep -q '0.13'; then
    echo "setup: building bpf-linker 0.13.0 against LLVM 22 (about a minute)"
    PATH=/usr/lib/llvm-22/bin:$PATH cargo install --locked bpf-linker --version 0.13.0 \
        --no-default-features --features llvm-22
fi

# bpffs for the probes' pins (tests use private folders below it).
if ! mountpoint -q /sys/fs/bpf; then
    mount -t bpf bpf /sys/fs/bpf
fi

echo "setup: done"
