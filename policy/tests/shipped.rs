//! Every profile shipped in profiles/ parses, validates, compiles and exports.

use std::path::{Path, PathBuf};

use vigil_policy::export::{export, Format};
use vigil_policy::import::read_profile_file;
use vigil_policy::seccomp::{compile, Deviations};
use vigil_policy::{Matcher, RuntimeFloor, Verdict};

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_profile_parses_and_compiles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let floor = RuntimeFloor::for_runc("1.1.5").unwrap();
    let mut profiles = 0;
    let mut floors = 0;
    for path in json_files(&root) {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("\"runtime-floor\"") {
            RuntimeFloor::parse(&text, &path.display().to_string()).unwrap();
            floors += 1;
            continue;
        }
        let profile = read_profile_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let compiled = compile(&profile.body, &floor, None, &Deviations::Deny)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(compiled.allowed.len() > floor.syscalls.len() / 2);
        for format in [Format::OciSeccomp, Format::K8sSpo, Format::FalcoRules] {
            let text = export(&profile, &floor, format).unwrap();
            assert!(!text.is_empty());
        }
        // Every learned entry matches itself.
        let m = Matcher::new(&profile.body, Some(&floor));
        for key in profile.body.execs.keys() {
            assert!(m.allows_exec(key), "{}: {key:?}", path.display());
        }
        for key in profile.body.files.keys() {
            assert!(
                m.allows_file(&key.path, key.access),
                "{}: {key:?}",
                path.display()
            );
        }
        for key in profile.body.network.keys() {
            assert!(m.allows_net(key), "{}: {key:?}", path.display());
        }
        assert_eq!(
            m.check_syscall(59),
            Verdict::Allowed,
            "execve is in every floor"
        );
        profiles += 1;
    }
    assert!(profiles >= 2, "sample application profiles are shipped");
    assert!(floors >= 1, "a runtime floor is shipped");
}
