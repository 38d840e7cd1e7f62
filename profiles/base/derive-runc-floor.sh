#!/bin/bash
# Derive the runtime floor of the installed runc: every syscall runc init makes after it has
# installed the container's seccomp filter, up to the execve of the entrypoint.
#
# usage: derive-runc-floor.sh [--runs N] [--json] [--verify SECCOMP_JSON]
#   default output: one "PATH<TAB>SYSCALL" line per syscall seen under the filter, where PATH
#   names the runc code path (run-root-nnp, run-user-nnp, run-user-nonnp, run-root-nonnp,
#   exec-root-nnp, exec-user-nnp, exec-user-nonnp).
#   --json: the floor document (profiles/base/runc-X.Y.json) built from those lines plus the
#   syscalls that only exits and signals need (never seen in a start-up trace).
#   --verify FILE: no tracing; run `sh -c 'id -u'` on every path with FILE (an OCI
#   linux.seccomp object) as the container's filter and print "PATH ok UID" or "PATH failed".
#
# Needs root, runc, strace, jq and a static busybox. Works in a temporary folder that it removes;
# containers get names with a random suffix and are deleted on exit.
set -euo pipefail

runs=3
json=0
verify=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --json) json=1; shift ;;
        --verify) verify="$2"; shift 2 ;;
        *) echo "derive-runc-floor: unknown argument $1 (use --runs N, --json, --verify FILE)" >&2
           exit 2 ;;
    esac
done

for tool in runc strace jq busybox; do
    command -v "$tool" >/dev/null || { echo "derive-runc-floor: $tool not found on PATH" >&2; exit 3; }
done
[ "$(id -u)" = 0 ] || { echo "derive-runc-floor: must run as root" >&2; exit 3; }

work=$(mktemp -d /tmp/vigil-floor.XXXXXX)
root="$work/runc-root"
suffix=$$
containers=()
cleanup() {
    for c in "${containers[@]}"; do
        runc --root "$root" kill "$c" KILL >/dev/null 2>&1 || true
        runc --root "$root" delete -f "$c" >/dev/null 2>&1 || true
    done
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# A busybox rootfs with applet links and a user 1000.
make_rootfs() {
    local rootfs="$1"
    mkdir -p "$rootfs"/{bin,proc,dev,sys,tmp,etc}
    cp "$(command -v busybox)" "$rootfs/bin/busybox"
    for applet in sh id sleep true cat; do ln -s busybox "$rootfs/bin/$applet"; done
    printf 'root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000:user:/:/bin/sh\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nuser:x:1000:\n' >"$rootfs/etc/group"
}

# A filter that allows everything, so that runc installs one and nothing in the trace fails.
SECCOMP='{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
  "syscalls":[{"names":["kexec_load"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}'

# make_bundle DIR UID NNP ARGS_JSON
make_bundle() {
    local dir="$1" uid="$2" nnp="$3" args="$4"
    mkdir -p "$dir"
    make_rootfs "$dir/rootfs"
    (cd "$dir" && runc spec)
    jq --argjson uid "$uid" --argjson nnp "$nnp" --argjson args "$args" \
        --argjson seccomp "$SECCOMP" \
        '.process.terminal = false | .process.args = $args
         | .process.user = {uid: $uid, gid: $uid} | .process.noNewPrivileges = $nnp
         | .linux.seccomp = $seccomp' "$dir/config.json" >"$dir/config.json.new"
    mv "$dir/config.json.new" "$dir/config.json"
}

# after_filter TRACE: syscall names made under the filter: by the thread that installed it
# (runc 1.1 uses prctl(PR_SET_SECCOMP), which filters only the calling thread) and by every
# thread or process it creates afterwards, up to the successful execve of the entrypoint.
after_filter() {
    awk '
    function name(line,   s) {
        s = line; sub(/^[0-9]+ +/, "", s)
        if (s ~ /^<\.\.\. /) { sub(/^<\.\.\. /, "", s); sub(/ resumed>.*/, "", s); return s }
        if (s ~ /^[a-z0-9_]+\(/) { sub(/\(.*/, "", s); return s }
        return ""
    }
    function result(line) { return (line ~ /= [0-9]+$/) ? $NF : "" }
    {
        tid = $1
        if (!(tid in group)) group[tid] = tid
        s = name($0)
        if (s == "") next
        g = group[tid]
        installs = ($0 ~ /PR_SET_SECCOMP, SECCOMP_MODE_FILTER, \{len=/ \
            || $0 ~ /seccomp\(SECCOMP_SET_MODE_FILTER, [^,]*, \{len=/)
        if (installs && !(g in done)) { filtered[tid] = 1; next }
        if (s ~ /^(clone|clone3|fork|vfork)$/) {
            if ($0 ~ /unfinished/) { threadflag[tid] = ($0 ~ /CLONE_THREAD/); }
            else if ($0 !~ /resumed/) { threadflag[tid] = ($0 ~ /CLONE_THREAD/); }
            child = result($0)
            if (child != "") {
                group[child] = threadflag[tid] ? g : child
                if (tid in filtered) filtered[child] = 1
            }
        }
        if (!(tid in filtered) || (g in done)) next
        seen[s] = 1
        if (s == "execve" && result($0) == "0") done[g] = 1
    }
    END { for (s in seen) print s }' "$1"
}

trace_run() {
    local path="$1" uid="$2" nnp="$3" n="$4"
    local dir="$work/$path.$n" id="vigil-floor-$path-$n-$suffix"
    make_bundle "$dir" "$uid" "$nnp" '["/bin/true"]'
    containers+=("$id")
    (cd "$dir" && strace -f -qq -o "$dir/trace" runc --root "$root" run "$id" \
        </dev/null >/dev/null 2>"$dir/err") || { cat "$dir/err" >&2; exit 1; }
    runc --root "$root" delete -f "$id" >/dev/null 2>&1 || true
    after_filter "$dir/trace" | sed "s/^/$path\t/"
}

trace_exec() {
    local path="$1" uid="$2" nnp="$3" n="$4"
    local dir="$work/$path.$n" id="vigil-floor-$path-$n-$suffix"
    make_bundle "$dir" 0 "$nnp" '["/bin/sleep","60"]'
    containers+=("$id")
    (cd "$dir" && runc --root "$root" run -d "$id" </dev/null >/dev/null 2>"$dir/err") \
        || { cat "$dir/err" >&2; exit 1; }
    strace -f -qq -o "$dir/trace" runc --root "$root" exec --user "$uid:$uid" "$id" /bin/id -u \
        </dev/null >/dev/null 2>"$dir/err" || { cat "$dir/err" >&2; exit 1; }
    runc --root "$root" kill "$id" KILL >/dev/null 2>&1 || true
    sleep 0.2
    runc --root "$root" delete -f "$id" >/dev/null 2>&1 || true
    after_filter "$dir/trace" | sed "s/^/$path\t/"
}

observe() {
    for n in $(seq 1 "$runs"); do
        trace_run run-root-nnp 0 true "$n"
        trace_run run-user-nnp 1000 true "$n"
        trace_run run-root-nonnp 0 false "$n"
        trace_run run-user-nonnp 1000 false "$n"
        trace_exec exec-root-nnp 0 true "$n"
        trace_exec exec-user-nnp 1000 true "$n"
        trace_exec exec-user-nonnp 1000 false "$n"
    done | sort -u
}

# Needed although a start-up trace never shows them: leaving (exit, exit_group), returning from
# a signal handler (rt_sigreturn), resuming a sleep interrupted by SIGSTOP/SIGCONT
# (restart_syscall). Without them an enforced program cannot exit or take a signal (field
# case V03). The Go runtime in runc init also preempts its threads with signals (SIGURG) and
# parks them on futexes at any point, so these appear in some traces and not in others.
ALWAYS="exit exit_group rt_sigreturn restart_syscall"
GO_RUNTIME="futex nanosleep sched_yield tgkill getpid gettid rt_sigprocmask sigaltstack
 madvise mmap munmap epoll_pwait clock_gettime"

emit_json() {
    local version
    version=$(runc --version | awk '/^runc version/ {print $3}')
    { observe; for s in $ALWAYS; do printf 'exit-and-signals\t%s\n' "$s"; done
      for s in $GO_RUNTIME; do printf 'go-runtime\t%s\n' "$s"; done; } |
    jq -R -s --arg version "$version" --arg runs "$runs" '
      [split("\n")[] | select(length > 0) | split("\t")] as $rows
      | {schema: 1, kind: "runtime-floor", runtime: "runc",
         versions: ($version | split(".")[0:2] | join(".")),
         derived_from: ("runc " + $version + ", " + $runs
                        + " strace runs per path, profiles/base/derive-runc-floor.sh"),
         syscalls: (reduce $rows[] as $r ({}; .[$r[1]] += [$r[0]])
                    | with_entries(.value |= (unique)))}'
}

# verify_run PATH UID NNP: the container runs `sh -c 'id -u'` under the given filter.
verify_run() {
    local path="$1" uid="$2" nnp="$3"
    local dir="$work/verify-$path" id="vigil-floor-verify-$path-$suffix" out
    make_bundle "$dir" "$uid" "$nnp" '["/bin/sh","-c","id -u"]'
    jq --slurpfile s "$verify" '.linux.seccomp = $s[0]' "$dir/config.json" >"$dir/c.new"
    mv "$dir/c.new" "$dir/config.json"
    containers+=("$id")
    if out=$(cd "$dir" && timeout 20 runc --root "$root" run "$id" </dev/null 2>"$dir/err"); then
        printf '%s\tok\t%s\n' "$path" "$out"
    else
        printf '%s\tfailed\t%s\n' "$path" "$(tr '\n' ' ' <"$dir/err")"
    fi
    runc --root "$root" delete -f "$id" >/dev/null 2>&1 || true
}

# verify_exec UID NNP: `runc exec --user UID sh -c 'id -u'` into a container under the filter.
verify_exec() {
    local path="$1" uid="$2" nnp="$3"
    local dir="$work/verify-$path" id="vigil-floor-verify-$path-$suffix" out
    make_bundle "$dir" 0 "$nnp" '["/bin/sleep","30"]'
    jq --slurpfile s "$verify" '.linux.seccomp = $s[0]' "$dir/config.json" >"$dir/c.new"
    mv "$dir/c.new" "$dir/config.json"
    containers+=("$id")
    (cd "$dir" && runc --root "$root" run -d "$id" </dev/null >/dev/null 2>"$dir/err") || {
        printf '%s\tfailed\t%s\n' "$path" "$(tr '\n' ' ' <"$dir/err")"; return; }
    if out=$(timeout 20 runc --root "$root" exec --user "$uid:$uid" "$id" /bin/sh -c 'id -u' \
            </dev/null 2>"$dir/err"); then
        printf '%s\tok\t%s\n' "$path" "$out"
    else
        printf '%s\tfailed\t%s\n' "$path" "$(tr '\n' ' ' <"$dir/err")"
    fi
    runc --root "$root" kill "$id" KILL >/dev/null 2>&1 || true
}

if [ -n "$verify" ]; then
    verify_run run-root-nnp 0 true
    verify_run run-user-nnp 1000 true
    verify_run run-root-nonnp 0 false
    verify_run run-user-nonnp 1000 false
    verify_exec exec-user-nnp 1000 true
    verify_exec exec-user-nonnp 1000 false
elif [ "$json" = 1 ]; then
    emit_json
else
    observe
fi
