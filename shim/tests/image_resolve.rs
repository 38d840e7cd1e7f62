//! `image::resolve_image` against a private containerd (root only): images built here as OCI
//! layouts of a busybox rootfs, imported with `ctr`, containers created from them, and the
//! name and config digest read back. One case resolves from inside a shim's Create, the way
//! the shim does it, to show that calling back into containerd then does not deadlock.
//!
//! This binary has no libtest harness: containerd also runs it as the test runtime's shim
//! (`containerd-shim-vigiltest-v2`), which is recognised by its `-namespace` argument.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};
use vigil_shim::image::{host_platform, resolve_image, ImageError, ImageRef, RESOLVE_TIMEOUT};

const NAMESPACE: &str = "vigil-image-test";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn main() {
    if std::env::args().any(|a| a == "-namespace") {
        test_shim::main();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(reason) = skip_reason() {
        println!("image_resolve: skipped: {reason}");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    if let Err(e) = runtime.block_on(run_all()) {
        eprintln!("image_resolve: FAILED: {e:#}");
        std::process::exit(1);
    }
    println!("image_resolve: all cases passed");
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to run a private containerd".into());
    }
    for tool in ["containerd", "ctr", "tar"] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is missing (install busybox-static)".into());
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

type Case = fn(&Fixture) -> futures_case::BoxCase<'_>;

mod futures_case {
    use std::future::Future;
    use std::pin::Pin;

    pub type BoxCase<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;
}

async fn run_all() -> Result<()> {
    let fixture = Fixture::start().await?;
    let cases: [(&str, Case); 6] = [
        ("single manifest", |f| Box::pin(single_manifest(f))),
        ("index picks the host platform", |f| {
            Box::pin(index_picks_host(f))
        }),
        ("index without the host platform", |f| {
            Box::pin(index_without_host(f))
        }),
        ("no such container", |f| Box::pin(no_such_container(f))),
        ("no such image", |f| Box::pin(no_such_image(f))),
        ("from inside the shim's create", |f| {
            Box::pin(from_shim_create(f))
        }),
    ];
    let mut failures = String::new();
    for (name, case) in cases {
        match case(&fixture).await {
            Ok(()) => println!("image_resolve: {name} ... ok"),
            Err(e) => {
                println!("image_resolve: {name} ... FAILED");
                let _ = writeln!(failures, "{name}: {e:#}");
            }
        }
    }
    fixture.stop().await;
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{failures}containerd's log: {}", fixture.log_tail())
    }
}

async fn single_manifest(f: &Fixture) -> Result<()> {
    let image = f
        .image("docker.io/vigil-test/busybox:plain", Shape::Manifest)
        .await?;
    f.import(&image, &[]).await?;
    let listed = f.ctr(&["images", "ls"]).await?;
    let row = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(image.name.as_str()));
    let row = row.ok_or_else(|| anyhow!("ctr images ls lacks {}:\n{listed}", image.name))?;
    ensure!(
        row.contains(&image.target_digest),
        "ctr lists another target: {row}"
    );
    f.ctr(&["containers", "create", &image.name, "c-plain"])
        .await?;
    let found = f.resolve("c-plain", None).await?;
    ensure!(
        found == image.expected(),
        "resolved {found:?}, wrote {:?}",
        image.expected()
    );
    // CRI's annotation spares the container lookup: no container is needed.
    let by_name = f.resolve("not-a-container", Some(&image.name)).await?;
    ensure!(by_name == image.expected(), "by name resolved {by_name:?}");
    Ok(())
}

async fn index_picks_host(f: &Fixture) -> Result<()> {
    let image = f
        .image("docker.io/vigil-test/busybox:multi", Shape::ForeignThenHost)
        .await?;
    f.import(&image, &[]).await?;
    f.ctr(&["containers", "create", &image.name, "c-multi"])
        .await?;
    let found = f.resolve("c-multi", None).await?;
    ensure!(
        found == image.expected(),
        "resolved {found:?}, wrote {:?}",
        image.expected()
    );
    ensure!(
        found.config_digest != image.foreign_config,
        "took the foreign platform's config"
    );
    Ok(())
}

async fn index_without_host(f: &Fixture) -> Result<()> {
    let image = f
        .image("docker.io/vigil-test/busybox:foreign", Shape::ForeignOnly)
        .await?;
    f.import(&image, &["--all-platforms", "--no-unpack"])
        .await?;
    let err = f
        .resolve("not-a-container", Some(&image.name))
        .await
        .unwrap_err();
    let err = err.downcast::<ImageError>()?;
    ensure!(matches!(err, ImageError::NoPlatform { .. }), "got {err:?}");
    let text = err.to_string();
    let host = format!("linux/{}", host_platform().1);
    ensure!(
        text.contains(&image.name) && text.contains(&host),
        "message: {text}"
    );
    Ok(())
}

async fn no_such_container(f: &Fixture) -> Result<()> {
    let err = f.resolve("no-such-container", None).await.unwrap_err();
    let err = err.downcast::<ImageError>()?;
    ensure!(matches!(err, ImageError::NoContainer { .. }), "got {err:?}");
    let text = err.to_string();
    ensure!(
        text.contains("no-such-container") && text.contains(NAMESPACE),
        "message: {text}"
    );
    // A container of another namespace is no container of this one.
    let other = resolve_image(&f.socket, "default", "c-plain", None)
        .await
        .unwrap_err();
    ensure!(
        matches!(other, ImageError::NoContainer { .. }),
        "got {other:?}"
    );
    Ok(())
}

async fn no_such_image(f: &Fixture) -> Result<()> {
    let image = f
        .image("docker.io/vigil-test/busybox:doomed", Shape::Manifest)
        .await?;
    f.import(&image, &[]).await?;
    f.ctr(&["containers", "create", &image.name, "c-doomed"])
        .await?;
    f.ctr(&["images", "rm", &image.name]).await?;
    let err = f.resolve("c-doomed", None).await.unwrap_err();
    let err = err.downcast::<ImageError>()?;
    ensure!(matches!(err, ImageError::NoImage { .. }), "got {err:?}");
    let text = err.to_string();
    ensure!(
        text.contains(&image.name) && text.contains(NAMESPACE),
        "message: {text}"
    );
    // A CRI name containerd does not know falls back to the container's own image.
    let found = f
        .resolve("c-plain", Some("docker.io/vigil-test/absent:1"))
        .await?;
    ensure!(
        found.name == "docker.io/vigil-test/busybox:plain",
        "fell back to {found:?}"
    );
    Ok(())
}

/// containerd waits on the shim's Create while the shim reads containers, images and content.
async fn from_shim_create(f: &Fixture) -> Result<()> {
    let image = f
        .image("docker.io/vigil-test/busybox:via-shim", Shape::Manifest)
        .await?;
    f.import(&image, &[]).await?;
    let runtime = ["--runtime", test_shim::RUNTIME];
    let create = [
        &["containers", "create"][..],
        &runtime,
        &[&image.name, "c-shim"],
    ]
    .concat();
    f.ctr(&create).await?;
    let started = Instant::now();
    // The test shim fails Create on purpose, after resolving: no process ever runs.
    let output = f.ctr_output(&["tasks", "start", "-d", "c-shim"]).await?;
    let elapsed = started.elapsed();
    let result_path = f.dir.path().join("results").join("c-shim");
    let result = std::fs::read_to_string(&result_path)
        .with_context(|| format!("the test shim wrote no result; ctr said: {}", output.trim()))?;
    let fields: Vec<&str> = result.split_whitespace().collect();
    ensure!(fields.first() == Some(&"ok"), "inside create: {result}");
    ensure!(
        fields.get(1) == Some(&image.name.as_str()),
        "name: {result}"
    );
    ensure!(
        fields.get(2) == Some(&image.config_digest.as_str()),
        "digest: {result}"
    );
    let millis: u128 = fields
        .get(3)
        .and_then(|m| m.parse().ok())
        .unwrap_or(u128::MAX);
    ensure!(
        millis < RESOLVE_TIMEOUT.as_millis(),
        "took {millis} ms inside create"
    );
    println!("image_resolve: resolved inside containerd's create in {millis} ms: {result}");
    ensure!(
        elapsed < Duration::from_secs(20),
        "ctr tasks start took {elapsed:?}"
    );
    Ok(())
}

/// What an image is made of, as written into its archive.
enum Shape {
    /// index.json names one manifest directly.
    Manifest,
    /// index.json names an index whose first entry is another platform's.
    ForeignThenHost,
    /// index.json names an index with only another platform's manifest.
    ForeignOnly,
}

struct Blob {
    media_type: &'static str,
    bytes: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        Blob {
            media_type,
            bytes,
            digest,
        }
    }

    fn json(media_type: &'static str, value: &Value) -> Blob {
        Blob::new(
            media_type,
            serde_json::to_vec(value).expect("serialise json"),
        )
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An image archive written here, with the digests it was written with.
struct Image {
    name: String,
    archive: PathBuf,
    target_digest: String,
    config_digest: String,
    foreign_config: String,
}

impl Image {
    fn expected(&self) -> ImageRef {
        ImageRef {
            name: self.name.clone(),
            config_digest: self.config_digest.clone(),
        }
    }
}

fn foreign_arch() -> &'static str {
    if host_platform().1 == "amd64" {
        "arm64"
    } else {
        "amd64"
    }
}

fn config(layer: &Blob, arch: &str, tag: &str) -> Blob {
    let diff_ids = [&layer.digest];
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"vigil.test": tag}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    Blob::json(OCI_CONFIG, &config)
}

fn manifest(config: &Blob, layer: &Blob) -> Blob {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    Blob::json(OCI_MANIFEST, &manifest)
}

fn index(entries: &[(&Blob, &str)]) -> Blob {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(m, arch)| {
            let mut d = m.descriptor();
            d["platform"] = json!({"os": "linux", "architecture": arch});
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    Blob::json(OCI_INDEX, &index)
}

/// The blobs of an image of `shape`, the top one (what index.json names) first.
fn image_blobs(layer: Blob, tag: &str, shape: &Shape) -> (Vec<Blob>, String, String) {
    let host = host_platform().1;
    let host_config = config(&layer, host, tag);
    let foreign_config = config(&layer, foreign_arch(), tag);
    let host_manifest = manifest(&host_config, &layer);
    let foreign_manifest = manifest(&foreign_config, &layer);
    let (host_digest, foreign_digest) = (host_config.digest.clone(), foreign_config.digest.clone());
    let blobs = match shape {
        Shape::Manifest => vec![host_manifest, host_config, layer],
        Shape::ForeignThenHost => {
            let top = index(&[(&foreign_manifest, foreign_arch()), (&host_manifest, host)]);
            let rest = [
                host_manifest,
                foreign_manifest,
                host_config,
                foreign_config,
                layer,
            ];
            std::iter::once(top).chain(rest).collect()
        }
        Shape::ForeignOnly => {
            let top = index(&[(&foreign_manifest, foreign_arch())]);
            vec![top, foreign_manifest, foreign_config, layer]
        }
    };
    (blobs, host_digest, foreign_digest)
}

/// A private containerd: its own root, state, sockets and runtime directory, under one
/// temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    socket: String,
    containerd: tokio::sync::Mutex<Option<Child>>,
}

impl Fixture {
    async fn start() -> Result<Fixture> {
        let dir = tempfile::Builder::new()
            .prefix("vigil-img-")
            .tempdir_in("/tmp")?;
        let root = dir.path();
        for sub in ["bin", "results", "shims", "images", "opt"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let socket = root.join("containerd.sock").display().to_string();
        std::fs::write(root.join("config.toml"), containerd_config(root, &socket))?;
        let shim = root.join("bin").join("containerd-shim-vigiltest-v2");
        std::os::unix::fs::symlink(std::env::current_exe()?, &shim)?;
        let fixture = Fixture {
            socket,
            containerd: tokio::sync::Mutex::new(Some(spawn_containerd(root)?)),
            dir,
        };
        if let Err(e) = fixture.wait_ready().await {
            fixture.stop().await;
            return Err(e.context(format!("containerd's log: {}", fixture.log_tail())));
        }
        Ok(fixture)
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Path::new(&self.socket).exists() && self.ctr(&["version"]).await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.containerd.lock().await.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("private containerd exited at start: {status}");
                }
            }
            ensure!(
                Instant::now() < deadline,
                "private containerd not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn resolve(&self, container: &str, cri_name: Option<&str>) -> Result<ImageRef> {
        Ok(resolve_image(&self.socket, NAMESPACE, container, cri_name).await?)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .args(["--address", &self.socket, "--namespace", NAMESPACE])
            .args(args)
            .env("CONTAINERD_SNAPSHOTTER", "native")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs ctr; fails unless it succeeds. Returns its stdout.
    async fn ctr(&self, args: &[&str]) -> Result<String> {
        let limit = Duration::from_secs(60);
        let output = tokio::time::timeout(limit, self.command(args).output())
            .await
            .with_context(|| format!("ctr {} did not finish within 60 s", args.join(" ")))??;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success(),
            "ctr {} failed: {stderr}",
            args.join(" ")
        );
        Ok(stdout)
    }

    /// Runs ctr whatever its outcome. Returns stdout and stderr together.
    async fn ctr_output(&self, args: &[&str]) -> Result<String> {
        let limit = Duration::from_secs(60);
        let output = tokio::time::timeout(limit, self.command(args).output())
            .await
            .with_context(|| format!("ctr {} did not finish within 60 s", args.join(" ")))??;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(text)
    }

    async fn import(&self, image: &Image, flags: &[&str]) -> Result<()> {
        let archive = image
            .archive
            .to_str()
            .context("archive path is not utf-8")?;
        let args = [&["images", "import"][..], flags, &[archive]].concat();
        self.ctr(&args).await.map(drop)
    }

    /// Writes an OCI image archive of a busybox rootfs named `name`.
    async fn image(&self, name: &str, shape: Shape) -> Result<Image> {
        let tag = name.rsplit(':').next().unwrap_or(name);
        let work = self.dir.path().join("images").join(tag);
        let layer = busybox_layer(&work).await?;
        let (blobs, config_digest, foreign_config) = image_blobs(layer, tag, &shape);
        let layout = work.join("layout");
        let blob_dir = layout.join("blobs").join("sha256");
        std::fs::create_dir_all(&blob_dir)?;
        for blob in &blobs {
            let file = blob.digest.trim_start_matches("sha256:");
            std::fs::write(blob_dir.join(file), &blob.bytes)?;
        }
        let mut top = blobs[0].descriptor();
        top["annotations"] = json!({"io.containerd.image.name": name});
        let index_json = json!({"schemaVersion": 2, "manifests": [top]});
        std::fs::write(layout.join("index.json"), serde_json::to_vec(&index_json)?)?;
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let archive = work.join("image.tar");
        tar(&layout, &archive, &["oci-layout", "index.json", "blobs"]).await?;
        Ok(Image {
            name: name.to_string(),
            archive,
            target_digest: blobs[0].digest.clone(),
            config_digest,
            foreign_config,
        })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("containerd.log"));
        let log = log.unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops containerd and any test shim, and unmounts whatever is left under the directory.
    async fn stop(&self) {
        if let Some(mut child) = self.containerd.lock().await.take() {
            stop_child(&mut child).await;
        }
        kill_test_shims(&self.dir.path().join("shims"));
        if let Err(e) = vigil_shim::service::mount::unmount_all(self.dir.path()) {
            eprintln!("image_resolve: cleanup: {e}");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Reached without `stop` only when a case panicked: stop what is left synchronously.
        if let Some(mut child) = self.containerd.get_mut().take() {
            let _ = child.start_kill();
            if let Some(pid) = child.id() {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            }
        }
        kill_test_shims(&self.dir.path().join("shims"));
        let _ = vigil_shim::service::mount::unmount_all(self.dir.path());
    }
}

fn containerd_config(root: &Path, socket: &str) -> String {
    let r = root.display();
    format!(
        r#"version = 2
root = "{r}/root"
state = "{r}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = "{r}/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{r}/opt"
"#
    )
}

fn spawn_containerd(root: &Path) -> Result<Child> {
    let log = std::fs::File::create(root.join("containerd.log"))?;
    let path = std::env::var("PATH").unwrap_or_default();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(root.join("config.toml"))
        .env("PATH", format!("{}:{path}", root.join("bin").display()))
        .env(test_shim::DIR_ENV, root)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("start the private containerd")?;
    Ok(child)
}

async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Kills the test shim servers recorded in `dir`, checking each pid is still this binary.
fn kill_test_shims(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::env::current_exe().ok();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pid") {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        else {
            continue;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.is_some() && exe == me {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A single uncompressed layer: /bin/busybox and /bin/sh linking to it.
async fn busybox_layer(work: &Path) -> Result<Blob> {
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))?;
    let layer = work.join("layer.tar");
    tar(&rootfs, &layer, &["bin"]).await?;
    Ok(Blob::new(OCI_LAYER, std::fs::read(&layer)?))
}

async fn tar(dir: &Path, archive: &Path, members: &[&str]) -> Result<()> {
    let output = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(archive)
        .args(members)
        .output()
        .await?;
    ensure!(output.status.success(), "tar {}: {}", archive.display(), {
        String::from_utf8_lossy(&output.stderr)
    });
    Ok(())
}

/// The shim containerd starts for the test runtime: its Create resolves the container's image
/// through containerd, records the outcome, and fails so that no process ever runs.
mod test_shim {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::Stdio;
    use std::sync::Arc;
    use std::time::Instant;

    use async_trait::async_trait;
    use containerd_shim::api::{CreateTaskRequest, CreateTaskResponse, Empty, ShutdownRequest};
    use containerd_shim::protos::ttrpc;
    use containerd_shim::publisher::RemotePublisher;
    use containerd_shim::{
        Config, DeleteResponse, Error, ExitSignal, Flags, Shim, StartOpts, Task, TtrpcContext,
        TtrpcResult,
    };
    use vigil_shim::image::resolve_image;

    pub const RUNTIME: &str = "io.containerd.vigiltest.v2";
    /// Set on the private containerd; its shims inherit it.
    pub const DIR_ENV: &str = "VIGIL_IMAGE_TEST_DIR";

    pub fn main() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build the tokio runtime");
        let config = Config {
            no_setup_logger: true,
            no_reaper: true,
            no_sub_reaper: true,
            ..Config::default()
        };
        runtime.block_on(containerd_shim::asynchronous::run::<TestShim>(
            RUNTIME,
            Some(config),
        ));
    }

    fn test_dir() -> Result<PathBuf, Error> {
        std::env::var_os(DIR_ENV)
            .map(PathBuf::from)
            .ok_or_else(|| Error::Other(format!("{DIR_ENV} is not set")))
    }

    struct TestShim {
        exit: Arc<ExitSignal>,
        address: String,
        namespace: String,
    }

    #[async_trait]
    impl Shim for TestShim {
        type T = TestTask;

        async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
            TestShim {
                exit: Arc::new(ExitSignal::default()),
                address: args.address.clone(),
                namespace: args.namespace.clone(),
            }
        }

        async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
            spawn_server(&opts).map_err(|e| Error::Other(format!("spawn test shim: {e}")))
        }

        async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
            Ok(DeleteResponse::new())
        }

        async fn wait(&mut self) {
            self.exit.wait().await;
        }

        async fn create_task_service(&self, _publisher: RemotePublisher) -> TestTask {
            TestTask {
                exit: self.exit.clone(),
                address: self.address.clone(),
                namespace: self.namespace.clone(),
            }
        }
    }

    /// Starts the server (this binary without the `start` action) and waits until it listens:
    /// it then turns its stdout into its stderr, which ends the pipe read here.
    fn spawn_server(opts: &StartOpts) -> Result<String, Box<dyn std::error::Error>> {
        let shims = test_dir()?.join("shims");
        let socket = format!(
            "unix://{}",
            shims.join(format!("{}.sock", opts.id)).display()
        );
        let log = std::fs::File::create(shims.join(format!("{}.log", opts.id)))?;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["-namespace", &opts.namespace, "-id", &opts.id])
            .args(["-address", &opts.address, "-socket", &socket])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()?;
        std::fs::write(
            shims.join(format!("{}.pid", opts.id)),
            child.id().to_string(),
        )?;
        let mut banner = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut banner)?;
        }
        Ok(socket)
    }

    struct TestTask {
        exit: Arc<ExitSignal>,
        address: String,
        namespace: String,
    }

    #[async_trait]
    impl Task for TestTask {
        async fn create(
            &self,
            _ctx: &TtrpcContext,
            req: CreateTaskRequest,
        ) -> TtrpcResult<CreateTaskResponse> {
            let started = Instant::now();
            let resolved = resolve_image(&self.address, &self.namespace, &req.id, None).await;
            let line = match resolved {
                Ok(r) => {
                    let ms = started.elapsed().as_millis();
                    format!("ok {} {} {ms}", r.name, r.config_digest)
                }
                Err(e) => format!("err {e}"),
            };
            let written = test_dir().map_err(|e| e.to_string()).and_then(|d| {
                let path = d.join("results").join(&req.id);
                std::fs::write(path, &line).map_err(|e| e.to_string())
            });
            let message = match written {
                Ok(()) => format!("vigil test shim refuses to run anything; resolved: {line}"),
                Err(e) => format!("vigil test shim could not record {line}: {e}"),
            };
            let status = ttrpc::get_status(ttrpc::Code::FAILED_PRECONDITION, message);
            Err(ttrpc::Error::RpcStatus(status))
        }

        async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
            self.exit.signal();
            Ok(Empty::new())
        }
    }
}
