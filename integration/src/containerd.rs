//! A private containerd for one test: own config, root, state and sockets under a temporary
//! folder, vigil's shim on its PATH, a private vigil config. Dropping it (also on panic) tears
//! everything down.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cleanup::{Leftovers, Scope};
use crate::images::Image;
use crate::{cmd, paths};

/// The containerd namespace CRI uses.
pub const CRI_NAMESPACE: &str = "k8s.io";

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// How to set up the private containerd.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra lines for the private vigil config (keys from docs/configuration.md).
    pub vigil_config: String,
    /// Images to import into the ctr namespace right after start.
    pub images: Vec<Image>,
    /// Write this text as the vigil config instead of the generated one (bad-input tests).
    pub raw_vigil_config: Option<String>,
}

/// A running private containerd. See the module docs.
pub struct Containerd {
    dir: tempfile::TempDir,
    namespace: String,
    child: Mutex<Option<Child>>,
    scope: Scope,
    shim_dir: Option<PathBuf>,
}

impl Containerd {
    /// Writes the configs, starts containerd, waits until it answers, imports `opts.images`.
    pub fn start(opts: &Options) -> Result<Containerd> {
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let namespace = format!("vigil-e2e-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("vigil-e2e-")
            .tempdir_in("/tmp")
            .context("create the private containerd's temporary folder")?;
        let scope = Scope {
            dir: dir.path().to_path_buf(),
            socket: dir.path().join("containerd.sock"),
            namespaces: vec![namespace.clone(), CRI_NAMESPACE.to_string()],
            cgroup: namespace.clone(),
            runc_root: dir.path().join("runc"),
            bpf_pin_root: PathBuf::from(format!("/sys/fs/bpf/{namespace}")),
            started: std::time::SystemTime::now(),
        };
        let shim_dir = paths::shim_dir();
        let c = Containerd {
            dir,
            namespace,
            child: Mutex::new(None),
            scope,
            shim_dir,
        };
        c.write_configs(opts)?;
        c.launch()?;
        for image in &opts.images {
            c.import(*image)?;
        }
        Ok(c)
    }

    /// The temporary folder everything lives under.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.scope.socket
    }

    /// The containerd namespace ctr commands use; also the top-level cgroup name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The private vigil config file (`VIGIL_CONFIG`).
    pub fn vigil_config_path(&self) -> PathBuf {
        self.dir().join("vigil.toml")
    }

    /// The audit log the private vigil config names.
    pub fn audit_log(&self) -> PathBuf {
        self.dir().join("audit.jsonl")
    }

    /// vigil's state folder (profile store).
    pub fn vigil_state_dir(&self) -> PathBuf {
        self.dir().join("vigil-state")
    }

    /// The bpffs folder vigil pins under.
    pub fn bpf_pin_root(&self) -> &Path {
        &self.scope.bpf_pin_root
    }

    /// The runc root both runtimes use (`<root>/<namespace>/<id>`).
    pub fn runc_root(&self) -> &Path {
        &self.scope.runc_root
    }

    /// The folder `ctr` puts its stdio FIFOs in.
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir().join("fifo")
    }

    /// containerd's log (stdout and stderr, all starts appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("containerd.log")
    }

    /// The folder holding the vigil shim containerd runs, if one is built.
    pub fn shim_dir(&self) -> Option<&Path> {
        self.shim_dir.as_deref()
    }

    /// The bundle folder of a task (holds `config.json`, `rootfs`, the shim's files).
    pub fn bundle(&self, namespace: &str, id: &str) -> PathBuf {
        self.dir()
            .join("state/io.containerd.runtime.v2.task")
            .join(namespace)
            .join(id)
    }

    /// The CRI socket (the same gRPC socket; CRI is a service on it).
    pub fn cri_socket(&self) -> &Path {
        self.socket()
    }

    /// What is left of containers right now (processes, mounts, cgroups, FIFOs, runc state).
    pub fn leftovers(&self) -> Leftovers {
        self.scope.leftovers()
    }

    /// The pid of the running containerd.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_configs(&self, opts: &Options) -> Result<()> {
        for sub in ["fifo", "cni/bin", "cni/conf", "runc", "opt", "pod-logs"] {
            std::fs::create_dir_all(self.dir().join(sub))?;
        }
        let toml = self.containerd_toml();
        std::fs::write(self.dir().join("containerd.toml"), toml)?;
        let vigil = match &opts.raw_vigil_config {
            Some(raw) => raw.clone(),
            None => self.vigil_toml(&opts.vigil_config),
        };
        std::fs::write(self.vigil_config_path(), vigil).context("write the private vigil config")
    }

    fn vigil_toml(&self, extra: &str) -> String {
        format!(
            "runc_root = \"{runc}\"\nstate_dir = \"{state}\"\nbpf_pin_root = \"{pin}\"\n\
             audit_log = \"{audit}\"\n{extra}\n",
            runc = self.runc_root().display(),
            state = self.vigil_state_dir().display(),
            pin = self.bpf_pin_root().display(),
            audit = self.audit_log().display(),
        )
    }

    fn containerd_toml(&self) -> String {
        let d = self.dir().display();
        let cri = r#"[plugins."io.containerd.grpc.v1.cri""#;
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

{cri}]
  sandbox_image = "docker.io/{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which some hosts (this VM) deny even to
  # root: clamp the sandbox's -998 to what this process may set.
  restrict_oom_score_adj = true
{cri}.cni]
  bin_dir = "{d}/cni/bin"
  conf_dir = "{d}/cni/conf"
{cri}.containerd]
  default_runtime_name = "runc"
{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri}.containerd.runtimes.runc.options]
  Root = "{d}/runc"
{cri}.containerd.runtimes.vigil]
  runtime_type = "io.containerd.vigil.v2"
  pod_annotations = ["vigil.dev/*"]
"#,
            pause = Image::Pause.name(),
        )
    }

    /// Starts containerd (again, after [`Containerd::stop`]) and waits until it answers.
    pub fn launch(&self) -> Result<()> {
        if self.child().is_some() {
            bail!("containerd is already running");
        }
        let log = self.open_log()?;
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(self.dir().join("containerd.toml"))
            .env("PATH", self.path_env())
            .env("VIGIL_CONFIG", self.vigil_config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .context("start containerd (is it installed?)")?;
        *self.child() = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    fn open_log(&self) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("open {}", self.log_path().display()))
    }

    /// PATH for containerd: the vigil shim's folder first, then the caller's PATH.
    fn path_env(&self) -> std::ffi::OsString {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = self.shim_dir.iter().cloned().collect();
        dirs.extend(std::env::split_paths(&inherited));
        std::env::join_paths(dirs).unwrap_or(inherited)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self
                .child()
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten();
            if let Some(status) = exited {
                *self.child() = None;
                bail!(
                    "containerd exited at start ({status}); log:\n{}",
                    self.log_tail(30)
                );
            }
            if self.socket().exists() {
                let out = self.ctr_timeout(&["version"], Duration::from_secs(5))?;
                if out.rc == 0 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer within {timeout:?}; log:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s); shims and containers keep running.
    pub fn stop(&self) -> Result<()> {
        let Some(mut child) = self.child().take() else {
            return Ok(());
        };
        let pid = child.id() as i32;
        crate::procs::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(self.socket());
        Ok(())
    }

    /// Imports `image` into the ctr namespace.
    pub fn import(&self, image: Image) -> Result<()> {
        self.import_into(image, &self.namespace.clone())
    }

    /// Imports `image` into `namespace`; into `k8s.io` it is also tagged `docker.io/NAME`,
    /// the name CRI resolves.
    pub fn import_into(&self, image: Image, namespace: &str) -> Result<()> {
        let tar = image.tar()?;
        let tar = tar.to_string_lossy();
        let timeout = Duration::from_secs(120);
        self.ctr_ns(namespace, &["images", "import", &tar], None, timeout)?
            .ok()
            .with_context(|| format!("import {} into namespace {namespace}", image.name()))?;
        if namespace == CRI_NAMESPACE {
            let full = format!("docker.io/{}", image.name());
            self.ctr_ns(
                namespace,
                &["images", "tag", "--force", image.name(), &full],
                None,
                timeout,
            )?
            .ok()
            .with_context(|| format!("tag {} as {full}", image.name()))?;
        }
        Ok(())
    }

    /// `ctr -a SOCK -n NS ARGS...`, killed after `timeout`.
    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> Result<cmd::Output> {
        self.ctr_ns(&self.namespace, args, None, timeout)
    }

    /// `ctr ARGS...` with a 60 s deadline.
    pub fn ctr(&self, args: &[&str]) -> Result<cmd::Output> {
        self.ctr_timeout(args, Duration::from_secs(60))
    }

    /// `ctr ARGS...` with `stdin` piped in.
    pub fn ctr_stdin(&self, args: &[&str], stdin: &[u8], timeout: Duration) -> Result<cmd::Output> {
        self.ctr_ns(&self.namespace, args, Some(stdin), timeout)
    }

    /// `ctr ARGS...` in namespace `namespace`.
    pub fn ctr_ns(
        &self,
        namespace: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<cmd::Output> {
        cmd::run(&mut self.ctr_command_ns(namespace, args), stdin, timeout)
    }

    /// `ctr ARGS...` under a pseudo-terminal: `script -qfec "ctr ..." /dev/null`.
    pub fn ctr_tty(&self, args: &[&str], timeout: Duration) -> Result<cmd::Output> {
        cmd::run(&mut self.ctr_tty_command(args), None, timeout)
    }

    /// The `script` command that runs `ctr ARGS...` under a pseudo-terminal.
    pub fn ctr_tty_command(&self, args: &[&str]) -> Command {
        let line = cmd::cmdline_of(&self.ctr_command(args));
        let mut script = Command::new("script");
        script.args(["-qfec", &line, "/dev/null"]);
        script
    }

    /// The `ctr -a SOCK -n NS ARGS...` command, to run in the background.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        self.ctr_command_ns(&self.namespace, args)
    }

    fn ctr_command_ns(&self, namespace: &str, args: &[&str]) -> Command {
        let mut ctr = Command::new("ctr");
        ctr.arg("-a")
            .arg(self.socket())
            .args(["-n", namespace])
            .args(args);
        ctr
    }
}

impl Containerd {
    /// Stops containerd and tears down everything its containers left (processes, runc
    /// state, mounts, cgroups, bpffs pins, shim sockets); returns what could not be cleaned.
    /// Dropping does the same; this is for callers that must clean up without unwinding
    /// (a signal handler thread).
    pub fn shutdown(&self) -> Vec<String> {
        let _ = self.stop();
        self.scope.teardown()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let problems = self.shutdown();
        if std::env::var_os("VIGIL_E2E_KEEP").is_some() {
            eprintln!("VIGIL_E2E_KEEP: leaving {}", self.dir().display());
            let dir = std::mem::replace(&mut self.dir, tempfile::TempDir::new().expect("tmp"));
            let _ = dir.keep();
        }
        for problem in problems {
            eprintln!("cleanup of {}: {problem}", self.dir().display());
        }
    }
}
