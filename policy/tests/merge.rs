//! Merge is associative and commutative; documents survive a JSON round trip.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vigil_policy::model::{
    Access, Body, Direction, Evidence, ExecKey, Family, FileKey, NetKey, Origin, Phase, Protocol,
};
use vigil_policy::net::Peer;
use vigil_policy::{Digest, Profile, State, Timestamp};

fn evidence() -> impl Strategy<Value = Evidence> {
    (
        0i64..1000,
        0i64..1000,
        1u64..50,
        0u64..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(a, b, count, containers, steady, exec)| Evidence {
            first_seen: Timestamp(a.min(b)),
            last_seen: Timestamp(a.max(b)),
            count,
            containers,
            phases: [if steady {
                Phase::Steady
            } else {
                Phase::Startup
            }]
            .into(),
            origins: [if exec { Origin::Exec } else { Origin::Main }].into(),
        })
}

fn exec_key() -> impl Strategy<Value = ExecKey> {
    (0..3usize, 0..3usize, proptest::option::of(0..2usize)).prop_map(|(p, n, parent)| ExecKey {
        path: ["/bin/busybox", "/usr/bin/python3", "/bin/sh"][p].into(),
        program: ["cat", "sh", "python3"][n].into(),
        parent: parent.map(|i| ["sh", "bash"][i].to_string()),
        invoked: "/bin/x".into(),
    })
}

fn file_key() -> impl Strategy<Value = FileKey> {
    (0..3usize, 0..3usize).prop_map(|(p, a)| FileKey {
        path: ["/etc/passwd", "/proc/*/status", "/tmp/tmp.*"][p].into(),
        access: [Access::Read, Access::Write, Access::Create][a],
    })
}

fn net_key() -> impl Strategy<Value = NetKey> {
    (0..3usize, 0..2usize).prop_map(|(p, d)| NetKey {
        family: Family::Inet,
        protocol: Protocol::Tcp,
        direction: [Direction::Connect, Direction::Listen][d],
        peer: ["127.0.0.1", "10.0.0.0/8", "*"][p].parse::<Peer>().unwrap(),
        port: Some(80),
    })
}

fn body() -> impl Strategy<Value = Body> {
    let names = proptest::collection::btree_set("[ab]", 0..2);
    let syscalls = proptest::collection::btree_map("read|write|openat|clone3", evidence(), 0..4);
    let execs = proptest::collection::btree_map(exec_key(), evidence(), 0..3);
    let files = proptest::collection::btree_map(file_key(), evidence(), 0..3);
    let network = proptest::collection::btree_map(net_key(), evidence(), 0..3);
    (names, syscalls, execs, files, network, 0u64..100).prop_map(
        |(names, syscalls, execs, files, network, secs)| {
            let mut b = Body {
                names,
                syscalls,
                execs,
                files,
                network,
                ..Body::default()
            };
            b.coverage.seconds = secs;
            b.coverage.containers = 1;
            b.coverage.lost.files = secs % 3;
            b
        },
    )
}

fn profile() -> impl Strategy<Value = Profile> {
    (body(), 0i64..100, 100i64..200, any::<bool>(), 0u32..=1000).prop_map(
        |(body, created, updated, stable, conf)| {
            let digest = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
            let mut p = Profile::new(digest, Timestamp(created));
            p.updated = Timestamp(updated);
            p.state = if stable {
                State::Stable
            } else {
                State::Learning
            };
            p.confidence.execs = f64::from(conf) / 1000.0; // stored rounded to 3 places
            p.body = body;
            p
        },
    )
}

fn merged(a: &Profile, b: &Profile) -> Profile {
    let mut out = a.clone();
    out.merge(b).unwrap();
    out
}

proptest! {
    #[test]
    fn body_merge_is_commutative(a in body(), b in body()) {
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        prop_assert_eq!(ab, ba);
    }

    #[test]
    fn profile_merge_is_associative_and_commutative(a in profile(), b in profile(), c in profile()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn documents_round_trip(p in profile()) {
        let text = serde_json::to_string_pretty(&p).unwrap();
        let back: Profile = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, p);
    }
}

#[test]
fn merging_different_images_is_refused() {
    let a = Profile::new(
        Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
        Timestamp(0),
    );
    let mut b = a.clone();
    b.digest = Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap();
    let err = merged_result(&a, &b).unwrap_err().to_string();
    assert!(err.contains("digests differ"), "{err}");
}

fn merged_result(a: &Profile, b: &Profile) -> vigil_policy::Result<Profile> {
    let mut out = a.clone();
    out.merge(b)?;
    Ok(out)
}

#[test]
fn evidence_merge_widens_times_and_adds_counts() {
    let mut map: BTreeMap<String, Evidence> = BTreeMap::new();
    let e1 = Evidence::once(Timestamp(10), Phase::Startup, Origin::Main);
    let e2 = Evidence::once(Timestamp(5), Phase::Steady, Origin::Exec);
    map.insert("read".into(), e1);
    map.get_mut("read").unwrap().merge(&e2);
    let e = &map["read"];
    assert_eq!(
        (e.first_seen, e.last_seen, e.count),
        (Timestamp(5), Timestamp(10), 2)
    );
    assert_eq!(e.phases.len(), 2);
    assert_eq!(e.origins.len(), 2);
}
