//! Issue 3 (learn): what a learning container leaves in its image's profile, field cases V04,
//! V08, V09 and V12, two learners of one image at once, and a shim killed mid-learning.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use vigil_integration::Image;

use super::expect::{self, BUSYBOX, BUSYBOX_USR};
use super::{
    bb, entries, events_since, execs_of, field_str, finish, learn_run, mark, no_events_since,
    no_runtime_entries, one_event, profile, run_in, run_ok, short_entries, start_detached,
    wait_exit, want_exec, want_file, want_net, want_syscall, Want,
};
use crate::check::{self, hang, CTR};
use crate::runner::{Case, Env};

pub fn cases() -> Vec<Case> {
    vec![
        Case::vigil("guard/learn_busybox_script", learn_busybox_script),
        Case::vigil(
            "guard/learn_two_containers_merge",
            learn_two_containers_merge,
        ),
        Case::vigil("guard/learn_shim_sigkill_profile_valid", learn_shim_sigkill),
        Case::vigil("guard/v04_short_lived_children", v04),
        Case::vigil("guard/v08_restart_union_and_guard", v08),
        Case::vigil("guard/v09_exec_identity", v09)
            .with_images(&[Image::Busybox, Image::BusyboxUsr]),
        Case::vigil("guard/v12_runtime_steps_not_learned", v12),
    ]
}

/// The busybox script of issue 3: files, execs, sockets.
pub const SCRIPT: &str = "cat /etc/passwd >/dev/null; echo hello > /tmp/learn.txt; /bin/true; \
     nc -l -p 7070 >/dev/null & sleep 1; echo ping | nc -w1 127.0.0.1 7070; wait; echo done";

/// Learning the busybox script gives a profile with its execs, files, syscalls and sockets,
/// each with evidence, and nothing of runc's.
fn learn_busybox_script(env: &Env) -> Result<()> {
    let run = bb(env, "learn", "learn").sh(SCRIPT);
    let out = learn_run(env, &run, BUSYBOX)?;
    ensure!(out.stdout == "done\n", "script output: {}", out.describe());
    let p = profile(env, BUSYBOX)?;

    ensure!(p["schema"] == 1, "schema {}", p["schema"]);
    let digest = p["digest"].as_str().unwrap_or_default();
    ensure!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "digest {digest:?}"
    );
    ensure!(p["state"] == "learning", "state {}", p["state"]);
    ensure!(
        p["names"]
            .as_array()
            .is_some_and(|n| n.contains(&Value::from(BUSYBOX))),
        "names {}",
        p["names"]
    );
    ensure!(
        p["coverage"]["containers"] == 1,
        "coverage {}",
        p["coverage"]
    );
    let file = env
        .c
        .vigil_state_dir()
        .join("profiles")
        .join(format!("{}.json", &digest[7..]));
    ensure!(file.is_file(), "no profile file {}", file.display());
    let index = env.c.vigil_state_dir().join("profiles/index.json");
    let index: Value = serde_json::from_str(&std::fs::read_to_string(&index)?)?;
    ensure!(
        index["names"][BUSYBOX] == digest,
        "index.json does not map {BUSYBOX} to {digest}: {index}"
    );

    want_exec(&p, "/bin/busybox", "sh", Some(None))?;
    for program in ["cat", "nc", "sleep"] {
        want_exec(&p, "/bin/busybox", program, Some(Some("sh")))?;
    }
    let t = want_exec(&p, "/bin/busybox", "true", Some(Some("sh")))?;
    ensure!(
        t["invoked"] == "/bin/true",
        "true invoked as {}",
        t["invoked"]
    );
    want_file(&p, "/etc/passwd", &["read"])?;
    want_file(&p, "/tmp/learn.txt", &["create", "write"])?;
    for names in [
        &["execve"][..],
        &["openat", "open"],
        &["socket"],
        &["bind"],
        &["listen"],
        &["connect"],
        &["accept", "accept4"],
    ] {
        want_syscall(&p, names)?;
    }
    want_net(&p, &["connect"], Some("127.0.0.1"), 7070)?;
    want_net(&p, &["bind", "listen"], None, 7070)?;
    want_net(&p, &["accept"], None, 7070)?;
    no_runtime_entries(&p)
}

/// Two containers of one image learning at once make one merged profile.
fn learn_two_containers_merge(env: &Env) -> Result<()> {
    let a = bb(env, "merge-a", "learn")
        .detach()
        .flags(&["--null-io"])
        .sh("cat /etc/passwd >/dev/null; sleep 3");
    let b = bb(env, "merge-b", "learn")
        .detach()
        .flags(&["--null-io"])
        .sh("/hx-sys echo b >/dev/null; sleep 3");
    start_detached(env, &a)?;
    start_detached(env, &b)?;
    for run in [&a, &b] {
        env.c.wait_task_status(&run.id, "STOPPED", hang(5))?;
    }
    // Both Deletes (each a final flush under the store's lock) at the same time.
    let deletes: Vec<_> = [&a, &b]
        .iter()
        .map(|r| env.c.ctr_command(&["task", "delete", &r.id]))
        .map(|mut c| vigil_integration::cmd::spawn_background(&mut c))
        .collect::<Result<_>>()?;
    for d in deletes {
        check::rc(&d.wait(CTR)?, 0)?;
    }
    for run in [&a, &b] {
        check::rc(&env.c.ctr(&["container", "rm", &run.id])?, 0)?;
    }
    let merged = check::wait_until(hang(2), || {
        profile(env, BUSYBOX).is_ok_and(|p| p["coverage"]["containers"] == 2)
    });
    let p = profile(env, BUSYBOX)?;
    ensure!(merged, "coverage after two learners: {}", p["coverage"]);
    want_exec(&p, "/bin/busybox", "cat", Some(Some("sh")))?;
    want_exec(&p, "/hx-sys", "hx-sys", Some(Some("sh")))?;
    want_file(&p, "/etc/passwd", &["read"])?;
    // The last command of `sh -c` replaces the shell: sleep has no parent.
    let sleep = want_exec(&p, "/bin/busybox", "sleep", Some(None))?;
    ensure!(
        sleep["containers"] == 2,
        "sleep was run by both containers: {sleep}"
    );
    let dir = env.c.vigil_state_dir().join("profiles");
    let docs: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".json") && n != "index.json")
        .collect();
    ensure!(docs.len() == 1, "one image, one profile document: {docs:?}");
    Ok(())
}

/// A shim killed with SIGKILL while its container learns leaves a valid profile that still
/// holds what was learned before.
fn learn_shim_sigkill(env: &Env) -> Result<()> {
    let first = bb(env, "kill-first", "learn").sh("cat /etc/passwd >/dev/null");
    learn_run(env, &first, BUSYBOX)?;
    let run = bb(env, "kill-second", "learn")
        .detach()
        .flags(&["--null-io"])
        .sh("while true; do head -n1 /etc/hostname >/dev/null; sleep 0.2; done");
    start_detached(env, &run)?;
    std::thread::sleep(Duration::from_secs(4));
    let stopped = env.c.kill_shim(&run.id, hang(1), hang(5))?;
    ensure!(stopped, "task still running after its shim died");
    env.c.remove(&run.id);

    let dir = env.c.vigil_state_dir().join("profiles");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".json") {
            let text = std::fs::read_to_string(&path)?;
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("{} is torn: not JSON", path.display()))?;
        }
    }
    let p = profile(env, BUSYBOX)?;
    // `sh -c` runs its only command in its own place: cat has no parent.
    want_exec(&p, "/bin/busybox", "cat", Some(None))?;
    want_file(&p, "/etc/passwd", &["read"])?;
    Ok(())
}

/// V04: short-lived children and late one-off syscalls are not lost.
fn v04(env: &Env) -> Result<()> {
    let script = "for i in 1 2 3 4 5; do /bin/true; done; sync; ln -s /x /tmp/l; sleep 20; \
                  mkdir /tmp/late; exit 0";
    let m = mark(env)?;
    let long = bb(env, "v04l", "learn").sh(script);
    learn_run(env, &long, BUSYBOX)?;
    let p = profile(env, BUSYBOX)?;
    let t = want_exec(&p, "/bin/busybox", "true", Some(Some("sh")))?;
    ensure!(
        t["count"] == 5,
        "exec of /bin/true from sh, want count 5: {t}"
    );
    want_exec(&p, "/bin/busybox", "sleep", Some(Some("sh")))?;
    want_syscall(&p, &["sync"])?;
    want_syscall(&p, &["symlink", "symlinkat"])?;
    want_syscall(&p, &["mkdir", "mkdirat"])?;
    lost_zero_or_reported(env, &p, m)?;

    let short = bb(env, "v04s", "learn").cmd(&["/bin/true"]);
    learn_run(env, &short, BUSYBOX)?;
    let p = profile(env, BUSYBOX)?;
    want_exec(&p, "/bin/busybox", "true", Some(None))?;

    let m = mark(env)?;
    run_ok(env, &bb(env, "v04e", "enforce").sh(script))?;
    no_events_since(env, m, "V04 enforce rerun")
}

/// Lost events are 0 in the profile, or an audit event says how many.
fn lost_zero_or_reported(env: &Env, p: &Value, m: usize) -> Result<()> {
    let lost = &p["coverage"]["lost"];
    let total: u64 = ["syscalls", "execs", "files", "network"]
        .iter()
        .map(|k| lost[k].as_u64().unwrap_or(0))
        .sum();
    if total == 0 {
        return Ok(());
    }
    let events = events_since(env, m, 1)?;
    ensure!(
        events.iter().any(|e| e["rule"] == "vigil: lost events"),
        "profile says {total} events lost ({lost}) but no `vigil: lost events` event"
    );
    Ok(())
}

/// V08: the profile is the union of first start and restart; a restarted enforced task (new
/// cgroup) stays guarded.
fn v08(env: &Env) -> Result<()> {
    let w = "[ -f /data/init ] || { mkdir -p /data; touch /data/init; chown 1:1 /data/init; }; \
             cat /data/init; sleep 5";
    let learn = bb(env, "v08a", "learn")
        .detach()
        .flags(&["--null-io"])
        .sh(w);
    start_detached(env, &learn)?;
    ensure!(wait_exit(env, &learn.id, hang(5))? == 0, "v08a first run");
    restart(env, &learn.id)?;
    ensure!(wait_exit(env, &learn.id, hang(5))? == 0, "v08a restart");
    check::rc(&env.c.ctr(&["container", "rm", &learn.id])?, 0)?;
    let union = check::wait_until(hang(2), || {
        profile(env, BUSYBOX).is_ok_and(|p| {
            execs_of(&p, "/bin/busybox", "cat", Some(Some("sh")))
                .first()
                .is_some_and(|e| e["count"].as_u64() >= Some(2))
        })
    });
    let p = profile(env, BUSYBOX)?;
    ensure!(
        union,
        "cat ran in both runs; want its exec with count >= 2 (evidence from 2 runs): {}",
        short_entries(&p, "execs")
    );
    want_syscall(&p, &["mkdir", "mkdirat"])?;
    want_syscall(&p, &["chown", "fchownat", "lchown"])?;
    want_file(&p, "/data/init", &["read"])?;

    let m = mark(env)?;
    let enforce = bb(env, "v08b", "enforce")
        .detach()
        .flags(&["--null-io"])
        .sh(w);
    start_detached(env, &enforce)?;
    ensure!(wait_exit(env, &enforce.id, hang(5))? == 0, "v08b first run");
    no_events_since(env, m, "V08 enforced first start")?;
    restart(env, &enforce.id)?;
    env.c.wait_task_status(&enforce.id, "RUNNING", hang(2))?;
    let out = env
        .c
        .exec(&enforce.id, "x", &["nc", "-w1", "127.0.0.1", "9"], CTR)?;
    check::rc(&out, expect::KILLED_RC).context("nc exec into the restarted enforced task")?;
    ensure!(wait_exit(env, &enforce.id, hang(5))? == 0, "v08b restart");
    let events = events_since(env, m, 1)?;
    let want = Want {
        id: &enforce.id,
        image: BUSYBOX,
        mode: "enforce",
        kind: expect::EXEC,
        pname: None,
        fields: vec![("proc.name", "nc".into())],
    };
    one_event(&events, &want)?;
    ensure!(
        events.len() == 1,
        "only the nc exec deviates: {}",
        super::show_events(&events)
    );
    check::rc(&env.c.ctr(&["container", "rm", &enforce.id])?, 0)
}

/// `ctr task start -d --null-io ID` of a container whose task was deleted.
fn restart(env: &Env, id: &str) -> Result<()> {
    let fifo = env.c.fifo_dir();
    let fifo = fifo.to_string_lossy();
    check::rc(
        &env.c
            .ctr(&["task", "start", "-d", "--null-io", "--fifo-dir", &fifo, id])?,
        0,
    )
}

/// V09: exec identity in busybox images (applets, /proc/self/exe, /bin -> usr/bin).
fn v09(env: &Env) -> Result<()> {
    let learn = "cat /etc/passwd >/dev/null; /bin/cat /etc/hostname";
    learn_run(env, &bb(env, "v09l", "learn").sh(learn), BUSYBOX)?;
    let p = profile(env, BUSYBOX)?;
    let cats = execs_of(&p, "/bin/busybox", "cat", None);
    ensure!(
        !cats.is_empty() && cats.iter().all(|e| e["invoked"] == "/bin/cat"),
        "PROF lists cat as /bin/cat: {}",
        short_entries(&p, "execs")
    );
    no_runtime_entries(&p)?;

    let m = mark(env)?;
    let out = run_ok(env, &bb(env, "v09c", "enforce").sh(learn))?;
    ensure!(
        out.stdout == "vigil-e2e\n",
        "cat output: {}",
        out.describe()
    );
    no_events_since(env, m, "V09 enforce of the learned cats")?;

    let m = mark(env)?;
    let nc = "nc -w1 127.0.0.1 9 </dev/null; /bin/nc -w1 127.0.0.1 9 </dev/null; echo after";
    let run = bb(env, "v09n", "enforce").sh(nc);
    let out = run_ok(env, &run)?;
    ensure!(out.stdout.ends_with("after\n"), "{}", out.describe());
    let events = events_since(env, m, 2)?;
    let nc_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["rule"] == expect::EXEC.rule)
        .collect();
    ensure!(
        nc_events.len() == 2,
        "want two exec events (nc, /bin/nc): {}",
        super::show_events(&events)
    );
    let want = Want {
        id: &run.id,
        image: BUSYBOX,
        mode: "enforce",
        kind: expect::EXEC,
        pname: Some("sh"),
        fields: vec![
            ("proc.name", "nc".into()),
            ("proc.exepath", "/bin/busybox".into()),
            ("proc.cmdline", "nc -w1 127.0.0.1 9".into()),
        ],
    };
    for ev in &nc_events {
        want.check(ev)?;
    }
    let filenames: Vec<&str> = nc_events
        .iter()
        .map(|e| field_str(e, "vigil.exec.filename"))
        .collect();
    ensure!(
        filenames.contains(&"/bin/nc")
            && filenames
                .iter()
                .all(|f| *f == "/bin/nc" || *f == "/proc/self/exe"),
        "vigil.exec.filename of the two spellings: {filenames:?}"
    );

    // Image B: /bin -> usr/bin.
    let b = run_in(env, Image::BusyboxUsr, "v09bl", "learn").cmd(&["/bin/cat", "/etc/passwd"]);
    learn_run(env, &b, BUSYBOX_USR)?;
    let pb = profile(env, BUSYBOX_USR)?;
    let cat = want_exec(&pb, "/usr/bin/busybox", "cat", Some(None))?;
    ensure!(
        cat["invoked"] == "/bin/cat",
        "B: cat invoked as {}",
        cat["invoked"]
    );
    let m = mark(env)?;
    let out = run_ok(
        env,
        &run_in(env, Image::BusyboxUsr, "v09bc", "enforce").cmd(&["/usr/bin/cat", "/etc/passwd"]),
    )?;
    ensure!(out.stdout.starts_with("root:x:0:0"), "{}", out.describe());
    no_events_since(
        env,
        m,
        "V09 B: /usr/bin/cat under a profile learned as /bin/cat",
    )?;
    let m = mark(env)?;
    let nc_b = run_in(env, Image::BusyboxUsr, "v09bn", "enforce").cmd(&[
        "/usr/bin/nc",
        "-w1",
        "127.0.0.1",
        "9",
    ]);
    let out = env.c.run(&nc_b, CTR)?;
    check::rc(&out, expect::KILLED_RC).context("B: /usr/bin/nc as entrypoint")?;
    let events = events_since(env, m, 1)?;
    let want = Want {
        id: &nc_b.id,
        image: BUSYBOX_USR,
        mode: "enforce",
        kind: expect::EXEC,
        pname: None,
        fields: vec![
            ("proc.name", "nc".into()),
            ("proc.exepath", "/usr/bin/busybox".into()),
        ],
    };
    one_event(&events, &want)?;
    Ok(())
}

/// V12: runc's own steps (its re-exec, `runc exec`'s path) are neither learned nor flagged.
fn v12(env: &Env) -> Result<()> {
    let main = "cat /etc/passwd >/dev/null; sleep 120";
    let learn = bb(env, "v12l", "learn")
        .detach()
        .flags(&["--null-io"])
        .sh(main);
    start_detached(env, &learn)?;
    probes(env, &learn.id, 5)?;
    finish(env, &learn.id)?;
    let learned = check::wait_until(hang(2), || {
        profile(env, BUSYBOX).is_ok_and(|p| {
            entries(&p, "execs")
                .iter()
                .any(|e| e["program"] == "cat" && e["parent"].is_null())
        })
    });
    let p = profile(env, BUSYBOX)?;
    ensure!(
        learned,
        "the probes' execs were not learned: {}",
        short_entries(&p, "execs")
    );
    for (program, parent) in [("cat", None), ("sh", None), ("cat", Some("sh"))] {
        let e = want_exec(&p, "/bin/busybox", program, Some(parent))?;
        ensure!(
            e["count"].as_u64() >= Some(5) || parent.is_some(),
            "5 probes: {e}"
        );
    }
    let exec_origin = entries(&p, "execs").into_iter().any(|e| {
        e["program"] == "cat"
            && e["origins"]
                .as_array()
                .is_some_and(|o| o.contains(&Value::from("exec")))
    });
    ensure!(
        exec_origin,
        "probe execs carry origin exec: {}",
        short_entries(&p, "execs")
    );
    no_runtime_entries(&p)?;

    let m = mark(env)?;
    let enforce = bb(env, "v12e", "enforce")
        .detach()
        .flags(&["--null-io"])
        .sh(main);
    start_detached(env, &enforce)?;
    probes(env, &enforce.id, 20)?;
    finish(env, &enforce.id)?;
    no_events_since(env, m, "V12: 40 enforced probes")?;

    let m = mark(env)?;
    let monitor = bb(env, "v12m", "monitor")
        .detach()
        .flags(&["--null-io"])
        .sh(main);
    start_detached(env, &monitor)?;
    let out = env.c.exec(&monitor.id, "u", &["id", "-u"], CTR)?;
    check::rc_stdout(&out, 0, "0\n").context("monitor allows the unlearned id")?;
    let events = events_since(env, m, 1)?;
    finish(env, &monitor.id)?;
    ensure!(
        !events.is_empty(),
        "monitor: no event for the unlearned exec of id"
    );
    for ev in &events {
        ensure!(
            field_str(ev, "proc.name") == "id" || field_str(ev, "proc.exepath") == "/bin/id",
            "monitor event not about /bin/id: {ev}"
        );
        let text = ev.to_string();
        for bad in ["memfd:", "runc:[", "/run/containerd", "/proc/self/exe"] {
            ensure!(!text.contains(bad), "event names {bad}: {ev}");
        }
        ensure!(
            field_str(ev, "vigil.action") == "alerted",
            "monitor event not alerted: {ev}"
        );
    }
    Ok(())
}

/// `n` probes of each kind into a running container: `cat /etc/passwd` and `sh -c 'cat
/// /etc/passwd'`, each printing the file and exiting 0.
fn probes(env: &Env, id: &str, n: usize) -> Result<()> {
    for i in 0..n {
        for (k, args) in [
            ("p", &["cat", "/etc/passwd"][..]),
            ("s", &["sh", "-c", "cat /etc/passwd"][..]),
        ] {
            let out = env.c.exec(id, &format!("{k}{i}"), args, CTR)?;
            check::rc(&out, 0).with_context(|| format!("probe {k}{i}"))?;
            ensure!(
                out.stdout.starts_with("root:x:0:0"),
                "probe {k}{i}: {}",
                out.describe()
            );
        }
    }
    Ok(())
}
