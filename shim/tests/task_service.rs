//! The task service driven through its ttrpc trait against a fake runc (a shell script), so
//! event order, exit codes, stdio and error mapping are checked without root or containerd.
//!
//! The fake's "containers" are plain child processes of the test, which is made a subreaper
//! so they are reparented to it, as container processes are to a shim. The reaper waits for
//! every child of the process, so these tests live in a test binary of their own.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::api::{
    CloseIORequest, CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest,
    StartRequest, StateRequest, WaitRequest,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::{self, Code, MessageHeader};
use containerd_shim::{ExitSignal, Task, TtrpcContext};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::UnboundedReceiver;
use vigil_shim::guard::NoGuard;
use vigil_shim::service::events::EventSink;
use vigil_shim::service::TaskService;

/// The fake runc. Background jobs get /dev/null as stdin unless redirected from another fd,
/// hence `<&3`. Commands come from a `vigil_test_cmd` string in config.json / the exec
/// process spec; runc's verbs act on plain processes.
const FAKE_RUNC: &str = r#"#!/bin/sh
LOG=/dev/null
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2;;
    --log) LOG=$2; shift 2;;
    --log-format) shift 2;;
    --systemd-cgroup) shift;;
    *) break;;
  esac
done
mkdir -p "$ROOT"
exec 3<&0
fail() { echo "{\"level\":\"error\",\"msg\":\"$1\"}" >> "$LOG"; echo "$1" >&2; exit 1; }
cmd_of() { sed -n 's/.*"vigil_test_cmd": *"\([^"]*\)".*/\1/p' "$1"; }
VERB=$1; shift
case $VERB in
create)
  B=$2; F=$4; ID=$5
  CMD=$(cmd_of "$B/config.json"); [ -n "$CMD" ] || fail "no command in the bundle"
  (while [ ! -e "$ROOT/$ID.started" ]; do sleep 0.01; done; exec sh -c "$CMD") <&3 3<&- &
  echo $! > "$ROOT/$ID.pid"; echo $! > "$F" ;;
start) [ -e "$ROOT/$1.pid" ] || fail "container does not exist"; touch "$ROOT/$1.started" ;;
kill)
  [ "$1" = --all ] && shift
  kill -"$2" "$(cat "$ROOT/$1.pid" 2>/dev/null)" 2>/dev/null || fail "container not running" ;;
delete)
  [ "$1" = --force ] && shift
  kill -9 "$(cat "$ROOT/$1.pid" 2>/dev/null)" 2>/dev/null
  rm -f "$ROOT/$1.pid" "$ROOT/$1.started" ;;
exec)
  P=$3; F=$5; ID=$6
  [ -e "$ROOT/$ID.pid" ] || fail "container does not exist"
  CMD=$(cmd_of "$P"); [ "$CMD" = missing ] && fail "exec: missing: executable file not found"
  (exec sh -c "$CMD") <&3 3<&- &
  echo $! > "$F" ;;
ps) echo "[$(cat "$ROOT/$3.pid")]" ;;
*) fail "fake runc: unknown verb $VERB" ;;
esac
"#;

struct Bench {
    dir: tempfile::TempDir,
    service: TaskService,
    events: UnboundedReceiver<(String, Box<dyn MessageDyn>)>,
    options: Any,
}

fn ctx() -> TtrpcContext {
    TtrpcContext {
        mh: MessageHeader::default(),
        metadata: HashMap::new(),
        timeout_nano: 0,
    }
}

/// `runtimeoptions.v1.Options{config_path}` as containerd sends it.
fn config_path_options(path: &Path) -> Any {
    let path = path.to_str().expect("temp paths are UTF-8").as_bytes();
    let mut value = vec![0x12, path.len() as u8];
    value.extend_from_slice(path);
    Any {
        type_url: "runtimeoptions.v1.Options".into(),
        value,
        ..Default::default()
    }
}

fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

impl Bench {
    fn new() -> Bench {
        become_subreaper();
        let dir = tempfile::tempdir().unwrap();
        let runc = dir.path().join("runc");
        std::fs::write(&runc, FAKE_RUNC).unwrap();
        std::fs::set_permissions(&runc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.path().join("vigil.toml");
        let text = format!(
            "runc_binary = {:?}\nrunc_root = {:?}\n",
            runc.display().to_string(),
            dir.path().join("state").display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        let (sink, events) = EventSink::channel();
        let exit = Arc::new(ExitSignal::default());
        let service = TaskService::new("test", Arc::new(NoGuard), sink, exit, "", false).unwrap();
        let options = config_path_options(&config);
        Bench {
            dir,
            service,
            events,
            options,
        }
    }

    fn bundle(&self, id: &str, cmd: &str) -> PathBuf {
        let b = self.dir.path().join(id);
        std::fs::create_dir_all(&b).unwrap();
        let spec = format!("{{\"vigil_test_cmd\": \"{cmd}\", \"linux\": {{\"namespaces\": [{{\"type\": \"pid\"}}]}}}}");
        std::fs::write(b.join("config.json"), spec).unwrap();
        b
    }

    fn fifo(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        p
    }

    fn create_req(&self, id: &str, cmd: &str) -> CreateTaskRequest {
        let bundle = self.bundle(id, cmd);
        CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            options: Some(self.options.clone()).into(),
            ..Default::default()
        }
    }

    async fn create(&self, id: &str, cmd: &str) -> u32 {
        self.service
            .create(&ctx(), self.create_req(id, cmd))
            .await
            .unwrap()
            .pid
    }

    async fn start(&self, id: &str, exec_id: &str) -> ttrpc::Result<u32> {
        let req = StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.start(&ctx(), req).await.map(|r| r.pid)
    }

    async fn wait(&self, id: &str, exec_id: &str) -> u32 {
        let req = WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let c = ctx();
        let wait = self.service.wait(&c, req);
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("exit within 20 s")
            .unwrap()
            .exit_status
    }

    async fn delete(&self, id: &str, exec_id: &str) -> ttrpc::Result<u32> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service
            .delete(&ctx(), req)
            .await
            .map(|r| r.exit_status)
    }

    /// Topics published so far (waits briefly for stragglers).
    async fn topics(&mut self) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut out = Vec::new();
        while let Ok((topic, _)) = self.events.try_recv() {
            out.push(topic);
        }
        out
    }
}

fn code(err: ttrpc::Error) -> (Code, String) {
    match err {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a status: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_service_against_a_fake_runc() {
    let mut b = Bench::new();
    lifecycle_events_in_order(&mut b).await;
    immediate_exit_is_reported_after_start(&mut b).await;
    exec_events_and_exit_codes(&mut b).await;
    stdout_reaches_the_fifo_and_stdin_closes(&mut b).await;
    errors_name_what_is_wrong(&mut b).await;
    deleting_a_created_container_reports_its_kill(&mut b).await;
}

async fn deleting_a_created_container_reports_its_kill(b: &mut Bench) {
    b.create("c5", "true").await;
    assert_eq!(b.delete("c5", "").await.unwrap(), 137);
    let topics = b.topics().await;
    assert_eq!(topics, ["/tasks/create", "/tasks/exit", "/tasks/delete"]);
}

async fn lifecycle_events_in_order(b: &mut Bench) {
    let pid = b.create("c1", "sleep 0.3; exit 3").await;
    assert!(pid > 0);
    let c = ctx();
    let state = b.service.state(
        &c,
        StateRequest {
            id: "c1".into(),
            ..Default::default()
        },
    );
    assert_eq!(state.await.unwrap().status.value(), 1, "CREATED");
    assert_eq!(b.start("c1", "").await.unwrap(), pid);
    assert_eq!(b.wait("c1", "").await, 3);
    assert_eq!(b.delete("c1", "").await.unwrap(), 3);
    let topics = b.topics().await;
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
}

async fn immediate_exit_is_reported_after_start(b: &mut Bench) {
    for i in 0..5 {
        let id = format!("quick{i}");
        b.create(&id, "exit 0").await;
        b.start(&id, "").await.unwrap();
        assert_eq!(b.wait(&id, "").await, 0);
        b.delete(&id, "").await.unwrap();
        let topics = b.topics().await;
        assert_eq!(
            topics,
            [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ],
            "{id}"
        );
    }
}

fn exec_req(id: &str, exec_id: &str, cmd: &str) -> ExecProcessRequest {
    let spec = format!("{{\"vigil_test_cmd\": \"{cmd}\"}}");
    ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: Some(Any {
            value: spec.into_bytes(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

async fn exec_events_and_exit_codes(b: &mut Bench) {
    b.create("c2", "sleep 30").await;
    b.start("c2", "").await.unwrap();
    b.service
        .exec(&ctx(), exec_req("c2", "e1", "kill -TERM $$"))
        .await
        .unwrap();
    let again = b
        .service
        .exec(&ctx(), exec_req("c2", "e1", "true"))
        .await
        .unwrap_err();
    assert_eq!(code(again).0, Code::ALREADY_EXISTS);
    b.start("c2", "e1").await.unwrap();
    assert_eq!(b.wait("c2", "e1").await, 143, "128 + SIGTERM");
    assert_eq!(b.delete("c2", "e1").await.unwrap(), 143);

    let running = b.delete("c2", "").await.unwrap_err();
    assert_eq!(code(running).0, Code::FAILED_PRECONDITION);
    let kill = KillRequest {
        id: "c2".into(),
        signal: 9,
        ..Default::default()
    };
    b.service.kill(&ctx(), kill.clone()).await.unwrap();
    assert_eq!(b.wait("c2", "").await, 137);
    let (c, msg) = code(b.service.kill(&ctx(), kill).await.unwrap_err());
    assert_eq!(
        (c, msg.as_str()),
        (Code::NOT_FOUND, "process already finished: not found")
    );
    b.delete("c2", "").await.unwrap();
    let topics = b.topics().await;
    let want = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/exit",
        "/tasks/delete",
    ];
    assert_eq!(topics, want);
}

async fn stdout_reaches_the_fifo_and_stdin_closes(b: &mut Bench) {
    let (stdin, stdout) = (b.fifo("c3-in"), b.fifo("c3-out"));
    let mut req = b.create_req("c3", "cat; echo done");
    req.stdin = stdin.display().to_string();
    req.stdout = stdout.display().to_string();
    let mut reader = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(&stdout)
        .unwrap();
    b.service.create(&ctx(), req).await.unwrap();
    let writer = tokio::net::unix::pipe::OpenOptions::new()
        .open_sender(&stdin)
        .unwrap();
    b.start("c3", "").await.unwrap();
    writer.writable().await.unwrap();
    writer.try_write(b"hello\n").unwrap();
    // containerd's client closes its end and then asks for CloseIO: only then EOF.
    drop(writer);
    let close = CloseIORequest {
        id: "c3".into(),
        stdin: true,
        ..Default::default()
    };
    b.service.close_io(&ctx(), close).await.unwrap();
    assert_eq!(b.wait("c3", "").await, 0);
    let mut out = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut out));
    read.await.expect("stdout reaches EOF").unwrap();
    assert_eq!(out, "hello\ndone\n");
    b.delete("c3", "").await.unwrap();
    b.topics().await;
}

async fn errors_name_what_is_wrong(b: &mut Bench) {
    let (c, msg) = code(
        b.service
            .create(&ctx(), b.create_req("bad1", ""))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (c, msg.as_str()),
        (
            Code::UNKNOWN,
            "OCI runtime create failed: no command in the bundle"
        )
    );

    let req = b.create_req("bad2", "true");
    std::fs::write(PathBuf::from(&req.bundle).join("config.json"), "{broken").unwrap();
    let (c, msg) = code(b.service.create(&ctx(), req).await.unwrap_err());
    assert_eq!(c, Code::INVALID_ARGUMENT);
    assert!(
        msg.starts_with("parse bundle config ") && msg.contains("config.json"),
        "{msg}"
    );

    let mut req = b.create_req("bad3", "true");
    req.options = Some(config_path_options(Path::new("/nonexistent/vigil.toml"))).into();
    let (c, msg) = code(b.service.create(&ctx(), req).await.unwrap_err());
    assert_eq!(c, Code::INVALID_ARGUMENT);
    assert!(
        msg.contains("/nonexistent/vigil.toml") && msg.contains("does not exist"),
        "{msg}"
    );

    b.create("c4", "sleep 30").await;
    b.start("c4", "").await.unwrap();
    b.service
        .exec(&ctx(), exec_req("c4", "m", "missing"))
        .await
        .unwrap();
    let (c, msg) = code(b.start("c4", "m").await.unwrap_err());
    assert_eq!(c, Code::UNKNOWN);
    assert_eq!(
        msg,
        "OCI runtime exec failed: exec: missing: executable file not found"
    );
    b.delete("c4", "m").await.unwrap();
    let c = ctx();
    let state = b.service.state(
        &c,
        StateRequest {
            id: "bad1".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        code(state.await.unwrap_err()).0,
        Code::NOT_FOUND,
        "failed creates leave nothing"
    );
    let kill = KillRequest {
        id: "c4".into(),
        signal: 9,
        ..Default::default()
    };
    b.service.kill(&ctx(), kill).await.unwrap();
    b.wait("c4", "").await;
    b.delete("c4", "").await.unwrap();
    b.topics().await;
}
