//! The store: atomic writes, merges under a lock, refusal to overwrite bad files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_policy::model::{Evidence, Origin, Phase};
use vigil_policy::{Digest, LearningKeys, PolicyError, ProfileDelta, State, Store, Timestamp};

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

/// A delta with one syscall entry `name` seen once by one container.
fn delta(name: &str, image: &str) -> ProfileDelta {
    let mut d = ProfileDelta::default();
    let mut e = Evidence::once(Timestamp(100), Phase::Steady, Origin::Main);
    e.containers = 1;
    d.syscalls.insert(name.into(), e);
    d.names.insert(image.into());
    d.coverage.containers = 1;
    d.coverage.seconds = 1;
    d
}

#[test]
fn merges_accumulate_and_index_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keys = LearningKeys::default();
    store
        .merge_into(&digest('a'), &delta("read", "img:1"), &keys, Timestamp(100))
        .unwrap();
    let p = store
        .merge_into(&digest('a'), &delta("read", "img:2"), &keys, Timestamp(200))
        .unwrap();
    assert_eq!(p.body.syscalls["read"].count, 2);
    assert_eq!(p.body.syscalls["read"].containers, 2);
    assert_eq!((p.created, p.updated), (Timestamp(100), Timestamp(200)));
    assert_eq!(store.resolve("img:1").unwrap(), digest('a'));
    assert_eq!(store.resolve("img:2").unwrap(), digest('a'));
    assert_eq!(store.resolve("aaaa").unwrap(), digest('a'));
    assert_eq!(store.load(&digest('a')).unwrap().unwrap(), p);
    let text = std::fs::read_to_string(store.path_of(&digest('a'))).unwrap();
    assert!(
        text.contains("\"schema\": 1") && text.contains('\n'),
        "human-readable JSON"
    );
}

#[test]
fn ambiguous_and_unknown_references_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keys = LearningKeys::default();
    let ab = Digest::parse(&format!("sha256:ab{}", "0".repeat(62))).unwrap();
    let ac = Digest::parse(&format!("sha256:ac{}", "0".repeat(62))).unwrap();
    store
        .merge_into(&ab, &delta("read", "x"), &keys, Timestamp(1))
        .unwrap();
    store
        .merge_into(&ac, &delta("read", "y"), &keys, Timestamp(1))
        .unwrap();
    let err = store.resolve("a").unwrap_err().to_string();
    assert!(err.contains("ambiguous"), "{err}");
    let err = store.resolve("nginx:latest").unwrap_err().to_string();
    assert!(err.contains("no profile named nginx:latest"), "{err}");
    assert_eq!(store.resolve("ab").unwrap(), ab);
}

fn assert_untouched_after_merge(dir: &Path, content: &str, want: fn(&PolicyError) -> bool) {
    let store = Store::open(dir).unwrap();
    let path = store.path_of(&digest('c'));
    std::fs::write(&path, content).unwrap();
    let err = store
        .merge_into(
            &digest('c'),
            &delta("read", "img"),
            &LearningKeys::default(),
            Timestamp(5),
        )
        .unwrap_err();
    assert!(want(&err), "unexpected error: {err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "names the file: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        content,
        "file must be left as it was"
    );
}

#[test]
fn corrupt_profile_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    assert_untouched_after_merge(dir.path(), "{\"schema\": 1, \"digest\": tru", |e| {
        matches!(e, PolicyError::Corrupt { .. })
    });
    assert_untouched_after_merge(dir.path(), "{\"schema\": 1}", |e| {
        matches!(e, PolicyError::Corrupt { .. })
    });
}

#[test]
fn newer_schema_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    assert_untouched_after_merge(dir.path(), "{\"schema\": 7, \"whatever\": []}", |e| {
        matches!(e, PolicyError::NewerSchema { found: 7, .. })
    });
}

#[test]
fn unreadable_profile_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // A folder where the file should be cannot be read as a file, even by root.
    std::fs::create_dir(store.path_of(&digest('d'))).unwrap();
    let err = store.load(&digest('d')).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }), "{err}");
    assert!(err.to_string().contains(&"d".repeat(64)), "{err}");
}

#[test]
fn concurrent_threads_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                for i in 0..10 {
                    let d = delta(
                        if i % 2 == 0 { "read" } else { "write" },
                        &format!("img:{t}"),
                    );
                    store
                        .merge_into(&digest('e'), &d, &LearningKeys::default(), Timestamp(1))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let p = Store::open(dir.path())
        .unwrap()
        .load(&digest('e'))
        .unwrap()
        .unwrap();
    assert_eq!(
        p.body.syscalls["read"].count + p.body.syscalls["write"].count,
        80
    );
    assert_eq!(p.body.coverage.containers, 80);
    assert_eq!(p.body.names.len(), 8);
}

/// Child mode for the process tests: merge N deltas into the store named by the variables.
fn child_merges() -> bool {
    let Ok(dir) = std::env::var("VIGIL_TEST_STORE") else {
        return false;
    };
    let n: u32 = std::env::var("VIGIL_TEST_MERGES").unwrap().parse().unwrap();
    let store = Store::open(Path::new(&dir)).unwrap();
    for i in 0..n {
        let d = delta(["read", "write", "openat"][i as usize % 3], "img");
        store
            .merge_into(&digest('f'), &d, &LearningKeys::default(), Timestamp(1))
            .unwrap();
    }
    true
}

fn spawn_merger(dir: &Path, merges: u32) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VIGIL_TEST_STORE", dir)
        .env("VIGIL_TEST_MERGES", merges.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn process_child_entry() {
    // Does nothing unless started by the tests below as a child.
    child_merges();
}

#[test]
fn concurrent_processes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..3).map(|_| spawn_merger(dir.path(), 20)).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let p = Store::open(dir.path())
        .unwrap()
        .load(&digest('f'))
        .unwrap()
        .unwrap();
    let total: u64 = p.body.syscalls.values().map(|e| e.count).sum();
    assert_eq!(total, 60);
}

#[test]
fn killed_writer_leaves_old_or_new_file_never_torn() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut last = 0;
    for round in 0..8u64 {
        let mut child = spawn_merger(dir.path(), 100_000);
        std::thread::sleep(Duration::from_millis(40 + 23 * round));
        child.kill().unwrap(); // SIGKILL, at an arbitrary point of a merge
        child.wait().unwrap();
        let Some(p) = store.load(&digest('f')).unwrap() else {
            continue; // killed before the first write finished
        };
        let total: u64 = p.body.syscalls.values().map(|e| e.count).sum();
        assert!(total >= last, "a write went backwards: {total} < {last}");
        last = total;
    }
    // A later learner merges on top and cleans up temp files of the killed ones.
    store
        .merge_into(
            &digest('f'),
            &delta("read", "img"),
            &LearningKeys::default(),
            Timestamp(1),
        )
        .unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(store.dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");
    assert!(last > 0, "the writer never got a merge done in 8 rounds");
}

#[test]
fn auto_promotion_follows_the_learning_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keys = LearningKeys {
        min_duration_secs: 10,
        quiet_period_secs: 50,
        min_containers: 1,
        startup_secs: 1,
        auto_promote: true,
    };
    let mut d = delta("read", "img");
    d.coverage.seconds = 20;
    let p = store
        .merge_into(&digest('9'), &d, &keys, Timestamp(100))
        .unwrap();
    assert_eq!(
        p.state,
        State::Learning,
        "entry first seen at 100, quiet only 0 s"
    );
    let p = store
        .merge_into(
            &digest('9'),
            &ProfileDelta::default(),
            &keys,
            Timestamp(151),
        )
        .unwrap();
    assert_eq!(p.state, State::Stable);
    assert!(p.confidence.syscalls > 0.99, "{:?}", p.confidence);

    let mut lossy = delta("write", "img");
    lossy.coverage.lost.syscalls = 4;
    let other = digest('8');
    store
        .merge_into(&other, &lossy, &keys, Timestamp(0))
        .unwrap();
    let p = store
        .merge_into(&other, &ProfileDelta::default(), &keys, Timestamp(1000))
        .unwrap();
    assert_eq!(
        p.state,
        State::Learning,
        "lost events keep a profile learning"
    );
    assert!(p.confidence.syscalls <= 0.5);
}
