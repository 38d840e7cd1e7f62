//! The guard against its external contract (issues 3 and 4): learning into the profile store,
//! monitor and enforce of every kind of deviation, the audit log's events, fail policy, and
//! the field cases of ../shared/cases/field-cases.md that concern the guard.
//!
//! Everything here speaks only the contract: `ctr` with `vigil.dev/*` annotations, the private
//! vigil config, `vigil --state-dir ... profile show|diff --json`, the audit log's JSON lines
//! (docs/audit-format.md) and the profile document (docs/profile-format.md). What the contract
//! leaves to the implementation (which mechanism acts on this host, which action word it
//! reports) is in [`expect`], in one place.
//!
//! Submodules: `guard_learn.rs` (issue 3: profiles, V04, V08, V09, V12, concurrency, SIGKILL),
//! `guard_strace.rs` (issue 3: ground truth from strace), `guard_attack.rs` (issue 4: attacks in
//! monitor and enforce, no false positives, 100 starts), `guard_field.rs` (issue 4: V01, V02,
//! V03, V05, V14, V17a, V20, annotations, fail policy).

#[path = "guard_attack.rs"]
mod attack;
#[path = "guard_field.rs"]
mod field;
#[path = "guard_learn.rs"]
mod learn;
#[path = "guard_strace.rs"]
mod strace;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use vigil_integration::cmd::{self, Output};
use vigil_integration::{prereq, Image, Run, Runtime};

use crate::check::{self, hang, CTR};
use crate::runner::{skip, Case, Env};

/// Every guard case.
pub fn cases() -> Vec<Case> {
    [
        learn::cases(),
        strace::cases(),
        attack::cases(),
        field::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What the contract leaves open, decided in one place. Adjust here when the guard's
/// documented choices change (docs/audit-format.md, "Mechanisms").
pub mod expect {
    /// The busybox image's name, as events and the profile index carry it.
    pub const BUSYBOX: &str = "local/busybox:latest";
    /// The busybox image with `/bin -> usr/bin`.
    pub const BUSYBOX_USR: &str = "local/busybox-usr:latest";
    /// The redis image.
    pub const REDIS: &str = "local/redis:latest";

    /// The documented `vigil.mechanism` values.
    pub const MECHANISMS: [&str; 8] = [
        "seccomp",
        "seccomp-notify",
        "lsm",
        "signal",
        "cgroup-sock",
        "fanotify",
        "tracepoint",
        "shim",
    ];

    /// One kind of deviation: its audit rule, and what enforce and monitor report for it on
    /// this host (no LSM-BPF: the fallback tier).
    #[derive(Debug, Clone, Copy)]
    pub struct Kind {
        /// `rule` of its events.
        pub rule: &'static str,
        /// `vigil.action` in enforce.
        pub enforce_actions: &'static [&'static str],
        /// `vigil.mechanism` in enforce.
        pub enforce_mechanisms: &'static [&'static str],
        /// `vigil.mechanism` in monitor (`vigil.action` is always `alerted`).
        pub monitor_mechanisms: &'static [&'static str],
    }

    /// An exec outside the profile: killed at `sched_process_exec` by a BPF SIGKILL.
    pub const EXEC: Kind = Kind {
        rule: "vigil: unexpected exec",
        enforce_actions: &["killed"],
        enforce_mechanisms: &["signal"],
        monitor_mechanisms: &["tracepoint", "signal"],
    };
    /// A file access outside the profile: refused by a fanotify permission event.
    pub const FILE: Kind = Kind {
        rule: "vigil: unexpected file access",
        enforce_actions: &["blocked"],
        enforce_mechanisms: &["fanotify"],
        monitor_mechanisms: &["fanotify", "tracepoint"],
    };
    /// A syscall outside the profile: refused by the compiled seccomp filter (through the
    /// shim's notify listener where it reports).
    pub const SYSCALL: Kind = Kind {
        rule: "vigil: unexpected syscall",
        enforce_actions: &["blocked"],
        enforce_mechanisms: &["seccomp", "seccomp-notify"],
        monitor_mechanisms: &["seccomp-notify", "seccomp", "tracepoint"],
    };
    /// A connect or bind outside the profile: refused by the container's sock_addr hooks.
    pub const NET: Kind = Kind {
        rule: "vigil: unexpected network activity",
        enforce_actions: &["blocked"],
        enforce_mechanisms: &["cgroup-sock"],
        monitor_mechanisms: &["cgroup-sock", "tracepoint"],
    };

    /// Exit status of a process killed by SIGKILL, as `sh` and `ctr` report it.
    pub const KILLED_RC: i32 = 137;
    /// errno of a new syscall (>= 317) the enforced profile lacks: ENOSYS.
    pub const ABSENT_ERRNO: i32 = 38;
}

// ---------------------------------------------------------------------------------------
// Running containers in a mode

/// `ctr run --rm` of `image` as `BASE-vigil` with `vigil.dev/mode=MODE`.
pub fn run_in(env: &Env, image: Image, base: &str, mode: &str) -> Run {
    let annotation = format!("vigil.dev/mode={mode}");
    Run::new(Runtime::Vigil, image, &env.id(base)).flags(&["--annotation", &annotation])
}

/// `ctr run --rm` of busybox in `mode`.
pub fn bb(env: &Env, base: &str, mode: &str) -> Run {
    run_in(env, Image::Busybox, base, mode)
}

/// Runs `run`, which must exit 0; returns its output.
pub fn run_ok(env: &Env, run: &Run) -> Result<Output> {
    let out = env.c.run(run, CTR)?;
    check::rc(&out, 0).with_context(|| format!("containerd log:\n{}", env.c.log_tail(15)))?;
    Ok(out)
}

/// Runs `run` in learn mode to its end (rc 0) and waits until the image's profile holds what
/// the shim flushed at Delete.
pub fn learn_run(env: &Env, run: &Run, image: &str) -> Result<Output> {
    let before = profile_updated(env, image);
    let out = run_ok(env, run)?;
    wait_profile_change(env, image, before.as_deref())?;
    Ok(out)
}

/// The image's profile `updated` stamp, if it has a profile.
fn profile_updated(env: &Env, image: &str) -> Option<String> {
    let p = profile(env, image).ok()?;
    Some(p["updated"].as_str().unwrap_or_default().to_string() + &p.to_string().len().to_string())
}

/// Waits until the image's profile exists and differs from `before`.
pub fn wait_profile_change(env: &Env, image: &str, before: Option<&str>) -> Result<()> {
    let changed = check::wait_until(hang(2), || {
        let now = profile_updated(env, image);
        now.is_some() && now.as_deref() != before
    });
    ensure!(
        changed,
        "no new profile for {image} within {:?} after a learn run; profiles/: {:?}; containerd log:\n{}",
        hang(2),
        list_dir(&env.c.vigil_state_dir().join("profiles")),
        env.c.log_tail(15)
    );
    Ok(())
}

fn list_dir(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `run` detached (`-d`, `--null-io` added by the caller) and waits until RUNNING.
pub fn start_detached(env: &Env, run: &Run) -> Result<i32> {
    let out = env.c.run(run, CTR)?;
    check::rc(&out, 0).with_context(|| format!("containerd log:\n{}", env.c.log_tail(15)))?;
    Ok(env.c.wait_task_status(&run.id, "RUNNING", hang(2))?.pid)
}

/// Kills (KILL), deletes and removes container `id`, failing if delete or rm fail.
pub fn finish(env: &Env, id: &str) -> Result<()> {
    if env.c.task(id)?.is_some_and(|t| t.status == "RUNNING") {
        env.kill(id, "KILL", None)?;
        env.c.wait_task_status(id, "STOPPED", hang(2))?;
    }
    check::rc(&env.c.ctr(&["task", "delete", id])?, 0)?;
    check::rc(&env.c.ctr(&["container", "rm", id])?, 0)
}

/// Waits until task `id` is STOPPED, then returns the status `ctr task delete` reports.
pub fn wait_exit(env: &Env, id: &str, timeout: Duration) -> Result<i32> {
    env.c.wait_task_status(id, "STOPPED", timeout)?;
    env.delete_status(id)
}

// ---------------------------------------------------------------------------------------
// The `vigil` command and the profile document

/// The `vigil` binary built beside the shim.
pub fn vigil_binary() -> Result<PathBuf> {
    let dir = prereq::vigil_shim().map_err(skip)?;
    let path = dir.join("vigil");
    if !path.is_file() {
        return Err(skip(format!(
            "{} not built (cargo build -p vigil-shim)",
            path.display()
        )));
    }
    Ok(path)
}

/// `vigil --state-dir <the private state dir> ARGS...` with the private config.
pub fn vigil(env: &Env, args: &[&str]) -> Result<Output> {
    let mut command = Command::new(vigil_binary()?);
    command
        .arg("--state-dir")
        .arg(env.c.vigil_state_dir())
        .args(args)
        .env("VIGIL_CONFIG", env.c.vigil_config_path());
    cmd::run(&mut command, None, Duration::from_secs(30))
}

/// `vigil profile show REF --json`, parsed.
pub fn profile(env: &Env, reference: &str) -> Result<Value> {
    let out = vigil(env, &["profile", "show", reference, "--json"])?.ok()?;
    serde_json::from_str(&out.stdout)
        .with_context(|| format!("`vigil profile show {reference} --json` is not JSON"))
}

/// The entries of a list category (`execs`, `files`, `network`).
pub fn entries<'a>(p: &'a Value, category: &str) -> Vec<&'a Value> {
    p[category]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Exec entries with this resolved `path` and `program`, and `parent` when given (`Some(None)`
/// = no parent).
pub fn execs_of<'a>(
    p: &'a Value,
    path: &str,
    program: &str,
    parent: Option<Option<&str>>,
) -> Vec<&'a Value> {
    entries(p, "execs")
        .into_iter()
        .filter(|e| e["path"] == path && e["program"] == program)
        .filter(|e| match parent {
            None => true,
            Some(want) => e["parent"].as_str() == want,
        })
        .collect()
}

/// Fails unless the profile has an exec entry as described; returns the first.
pub fn want_exec<'a>(
    p: &'a Value,
    path: &str,
    program: &str,
    parent: Option<Option<&str>>,
) -> Result<&'a Value> {
    let found = execs_of(p, path, program, parent);
    let entry = found.first().copied().with_context(|| {
        format!(
            "profile has no exec {program} ({path}, parent {parent:?}); its execs: {}",
            short_entries(p, "execs")
        )
    })?;
    evidence(entry)?;
    Ok(entry)
}

/// Fails unless the profile names syscall `name` (any of `names`) with evidence.
pub fn want_syscall(p: &Value, names: &[&str]) -> Result<()> {
    let found = names.iter().find_map(|n| p["syscalls"].get(*n));
    let entry = found.with_context(|| {
        let have: Vec<&String> = p["syscalls"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        format!("profile has no syscall {names:?}; it has {have:?}")
    })?;
    evidence(entry)
}

/// Fails unless the profile has a file entry whose pattern matches `path` with one of `access`.
pub fn want_file(p: &Value, path: &str, access: &[&str]) -> Result<()> {
    let found = entries(p, "files").into_iter().find(|e| {
        access.contains(&e["access"].as_str().unwrap_or_default())
            && glob_match(e["path"].as_str().unwrap_or_default(), path)
    });
    let entry = found.with_context(|| {
        format!(
            "profile has no file entry for {path} with access {access:?}; its files: {}",
            short_entries(p, "files")
        )
    })?;
    evidence(entry)
}

/// Fails unless the profile has a network entry of `direction` (any of) on `port`, with `peer`
/// when given.
pub fn want_net(p: &Value, directions: &[&str], peer: Option<&str>, port: u16) -> Result<()> {
    let found = entries(p, "network").into_iter().find(|e| {
        directions.contains(&e["direction"].as_str().unwrap_or_default())
            && e["port"].as_u64() == Some(u64::from(port))
            && peer.is_none_or(|want| e["peer"] == want)
    });
    let entry = found.with_context(|| {
        format!(
            "profile has no network {directions:?} {peer:?}:{port}; its network: {}",
            short_entries(p, "network")
        )
    })?;
    evidence(entry)
}

/// Every entry carries its evidence: first and last seen, a count, a container count.
pub fn evidence(entry: &Value) -> Result<()> {
    let ok = entry["first_seen"].is_string()
        && entry["last_seen"].is_string()
        && entry["count"].as_u64().is_some_and(|c| c >= 1)
        && entry["containers"].as_u64().is_some_and(|c| c >= 1);
    ensure!(ok, "entry without full evidence: {entry}");
    Ok(())
}

/// A category's entries, one short line each, for messages.
pub fn short_entries(p: &Value, category: &str) -> String {
    let mut lines: Vec<String> = entries(p, category)
        .into_iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(m) = e.as_object_mut() {
                for k in ["first_seen", "last_seen", "phases"] {
                    m.remove(k);
                }
            }
            e.to_string()
        })
        .collect();
    lines.sort();
    format!("\n    {}", lines.join("\n    "))
}

/// Matches a profile path pattern (docs/profile-format.md: `*` within one segment, a `**`
/// segment any number of segments) against a concrete path.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match (pat.first(), segs.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            match_segments(&pat[1..], segs) || (!segs.is_empty() && match_segments(pat, &segs[1..]))
        }
        (Some(p), Some(s)) => {
            match_segment(p.as_bytes(), s.as_bytes()) && match_segments(&pat[1..], &segs[1..])
        }
        _ => false,
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| match_segment(&p[1..], &s[i..])),
        Some(c) => s.first() == Some(c) && match_segment(&p[1..], &s[1..]),
    }
}

/// Fails if the profile names any of runc's own steps (field case V12) in its entries.
pub fn no_runtime_entries(p: &Value) -> Result<()> {
    let mut texts = Vec::new();
    for e in entries(p, "execs") {
        for k in ["path", "program", "parent", "invoked"] {
            texts.push(e[k].as_str().unwrap_or_default().to_string());
        }
    }
    for e in entries(p, "files") {
        texts.push(e["path"].as_str().unwrap_or_default().to_string());
    }
    for e in entries(p, "network") {
        texts.push(e["peer"].to_string());
    }
    let bad: Vec<&String> = texts
        .iter()
        .filter(|t| {
            t.contains("memfd:")
                || t.contains("runc")
                || t.contains("/proc/self/exe")
                || t.contains("/run/containerd")
                || t.contains("io.containerd")
        })
        .collect();
    ensure!(
        bad.is_empty(),
        "profile entries name the runtime's own steps: {bad:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The audit log

/// Every event of the audit log, in order; a line that is not a JSON object fails.
pub fn audit(env: &Env) -> Result<Vec<Value>> {
    vigil_integration::audit_log::read(&env.c.audit_log())
}

/// How many events the log holds now: later reads take what came after.
pub fn mark(env: &Env) -> Result<usize> {
    Ok(audit(env)?.len())
}

/// Events after `mark`, once at least `min` arrived (or `hang(2)` passed) and the log has been
/// quiet for half a second (the writer is asynchronous).
pub fn events_since(env: &Env, mark: usize, min: usize) -> Result<Vec<Value>> {
    vigil_integration::audit_log::events_since(&env.c.audit_log(), mark, min, hang(2))
}

/// Fails unless nothing was logged after `mark` (waiting a second for stragglers).
pub fn no_events_since(env: &Env, mark: usize, what: &str) -> Result<()> {
    std::thread::sleep(Duration::from_secs(1));
    let events = events_since(env, mark, 0)?;
    ensure!(
        events.is_empty(),
        "{what}: expected no audit event, got {}:\n{}",
        events.len(),
        show_events(&events)
    );
    Ok(())
}

/// `output_fields[key]` of an event.
pub fn field<'a>(ev: &'a Value, key: &str) -> &'a Value {
    &ev["output_fields"][key]
}

/// `output_fields[key]` as a string ("" when absent or not a string).
pub fn field_str<'a>(ev: &'a Value, key: &str) -> &'a str {
    field(ev, key).as_str().unwrap_or_default()
}

/// Events, one line each, for messages.
pub fn show_events(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("    {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What one deviation event must say.
pub struct Want<'a> {
    /// `container.id`.
    pub id: &'a str,
    /// `container.image.repository`.
    pub image: &'a str,
    /// `vigil.mode` (`enforce` or `monitor`).
    pub mode: &'a str,
    /// The kind of deviation.
    pub kind: expect::Kind,
    /// `proc.pname`, when the case fixes it.
    pub pname: Option<&'a str>,
    /// Further `output_fields` that must equal these strings.
    pub fields: Vec<(&'a str, String)>,
}

impl Want<'_> {
    /// Whether `ev` is an event of this deviation's kind in this container (not yet whether
    /// every field is right).
    pub fn is_kind(&self, ev: &Value) -> bool {
        ev["rule"] == self.kind.rule && field_str(ev, "container.id") == self.id
    }

    /// Whether `ev` is of this kind and has the extra fields (used to pick the event).
    pub fn matches(&self, ev: &Value) -> bool {
        self.is_kind(ev) && self.fields.iter().all(|(k, v)| field_value_is(ev, k, v))
    }

    /// Fails naming every field of `ev` that is not as wanted.
    pub fn check(&self, ev: &Value) -> Result<()> {
        let mut wrong = Vec::new();
        let mut want_eq = |key: &str, want: &str| {
            if !field_value_is(ev, key, want) {
                wrong.push(format!("{key} = {} (want {want:?})", field(ev, key)));
            }
        };
        want_eq("container.id", self.id);
        want_eq("container.image.repository", self.image);
        want_eq("vigil.mode", self.mode);
        if let Some(p) = self.pname {
            want_eq("proc.pname", p);
        }
        for (k, v) in &self.fields {
            want_eq(k, v);
        }
        let (actions, mechanisms): (&[&str], &[&str]) = if self.mode == "enforce" {
            (self.kind.enforce_actions, self.kind.enforce_mechanisms)
        } else {
            (&["alerted"], self.kind.monitor_mechanisms)
        };
        let action = field_str(ev, "vigil.action");
        if !actions.contains(&action) {
            wrong.push(format!(
                "vigil.action = {action:?} (want one of {actions:?})"
            ));
        }
        let mechanism = field_str(ev, "vigil.mechanism");
        if !mechanisms.contains(&mechanism) || !expect::MECHANISMS.contains(&mechanism) {
            wrong.push(format!(
                "vigil.mechanism = {mechanism:?} (want one of {mechanisms:?})"
            ));
        }
        if ev["rule"] != self.kind.rule {
            wrong.push(format!("rule = {} (want {:?})", ev["rule"], self.kind.rule));
        }
        if field(ev, "proc.pid").as_u64().unwrap_or(0) == 0 {
            wrong.push(format!("proc.pid = {}", field(ev, "proc.pid")));
        }
        for key in ["proc.exepath", "proc.name", "proc.cmdline"] {
            if field_str(ev, key).is_empty() {
                wrong.push(format!(
                    "{key} = {} (want a non-empty string)",
                    field(ev, key)
                ));
            }
        }
        if !field(ev, "proc.pname").is_string() {
            wrong.push(format!("proc.pname = {}", field(ev, "proc.pname")));
        }
        common_shape(ev, &mut wrong);
        ensure!(
            wrong.is_empty(),
            "event {ev}\n  wrong: {}",
            wrong.join("; ")
        );
        Ok(())
    }
}

/// Whether `output_fields[key]` is the string `want`, or the number `want` spells.
fn field_value_is(ev: &Value, key: &str, want: &str) -> bool {
    match field(ev, key) {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

/// The Falco-shaped top level every event has (docs/audit-format.md).
fn common_shape(ev: &Value, wrong: &mut Vec<String>) {
    if ev["source"] != "vigil" {
        wrong.push(format!("source = {}", ev["source"]));
    }
    if !ev["rule"]
        .as_str()
        .is_some_and(|r| r.starts_with("vigil: "))
    {
        wrong.push(format!("rule = {}", ev["rule"]));
    }
    let time_ok = ev["time"]
        .as_str()
        .is_some_and(|t| t.len() == 30 && t.ends_with('Z') && t.as_bytes()[10] == b'T');
    if !time_ok {
        wrong.push(format!(
            "time = {} (want RFC 3339 with 9 digits)",
            ev["time"]
        ));
    }
    for key in ["priority", "hostname", "output"] {
        if !ev[key].is_string() {
            wrong.push(format!("{key} = {}", ev[key]));
        }
    }
    if !ev["tags"]
        .as_array()
        .is_some_and(|t| t.first() == Some(&Value::from("vigil")))
    {
        wrong.push(format!("tags = {}", ev["tags"]));
    }
    let id = field_str(ev, "container.id");
    if id.is_empty() || id == "host" {
        wrong.push(format!("container.id = {}", field(ev, "container.id")));
    }
}

/// Picks the one event in `events` that `want` matches and checks it; fails if there is none
/// or more than one.
pub fn one_event(events: &[Value], want: &Want) -> Result<Value> {
    let found: Vec<&Value> = events.iter().filter(|e| want.matches(e)).collect();
    match found.as_slice() {
        [one] => {
            want.check(one)?;
            Ok((*one).clone())
        }
        [] => {
            // Say why the closest candidate did not match.
            if let Some(near) = events.iter().find(|e| want.is_kind(e)) {
                want.check(near)?;
            }
            bail!(
                "no {:?} event of {} with {:?}; events:\n{}",
                want.kind.rule,
                want.id,
                want.fields,
                show_events(events)
            )
        }
        many => bail!(
            "{} {:?} events of {} with {:?}, want exactly one:\n{}",
            many.len(),
            want.kind.rule,
            want.id,
            want.fields,
            show_events(events)
        ),
    }
}

// ---------------------------------------------------------------------------------------
// A TCP server on the host's 127.0.0.1 (for containers run with --net-host)

/// A TCP server this test starts on 127.0.0.1: counts connections and answers each with a
/// small HTTP response. Stops when dropped.
pub struct Server {
    /// The port it listens on.
    pub port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on 127.0.0.1 on a free port.
    pub fn start() -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind a test server")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        answer(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Server {
            port,
            hits,
            stop,
            thread: Some(thread),
        })
    }

    /// Connections accepted so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 1024];
    let _ = stream.read(&mut buf);
    let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\ndownload\n");
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Appends `lines` to the private vigil config (read at every Create).
pub fn add_config(env: &Env, lines: &str) -> Result<()> {
    let path = env.c.vigil_config_path();
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str(lines);
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
}
