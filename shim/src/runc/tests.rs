use std::os::unix::fs::PermissionsExt;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::errors::{last_error_in, last_line};
use super::*;

/// A fake runc: records its arguments, prints what the test asks, exits as asked.
fn fake_runc(dir: &Path, body: &str) -> Runc {
    let bin = dir.join("runc");
    let script = format!("#!/bin/sh\necho \"$@\" >> {}/args\n{body}\n", dir.display());
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    Runc::new(bin, dir.join("root"), false, Arc::new(DirectSpawner))
}

fn args(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("args")).unwrap()
}

#[tokio::test]
async fn ps_parses_pids_and_passes_global_flags() {
    let dir = tempfile::tempdir().unwrap();
    let runc = fake_runc(dir.path(), "echo '[12,34]'");
    assert_eq!(runc.ps("c1").await.unwrap(), vec![12, 34]);
    let root = dir.path().join("root");
    assert_eq!(
        args(dir.path()).trim(),
        format!("--root {} ps --format json c1", root.display())
    );
}

#[tokio::test]
async fn ps_of_an_empty_container_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let runc = fake_runc(dir.path(), "echo null");
    assert!(runc.ps("c1").await.unwrap().is_empty());
}

#[tokio::test]
async fn failure_carries_runcs_last_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let body = "echo 'time=\"x\" level=error msg=\"container not running\"' >&2\n\
                echo 'container not running' >&2; exit 1";
    let runc = fake_runc(dir.path(), body);
    let err = runc.kill("c1", 9, true).await.unwrap_err();
    assert_eq!(err.to_string(), "container not running");
    assert!(err.is_not_found());
    assert!(args(dir.path()).contains("kill --all c1 9"));
}

#[tokio::test]
async fn silent_failure_names_verb_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let runc = fake_runc(dir.path(), "exit 3");
    let err = runc.pause("c1").await.unwrap_err();
    assert_eq!(err.to_string(), "runc pause exited with status 3");
    assert!(!err.is_not_found());
}

#[tokio::test]
async fn create_failure_reads_the_json_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.json");
    let body = format!(
        "echo '{{\"level\":\"error\",\"msg\":\"rootfs missing\",\"time\":\"t\"}}' >> {}\nexit 1",
        log.display()
    );
    let runc = fake_runc(dir.path(), &body);
    let pid_file = dir.path().join("init.pid");
    let opts = LaunchOpts {
        pid_file: &pid_file,
        console_socket: None,
        log: &log,
    };
    let err = runc
        .create("c1", dir.path(), &opts, ProcessStdio::default())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "rootfs missing");
    assert!(args(dir.path()).contains("create --bundle"));
}

#[tokio::test]
async fn missing_binary_says_what_to_set() {
    let runc = Runc::new(
        "/nonexistent/runc".into(),
        "/tmp".into(),
        true,
        Arc::new(DirectSpawner),
    );
    let err = runc.start("c1").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/runc") && msg.contains("runc_binary"),
        "{msg}"
    );
}

#[test]
fn systemd_paths_are_recognised() {
    assert!(is_systemd_cgroup_path(
        "kubepods-besteffort.slice:cri-containerd:abc"
    ));
    assert!(is_systemd_cgroup_path("system.slice:vigil:c1"));
    assert!(!is_systemd_cgroup_path("/default/c1"));
    assert!(!is_systemd_cgroup_path("/a:b:c"));
    assert!(!is_systemd_cgroup_path(""));
}

#[test]
fn log_parsing_takes_the_last_error() {
    let text = "{\"level\":\"error\",\"msg\":\"first\"}\nnot json\n\
                {\"level\":\"error\",\"msg\":\"second\"}\n{\"level\":\"debug\",\"msg\":\"x\"}\n";
    assert_eq!(last_error_in(text).as_deref(), Some("second"));
    assert_eq!(last_error_in("").as_deref(), None);
    assert_eq!(last_line(b"\n  \n").as_deref(), None);
    assert_eq!(
        last_line(b"a\nplain error\n\n").as_deref(),
        Some("plain error")
    );
}

#[test]
fn exit_codes_follow_containerd() {
    let pid = Pid::from_raw(7);
    assert_eq!(exit_code(WaitStatus::Exited(pid, 4)), Some((7, 4)));
    assert_eq!(
        exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
        Some((7, 137))
    );
    assert_eq!(
        exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
        Some((7, 143))
    );
    assert_eq!(exit_code(WaitStatus::StillAlive), None);
}

#[tokio::test]
async fn pid_files_must_hold_a_pid() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p");
    std::fs::write(&f, "1234").unwrap();
    assert_eq!(read_pid_file(&f).await.unwrap(), 1234);
    std::fs::write(&f, "junk").unwrap();
    assert!(read_pid_file(&f).await.is_err());
    std::fs::write(&f, "0").unwrap();
    assert!(read_pid_file(&f).await.is_err());
}
