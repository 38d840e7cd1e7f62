//! Test cgroups in the guest's cgroup2 tree, and commands that run inside one.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Where init mounts cgroup2.
const ROOT: &str = "/sys/fs/cgroup";

/// A cgroup created for the tests.
#[derive(Clone, Debug)]
pub struct Cgroup {
    pub name: String,
    pub path: PathBuf,
    /// The cgroup id the kernel programs see (the directory's inode).
    pub id: u64,
}

impl Cgroup {
    pub fn create(name: &str) -> Result<Cgroup, String> {
        let path = PathBuf::from(ROOT).join(name);
        fs::create_dir_all(&path).map_err(|e| format!("create cgroup {}: {e}", path.display()))?;
        let id = vigil_shim::bpf::cgroup_id(&path)
            .map_err(|e| format!("cgroup id of {}: {e}", path.display()))?;
        Ok(Cgroup {
            name: name.into(),
            path,
            id,
        })
    }

    /// `program args...`, moved into this cgroup between fork and exec.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let procs = CString::new(format!("{}/cgroup.procs", self.path.display()))
            .expect("cgroup paths have no NUL");
        let mut command = Command::new(program);
        command.args(args);
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (open, write, close) on memory prepared before fork.
        unsafe {
            command.pre_exec(move || join(&procs));
        }
        command
    }

    /// As [`Cgroup::command`], with `root` as the process's root directory (chroot, as a
    /// container's pivot_root): `program` and every path it uses are inside `root`.
    pub fn command_in(&self, root: &str, program: &str, args: &[&str]) -> Command {
        let root = CString::new(root).expect("roots have no NUL");
        let mut command = self.command(program, args);
        // SAFETY: runs in the forked child before exec (after the cgroup join above), calling
        // only chroot(2) and chdir(2) on memory prepared before fork.
        unsafe {
            command.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }
}

/// Writes "0" (the writer itself) into a cgroup.procs file.
fn join(procs: &CString) -> io::Result<()> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: writes one byte from a static buffer to the descriptor opened above.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let err = io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    if written != 1 {
        return Err(err);
    }
    Ok(())
}
