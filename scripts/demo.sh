#!/usr/bin/env bash
# vigil's main job, end to end: installs what is missing (scripts/setup.sh), builds vigil
# (cargo profile `dist`: release, optimised for size), installs its two binaries
# (containerd-shim-vigil-v2 and vigil) into a prefix, then runs vigil-demo
# (integration/src/bin/vigil-demo.rs) in a private containerd under a temporary folder,
# configured with the vigil runtime (never the system's), on the offline redis image:
# learn (redis-server in vigil.dev/mode=learn under redis-benchmark, then stopped so the
# profile is merged), show the profile, enforce (the same load, zero audit events), an
# attack sequence inside the enforced container (a shell, /etc/shadow, a write below /usr,
# a connection to a new port, the chroot syscall: each blocked and its audit event shown),
# a summary table, and a full teardown, also on Ctrl-C or SIGTERM.
#
# usage: scripts/demo.sh [--prefix DIR] [--requests N]
#   --prefix    where the binaries go (default /usr/local/bin)
#   --requests  redis-benchmark requests per test (default 50000)
set -euo pipefail

cd "$(dirname "$0")/.."
prefix=/usr/local/bin
demo_args=()
while (($#)); do
    case $1 in
    --prefix)
        prefix=${2:?--prefix needs a folder}
        shift 2
        ;;
    --requests)
        demo_args+=("$1" "${2:?$1 needs a value}")
        shift 2
        ;;
    -h | --help)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "demo.sh: unknown argument $1 (try --help)" >&2
        exit 2
        ;;
    esac
done

if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: run as root (sudo scripts/demo.sh): it installs packages and runs containers" >&2
    exit 1
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

echo "== setup"
scripts/setup.sh

echo "== build (cargo build --profile dist)"
cargo build --profile dist -p vigil-shim --bin containerd-shim-vigil-v2 --bin vigil \
    -p vigil-integration --bin vigil-demo

echo "== install into $prefix"
install -d "$prefix"
install -m 0755 target/dist/containerd-shim-vigil-v2 target/dist/vigil "$prefix/"
ls -l "$prefix/containerd-shim-vigil-v2" "$prefix/vigil"

# The demo runs in the background so that a signal to this script reaches the trap at once;
# the trap asks the demo to tear down (it handles SIGTERM) and waits for it.
demo_pid=
stop_demo() {
    if [[ -n $demo_pid ]] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -TERM "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
}
trap stop_demo EXIT
trap 'echo "demo.sh: interrupted" >&2; stop_demo; exit 130' INT TERM HUP

echo "== demo"
target/dist/vigil-demo --prefix "$prefix" "${demo_args[@]}" &
demo_pid=$!
rc=0
wait "$demo_pid" || rc=$?
demo_pid=
exit "$rc"
