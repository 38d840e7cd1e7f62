//! Finds a guest kernel: Debian's cloud kernel (6.1, `CONFIG_BPF_LSM=y`), fetched through apt
//! without installing it and cached by package version.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Metapackage whose dependency names the current 6.1 cloud kernel of the Debian release.
const META_PACKAGE: &str = "linux-image-cloud-amd64";
/// Environment variable naming a `vmlinuz` to boot instead of fetching one.
pub const KERNEL_ENV: &str = "VIGIL_GUEST_KERNEL";

/// A kernel image ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `package=version`, or the path given in [`KERNEL_ENV`].
    pub source: String,
}

/// Why no kernel could be found. All of these make the guest tests skip, never pass.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{KERNEL_ENV}={0} does not exist: point it at a vmlinuz or unset it")]
    EnvMissing(PathBuf),
    #[error(
        "no guest kernel: `{command}` failed ({detail}); run on Debian with apt sources, \
         or set {KERNEL_ENV} to a vmlinuz built with CONFIG_BPF_LSM=y"
    )]
    Apt { command: String, detail: String },
    #[error("could not unpack the guest kernel into {path}: {detail}")]
    Unpack { path: PathBuf, detail: String },
}

/// Returns a bootable kernel, fetching and caching it under `cache/kernels` when needed.
pub fn locate(cache: &Path) -> Result<Kernel, KernelError> {
    if let Some(path) = std::env::var_os(KERNEL_ENV) {
        let vmlinuz = PathBuf::from(path);
        if !vmlinuz.is_file() {
            return Err(KernelError::EnvMissing(vmlinuz));
        }
        let source = vmlinuz.display().to_string();
        return Ok(Kernel { vmlinuz, source });
    }
    let kernels = cache.join("kernels");
    match resolve_package() {
        Ok((package, version)) => fetch(&kernels, &package, &version),
        Err(err) => newest_cached(&kernels).ok_or(err),
    }
}

/// The concrete kernel package behind [`META_PACKAGE`] and its candidate version.
fn resolve_package() -> Result<(String, String), KernelError> {
    let depends = run(Command::new("apt-cache").args(["depends", META_PACKAGE]))?;
    let package = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|dep| dep.starts_with("linux-image-"))
        .ok_or_else(|| apt_error("apt-cache depends", "no linux-image dependency listed"))?
        .to_owned();
    let policy = run(Command::new("apt-cache").args(["policy", &package]))?;
    let version = policy
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Candidate: "))
        .find(|v| *v != "(none)")
        .ok_or_else(|| apt_error("apt-cache policy", "no candidate version"))?
        .to_owned();
    Ok((package, version))
}

/// Downloads and unpacks `package=version` unless it is cached already.
fn fetch(kernels: &Path, package: &str, version: &str) -> Result<Kernel, KernelError> {
    let dir = kernels.join(format!("{package}_{version}"));
    let vmlinuz = dir.join("vmlinuz");
    let source = format!("{package}={version}");
    if vmlinuz.is_file() {
        return Ok(Kernel { vmlinuz, source });
    }

    let work = kernels.join(format!(".fetch-{package}_{version}"));
    let unpack = |detail: String| KernelError::Unpack {
        path: work.clone(),
        detail,
    };
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| unpack(e.to_string()))?;
    // apt drops to the `_apt` user unless told otherwise; it cannot write into a root-owned
    // cache folder and only warns, so say root up front.
    run(Command::new("apt-get")
        .args(["download", "-o", "APT::Sandbox::User=root", &source])
        .current_dir(&work))?;
    let deb = find_file(&work, |name| name.ends_with(".deb"))
        .ok_or_else(|| unpack("apt-get download produced no .deb".into()))?;
    let tree = work.join("tree");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    let image = find_file(&tree.join("boot"), |name| name.starts_with("vmlinuz-"))
        .ok_or_else(|| unpack(format!("{} holds no boot/vmlinuz-*", deb.display())))?;

    let staged = work.join("out");
    fs::create_dir_all(&staged).map_err(|e| unpack(e.to_string()))?;
    fs::copy(&image, staged.join("vmlinuz")).map_err(|e| unpack(e.to_string()))?;
    if let Some(config) = find_file(&tree.join("boot"), |n| n.starts_with("config-")) {
        fs::copy(config, staged.join("config")).map_err(|e| unpack(e.to_string()))?;
    }
    fs::rename(&staged, &dir).map_err(|e| unpack(format!("rename to {}: {e}", dir.display())))?;
    let _ = fs::remove_dir_all(&work);
    Ok(Kernel { vmlinuz, source })
}

/// The newest kernel already cached, for machines where apt cannot answer.
fn newest_cached(kernels: &Path) -> Option<Kernel> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(kernels)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("vmlinuz").is_file())
        .collect();
    dirs.sort();
    let dir = dirs.pop()?;
    let source = dir.file_name()?.to_string_lossy().replacen('_', "=", 1);
    Some(Kernel {
        vmlinuz: dir.join("vmlinuz"),
        source: format!("{source} (cached)"),
    })
}

fn find_file(dir: &Path, wanted: impl Fn(&str) -> bool) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(&wanted)
        })
}

/// Runs a command and returns its stdout; a failure names the command and its stderr.
fn run(command: &mut Command) -> Result<String, KernelError> {
    let shown = format!("{command:?}").replace('"', "");
    let output = command
        .output()
        .map_err(|e| apt_error(&shown, &e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(apt_error(&shown, &format!("{}: {last}", output.status)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn apt_error(command: &str, detail: &str) -> KernelError {
    KernelError::Apt {
        command: command.to_owned(),
        detail: detail.to_owned(),
    }
}
