//! Issue 3's ground truth: `strace -f -p` attached from the host to the container's init
//! between Create and Start, in the same run as the learner; at least 99% of the syscalls,
//! execs, files and connections strace saw from the workload's first exec on are in the
//! learned profile, and the profile holds nothing the workload did not do.
//!
//! The pause between `runc create` and `runc start`: `ctr run` drives Create and Start back to
//! back, so the case points vigil's `runc_binary` (a documented config key, read at every
//! Create) at a wrapper script that execs the real runc, except that it holds `runc start`
//! until the test has attached strace to the created init (runc init, blocked on its exec
//! FIFO) and every thread of it reports strace as its tracer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use vigil_integration::{cmd, prereq, Image, Run};

use super::expect::{BUSYBOX, REDIS};
use super::{add_config, entries, glob_match, no_runtime_entries, profile, run_in, short_entries};
use crate::check::{self, hang, CTR};
use crate::runner::{skip, Case, Env};

pub fn cases() -> Vec<Case> {
    vec![
        Case::vigil("guard/strace_truth_busybox_script", strace_busybox),
        Case::vigil("guard/strace_truth_redis_benchmark", strace_redis)
            .with_images(&[Image::Redis]),
    ]
}

/// The share of what strace saw that the profile must hold, per category.
const RECALL: f64 = 0.99;

fn strace_busybox(env: &Env) -> Result<()> {
    let run = run_in(env, Image::Busybox, "strace", "learn").sh(super::learn::SCRIPT);
    truth(env, run, BUSYBOX)
}

fn strace_redis(env: &Env) -> Result<()> {
    let script = "redis-server --save '' --appendonly no --port 6379 >/dev/null & \
         i=0; while ! redis-cli -p 6379 ping >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 100 ] && exit 3; sleep 0.1; done; \
         redis-benchmark -q -p 6379 -n 5000 -c 10 -t set,get,lpush,lpop >/dev/null; \
         redis-cli -p 6379 shutdown nosave >/dev/null 2>&1; wait";
    let run = run_in(env, Image::Redis, "strace", "learn").sh(script);
    truth(env, run, REDIS)
}

/// The wrapper installed as vigil's `runc_binary`: holds `runc start ID` until `go.ID` exists.
fn install_wrapper(env: &Env) -> Result<PathBuf> {
    let runc = prereq::which("runc").context("runc not on PATH")?;
    let hold = env.c.dir().join("hold");
    std::fs::create_dir_all(&hold)?;
    let script = format!(
        "#!/bin/sh\n# test double: runc, but `start` waits until the test releases it\n\
         hold={hold}\nprev=\nfor a; do prev_last=$prev; prev=$a; done\n\
         if [ \"$prev_last\" = start ]; then\n  : > \"$hold/wait.$prev\"\n  i=0\n  \
         while [ ! -e \"$hold/go.$prev\" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\nfi\n\
         exec {runc} \"$@\"\n",
        hold = hold.display(),
        runc = runc.display()
    );
    let path = env.c.dir().join("runc-hold");
    std::fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    add_config(env, &format!("runc_binary = \"{}\"", path.display()))?;
    Ok(hold)
}

/// Runs `run` (learn) with strace attached between Create and Start, then compares.
fn truth(env: &Env, run: Run, image: &str) -> Result<()> {
    prereq::program("strace").map_err(skip)?;
    let hold = install_wrapper(env)?;
    let run = run.detach().flags(&["--null-io"]);
    let ctr_run = env.c.run_background(&run)?;
    let waiting = check::wait_until(hang(4), || hold.join(format!("wait.{}", run.id)).exists());
    ensure!(
        waiting,
        "runc start was never called; containerd log:\n{}",
        env.c.log_tail(20)
    );
    let pid = init_pid(env, &run.id)?;
    let trace_file = env.c.dir().join("strace.out");
    let mut strace_cmd = std::process::Command::new("strace");
    strace_cmd
        .args([
            "-f",
            "-qq",
            "--pidns-translation",
            "-s",
            "512",
            "-e",
            "signal=none",
            "-o",
        ])
        .arg(&trace_file)
        .args(["-p", &pid.to_string()]);
    let strace = cmd::spawn_background(&mut strace_cmd)?;
    let tracer = strace.pid() as i32;
    let attached = check::wait_until(Duration::from_secs(20), || all_traced_by(pid, tracer));
    ensure!(attached, "strace did not attach to every thread of {pid}");
    std::fs::write(hold.join(format!("go.{}", run.id)), b"")?;
    check::rc(&ctr_run.wait(CTR)?, 0).context("ctr run -d")?;
    env.c.wait_task_status(&run.id, "STOPPED", hang(30))?;
    let traced = strace.wait(hang(2))?;
    ensure!(
        !traced.timed_out,
        "strace did not end: {}",
        traced.describe()
    );
    let rootfs = env.c.bundle(env.c.namespace(), &run.id).join("rootfs");
    let text = std::fs::read_to_string(&trace_file)?;
    let truth = Truth::parse(&text, pid, &rootfs)?;
    check::rc(&env.c.ctr(&["task", "delete", &run.id])?, 0)?;
    check::rc(&env.c.ctr(&["container", "rm", &run.id])?, 0)?;
    super::wait_profile_change(env, image, None)?;
    // The final flush may follow the first write; wait until the profile settles.
    std::thread::sleep(Duration::from_secs(2));
    let p = profile(env, image)?;
    compare(&truth, &p)
}

/// The created init's pid, from `runc state` under vigil's runc root.
fn init_pid(env: &Env, id: &str) -> Result<i32> {
    let root = env.c.runc_root().join(env.c.namespace());
    let mut state = std::process::Command::new("runc");
    state.arg("--root").arg(&root).args(["state", id]);
    let out = cmd::run(&mut state, None, Duration::from_secs(10))?.ok()?;
    let v: Value = serde_json::from_str(&out.stdout)?;
    ensure!(
        v["status"] == "created",
        "container {id} is {} before start",
        v["status"]
    );
    v["pid"]
        .as_i64()
        .map(|p| p as i32)
        .context("runc state has no pid")
}

fn all_traced_by(pid: i32, tracer: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(|t| t.ok()).all(|t| {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .is_some_and(|v| v.trim() == tracer.to_string())
    })
}

/// What strace saw from the workload's first exec on.
#[derive(Debug, Default)]
struct Truth {
    syscalls: BTreeSet<String>,
    /// (resolved path, program, parent program).
    execs: BTreeSet<(String, String, Option<String>)>,
    /// Successful opens: candidate spellings of the path, and the accesses that cover it.
    files: Vec<(Vec<String>, &'static [&'static str])>,
    /// Every path any traced call named (for "nothing extra").
    paths_seen: BTreeSet<String>,
    /// (directions that cover it, family, peer, port).
    net: BTreeSet<(&'static str, String, String, Option<u16>)>,
}

/// One complete strace line: pid, syscall name, arguments text, return text.
struct Call {
    pid: i32,
    name: String,
    args: String,
    ret: String,
}

impl Truth {
    fn parse(text: &str, init: i32, rootfs: &Path) -> Result<Truth> {
        let calls = join_lines(text);
        let mut parent: HashMap<i32, i32> = HashMap::new();
        for c in &calls {
            if is_fork(&c.name) && !c.args.contains("CLONE_THREAD") {
                if let Some(child) = host_pid(&c.ret) {
                    parent.insert(child, c.pid);
                }
            }
        }
        let start = calls
            .iter()
            .position(|c| {
                c.pid == init && c.name == "execve" && c.ret.trim_start().starts_with('0')
            })
            .context("strace saw no successful execve of the entrypoint")?;
        let mut t = Truth::default();
        let mut name: HashMap<i32, String> = HashMap::new();
        let mut exe: HashMap<i32, String> = HashMap::new();
        let mut bound: HashMap<(i32, String), (String, String, u16)> = HashMap::new();
        for c in &calls[start..] {
            if !name.contains_key(&c.pid) {
                if let Some(p) = parent.get(&c.pid) {
                    let inherited = name.get(p).cloned().unwrap_or_default();
                    name.insert(c.pid, inherited);
                    if let Some(e) = exe.get(p).cloned() {
                        exe.insert(c.pid, e);
                    }
                }
            }
            t.syscalls.insert(c.name.clone());
            let strings = quoted(&c.args);
            for s in &strings {
                if s.starts_with('/') {
                    t.paths_seen.insert(s.clone());
                    t.paths_seen.insert(resolve(rootfs, s));
                }
            }
            let ok = !c.ret.trim_start().starts_with('-');
            match c.name.as_str() {
                "execve" | "execveat" if ok => {
                    let path = strings.first().cloned().unwrap_or_default();
                    let argv0 = argv0(&c.args).unwrap_or_else(|| path.clone());
                    let program = argv0.rsplit('/').next().unwrap_or_default().to_string();
                    let resolved = if path == "/proc/self/exe" {
                        exe.get(&c.pid).cloned().unwrap_or(path.clone())
                    } else {
                        resolve(rootfs, &path)
                    };
                    let parent_name = if c.pid == init {
                        None
                    } else {
                        parent.get(&c.pid).and_then(|p| name.get(p)).cloned()
                    };
                    t.execs
                        .insert((resolved.clone(), program.clone(), parent_name));
                    t.paths_seen.insert(resolved.clone());
                    name.insert(c.pid, program);
                    exe.insert(c.pid, resolved);
                }
                "prctl" if c.args.starts_with("PR_SET_NAME") => {
                    if let Some(n) = strings.first() {
                        name.insert(c.pid, n.clone());
                    }
                }
                "open" | "openat" | "openat2" | "creat" if ok => {
                    let Some(path) = strings.first() else {
                        continue;
                    };
                    let path = if path.starts_with('/') {
                        path.clone()
                    } else {
                        format!("/{path}")
                    };
                    let access: &'static [&'static str] =
                        if c.name == "creat" || c.args.contains("O_CREAT") {
                            &["create", "write"]
                        } else if c.args.contains("O_RDWR") {
                            &["read", "write", "create"]
                        } else if c.args.contains("O_WRONLY") {
                            &["write", "create"]
                        } else {
                            &["read"]
                        };
                    t.files.push((spellings(rootfs, &path), access));
                }
                "connect" | "sendto" | "sendmsg" => {
                    let refused_ok =
                        ok || c.ret.contains("EINPROGRESS") || c.ret.contains("ECONNREFUSED");
                    if let Some((family, peer, port)) = sockaddr(&c.args) {
                        let counts = if family == "unix" { ok } else { refused_ok };
                        if counts && !(family != "unix" && port == Some(0)) {
                            let dir = if c.name == "connect" {
                                "connect"
                            } else {
                                "send"
                            };
                            t.net.insert((dir, family, peer, port));
                        }
                    }
                }
                "bind" if ok => {
                    if let (Some(fd), Some((family, addr, Some(port)))) =
                        (first_arg(&c.args), sockaddr(&c.args))
                    {
                        if port != 0 {
                            bound.insert((c.pid, fd), (family.clone(), addr.clone(), port));
                            t.net.insert(("bind", family, addr, Some(port)));
                        }
                    }
                }
                "listen" if ok => {
                    if let Some(b) = first_arg(&c.args).and_then(|fd| bound.get(&(c.pid, fd))) {
                        t.net
                            .insert(("listen", b.0.clone(), b.1.clone(), Some(b.2)));
                    }
                }
                "accept" | "accept4" if ok => {
                    if let Some(b) = first_arg(&c.args).and_then(|fd| bound.get(&(c.pid, fd))) {
                        // The connection's family, as vigil records it: an IPv4 peer on a
                        // dual-stack IPv6 listener (`::ffff:a.b.c.d`) is an IPv4 connection.
                        let v4_mapped = matches!(
                            sockaddr(&c.args),
                            Some((f, addr, _)) if f == "inet6" && addr.starts_with("::ffff:") && addr.contains('.')
                        );
                        let family = if v4_mapped {
                            "inet".to_string()
                        } else {
                            b.0.clone()
                        };
                        t.net.insert(("accept", family, "*".into(), Some(b.2)));
                    }
                }
                _ => {}
            }
        }
        Ok(t)
    }
}

/// The child pid a fork returned, in the host's pid namespace: strace's
/// `--pidns-translation` prints `2 /* 4242 in strace's PID NS */` for a container's child.
fn host_pid(ret: &str) -> Option<i32> {
    if let Some(at) = ret.find("/* ") {
        let n = ret[at + 3..].split_whitespace().next()?;
        if ret[at..].contains("in strace's PID NS") {
            return n.parse().ok();
        }
    }
    ret.split_whitespace().next()?.parse().ok()
}

fn is_fork(name: &str) -> bool {
    matches!(name, "clone" | "clone3" | "fork" | "vfork")
}

/// Complete calls from strace -f output, unfinished and resumed halves joined.
fn join_lines(text: &str) -> Vec<Call> {
    let mut pending: HashMap<i32, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let full = if let Some(after) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = after.split_once(" resumed>") else {
                continue;
            };
            let head = pending.remove(&pid).unwrap_or_default();
            format!("{head}{tail}")
        } else if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, head.to_string());
            continue;
        } else {
            rest.to_string()
        };
        let Some(open) = full.find('(') else { continue };
        let name = full[..open].to_string();
        // strace pads with spaces between the closing parenthesis and " = ".
        let Some(eq) = full.rfind(" = ") else {
            continue;
        };
        let Some(args) = full[open + 1..eq].trim_end().strip_suffix(')') else {
            continue;
        };
        let args = args.to_string();
        calls.push(Call {
            pid,
            name,
            args,
            ret: full[eq + 3..].to_string(),
        });
    }
    calls
}

/// Every double-quoted string in `args`, unescaped enough for paths.
fn quoted(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                }
                '"' => break,
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

/// argv[0] of an execve's arguments (`"path", ["argv0", ...], ...`).
fn argv0(args: &str) -> Option<String> {
    let at = args.find(", [")?;
    quoted(&args[at..]).into_iter().next()
}

/// The first argument (an fd), as text.
fn first_arg(args: &str) -> Option<String> {
    Some(args.split(',').next()?.trim().to_string())
}

/// (family, peer or path, port) of the sockaddr in `args`.
fn sockaddr(args: &str) -> Option<(String, String, Option<u16>)> {
    let port = |key: &str| -> Option<u16> {
        let at = args.find(key)? + key.len();
        args[at..].split(')').next()?.parse().ok()
    };
    if args.contains("sa_family=AF_INET6") {
        let at = args.find("inet_pton(AF_INET6, ")?;
        let addr = quoted(&args[at..]).into_iter().next()?;
        Some(("inet6".into(), addr, port("sin6_port=htons(")))
    } else if args.contains("sa_family=AF_INET") {
        let at = args.find("inet_addr(")?;
        let addr = quoted(&args[at..]).into_iter().next()?;
        Some(("inet".into(), addr, port("sin_port=htons(")))
    } else if args.contains("sa_family=AF_UNIX") {
        let at = args.find("sun_path=")?;
        let abstract_ = args[at..].starts_with("sun_path=@");
        let path = quoted(&args[at..]).into_iter().next()?;
        Some((
            "unix".into(),
            if abstract_ { format!("@{path}") } else { path },
            None,
        ))
    } else {
        None
    }
}

/// `path` resolved inside `rootfs`, following symlinks (absolute ones from the rootfs).
fn resolve(rootfs: &Path, path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut todo: Vec<String> = path
        .split('/')
        .rev()
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut hops = 0;
    while let Some(seg) = todo.pop() {
        match seg.as_str() {
            "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        parts.push(seg);
        let host = rootfs.join(parts.join("/"));
        if let Ok(target) = std::fs::read_link(&host) {
            hops += 1;
            if hops > 40 {
                break;
            }
            parts.pop();
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                parts.clear();
            }
            todo.extend(
                target
                    .split('/')
                    .rev()
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
    }
    format!("/{}", parts.join("/"))
}

/// The spellings of an opened path a profile may hold: as given, resolved in the rootfs, and
/// with /proc/self and /proc/thread-self as a pid.
fn spellings(rootfs: &Path, path: &str) -> Vec<String> {
    let mut v = vec![path.to_string(), resolve(rootfs, path)];
    for (from, to) in [
        ("/proc/self/", "/proc/1/"),
        ("/proc/thread-self/", "/proc/1/task/1/"),
    ] {
        if let Some(rest) = path.strip_prefix(from) {
            v.push(format!("{to}{rest}"));
        }
    }
    v
}

/// Recall (≥ [`RECALL`] per category) and precision (nothing extra) of the profile against
/// the truth.
fn compare(t: &Truth, p: &Value) -> Result<()> {
    let mut report = Vec::new();
    let mut failed = false;
    let mut judge = |category: &str, seen: usize, missing: Vec<String>| {
        let found = seen - missing.len();
        let share = if seen == 0 {
            1.0
        } else {
            found as f64 / seen as f64
        };
        let line = format!(
            "{category}: {found}/{seen} ({:.1}%), missing {missing:?}",
            share * 100.0
        );
        if share < RECALL || seen == 0 {
            failed = true;
        }
        report.push(line);
    };

    let prof_sys: BTreeSet<String> = p["syscalls"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let missing = t
        .syscalls
        .iter()
        .filter(|s| !prof_sys.contains(*s))
        .cloned()
        .collect();
    judge("syscalls", t.syscalls.len(), missing);

    let prof_execs: BTreeSet<(String, String, Option<String>)> = entries(p, "execs")
        .into_iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or_default().to_string(),
                e["program"].as_str().unwrap_or_default().to_string(),
                e["parent"].as_str().map(String::from),
            )
        })
        .collect();
    let missing = t
        .execs
        .iter()
        .filter(|e| !prof_execs.contains(*e))
        .map(|e| format!("{e:?}"))
        .collect();
    judge("execs", t.execs.len(), missing);

    let prof_files: Vec<(String, String)> = entries(p, "files")
        .into_iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or_default().to_string(),
                e["access"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut distinct: BTreeMap<(String, &[&str]), Vec<String>> = BTreeMap::new();
    for (spell, access) in &t.files {
        distinct
            .entry((spell[0].clone(), *access))
            .or_insert_with(|| spell.clone());
    }
    let missing = distinct
        .iter()
        .filter(|((_, access), spell)| {
            !prof_files.iter().any(|(pat, acc)| {
                access.contains(&acc.as_str()) && spell.iter().any(|s| glob_match(pat, s))
            })
        })
        .map(|((path, access), _)| format!("{path} {access:?}"))
        .collect();
    judge("files", distinct.len(), missing);

    let prof_net: Vec<&Value> = entries(p, "network");
    let net_covered = |dir: &str, family: &str, peer: &str, port: Option<u16>| {
        let dirs: &[&str] = match dir {
            "bind" | "listen" => &["bind", "listen"],
            d => std::slice::from_ref(match d {
                "connect" => &"connect",
                "send" => &"send",
                _ => &"accept",
            }),
        };
        // strace shows an accept's listener (`accept(3, NULL, NULL)` has no peer), vigil the
        // connection: an IPv6 listener accepts IPv4 connections too (dual stack).
        let family_ok = |e: &Value| {
            e["family"] == family || (dir == "accept" && family == "inet6" && e["family"] == "inet")
        };
        prof_net.iter().any(|e| {
            dirs.contains(&e["direction"].as_str().unwrap_or_default())
                && family_ok(e)
                && (e["peer"] == peer || e["peer"] == "*" || peer == "*")
                && (e["port"].is_null() || e["port"].as_u64() == port.map(u64::from))
        })
    };
    let missing: Vec<String> = t
        .net
        .iter()
        .filter(|(d, f, peer, port)| !net_covered(d, f, peer, *port))
        .map(|n| format!("{n:?}"))
        .collect();
    judge("network", t.net.len(), missing);

    // Nothing extra.
    let mut extra = Vec::new();
    extra.extend(
        prof_sys
            .iter()
            .filter(|s| !t.syscalls.contains(*s))
            .map(|s| format!("syscall {s}")),
    );
    extra.extend(
        prof_execs
            .iter()
            .filter(|e| !t.execs.contains(*e))
            .map(|e| format!("exec {e:?}")),
    );
    extra.extend(
        prof_files
            .iter()
            .filter(|(pat, _)| {
                !t.paths_seen.iter().any(|s| glob_match(pat, s))
                    && !proc_self_pattern(pat, &t.paths_seen)
            })
            .map(|(pat, acc)| format!("file {pat} {acc}")),
    );
    for e in &prof_net {
        let dir = e["direction"].as_str().unwrap_or_default();
        let seen = t.net.iter().any(|(d, f, peer, port)| {
            let same_dir =
                d == &dir || (matches!(*d, "bind" | "listen") && matches!(dir, "bind" | "listen"));
            // As above: an IPv4 connection accepted by a dual-stack IPv6 listener.
            let family_ok =
                e["family"] == *f || (dir == "accept" && f == "inet6" && e["family"] == "inet");
            same_dir
                && family_ok
                && (e["peer"] == *peer || e["peer"] == "*")
                && (e["port"].is_null() || e["port"].as_u64() == port.map(u64::from))
        });
        if !seen {
            extra.push(format!("network {e}"));
        }
    }
    no_runtime_entries(p)?;
    let summary = format!(
        "{}\nin the profile but not done by the workload: {extra:?}\nprofile execs: {}",
        report.join("\n"),
        short_entries(p, "execs")
    );
    if failed || !extra.is_empty() {
        bail!("profile vs strace ground truth:\n{summary}");
    }
    println!(
        "    {}",
        summary.lines().take(4).collect::<Vec<_>>().join("\n    ")
    );
    Ok(())
}

/// Whether a `/proc/<n>/...` pattern stands for a `/proc/self/...` path strace saw.
fn proc_self_pattern(pattern: &str, seen: &BTreeSet<String>) -> bool {
    seen.iter().any(|s| {
        spellings(Path::new("/nonexistent"), s)
            .iter()
            .any(|sp| glob_match(pattern, sp))
    })
}
