//! Offline images: built from this machine's files as OCI layout tars, cached under
//! `target/vigil-integration/images`, imported with `ctr images import`.

pub mod compile;
pub mod layer;
pub mod oci;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;
use layer::LayerBuilder;
use oci::ImageConfig;

/// Bump when the image contents change in a way the inputs do not show.
const LAYOUT_VERSION: &str = "vigil-images-1";
/// Where Debian's busybox-static puts its binary.
const HOST_BUSYBOX: &str = "/bin/busybox";

/// The images the end-to-end tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// `local/busybox:latest`: busybox-static, applets as symlinks in /bin, `hx-*` helpers in /.
    Busybox,
    /// `local/busybox-usr:latest`: applets in /usr/bin, `/bin -> usr/bin`.
    BusyboxUsr,
    /// `local/redis:latest`: redis-server, redis-benchmark, redis-cli with their libraries,
    /// plus busybox for a shell.
    Redis,
    /// `local/pause:latest`: a static pause program, the CRI sandbox image.
    Pause,
}

impl Image {
    /// Every image.
    pub const ALL: [Image; 4] = [
        Image::Busybox,
        Image::BusyboxUsr,
        Image::Redis,
        Image::Pause,
    ];

    /// The name it is imported under.
    pub fn name(self) -> &'static str {
        match self {
            Image::Busybox => "local/busybox:latest",
            Image::BusyboxUsr => "local/busybox-usr:latest",
            Image::Redis => "local/redis:latest",
            Image::Pause => "local/pause:latest",
        }
    }

    /// The OCI layout tar of this image, built now unless a build of the same inputs is cached.
    pub fn tar(self) -> Result<PathBuf> {
        let key = oci::sha256_hex(self.inputs()?.as_bytes());
        let slug = self.name().replace(['/', ':'], "_");
        let out = crate::paths::cache_dir().join(format!("images/{slug}-{}.tar", &key[..16]));
        if !out.is_file() {
            let (layer, config) = self
                .layer()
                .with_context(|| format!("build {}", self.name()))?;
            oci::write_layout(&out, self.name(), layer, &config)?;
        }
        Ok(out)
    }

    /// A text naming every input of the image, hashed into the cache key.
    fn inputs(self) -> Result<String> {
        let mut text = format!("{LAYOUT_VERSION}\n{}\n", self.name());
        let mut files = vec![PathBuf::from(HOST_BUSYBOX)];
        match self {
            Image::Busybox => {
                for src in compile::helper_sources()? {
                    text.push_str(&compile::source_key(&src)?);
                }
            }
            Image::Redis => files.extend(redis_files()?),
            Image::Pause => text.push_str(&compile::source_key(&pause_source())?),
            Image::BusyboxUsr => {}
        }
        for file in files {
            text.push_str(&file_stamp(&file)?);
        }
        Ok(text)
    }

    fn layer(self) -> Result<(Vec<u8>, ImageConfig)> {
        let mut layer = LayerBuilder::new();
        let sh = ImageConfig {
            entrypoint: vec![],
            cmd: vec!["sh".into()],
        };
        let config = match self {
            Image::Busybox => {
                base_files(&mut layer)?;
                busybox(&mut layer, "/bin")?;
                helpers(&mut layer)?;
                sh
            }
            Image::BusyboxUsr => {
                base_files(&mut layer)?;
                busybox(&mut layer, "/usr/bin")?;
                layer.symlink("/bin", "usr/bin")?;
                sh
            }
            Image::Redis => {
                base_files(&mut layer)?;
                busybox(&mut layer, "/bin")?;
                redis(&mut layer)?;
                ImageConfig {
                    entrypoint: vec![],
                    cmd: vec!["redis-server".into()],
                }
            }
            Image::Pause => pause(&mut layer)?,
        };
        Ok((layer.finish()?, config))
    }
}

/// `path size mtime` of a host file, so a package upgrade rebuilds the image.
fn file_stamp(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{} missing (scripts/setup.sh installs it)", path.display()))?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    Ok(format!("{} {} {mtime}\n", path.display(), meta.len()))
}

/// /etc files, /tmp and the usual mount points.
fn base_files(layer: &mut LayerBuilder) -> Result<()> {
    let passwd = "root:x:0:0:root:/root:/bin/sh\nvigil:x:1000:1000:vigil:/home/vigil:/bin/sh\n\
                  nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\nvigil:x:1000:\nnogroup:x:65534:\n";
    let shadow =
        "root:*:19000:0:99999:7:::\nvigil:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n";
    layer.file("/etc/passwd", passwd.as_bytes(), 0o644)?;
    layer.file("/etc/group", group.as_bytes(), 0o644)?;
    layer.file("/etc/shadow", shadow.as_bytes(), 0o640)?;
    layer.file("/etc/hostname", b"vigil-e2e\n", 0o644)?;
    layer.dir("/tmp", 0o1777)?;
    for dir in [
        "/root",
        "/home/vigil",
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/var",
    ] {
        layer.dir(dir, 0o755)?;
    }
    Ok(())
}

/// busybox-static in `dir` with every applet as a symlink beside it.
fn busybox(layer: &mut LayerBuilder, dir: &str) -> Result<()> {
    let host = Path::new(HOST_BUSYBOX);
    ensure_static(host)?;
    layer.copy(host, &format!("{dir}/busybox"), 0o755)?;
    for applet in applets(host)? {
        if applet != "busybox" {
            layer.symlink(&format!("{dir}/{applet}"), "busybox")?;
        }
    }
    Ok(())
}

fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = cmd::run(
        Command::new(busybox).arg("--list"),
        None,
        std::time::Duration::from_secs(10),
    )?
    .ok()?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

fn ensure_static(binary: &Path) -> Result<()> {
    let out = cmd::run(
        Command::new("ldd").arg(binary),
        None,
        std::time::Duration::from_secs(10),
    )?;
    if out.rc == 0 && !out.stdout.contains("not a dynamic executable") {
        bail!(
            "{} is dynamically linked: install busybox-static",
            binary.display()
        );
    }
    Ok(())
}

/// Every `integration/helpers/hx-*.c`, compiled statically, at `/hx-NAME`.
fn helpers(layer: &mut LayerBuilder) -> Result<()> {
    for src in compile::helper_sources()? {
        let binary = compile::static_binary(&src)?;
        let name = src
            .file_stem()
            .context("helper source has no name")?
            .to_string_lossy();
        layer.copy(&binary, &format!("/{name}"), 0o755)?;
    }
    Ok(())
}

fn pause_source() -> PathBuf {
    crate::paths::helpers_dir().join("pause.c")
}

fn pause(layer: &mut LayerBuilder) -> Result<ImageConfig> {
    let binary = compile::static_binary(&pause_source())?;
    layer.copy(&binary, "/pause", 0o755)?;
    for dir in ["/proc", "/sys", "/dev", "/etc"] {
        layer.dir(dir, 0o755)?;
    }
    Ok(ImageConfig {
        entrypoint: vec!["/pause".into()],
        cmd: vec![],
    })
}

const REDIS_PROGRAMS: [&str; 3] = ["redis-server", "redis-benchmark", "redis-cli"];

/// The redis programs and every library `ldd` names for them.
fn redis_files() -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for program in REDIS_PROGRAMS {
        let path = Path::new("/usr/bin").join(program);
        files.extend(shared_libraries(&path)?);
        files.push(path);
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn redis(layer: &mut LayerBuilder) -> Result<()> {
    let mut added = std::collections::BTreeSet::new();
    for file in redis_files()? {
        if added.insert(file.clone()) {
            layer.copy(&file, &file.to_string_lossy(), 0o755)?;
        }
    }
    layer.dir("/data", 0o755)?;
    Ok(())
}

/// The libraries `ldd` resolves for `binary`, the dynamic loader included.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let timeout = std::time::Duration::from_secs(10);
    let out = cmd::run(Command::new("ldd").arg(binary), None, timeout)?
        .ok()
        .with_context(|| format!("list libraries of {} (is it installed?)", binary.display()))?;
    let libs = out
        .stdout
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    Ok(libs)
}
