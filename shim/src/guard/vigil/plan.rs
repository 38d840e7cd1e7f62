//! What a monitored or enforced container is compared with: the profile loaded from the store,
//! compiled into the seccomp section runc installs and the allow sets the kernel programs
//! check.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use vigil_policy::model::{Access, Direction, Family, Protocol};
use vigil_policy::net::Peer;
use vigil_policy::seccomp::{self, CompiledSeccomp, Deviations, OciSeccomp};
use vigil_policy::{Digest, Matcher, Profile, RuntimeFloor, Store};

use crate::bpf::{ExecRule, FileRule, LsmPolicy, NetDirection, NetRule, Protocol as BpfProtocol};
use crate::mode::fail::ProfileHealth;
use crate::mode::ProfileChoice;

/// A profile ready to compare with.
pub struct Plan {
    /// The store's key of the profile (`sha256:...`).
    pub digest: Digest,
    /// The profile as loaded.
    pub profile: Profile,
    /// Checks for user-space decisions (files, monitor reports).
    pub matcher: Matcher,
    /// Exec identities, as the kernel compares them: (resolved file, program).
    pub execs: HashSet<(String, String)>,
}

/// Loads the profile a container's mode applies to. `Ok(None)` when there is none.
pub fn load(
    store: &Store,
    choice: &ProfileChoice,
    image: Option<&Digest>,
) -> Result<Option<(Digest, Profile)>, ProfileHealth> {
    let digest = match choice {
        ProfileChoice::Image => match image {
            Some(d) => d.clone(),
            None => return Ok(None),
        },
        ProfileChoice::Named(name) => store
            .resolve(name)
            .map_err(|e| ProfileHealth::Corrupt(e.to_string()))?,
    };
    match store.load(&digest) {
        Ok(Some(profile)) => Ok(Some((digest, profile))),
        Ok(None) => Ok(None),
        Err(e) => Err(ProfileHealth::Corrupt(e.to_string())),
    }
}

impl Plan {
    /// Prepares `profile` with the runtime floor. An empty profile (nothing learned) is
    /// refused: it would deny the container's entrypoint.
    pub fn new(
        digest: Digest,
        profile: Profile,
        floor: &RuntimeFloor,
    ) -> Result<Plan, ProfileHealth> {
        let body = &profile.body;
        if body.syscalls.is_empty() || body.execs.is_empty() {
            return Err(ProfileHealth::Empty(format!(
                "profile {digest} has {} syscalls and {} execs learned",
                body.syscalls.len(),
                body.execs.len()
            )));
        }
        let matcher = Matcher::new(body, Some(floor));
        let execs = body
            .execs
            .keys()
            .map(|k| (k.path.clone(), k.program.clone()))
            .collect();
        Ok(Plan {
            digest,
            profile,
            matcher,
            execs,
        })
    }

    /// The kernel's exec allow set. A file run under its own name is allowed under any name;
    /// a multi-call binary (busybox) only under the applet names the profile has.
    pub fn exec_rules(&self) -> Vec<ExecRule> {
        let mut rules: Vec<ExecRule> = self
            .execs
            .iter()
            .map(|(path, program)| {
                let base = path.rsplit('/').next().unwrap_or(path);
                if base == program {
                    ExecRule::Path(path.clone())
                } else {
                    ExecRule::Applet {
                        path: path.clone(),
                        name: program.clone(),
                    }
                }
            })
            .collect();
        rules.sort_by_key(|r| format!("{r:?}"));
        rules.dedup();
        rules
    }

    /// Whether an exec is allowed, as the kernel decides it (file and program; see
    /// [`Plan::exec_rules`]).
    pub fn allows_exec(&self, path: &str, program: &str) -> bool {
        let base = path.rsplit('/').next().unwrap_or(path);
        self.execs
            .contains(&(path.to_string(), program.to_string()))
            || self.execs.contains(&(path.to_string(), base.to_string()))
    }

    /// The LSM tier's file rules: one per path pattern, with the accesses the profile has.
    pub fn lsm_policy(&self) -> LsmPolicy {
        let mut files: std::collections::BTreeMap<&str, FileRule> = Default::default();
        for key in self.profile.body.files.keys() {
            let rule = files.entry(key.path.as_str()).or_insert_with(|| FileRule {
                pattern: key.path.clone(),
                read: false,
                write: false,
            });
            match key.access {
                Access::Read => rule.read = true,
                Access::Write | Access::Create => rule.write = true,
                Access::Exec => {}
            }
        }
        LsmPolicy {
            files: files.into_values().collect(),
            mount: self.matcher.allows_syscall_name("mount"),
        }
    }

    /// The kernel's network allow set (inet entries; unix sockets are not checked there).
    pub fn net_rules(&self) -> Vec<NetRule> {
        let mut rules = Vec::new();
        for key in self.profile.body.network.keys() {
            if key.family == Family::Unix {
                continue;
            }
            let protocol = match key.protocol {
                Protocol::Tcp => BpfProtocol::Tcp,
                Protocol::Udp => BpfProtocol::Udp,
                _ => continue,
            };
            let direction = match key.direction {
                Direction::Connect => NetDirection::Connect,
                Direction::Send => NetDirection::Send,
                Direction::Bind | Direction::Listen => NetDirection::Bind,
                Direction::Accept => continue,
            };
            let (addr, prefix_len) = match &key.peer {
                Peer::Range { addr, prefix } => (*addr, *prefix),
                Peer::Any => match key.family {
                    Family::Inet6 => (std::net::Ipv6Addr::UNSPECIFIED.into(), 0),
                    _ => (std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
                },
                Peer::Path(_) => continue,
            };
            rules.push(NetRule {
                direction,
                protocol,
                addr,
                prefix_len,
                port: key.port,
            });
        }
        rules
    }
}

/// Compiles the plan's seccomp section, sending every syscall outside it to the listener at
/// `listener`, and writes it into `<bundle>/config.json` (atomically: temp file, fsync,
/// rename), intersected with a filter already there.
pub fn write_seccomp(
    bundle: &Path,
    plan: &Plan,
    floor: &RuntimeFloor,
    listener: &Path,
    container_id: &str,
) -> Result<CompiledSeccomp, String> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
    let existing = match spec.pointer("/linux/seccomp") {
        Some(v) if !v.is_null() => Some(
            serde_json::from_value::<OciSeccomp>(v.clone())
                .map_err(|e| format!("{}: linux.seccomp: {e}", path.display()))?,
        ),
        _ => None,
    };
    let deviations = Deviations::Notify {
        listener_path: listener.display().to_string(),
        listener_metadata: Some(container_id.to_string()),
    };
    let compiled = seccomp::compile(&plan.profile.body, floor, existing.as_ref(), &deviations)
        .map_err(|e| e.to_string())?;
    let linux = spec
        .as_object_mut()
        .ok_or_else(|| format!("{}: not a JSON object", path.display()))?
        .entry("linux")
        .or_insert_with(|| serde_json::json!({}));
    let linux = linux
        .as_object_mut()
        .ok_or_else(|| format!("{}: linux is not an object", path.display()))?;
    linux.insert("seccomp".into(), compiled.to_json());
    let data = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
    write_atomic(&path, &data).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(compiled)
}

/// Whether the spec's process runs with no_new_privileges.
pub fn no_new_privileges(bundle: &Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.pointer("/process/noNewPrivileges")
                .and_then(|b| b.as_bool())
        })
        .unwrap_or(false)
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
