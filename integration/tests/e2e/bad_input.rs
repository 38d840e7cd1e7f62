//! Bad input (issue 2): a spec runc cannot use, a rootfs that is not there, a runc binary
//! that is missing or fails, a bad vigil config file, an exec of a missing program. Each must
//! give `ctr` an error that names what is wrong and leave no process, mount, cgroup, fifo or
//! runc state behind. A malformed or missing `config.json` cannot be produced through
//! containerd (it writes the bundle itself); the shim's own tests cover those
//! (`shim/src/service/bundle.rs`, `bad_bundles_name_the_file`).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use vigil_integration::{prereq, procs, Runtime};

use crate::check::{self, hang, CTR};
use crate::runner::{Case, Env};

/// The bad-input cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case::each("bad_input/spec_without_process", spec_without_process),
        Case::each("bad_input/rootfs_missing", rootfs_missing),
        Case::each("bad_input/runc_missing", runc_missing),
        Case::each("bad_input/runc_fails", runc_fails),
        Case::each("bad_input/exec_missing_program", exec_missing_program),
        Case::vigil(
            "bad_input/vigil_config_unknown_key",
            vigil_config_unknown_key,
        )
        .with_vigil_config("runc_bin = \"/usr/sbin/runc\""),
        Case::vigil("bad_input/vigil_config_bad_value", vigil_config_bad_value)
            .with_vigil_config("fail_policy = \"sometimes\""),
        Case::vigil(
            "bad_input/vigil_config_path_missing",
            vigil_config_path_missing,
        ),
    ]
}

/// Waits until nothing of a refused container is left (containerd tells a failed shim to
/// clean up and exit; give it the field cases' five-fold deadline).
fn nothing_left(env: &Env, what: &str) -> Result<()> {
    let clean = check::wait_until(hang(2), || env.c.leftovers().is_empty());
    ensure!(clean, "{what} left behind: {:?}", env.c.leftovers());
    Ok(())
}

/// Runs `args` (a `ctr run` that must fail), checks the error names every needle, removes
/// the container record and checks nothing is left.
fn refused(env: &Env, id: &str, args: &[String], needles: &[&str]) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.c.ctr_timeout(&args, CTR)?;
    check::error_names(&out, needles)?;
    println!(
        "    note [{}]: {}",
        env.rt.label(),
        out.stderr.lines().last().unwrap_or("").trim()
    );
    let _ = env.c.ctr(&["container", "rm", id]);
    nothing_left(env, &format!("refused container {id}"))
}

/// `ctr run` arguments for `env`'s runtime, before the image/rootfs and id.
fn run_args(env: &Env, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--rm", "--null-io", "--runtime"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(env.rt.runtime_type().into());
    args.push("--fifo-dir".into());
    args.push(env.c.fifo_dir().to_string_lossy().into_owned());
    if env.rt == Runtime::Runc {
        args.push("--runc-root".into());
        args.push(env.c.runc_root().to_string_lossy().into_owned());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A tiny rootfs folder with busybox as /bin/sh, for `--rootfs` and `--config` runs.
fn rootfs_dir(env: &Env) -> Result<PathBuf> {
    let root = env.c.dir().join("plain-rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    for dir in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    let sh = root.join("bin/sh");
    if !sh.exists() {
        std::fs::copy("/bin/busybox", &sh).context("copy /bin/busybox (busybox-static)")?;
    }
    Ok(root)
}

/// A spec without `process` (containerd writes it into config.json as given): runc refuses it.
fn spec_without_process(env: &Env) -> Result<()> {
    let out = env.c.ctr(&["oci", "spec"])?.ok()?;
    let mut spec: serde_json::Value = serde_json::from_str(&out.stdout).context("ctr oci spec")?;
    let root = rootfs_dir(env)?;
    spec["root"] = serde_json::json!({ "path": root, "readonly": false });
    spec["linux"]["cgroupsPath"] =
        format!("/{}/noproc-{}", env.c.namespace(), env.rt.label()).into();
    spec.as_object_mut()
        .context("spec object")?
        .remove("process");
    let file = env.c.dir().join("noproc.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&spec)?)?;
    let id = env.id("noproc");
    let mut args = run_args(env, &["--config", &file.to_string_lossy()]);
    args.push(id.clone());
    refused(env, &id, &args, &["process"])
}

/// `--rootfs` pointing at a folder that does not exist: the error names the folder.
fn rootfs_missing(env: &Env) -> Result<()> {
    let missing = env.c.dir().join("no-such-rootfs");
    let id = env.id("norootfs");
    let mut args = run_args(env, &["--rootfs"]);
    args.extend([
        missing.to_string_lossy().into_owned(),
        id.clone(),
        "sh".into(),
    ]);
    refused(env, &id, &args, &["no-such-rootfs"])
}

/// The runc binary of the runtime (`--runc-binary` for the Go shim, `runc_binary` in vigil's
/// config file named with `--runtime-config-path` for vigil).
fn with_runc_binary(env: &Env, binary: &Path) -> Result<Vec<String>> {
    let binary = binary.to_string_lossy().into_owned();
    Ok(match env.rt {
        Runtime::Runc => run_args(env, &["--runc-binary", &binary]),
        Runtime::Vigil => {
            let base = std::fs::read_to_string(env.c.vigil_config_path())?;
            let file = env.c.dir().join("vigil-runc.toml");
            std::fs::write(&file, format!("{base}runc_binary = \"{binary}\"\n"))?;
            run_args(env, &["--runtime-config-path", &file.to_string_lossy()])
        }
    })
}

fn busybox_run(mut args: Vec<String>, id: &str, cmd: &[&str]) -> Vec<String> {
    args.push(vigil_integration::Image::Busybox.name().into());
    args.push(id.into());
    args.extend(cmd.iter().map(|s| s.to_string()));
    args
}

/// A runc binary that does not exist: the error names its path.
fn runc_missing(env: &Env) -> Result<()> {
    let missing = env.c.dir().join("no-such-runc");
    let id = env.id("norunc");
    let args = busybox_run(with_runc_binary(env, &missing)?, &id, &["true"]);
    refused(env, &id, &args, &["no-such-runc"])
}

/// A runc that fails `create` (every other command goes to the real runc, so cleanup
/// works): the error carries runc's message.
fn runc_fails(env: &Env) -> Result<()> {
    let real = prereq::which("runc").context("runc on PATH")?;
    let script = env.c.dir().join("runc-broken");
    let text = format!(
        r#"#!/bin/sh
# A runc whose create fails with a message on stderr and in its --log file.
msg='runc-broken: simulated create failure'
for a in "$@"; do
  if [ "$a" = create ] || [ "$a" = run ]; then
    prev=
    for b in "$@"; do
      [ "$prev" = --log ] && printf '{{"level":"error","msg":"%s"}}\n' "$msg" >> "$b"
      prev=$b
    done
    echo "$msg" >&2
    exit 1
  fi
done
exec {real} "$@"
"#,
        real = real.display()
    );
    std::fs::write(&script, text)?;
    let mut perms = std::fs::metadata(&script)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms)?;
    let id = env.id("brokenrunc");
    let args = busybox_run(with_runc_binary(env, &script)?, &id, &["true"]);
    refused(env, &id, &args, &["simulated create failure"])
}

/// `ctr task exec` of a program that is not in the image: an error naming it, the same exit
/// code as the reference, the task unharmed, no fifo or process left by the failed exec.
fn exec_missing_program(env: &Env) -> Result<()> {
    let task = env.start_detached("execmissing", "sleep 600")?;
    let shim = env.c.shim_pid(&task.id)?;
    let fds = procs::fd_count(shim)?;
    let fifos = env.c.leftovers().fifos;
    let out = env.c.exec(&task.id, "missing", &["/no/such/prog"], CTR)?;
    check::error_names(&out, &["/no/such/prog", "no such file"])?;
    println!(
        "    note [{}]: rc {}: {}",
        env.rt.label(),
        out.rc,
        out.stderr.trim()
    );
    let still = env
        .c
        .task(&task.id)?
        .context("task gone after a failed exec")?;
    ensure!(
        still.status == "RUNNING",
        "task is {} after a failed exec",
        still.status
    );
    ensure!(
        env.ps(&task.id)?.len() == 1,
        "processes left: {:?}",
        env.ps(&task.id)?
    );
    let settled = check::wait_until(hang(1), || procs::fd_count(shim).is_ok_and(|n| n <= fds));
    ensure!(
        settled,
        "shim {shim} holds {} fds, {fds} before the failed exec",
        procs::fd_count(shim)?
    );
    let now = env.c.leftovers().fifos;
    ensure!(
        now == fifos,
        "fifos {fifos:?} before the failed exec, {now:?} after"
    );
    // The same exec id can be used again once the failed one is gone.
    let out = env.c.exec(&task.id, "missing", &["echo", "again"], CTR)?;
    check::rc_stdout(&out, 0, "again\n")?;
    env.c.remove(&task.id);
    nothing_left(env, "the task after the failed exec")
}

fn vigil_refuses_with(env: &Env, base: &str, extra: &[&str], needles: &[&str]) -> Result<()> {
    let id = env.id(base);
    let args = busybox_run(run_args(env, extra), &id, &["true"]);
    refused(env, &id, &args, needles)
}

/// An unknown key in vigil's config: the error names the file and the key.
fn vigil_config_unknown_key(env: &Env) -> Result<()> {
    let file = env.c.vigil_config_path();
    vigil_refuses_with(env, "badkey", &[], &[&file.to_string_lossy(), "runc_bin"])
}

/// A value outside what a key allows: the error names the file, the key's value and what is
/// allowed.
fn vigil_config_bad_value(env: &Env) -> Result<()> {
    let file = env.c.vigil_config_path();
    vigil_refuses_with(
        env,
        "badvalue",
        &[],
        &[&file.to_string_lossy(), "sometimes", "closed"],
    )
}

/// `ConfigPath` naming a file that does not exist: the error names it.
fn vigil_config_path_missing(env: &Env) -> Result<()> {
    let missing = env.c.dir().join("no-such-vigil.toml");
    let missing = missing.to_string_lossy();
    vigil_refuses_with(
        env,
        "nocfg",
        &["--runtime-config-path", &missing],
        &["no-such-vigil.toml"],
    )
}
