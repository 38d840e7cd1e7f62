//! Conformance: each case runs with io.containerd.runc.v2 and io.containerd.vigil.v2 and the
//! observable results must be equal (and right).

use std::time::Duration;

use std::io::Write;

use anyhow::{ensure, Context, Result};
use vigil_integration::cmd::{self, Background, Output};
use vigil_integration::events::Events;

use crate::check::{self, hang, CTR};
use crate::runner::{Case, Env, Observed};

/// The conformance cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case::compare("conformance/output_and_exit_codes", output_and_exit_codes),
        Case::compare("conformance/init_signals", init_signals),
        Case::compare("conformance/exec_signals", exec_signals),
        Case::compare("conformance/exec_plain_and_tty", exec_plain_and_tty),
        Case::compare("conformance/run_tty", run_tty),
        Case::compare("conformance/stdin_piping", stdin_piping),
        Case::compare("conformance/pids", pids),
        Case::compare("conformance/pause_resume", pause_resume),
        Case::compare("conformance/sigterm_ignored", sigterm_ignored),
        Case::compare("conformance/many_containers", many_containers),
        Case::compare("conformance/exit_before_start", exit_before_start),
        Case::compare("conformance/containerd_restart", containerd_restart),
        Case::vigil("conformance/default_mode_lifecycle", default_mode_lifecycle)
            .with_vigil_config(""),
    ]
}

fn put(obs: &mut Observed, key: &str, value: impl ToString) {
    obs.insert(key.to_string(), value.to_string());
}

/// stdout, stderr and exit codes of short containers, including a 100 KiB output.
fn output_and_exit_codes(env: &Env) -> Result<Observed> {
    let mut obs = Observed::new();
    let runs = [
        ("ok", "echo hello; echo oops >&2", 0, "hello\n"),
        ("three", "echo three; exit 3", 3, "three\n"),
        ("max", "exit 255", 255, ""),
        ("false", "false", 1, ""),
    ];
    for (base, script, code, stdout) in runs {
        let out = env.c.run(&env.run(base).sh(script), CTR)?;
        check::rc_stdout(&out, code, stdout)?;
        put(&mut obs, &format!("{base}.rc"), out.rc);
        put(&mut obs, &format!("{base}.stdout"), &out.stdout);
        put(&mut obs, &format!("{base}.stderr"), &out.stderr);
    }
    let out = env.c.run(&env.run("big").sh("seq 1 20000"), CTR)?;
    check::rc(&out, 0)?;
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    ensure!(
        out.stdout == expected,
        "seq 1 20000 lost output: got {} bytes",
        out.stdout.len()
    );
    put(&mut obs, "big.bytes", out.stdout.len());
    Ok(obs)
}

const SIGNALS: [(&str, i32); 3] = [("TERM", 15), ("INT", 2), ("HUP", 1)];

/// The init process ends by a trapped TERM/INT/HUP (exit 128+N) and by SIGKILL (137).
fn init_signals(env: &Env) -> Result<Observed> {
    let mut obs = Observed::new();
    for (name, num) in SIGNALS {
        let script = format!(
            "trap 'exit {}' {name}; while :; do sleep 0.1; done",
            128 + num
        );
        let run = env.run(&format!("sig{}", name.to_lowercase())).sh(&script);
        let bg = env.c.run_background(&run)?;
        let task = env.c.wait_task_status(&run.id, "RUNNING", hang(2))?;
        let trapped =
            check::wait_until(hang(1), || check::signal_disposition(task.pid, num, false));
        ensure!(trapped, "{} never installed its {name} trap", run.id);
        env.kill(&run.id, &format!("SIG{name}"), None)?;
        let out = bg.wait(hang(2))?;
        check::rc(&out, 128 + num)?;
        put(&mut obs, &format!("SIG{name}.rc"), out.rc);
    }
    let run = env.run("sigkill").cmd(&["sleep", "600"]);
    let bg = env.c.run_background(&run)?;
    env.c.wait_task_status(&run.id, "RUNNING", hang(2))?;
    env.kill(&run.id, "SIGKILL", None)?;
    let out = bg.wait(hang(2))?;
    check::rc(&out, 137)?;
    put(&mut obs, "SIGKILL.rc", out.rc);
    Ok(obs)
}

/// Exec'd processes killed by TERM/INT/HUP/KILL report 128+N through `ctr task exec`.
fn exec_signals(env: &Env) -> Result<Observed> {
    let mut obs = Observed::new();
    let task = env.start_detached("execsig", "sleep 600")?;
    let all = SIGNALS.iter().copied().chain([("KILL", 9)]);
    for (name, num) in all {
        let exec_id = format!("s-{}", name.to_lowercase());
        let cmd = env
            .c
            .exec_command(&task.id, &exec_id, &[], &["sleep", "600"]);
        let bg = cmd::spawn_background(&mut { cmd })?;
        let started = check::wait_until(hang(2), || env.ps(&task.id).is_ok_and(|p| p.len() == 2));
        ensure!(started, "exec {exec_id} never showed up in ctr task ps");
        env.kill(&task.id, &format!("SIG{name}"), Some(&exec_id))?;
        let out = bg.wait(hang(2))?;
        check::rc(&out, 128 + num)?;
        put(&mut obs, &format!("exec SIG{name}.rc"), out.rc);
    }
    Ok(obs)
}

/// `ctr task exec` with and without a TTY: output and exit codes.
fn exec_plain_and_tty(env: &Env) -> Result<Observed> {
    let mut obs = Observed::new();
    let task = env.start_detached("exec", "sleep 600")?;
    let script = "echo out; echo err >&2; exit 7";
    let out = env.c.exec(&task.id, "plain", &["sh", "-c", script], CTR)?;
    check::rc_stdout(&out, 7, "out\n")?;
    ensure!(out.stderr == "err\n", "exec stderr: {}", out.describe());
    put(&mut obs, "plain.rc", out.rc);
    put(&mut obs, "plain.stderr", &out.stderr);

    let out = env.c.exec(&task.id, "true", &["true"], CTR)?;
    check::rc_stdout(&out, 0, "")?;

    let args = ["sh", "-c", "tty; echo in-tty; exit 5"];
    let mut tty = env.c.exec_command(&task.id, "tty", &["-t"], &args);
    let line = cmd::cmdline_of(&tty);
    tty = std::process::Command::new("script");
    tty.args(["-qfec", &line, "/dev/null"]);
    let out = cmd::run(&mut tty, None, CTR)?;
    check::rc(&out, 5)?;
    let text = check::normalize_tty(&out.stdout);
    ensure!(
        text.contains("/dev/pts/N\nin-tty"),
        "exec -t output: {}",
        out.describe()
    );
    put(&mut obs, "tty.rc", out.rc);
    put(&mut obs, "tty.stdout", text);
    Ok(obs)
}

/// `ctr run -t` under a pseudo-terminal: the container sees a pts and its exit code comes back.
fn run_tty(env: &Env) -> Result<Observed> {
    let run = env.run("runtty").flags(&["-t"]).sh("tty; exit 5");
    let out = env.c.run_tty(&run, CTR)?;
    check::rc(&out, 5)?;
    let text = check::normalize_tty(&out.stdout);
    ensure!(
        text.contains("/dev/pts/N"),
        "ctr run -t printed no pts: {}",
        out.describe()
    );
    let mut obs = Observed::new();
    put(&mut obs, "rc", out.rc);
    put(&mut obs, "stdout", text);
    Ok(obs)
}

/// stdin piped to `ctr run` and to `ctr task exec`, closed at EOF. The input is written once
/// the task runs: ctr's CloseIO at EOF is lost when EOF comes before the task exists (a ctr
/// race, the same with both runtimes; see docs/testing.md).
fn stdin_piping(env: &Env) -> Result<Observed> {
    let mut obs = Observed::new();
    let run = env
        .run("stdin")
        .sh("read x; echo got $x; cat; echo catdone");
    let args = run.ctr_args(&env.c);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bg = cmd::spawn_background_piped(&mut env.c.ctr_command(&args))?;
    let out = feed_when_running(env, &run.id, bg, b"line1\nrest1\nrest2\n")?;
    check::rc_stdout(&out, 0, "got line1\nrest1\nrest2\ncatdone\n")?;
    put(&mut obs, "run.stdout", &out.stdout);

    let task = env.start_detached("stdinexec", "sleep 600")?;
    let input = vec![b'x'; 200_000];
    let cmd = env.c.exec_command(&task.id, "wc", &[], &["wc", "-c"]);
    let bg = cmd::spawn_background_piped(&mut { cmd })?;
    let exec_running = || env.ps(&task.id).is_ok_and(|p| p.len() == 2);
    ensure!(
        check::wait_until(hang(2), exec_running),
        "exec wc never started"
    );
    let out = feed(bg, &input)?;
    check::rc(&out, 0)?;
    ensure!(
        out.stdout.trim() == "200000",
        "exec wc -c: {}",
        out.describe()
    );
    put(&mut obs, "exec.stdout", out.stdout.trim());
    Ok(obs)
}

fn feed_when_running(env: &Env, id: &str, bg: Background, input: &[u8]) -> Result<Output> {
    env.c.wait_task_status(id, "RUNNING", hang(2))?;
    feed(bg, input)
}

fn feed(mut bg: Background, input: &[u8]) -> Result<Output> {
    let mut stdin = bg.stdin().context("no stdin pipe")?;
    stdin
        .write_all(input)
        .context("write the container's stdin")?;
    drop(stdin);
    bg.wait(CTR)
}

/// `ctr task ps` lists exactly the processes in the container's cgroup.
fn pids(env: &Env) -> Result<Observed> {
    let task = env.start_detached("pids", "sleep 600 & sleep 600 & wait")?;
    let three = check::wait_until(hang(2), || env.ps(&task.id).is_ok_and(|p| p.len() == 3));
    let mut listed = env.ps(&task.id)?;
    ensure!(three, "ctr task ps never listed 3 processes: {listed:?}");
    let cg = vigil_integration::prereq::cgroup2_mount().context("cgroup2 mount")?;
    let procs_file = cg
        .join(env.c.namespace())
        .join(&task.id)
        .join("cgroup.procs");
    let text = std::fs::read_to_string(&procs_file)
        .with_context(|| format!("read {}", procs_file.display()))?;
    let mut in_cgroup: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
    listed.sort_unstable();
    in_cgroup.sort_unstable();
    ensure!(
        listed == in_cgroup,
        "ps {listed:?} != cgroup.procs {in_cgroup:?}"
    );
    ensure!(
        listed.contains(&task.pid),
        "ps does not list the init pid {}",
        task.pid
    );
    let mut obs = Observed::new();
    put(&mut obs, "count", listed.len());
    Ok(obs)
}

/// Pause freezes the container (counter stops, status PAUSED, event); resume thaws it.
fn pause_resume(env: &Env) -> Result<Observed> {
    let mut obs = Observed::new();
    let events = Events::follow(&env.c)?;
    let script = "i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.05; done";
    let task = env.start_detached("pause", script)?;
    let counter = format!("/proc/{}/root/tmp/c", task.pid);
    let read = || std::fs::read_to_string(&counter).unwrap_or_default();
    ensure!(
        check::wait_until(hang(2), || !read().is_empty()),
        "counter never written"
    );

    check::rc(&env.c.ctr(&["task", "pause", &task.id])?, 0)?;
    let paused = env.c.wait_task_status(&task.id, "PAUSED", hang(2))?;
    let (a, b) = (read(), {
        std::thread::sleep(Duration::from_millis(500));
        read()
    });
    ensure!(a == b, "counter moved while paused: {a:?} -> {b:?}");
    put(&mut obs, "paused.status", &paused.status);

    check::rc(&env.c.ctr(&["task", "resume", &task.id])?, 0)?;
    let resumed = env.c.wait_task_status(&task.id, "RUNNING", hang(2))?;
    let moved = check::wait_until(hang(2), || read() != b);
    ensure!(moved, "counter did not move after resume");
    put(&mut obs, "resumed.status", &resumed.status);
    for topic in ["/tasks/paused", "/tasks/resumed"] {
        let seen = events.wait(topic, &task.id, hang(2)).is_some();
        ensure!(seen, "no {topic} event for {}", task.id);
        put(&mut obs, topic, seen);
    }
    Ok(obs)
}

/// A process ignoring SIGTERM survives `ctr task kill` and dies by SIGKILL (137).
fn sigterm_ignored(env: &Env) -> Result<Observed> {
    let run = env
        .run("noterm")
        .sh("trap '' TERM; while :; do sleep 0.1; done");
    let bg = env.c.run_background(&run)?;
    let task = env.c.wait_task_status(&run.id, "RUNNING", hang(2))?;
    let ignoring = check::wait_until(hang(1), || check::signal_disposition(task.pid, 15, true));
    ensure!(ignoring, "{} never set TERM to ignored", run.id);
    check::rc(&env.c.ctr(&["task", "kill", &run.id])?, 0)?;
    std::thread::sleep(Duration::from_secs(2));
    let after_term = env.c.task(&run.id)?.map(|t| t.status).unwrap_or_default();
    ensure!(
        after_term == "RUNNING",
        "after SIGTERM the task is {after_term}, not RUNNING"
    );
    env.kill(&run.id, "SIGKILL", None)?;
    let out = bg.wait(hang(2))?;
    check::rc(&out, 137)?;
    let mut obs = Observed::new();
    put(&mut obs, "after_term", after_term);
    put(&mut obs, "rc", out.rc);
    Ok(obs)
}

/// Ten containers run at once, each with its own output and exit code.
fn many_containers(env: &Env) -> Result<Observed> {
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                s.spawn(move || {
                    let run = env
                        .run(&format!("many{i}"))
                        .sh(&format!("echo c{i}; sleep 1; exit {i}"));
                    let out = env.c.run(&run, hang(10))?;
                    check::rc_stdout(&out, i, &format!("c{i}\n"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err())
        .map(|e| format!("{e:#}"))
        .collect();
    ensure!(
        failures.is_empty(),
        "{} of 10 failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let mut obs = Observed::new();
    put(&mut obs, "all", "10 ok");
    Ok(obs)
}

/// A static program that exits at once (before Start can return) still reports its code.
fn exit_before_start(env: &Env) -> Result<Observed> {
    let mut obs = Observed::new();
    for i in 0..10 {
        let out = env.c.run(
            &env.run(&format!("quick{i}")).cmd(&["/hx-exit", "7"]),
            hang(3),
        )?;
        check::rc_stdout(&out, 7, "")?;
    }
    put(&mut obs, "rm.rc", 7);
    let run = env
        .run("quickd")
        .detach()
        .flags(&["--null-io"])
        .cmd(&["/hx-exit", "3"]);
    check::rc(&env.c.run(&run, CTR)?, 0)?;
    let stopped = env.c.wait_task_status(&run.id, "STOPPED", hang(3))?;
    let status = env.delete_status(&run.id)?;
    ensure!(
        status == 3,
        "ctr task delete reported exit status {status}, not 3"
    );
    put(&mut obs, "detached.status", stopped.status);
    put(&mut obs, "detached.delete_status", status);
    Ok(obs)
}

const WAIT_STOP: &str = "while [ ! -f /tmp/stop ]; do sleep 0.1; done; exit";

fn stop_file(pid: i32) -> Result<()> {
    let path = format!("/proc/{pid}/root/tmp/stop");
    std::fs::write(&path, b"").with_context(|| format!("write {path}"))
}

/// containerd restarts while containers run: they keep running and stay reachable; an exit
/// while containerd was down and one after it came back are both reported.
fn containerd_restart(env: &Env) -> Result<Observed> {
    let mut obs = Observed::new();
    let c1 = env.start_detached("keep", &format!("{WAIT_STOP} 4"))?;
    let c2 = env.start_detached("gone", &format!("{WAIT_STOP} 5"))?;
    env.c.stop()?;
    ensure!(
        vigil_integration::procs::alive(c1.pid),
        "{} died with containerd",
        c1.id
    );
    ensure!(
        vigil_integration::procs::alive(c2.pid),
        "{} died with containerd",
        c2.id
    );
    stop_file(c2.pid)?;
    let gone = vigil_integration::procs::wait_gone(&[c2.pid], hang(2)).is_empty();
    ensure!(gone, "{} did not exit while containerd was down", c2.id);
    env.c.launch()?;

    let events = Events::follow(&env.c)?;
    let again = env
        .c
        .task(&c1.id)?
        .context("running task lost after restart")?;
    ensure!(
        again.pid == c1.pid && again.status == "RUNNING",
        "after restart: {again:?}"
    );
    put(&mut obs, "kept.status", &again.status);
    let out = env.c.exec(&c1.id, "hi", &["echo", "hi"], CTR)?;
    check::rc_stdout(&out, 0, "hi\n")?;

    let down = env.c.wait_task_status(&c2.id, "STOPPED", hang(2))?;
    put(&mut obs, "exited_while_down.status", &down.status);
    let status = env.delete_status(&c2.id)?;
    ensure!(
        status == 5,
        "ctr task delete {} reported exit status {status}, not 5",
        c2.id
    );
    put(&mut obs, "exited_while_down.delete_status", status);

    stop_file(c1.pid)?;
    let exit = events
        .wait("/tasks/exit", &c1.id, hang(2))
        .context("no /tasks/exit for c1")?;
    put(&mut obs, "exit_event.status", &exit.body["exit_status"]);
    env.c.wait_task_status(&c1.id, "STOPPED", hang(2))?;
    let status = env.delete_status(&c1.id)?;
    ensure!(
        status == 4,
        "ctr task delete {} reported exit status {status}, not 4",
        c1.id
    );
    Ok(obs)
}

/// With the node's default mode (no `default_mode`, no annotation: learn while the image has
/// no profile) a container still runs, prints, execs and exits as in `off`.
fn default_mode_lifecycle(env: &Env) -> Result<()> {
    let out = env.c.run(&env.run("dflt").sh("echo hello; exit 3"), CTR)?;
    check::rc_stdout(&out, 3, "hello\n")?;
    let task = env.start_detached("dfltexec", "sleep 600")?;
    let out = env
        .c
        .exec(&task.id, "e", &["sh", "-c", "echo in-exec; exit 4"], CTR)?;
    check::rc_stdout(&out, 4, "in-exec\n")?;
    env.kill(&task.id, "SIGKILL", None)?;
    env.c.wait_task_status(&task.id, "STOPPED", hang(2))?;
    ensure!(
        env.delete_status(&task.id)? == 137,
        "delete did not report 137"
    );
    check::rc(&env.c.ctr(&["container", "rm", &task.id])?, 0)?;
    let clean = check::wait_until(hang(2), || env.c.leftovers().is_empty());
    ensure!(clean, "left behind: {:?}", env.c.leftovers());
    Ok(())
}
