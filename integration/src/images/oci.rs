//! An OCI image layout (one manifest, one uncompressed layer) written as one tar, the form
//! `ctr images import` takes.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What the image runs by default.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    /// `Entrypoint`, may be empty.
    pub entrypoint: Vec<String>,
    /// `Cmd`, may be empty.
    pub cmd: Vec<String>,
}

/// A content-addressed blob.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_hex(&bytes),
            bytes,
        }
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({
            "mediaType": media_type,
            "digest": format!("sha256:{}", self.digest),
            "size": self.bytes.len(),
        })
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the OCI layout tar of an image named `name` with one `layer` to `out`.
pub fn write_layout(out: &Path, name: &str, layer: Vec<u8>, config: &ImageConfig) -> Result<()> {
    let layer = Blob::new(layer);
    let config = Blob::new(serde_json::to_vec(&config_json(&layer, config))?);
    let manifest = Blob::new(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor("application/vnd.oci.image.config.v1+json"),
        "layers": [layer.descriptor("application/vnd.oci.image.layer.v1.tar")],
    }))?);
    let mut manifest_desc = manifest.descriptor("application/vnd.oci.image.manifest.v1+json");
    manifest_desc["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("latest"),
    });
    manifest_desc["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let index = json!({"schemaVersion": 2, "manifests": [manifest_desc]});

    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append(&mut tar, "index.json", &serde_json::to_vec(&index)?)?;
    for blob in [&layer, &config, &manifest] {
        append(
            &mut tar,
            &format!("blobs/sha256/{}", blob.digest),
            &blob.bytes,
        )?;
    }
    let bytes = tar.into_inner().context("finish image tar")?;
    write_atomic(out, &bytes)
}

fn config_json(layer: &Blob, config: &ImageConfig) -> Value {
    let path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut cfg = json!({"Env": [path], "WorkingDir": "/"});
    if !config.entrypoint.is_empty() {
        cfg["Entrypoint"] = json!(config.entrypoint);
    }
    if !config.cmd.is_empty() {
        cfg["Cmd"] = json!(config.cmd);
    }
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", layer.digest)]},
    })
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(bytes.len() as u64);
    header.set_mtime(0);
    tar.append_data(&mut header, path, bytes)
        .with_context(|| format!("add {path} to image tar"))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("output path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}
