//! The pinned layout of one program set, and the first load that creates it.
//!
//! ```text
//! <pin_root>/<version>/maps/<MAP>          every map (VIGIL_CONTAINERS is pinned last)
//! <pin_root>/<version>/progs/<program>     every program
//! <pin_root>/<version>/links/<program>     sched/task tracepoints (always), sys_enter and
//!                                          sys_exit (only while a container needs them)
//! <pin_root>/<version>/links/cg-<id>/<program>   sock_addr hooks of one container's cgroup
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    programs::{links::FdLink, CgroupSockAddr, RawTracePoint},
    Ebpf, EbpfLoader,
};
use vigil_ebpf_common::{map, program, KernelOffsets};

use super::{BpfError, Result};

/// Raw tracepoints attached for the life of the program set: (program, tracepoint).
pub const ALWAYS_ON: [(&str, &str); 4] = [
    (program::EXEC, "sched_process_exec"),
    (program::FORK, "sched_process_fork"),
    (program::FREE, "sched_process_free"),
    (program::RENAME, "task_rename"),
];

/// Raw tracepoints attached only while a registered container needs syscalls.
pub const SYSCALL_HOOKS: [(&str, &str); 2] = [
    (program::SYS_ENTER, "sys_enter"),
    (program::SYS_EXIT, "sys_exit"),
];

/// Per-container cgroup hooks.
pub const SOCK_HOOKS: [&str; 6] = [
    program::CONNECT4,
    program::CONNECT6,
    program::SENDMSG4,
    program::SENDMSG6,
    program::BIND4,
    program::BIND6,
];

/// Every map the object defines.
pub const MAPS: [&str; 11] = [
    map::TASKS,
    map::SYSCALLS_SEEN,
    map::SEEN,
    map::EXEC_ALLOW,
    map::NET_ALLOW,
    map::LOST,
    map::RINGS,
    map::PENDING_OPENS,
    map::SCRATCH,
    map::NODE,
    map::CONTAINERS,
];

/// Paths inside one version folder.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    pub fn prog(&self, name: &str) -> PathBuf {
        self.dir.join("progs").join(name)
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.dir.join("links").join(name)
    }

    pub fn cgroup_links(&self, cgroup_id: u64) -> PathBuf {
        self.dir.join("links").join(format!("cg-{cgroup_id}"))
    }

    /// True once a first load completed (the containers map is pinned last).
    pub fn is_complete(&self) -> bool {
        self.map(map::CONTAINERS).exists()
    }
}

/// Loads the object, pins programs and maps, attaches the always-on tracepoints.
/// Leftovers of an interrupted first load are removed first.
pub fn load_and_pin(layout: &Layout, object: &[u8], offsets: &KernelOffsets) -> Result<()> {
    for sub in ["maps", "progs", "links"] {
        let dir = layout.dir.join(sub);
        remove_dir_contents(&dir)?;
        fs::create_dir_all(&dir).map_err(|e| BpfError::io("create pin folder", &dir, e))?;
    }
    let lsm_offsets = super::lsm::kernel_offsets()?;
    let mut ebpf = EbpfLoader::new()
        .override_global(map::OFFSETS_GLOBAL, offsets, true)
        .override_global(
            vigil_ebpf_common::lsm_map::OFFSETS_GLOBAL,
            &lsm_offsets,
            true,
        )
        .load(object)
        .map_err(|e| BpfError::Load(Box::new(e)))?;
    load_programs(&mut ebpf, layout)?;
    for (name, tracepoint) in ALWAYS_ON {
        attach_raw(layout, name, tracepoint)?;
    }
    // All LSM programs or none; without them the node uses the fallback tier.
    match super::lsm::attach_all(&mut ebpf, Some(layout)) {
        Ok(_) => {
            log::info!("vigil: LSM-BPF tier attached (exec, files, network denied with EPERM)")
        }
        Err(why) => log::warn!("vigil: LSM-BPF tier unavailable, using the fallback tier: {why}"),
    }
    // The LSM maps first: VIGIL_CONTAINERS, last of MAPS, marks a complete set.
    for name in super::lsm::MAPS.iter().chain(MAPS.iter()) {
        let m = ebpf
            .map(name)
            .ok_or_else(|| BpfError::map("find", name, "not in object"))?;
        m.pin(layout.map(name))
            .map_err(|e| BpfError::map("pin", name, e))?;
    }
    Ok(())
}

fn load_programs(ebpf: &mut Ebpf, layout: &Layout) -> Result<()> {
    for (name, _) in ALWAYS_ON.iter().chain(SYSCALL_HOOKS.iter()) {
        let prog: &mut RawTracePoint = program_mut(ebpf, name)?;
        prog.load()
            .map_err(|e| BpfError::program("load", name, e))?;
        prog.pin(layout.prog(name))
            .map_err(|e| pin_error(name, e))?;
    }
    for name in SOCK_HOOKS {
        let prog: &mut CgroupSockAddr = program_mut(ebpf, name)?;
        prog.load()
            .map_err(|e| BpfError::program("load", name, e))?;
        prog.pin(layout.prog(name))
            .map_err(|e| pin_error(name, e))?;
    }
    Ok(())
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| BpfError::MissingProgram(name.into()))?;
    prog.try_into()
        .map_err(|e| BpfError::program("convert", name, e))
}

fn pin_error(name: &str, e: aya::pin::PinError) -> BpfError {
    BpfError::Link {
        what: "pin program",
        path: PathBuf::from(name),
        reason: e.to_string(),
    }
}

/// Attaches pinned raw tracepoint program `name` to `tracepoint` and pins the link at
/// `links/<name>` (replacing a stale pin).
pub fn attach_raw(layout: &Layout, name: &str, tracepoint: &str) -> Result<()> {
    let mut prog = RawTracePoint::from_pin(layout.prog(name))
        .map_err(|e| BpfError::program("open pinned", name, e))?;
    let id = prog
        .attach(tracepoint)
        .map_err(|e| BpfError::program("attach", name, e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| BpfError::program("take link of", name, e))?;
    pin_link(FdLink::from(link), &layout.link(name))
}

/// Pins `link` at `path`, replacing whatever was pinned there.
pub fn pin_link(link: FdLink, path: &Path) -> Result<()> {
    remove_pin(path)?;
    link.pin(path).map(drop).map_err(|e| BpfError::Link {
        what: "pin",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Removes a pin file; a missing one is fine.
pub fn remove_pin(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(BpfError::io("remove pin", path, e))
        }
        _ => Ok(()),
    }
}

/// Removes every pin in `dir` (and in its sub-folders), keeping `dir`.
pub fn remove_dir_contents(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_dir_contents(&path)?;
            fs::remove_dir(&path).map_err(|e| BpfError::io("remove pin folder", &path, e))?;
        } else {
            remove_pin(&path)?;
        }
    }
    Ok(())
}
