//! Which mode a container runs in: its annotations, bounded by the node config.
//!
//! [`resolve`] is pure: the bundle's OCI annotations, a [`ModePolicy`] (the node config's
//! view of modes) and a [`ProfileLookup`] (what the store knows) go in, a [`ModeDecision`]
//! or a [`ModeError`] comes out. What the node can actually do is not its business: that is
//! [`fail::decide`], which runs next and may refuse or degrade the decision (never silently).

pub mod fail;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Annotation prefix owned by vigil; every key below it must be known.
pub const ANNOTATION_PREFIX: &str = "vigil.dev/";
/// Requested mode for every container of the pod.
pub const MODE_KEY: &str = "vigil.dev/mode";
/// Prefix of the per-container mode key, `vigil.dev/mode.<container-name>`.
pub const MODE_CONTAINER_PREFIX: &str = "vigil.dev/mode.";
/// Names a profile from the store's index, used read-only instead of the image's.
pub const PROFILE_KEY: &str = "vigil.dev/profile";
/// CRI: the container's name in the pod spec.
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// CRI: `sandbox` for the pod's pause container, `container` otherwise.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI: the pod's Kubernetes namespace.
pub const CRI_POD_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// CRI: the pod's name.
pub const CRI_POD_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// The kubelet's own pod-namespace key, which some CRI implementations also pass as an
/// annotation; read when containerd's is absent.
pub const KUBELET_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The kubelet's own pod-name key (see [`KUBELET_POD_NAMESPACE`]).
pub const KUBELET_POD_NAME: &str = "io.kubernetes.pod.name";
/// CRI: the image name the kubelet asked for.
pub const CRI_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

use crate::config::NodeConfig;
pub use crate::config::{FailPolicy, Mode, UnknownMode};

impl Mode {
    /// Whether this mode compares behaviour with a profile (and so needs a usable one).
    pub fn needs_profile(self) -> bool {
        matches!(self, Mode::Monitor | Mode::Enforce)
    }
}

/// A set of modes, printed in the docs' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModeSet(u8);

impl ModeSet {
    /// Every mode.
    pub const ALL: ModeSet = ModeSet(0b1111);

    /// No mode.
    pub const fn empty() -> ModeSet {
        ModeSet(0)
    }

    fn bit(mode: Mode) -> u8 {
        1 << (mode as u8)
    }

    /// Whether `mode` is in the set.
    pub fn contains(self, mode: Mode) -> bool {
        self.0 & Self::bit(mode) != 0
    }

    /// The set with `mode` added.
    pub fn with(self, mode: Mode) -> ModeSet {
        ModeSet(self.0 | Self::bit(mode))
    }

    /// The modes in the set, in the docs' order.
    pub fn iter(self) -> impl Iterator<Item = Mode> {
        Mode::ALL.into_iter().filter(move |m| self.contains(*m))
    }
}

impl FromIterator<Mode> for ModeSet {
    fn from_iter<I: IntoIterator<Item = Mode>>(iter: I) -> Self {
        iter.into_iter().fold(ModeSet::empty(), ModeSet::with)
    }
}

impl fmt::Display for ModeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Mode::as_str).collect();
        if names.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&names.join(", "))
    }
}

/// The node config's rules about modes, as [`resolve`] needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModePolicy {
    /// Mode for containers that ask for none; `None` means monitor when the profile is
    /// stable, else learn.
    pub default_mode: Option<Mode>,
    /// Modes any namespace may ask for, unless `namespaces` says otherwise for it.
    pub allowed_modes: ModeSet,
    /// Per Kubernetes namespace: the modes pods there may ask for.
    pub namespace_modes: BTreeMap<String, ModeSet>,
    /// Who may use `vigil.dev/profile`.
    pub profile_annotation: ProfileAnnotationRule,
}

impl Default for ModePolicy {
    fn default() -> Self {
        ModePolicy {
            default_mode: None,
            allowed_modes: ModeSet::ALL,
            namespace_modes: BTreeMap::new(),
            profile_annotation: ProfileAnnotationRule::Everyone,
        }
    }
}

impl ModePolicy {
    /// The modes a pod in `namespace` may ask for (`None`: not started by CRI).
    pub fn allowed_for(&self, namespace: Option<&str>) -> ModeSet {
        namespace
            .and_then(|ns| self.namespace_modes.get(ns).copied())
            .unwrap_or(self.allowed_modes)
    }
}

impl From<&NodeConfig> for ModePolicy {
    fn from(config: &NodeConfig) -> Self {
        let set = |modes: &[Mode]| modes.iter().copied().collect::<ModeSet>();
        let namespace_modes = config
            .namespaces
            .iter()
            .map(|(ns, policy)| (ns.clone(), set(&policy.allowed_modes)))
            .collect();
        let profile_annotation = match &config.profile_annotation_namespaces {
            None => ProfileAnnotationRule::Everyone,
            Some(list) if list.is_empty() => ProfileAnnotationRule::Nobody,
            Some(list) => ProfileAnnotationRule::Namespaces(list.clone()),
        };
        ModePolicy {
            default_mode: config.default_mode,
            allowed_modes: set(&config.allowed_modes),
            namespace_modes,
            profile_annotation,
        }
    }
}

/// Who may name a profile with `vigil.dev/profile`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProfileAnnotationRule {
    /// Any pod.
    #[default]
    Everyone,
    /// No pod.
    Nobody,
    /// Only pods in these Kubernetes namespaces (never a container started without CRI).
    Namespaces(Vec<String>),
}

impl ProfileAnnotationRule {
    fn permits(&self, namespace: Option<&str>) -> bool {
        match self {
            ProfileAnnotationRule::Everyone => true,
            ProfileAnnotationRule::Nobody => false,
            ProfileAnnotationRule::Namespaces(list) => {
                namespace.is_some_and(|ns| list.iter().any(|n| n == ns))
            }
        }
    }
}

/// Where a profile stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileState {
    /// Still collecting behaviour.
    Learning,
    /// Quiet long enough to compare against.
    Stable,
}

/// The answer to "is there a profile named X in the store's index".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedProfile {
    /// Found, in this state.
    Found(ProfileState),
    /// Not in the index; these names are (for the error message).
    NotFound {
        /// Names the index holds.
        available: Vec<String>,
    },
}

/// What the profile store knows, as far as mode resolution needs it.
pub trait ProfileLookup {
    /// State of the profile keyed by this container's image, `None` if there is none.
    fn image_profile(&self) -> Option<ProfileState>;
    /// Looks a name up in the store's index.
    fn named_profile(&self, name: &str) -> NamedProfile;
}

/// [`ProfileLookup`] over the profile store: the image's profile by digest, names from the
/// store's index.
///
/// A profile that cannot be read counts as absent for the image (the default mode is then
/// learn) and as `learning` for a name the index holds; either way the guard's load of the
/// profile reports it to the fail policy as [`fail::ProfileHealth::Corrupt`].
pub struct StoreLookup<'a> {
    store: &'a vigil_policy::Store,
    image: Option<&'a vigil_policy::Digest>,
}

impl<'a> StoreLookup<'a> {
    /// Looks up in `store`; `image` is the container's image config digest, if known.
    pub fn new(store: &'a vigil_policy::Store, image: Option<&'a vigil_policy::Digest>) -> Self {
        StoreLookup { store, image }
    }

    fn state_of(&self, digest: &vigil_policy::Digest) -> Result<Option<ProfileState>, String> {
        let profile = self.store.load(digest).map_err(|e| e.to_string())?;
        Ok(profile.map(|p| match p.state {
            vigil_policy::State::Learning => ProfileState::Learning,
            vigil_policy::State::Stable => ProfileState::Stable,
        }))
    }
}

impl ProfileLookup for StoreLookup<'_> {
    fn image_profile(&self) -> Option<ProfileState> {
        let digest = self.image?;
        self.state_of(digest).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "image profile unreadable; resolving as if absent");
            None
        })
    }

    fn named_profile(&self, name: &str) -> NamedProfile {
        let index = match self.store.index() {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(error = %e, "profile index unreadable");
                return NamedProfile::NotFound {
                    available: Vec::new(),
                };
            }
        };
        match index.names.get(name) {
            Some(digest) => match self.state_of(digest) {
                Ok(Some(state)) => NamedProfile::Found(state),
                Ok(None) | Err(_) => NamedProfile::Found(ProfileState::Learning),
            },
            None => NamedProfile::NotFound {
                available: index.names.into_keys().collect(),
            },
        }
    }
}

/// Which profile the container's mode applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileChoice {
    /// The profile keyed by the image's digest (created by learning if missing).
    Image,
    /// A profile named by `vigil.dev/profile`, used read-only.
    Named(String),
}

/// Where the mode came from, for logs and audit events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeSource {
    /// The pod's sandbox (pause) container: always `off`.
    Sandbox,
    /// `vigil.dev/mode.<container-name>`.
    ContainerAnnotation(String),
    /// `vigil.dev/mode`.
    PodAnnotation,
    /// The node config's `default_mode`.
    NodeDefault,
    /// No annotation, no `default_mode`: monitor for a stable profile, else learn.
    ProfileState,
}

impl fmt::Display for ModeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModeSource::Sandbox => f.write_str("pod sandbox"),
            ModeSource::ContainerAnnotation(key) => write!(f, "annotation {key}"),
            ModeSource::PodAnnotation => write!(f, "annotation {MODE_KEY}"),
            ModeSource::NodeDefault => f.write_str("node config default_mode"),
            ModeSource::ProfileState => f.write_str("default (profile state)"),
        }
    }
}

/// The resolved request: what the container asked for, within what the node config allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeDecision {
    /// The mode the container should run in, before the fail policy looks at the node.
    pub mode: Mode,
    /// Where it came from.
    pub source: ModeSource,
    /// Which profile applies.
    pub profile: ProfileChoice,
    /// State of the chosen profile, `None` if it does not exist yet.
    pub profile_state: Option<ProfileState>,
    /// CRI container name, if CRI started the container.
    pub container_name: Option<String>,
    /// Kubernetes namespace, if CRI started the container.
    pub namespace: Option<String>,
    /// Whether this is the pod's sandbox (pause) container.
    pub sandbox: bool,
}

/// Why a container's annotations were refused. Always refuses the container, whatever the
/// fail policy: the request is wrong, not the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// A `vigil.dev/*` key vigil does not know.
    #[error(
        "unknown annotation {key:?} (value {value:?}): allowed keys are {MODE_KEY}, \
         {MODE_CONTAINER_PREFIX}<container-name>, {PROFILE_KEY}; remove or fix it"
    )]
    UnknownKey {
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
    /// A mode annotation with a value that is not a mode.
    #[error(
        "annotation {key:?} has unknown value {value:?}: allowed values are learn, monitor, \
         enforce, off"
    )]
    UnknownMode {
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
    /// `vigil.dev/profile` names a profile the store's index lacks.
    #[error(
        "annotation {PROFILE_KEY:?} has unknown value {value:?}: allowed values are the names \
         in the profile store's index ({available}); import it with `vigil profile import` or \
         fix the name"
    )]
    UnknownProfile {
        /// The value.
        value: String,
        /// The names the index holds, comma-separated (`none` if empty).
        available: String,
    },
    /// `vigil.dev/profile` used where the node config forbids it.
    #[error(
        "annotation {PROFILE_KEY:?} (value {value:?}) is not allowed for {who} by the node \
         config; remove it or ask the node operator"
    )]
    ProfileNotPermitted {
        /// The value.
        value: String,
        /// `namespace "x"` or `containers started without CRI`.
        who: String,
    },
    /// A named profile is read-only, so it cannot be learned into.
    #[error(
        "annotation {PROFILE_KEY:?} (value {value:?}) names a read-only profile, but the mode \
         is learn (from {origin}); learn into the image's own profile by removing \
         {PROFILE_KEY}, or ask for monitor or enforce"
    )]
    LearnNamedProfile {
        /// The value.
        value: String,
        /// Where `learn` came from.
        origin: ModeSource,
    },
    /// The mode is outside what the node config allows here.
    #[error(
        "mode {mode} (from {origin}) is not allowed in {namespace}: allowed modes are {allowed}"
    )]
    NotAllowed {
        /// The mode.
        mode: Mode,
        /// Where it came from.
        origin: ModeSource,
        /// `namespace "x"` or `containers started without CRI`.
        namespace: String,
        /// What is allowed there.
        allowed: ModeSet,
    },
}

/// Resolves the mode of one container from its bundle's annotations.
///
/// The sandbox container always gets `off` and never an error, so a pod never fails because
/// of its pause container; its application containers carry the same pod annotations and
/// report any mistake.
pub fn resolve(
    annotations: &HashMap<String, String>,
    policy: &ModePolicy,
    profiles: &dyn ProfileLookup,
) -> Result<ModeDecision, ModeError> {
    let container_name = annotations.get(CRI_CONTAINER_NAME).cloned();
    let namespace = annotations
        .get(CRI_POD_NAMESPACE)
        .or_else(|| annotations.get(KUBELET_POD_NAMESPACE))
        .cloned();
    if annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("sandbox") {
        return Ok(sandbox_decision(container_name, namespace));
    }

    let request = parse_request(annotations, container_name.as_deref())?;
    let (profile, profile_state) =
        choose_profile(&request, policy, namespace.as_deref(), profiles)?;
    let (mode, source) = match request.mode {
        Some((mode, source)) => (mode, source),
        None => default_mode(policy, &profile, profile_state),
    };

    check_allowed(mode, &source, policy, namespace.as_deref())?;
    if let (Mode::Learn, ProfileChoice::Named(value)) = (mode, &profile) {
        let value = value.clone();
        return Err(ModeError::LearnNamedProfile {
            value,
            origin: source,
        });
    }
    Ok(ModeDecision {
        mode,
        source,
        profile,
        profile_state,
        container_name,
        namespace,
        sandbox: false,
    })
}

fn sandbox_decision(container_name: Option<String>, namespace: Option<String>) -> ModeDecision {
    ModeDecision {
        mode: Mode::Off,
        source: ModeSource::Sandbox,
        profile: ProfileChoice::Image,
        profile_state: None,
        container_name,
        namespace,
        sandbox: true,
    }
}

/// The `vigil.dev/*` annotations, checked for unknown keys and values.
#[derive(Debug, Default)]
struct Request {
    mode: Option<(Mode, ModeSource)>,
    profile: Option<String>,
}

fn parse_request(
    annotations: &HashMap<String, String>,
    container_name: Option<&str>,
) -> Result<Request, ModeError> {
    // Sorted, so that with several mistakes the same one is always reported first.
    let ours: BTreeMap<&str, &str> = annotations
        .iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let mut pod_mode = None;
    let mut container_mode = None;
    let mut request = Request::default();
    for (key, value) in ours {
        if key == MODE_KEY {
            pod_mode = Some(parse_mode(key, value)?);
        } else if let Some(name) = key.strip_prefix(MODE_CONTAINER_PREFIX) {
            // Every per-container key is checked, not only this container's, so one typo
            // fails every container of the pod the same way.
            let mode = parse_mode(key, value)?;
            if !is_container_name(name) {
                return Err(unknown_key(key, value));
            }
            if Some(name) == container_name {
                container_mode = Some((mode, ModeSource::ContainerAnnotation(key.to_owned())));
            }
        } else if key == PROFILE_KEY {
            request.profile = Some(value.to_owned());
        } else {
            return Err(unknown_key(key, value));
        }
    }

    request.mode = container_mode.or(pod_mode.map(|m| (m, ModeSource::PodAnnotation)));
    Ok(request)
}

fn parse_mode(key: &str, value: &str) -> Result<Mode, ModeError> {
    value.parse().map_err(|_| ModeError::UnknownMode {
        key: clip(key),
        value: clip(value),
    })
}

fn unknown_key(key: &str, value: &str) -> ModeError {
    ModeError::UnknownKey {
        key: clip(key),
        value: clip(value),
    }
}

/// At most 200 characters of an annotation's key or value for an error message (a value can
/// be as long as the pod spec allows; the message must stay readable).
fn clip(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... ({} bytes in all)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

/// A Kubernetes container name: a DNS-1123 label.
fn is_container_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(allowed)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn choose_profile(
    request: &Request,
    policy: &ModePolicy,
    namespace: Option<&str>,
    profiles: &dyn ProfileLookup,
) -> Result<(ProfileChoice, Option<ProfileState>), ModeError> {
    let Some(name) = &request.profile else {
        return Ok((ProfileChoice::Image, profiles.image_profile()));
    };
    if !policy.profile_annotation.permits(namespace) {
        let who = describe_namespace(namespace);
        return Err(ModeError::ProfileNotPermitted {
            value: name.clone(),
            who,
        });
    }
    match profiles.named_profile(name) {
        NamedProfile::Found(state) => Ok((ProfileChoice::Named(name.clone()), Some(state))),
        NamedProfile::NotFound { available } => Err(ModeError::UnknownProfile {
            value: name.clone(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        }),
    }
}

fn default_mode(
    policy: &ModePolicy,
    profile: &ProfileChoice,
    state: Option<ProfileState>,
) -> (Mode, ModeSource) {
    if let Some(mode) = policy.default_mode {
        return (mode, ModeSource::NodeDefault);
    }
    // A named profile is read-only: there is nothing to learn into, so compare with it.
    let compare = matches!(profile, ProfileChoice::Named(_)) || state == Some(ProfileState::Stable);
    let mode = if compare { Mode::Monitor } else { Mode::Learn };
    (mode, ModeSource::ProfileState)
}

fn check_allowed(
    mode: Mode,
    source: &ModeSource,
    policy: &ModePolicy,
    namespace: Option<&str>,
) -> Result<(), ModeError> {
    let allowed = policy.allowed_for(namespace);
    if allowed.contains(mode) {
        return Ok(());
    }
    Err(ModeError::NotAllowed {
        mode,
        origin: source.clone(),
        namespace: describe_namespace(namespace),
        allowed,
    })
}

fn describe_namespace(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("namespace {ns:?}"),
        None => "containers started without CRI".to_owned(),
    }
}

#[cfg(test)]
mod tests;
