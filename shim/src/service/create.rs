//! Create: from containerd's request to a created container, or to nothing at all.
//!
//! Steps: node config, bundle spec, rootfs mounts, guard preparation, stdio, `runc create`,
//! pty master, guard registration, cgroup watchers. Any failure undoes the steps before it
//! (runc state, mounts, pipes), so a refused container leaves no process, mount, cgroup or
//! open fifo behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim::api::CreateTaskRequest;
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};

use super::bundle::{decode_options, read_spec, BundleSpec, RuntimeOptions, RuntimeRecord};
use super::cgroup::CgroupPaths;
use super::container::{Container, Shared};
use super::error::{TaskError, TaskResult};
use super::exits::Owner;
use super::mount::{self, RootfsMount};
use super::oom::OomWatch;
use super::process::{Process, Status};
use super::stdio::{wire, ProcessIo, StdioPaths};
use crate::config::{self, ConfigLocation, NodeConfig};
use crate::guard::{ContainerGuard, CreateRequest};
use crate::runc::{is_systemd_cgroup_path, read_pid_file, LaunchOpts, Runc};

/// What a failed Create must undo.
#[derive(Default)]
struct Undo {
    rootfs: Option<PathBuf>,
    runc: Option<(Runc, String)>,
    launching: bool,
}

impl Undo {
    async fn run(self, shared: &Shared) {
        if let Some((runc, id)) = self.runc {
            if let Err(e) = runc.delete(&id, true).await {
                tracing::debug!(id, error = %e, "runc delete --force after failed create");
            }
        }
        if self.launching {
            shared.book.abort_launch();
        }
        if let Some(rootfs) = self.rootfs {
            if let Err(e) = mount::unmount_all(&rootfs) {
                tracing::warn!(rootfs = %rootfs.display(), error = %e, "unmount after failed create");
            }
        }
    }
}

/// Creates the container; on success the init process is held for the caller to announce.
pub async fn create(shared: &Arc<Shared>, req: &CreateTaskRequest) -> TaskResult<Arc<Container>> {
    let mut undo = Undo::default();
    match create_steps(shared, req, &mut undo).await {
        Ok(c) => Ok(c),
        Err(e) => {
            undo.run(shared).await;
            tracing::warn!(id = %req.id, error = %e, "create failed; cleaned up");
            Err(e)
        }
    }
}

async fn create_steps(
    shared: &Arc<Shared>,
    req: &CreateTaskRequest,
    undo: &mut Undo,
) -> TaskResult<Arc<Container>> {
    validate(req)?;
    let bundle = PathBuf::from(&req.bundle);
    let options = decode_options(req.options.as_ref())?;
    let config = load_config(&options)?;
    let spec = read_spec(&bundle)?;
    let runc = runc_for(shared, &config, &options, &spec);
    record_runtime(&bundle, &runc)?;
    undo.rootfs = mount_rootfs(req, &bundle)?;

    let guard = prepare_guard(shared, req, &bundle, &spec, &config).await?;
    let stdio = stdio_paths(req);
    let launched = launch(shared, &runc, &req.id, &bundle, &stdio, undo).await;
    let (pid, io) = match launched {
        Ok(l) => l,
        Err(e) => {
            guard.deleted().await;
            return Err(e);
        }
    };
    if let Err(e) = guard.created(pid).await {
        guard.deleted().await;
        return Err(e.into());
    }
    let parts = Parts {
        bundle,
        runc,
        guard,
        spec,
        stdio,
        rootfs: undo.rootfs.take(),
    };
    undo.runc = None;
    undo.launching = false;
    Ok(register(shared, &req.id, pid, io, parts))
}

/// A created container's pieces, before it is registered.
struct Parts {
    bundle: PathBuf,
    runc: Runc,
    guard: Box<dyn ContainerGuard>,
    spec: BundleSpec,
    stdio: StdioPaths,
    rootfs: Option<PathBuf>,
}

/// Builds the container and registers its init pid; the init holds exits until announced.
fn register(shared: &Arc<Shared>, id: &str, pid: u32, io: ProcessIo, p: Parts) -> Arc<Container> {
    let cgroups = CgroupPaths::of_pid(pid);
    let oom = cgroups
        .as_ref()
        .filter(|_| shared.watch_oom)
        .and_then(|c| OomWatch::start(id, c, shared.events.clone()));
    let init = Arc::new(Process::new("", p.stdio, Vec::new()));
    init.hold();
    init.set_pid_status(pid, Status::Created);
    init.set_io(io);
    let container = Arc::new(Container {
        id: id.to_string(),
        bundle: p.bundle,
        init: init.clone(),
        runc: p.runc,
        shared: shared.clone(),
        guard: p.guard,
        spec: p.spec,
        rootfs: p.rootfs,
        cgroups,
        oom,
        execs: Mutex::new(HashMap::new()),
    });
    let owner = Owner {
        container: container.clone(),
        process: init.clone(),
    };
    if let Some(early) = shared.book.finish_launch(pid, owner, || {}) {
        // Died before it was registered: held until TaskCreate is out.
        let _ = init.offer_exit(early);
    }
    container
}

/// Publishes TaskCreate, then lets held exits through.
pub fn announce(c: &Arc<Container>, req: &CreateTaskRequest) {
    let pid = c.init.pid();
    let held = c.init.release(None, || {
        c.shared.events.send(TaskCreate {
            container_id: c.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            checkpoint: req.checkpoint.clone(),
            pid,
            ..Default::default()
        });
    });
    if let Some(exit) = held {
        c.finish_exit(&c.init, exit);
    }
    tracing::info!(id = %c.id, pid, bundle = %c.bundle.display(), "container created");
}

fn validate(req: &CreateTaskRequest) -> TaskResult<()> {
    if req.id.is_empty() {
        return Err(TaskError::InvalidArgument(
            "create: container id is empty".into(),
        ));
    }
    if !req.bundle.starts_with('/') {
        return Err(TaskError::InvalidArgument(format!(
            "create: bundle {:?} is not absolute",
            req.bundle
        )));
    }
    if !req.checkpoint.is_empty() {
        return Err(TaskError::Unimplemented(
            "restoring from a checkpoint is not supported by vigil".into(),
        ));
    }
    Ok(())
}

fn load_config(options: &RuntimeOptions) -> TaskResult<NodeConfig> {
    let location = ConfigLocation::resolve(options.config_path.as_deref());
    Ok(config::load(&location)?)
}

fn runc_for(
    shared: &Shared,
    config: &NodeConfig,
    opts: &RuntimeOptions,
    spec: &BundleSpec,
) -> Runc {
    let overrides = opts.runc.clone().unwrap_or_default();
    let binary = overrides
        .binary
        .unwrap_or_else(|| config.runc_binary.clone());
    let root = overrides
        .root
        .unwrap_or_else(|| config.runc_root.clone())
        .join(&shared.namespace);
    let systemd = overrides.systemd_cgroup || is_systemd_cgroup_path(&spec.cgroups_path);
    Runc::new(binary, root, systemd, shared.spawner.clone())
}

fn record_runtime(bundle: &Path, runc: &Runc) -> TaskResult<()> {
    RuntimeRecord {
        binary: runc.binary.clone(),
        root: runc.root.clone(),
        systemd_cgroup: runc.systemd_cgroup,
    }
    .write(bundle)
}

fn mount_rootfs(req: &CreateTaskRequest, bundle: &Path) -> TaskResult<Option<PathBuf>> {
    if req.rootfs.is_empty() {
        return Ok(None);
    }
    let target = bundle.join("rootfs");
    if let Err(e) = std::fs::create_dir(&target) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(TaskError::io(
                format!("create rootfs folder {}", target.display()),
                e,
            ));
        }
    }
    let mounts: Vec<RootfsMount> = req
        .rootfs
        .iter()
        .map(|m| RootfsMount {
            kind: m.type_.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect();
    mount::mount_all(&mounts, &target).map_err(|e| TaskError::Internal(e.to_string()))?;
    Ok(Some(target))
}

async fn prepare_guard(
    shared: &Shared,
    req: &CreateTaskRequest,
    bundle: &Path,
    spec: &BundleSpec,
    config: &NodeConfig,
) -> TaskResult<Box<dyn ContainerGuard>> {
    let guard_req = CreateRequest {
        id: &req.id,
        namespace: &shared.namespace,
        bundle,
        annotations: &spec.annotations,
        config,
    };
    Ok(shared.guard.prepare(&guard_req).await?)
}

fn stdio_paths(req: &CreateTaskRequest) -> StdioPaths {
    StdioPaths {
        stdin: req.stdin.clone(),
        stdout: req.stdout.clone(),
        stderr: req.stderr.clone(),
        terminal: req.terminal,
    }
}

/// `runc create` with the right stdio; returns the init pid and its stdio copiers.
async fn launch(
    shared: &Shared,
    runc: &Runc,
    id: &str,
    bundle: &Path,
    stdio: &StdioPaths,
    undo: &mut Undo,
) -> TaskResult<(u32, ProcessIo)> {
    let (wiring, runc_stdio) = wire(stdio).await?;
    let pid_file = bundle.join("init.pid");
    let log = bundle.join("log.json");
    let opts = LaunchOpts {
        pid_file: &pid_file,
        console_socket: wiring.console_socket(),
        log: &log,
    };
    shared.book.begin_launch();
    undo.launching = true;
    undo.runc = Some((runc.clone(), id.to_string()));
    runc.create(id, bundle, &opts, runc_stdio)
        .await
        .map_err(|e| TaskError::runtime("OCI runtime create failed", e))?;
    let pid = read_pid_file(&pid_file)
        .await
        .map_err(|e| TaskError::io("read init pid", e))?;
    let io = wiring.finish(stdio).await?;
    Ok((pid, io))
}
