//! The profile store: `<state_dir>/profiles/<digest-hex>.json` plus `index.json` (image name
//! → digest).
//!
//! Every write goes to a temporary file in the same folder, is fsynced, renamed over the
//! target, and the folder is fsynced: a crash leaves the old or the new file, never a torn
//! one. Writers hold an exclusive `flock` on `.lock`, so learners of one image on one node
//! merge instead of overwriting each other. Readers need no lock.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::model::{Digest, Profile, ProfileDelta, SCHEMA};
use crate::stability::{self, LearningKeys};
use crate::timestamp::Timestamp;

const INDEX: &str = "index.json";
const LOCK: &str = ".lock";
const TEMP_PREFIX: &str = ".tmp-";

/// The name index: `{"schema": 1, "names": {"local/busybox:latest": "sha256:..."}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub schema: u32,
    pub names: BTreeMap<String, Digest>,
}

/// A profile file as `list` found it.
#[derive(Debug)]
pub struct Listed {
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    pub profile: Result<Profile>,
}

/// The folder of profiles.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// An exclusive hold on the store, released on drop.
struct Locked {
    _lock: Flock<File>,
}

impl Store {
    /// The store below `state_dir` (`<state_dir>/profiles`), created if missing.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("profiles");
        fs::create_dir_all(&dir).map_err(|source| PolicyError::Write {
            step: "create the profile folder",
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The store below `state_dir`, without creating anything (for read-only commands).
    pub fn at(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("profiles"),
        }
    }

    /// The profile folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the profile of `digest` lives.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", digest.hex()))
    }

    /// The profile of `digest`, `None` if there is none. A corrupt, newer or unreadable file
    /// is an error naming the file.
    pub fn load(&self, digest: &Digest) -> Result<Option<Profile>> {
        let path = self.path_of(digest);
        match fs::read_to_string(&path) {
            Ok(text) => parse_profile(&text, &path).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PolicyError::Read { path, source }),
        }
    }

    /// Merges a learner's delta into the profile of `digest` under the store lock, refreshes
    /// confidence and (with `auto_promote`) the state, writes it atomically and records the
    /// delta's image names in the index. An existing file that cannot be read or parsed is
    /// left untouched and the error returned.
    pub fn merge_into(
        &self,
        digest: &Digest,
        delta: &ProfileDelta,
        keys: &LearningKeys,
        now: Timestamp,
    ) -> Result<Profile> {
        let _held = self.lock()?;
        let mut profile = self
            .load(digest)?
            .unwrap_or_else(|| Profile::new(digest.clone(), now));
        profile.body.merge(delta);
        profile.updated = profile.updated.max(now);
        stability::refresh(&mut profile, keys, now);
        self.write_profile(&profile)?;
        self.index_names(&profile)?;
        Ok(profile)
    }

    /// Stores a whole profile (an import): merged with the stored one of the same digest if
    /// there is one, else written as it is.
    pub fn import(&self, incoming: &Profile) -> Result<Profile> {
        let _held = self.lock()?;
        let profile = match self.load(&incoming.digest)? {
            Some(mut stored) => {
                stored.merge(incoming)?;
                stored
            }
            None => incoming.clone(),
        };
        self.write_profile(&profile)?;
        self.index_names(&profile)?;
        Ok(profile)
    }

    /// Sets a profile's state (an operator's promotion or demotion).
    pub fn set_state(&self, digest: &Digest, state: crate::model::State) -> Result<Profile> {
        let _held = self.lock()?;
        let mut profile = self.load(digest)?.ok_or_else(|| {
            PolicyError::Reference(format!("no profile for {digest} in {}", self.dir.display()))
        })?;
        profile.state = state;
        self.write_profile(&profile)?;
        Ok(profile)
    }

    /// The name index (empty if none was written yet).
    pub fn index(&self) -> Result<Index> {
        let path = self.dir.join(INDEX);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Index::default()),
            Err(source) => return Err(PolicyError::Read { path, source }),
        };
        check_schema(&text, &path)?;
        serde_json::from_str(&text).map_err(|e| PolicyError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Every profile file in the store, parsed (or the error for that file), by file name.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PolicyError::Read {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut listed = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_profile_file(&name) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let profile = fs::read_to_string(&path)
                .map_err(|source| PolicyError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|text| parse_profile(&text, &path));
            listed.push(Listed {
                path,
                size,
                profile,
            });
        }
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listed)
    }

    /// Resolves a reference: an image name from the index, a full digest, or a unique prefix
    /// of a digest (with or without `sha256:`).
    pub fn resolve(&self, reference: &str) -> Result<Digest> {
        if let Some(digest) = self.index()?.names.get(reference) {
            return Ok(digest.clone());
        }
        if let Ok(digest) = Digest::parse(reference) {
            return Ok(digest);
        }
        let prefix = reference
            .strip_prefix("sha256:")
            .unwrap_or(reference)
            .to_ascii_lowercase();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.no_match(reference));
        }
        let matches: Vec<String> = self
            .profile_hexes()?
            .into_iter()
            .filter(|hex| hex.starts_with(&prefix))
            .collect();
        match matches.as_slice() {
            [one] => Digest::parse(&format!("sha256:{one}")),
            [] => Err(self.no_match(reference)),
            many => Err(PolicyError::Reference(format!(
                "digest prefix {reference} is ambiguous ({} profiles match); give more digits",
                many.len()
            ))),
        }
    }

    fn no_match(&self, reference: &str) -> PolicyError {
        PolicyError::Reference(format!(
            "no profile named {reference} in {}; `vigil profile list` shows names and digests",
            self.dir.display()
        ))
    }

    fn profile_hexes(&self) -> Result<Vec<String>> {
        Ok(self
            .list()?
            .into_iter()
            .filter_map(|l| {
                let name = l.path.file_name()?.to_string_lossy().into_owned();
                Some(name.strip_suffix(".json")?.to_string())
            })
            .collect())
    }

    fn lock(&self) -> Result<Locked> {
        fs::create_dir_all(&self.dir).map_err(|source| PolicyError::Write {
            step: "create the profile folder",
            path: self.dir.clone(),
            source,
        })?;
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| PolicyError::Write {
                step: "open the lock file",
                path: path.clone(),
                source,
            })?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            PolicyError::Write {
                step: "lock",
                path: path.clone(),
                source: errno.into(),
            }
        })?;
        self.remove_stale_temps();
        Ok(Locked { _lock: lock })
    }

    /// Temp files of a writer that died; only lock holders write, so none is in use.
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn write_profile(&self, profile: &Profile) -> Result<()> {
        let mut text = serde_json::to_string_pretty(profile).map_err(|e| PolicyError::Corrupt {
            path: self.path_of(&profile.digest),
            reason: format!("cannot serialise: {e}"),
        })?;
        text.push('\n');
        write_atomic(&self.dir, &self.path_of(&profile.digest), text.as_bytes())
    }

    fn index_names(&self, profile: &Profile) -> Result<()> {
        let mut index = self.index()?;
        let before = index.clone();
        index.schema = SCHEMA;
        for name in &profile.body.names {
            index.names.insert(name.clone(), profile.digest.clone());
        }
        if index == before {
            return Ok(());
        }
        let mut text = serde_json::to_string_pretty(&index).unwrap_or_default();
        text.push('\n');
        write_atomic(&self.dir, &self.dir.join(INDEX), text.as_bytes())
    }
}

fn is_profile_file(name: &str) -> bool {
    name.strip_suffix(".json")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses a profile document, checking its schema first so a newer one says so.
pub fn parse_profile(text: &str, path: &Path) -> Result<Profile> {
    check_schema(text, path)?;
    let profile: Profile = serde_json::from_str(text).map_err(|e| PolicyError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(profile)
}

fn check_schema(text: &str, path: &Path) -> Result<()> {
    let corrupt = |reason: String| PolicyError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let schema = value
        .get("schema")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("no \"schema\" number at the top level".into()))?;
    if schema > u64::from(SCHEMA) {
        return Err(PolicyError::NewerSchema {
            path: path.to_path_buf(),
            found: schema,
            supported: SCHEMA,
        });
    }
    if schema == 0 {
        return Err(corrupt(
            "schema 0 does not exist; the first schema is 1".into(),
        ));
    }
    Ok(())
}

/// Writes `data` to `target` atomically: temp file in `dir`, fsync, rename, fsync `dir`.
pub fn write_atomic(dir: &Path, target: &Path, data: &[u8]) -> Result<()> {
    let fail = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| PolicyError::Write { step, path, source }
    };
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(fail("create a temporary file in", dir))?;
    temp.write_all(data).map_err(fail("write", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(fail("fsync", temp.path()))?;
    temp.persist(target).map_err(|e| PolicyError::Write {
        step: "rename a temporary file onto",
        path: target.to_path_buf(),
        source: e.error,
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail("fsync the folder", dir))
}
