//! Builds vigil's kernel programs (shim-ebpf/programs) for `bpfel-unknown-none` and leaves
//! the object at `$OUT_DIR/vigil-programs.o`, which `src/bpf/object.rs` embeds.
//!
//! The nested cargo uses its own target dir (`<target>/vigil-ebpf`) so it never waits on the
//! outer build's lock. It needs `bpf-linker` and the `rust-src` component; on the pinned
//! stable toolchain `-Z build-std=core` is enabled with `RUSTC_BOOTSTRAP=1`.
//!
//! `VIGIL_EBPF_OBJECT=/path/to/object` embeds a prebuilt object instead of building one.
//!
//! Stub mode embeds an empty object (the shim then refuses to guard, saying why):
//! `VIGIL_EBPF_STUB=1`, or automatically under clippy when bpf-linker is not installed.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

const STUB_ENV: &str = "VIGIL_EBPF_STUB";
const OBJECT_ENV: &str = "VIGIL_EBPF_OBJECT";
const TARGET: &str = "bpfel-unknown-none";
const PROGRAMS: &str = "vigil-programs";
const INSTALL_HINT: &str = "install it with `PATH=/usr/lib/llvm-22/bin:$PATH cargo install \
    bpf-linker --version 0.13.0 --no-default-features --features llvm-22` (needs llvm-22-dev; \
    see docs/ebpf.md), or set VIGIL_EBPF_STUB=1 to build a shim without kernel programs";

fn main() {
    if let Err(message) = run() {
        eprintln!("error: building vigil's eBPF programs failed: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let programs = manifest.join("../shim-ebpf/programs");
    let common = manifest.join("../shim-ebpf/common");
    for path in [
        programs.join("src"),
        programs.join("Cargo.toml"),
        common.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed={STUB_ENV}");
    println!("cargo:rerun-if-env-changed={OBJECT_ENV}");
    println!("cargo:rerun-if-env-changed=PATH");

    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let object = out_dir.join("vigil-programs.o");
    if let Some(prebuilt) = env::var_os(OBJECT_ENV) {
        println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
        return fs::copy(&prebuilt, &object)
            .map(|_| ())
            .map_err(|e| format!("copy {OBJECT_ENV}={prebuilt:?}: {e}"));
    }
    let linker = find_bpf_linker();
    if stub_requested() || (linker.is_none() && under_clippy()) {
        println!("cargo:warning=vigil: embedding no eBPF programs (stub mode)");
        return fs::write(&object, b"").map_err(|e| format!("write {}: {e}", object.display()));
    }
    let linker = linker.ok_or_else(|| format!("bpf-linker not found on PATH; {INSTALL_HINT}"))?;
    let built = build_programs(&programs, &out_dir, &linker)?;
    fs::copy(&built, &object)
        .map(|_| ())
        .map_err(|e| format!("copy {} to {}: {e}", built.display(), object.display()))
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

fn stub_requested() -> bool {
    matches!(env::var(STUB_ENV).as_deref(), Ok("1") | Ok("true"))
}

fn under_clippy() -> bool {
    ["RUSTC_WORKSPACE_WRAPPER", "RUSTC_WRAPPER"]
        .iter()
        .filter_map(|k| env::var(k).ok())
        .any(|v| v.contains("clippy"))
}

/// bpf-linker from PATH or from cargo's install folder.
fn find_bpf_linker() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME")
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").into_os_string()))
    {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// `<target>/vigil-ebpf`: beside the outer build's folders, never inside a locked one.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target = out_dir.ancestors().nth(4).unwrap_or(out_dir);
    target.join("vigil-ebpf")
}

fn build_programs(programs: &Path, out_dir: &Path, linker: &Path) -> Result<PathBuf, String> {
    let target_dir = nested_target_dir(out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(programs)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", path_with(linker))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        );
    // Use the outer build's toolchain, without its wrappers or flags.
    for key in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(key);
    }
    match sibling_rustc(&cargo) {
        Some(rustc) => cmd.env("RUSTC", rustc),
        None => cmd.env_remove("RUSTC"),
    };
    let status = cmd
        .status()
        .map_err(|e| format!("run {cargo:?} build: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build --target {TARGET}` in {} exited with {status}; the errors are above \
             (a missing `rust-src` component: `rustup component add rust-src`)",
            programs.display()
        ));
    }
    Ok(target_dir.join(TARGET).join("release").join(PROGRAMS))
}

fn path_with(linker: &Path) -> OsString {
    let mut dirs: Vec<PathBuf> = linker.parent().map(Path::to_path_buf).into_iter().collect();
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).unwrap_or_default()
}

/// The rustc next to the cargo that runs this build (same toolchain).
fn sibling_rustc(cargo: &OsString) -> Option<PathBuf> {
    let rustc = Path::new(cargo).parent()?.join("rustc");
    rustc.is_file().then_some(rustc)
}
