//! One node's program set: opened (or loaded and pinned by the first shim), shared by every
//! shim through bpffs, changed only under an flock on the version folder.

use std::{
    collections::HashSet,
    fs::{self, File},
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    maps::{
        lpm_trie::Key, Array, ArrayOfMaps, HashMap, LpmTrie, Map, MapData, PerCpuArray,
        PerCpuValues,
    },
    programs::{
        links::{CgroupAttachMode, FdLink},
        CgroupSockAddr,
    },
    util::nr_cpus,
};
use vigil_ebpf_common::{
    container_flags, map, Container, ExecKey, NetKey, SyscallBits, Task, MAX_SLOTS,
};

use super::{
    btf, cgroup,
    pins::{self, Layout, SOCK_HOOKS, SYSCALL_HOOKS},
    registration::{ExecRule, NetRule, Registration},
    BpfError, Result,
};

/// `statfs(2)` f_type of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What a container is registered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Learn,
    Monitor,
    Enforce,
}

impl Mode {
    fn raw(self) -> u8 {
        match self {
            Mode::Learn => vigil_ebpf_common::mode::LEARN,
            Mode::Monitor => vigil_ebpf_common::mode::MONITOR,
            Mode::Enforce => vigil_ebpf_common::mode::ENFORCE,
        }
    }
}

/// A container to register: its cgroup, its init process, and what to do.
#[derive(Clone, Debug)]
pub struct RegisterRequest {
    /// The container's cgroup2 id ([`super::cgroup_id_of`] of its init).
    pub cgroup_id: u64,
    /// The container's init, waiting to exec the entrypoint (after `runc create`).
    pub init_pid: u32,
    pub mode: Mode,
    /// Attach the syscall tracepoints for this container (syscall numbers, file opens).
    /// Learning always does; a monitor may; enforce never needs to.
    pub watch_syscalls: bool,
    /// Enforce: exec identities the container may run.
    pub exec_allow: Vec<ExecRule>,
    /// Enforce: network tuples the container may use.
    pub net_allow: Vec<NetRule>,
}

/// A handle to the node's pinned program set. Cheap to clone; shared by a shim's
/// containers. Two shims hold two handles on the same pins.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Mutex<Inner>>,
}

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    cgroup2: PathBuf,
    lock: File,
    pub(crate) maps: Maps,
}

pub(crate) struct Maps {
    pub(crate) containers: HashMap<MapData, u64, Container>,
    pub(crate) tasks: HashMap<MapData, u32, Task>,
    syscalls_seen: Array<MapData, SyscallBits>,
    pub(crate) exec_allow: HashMap<MapData, ExecKey, u32>,
    pub(crate) net_allow: LpmTrie<MapData, NetKey, u32>,
    pub(crate) lost: PerCpuArray<MapData, u64>,
    rings: ArrayOfMaps<MapData>,
    /// A second handle on `VIGIL_RINGS` for deletes (aya 0.14's ArrayOfMaps has none).
    rings_raw: MapData,
    node: Array<MapData, u64>,
}

impl Node {
    /// Opens the program set under `<pin_root>/<version>`, loading and pinning it first if
    /// this is the first shim on the node; drops registrations whose cgroup is gone.
    pub fn open(pin_root: &Path) -> Result<Node> {
        let object = super::object::bytes()?;
        let layout = Layout {
            dir: pin_root.join(super::object::version()),
        };
        fs::create_dir_all(&layout.dir)
            .map_err(|e| BpfError::io("create pin folder", &layout.dir, e))?;
        check_bpffs(&layout.dir)?;
        let lock = File::open(&layout.dir).map_err(|e| BpfError::io("open", &layout.dir, e))?;
        let _held = Flock::exclusive(&lock, &layout.dir)?;
        if !layout.is_complete() {
            let offsets = btf::kernel_offsets(Path::new(btf::VMLINUX_BTF))?;
            pins::load_and_pin(&layout, object, &offsets)?;
            log::info!("vigil: loaded eBPF programs into {}", layout.dir.display());
        }
        let maps = Maps::open(&layout)?;
        let cgroup2 = cgroup::cgroup2_mount()?;
        drop(_held);
        let node = Node {
            inner: Arc::new(Mutex::new(Inner {
                layout,
                cgroup2,
                lock,
                maps,
            })),
        };
        node.reconcile()?;
        Ok(node)
    }

    /// The version folder this handle uses.
    pub fn pin_dir(&self) -> PathBuf {
        self.locked().layout.dir.clone()
    }

    /// Whether the syscall tracepoints are attached now.
    pub fn syscall_hooks_attached(&self) -> bool {
        self.locked().layout.link(SYSCALL_HOOKS[0].0).exists()
    }

    /// Registers a container: allocates a slot, fills its allow sets, gives it a ring
    /// buffer, activates it, attaches its cgroup's sock hooks and, if needed, the syscall
    /// tracepoints. The container is guarded when this returns.
    pub fn register(&self, req: &RegisterRequest) -> Result<Registration> {
        let mut inner = self.locked();
        let _held = Flock::exclusive(&inner.lock, &inner.layout.dir)?;
        let (slot, generation, ring) = inner.register_locked(req)?;
        Ok(Registration::new(
            self.clone(),
            req.cgroup_id,
            slot,
            generation,
            req.mode,
            ring,
        ))
    }

    /// Drops registrations whose cgroup no longer exists (a crashed shim's), their links and
    /// allow entries, then attaches or detaches the syscall tracepoints as the remaining
    /// registrations need.
    pub fn reconcile(&self) -> Result<()> {
        let mut inner = self.locked();
        let _held = Flock::exclusive(&inner.lock, &inner.layout.dir)?;
        let live = cgroup::live_cgroup_ids(&inner.cgroup2)?;
        let stale: Vec<u64> = inner
            .registered()?
            .into_iter()
            .filter(|id| !live.contains(id))
            .collect();
        for id in stale {
            log::warn!("vigil: dropping registration of removed cgroup {id}");
            inner.unregister_locked(id)?;
        }
        inner.drop_orphans()?;
        inner.update_syscall_hooks()
    }

    pub(crate) fn locked(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the maps under the node lock (allow-set updates, unregister).
    pub(crate) fn with_lock<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        let mut inner = self.locked();
        let inner = &mut *inner;
        let _held = Flock::exclusive(&inner.lock, &inner.layout.dir)?;
        f(inner)
    }
}

impl Inner {
    fn register_locked(&mut self, req: &RegisterRequest) -> Result<(u32, u32, MapData)> {
        if self.maps.containers.get(&req.cgroup_id, 0).is_ok() {
            return Err(BpfError::AlreadyRegistered(req.cgroup_id));
        }
        let slot = self.free_slot()?;
        let generation = self.next_generation()?;
        self.reset_slot(slot)?;
        for rule in &req.exec_allow {
            self.allow_exec(generation, rule)?;
        }
        for rule in &req.net_allow {
            self.allow_net(generation, rule)?;
        }
        let ring = self.install_ring(slot)?;
        let flags = if req.watch_syscalls {
            container_flags::NEEDS_SYSCALLS
        } else {
            0
        };
        let entry = Container {
            slot,
            generation,
            init_tgid: req.init_pid,
            mode: req.mode.raw(),
            flags,
            _pad: [0; 2],
        };
        self.maps
            .containers
            .insert(req.cgroup_id, entry, 0)
            .map_err(|e| BpfError::map("insert into", map::CONTAINERS, e))?;
        if let Err(e) = self.activate(req.cgroup_id, req.init_pid) {
            let _ = self.unregister_locked(req.cgroup_id);
            return Err(e);
        }
        Ok((slot, generation, ring))
    }

    fn activate(&mut self, cgroup_id: u64, init_pid: u32) -> Result<()> {
        self.attach_sock_hooks(cgroup_id, init_pid)?;
        self.update_syscall_hooks()
    }

    pub(crate) fn registered(&self) -> Result<Vec<u64>> {
        self.maps
            .containers
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| BpfError::map("list", map::CONTAINERS, e))
    }

    fn entries(&self) -> Result<Vec<Container>> {
        self.maps
            .containers
            .iter()
            .map(|r| r.map(|(_, v)| v))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| BpfError::map("list", map::CONTAINERS, e))
    }

    fn free_slot(&self) -> Result<u32> {
        let used: HashSet<u32> = self.entries()?.iter().map(|c| c.slot).collect();
        (0..MAX_SLOTS)
            .find(|s| !used.contains(s))
            .ok_or(BpfError::NoSlot(MAX_SLOTS))
    }

    fn next_generation(&mut self) -> Result<u32> {
        let last = self
            .maps
            .node
            .get(&0, 0)
            .map_err(|e| BpfError::map("read", map::NODE, e))?;
        let next = match (last as u32).wrapping_add(1) {
            0 => 1,
            n => n,
        };
        self.maps
            .node
            .set(0, u64::from(next), 0)
            .map_err(|e| BpfError::map("write", map::NODE, e))?;
        Ok(next)
    }

    /// Clears a slot's syscall bitmaps and lost counters.
    fn reset_slot(&mut self, slot: u32) -> Result<()> {
        for kind in 0..2 {
            self.maps
                .syscalls_seen
                .set(slot * 2 + kind, SyscallBits::default(), 0)
                .map_err(|e| BpfError::map("reset", map::SYSCALLS_SEEN, e))?;
        }
        let cpus = nr_cpus().map_err(|(_, e)| BpfError::io("count", "possible cpus", e))?;
        let zeros = PerCpuValues::try_from(vec![0u64; cpus])
            .map_err(|e| BpfError::map("reset", map::LOST, e))?;
        self.maps
            .lost
            .set(slot, zeros, 0)
            .map_err(|e| BpfError::map("reset", map::LOST, e))
    }

    /// Creates the slot's ring buffer and puts it into `VIGIL_RINGS`.
    fn install_ring(&mut self, slot: u32) -> Result<MapData> {
        let fd = super::sys::create_ringbuf(vigil_ebpf_common::RING_BYTES)
            .map_err(|e| BpfError::map("create", "vigil_ring", e))?;
        let ring = MapData::from_fd(fd).map_err(|e| BpfError::map("open", "vigil_ring", e))?;
        self.maps
            .rings
            .set(slot, &ring, 0)
            .map_err(|e| BpfError::map("insert into", map::RINGS, e))?;
        Ok(ring)
    }

    /// Adds a rule's keys: the path key (any name, or "check the applet name", which the LSM
    /// tier's bprm_check needs) and, for an applet, its name key.
    pub(crate) fn allow_exec(&mut self, generation: u32, rule: &ExecRule) -> Result<()> {
        for (hash, bits) in rule.keys() {
            let key = ExecKey {
                generation,
                _pad: 0,
                hash,
            };
            let old = self.maps.exec_allow.get(&key, 0).unwrap_or(0);
            self.maps
                .exec_allow
                .insert(key, old | bits, 0)
                .map_err(|e| BpfError::map("insert into", map::EXEC_ALLOW, e))?;
        }
        Ok(())
    }

    pub(crate) fn allow_net(&mut self, generation: u32, rule: &NetRule) -> Result<()> {
        let (prefix_len, data) = rule.key(generation)?;
        self.maps
            .net_allow
            .insert(&Key::new(prefix_len, data), 1, 0)
            .map_err(|e| BpfError::map("insert into", map::NET_ALLOW, e))
    }

    fn attach_sock_hooks(&mut self, cgroup_id: u64, init_pid: u32) -> Result<()> {
        let dir = self.cgroup_dir(cgroup_id, init_pid)?;
        let cgroup = File::open(&dir).map_err(|e| BpfError::io("open cgroup", &dir, e))?;
        let links = self.layout.cgroup_links(cgroup_id);
        fs::create_dir_all(&links).map_err(|e| BpfError::io("create pin folder", &links, e))?;
        for name in SOCK_HOOKS {
            let link = attach_sock_hook(&self.layout, name, &cgroup)?;
            pins::pin_link(link, &links.join(name))?;
        }
        Ok(())
    }

    /// The cgroup2 directory whose inode is `cgroup_id`: the init's cgroup when that is it
    /// (the usual case), else found by walking the hierarchy.
    fn cgroup_dir(&self, cgroup_id: u64, init_pid: u32) -> Result<PathBuf> {
        if let Ok(rel) = cgroup::cgroup_path_of(init_pid) {
            let dir = self.cgroup2.join(rel);
            if cgroup::cgroup_id(&dir).ok() == Some(cgroup_id) {
                return Ok(dir);
            }
        }
        find_cgroup(&self.cgroup2, cgroup_id).ok_or_else(|| {
            BpfError::io(
                "find cgroup",
                self.cgroup2.join(format!("<id {cgroup_id}>")),
                std::io::ErrorKind::NotFound.into(),
            )
        })
    }

    /// Deactivates a registration and removes everything it owned.
    pub(crate) fn unregister_locked(&mut self, cgroup_id: u64) -> Result<()> {
        let Ok(entry) = self.maps.containers.get(&cgroup_id, 0) else {
            return Ok(());
        };
        self.maps
            .containers
            .remove(&cgroup_id)
            .map_err(|e| BpfError::map("remove from", map::CONTAINERS, e))?;
        let links = self.layout.cgroup_links(cgroup_id);
        pins::remove_dir_contents(&links)?;
        let _ = fs::remove_dir(&links);
        super::sys::delete_u32(self.maps.rings_fd(), entry.slot)
            .map_err(|e| BpfError::map("remove from", map::RINGS, e))?;
        self.drop_generation(&HashSet::from([entry.generation]))?;
        self.update_syscall_hooks()
    }

    /// Removes allow entries and tasks of registrations that no longer exist, and link
    /// folders of cgroups that are not registered.
    fn drop_orphans(&mut self) -> Result<()> {
        let entries = self.entries()?;
        let live: HashSet<u32> = entries.iter().map(|c| c.generation).collect();
        let all = self.generations_in_use()?;
        self.drop_generation(&all.difference(&live).copied().collect())?;
        let registered: HashSet<u64> = self.registered()?.into_iter().collect();
        let Ok(dir) = fs::read_dir(self.layout.dir.join("links")) else {
            return Ok(());
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("cg-").and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if !registered.contains(&id) {
                pins::remove_dir_contents(&entry.path())?;
                let _ = fs::remove_dir(entry.path());
            }
        }
        Ok(())
    }

    fn generations_in_use(&self) -> Result<HashSet<u32>> {
        let mut set = HashSet::new();
        for key in self.maps.exec_allow.keys().flatten() {
            set.insert(key.generation);
        }
        for key in self.maps.net_allow.keys().flatten() {
            set.insert(key.data().generation);
        }
        for (_, task) in self.maps.tasks.iter().flatten() {
            set.insert(task.generation);
        }
        set.extend(super::lsm::generations(&self.layout)?);
        Ok(set)
    }

    /// Removes allow-set entries and tasks that belong to `generations`.
    fn drop_generation(&mut self, generations: &HashSet<u32>) -> Result<()> {
        if generations.is_empty() {
            return Ok(());
        }
        let exec: Vec<ExecKey> = self.maps.exec_allow.keys().flatten().collect();
        for key in exec.iter().filter(|k| generations.contains(&k.generation)) {
            let _ = self.maps.exec_allow.remove(key);
        }
        let net: Vec<Key<NetKey>> = self.maps.net_allow.keys().flatten().collect();
        for key in net
            .iter()
            .filter(|k| generations.contains(&k.data().generation))
        {
            let _ = self.maps.net_allow.remove(key);
        }
        let tasks: Vec<(u32, Task)> = self.maps.tasks.iter().flatten().collect();
        for (tgid, _) in tasks
            .iter()
            .filter(|(_, t)| generations.contains(&t.generation))
        {
            let _ = self.maps.tasks.remove(tgid);
        }
        super::lsm::drop_generations(&self.layout, generations)
    }

    /// Attaches sys_enter/sys_exit when a registration needs them, detaches them when none
    /// does. The need is read from the map, so a crashed shim cannot leave them attached
    /// past the next reconcile.
    fn update_syscall_hooks(&mut self) -> Result<()> {
        let needed = self
            .entries()?
            .iter()
            .any(|c| c.flags & container_flags::NEEDS_SYSCALLS != 0);
        for (name, tracepoint) in SYSCALL_HOOKS {
            let pin = self.layout.link(name);
            match (needed, pin.exists()) {
                (true, false) => {
                    pins::attach_raw(&self.layout, name, tracepoint)?;
                    log::info!("vigil: attached {tracepoint} (a container needs syscalls)");
                }
                (false, true) => {
                    pins::remove_pin(&pin)?;
                    log::info!("vigil: detached {tracepoint} (no container needs syscalls)");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Maps {
    fn open(layout: &Layout) -> Result<Maps> {
        Ok(Maps {
            containers: open_map(layout, map::CONTAINERS, Map::HashMap)?,
            tasks: open_map(layout, map::TASKS, Map::HashMap)?,
            syscalls_seen: open_map(layout, map::SYSCALLS_SEEN, Map::Array)?,
            exec_allow: open_map(layout, map::EXEC_ALLOW, Map::HashMap)?,
            net_allow: open_map(layout, map::NET_ALLOW, Map::LpmTrie)?,
            lost: open_map(layout, map::LOST, Map::PerCpuArray)?,
            rings: open_map(layout, map::RINGS, Map::ArrayOfMaps)?,
            rings_raw: MapData::from_pin(layout.map(map::RINGS))
                .map_err(|e| BpfError::map("open pinned", map::RINGS, e))?,
            node: open_map(layout, map::NODE, Map::Array)?,
        })
    }

    fn rings_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.rings_raw.fd().as_fd()
    }
}

fn open_map<T>(layout: &Layout, name: &str, wrap: fn(MapData) -> Map) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let data =
        MapData::from_pin(layout.map(name)).map_err(|e| BpfError::map("open pinned", name, e))?;
    T::try_from(wrap(data)).map_err(|e| BpfError::map("open pinned", name, e))
}

fn attach_sock_hook(layout: &Layout, name: &str, cgroup: &File) -> Result<FdLink> {
    let kind = sock_attach_type(name);
    let mut prog = CgroupSockAddr::from_pin(layout.prog(name), kind)
        .map_err(|e| BpfError::program("open pinned", name, e))?;
    // A bpf_link attachment always coexists with other programs on the cgroup; link_create
    // rejects BPF_F_ALLOW_MULTI (EINVAL), so the mode must be Single (flags 0).
    let id = prog
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| BpfError::program("attach to cgroup", name, e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| BpfError::program("take link of", name, e))?;
    FdLink::try_from(link).map_err(|e| BpfError::Link {
        what: "convert",
        path: PathBuf::from(name),
        reason: e.to_string(),
    })
}

fn sock_attach_type(name: &str) -> aya::programs::cgroup_sock_addr::CgroupSockAddrAttachType {
    use aya::programs::cgroup_sock_addr::CgroupSockAddrAttachType as T;
    use vigil_ebpf_common::program as p;
    match name {
        p::CONNECT4 => T::Connect4,
        p::CONNECT6 => T::Connect6,
        p::SENDMSG4 => T::UDPSendMsg4,
        p::SENDMSG6 => T::UDPSendMsg6,
        p::BIND4 => T::Bind4,
        _ => T::Bind6,
    }
}

/// Finds the directory under `mount` whose inode is `id`.
fn find_cgroup(mount: &Path, id: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if fs::metadata(&dir).map(|m| m.ino()).ok() == Some(id) {
            return Some(dir);
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(entry.path());
            }
        }
    }
    None
}

fn check_bpffs(dir: &Path) -> Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        BpfError::NotBpffs {
            path: dir.to_path_buf(),
        }
    })?;
    // SAFETY: statfs(2) writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(BpfError::io("statfs", dir, std::io::Error::last_os_error()));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(BpfError::NotBpffs {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// An exclusive flock(2) on the version folder, released on drop. Holds the descriptor's
/// number only: the `File` lives in `Inner`, which outlives every guard.
struct Flock(std::os::fd::RawFd);

impl Flock {
    fn exclusive(file: &File, path: &Path) -> Result<Self> {
        // SAFETY: flock on a descriptor we own; blocks until other shims release it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(BpfError::io("lock", path, std::io::Error::last_os_error()));
        }
        Ok(Flock(file.as_raw_fd()))
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: unlocks the descriptor locked in `exclusive`.
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}
