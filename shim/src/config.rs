//! The node's vigil configuration (`/etc/vigil/config.toml`).
//!
//! Which file: the `ConfigPath` of the task's runtime options (containerd passes
//! `runtimeoptions.v1.Options` to non-runc runtimes), else the file named by `VIGIL_CONFIG`,
//! else `/etc/vigil/config.toml`. A missing default file means all defaults; a file named
//! explicitly must exist. An unknown key or a bad value is an error that names the file and
//! the line. Every key is documented in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Environment variable naming the config file when the runtime options do not.
pub const CONFIG_ENV: &str = "VIGIL_CONFIG";
/// Config file used when nothing names another.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vigil/config.toml";

/// What vigil does with a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Record behaviour into the image's profile.
    Learn,
    /// Report deviations from the profile, block nothing.
    Monitor,
    /// Block deviations in the kernel and report them.
    Enforce,
    /// Behave exactly like the stock runc shim.
    Off,
}

impl Mode {
    /// Every mode, in the order the docs list them.
    pub const ALL: [Mode; 4] = [Mode::Learn, Mode::Monitor, Mode::Enforce, Mode::Off];

    /// The annotation / config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Learn => "learn",
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
            Mode::Off => "off",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is not one of `learn`, `monitor`, `enforce`, `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: expected one of learn, monitor, enforce, off")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

/// What happens when the node cannot do what a valid request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    /// Refuse to start the container, naming the missing piece.
    #[default]
    Closed,
    /// Start it in monitor (or learn without a profile) and audit that.
    Open,
}

impl FailPolicy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailPolicy::Closed => "closed",
            FailPolicy::Open => "open",
        }
    }
}

impl fmt::Display for FailPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parsed node configuration, every key resolved to a value.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// File the values came from; `None` when the default file was absent.
    pub source: Option<PathBuf>,
    /// Mode for pods that ask for none; `None` = monitor if the image's profile is stable,
    /// else learn.
    pub default_mode: Option<Mode>,
    /// Modes any pod may ask for.
    pub allowed_modes: Vec<Mode>,
    /// Per Kubernetes namespace: modes its pods may ask for (replaces `allowed_modes`).
    pub namespaces: BTreeMap<String, NamespacePolicy>,
    /// Kubernetes namespaces whose pods may name a profile with `vigil.dev/profile`;
    /// `None` = any pod (and containers started without CRI), empty = nobody.
    pub profile_annotation_namespaces: Option<Vec<String>>,
    /// Refuse (`closed`) or degrade to monitor (`open`) when the node falls short.
    pub fail_policy: FailPolicy,
    /// The OCI runtime binary, a path or a name looked up on `PATH`.
    pub runc_binary: PathBuf,
    /// runc's state root; each containerd namespace gets a subfolder.
    pub runc_root: PathBuf,
    /// Profile store and node state.
    pub state_dir: PathBuf,
    /// bpffs folder for the node-wide eBPF objects.
    pub bpf_pin_root: PathBuf,
    /// Audit log (JSON lines).
    pub audit_log: PathBuf,
    /// Optional HTTP endpoint each audit event is also POSTed to.
    pub audit_http_url: Option<String>,
    /// Shortest learning time before a profile may count as stable, in seconds.
    pub learn_min_seconds: u64,
    /// Time without a new profile entry before a profile counts as stable, in seconds.
    pub stable_quiet_seconds: u64,
    /// Whether a stable profile moves new containers of its image from learn to monitor.
    pub auto_promote: bool,
}

/// Per-namespace bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    /// Modes pods of this namespace may ask for.
    pub allowed_modes: Vec<Mode>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            source: None,
            default_mode: None,
            allowed_modes: Mode::ALL.to_vec(),
            namespaces: BTreeMap::new(),
            profile_annotation_namespaces: None,
            fail_policy: FailPolicy::Closed,
            runc_binary: PathBuf::from("runc"),
            runc_root: PathBuf::from("/run/runc"),
            state_dir: PathBuf::from("/var/lib/vigil"),
            bpf_pin_root: PathBuf::from("/sys/fs/bpf/vigil"),
            audit_log: PathBuf::from("/var/log/vigil/audit.jsonl"),
            audit_http_url: None,
            learn_min_seconds: 600,
            stable_quiet_seconds: 3600,
            auto_promote: false,
        }
    }
}

impl NodeConfig {
    /// Modes a pod of this Kubernetes namespace (if known) may ask for.
    pub fn allowed_modes_for(&self, k8s_namespace: Option<&str>) -> &[Mode] {
        k8s_namespace
            .and_then(|ns| self.namespaces.get(ns))
            .map_or(&self.allowed_modes, |p| &p.allowed_modes)
    }

    /// The runc root for one containerd namespace.
    pub fn runc_root_for(&self, namespace: &str) -> PathBuf {
        self.runc_root.join(namespace)
    }
}

/// Which file to read and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigLocation {
    /// `ConfigPath` of the runtime options.
    RuntimeOptions(PathBuf),
    /// `VIGIL_CONFIG`.
    Env(PathBuf),
    /// `/etc/vigil/config.toml` (absent = defaults).
    Default(PathBuf),
}

impl ConfigLocation {
    /// Picks the file: runtime options first, then `VIGIL_CONFIG`, then the default path.
    pub fn resolve(config_path: Option<&Path>) -> ConfigLocation {
        if let Some(p) = config_path.filter(|p| !p.as_os_str().is_empty()) {
            return ConfigLocation::RuntimeOptions(p.to_path_buf());
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => ConfigLocation::Env(PathBuf::from(p)),
            _ => ConfigLocation::Default(PathBuf::from(DEFAULT_CONFIG_PATH)),
        }
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        match self {
            ConfigLocation::RuntimeOptions(p)
            | ConfigLocation::Env(p)
            | ConfigLocation::Default(p) => p,
        }
    }

    fn origin(&self) -> &'static str {
        match self {
            ConfigLocation::RuntimeOptions(_) => "ConfigPath in the runtime options",
            ConfigLocation::Env(_) => CONFIG_ENV,
            ConfigLocation::Default(_) => "the default location",
        }
    }
}

/// Why the node config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file named explicitly does not exist.
    #[error("vigil config {path} named by {origin} does not exist: create it or fix {origin}")]
    Missing {
        /// The path.
        path: PathBuf,
        /// Who named it.
        origin: &'static str,
    },
    /// The file exists but cannot be read.
    #[error("read vigil config {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Syntax error, unknown key or bad value.
    #[error("vigil config {path}:{line}:{column}: {message}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and, where it helps, what is allowed.
        message: String,
    },
}

/// Loads the config from the resolved location.
pub fn load(location: &ConfigLocation) -> Result<NodeConfig, ConfigError> {
    let path = location.path();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match location {
                ConfigLocation::Default(_) => Ok(NodeConfig::default()),
                _ => Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                    origin: location.origin(),
                }),
            };
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(path, &text)
}

/// Parses config text; `path` only names the file in errors and in `source`.
pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        invalid(path, text, span, e.message().trim().to_string())
    })?;
    raw.resolve(path, text)
}

fn invalid(path: &Path, text: &str, span: Range<usize>, message: String) -> ConfigError {
    let (line, column) = line_col(text, span.start);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The file as written; `Spanned` where a value needs checks serde cannot do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_mode: Option<Spanned<Mode>>,
    allowed_modes: Option<Spanned<Vec<Mode>>>,
    #[serde(default)]
    namespaces: BTreeMap<String, RawNamespace>,
    profile_annotation_namespaces: Option<Vec<String>>,
    fail_policy: Option<FailPolicy>,
    runc_binary: Option<Spanned<String>>,
    runc_root: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    bpf_pin_root: Option<Spanned<String>>,
    audit_log: Option<Spanned<String>>,
    audit_http_url: Option<Spanned<String>>,
    learn_min_seconds: Option<u64>,
    stable_quiet_seconds: Option<u64>,
    auto_promote: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    allowed_modes: Spanned<Vec<Mode>>,
}

impl RawConfig {
    fn resolve(self, path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        let d = NodeConfig::default();
        let check = Checker { path, text };
        let allowed_modes = match self.allowed_modes {
            Some(m) => check.modes(m, "allowed_modes")?,
            None => d.allowed_modes,
        };
        let default_mode = match self.default_mode {
            Some(m) => Some(check.default_mode(m, &allowed_modes)?),
            None => None,
        };
        let mut namespaces = BTreeMap::new();
        for (name, ns) in self.namespaces {
            let allowed_modes = check.modes(ns.allowed_modes, "allowed_modes")?;
            namespaces.insert(name, NamespacePolicy { allowed_modes });
        }
        Ok(NodeConfig {
            source: Some(path.to_path_buf()),
            default_mode,
            allowed_modes,
            namespaces,
            profile_annotation_namespaces: self.profile_annotation_namespaces,
            fail_policy: self.fail_policy.unwrap_or(d.fail_policy),
            runc_binary: check.binary(self.runc_binary)?.unwrap_or(d.runc_binary),
            runc_root: check
                .abs(self.runc_root, "runc_root")?
                .unwrap_or(d.runc_root),
            state_dir: check
                .abs(self.state_dir, "state_dir")?
                .unwrap_or(d.state_dir),
            bpf_pin_root: check
                .abs(self.bpf_pin_root, "bpf_pin_root")?
                .unwrap_or(d.bpf_pin_root),
            audit_log: check
                .abs(self.audit_log, "audit_log")?
                .unwrap_or(d.audit_log),
            audit_http_url: check.url(self.audit_http_url)?,
            learn_min_seconds: self.learn_min_seconds.unwrap_or(d.learn_min_seconds),
            stable_quiet_seconds: self.stable_quiet_seconds.unwrap_or(d.stable_quiet_seconds),
            auto_promote: self.auto_promote.unwrap_or(d.auto_promote),
        })
    }
}

/// Value checks that report the value's own line.
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn err<T>(&self, span: Range<usize>, message: String) -> Result<T, ConfigError> {
        Err(invalid(self.path, self.text, span, message))
    }

    fn modes(&self, modes: Spanned<Vec<Mode>>, key: &str) -> Result<Vec<Mode>, ConfigError> {
        let span = modes.span();
        let mut modes = modes.into_inner();
        if modes.is_empty() {
            return self.err(span, format!("{key} is empty: list at least one mode"));
        }
        modes.sort();
        modes.dedup();
        Ok(modes)
    }

    fn default_mode(&self, mode: Spanned<Mode>, allowed: &[Mode]) -> Result<Mode, ConfigError> {
        let span = mode.span();
        let mode = mode.into_inner();
        if allowed.contains(&mode) {
            return Ok(mode);
        }
        let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
        let msg = format!(
            "default_mode {mode} is not in allowed_modes [{}]",
            list.join(", ")
        );
        self.err(span, msg)
    }

    fn binary(&self, value: Option<Spanned<String>>) -> Result<Option<PathBuf>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        if value.get_ref().trim().is_empty() {
            return self.err(
                value.span(),
                "runc_binary is empty: name a binary".to_string(),
            );
        }
        Ok(Some(PathBuf::from(value.into_inner())))
    }

    fn abs(
        &self,
        value: Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        if !value.get_ref().starts_with('/') {
            let msg = format!("{key} {:?} is not an absolute path", value.get_ref());
            return self.err(value.span(), msg);
        }
        Ok(Some(PathBuf::from(value.into_inner())))
    }

    fn url(&self, value: Option<Spanned<String>>) -> Result<Option<String>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let url = value.get_ref();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(str::is_empty) {
            let msg = format!("audit_http_url {url:?} is not an http:// or https:// URL");
            return self.err(value.span(), msg);
        }
        Ok(Some(value.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/etc/vigil/config.toml")
    }

    fn invalid_at(text: &str) -> (usize, String) {
        match parse(p(), text) {
            Err(ConfigError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_gives_all_defaults() {
        let c = parse(p(), "").unwrap();
        assert_eq!(
            c,
            NodeConfig {
                source: Some(p().into()),
                ..NodeConfig::default()
            }
        );
        assert_eq!(c.fail_policy, FailPolicy::Closed);
        assert_eq!(c.allowed_modes, Mode::ALL.to_vec());
    }

    #[test]
    fn every_key_parses() {
        let text = r#"
default_mode = "monitor"
allowed_modes = ["monitor", "enforce", "learn"]
fail_policy = "open"
runc_binary = "/usr/sbin/runc"
runc_root = "/run/vigil-runc"
state_dir = "/tmp/vigil/state"
bpf_pin_root = "/sys/fs/bpf/vigil-test"
audit_log = "/tmp/vigil/audit.jsonl"
audit_http_url = "http://127.0.0.1:2801/"
learn_min_seconds = 30
stable_quiet_seconds = 60
auto_promote = true
profile_annotation_namespaces = ["payments"]

[namespaces.payments]
allowed_modes = ["enforce"]
"#;
        let c = parse(p(), text).unwrap();
        assert_eq!(c.default_mode, Some(Mode::Monitor));
        assert_eq!(c.fail_policy, FailPolicy::Open);
        assert_eq!(c.runc_binary, PathBuf::from("/usr/sbin/runc"));
        assert_eq!(
            c.runc_root_for("default"),
            PathBuf::from("/run/vigil-runc/default")
        );
        assert_eq!(c.audit_http_url.as_deref(), Some("http://127.0.0.1:2801/"));
        assert_eq!((c.learn_min_seconds, c.stable_quiet_seconds), (30, 60));
        assert!(c.auto_promote);
        assert_eq!(
            c.profile_annotation_namespaces,
            Some(vec!["payments".to_string()])
        );
        assert_eq!(c.allowed_modes_for(Some("payments")), &[Mode::Enforce]);
        assert_eq!(
            c.allowed_modes_for(Some("other")),
            &[Mode::Learn, Mode::Monitor, Mode::Enforce]
        );
        assert_eq!(c.allowed_modes_for(None).len(), 3);
    }

    #[test]
    fn unknown_key_names_its_line() {
        let (line, msg) = invalid_at("fail_policy = \"open\"\n\nrunc_bin = \"runc\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("runc_bin"), "{msg}");
    }

    #[test]
    fn bad_values_name_their_line() {
        assert_eq!(invalid_at("\nfail_policy = \"ajar\"").0, 2);
        assert_eq!(invalid_at("default_mode = \"guard\"").0, 1);
        assert_eq!(invalid_at("a = 1").0, 1);
        assert_eq!(invalid_at("\n\nlearn_min_seconds = -5").0, 3);
        assert_eq!(invalid_at("\nstate_dir = \"relative/dir\"").0, 2);
        assert_eq!(invalid_at("audit_http_url = \"ftp://x\"").0, 1);
        assert_eq!(invalid_at("allowed_modes = []").0, 1);
        assert_eq!(
            invalid_at("\n[namespaces.x]\nallowed_modes = [\"nope\"]").0,
            3
        );
        assert_eq!(invalid_at("\n[namespaces.x]\nmode = \"off\"").0, 3);
        assert_eq!(invalid_at("runc_binary = \"\"").0, 1);
    }

    #[test]
    fn default_mode_must_be_allowed() {
        let text = "allowed_modes = [\"enforce\"]\ndefault_mode = \"learn\"\n";
        let (line, msg) = invalid_at(text);
        assert_eq!(line, 2);
        assert!(msg.contains("not in allowed_modes [enforce]"), "{msg}");
    }

    #[test]
    fn error_message_names_file_and_line() {
        let err = parse(p(), "x = 1").unwrap_err().to_string();
        assert!(
            err.starts_with("vigil config /etc/vigil/config.toml:1:1: "),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.toml");
        let c = load(&ConfigLocation::Default(absent.clone())).unwrap();
        assert_eq!(c, NodeConfig::default());
        let err = load(&ConfigLocation::Env(absent.clone())).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Missing {
                    origin: CONFIG_ENV,
                    ..
                }
            ),
            "{err}"
        );
        let err = load(&ConfigLocation::RuntimeOptions(absent)).unwrap_err();
        assert!(err.to_string().contains("ConfigPath"), "{err}");
    }

    #[test]
    fn runtime_options_win_over_env() {
        let loc = ConfigLocation::resolve(Some(Path::new("/x.toml")));
        assert_eq!(loc, ConfigLocation::RuntimeOptions("/x.toml".into()));
        let loc = ConfigLocation::resolve(Some(Path::new("")));
        assert!(!matches!(loc, ConfigLocation::RuntimeOptions(_)));
    }

    #[test]
    fn modes_round_trip() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
        }
        assert!("Learn".parse::<Mode>().is_err());
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
