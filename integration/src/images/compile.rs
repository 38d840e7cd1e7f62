//! Static helper programs compiled from the C sources in `integration/helpers/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cmd;

/// Every `hx-*.c` in `integration/helpers/`, sorted.
pub fn helper_sources() -> Result<Vec<PathBuf>> {
    let dir = crate::paths::helpers_dir();
    let entries = std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))?;
    let mut sources: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with("hx-") && name.ends_with(".c")
        })
        .collect();
    sources.sort();
    Ok(sources)
}

/// `name sha256` of a source file, for cache keys.
pub fn source_key(src: &Path) -> Result<String> {
    let bytes = std::fs::read(src).with_context(|| format!("read {}", src.display()))?;
    Ok(format!(
        "{} {}\n",
        src.display(),
        super::oci::sha256_hex(&bytes)
    ))
}

/// Compiles `src` with `gcc -static` (cached by the source's hash) and returns the binary.
pub fn static_binary(src: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(src).with_context(|| format!("read {}", src.display()))?;
    let hash = super::oci::sha256_hex(&bytes);
    let stem = src
        .file_stem()
        .context("source has no name")?
        .to_string_lossy();
    let out = crate::paths::cache_dir().join(format!("helpers/{stem}-{}", &hash[..16]));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(out.parent().context("no parent")?)?;
    // A name of this process's own: two test processes may build the same helper at once.
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    let mut gcc = Command::new("gcc");
    gcc.args(["-static", "-O2", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&tmp)
        .arg(src);
    cmd::run(&mut gcc, None, Duration::from_secs(120))?
        .ok()
        .with_context(|| format!("compile {} (needs gcc and libc6-dev)", src.display()))?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}
