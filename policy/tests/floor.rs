//! The committed runtime floor covers what runc does here after installing the filter.

use std::collections::BTreeSet;
use std::process::Command;

use vigil_policy::RuntimeFloor;

#[test]
fn committed_floor_covers_a_fresh_derivation() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../profiles/base/derive-runc-floor.sh"
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping committed_floor_covers_a_fresh_derivation: needs root");
        return;
    }
    let out = Command::new("bash")
        .args([script, "--runs", "2"])
        .output()
        .unwrap();
    if out.status.code() == Some(3) {
        let reason = String::from_utf8_lossy(&out.stderr);
        println!(
            "skipping committed_floor_covers_a_fresh_derivation: {}",
            reason.trim()
        );
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "derivation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let version = Command::new("runc").arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version.split_whitespace().nth(2).unwrap_or("unknown");
    let floor = match RuntimeFloor::for_runc(version) {
        Ok(floor) => floor,
        Err(e) => panic!("runc {version} is installed but has no committed floor: {e}"),
    };
    let mut paths = BTreeSet::new();
    let mut missing = Vec::new();
    for line in stdout.lines() {
        let (path, syscall) = line.split_once('\t').expect("PATH<TAB>SYSCALL lines");
        paths.insert(path.to_string());
        if !floor.syscalls.contains_key(syscall) {
            missing.push(format!("{syscall} ({path})"));
        }
    }
    assert_eq!(paths.len(), 7, "every runc path was traced: {paths:?}");
    assert!(missing.is_empty(), "the committed floor lacks: {missing:?}");
}
