use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::event::text;
use super::*;
use crate::mode::fail::{AuditHealth, Missing, StartNotice};
use crate::mode::Mode;

fn context(id: &str, mode: Mode) -> ContainerAudit {
    let mut identity = ContainerIdentity::new(id, "local/busybox:latest").unwrap();
    identity.k8s_namespace = Some("shop".into());
    identity.pod = Some("web-7d9f".into());
    identity.name = Some("web".into());
    ContainerAudit::new(identity, mode, Some("sha256:0123abcd".into()))
}

fn nc_exec(ctx: &ContainerAudit) -> EventBuilder {
    let process = Process::new(4242)
        .exepath(b"/bin/busybox")
        .argv(b"nc\x00-w1\x00127.0.0.1\x009\x00")
        .parent(Some(4200), b"sh")
        .uid(0);
    let filename = b"/proc/self/exe".to_vec();
    ctx.deviation(
        Deviation::Exec { filename },
        Action::Killed,
        Mechanism::Signal,
    )
    .process(process)
    .confidence(0.97)
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "last line unterminated: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn start(dir: &Path) -> (AuditHandle, std::path::PathBuf) {
    let path = dir.join("log/audit.jsonl");
    let handle = AuditHandle::start(AuditConfig::new(Some(path.clone()), None)).unwrap();
    (handle, path)
}

#[test]
fn an_event_has_the_falco_shape_of_the_interface_page() {
    let event = nc_exec(&context("c0ffee", Mode::Enforce)).build();
    eprintln!("{}", serde_json::to_string(&event).unwrap());
    let json: Value = serde_json::to_value(&event).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = [
        "time",
        "rule",
        "priority",
        "source",
        "hostname",
        "tags",
        "output",
        "output_fields",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);

    let time = json["time"].as_str().unwrap();
    assert_eq!(time.len(), "2026-12-04T11:00:00.123456789Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
    assert_eq!(json["rule"], "vigil: unexpected exec");
    assert_eq!(json["priority"], "Critical");
    assert_eq!(json["source"], "vigil");
    assert_eq!(
        json["tags"],
        serde_json::json!(["vigil", "process", "enforce"])
    );

    let f = &json["output_fields"];
    let expect = serde_json::json!({
        "container.id": "c0ffee", "container.name": "web",
        "container.image.repository": "local/busybox:latest", "container.image.digest": null,
        "k8s.ns.name": "shop", "k8s.pod.name": "web-7d9f",
        "proc.pid": 4242, "proc.ppid": 4200, "proc.exepath": "/bin/busybox", "proc.exe": "nc",
        "proc.name": "nc", "proc.cmdline": "nc -w1 127.0.0.1 9", "proc.pname": "sh",
        "user.uid": 0, "evt.type": "execve", "vigil.mode": "enforce", "vigil.action": "killed",
        "vigil.mechanism": "signal", "vigil.profile": "sha256:0123abcd", "vigil.confidence": 0.97,
        "vigil.exec.filename": "/proc/self/exe",
    });
    assert_eq!(f, &expect);
    let output = json["output"].as_str().unwrap();
    assert!(
        output.starts_with(
            "killed exec of /bin/busybox (invoked as /proc/self/exe) by nc (pid 4242), parent sh"
        ),
        "{output}"
    );
    assert!(
        output.contains("container=c0ffee image=local/busybox:latest pod=shop/web-7d9f"),
        "{output}"
    );
}

#[test]
fn every_deviation_kind_fills_its_fields() {
    let ctx = context("abc", Mode::Monitor);
    let p = || Process::new(7).argv(b"/usr/bin/cat\0/etc/shadow\0");
    let file = Deviation::File {
        path: b"/etc/shadow".to_vec(),
        access: FileAccess::Read,
        syscall: "openat".into(),
    };
    let e = ctx
        .deviation(file, Action::Alerted, Mechanism::Fanotify)
        .process(p())
        .build();
    let f = &e.output_fields;
    assert_eq!(
        (f.fd_name.as_deref(), f.evt_type.as_deref()),
        (Some("/etc/shadow"), Some("openat"))
    );
    assert_eq!(
        (f.name.as_deref(), f.exe.as_deref()),
        (Some("cat"), Some("/usr/bin/cat"))
    );
    assert_eq!(e.priority, Priority::Warning);
    assert!(
        e.output
            .starts_with("unexpected read of /etc/shadow by cat (pid 7)"),
        "{}",
        e.output
    );

    let net = Deviation::Network {
        op: NetOp::Connect,
        proto: L4Proto::Tcp,
        addr: Ipv4Addr::LOCALHOST.into(),
        port: 9,
    };
    let e = ctx
        .deviation(net, Action::Blocked, Mechanism::CgroupSock)
        .build();
    let f = &e.output_fields;
    assert_eq!(
        (f.fd_sip.as_deref(), f.fd_sport, f.fd_l4proto.as_deref()),
        (Some("127.0.0.1"), Some(9), Some("tcp"))
    );
    assert_eq!(
        (f.fd_name.as_deref(), f.evt_type.as_deref()),
        (Some("127.0.0.1:9"), Some("connect"))
    );
    assert_eq!(
        (e.rule.as_str(), e.tags[1].as_str()),
        ("vigil: unexpected network activity", "network")
    );

    let e = ctx
        .deviation(
            Deviation::Syscall {
                name: "times".into(),
            },
            Action::Blocked,
            Mechanism::Seccomp,
        )
        .build();
    assert_eq!(e.output_fields.evt_type.as_deref(), Some("times"));
    assert_eq!(e.priority, Priority::Critical);
}

#[test]
fn events_about_vigil_itself_carry_the_identity_too() {
    let ctx = context("abc", Mode::Monitor);
    let missing = vec![Missing::new("LSM-BPF (EPERM)", "boot with lsm=bpf")];
    let notice = StartNotice::FailOpen {
        requested: Mode::Enforce,
        effective: Mode::Monitor,
        missing,
    };
    let events = [
        ctx.start_notice(&notice).build(),
        ctx.start_notice(&StartNotice::AuditUnwritable {
            reason: "/x: EACCES".into(),
        })
        .build(),
        ctx.start_notice(&StartNotice::ProfileUnusable {
            missing: Missing::new("p", "f"),
        })
        .build(),
        ctx.mode_change(Mode::Learn, "profile promoted to stable")
            .build(),
        ctx.lost_events(17, "ring buffer").build(),
        ctx.profile_stable(0.91).build(),
        ctx.overflow(3).build(),
    ];
    let rules: Vec<&str> = events.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "vigil: fail-open start",
            "vigil: audit log unwritable",
            "vigil: profile unusable",
            "vigil: mode change",
            "vigil: lost events",
            "vigil: profile stable",
            "vigil: audit overflow"
        ]
    );
    for e in &events {
        let f = &e.output_fields;
        assert_eq!(
            (f.container_id.as_str(), f.image_repository.as_str()),
            ("abc", "local/busybox:latest")
        );
        assert_eq!((f.mode.as_str(), f.mechanism), ("monitor", Mechanism::Shim));
    }
    assert_eq!(
        events[0].output_fields.requested_mode.as_deref(),
        Some("enforce")
    );
    assert!(events[0]
        .output
        .contains("started in monitor instead of enforce: LSM-BPF (EPERM)"));
    assert_eq!(events[0].priority, Priority::Error);
    assert_eq!(events[4].output_fields.count, Some(17));
    assert_eq!(events[5].output_fields.action, Action::Learned);
}

#[test]
fn an_identity_needs_an_id_and_an_image() {
    assert!(ContainerIdentity::new("", "img").is_err());
    let err = ContainerIdentity::new("id", " ").unwrap_err().to_string();
    assert!(err.contains("container id and an image name"), "{err}");
}

#[test]
fn hostile_paths_and_argv_never_forge_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, path) = start(dir.path());
    let ctx = context("c1", Mode::Enforce);
    let nasty: Vec<&[u8]> = vec![
        b"/tmp/x\n{\"rule\":\"forged\"}",
        b"/tmp/\"quoted\"\\back\rslash",
        b"/tmp/\x1b[31mred\x07\x08\x7f",
        b"/tmp/\xff\xfe-not-utf8",
        "/tmp/\u{2028}line\u{2029}sep".as_bytes(),
    ];
    for p in &nasty {
        let mut argv = b"sh\0-c\0echo \"hi\"\n}{\0".to_vec();
        argv.extend_from_slice(p);
        let file = Deviation::File {
            path: p.to_vec(),
            access: FileAccess::Write,
            syscall: "openat".into(),
        };
        let process = Process::new(1)
            .argv(&argv)
            .exepath(p)
            .parent(Some(2), b"ba\nsh");
        assert!(handle.emit(
            ctx.deviation(file, Action::Blocked, Mechanism::Fanotify)
                .process(process)
        ));
    }
    assert!(handle.flush(Duration::from_secs(10)));

    let raw = std::fs::read(&path).unwrap();
    assert_eq!(
        raw.iter().filter(|b| **b == b'\n').count(),
        nasty.len(),
        "one line per event"
    );
    let events = read_lines(&path);
    for (event, p) in events.iter().zip(&nasty) {
        let back: AuditEvent = serde_json::from_value(event.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), *event, "round trip");
        let f = &back.output_fields;
        assert_eq!(f.fd_name.as_deref(), Some(text(p).as_str()));
        assert_eq!(f.exepath.as_deref(), Some(text(p).as_str()));
        assert_eq!(f.pname.as_deref(), Some("ba\nsh"));
        assert!(f
            .cmdline
            .as_deref()
            .unwrap()
            .starts_with("sh -c echo \"hi\"\n}{ "));
        assert_ne!(back.rule, "forged");
    }
    assert_eq!(
        events[3]["output_fields"]["fd.name"],
        "/tmp/\\xff\\xfe-not-utf8"
    );
    assert_eq!(handle.stats().written, nasty.len() as u64);
}

#[test]
fn a_stalled_writer_never_blocks_the_caller_and_reports_the_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = AuditConfig {
        queue_capacity: 8,
        ..AuditConfig::new(Some(path.clone()), None)
    };
    let (handle, resume) = AuditHandle::start_paused(config).unwrap();
    let (a, b) = (context("aaa", Mode::Enforce), context("bbb", Mode::Monitor));

    let started = Instant::now();
    let accepted = (0..5000)
        .filter(|i| handle.emit(nc_exec(if i % 2 == 0 { &a } else { &b })))
        .count();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "emit blocked: {:?}",
        started.elapsed()
    );
    assert_eq!(accepted, 8);
    assert_eq!(handle.stats().dropped, 4992);

    resume();
    assert!(handle.flush(Duration::from_secs(10)));
    // The overflow report follows the drained queue; flush again to be behind it.
    assert!(handle.flush(Duration::from_secs(10)));
    let events = read_lines(&path);
    let overflow: Vec<&Value> = events
        .iter()
        .filter(|e| e["rule"] == "vigil: audit overflow")
        .collect();
    assert_eq!(events.len(), 8 + 2, "{events:#?}");
    assert_eq!(overflow.len(), 2);
    let counts: u64 = overflow
        .iter()
        .map(|e| e["output_fields"]["vigil.count"].as_u64().unwrap())
        .sum();
    assert_eq!(counts, 4992);
    let ids: Vec<&str> = overflow
        .iter()
        .map(|e| e["output_fields"]["container.id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["aaa", "bbb"]);
    let stats = handle.stats();
    assert_eq!(
        (stats.queued, stats.written, stats.overflow_events),
        (8, 10, 2)
    );
}

#[test]
fn an_unwritable_log_is_an_error_at_start_or_a_degraded_health() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("audit.jsonl");

    let err = AuditHandle::start(AuditConfig::new(Some(path.clone()), None)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&*blocker.to_string_lossy()) && msg.contains("audit_log"),
        "{msg}"
    );

    let (handle, health) = AuditHandle::start_or_degrade(AuditConfig::new(Some(path), None));
    assert!(matches!(&health, AuditHealth::Unwritable(r) if r.contains("create audit log folder")));
    // Events still flow (to the shim log) and are counted as neither written nor dropped.
    assert!(handle.emit(nc_exec(&context("c", Mode::Enforce))));
    assert!(handle.flush(Duration::from_secs(5)));
    assert_eq!((handle.stats().written, handle.stats().dropped), (0, 0));

    let err = AuditHandle::start(AuditConfig::new(
        None,
        Some("https://sidekick:2801/".into()),
    ));
    assert!(err.unwrap_err().to_string().contains("only plain http://"));
}

#[test]
fn a_rotated_log_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, path) = start(dir.path());
    let ctx = context("c", Mode::Enforce);
    assert!(handle.emit(nc_exec(&ctx)));
    assert!(handle.flush(Duration::from_secs(5)));
    std::fs::rename(&path, path.with_extension("1")).unwrap();
    thread::sleep(Duration::from_millis(1100));
    assert!(handle.emit(nc_exec(&ctx)));
    assert!(handle.flush(Duration::from_secs(5)));
    assert_eq!(read_lines(&path).len(), 1);
    assert_eq!(read_lines(&path.with_extension("1")).len(), 1);
}

/// One request as the test server saw it.
struct Request {
    head: String,
    body: Vec<u8>,
}

/// Serves on 127.0.0.1, answering each request with the next status (200 when they run out).
fn server(statuses: Vec<u16>) -> (u16, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let status = statuses.next().unwrap_or(200);
            let Some(request) = answer(stream, status) else {
                continue;
            };
            if tx.send(request).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn answer(mut stream: TcpStream, status: u16) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(reply.as_bytes()).ok()?;
    Some(Request { head, body })
}

fn quick_http() -> HttpOptions {
    HttpOptions {
        attempts: 3,
        backoff: Duration::from_millis(10),
        ..HttpOptions::default()
    }
}

#[test]
fn events_are_posted_as_json_and_retried_on_server_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (port, requests) = server(vec![503]);
    let path = dir.path().join("audit.jsonl");
    let url = format!("http://127.0.0.1:{port}/falco");
    let config = AuditConfig {
        http: quick_http(),
        ..AuditConfig::new(Some(path.clone()), Some(url))
    };
    let handle = AuditHandle::start(config).unwrap();
    assert!(handle.emit(nc_exec(&context("c0ffee", Mode::Enforce))));

    let first = requests.recv_timeout(Duration::from_secs(10)).unwrap();
    let second = requests.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first.body, second.body, "the retry sends the same event");
    assert!(
        second.head.starts_with("POST /falco HTTP/1.1\r\n"),
        "{}",
        second.head
    );
    let head = second.head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    let posted: Value = serde_json::from_slice(&second.body).unwrap();
    assert!(handle.flush(Duration::from_secs(5)));
    assert_eq!(posted, read_lines(&path)[0], "the body is the log line");

    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.stats().http_sent < 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let stats = handle.stats();
    assert_eq!(
        (stats.http_sent, stats.http_retries, stats.http_failed),
        (1, 1, 0)
    );
}

#[test]
fn a_dead_endpoint_is_counted_and_never_slows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("audit.jsonl");
    let url = format!("http://127.0.0.1:{port}/");
    let mut config = AuditConfig::new(Some(path.clone()), Some(url));
    config.http = HttpOptions {
        queue_capacity: 2,
        attempts: 2,
        backoff: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let handle = AuditHandle::start(config).unwrap();
    let ctx = context("c", Mode::Monitor);

    let started = Instant::now();
    for _ in 0..20 {
        assert!(handle.emit(nc_exec(&ctx)));
    }
    assert!(handle.flush(Duration::from_secs(5)));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(read_lines(&path).len(), 20);

    let deadline = Instant::now() + Duration::from_secs(15);
    let settled = |s: AuditStats| s.http_failed + s.http_dropped == 20;
    while !settled(handle.stats()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let stats = handle.stats();
    assert!(settled(stats), "{stats:?}");
    assert!(
        stats.http_failed >= 1 && stats.http_dropped >= 1,
        "{stats:?}"
    );
    assert_eq!(stats.http_sent, 0);
}

#[test]
fn kernel_bytes_become_lossless_text() {
    assert_eq!(text(b"/bin/cat"), "/bin/cat");
    assert_eq!(text(b"a\xffb\xc3"), "a\\xffb\\xc3");
    assert_eq!(text("é".as_bytes()), "é");
}
