//! A reproducible root filesystem layer (uncompressed tar), built in memory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Builds one layer: every entry owned by root, mtime 0, parents created on demand.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder {
            tar,
            dirs: BTreeSet::new(),
        }
    }

    /// Adds a directory (and its missing parents) with `mode`.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let rel = relative(path);
        self.parents(&rel)?;
        if self.dirs.insert(rel.clone()) {
            let mut header = header(tar::EntryType::Directory, mode, 0);
            self.tar
                .append_data(&mut header, &rel, std::io::empty())
                .with_context(|| format!("add directory {path} to layer"))?;
        }
        Ok(self)
    }

    /// Adds a regular file with `contents` and `mode`.
    pub fn file(&mut self, path: &str, contents: &[u8], mode: u32) -> Result<&mut Self> {
        let rel = relative(path);
        self.parents(&rel)?;
        let mut header = header(tar::EntryType::Regular, mode, contents.len() as u64);
        self.tar
            .append_data(&mut header, &rel, contents)
            .with_context(|| format!("add file {path} to layer"))?;
        Ok(self)
    }

    /// Copies the host file `src` (symlinks followed) to `path` in the layer with `mode`.
    pub fn copy(&mut self, src: &Path, path: &str, mode: u32) -> Result<&mut Self> {
        let contents =
            std::fs::read(src).with_context(|| format!("read {} for the image", src.display()))?;
        self.file(path, &contents, mode)
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let rel = relative(path);
        self.parents(&rel)?;
        let mut header = header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut header, &rel, target)
            .with_context(|| format!("add symlink {path} -> {target} to layer"))?;
        Ok(self)
    }

    /// The finished tar bytes.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.tar.into_inner().context("finish layer tar")
    }

    fn parents(&mut self, rel: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = rel.parent();
        while let Some(dir) = cur.filter(|d| !d.as_os_str().is_empty()) {
            if self.dirs.contains(dir) {
                break;
            }
            missing.push(dir.to_path_buf());
            cur = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            self.dir(&dir.to_string_lossy(), 0o755)?;
        }
        Ok(())
    }
}

fn relative(path: &str) -> PathBuf {
    PathBuf::from(path.trim_start_matches('/'))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_before_children_once() {
        let mut layer = LayerBuilder::new();
        layer.file("/a/b/c", b"x", 0o644).unwrap();
        layer.symlink("/a/b/d", "c").unwrap();
        let bytes = layer.finish().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a", "a/b", "a/b/c", "a/b/d"]);
    }
}
