//! Where the workspace, its build output and the built shim are.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Name of the shim binary containerd looks up for `io.containerd.vigil.v2`.
pub const SHIM_BINARY: &str = "containerd-shim-vigil-v2";

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent folder")
        .to_path_buf()
}

/// Cargo's target folder (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// The folder holding the built `containerd-shim-vigil-v2`: `VIGIL_SHIM_DIR` if set, else the
/// newer build of `target/debug` and `target/release`. `None` when neither has one.
pub fn shim_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VIGIL_SHIM_DIR") {
        let dir = PathBuf::from(dir);
        return dir.join(SHIM_BINARY).is_file().then_some(dir);
    }
    let candidates = ["debug", "release"].map(|p| target_dir().join(p));
    candidates
        .into_iter()
        .filter_map(|dir| modified(&dir.join(SHIM_BINARY)).map(|t| (t, dir)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, dir)| dir)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The C sources of the pause program and the `hx-*` helpers.
pub fn helpers_dir() -> PathBuf {
    workspace_root().join("integration/helpers")
}

/// Where built image tars and compiled helpers are cached.
pub fn cache_dir() -> PathBuf {
    target_dir().join("vigil-integration")
}
