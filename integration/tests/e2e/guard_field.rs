//! Issue 4's field cases (V01, V02, V03, V05, V14, V17a, V20), bad annotations, and the fail
//! policy.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use vigil_integration::{procs, Image, Run, Runtime};

use super::expect::{self, BUSYBOX};
use super::{
    bb, events_since, field_str, learn_run, mark, no_events_since, one_event, profile, run_ok,
    show_events, start_detached, vigil, wait_exit, want_syscall, Want,
};
use crate::check::{self, hang, CTR};
use crate::runner::{Case, Env};

pub fn cases() -> Vec<Case> {
    vec![
        Case::vigil("guard/v01_runc_after_filter", v01),
        Case::vigil("guard/v02_new_syscalls_enosys", |e| v02(e, false)),
        Case::vigil("guard/v02_new_syscalls_enosys_openat2", |e| v02(e, true)),
        Case::vigil("guard/v03_exit_paths_never_learned", v03),
        Case::vigil("guard/v05_denial_audited_then_relearned", v05),
        Case::vigil("guard/v14_first_event_identity", v14),
        Case::vigil("guard/v17a_containerd_down", v17a),
        Case::vigil("guard/v20_denied_entrypoint", v20),
        Case::vigil("guard/annotation_bad_value_refused", annotation_bad_value),
        Case::vigil("guard/fail_closed_enforce_without_profile", fail_closed),
        Case::vigil("guard/fail_open_enforce_without_profile", fail_open)
            .with_vigil_config("fail_policy = \"open\""),
    ]
}

/// V01: enforced containers start as root with and without new privileges, and execs into
/// them run as root and as another user, under a profile learned once as root with defaults.
///
/// ctr 1.6 has no `run --user` (and `--config` needs a rootfs without an image, which the
/// guard refuses), so the field case's (b) and (c) "container as uid 1000" are covered by
/// `ctr task exec --user 1000` into a defaults container (runc exec's setuid path under the
/// no_new_privs filter) and into an `--allow-new-privs` one (the early-filter path).
fn v01(env: &Env) -> Result<()> {
    let w = "id -u; sleep 3";
    learn_run(env, &bb(env, "v01l", "learn").sh(w), BUSYBOX)?;
    let m = mark(env)?;
    let mut outs = Vec::new();
    for (base, flags) in [("v01a", &[][..]), ("v01c", &["--allow-new-privs"][..])] {
        let run = bb(env, base, "enforce").flags(flags).sh(w);
        let bg = env.c.run_background(&run)?;
        env.c.wait_task_status(&run.id, "RUNNING", hang(2))?;
        let d_root = env.c.exec(&run.id, "d0", &["sh", "-c", "id -u"], CTR)?;
        let d_user = env.c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "d1",
            "--fifo-dir",
            &env.c.fifo_dir().to_string_lossy(),
            "--user",
            "1000",
            &run.id,
            "sh",
            "-c",
            "id -u",
        ])?;
        let out = bg.wait(CTR)?;
        check::rc_stdout(&out, 0, "0\n").with_context(|| format!("{base} {flags:?}"))?;
        check::rc_stdout(&d_root, 0, "0\n").with_context(|| format!("exec into {base}"))?;
        check::rc_stdout(&d_user, 0, "1000\n")
            .with_context(|| format!("exec --user 1000 into {base}"))?;
        outs.extend([out, d_root, d_user]);
    }
    for out in &outs {
        ensure!(
            !out.stderr.contains("runc"),
            "runc error text: {}",
            out.describe()
        );
    }
    no_events_since(env, m, "V01 enforced runs")
}

/// V02: unlearned clone3 / faccessat2 answer ENOSYS in enforce (also when the profile names
/// openat2, above them), and monitor reports them.
fn v02(env: &Env, openat2: bool) -> Result<()> {
    let extra: &[&str] = if openat2 { &["--openat2"] } else { &[] };
    let mut learn_args = vec!["/hx-newsys", "--hide"];
    learn_args.extend(extra);
    let out = learn_run(env, &bb(env, "v02l", "learn").cmd(&learn_args), BUSYBOX)?;
    ensure!(
        out.stdout.contains("thread ok\naccess 0\n"),
        "learn run: {}",
        out.describe()
    );
    if openat2 {
        want_syscall(&profile(env, BUSYBOX)?, &["openat2"])?;
    }
    let mut args = vec!["/hx-newsys"];
    args.extend(extra);
    let m = mark(env)?;
    let out = run_ok(env, &bb(env, "v02e", "enforce").cmd(&args))?;
    let want = format!(
        "{}thread ok\naccess 0\nclone3 errno {}\n",
        if openat2 { "openat2 ok\n" } else { "" },
        expect::ABSENT_ERRNO
    );
    check::rc_stdout(&out, 0, &want).context("enforce")?;
    let enforce_events = events_since(env, m, 1)?;

    let m = mark(env)?;
    let mon = bb(env, "v02m", "monitor").cmd(&args);
    let out = run_ok(env, &mon)?;
    ensure!(
        out.stdout
            .contains("thread ok\naccess 0\nclone3 errno 22\n"),
        "monitor: {}",
        out.describe()
    );
    let events = events_since(env, m, 2)?;
    for name in ["clone3", "faccessat2"] {
        let w = Want {
            id: &mon.id,
            image: BUSYBOX,
            mode: "monitor",
            kind: expect::SYSCALL,
            pname: None,
            fields: vec![("evt.type", name.into())],
        };
        let found: Vec<&Value> = events.iter().filter(|e| w.matches(e)).collect();
        ensure!(
            !found.is_empty(),
            "monitor: no event names {name}:\n{}",
            show_events(&events)
        );
        for ev in found {
            w.check(ev)?;
        }
    }
    // Enforce reports its ENOSYS answers as deviations too, each as a syscall event.
    for ev in &enforce_events {
        ensure!(
            ev["rule"] == expect::SYSCALL.rule,
            "enforce: unexpected event kind: {ev}"
        );
    }
    Ok(())
}

/// V03: exit and signal paths work in enforce though learning was ended by SIGKILL.
fn v03(env: &Env) -> Result<()> {
    // The field case's learn run, and the same for the shell workload of (c) (else its
    // entrypoint would be an unlearned exec): both end by SIGKILL, so neither exit_group nor
    // rt_sigreturn nor restart_syscall is ever seen.
    let trap = "trap \"exit 143\" TERM; sleep 600 & wait";
    for (base, cmd) in [
        ("v03l", vec!["sleep", "600"]),
        ("v03m", vec!["sh", "-c", trap]),
    ] {
        let run = bb(env, base, "learn")
            .detach()
            .flags(&["--null-io"])
            .cmd(&cmd);
        start_detached(env, &run)?;
        std::thread::sleep(Duration::from_secs(3));
        env.kill(&run.id, "KILL", None)?;
        wait_exit(env, &run.id, hang(2))?;
        check::rc(&env.c.ctr(&["container", "rm", &run.id])?, 0)?;
    }
    super::wait_profile_change(env, BUSYBOX, None)?;
    let m = mark(env)?;

    let a = env
        .c
        .run(&bb(env, "v03a", "enforce").cmd(&["sleep", "1"]), hang(15))?;
    check::rc(&a, 0).context("(a) sleep 1")?;

    let b = bb(env, "v03b", "enforce")
        .detach()
        .flags(&["--null-io"])
        .cmd(&["sleep", "5"]);
    let pid = start_detached(env, &b)?;
    env.kill(&b.id, "STOP", None)?;
    std::thread::sleep(Duration::from_secs(1));
    env.kill(&b.id, "CONT", None)?;
    let busy = cpu_ticks_over(pid, Duration::from_secs(1));
    ensure!(wait_exit(env, &b.id, hang(10))? == 0, "(b) STOP/CONT sleep");
    ensure!(
        busy < 20,
        "(b) the resumed sleep spins: {busy} ticks in 1 s"
    );
    check::rc(&env.c.ctr(&["container", "rm", &b.id])?, 0)?;

    let c = bb(env, "v03c", "enforce")
        .detach()
        .flags(&["--null-io"])
        .sh(trap);
    let pid = start_detached(env, &c)?;
    std::thread::sleep(Duration::from_millis(500));
    let busy = cpu_ticks_over(pid, Duration::from_secs(1));
    let t = Instant::now();
    env.kill(&c.id, "TERM", None)?;
    ensure!(
        wait_exit(env, &c.id, hang(10))? == 143,
        "(c) TERM with a trap"
    );
    ensure!(t.elapsed() <= hang(10), "(c) took {:?}", t.elapsed());
    ensure!(
        busy < 20,
        "(c) the waiting shell spins: {busy} ticks in 1 s"
    );
    check::rc(&env.c.ctr(&["container", "rm", &c.id])?, 0)?;
    no_events_since(env, m, "V03 enforced exit paths")
}

/// User plus system clock ticks `pid` used over `span`.
fn cpu_ticks_over(pid: i32, span: Duration) -> u64 {
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        // Counted from the state field: utime and stime (fields 14 and 15 of the line).
        let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    };
    let before = ticks();
    std::thread::sleep(span);
    ticks().saturating_sub(before)
}

/// V05: a seccomp denial in enforce is audited once; relearning adds it (`profile diff` shows
/// +times) and the next enforce is clean.
fn v05(env: &Env) -> Result<()> {
    let w1 = "cat /etc/passwd >/dev/null; echo done";
    let w2 = "cat /etc/passwd >/dev/null; times >/dev/null; echo done";
    learn_run(env, &bb(env, "v05l1", "learn").sh(w1), BUSYBOX)?;
    let before = env.c.dir().join("v05-before.json");
    let out = vigil(env, &["profile", "show", BUSYBOX, "--json"])?.ok()?;
    std::fs::write(&before, &out.stdout)?;

    let m = mark(env)?;
    let run = bb(env, "v05e1", "enforce").sh(w2);
    let out = run_ok(env, &run)?;
    ensure!(out.stdout == "done\n", "{}", out.describe());
    let events = events_since(env, m, 1)?;
    let want = Want {
        id: &run.id,
        image: BUSYBOX,
        mode: "enforce",
        kind: expect::SYSCALL,
        pname: None,
        fields: vec![("evt.type", "times".into())],
    };
    one_event(&events, &want)?;
    // The field case says times is the only new call; Debian's busybox `times` builtin also
    // checks stdout before printing (newfstatat on fd 1, then ioctl TCGETS, as strace of
    // `busybox sh -c 'times >/dev/null'` shows), so those may be reported as well, and
    // nothing else.
    let others: Vec<&Value> = events
        .iter()
        .filter(|e| {
            let ty = field_str(e, "evt.type");
            !(e["rule"] == expect::SYSCALL.rule && ["times", "ioctl", "newfstatat"].contains(&ty))
        })
        .collect();
    ensure!(
        others.is_empty(),
        "events beyond times (and newfstatat, ioctl):\n{}",
        show_events(&events)
    );

    learn_run(env, &bb(env, "v05l2", "learn").sh(w2), BUSYBOX)?;
    let before = before.to_string_lossy();
    let diff = vigil(env, &["profile", "diff", &before, BUSYBOX])?.ok()?;
    let plus_times = diff.stdout.lines().any(|l| {
        l.trim_start().starts_with('+') && l.contains("syscall") && l.trim_end().ends_with(" times")
    });
    ensure!(
        plus_times,
        "`vigil profile diff` does not show +times:\n{}",
        diff.stdout
    );

    let m = mark(env)?;
    let out = run_ok(env, &bb(env, "v05e2", "enforce").sh(w2))?;
    ensure!(out.stdout == "done\n", "{}", out.describe());
    no_events_since(env, m, "V05 second enforce of W2")
}

/// V14: 20 fresh enforced containers, each with at least three deviations at once; every
/// event carries the container's identity.
fn v14(env: &Env) -> Result<()> {
    // The field case learns `sh -c 'cat /etc/passwd >/dev/null'`, but busybox's sh runs a
    // lone command in its own place (no fork), so that profile lacks clone and the enforced
    // script would stop at its first fork; a trailing `true` keeps the fork in the profile.
    let learn = bb(env, "v14l", "learn").sh("cat /etc/passwd >/dev/null; true");
    learn_run(env, &learn, BUSYBOX)?;
    let m = mark(env)?;
    let script = "cat /etc/shadow; nc -w1 127.0.0.1 9 </dev/null; id -u; true";
    let mut ids = Vec::new();
    for i in 0..20u32 {
        let id = random_hex_id(i);
        let run = Run::new(Runtime::Vigil, Image::Busybox, &id)
            .flags(&["--annotation", "vigil.dev/mode=enforce"])
            .sh(script);
        let run_mark = mark(env)?;
        let out = env.c.run(&run, CTR)?;
        ensure!(!out.timed_out, "{}", out.describe());
        let events = events_since(env, run_mark, 3)?;
        ensure!(
            events.len() >= 3,
            "run {i} ({id}): want >= 3 events:\n{}",
            show_events(&events)
        );
        for ev in &events {
            let mut wrong = Vec::new();
            let cid = field_str(ev, "container.id");
            if !(cid == id || (cid.len() >= 12 && id.starts_with(cid))) {
                wrong.push("container.id");
            }
            if field_str(ev, "container.image.repository") != BUSYBOX {
                wrong.push("container.image.repository");
            }
            if field_str(ev, "proc.pname") != "sh" {
                wrong.push("proc.pname");
            }
            if field_str(ev, "vigil.mode") != "enforce" {
                wrong.push("vigil.mode");
            }
            if !["blocked", "killed"].contains(&field_str(ev, "vigil.action")) {
                wrong.push("vigil.action");
            }
            if !expect::MECHANISMS.contains(&field_str(ev, "vigil.mechanism")) {
                wrong.push("vigil.mechanism");
            }
            ensure!(wrong.is_empty(), "run {i} ({id}): wrong {wrong:?} in {ev}");
        }
        let kinds = |rule: &str| events.iter().any(|e| e["rule"] == rule);
        ensure!(
            kinds(expect::FILE.rule) && kinds(expect::EXEC.rule) && kinds(expect::SYSCALL.rule),
            "run {i}: want a file, an exec and a syscall event:\n{}",
            show_events(&events)
        );
        ids.push(id);
    }
    for ev in events_since(env, m, 0)? {
        let cid = field_str(&ev, "container.id");
        ensure!(
            !cid.is_empty() && cid != "host",
            "event without identity: {ev}"
        );
    }
    Ok(())
}

/// A 40-hex-digit container id, different for each `n` and each run.
fn random_hex_id(n: u32) -> String {
    use sha2::{Digest, Sha256};
    let seed = format!("{:?}-{}-{n}", Instant::now(), std::process::id());
    let hash = Sha256::digest(seed.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect::<String>()[..40].to_string()
}

/// V17 (a): guarding continues while containerd is down; afterwards the task is STOPPED with
/// its status, and the shim exits after delete.
fn v17a(env: &Env) -> Result<()> {
    let learn = bb(env, "v17l", "learn").sh("sleep 5; exit 4");
    check::rc(&env.c.run(&learn, CTR)?, 4).context("learn run")?;
    super::wait_profile_change(env, BUSYBOX, None)?;
    let m = mark(env)?;
    let run = bb(env, "v17a", "enforce")
        .detach()
        .flags(&["--null-io"])
        .sh("sleep 5; cat /etc/shadow; exit 4");
    let t0 = Instant::now();
    start_detached(env, &run)?;
    let shim = env.c.shim_pid(&run.id)?;
    sleep_until(t0 + Duration::from_secs(1));
    env.c.stop()?;
    let down_at = time_now();
    sleep_until(t0 + Duration::from_secs(10));
    let up_at = time_now();
    env.c.launch()?;
    let task = env.c.wait_task_status(&run.id, "STOPPED", hang(5))?;
    ensure!(task.status == "STOPPED", "{task:?}");
    ensure!(env.delete_status(&run.id)? == 4, "delete status");
    ensure!(
        procs::wait_gone(&[shim], hang(5)).is_empty(),
        "shim {shim} outlived delete"
    );
    check::rc(&env.c.ctr(&["container", "rm", &run.id])?, 0)?;
    let events = events_since(env, m, 1)?;
    let deviation: Vec<&Value> = events
        .iter()
        .filter(|e| field_str(e, "container.id") == run.id)
        .collect();
    ensure!(
        !deviation.is_empty(),
        "no event for the shadow read while containerd was down"
    );
    for ev in &deviation {
        let time = ev["time"].as_str().unwrap_or_default();
        ensure!(
            time >= down_at.as_str() && time <= up_at.as_str(),
            "event at {time}, containerd was down {down_at} .. {up_at}: {ev}"
        );
        ensure!(
            ["blocked", "killed"].contains(&field_str(ev, "vigil.action")),
            "not blocked: {ev}"
        );
    }
    Ok(())
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// Now as the audit log writes it (RFC 3339 UTC, nine digits), from `date`.
fn time_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    out
}

/// V20: a denied entrypoint fails fast, is logged once, and cleans up; a missing one behaves
/// as under runc.
fn v20(env: &Env) -> Result<()> {
    learn_run(
        env,
        &bb(env, "v20l", "learn").sh("cat /etc/passwd >/dev/null"),
        BUSYBOX,
    )?;
    let m = mark(env)?;
    let nc = bb(env, "v20nc", "enforce")
        .keep()
        .cmd(&["/bin/nc", "-l", "-p", "8080"]);
    let bg = env.c.run_background(&nc)?;
    let t = Instant::now();
    let mut ls_slow = None;
    let mut seen = false;
    while t.elapsed() < hang(5) {
        let probe = env.c.ctr_timeout(&["task", "ls"], Duration::from_secs(3))?;
        if probe.timed_out || probe.rc != 0 {
            ls_slow = Some(probe.describe());
        }
        // ctr run (without --rm) deletes the task once it exited and keeps the container.
        match env.c.task(&nc.id)? {
            Some(t) if t.status == "STOPPED" => break,
            Some(_) => seen = true,
            None if seen || t.elapsed() > Duration::from_secs(3) => break,
            None => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = bg.wait(hang(5))?;
    ensure!(
        !out.timed_out && out.elapsed <= hang(5),
        "ctr run of a denied entrypoint: {}",
        out.describe()
    );
    ensure!(
        out.rc != 0,
        "denied entrypoint exited 0: {}",
        out.describe()
    );
    ensure!(
        out.rc == expect::KILLED_RC || out.stderr.to_lowercase().contains("permission"),
        "want 137 (killed at exec) or EPERM: {}",
        out.describe()
    );
    ensure!(ls_slow.is_none(), "ctr task ls unresponsive: {ls_slow:?}");
    let events = events_since(env, m, 1)?;
    let want = Want {
        id: &nc.id,
        image: BUSYBOX,
        mode: "enforce",
        kind: expect::EXEC,
        pname: None,
        fields: vec![
            ("proc.exepath", "/bin/busybox".into()),
            ("vigil.exec.filename", "/bin/nc".into()),
        ],
    };
    one_event(&events, &want)?;
    ensure!(
        events.len() == 1,
        "exactly one event:\n{}",
        show_events(&events)
    );
    let _ = env.c.ctr(&["task", "delete", &nc.id])?;
    check::rc(&env.c.ctr(&["container", "rm", &nc.id])?, 0)?;

    // A missing entrypoint: same error and status as runc, no vigil event.
    let m = mark(env)?;
    let mut seen = Vec::new();
    for rt in Runtime::BOTH {
        let id = format!("v20m-{}", rt.label());
        let mut run = Run::new(rt, Image::Busybox, &id)
            .keep()
            .cmd(&["/hx-missing"]);
        if rt == Runtime::Vigil {
            run = run.flags(&["--annotation", "vigil.dev/mode=enforce"]);
        }
        let out = env.c.run(&run, hang(5))?;
        ensure!(!out.timed_out, "{}", out.describe());
        let text = out.stderr.replace(&id, "ID");
        let _ = env.c.ctr(&["task", "delete", &id])?;
        check::rc(&env.c.ctr(&["container", "rm", &id])?, 0)?;
        seen.push((out.rc, error_essence(&text)));
    }
    ensure!(
        seen[0] == seen[1],
        "missing entrypoint: runc {:?} vs vigil {:?}",
        seen[0],
        seen[1]
    );
    no_events_since(env, m, "V20 missing entrypoint")?;
    let clean = check::wait_until(hang(2), || env.c.leftovers().is_empty());
    ensure!(clean, "left behind: {:?}", env.c.leftovers());
    Ok(())
}

/// The part of a `ctr` error that names the cause (after the last "exec: " or the whole
/// text), without timestamps.
fn error_essence(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("ctr:"))
        .unwrap_or(stderr);
    let cause = line.rsplit("exec: ").next().unwrap_or(line);
    cause.trim().to_string()
}

/// An unknown annotation value refuses Create, naming key, value and allowed values; an
/// unknown key too; nothing starts.
fn annotation_bad_value(env: &Env) -> Result<()> {
    let m = mark(env)?;
    let bad = Run::new(Runtime::Vigil, Image::Busybox, &env.id("bogus"))
        .flags(&["--annotation", "vigil.dev/mode=bogus"])
        .cmd(&["true"]);
    let out = env.c.run(&bad, CTR)?;
    check::error_names(
        &out,
        &[
            "vigil.dev/mode",
            "bogus",
            "learn",
            "monitor",
            "enforce",
            "off",
        ],
    )?;
    let typo = Run::new(Runtime::Vigil, Image::Busybox, &env.id("typo"))
        .flags(&["--annotation", "vigil.dev/mdoe=learn"])
        .cmd(&["true"]);
    let out = env.c.run(&typo, CTR)?;
    check::error_names(&out, &["vigil.dev/mdoe"])?;
    for id in [&bad.id, &typo.id] {
        ensure!(
            env.c.task(id)?.is_none(),
            "task {id} exists after a refused Create"
        );
    }
    let clean = check::wait_until(hang(2), || env.c.leftovers().is_empty());
    ensure!(clean, "left behind: {:?}", env.c.leftovers());
    no_events_since(env, m, "refused annotations")
}

/// `fail_policy` closed (the default): enforce without a profile is refused, naming it.
fn fail_closed(env: &Env) -> Result<()> {
    let run = bb(env, "closed", "enforce").cmd(&["true"]);
    let out = env.c.run(&run, CTR)?;
    check::error_names(&out, &["profile", "enforce"])?;
    ensure!(
        env.c.task(&run.id)?.is_none(),
        "task exists after a refused Create"
    );
    let clean = check::wait_until(hang(2), || env.c.leftovers().is_empty());
    ensure!(clean, "left behind: {:?}", env.c.leftovers());
    Ok(())
}

/// `fail_policy = "open"`: enforce without a profile starts in learn and audits it.
fn fail_open(env: &Env) -> Result<()> {
    let m = mark(env)?;
    let run = bb(env, "open", "enforce").sh("cat /etc/hostname");
    let out = run_ok(env, &run)?;
    ensure!(out.stdout == "vigil-e2e\n", "{}", out.describe());
    let events = events_since(env, m, 1)?;
    let open: Vec<&Value> = events
        .iter()
        .filter(|e| e["rule"] == "vigil: fail-open start")
        .collect();
    ensure!(
        open.len() == 1,
        "want one fail-open event:\n{}",
        show_events(&events)
    );
    let ev = open[0];
    let checks = [
        ("container.id", run.id.as_str()),
        ("vigil.requested_mode", "enforce"),
        ("vigil.mode", "learn"),
        ("vigil.mechanism", "shim"),
    ];
    for (k, v) in checks {
        ensure!(
            field_str(ev, k) == v,
            "{k} = {} (want {v}): {ev}",
            super::field(ev, k)
        );
    }
    ensure!(
        field_str(ev, "vigil.reason").contains("profile"),
        "vigil.reason does not name the missing profile: {ev}"
    );
    ensure!(ev["priority"] == "Error", "priority: {ev}");
    // It learned: the image now has a profile with the workload's exec (sh runs the last
    // command of `-c` in its own place, so cat has no parent).
    super::wait_profile_change(env, BUSYBOX, None)?;
    let p = profile(env, BUSYBOX)?;
    super::want_exec(&p, "/bin/busybox", "cat", None)?;
    Ok(())
}
