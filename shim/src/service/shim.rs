//! The shim binary's three faces: `start` (launch or reuse a shim server), the server (the
//! task service), and `delete` (clean up after a shim that died).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, Error, ExitSignal, Flags, Shim, StartOpts};
use sha2::{Digest, Sha256};

use super::bundle::{group_of, RuntimeRecord};
use super::events::{self, timestamp, EventSink};
use super::mount;
use super::task::TaskService;
use crate::config::{self, ConfigLocation};
use crate::guard::vigil::VigilGuard;
use crate::guard::Guard;
use crate::logging;
use crate::runc::{read_pid_file, DirectSpawner, Runc};

/// containerd's name for this runtime.
pub const RUNTIME_ID: &str = "io.containerd.vigil.v2";

/// Longest `sun_path` a unix socket may have (108 with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The guard every container of this shim is driven through. The real guard is plugged in
/// here, and only here.
fn node_guard(containerd_address: &str) -> Arc<dyn Guard> {
    Arc::new(VigilGuard::new(containerd_address))
}

/// What containerd told this process on its command line.
pub struct ShimService {
    exit: Arc<ExitSignal>,
    id: String,
    namespace: String,
    socket: String,
    bundle: String,
    /// containerd's gRPC socket.
    address: String,
}

/// The framework settings vigil runs with: its own logger and its own reaper.
pub fn framework_config() -> Config {
    Config {
        no_setup_logger: true,
        no_reaper: true,
        ..Config::default()
    }
}

#[async_trait]
impl Shim for ShimService {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        setup_logging(args);
        ShimService {
            exit: Arc::new(ExitSignal::default()),
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            socket: args.socket.clone(),
            bundle: args.bundle.clone(),
            address: args.address.clone(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let cwd =
            std::env::current_dir().map_err(|e| other(format!("read current folder: {e}")))?;
        let grouping = group_of(&cwd, &opts.id);
        let address = socket_address(&opts.address, &opts.namespace, &grouping);
        if socket_serves(&address) {
            write_address(&cwd, &address)?;
            return Ok(address);
        }
        let _ = remove_stale_socket(&address);
        spawn_server(&opts, &address)?;
        write_address(&cwd, &address)?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = match self.bundle.as_str() {
            "" => {
                std::env::current_dir().map_err(|e| other(format!("read current folder: {e}")))?
            }
            b => PathBuf::from(b),
        };
        cleanup_dead_shim(&self.id, &self.namespace, &bundle).await
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let (sink, queue) = EventSink::channel();
        events::forward(publisher, self.namespace.clone(), queue);
        let service = TaskService::new(
            &self.namespace,
            node_guard(&self.address),
            sink,
            self.exit.clone(),
            &self.socket,
            true,
        );
        match service {
            Ok(s) => s,
            Err(e) => {
                // Without a reaper no container can be run or waited for.
                tracing::error!(error = %e, "cannot install the SIGCHLD reaper; shim exits");
                std::process::exit(1);
            }
        }
    }
}

fn other(msg: String) -> Error {
    Error::Other(msg)
}

fn setup_logging(args: &Flags) {
    let result = match args.action.as_str() {
        // `start` prints the address on stdout, which containerd reads together with stderr.
        "start" => return,
        "delete" => logging::init_stderr(tracing::Level::WARN),
        _ => logging::init_fifo(Path::new("log"), args.debug),
    };
    if let Err(e) = result {
        eprintln!("{RUNTIME_ID}: {e}");
    }
}

/// The shim's ttrpc socket: beside containerd's own socket (so a private containerd gets
/// private shim sockets), named by a hash of containerd's address, namespace and group.
pub fn socket_address(containerd: &str, namespace: &str, grouping: &str) -> String {
    let key = Path::new(containerd).join(namespace).join(grouping);
    let hash = Sha256::digest(key.as_os_str().as_encoded_bytes());
    let name: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let dir = Path::new(containerd)
        .parent()
        .unwrap_or(Path::new("/run/containerd"));
    let mut path = dir.join("s").join(&name);
    if path.as_os_str().len() > MAX_SOCKET_PATH || !dir.is_absolute() {
        path = Path::new("/run/containerd/s").join(&name);
    }
    format!("unix://{}", path.display())
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

fn socket_serves(address: &str) -> bool {
    UnixStream::connect(socket_path(address)).is_ok()
}

/// Removes a socket nobody serves on. Failure is left to the server's bind, which retries
/// and reports; `start` must not print anything but the address (containerd reads stdout
/// and stderr together).
fn remove_stale_socket(address: &str) -> std::io::Result<()> {
    let path = socket_path(address);
    match std::fs::symlink_metadata(path) {
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

fn write_address(bundle: &Path, address: &str) -> containerd_shim::Result<()> {
    let tmp = bundle.join(".address.tmp");
    std::fs::write(&tmp, address)
        .and_then(|()| std::fs::rename(&tmp, bundle.join("address")))
        .map_err(|e| other(format!("write address file in {}: {e}", bundle.display())))
}

/// Starts the server and waits until it listens (it closes its stdout then).
fn spawn_server(opts: &StartOpts, address: &str) -> containerd_shim::Result<()> {
    let exe = std::env::current_exe().map_err(|e| other(format!("find own binary: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "-namespace",
        &opts.namespace,
        "-id",
        &opts.id,
        "-address",
        &opts.address,
    ])
    .args(["-socket", address])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    // Its own process group: a signal to containerd's group must not reach the shim.
    .process_group(0);
    if opts.debug {
        cmd.arg("-debug");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| other(format!("start shim server: {e}")))?;
    if let Some(mut out) = child.stdout.take() {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    }
    if let Ok(Some(status)) = child.try_wait() {
        return Err(other(format!(
            "shim server exited at start-up with {status}"
        )));
    }
    // Best effort, silently: the shim then keeps the default score (and `start` must not
    // print anything but the address).
    let _ = containerd_shim::cgroup::adjust_oom_score(child.id());
    Ok(())
}

/// The `delete` action: the shim died; remove what it left (runc state, rootfs mounts).
async fn cleanup_dead_shim(
    id: &str,
    namespace: &str,
    bundle: &Path,
) -> containerd_shim::Result<DeleteResponse> {
    let runc = runc_for_cleanup(namespace, bundle);
    let pid = read_pid_file(&bundle.join("init.pid")).await.unwrap_or(0);
    if let Err(e) = runc.delete(id, true).await {
        tracing::warn!(id, error = %e, "runc delete --force after shim death failed; continuing");
    }
    let rootfs = bundle.join("rootfs");
    if let Err(e) = mount::unmount_all(&rootfs) {
        tracing::warn!(id, error = %e, "rootfs unmount after shim death failed; continuing");
    }
    remove_dead_socket(bundle);
    let config = config::load(&ConfigLocation::resolve(None)).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "node config unusable during cleanup; using defaults");
        config::NodeConfig::default()
    });
    crate::guard::vigil::cleanup_after_dead_shim(&config, namespace, id);
    Ok(DeleteResponse {
        pid,
        exit_status: 137,
        exited_at: Some(timestamp(std::time::SystemTime::now())).into(),
        ..Default::default()
    })
}

/// Removes the dead shim's socket, unless another shim of the group still serves on it.
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let address = address.trim();
    if !address.is_empty() && !socket_serves(address) {
        if let Err(e) = remove_stale_socket(address) {
            tracing::warn!(address, error = %e, "remove dead shim's socket; continuing");
        }
    }
}

/// runc as Create drove it (the bundle's record), else as the node config says.
fn runc_for_cleanup(namespace: &str, bundle: &Path) -> Runc {
    let spawner = Arc::new(DirectSpawner);
    if let Some(r) = RuntimeRecord::read(bundle) {
        return Runc::new(r.binary, r.root, r.systemd_cgroup, spawner);
    }
    let config = config::load(&ConfigLocation::resolve(None)).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "node config unusable during cleanup; using defaults");
        config::NodeConfig::default()
    });
    let root = config.runc_root_for(namespace);
    Runc::new(config.runc_binary, root, false, spawner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_sits_beside_containerds_socket() {
        let a = socket_address("/tmp/vigil-x/containerd.sock", "default", "c1");
        assert!(a.starts_with("unix:///tmp/vigil-x/s/"), "{a}");
        assert_eq!(a.len(), "unix:///tmp/vigil-x/s/".len() + 64);
        assert_ne!(
            a,
            socket_address("/tmp/vigil-x/containerd.sock", "default", "c2")
        );
        assert_eq!(
            a,
            socket_address("/tmp/vigil-x/containerd.sock", "default", "c1")
        );
    }

    #[test]
    fn long_or_relative_addresses_fall_back_to_run_containerd() {
        let long = format!("/tmp/{}/containerd.sock", "d".repeat(80));
        assert!(socket_address(&long, "ns", "c").starts_with("unix:///run/containerd/s/"));
        assert!(
            socket_address("containerd.sock", "ns", "c").starts_with("unix:///run/containerd/s/")
        );
    }
}
