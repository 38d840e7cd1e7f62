//! Exports and diff output.

use vigil_policy::diff::diff;
use vigil_policy::export::{export, Format};
use vigil_policy::import::read_profile_file;
use vigil_policy::RuntimeFloor;

fn sample(name: &str) -> vigil_policy::Profile {
    let path = format!("{}/../profiles/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    read_profile_file(std::path::Path::new(&path)).unwrap()
}

#[test]
fn k8s_spo_is_a_seccomp_profile_object() {
    let floor = RuntimeFloor::for_runc("1.1.5").unwrap();
    let y = export(&sample("redis.json"), &floor, Format::K8sSpo).unwrap();
    assert!(y.starts_with("apiVersion: security-profiles-operator.x-k8s.io/v1beta1\n"));
    assert!(y.contains("kind: SeccompProfile\n"));
    assert!(y.contains("  name: vigil-redis-7-0\n"), "{y}");
    assert!(y.contains("  defaultAction: SCMP_ACT_ERRNO\n"));
    assert!(y.contains("    - accept4\n"));
    assert!(y.contains("    errnoRet: 38\n"));
}

#[test]
fn falco_rules_flag_execs_and_connections_outside_the_profile() {
    let floor = RuntimeFloor::for_runc("1.1.5").unwrap();
    let y = export(&sample("busybox-shell.json"), &floor, Format::FalcoRules).unwrap();
    assert!(
        y.contains("(proc.exepath = \"/bin/busybox\" and proc.name = \"cat\")"),
        "{y}"
    );
    assert!(
        y.contains("(fd.sip = \"127.0.0.1\" and fd.sport = 8080)"),
        "{y}"
    );
    assert!(
        y.contains("(fd.snet = \"10.96.0.0/12\" and fd.sport = 53)"),
        "{y}"
    );
    assert!(
        y.contains("container.image.repository in (\"local/busybox\")"),
        "{y}"
    );
    assert!(
        y.contains("- rule: vigil vigil_busybox_latest exec outside profile"),
        "{y}"
    );
}

#[test]
fn diff_shows_both_directions_readably() {
    let a = sample("busybox-shell.json");
    let mut b = a.clone();
    let times = a.body.syscalls["read"].clone();
    b.body.syscalls.insert("times".into(), times);
    b.body.syscalls.remove("sendfile");
    let d = diff(&a.body, &b.body);
    assert_eq!(d.added.syscalls, ["times"]);
    assert_eq!(d.removed.syscalls, ["sendfile"]);
    let text = d.to_string();
    assert!(
        text.contains("B allows, A does not:\n  + syscall times\n"),
        "{text}"
    );
    assert!(
        text.contains("A allows, B does not:\n  - syscall sendfile\n"),
        "{text}"
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["added"]["syscalls"][0], "times");
    assert!(diff(&a.body, &a.body).is_empty());
}
