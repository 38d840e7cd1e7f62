//! What the shim reads from a bundle and containerd's runtime options, and the small record
//! it leaves in the bundle for the `delete` action.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::oci::Options as RuncOptions;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{TaskError, TaskResult};

/// Annotations that put containers into one shim process (the pod's sandbox id).
pub const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
/// File in the bundle that tells the `delete` action how runc was driven.
pub const RUNTIME_RECORD: &str = "vigil-runtime.json";

/// The parts of `config.json` the task service needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleSpec {
    /// OCI annotations.
    pub annotations: HashMap<String, String>,
    /// `linux.cgroupsPath`.
    pub cgroups_path: String,
    /// No private pid namespace: the init's exit does not end the other processes.
    pub shares_pid_ns: bool,
}

/// Reads `<bundle>/config.json`; errors name the file and what is wrong with it.
pub fn read_spec(bundle: &Path) -> TaskResult<BundleSpec> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| {
        TaskError::InvalidArgument(format!("read bundle config {}: {e}", path.display()))
    })?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| {
        TaskError::InvalidArgument(format!("parse bundle config {}: {e}", path.display()))
    })?;
    if !value.is_object() {
        let msg = format!("bundle config {} is not a JSON object", path.display());
        return Err(TaskError::InvalidArgument(msg));
    }
    Ok(spec_from(&value))
}

fn spec_from(v: &Value) -> BundleSpec {
    let annotations = v["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let cgroups_path = v["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    BundleSpec {
        annotations,
        cgroups_path,
        shares_pid_ns: shares_pid_ns(v),
    }
}

/// True without a pid namespace of its own (none listed, or one joined by path).
fn shares_pid_ns(v: &Value) -> bool {
    let Some(list) = v["linux"]["namespaces"].as_array() else {
        return true;
    };
    let own = list.iter().find(|ns| ns["type"] == "pid");
    own.is_none_or(|ns| ns["path"].as_str().is_some_and(|p| !p.is_empty()))
}

/// The shim grouping key for the `start` action: the pod's sandbox id, else the id.
pub fn group_of(bundle: &Path, id: &str) -> String {
    let Ok(spec) = read_spec(bundle) else {
        return id.to_string();
    };
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|k| spec.annotations.get(*k))
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

/// What containerd passed in `CreateTaskRequest.options`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// `ConfigPath` (runtimeoptions.v1.Options).
    pub config_path: Option<PathBuf>,
    /// runc options, when a runc-style options message was passed.
    pub runc: Option<RuncOverrides>,
}

/// The runc options vigil honours when containerd sends containerd.runc.v1.Options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuncOverrides {
    /// `BinaryName`.
    pub binary: Option<PathBuf>,
    /// `Root`.
    pub root: Option<PathBuf>,
    /// `SystemdCgroup`.
    pub systemd_cgroup: bool,
}

/// Decodes the options `Any`; an unknown type is an error naming it.
pub fn decode_options(any: Option<&Any>) -> TaskResult<RuntimeOptions> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(RuntimeOptions::default());
    };
    let kind = any.type_url.rsplit('/').next().unwrap_or_default();
    match kind {
        "runtimeoptions.v1.Options" => {
            let path = proto_string_field(&any.value, 2)
                .map_err(|e| TaskError::InvalidArgument(format!("decode runtime options: {e}")))?;
            Ok(RuntimeOptions {
                config_path: path.filter(|p| !p.is_empty()).map(PathBuf::from),
                runc: None,
            })
        }
        "containerd.runc.v1.Options" => {
            let o = RuncOptions::parse_from_bytes(&any.value)
                .map_err(|e| TaskError::InvalidArgument(format!("decode runc options: {e}")))?;
            let nonempty = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
            let runc = RuncOverrides {
                binary: nonempty(&o.binary_name),
                root: nonempty(&o.root),
                systemd_cgroup: o.systemd_cgroup,
            };
            Ok(RuntimeOptions {
                config_path: None,
                runc: Some(runc),
            })
        }
        other => Err(TaskError::InvalidArgument(format!(
            "runtime options of type {other:?} are not understood by vigil: \
             use runtimeoptions.v1.Options (ConfigPath)"
        ))),
    }
}

/// The last occurrence of string field `field` in a protobuf message.
fn proto_string_field(mut buf: &[u8], field: u64) -> Result<Option<String>, &'static str> {
    let mut found = None;
    while !buf.is_empty() {
        let tag = read_varint(&mut buf)?;
        match tag & 7 {
            0 => drop(read_varint(&mut buf)?),
            1 => buf = buf.get(8..).ok_or("truncated fixed64")?,
            5 => buf = buf.get(4..).ok_or("truncated fixed32")?,
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).map_err(|_| "bad length")?;
                let bytes = buf.get(..len).ok_or("truncated field")?;
                if tag >> 3 == field {
                    let s = std::str::from_utf8(bytes).map_err(|_| "field is not UTF-8")?;
                    found = Some(s.to_string());
                }
                buf = &buf[len..];
            }
            _ => return Err("unsupported wire type"),
        }
    }
    Ok(found)
}

fn read_varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long")
}

/// How runc was driven for a container, kept in the bundle for the `delete` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    /// runc binary.
    pub binary: PathBuf,
    /// runc root (namespace folder included).
    pub root: PathBuf,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
}

impl RuntimeRecord {
    /// Writes the record atomically.
    pub fn write(&self, bundle: &Path) -> TaskResult<()> {
        let path = bundle.join(RUNTIME_RECORD);
        let tmp = bundle.join(format!(".{RUNTIME_RECORD}.tmp"));
        let json =
            serde_json::to_vec(self).map_err(|e| TaskError::io("encode runtime record", e))?;
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| TaskError::io(format!("write {}", path.display()), e))
    }

    /// Reads the record; `None` if absent or unreadable.
    pub fn read(bundle: &Path) -> Option<RuntimeRecord> {
        let text = std::fs::read(bundle.join(RUNTIME_RECORD)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_fields_are_read() {
        let v: Value = serde_json::json!({
            "annotations": {"io.kubernetes.cri.sandbox-id": "pod1", "n": 1},
            "linux": {"cgroupsPath": "/default/c1", "namespaces": [{"type": "pid"}, {"type": "mount"}]}
        });
        let s = spec_from(&v);
        assert_eq!(
            s.annotations
                .get("io.kubernetes.cri.sandbox-id")
                .map(String::as_str),
            Some("pod1")
        );
        assert_eq!(s.annotations.len(), 1, "non-string values are skipped");
        assert_eq!(s.cgroups_path, "/default/c1");
        assert!(!s.shares_pid_ns);
    }

    #[test]
    fn pid_namespace_sharing() {
        let joined = serde_json::json!({"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}});
        assert!(shares_pid_ns(&joined));
        let none = serde_json::json!({"linux": {"namespaces": [{"type": "ipc"}]}});
        assert!(shares_pid_ns(&none));
    }

    #[test]
    fn bad_bundles_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_spec(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("No such file"),
            "{err}"
        );
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = read_spec(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("parse bundle config"), "{err}");
        std::fs::write(dir.path().join("config.json"), "[]").unwrap();
        assert!(read_spec(dir.path()).is_err());
        assert_eq!(group_of(dir.path(), "c1"), "c1");
    }

    #[test]
    fn grouping_uses_the_sandbox_id() {
        let dir = tempfile::tempdir().unwrap();
        let spec = r#"{"annotations": {"io.kubernetes.cri.sandbox-id": "sb1"}}"#;
        std::fs::write(dir.path().join("config.json"), spec).unwrap();
        assert_eq!(group_of(dir.path(), "c1"), "sb1");
    }

    fn runtime_options(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn config_path_is_decoded_from_runtimeoptions() {
        // field 1 (type_url) = "x", field 2 (config_path) = "/etc/v.toml"
        let mut value = vec![0x0a, 1, b'x', 0x12, 11];
        value.extend_from_slice(b"/etc/v.toml");
        let any = runtime_options("runtimeoptions.v1.Options", value);
        let o = decode_options(Some(&any)).unwrap();
        assert_eq!(o.config_path, Some(PathBuf::from("/etc/v.toml")));
        assert_eq!(decode_options(None).unwrap(), RuntimeOptions::default());
    }

    #[test]
    fn malformed_and_unknown_options_are_errors() {
        let any = runtime_options("runtimeoptions.v1.Options", vec![0x12, 50, b'a']);
        assert!(decode_options(Some(&any)).is_err());
        let any = runtime_options("example.com/Other", vec![]);
        let err = decode_options(Some(&any)).unwrap_err().to_string();
        assert!(
            err.contains("example.com/Other") || err.contains("Other"),
            "{err}"
        );
    }

    #[test]
    fn runc_options_override_binary_and_root() {
        let o = RuncOptions {
            binary_name: "/opt/runc".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        let any = runtime_options("containerd.runc.v1.Options", o.write_to_bytes().unwrap());
        let r = decode_options(Some(&any)).unwrap().runc.unwrap();
        assert_eq!(r.binary, Some(PathBuf::from("/opt/runc")));
        assert_eq!(r.root, None);
        assert!(r.systemd_cgroup);
    }

    #[test]
    fn runtime_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let r = RuntimeRecord {
            binary: "runc".into(),
            root: "/run/runc/default".into(),
            systemd_cgroup: false,
        };
        r.write(dir.path()).unwrap();
        assert_eq!(RuntimeRecord::read(dir.path()), Some(r));
    }
}
