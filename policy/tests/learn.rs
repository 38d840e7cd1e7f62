//! Learner: exec identity (V09), evidence, crediting across flushes, network keys.

use std::net::SocketAddr;

use vigil_policy::learn::{
    exec_key, Category, ExecObservation, Learner, LearnerConfig, NetObservation, Observation,
    Observed,
};
use vigil_policy::model::{Access, Direction, Family, Origin, Phase, Protocol};
use vigil_policy::{Matcher, Timestamp, Verdict};

const T0: Timestamp = Timestamp(1_796_382_000);

fn learner() -> Learner {
    Learner::new(LearnerConfig {
        container_id: "c1".into(),
        image_name: Some("local/busybox:latest".into()),
        runtime: Some("runc 1.1.5".into()),
        started: T0,
        startup_secs: 10,
    })
}

fn exec(filename: &str, resolved: &str, argv0: &str, parent: Option<&str>) -> Observed {
    Observed::Exec(ExecObservation {
        filename: filename.into(),
        resolved: resolved.into(),
        argv0: argv0.into(),
        parent: parent.map(str::to_string),
    })
}

fn at(secs: u64, what: Observed) -> Observation {
    Observation {
        at: T0.plus(secs),
        origin: Origin::Main,
        what,
    }
}

#[test]
fn applet_spellings_share_one_identity() {
    let via_link = exec("/bin/cat", "/bin/busybox", "cat", Some("sh"));
    let via_self = exec("/proc/self/exe", "/bin/busybox", "cat", Some("sh"));
    let Observed::Exec(a) = &via_link else {
        unreachable!()
    };
    let Observed::Exec(b) = &via_self else {
        unreachable!()
    };
    let (a, b) = (exec_key(a).unwrap(), exec_key(b).unwrap());
    assert_eq!(a.invoked, "/bin/cat");
    assert_eq!(
        b.invoked, "/bin/cat",
        "a /proc/self/exe re-exec is named by its applet"
    );
    assert_eq!(
        (a.path.as_str(), a.program.as_str()),
        ("/bin/busybox", "cat")
    );

    let mut l = learner();
    l.observe(&at(1, via_link)).unwrap();
    l.observe(&at(2, via_self)).unwrap();
    let delta = l.take_delta(T0.plus(3));
    assert_eq!(delta.execs.len(), 1);
    assert_eq!(delta.execs.values().next().unwrap().count, 2);

    // Merged /usr: learned as /bin/cat, enforced as /usr/bin/cat, same resolved file.
    let m = Matcher::new(&delta, None);
    let usr = exec("/usr/bin/cat", "/bin/busybox", "cat", Some("sh"));
    assert_eq!(m.check(&usr).unwrap(), Verdict::Allowed);
    let nc = exec("/proc/self/exe", "/bin/busybox", "nc", Some("sh"));
    let Verdict::Deviation(d) = m.check(&nc).unwrap() else {
        panic!("nc must deviate")
    };
    assert!(
        d.summary.contains("nc") && d.summary.contains("/bin/busybox"),
        "{}",
        d.summary
    );
}

#[test]
fn runtime_reexecs_are_not_learned() {
    let mut l = learner();
    let runc = exec(
        "/proc/self/exe",
        "memfd:runc_cloned:/proc/self/exe",
        "runc",
        None,
    );
    l.observe(&at(0, runc)).unwrap();
    let init = exec("/proc/self/exe", "/usr/sbin/runc", "runc:[2:INIT]", None);
    l.observe(&at(0, init)).unwrap();
    let entry = exec("/bin/sh", "/bin/busybox", "sh", Some("runc:[2:INIT]"));
    l.observe(&at(0, entry)).unwrap();
    let delta = l.take_delta(T0.plus(1));
    assert_eq!(delta.execs.len(), 1);
    let key = delta.execs.keys().next().unwrap();
    assert_eq!(
        key.parent, None,
        "the runtime as parent is recorded as no parent"
    );
}

#[test]
fn containers_are_credited_once_across_flushes() {
    let mut l = learner();
    l.observe(&at(1, Observed::Syscall(0))).unwrap();
    let first = l.take_delta(T0.plus(5));
    l.observe(&at(6, Observed::Syscall(0))).unwrap();
    l.observe(&at(20, Observed::Syscall(1))).unwrap();
    let second = l.take_delta(T0.plus(30));

    assert_eq!(first.coverage.containers, 1);
    assert_eq!(second.coverage.containers, 0);
    assert_eq!(first.syscalls["read"].containers, 1);
    assert_eq!(second.syscalls["read"].containers, 0);
    assert_eq!(second.syscalls["write"].containers, 1);
    assert_eq!(first.coverage.seconds + second.coverage.seconds, 30);
    assert_eq!(first.syscalls["read"].phases, [Phase::Startup].into());
    assert_eq!(second.syscalls["write"].phases, [Phase::Steady].into());
    assert!(first.names.contains("local/busybox:latest"));
    assert!(second.names.is_empty());
}

#[test]
fn unknown_syscall_number_is_an_error() {
    let err = learner()
        .observe(&at(0, Observed::Syscall(9999)))
        .unwrap_err();
    assert!(err.to_string().contains("9999"), "{err}");
}

#[test]
fn files_are_collapsed_and_lost_events_counted() {
    let mut l = learner();
    for pid in [17, 4242] {
        let path = format!("/proc/{pid}/status");
        l.observe(&at(
            1,
            Observed::File {
                path,
                access: Access::Read,
            },
        ))
        .unwrap();
    }
    l.lost(Category::Files, 3);
    let delta = l.take_delta(T0.plus(2));
    assert_eq!(delta.files.len(), 1);
    assert_eq!(delta.files.keys().next().unwrap().path, "/proc/*/status");
    assert_eq!(delta.coverage.lost.files, 3);
    assert_eq!(delta.coverage.events, 2);
}

fn net(direction: Direction, local: Option<&str>, remote: Option<&str>) -> Observed {
    let addr = |s: Option<&str>| s.map(|s| s.parse::<SocketAddr>().unwrap());
    Observed::Net(NetObservation {
        family: Family::Inet,
        protocol: Protocol::Tcp,
        direction,
        local: addr(local),
        remote: addr(remote),
        unix_path: None,
    })
}

#[test]
fn network_never_records_a_client_ephemeral_port() {
    let mut l = learner();
    let conn1 = net(
        Direction::Connect,
        Some("127.0.0.1:40001"),
        Some("127.0.0.1:6379"),
    );
    let conn2 = net(
        Direction::Connect,
        Some("127.0.0.1:40917"),
        Some("127.0.0.1:6379"),
    );
    let acc1 = net(
        Direction::Accept,
        Some("0.0.0.0:8080"),
        Some("10.1.2.3:51234"),
    );
    let acc2 = net(
        Direction::Accept,
        Some("0.0.0.0:8080"),
        Some("10.9.9.9:60001"),
    );
    for o in [conn1, conn2, acc1, acc2] {
        l.observe(&at(1, o)).unwrap();
    }
    let delta = l.take_delta(T0.plus(2));
    let keys: Vec<String> = delta
        .network
        .keys()
        .map(vigil_policy::diff::describe_net)
        .collect();
    assert_eq!(
        keys,
        ["connect inet/tcp 127.0.0.1:6379", "accept inet/tcp *:8080"]
    );

    let m = Matcher::new(&delta, None);
    let other = net(Direction::Connect, None, Some("127.0.0.1:9"));
    assert!(matches!(m.check(&other).unwrap(), Verdict::Deviation(_)));
    let bad = net(Direction::Connect, None, None);
    assert!(
        m.check(&bad).is_err(),
        "a connect without its remote address is an error"
    );
}

#[test]
fn exec_sessions_are_kept_apart() {
    let mut l = learner();
    let mut o = at(1, exec("/bin/id", "/bin/busybox", "id", None));
    o.origin = Origin::Exec;
    l.observe(&o).unwrap();
    let delta = l.take_delta(T0.plus(2));
    assert_eq!(
        delta.execs.values().next().unwrap().origins,
        [Origin::Exec].into()
    );
}
