//! Tearing down what a private containerd left: processes, runc state, mounts, cgroups, bpffs
//! pins, shim sockets. Every step goes on when one fails; failures are returned as text.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

use crate::{cmd, prereq, procs};

/// What belongs to one private containerd.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The temporary folder holding its config, root, state, sockets.
    pub dir: PathBuf,
    /// Its gRPC socket (shims carry it as `-address`).
    pub socket: PathBuf,
    /// containerd namespaces used (ctr's own and `k8s.io` for CRI).
    pub namespaces: Vec<String>,
    /// Top-level cgroup name every container of it lives under, in every hierarchy.
    pub cgroup: String,
    /// runc root folder (holds one folder per namespace).
    pub runc_root: PathBuf,
    /// The bpffs folder vigil pins under.
    pub bpf_pin_root: PathBuf,
    /// When the scope began: a dead shim socket in /run/containerd/s made since is its own.
    pub started: std::time::SystemTime,
}

/// What is still there that should not be (see [`Scope::leftovers`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    /// Shim processes still running.
    pub shims: Vec<i32>,
    /// Processes still in the scope's cgroups.
    pub processes: Vec<i32>,
    /// Mount points under the temporary folder.
    pub mounts: Vec<String>,
    /// Container cgroups (below the scope's top-level cgroup).
    pub cgroups: Vec<PathBuf>,
    /// FIFOs under the temporary folder.
    pub fifos: Vec<PathBuf>,
    /// runc state folders.
    pub runc_states: Vec<PathBuf>,
}

impl Leftovers {
    /// Nothing is left.
    pub fn is_empty(&self) -> bool {
        *self == Leftovers::default()
    }
}

impl Scope {
    /// Everything the scope's containers left behind right now.
    pub fn leftovers(&self) -> Leftovers {
        Leftovers {
            shims: procs::shims_of(&self.socket),
            processes: self.cgroup_processes(),
            mounts: self.mounts(),
            cgroups: self.container_cgroups(),
            fifos: ["fifo", "state"]
                .iter()
                .flat_map(|d| find_files(&self.dir.join(d), &|p| is_fifo(p)))
                .collect(),
            runc_states: self
                .runc_states()
                .into_iter()
                .map(|(root, id)| root.join(id))
                .collect(),
        }
    }

    /// Kills and removes everything; returns what could not be cleaned.
    pub fn teardown(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let ids = self.container_ids();
        self.kill_shims();
        self.kill_cgroup_processes();
        self.delete_runc_states(&mut problems);
        self.unmount_all(&mut problems);
        self.remove_cgroups(&mut problems);
        self.remove_shim_sockets(&ids);
        self.remove_dead_sockets_since_start();
        if self.bpf_pin_root.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.bpf_pin_root) {
                problems.push(format!("remove {}: {e}", self.bpf_pin_root.display()));
            }
        }
        problems
    }

    fn kill_shims(&self) {
        let shims = procs::shims_of(&self.socket);
        shims.iter().for_each(|p| procs::kill(*p, Signal::SIGKILL));
        procs::wait_gone(&shims, Duration::from_secs(5));
    }

    /// Thaws and kills every process in the scope's cgroups until none is left.
    fn kill_cgroup_processes(&self) {
        for _ in 0..20 {
            self.thaw();
            let pids = self.cgroup_processes();
            if pids.is_empty() {
                return;
            }
            pids.iter().for_each(|p| procs::kill(*p, Signal::SIGKILL));
            procs::wait_gone(&pids, Duration::from_millis(500));
        }
    }

    fn thaw(&self) {
        for top in self.cgroup_tops() {
            for dir in walk_dirs(&top) {
                let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
                let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            }
        }
    }

    fn cgroup_processes(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .cgroup_tops()
            .iter()
            .flat_map(|top| walk_dirs(top))
            .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// `<hierarchy>/<cgroup>` in every mounted cgroup hierarchy where it exists.
    fn cgroup_tops(&self) -> Vec<PathBuf> {
        cgroup_mounts()
            .into_iter()
            .map(|m| m.join(&self.cgroup))
            .filter(|p| p.is_dir())
            .collect()
    }

    fn container_cgroups(&self) -> Vec<PathBuf> {
        self.cgroup_tops()
            .iter()
            .flat_map(|top| walk_dirs(top).into_iter().filter(move |d| d != top))
            .collect()
    }

    fn remove_cgroups(&self, problems: &mut Vec<String>) {
        for top in self.cgroup_tops() {
            let mut dirs = walk_dirs(&top);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                if let Err(e) = std::fs::remove_dir(&dir) {
                    problems.push(format!("rmdir cgroup {}: {e}", dir.display()));
                }
            }
        }
    }

    /// `(runc root, container id)` of every container runc still has state for.
    fn runc_states(&self) -> Vec<(PathBuf, String)> {
        let mut roots = vec![self.runc_root.clone()];
        roots.extend(self.namespaces.iter().map(|ns| self.runc_root.join(ns)));
        roots
            .into_iter()
            .flat_map(|root| {
                subdirs(&root)
                    .into_iter()
                    .filter(|d| d.join("state.json").is_file())
                    .filter_map(|d| Some((root.clone(), d.file_name()?.to_str()?.to_string())))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn delete_runc_states(&self, problems: &mut Vec<String>) {
        for (root, id) in self.runc_states() {
            let mut runc = Command::new("runc");
            runc.arg("--root").arg(&root).args(["delete", "-f", &id]);
            match cmd::run(&mut runc, None, Duration::from_secs(20)) {
                Ok(out) if out.rc == 0 => {}
                Ok(out) => problems.push(out.describe()),
                Err(e) => problems.push(format!("runc delete -f {id}: {e:#}")),
            }
        }
    }

    fn mounts(&self) -> Vec<String> {
        let prefix = format!("{}/", self.dir.display());
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(prereq::unescape_mount))
            .filter(|m| m.starts_with(&prefix) || *m == self.dir.to_string_lossy())
            .collect()
    }

    fn unmount_all(&self, problems: &mut Vec<String>) {
        for _ in 0..5 {
            let mut mounts = self.mounts();
            if mounts.is_empty() {
                return;
            }
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        problems.extend(
            self.mounts()
                .into_iter()
                .map(|m| format!("still mounted: {m}")),
        );
    }

    /// Ids of every container the scope knows (bundles and runc states).
    fn container_ids(&self) -> Vec<(String, String)> {
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task");
        let mut ids = Vec::new();
        for ns in &self.namespaces {
            for bundle in subdirs(&tasks.join(ns)) {
                if let Some(id) = bundle.file_name().and_then(|n| n.to_str()) {
                    ids.push((ns.clone(), id.to_string()));
                }
            }
            for (_, id) in self.runc_states() {
                ids.push((ns.clone(), id));
            }
        }
        ids
    }

    /// Shim sockets live in /run/containerd/s/ (a hash of address, namespace and id) whatever
    /// the containerd; a killed shim leaves its socket there.
    fn remove_shim_sockets(&self, ids: &[(String, String)]) {
        for (ns, id) in ids {
            let _ = std::fs::remove_file(shim_socket_path(&self.socket, ns, id));
        }
    }
}

impl Scope {
    /// Shim sockets made in /run/containerd/s since the scope began that nobody listens on
    /// any more (shims killed by a case, including ones whose container was already removed,
    /// which [`Scope::container_ids`] no longer names). A socket someone still serves is
    /// left alone.
    fn remove_dead_sockets_since_start(&self) {
        let Ok(entries) = std::fs::read_dir("/run/containerd/s") else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let recent = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= self.started);
            let dead = matches!(
                std::os::unix::net::UnixStream::connect(&path),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            );
            if recent && dead {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The socket path a v2 shim listens on for a containerd at `socket`, namespace `ns`, id `id`.
pub fn shim_socket_path(socket: &Path, ns: &str, id: &str) -> PathBuf {
    let key = socket.join(ns).join(id);
    let hash = Sha256::digest(key.to_string_lossy().as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    PathBuf::from("/run/containerd/s").join(hex)
}

/// Mount points of every cgroup hierarchy (v1 controllers, named ones, cgroup2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount = left.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2")
                .then(|| PathBuf::from(prereq::unescape_mount(mount)))
        })
        .collect()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// `top` and every folder below it (cgroup trees: no symlinks, no files to skip).
fn walk_dirs(top: &Path) -> Vec<PathBuf> {
    let mut out = vec![top.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let children = subdirs(&out[i]);
        out.extend(children);
        i += 1;
    }
    out
}

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false)
}

/// Files below `dir` (not following symlinks, not entering mounted snapshots' contents twice)
/// for which `pick` holds.
fn find_files(dir: &Path, pick: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(cur) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&cur) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) if pick(&path) => found.push(path),
                _ => {}
            }
        }
    }
    found
}
