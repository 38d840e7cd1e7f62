#!/usr/bin/env bash
# Runs every test of vigil: installs what is missing (scripts/setup.sh), builds, then
#   1. unit and crate tests:  cargo test --workspace (the e2e suite excluded here, run in 2)
#   2. end-to-end suite:      cargo test -p vigil-integration --test e2e (private containerd,
#                             both runtimes: conformance, field, bad input, CRI)
#   3. LSM-BPF guest tests:   cargo run -p vigil-guest --bin vigil-guest (qemu, TCG)
# and prints one summary line per suite. Exits 0 only if nothing failed; a skipped suite or
# case is reported as skipped, never as passed. Run as root. Logs: $VIGIL_TEST_LOGS
# (default target/test-logs).
set -uo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
logs=${VIGIL_TEST_LOGS:-$root/target/test-logs}
started=$SECONDS

if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: run as root (sudo scripts/test.sh): containers need it" >&2
    exit 1
fi

# rustup's cargo for a fresh root shell that has not sourced ~/.cargo/env.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

scripts/setup.sh || { echo "test.sh: setup failed" >&2; exit 1; }
mkdir -p "$logs"

echo "== build (cargo build --workspace --all-targets)"
cargo build --workspace --all-targets 2>&1 | tee "$logs/build.log" | grep --line-buffered -E '^(error|warning)|Finished'
if [[ ${PIPESTATUS[0]} -ne 0 ]]; then
    tail -40 "$logs/build.log" >&2
    echo
    echo "== summary ($(((SECONDS - started) / 60)) min; logs in $logs)"
    echo "build  FAILED (see $logs/build.log)"
    for suite in unit e2e guest; do printf '%-6s %s\n' "$suite" "not run (the build failed)"; done
    echo "test.sh: FAILED"
    exit 1
fi

declare -a names results
failed=0

record() { # name result
    names+=("$1")
    results+=("$2")
}

# Sums "test result: ... N passed; N failed; N ignored" lines of cargo's libtest output.
libtest_counts() {
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i+1) ~ /^passed/) p += $i
                if ($(i+1) ~ /^failed/) f += $i
                if ($(i+1) ~ /^ignored/) s += $i
            }
         }
         END { printf "%d passed, %d failed, %d skipped", p, f, s }' "$1"
}

echo "== 1/3 unit and crate tests (cargo test --workspace, e2e excluded)"
# --show-output: a test that finds a prerequisite missing prints "skipping: <why>" (or
# "<name>: skipped: <why>") and returns, which libtest counts as passed; its output is shown
# so that those are counted as skips below, never as passes.
cargo test --workspace --exclude vigil-integration -- --show-output 2>&1 | tee "$logs/unit.log"
rc_a=${PIPESTATUS[0]}
cargo test -p vigil-integration --lib --bins -- --show-output 2>&1 | tee -a "$logs/unit.log"
rc_b=${PIPESTATUS[0]}
counts=$(libtest_counts "$logs/unit.log")
self_skips=$(grep -cE '^(skipping[ :]|[a-z_]+: skipped: )' "$logs/unit.log")
if ((self_skips > 0)); then
    counts=$(awk -v s="$self_skips" '{ $1 -= s; $5 += s; print }' <<<"$counts")
    counts="$counts; skips named in $logs/unit.log"
    grep -E '^(skipping[ :]|[a-z_]+: skipped: )' "$logs/unit.log" | sed 's/^/    /'
fi
if [[ $rc_a -ne 0 || $rc_b -ne 0 ]]; then
    failed=1
    record "unit" "FAILED ($counts; cargo exit $rc_a/$rc_b)"
else
    record "unit" "ok ($counts)"
fi

echo "== 2/3 end-to-end suite (cargo test -p vigil-integration --test e2e)"
cargo test -p vigil-integration --test e2e 2>&1 | tee "$logs/e2e.log"
rc=${PIPESTATUS[0]}
line=$(grep -E '^e2e: [0-9]+ passed' "$logs/e2e.log" | tail -1)
if [[ $rc -ne 0 || -z $line ]]; then
    failed=1
    record "e2e" "FAILED (${line:-no summary line}; exit $rc)"
    grep -E '^test .* FAILED' "$logs/e2e.log" | sed 's/^/    /'
else
    record "e2e" "ok (${line#e2e: })"
fi

echo "== 3/3 LSM-BPF guest tests (cargo run -p vigil-guest --bin vigil-guest)"
cargo run -q -p vigil-guest --bin vigil-guest 2>&1 | tee "$logs/guest.log"
rc=${PIPESTATUS[0]}
line=$(grep -E '^(guest: )?[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$logs/guest.log" | tail -1)
line=${line#guest: }
case $rc in
0) record "guest" "ok ($line)" ;;
77)
    cause=$(grep -E '^SKIPPED' "$logs/guest.log" | tail -1)
    record "guest" "SKIPPED (${line:-${cause:-see $logs/guest.log}})"
    ;;
*)
    failed=1
    record "guest" "FAILED (${line:-exit $rc}; see $logs/guest.log)"
    ;;
esac

echo
echo "== summary ($(((SECONDS - started) / 60)) min; logs in $logs)"
for i in "${!names[@]}"; do
    printf '%-6s %s\n' "${names[$i]}" "${results[$i]}"
done
if ((failed)); then
    echo "test.sh: FAILED"
    exit 1
fi
echo "test.sh: no failures"
