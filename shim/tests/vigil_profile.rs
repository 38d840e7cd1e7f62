//! `vigil profile ...` end to end: the built binary against a temporary store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/examples")
}

fn vigil(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("VIGIL_CONFIG", state.join("no-such-config.toml"))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A store with both sample profiles imported.
fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["busybox-shell.json", "redis.json"] {
        let path = examples().join(file);
        let out = vigil(dir.path(), &["profile", "import", path.to_str().unwrap()]);
        assert!(out.status.success(), "import {file}: {}", stderr(&out));
        assert!(stdout(&out).contains("stored"), "{}", stdout(&out));
    }
    dir
}

#[test]
fn list_shows_a_row_per_profile() {
    let dir = store();
    let out = vigil(dir.path(), &["profile", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("IMAGE"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("local/busybox:latest"))
        .unwrap();
    for cell in ["3f3f3f3f3f3f", "stable", "36/4/5/2", "KiB"] {
        assert!(row.contains(cell), "{cell} missing in {row}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&vigil(dir.path(), &["profile", "list", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
}

#[test]
fn show_by_name_digest_and_prefix() {
    let dir = store();
    let digest = format!("sha256:{}", "3f".repeat(32));
    for reference in ["local/busybox:latest", digest.as_str(), "3f3f"] {
        let out = vigil(dir.path(), &["profile", "show", reference]);
        assert!(out.status.success(), "{reference}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("state    stable"), "{text}");
        assert!(
            text.contains("cat (/bin/busybox, invoked /bin/cat, parent sh)"),
            "{text}"
        );
        assert!(text.contains("read   /proc/*/status"), "{text}");
    }
    let out = vigil(dir.path(), &["profile", "show", "3f", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("busybox-shell.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(shown, file, "show --json prints the document as imported");
}

#[test]
fn input_errors_exit_2_and_say_what_to_fix() {
    let dir = store();
    let out = vigil(dir.path(), &["profile", "show", "nginx:latest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no profile named nginx:latest"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("vigil profile list"),
        "{}",
        stderr(&out)
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"schema\": 1, \"digest\": \"sha256:xyz\"}").unwrap();
    let out = vigil(dir.path(), &["profile", "import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.json"), "{}", stderr(&out));

    let out = vigil(dir.path(), &["profile", "export", "3f", "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2 too");
}

#[test]
fn corrupt_store_file_is_named_by_list() {
    let dir = store();
    let path = dir
        .path()
        .join(format!("profiles/{}.json", "ab".repeat(32)));
    std::fs::write(&path, "{ not json").unwrap();
    let out = vigil(dir.path(), &["profile", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&path.display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("local/busybox:latest"),
        "the good ones are still listed"
    );
}

#[test]
fn diff_and_exports() {
    let dir = store();
    let out = vigil(
        dir.path(),
        &["profile", "diff", "local/busybox:latest", "7c7c"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("  + syscall accept4"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("  - syscall sendfile"),
        "{}",
        stdout(&out)
    );

    let out = vigil(
        dir.path(),
        &["profile", "export", "3f", "--format", "oci-seccomp"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    let out = vigil(
        dir.path(),
        &["profile", "export", "7c", "--format", "k8s-spo"],
    );
    assert!(
        stdout(&out).contains("kind: SeccompProfile"),
        "{}",
        stdout(&out)
    );
    let out = vigil(
        dir.path(),
        &["profile", "export", "7c", "--format", "falco-rules"],
    );
    assert!(stdout(&out).contains("proc.exepath = \"/usr/bin/redis-server\""));
}

#[test]
fn state_dir_comes_from_the_node_config() {
    let dir = store();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("state_dir = {:?}\n", dir.path().display().to_string()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["profile", "list"])
        .env("VIGIL_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("docker.io/library/redis:7.0"),
        "{}",
        stdout(&out)
    );

    std::fs::write(&config, "no_such_key = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["profile", "list"])
        .env("VIGIL_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("config.toml"), "{}", stderr(&out));
}

#[test]
fn diff_against_a_saved_copy_shows_what_relearning_added() {
    let dir = store();
    let saved = dir.path().join("before.json");
    let out = vigil(dir.path(), &["profile", "show", "3f", "--json"]);
    std::fs::write(&saved, &out.stdout).unwrap();

    let mut doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["syscalls"]["times"] = doc["syscalls"]["read"].clone();
    let relearned = dir.path().join("relearned.json");
    std::fs::write(&relearned, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = vigil(
        dir.path(),
        &["profile", "import", relearned.to_str().unwrap()],
    );
    assert!(
        stdout(&out).contains("merged into the stored profile"),
        "{}",
        stdout(&out)
    );

    let out = vigil(
        dir.path(),
        &["profile", "diff", saved.to_str().unwrap(), "3f"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("B allows, A does not:\n  + syscall times\n"),
        "{text}"
    );
    assert!(
        text.contains("A allows, B does not:\n  (nothing)"),
        "{text}"
    );
}
