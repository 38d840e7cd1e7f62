//! The guard that learns, monitors and enforces: everything between the task service and the
//! profile store, the eBPF programs, seccomp and the audit log.
//!
//! At Create ([`VigilGuard::prepare`], before `runc create`):
//! 1. the pod's sandbox container is left alone (it must never fail a pod);
//! 2. the image's config digest is resolved through containerd;
//! 3. the mode is resolved from the annotations within the node config ([`crate::mode`]); a
//!    bad annotation refuses the container whatever the fail policy;
//! 4. the profile is loaded and compiled, the node's capabilities and the audit log checked,
//!    and the fail policy decides the effective mode ([`crate::mode::fail`]), refusing or
//!    degrading with an audit event, never silently;
//! 5. for monitor and enforce, a seccomp user-notification listener is bound and the
//!    profile's seccomp section, which sends every syscall outside the profile to it, is
//!    written into `config.json` for runc to install.
//!
//! After `runc create` ([`watch::Watch::created`]), the container's cgroup is registered in the
//! node's eBPF maps (with its exec and network allow sets), the file guard is put on its
//! rootfs, and a task reads its events into the learner or the audit log until Delete.

mod plan;
mod procinfo;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use vigil_policy::{Digest, RuntimeFloor, Store};

use super::{ContainerGuard, CreateRequest, Guard, GuardError, NoGuard};
use crate::audit::{AuditConfig, AuditHandle, ContainerAudit, ContainerIdentity};
use crate::bpf::Node;
use crate::config::{Mode, NodeConfig};
use crate::image::resolve_image;
use crate::mode::fail::{self, AuditHealth, Missing, NodeSupport, ProfileHealth};
use crate::mode::{self, ModePolicy, ProfileChoice, StoreLookup};
use crate::node_caps::{self, ProbeConfig};

use plan::Plan;
use watch::{Watch, WatchSetup};

/// An audit writer's destination: the log file and the HTTP URL.
type AuditKey = (PathBuf, Option<String>);

/// The node's guard: one per shim process, shared by the containers it serves.
pub struct VigilGuard {
    /// containerd's gRPC socket, for image lookups.
    containerd_address: String,
    /// The eBPF program set, per pin root (one in practice).
    nodes: Mutex<HashMap<PathBuf, Node>>,
    /// Audit writers, per (log, URL).
    audits: Mutex<HashMap<AuditKey, (AuditHandle, AuditHealth)>>,
}

impl VigilGuard {
    /// A guard that asks the containerd at `containerd_address` about images.
    pub fn new(containerd_address: &str) -> VigilGuard {
        VigilGuard {
            containerd_address: containerd_address.to_string(),
            nodes: Mutex::new(HashMap::new()),
            audits: Mutex::new(HashMap::new()),
        }
    }

    fn audit(&self, config: &NodeConfig) -> (AuditHandle, AuditHealth) {
        let key = (config.audit_log.clone(), config.audit_http_url.clone());
        let mut audits = self.audits.lock().unwrap_or_else(|e| e.into_inner());
        audits
            .entry(key)
            .or_insert_with(|| AuditHandle::start_or_degrade(AuditConfig::from(config)))
            .clone()
    }

    fn node(&self, pin_root: &Path) -> Result<Node, String> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(node) = nodes.get(pin_root) {
            return Ok(node.clone());
        }
        let node = Node::open(pin_root).map_err(|e| e.to_string())?;
        nodes.insert(pin_root.to_path_buf(), node.clone());
        Ok(node)
    }
}

/// What Create learned about the container's image.
struct ImageInfo {
    /// The name for people and audit events.
    name: String,
    /// The profile store's key; `None` when containerd could not say.
    digest: Option<Digest>,
    /// Why the digest is missing.
    error: Option<String>,
}

#[async_trait]
impl Guard for VigilGuard {
    async fn prepare(
        &self,
        req: &CreateRequest<'_>,
    ) -> Result<Box<dyn ContainerGuard>, GuardError> {
        let annotations = req.annotations;
        if annotations
            .get(mode::CRI_CONTAINER_TYPE)
            .map(String::as_str)
            == Some("sandbox")
        {
            return NoGuard.prepare(req).await;
        }
        let config = req.config;
        let store = Store::at(&config.state_dir);
        let policy = ModePolicy::from(config);
        // A mode that does not depend on the image's profile (an annotation, the node's
        // default_mode) is known without asking containerd about the image: `off` ends here.
        let early = mode::resolve(annotations, &policy, &StoreLookup::new(&store, None))
            .map_err(|e| GuardError::InvalidRequest(e.to_string()))?;
        if early.mode == Mode::Off && early.source != mode::ModeSource::ProfileState {
            tracing::info!(id = req.id, source = %early.source, "mode off");
            return NoGuard.prepare(req).await;
        }
        let image = self.image(req).await;
        let lookup = StoreLookup::new(&store, image.digest.as_ref());
        let decision = mode::resolve(annotations, &policy, &lookup)
            .map_err(|e| GuardError::InvalidRequest(e.to_string()))?;
        if decision.mode == Mode::Off {
            tracing::info!(id = req.id, source = %decision.source, "mode off");
            return NoGuard.prepare(req).await;
        }

        let caps = node_caps::probe_cached_on_disk(
            &ProbeConfig::from(config),
            &config.state_dir.join("node-caps.json"),
        );
        let mut support = caps.support();
        let runc_version = caps.runc_version.clone().unwrap_or_default();
        // The floor for a filter with a listener (see `RuntimeFloor::with_listener`): runc
        // init's calls under the filter beyond it reach the listener, which allows them.
        let floor = RuntimeFloor::for_runc(&runc_version)
            .map(|f| f.with_listener(plan::no_new_privileges(req.bundle)));
        if let Err(e) = &floor {
            lack_everywhere(
                &mut support,
                Missing::new(
                    format!("a runtime floor for the OCI runtime ({e})"),
                    "use runc 1.1 (the floor vigil ships), or set runc_binary in the node config",
                ),
            );
        }
        if let Some(why) = &image.error {
            lack_everywhere(
                &mut support,
                Missing::new(
                    format!("the image's config digest ({why})"),
                    "check that containerd knows the container's image (`ctr images ls`)",
                ),
            );
        }
        if let Err(e) = std::fs::create_dir_all(store.dir()) {
            lack_everywhere(
                &mut support,
                Missing::new(
                    format!("a writable state_dir {} ({e})", config.state_dir.display()),
                    "create it or point state_dir in the node config elsewhere",
                ),
            );
        }
        let node = match self.node(&config.bpf_pin_root) {
            Ok(node) => Some(node),
            Err(e) => {
                lack_everywhere(
                    &mut support,
                    Missing::new(
                        format!(
                            "the eBPF programs under {} ({e})",
                            config.bpf_pin_root.display()
                        ),
                        "run `vigil doctor` for the cause",
                    ),
                );
                None
            }
        };

        let loaded = if decision.mode.needs_profile() {
            let floor_ok = floor.as_ref().ok();
            match plan::load(&store, &decision.profile, image.digest.as_ref()) {
                Ok(Some((digest, profile))) => match floor_ok {
                    Some(floor) => Plan::new(digest, profile, floor).map(Some),
                    None => Ok(None),
                },
                Ok(None) => Err(ProfileHealth::Missing),
                Err(health) => Err(health),
            }
        } else {
            Ok(None)
        };
        let health = match &loaded {
            Ok(_) => ProfileHealth::Usable,
            Err(h) => h.clone(),
        };
        let (audit, audit_health) = self.audit(config);
        let effective = fail::decide(
            &decision,
            config.fail_policy,
            &support,
            &health,
            &audit_health,
        )
        .map_err(|refusal| GuardError::Unavailable(refusal.to_string()))?;

        let profile_ref = match (&decision.profile, &loaded) {
            (ProfileChoice::Named(name), _) => Some(name.clone()),
            (_, Ok(Some(plan))) => Some(plan.digest.to_string()),
            _ => image.digest.as_ref().map(|d| d.to_string()),
        };
        let mut identity = ContainerIdentity::new(req.id, &image.name)
            .map_err(|e| GuardError::InvalidRequest(e.to_string()))?;
        identity.image_digest = image.digest.as_ref().map(|d| d.to_string());
        identity.name = decision.container_name.clone();
        identity.k8s_namespace = decision.namespace.clone();
        identity.pod = annotations
            .get(mode::CRI_POD_NAME)
            .or_else(|| annotations.get(mode::KUBELET_POD_NAME))
            .cloned();
        let context = ContainerAudit::new(identity, effective.mode, profile_ref);
        for notice in &effective.notices {
            audit.emit(context.start_notice(notice));
        }
        if decision.source == mode::ModeSource::ProfileState {
            if let (Some(digest), Some(previous)) = (
                &image.digest,
                default_mode_changed(&config.state_dir, image.digest.as_ref(), effective.mode),
            ) {
                tracing::info!(%digest, from = %previous, to = %effective.mode, "default mode changed");
                audit.emit(context.mode_change(
                    previous,
                    "the image's profile changed state, and with it the default mode of its \
                     containers",
                ));
            }
        }
        tracing::info!(
            id = req.id,
            image = %image.name,
            requested = %effective.requested,
            mode = %effective.mode,
            source = %decision.source,
            tier = ?caps.tier.tier,
            "vigil mode"
        );
        let (Some(node), Some(digest)) = (node, image.digest.clone()) else {
            // Only reachable under fail_policy = open with the node or the image unusable,
            // which the notices above reported.
            return NoGuard.prepare(req).await;
        };
        if effective.mode == Mode::Off {
            return NoGuard.prepare(req).await;
        }

        let plan = match (effective.mode, loaded) {
            (Mode::Monitor | Mode::Enforce, Ok(Some(plan))) => Some(plan),
            _ => None,
        };
        let seccomp = match (&plan, &floor) {
            (Some(plan), Ok(floor)) => {
                let listener = listener_path(&config.state_dir, req.namespace, req.id)?;
                let compiled = plan::write_seccomp(req.bundle, plan, floor, &listener, req.id)
                    .map_err(|e| {
                        GuardError::Unavailable(format!(
                            "cannot write the profile's seccomp filter: {e}"
                        ))
                    })?;
                Some((listener, compiled))
            }
            _ => None,
        };
        let lsm =
            caps.tier.tier == node_caps::Tier::Lsm && matches!(node.tier(), crate::bpf::Tier::Lsm);
        let setup = WatchSetup {
            lsm,
            id: req.id.to_string(),
            mode: effective.mode,
            fail_policy: config.fail_policy,
            rootfs: req.bundle.join("rootfs"),
            runtime: (!runc_version.is_empty()).then(|| format!("runc {runc_version}")),
            image_name: image.name.clone(),
            digest,
            store,
            keys: crate::cli::learning_keys(config),
            node,
            audit,
            context,
            plan,
            seccomp,
        };
        let watch = Watch::prepare(setup).map_err(GuardError::Unavailable)?;
        Ok(Box::new(watch))
    }
}

impl VigilGuard {
    async fn image(&self, req: &CreateRequest<'_>) -> ImageInfo {
        let cri_name = req
            .annotations
            .get(mode::CRI_IMAGE_NAME)
            .map(String::as_str);
        let resolved =
            resolve_image(&self.containerd_address, req.namespace, req.id, cri_name).await;
        match resolved {
            Ok(image) => {
                let digest = Digest::parse(&image.config_digest);
                let error = digest.as_ref().err().map(|e| e.to_string());
                ImageInfo {
                    name: image.name,
                    digest: digest.ok(),
                    error,
                }
            }
            Err(e) => ImageInfo {
                name: cri_name.unwrap_or("unknown").to_string(),
                digest: None,
                error: Some(e.to_string()),
            },
        }
    }
}

/// What a dead shim leaves behind for the `delete` action to clean: its container's
/// registration in the node's eBPF maps (dropped once the cgroup is gone, which runc's
/// delete ensures) and its seccomp listener's socket.
pub fn cleanup_after_dead_shim(config: &NodeConfig, namespace: &str, id: &str) {
    let pins = config.bpf_pin_root.join(crate::bpf::object_version());
    if pins.join("maps").exists() {
        // Opening the program set reconciles it: registrations whose cgroup is gone go.
        if let Err(e) = Node::open(&config.bpf_pin_root) {
            tracing::warn!(id, error = %e, "reconcile the eBPF registrations after shim death");
        }
    }
    let _ = std::fs::remove_file(listener_socket(&config.state_dir, namespace, id));
}

/// Records the default mode an image's containers got (`<state_dir>/modes/<digest>`) and
/// returns the previous one when it differs.
fn default_mode_changed(state_dir: &Path, digest: Option<&Digest>, mode: Mode) -> Option<Mode> {
    let dir = state_dir.join("modes");
    let path = dir.join(digest?.hex());
    let previous: Option<Mode> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    if previous == Some(mode) {
        return None;
    }
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = std::fs::write(&path, mode.as_str()) {
        tracing::warn!(path = %path.display(), error = %e, "record the default mode");
    }
    previous
}

/// Adds `missing` to what every guarded mode lacks.
fn lack_everywhere(support: &mut NodeSupport, missing: Missing) {
    for slot in [
        &mut support.learn,
        &mut support.monitor,
        &mut support.enforce,
    ] {
        match slot {
            Ok(()) => *slot = Err(vec![missing.clone()]),
            Err(list) => list.push(missing.clone()),
        }
    }
}

/// Where the notify listener's socket of a container is (nothing is created).
fn listener_socket(state_dir: &Path, namespace: &str, id: &str) -> PathBuf {
    let hash = Sha256::digest(format!("{namespace}/{id}").as_bytes());
    let name: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    state_dir.join("notify").join(format!("{name}.sock"))
}

/// The notify listener's socket: short (a unix socket path has 107 bytes), private to the
/// node's state folder, one per container.
fn listener_path(state_dir: &Path, namespace: &str, id: &str) -> Result<PathBuf, GuardError> {
    let path = listener_socket(state_dir, namespace, id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| GuardError::Unavailable(format!("create {}: {e}", dir.display())))?;
    }
    if path.as_os_str().len() > 107 {
        return Err(GuardError::Unavailable(format!(
            "the seccomp listener socket {} is longer than a unix socket path may be (107 \
             bytes); set a shorter state_dir in the node config",
            path.display()
        )));
    }
    Ok(path)
}
