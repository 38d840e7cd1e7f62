//! `/init probe ...` and `/init bench ...`: the guest program run again as an ordinary
//! process inside a test cgroup, doing one operation and printing its outcome.
//!
//! A probe prints `ok` or `errno=N` and exits with 0 or N, so the caller sees the exact
//! errno of the syscall the LSM hook answered.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Instant;

/// Runs a helper; `args` is the full argv.
pub fn main(args: &[String]) -> ExitCode {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.get(1..).unwrap_or_default() {
        ["probe", action, rest @ ..] => report(probe(action, rest)),
        ["bench", op, iterations] => match (iterations.parse(), bench(op)) {
            (Ok(n), Some(run)) => timed(run, n),
            _ => usage(&args),
        },
        _ => usage(&args),
    }
}

fn usage(args: &[&str]) -> ExitCode {
    eprintln!("vigil-guest-init helper: unknown arguments {args:?}");
    ExitCode::from(2)
}

fn report(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(255);
            println!("errno={errno}");
            ExitCode::from(errno.clamp(1, 255) as u8)
        }
    }
}

fn probe(action: &str, rest: &[&str]) -> io::Result<()> {
    let arg = |i: usize| rest.get(i).copied().unwrap_or("");
    match action {
        "read" => std::fs::File::open(arg(0)).map(drop),
        "write" => std::fs::OpenOptions::new()
            .write(true)
            .open(arg(0))
            .map(drop),
        "connect" => TcpStream::connect(port_v4(arg(0))?).map(drop),
        "bind" => TcpListener::bind(port_v4(arg(0))?).map(drop),
        "ptrace" => ptrace_attach(pid(arg(0))?),
        "kill" => errno(unsafe_kill(pid(arg(0))?)),
        "mount" => mount_tmpfs(arg(0)),
        "create" => create_and_write(arg(0)),
        "drop" => drop_binary(arg(0), arg(1)),
        "syscalls" => denied_syscalls(pid(arg(0))?),
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

/// open(O_CREAT|O_WRONLY|O_TRUNC) and write: a new file with content.
fn create_and_write(path: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(b"evil\n")
}

/// Copies `source` to `target` and makes it executable: a dropped binary.
fn drop_binary(source: &str, target: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(source, target)?;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o755))
}

/// Installs a seccomp filter that denies ptrace, mount, unshare and keyctl with EPERM (what a
/// profile that lacks them compiles to; runc installs the real one), then tries each.
/// `Err(EPERM)` when every one was refused; otherwise the first other outcome.
fn denied_syscalls(outsider: i32) -> io::Result<()> {
    deny_with_seccomp(&[
        libc::SYS_ptrace,
        libc::SYS_mount,
        libc::SYS_unshare,
        libc::SYS_keyctl,
    ])?;
    let null = std::ptr::null_mut::<libc::c_void>();
    let (tmpfs, target) = (c"tmpfs", c"/tmp");
    let calls: [&dyn Fn() -> i64; 4] = [
        // SAFETY: integers and null pointers only.
        &|| unsafe { libc::ptrace(libc::PTRACE_ATTACH, outsider, null, null) },
        // SAFETY: NUL-terminated strings that outlive the call; no data argument.
        &|| {
            i64::from(unsafe {
                libc::mount(
                    tmpfs.as_ptr(),
                    target.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            })
        },
        // SAFETY: an integer flag.
        &|| i64::from(unsafe { libc::unshare(libc::CLONE_NEWNS) }),
        // SAFETY: KEYCTL_JOIN_SESSION_KEYRING (1) with a null name: integers only.
        &|| unsafe { libc::syscall(libc::SYS_keyctl, 1i64, 0i64) },
    ];
    for call in calls {
        if call() >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EPERM))
}

/// A classic BPF seccomp filter: on x86-64, `nrs` return EPERM, everything else is allowed.
fn deny_with_seccomp(nrs: &[i64]) -> io::Result<()> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut filter = vec![
        op(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        op(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        op(RET_K, 0, 0, RET_ALLOW),
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    ];
    for nr in nrs {
        filter.push(op(JEQ_K, 0, 1, *nr as u32));
        filter.push(op(RET_K, 0, 0, RET_EPERM));
    }
    filter.push(op(RET_K, 0, 0, RET_ALLOW));
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments, then with a pointer to `program`, which (and its
    // filter) outlives the call; the kernel copies the filter.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn port_v4(port: &str) -> io::Result<SocketAddrV4> {
    let port = port
        .parse()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn pid(text: &str) -> io::Result<i32> {
    text.parse()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn errno(rc: i64) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// kill(pid, 0): the permission check without a signal.
fn unsafe_kill(pid: i32) -> i64 {
    // SAFETY: kill(2) with signal 0 delivers nothing; it only checks permission.
    i64::from(unsafe { libc::kill(pid, 0) })
}

/// PTRACE_ATTACH then PTRACE_DETACH, which the tracee survives.
fn ptrace_attach(pid: i32) -> io::Result<()> {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: ptrace(2) attach takes no pointers beyond the nulls passed.
    errno(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, null, null) })?;
    let mut status = 0;
    // SAFETY: waits for the stop the attach caused; status is a local.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    // SAFETY: detaches the tracee attached above.
    errno(unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, null, null) })
}

fn mount_tmpfs(target: &str) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (source, fstype) = (CString::new("tmpfs")?, CString::new("tmpfs")?);
    let target = CString::new(target)?;
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    errno(i64::from(rc))?;
    // SAFETY: unmounts what was just mounted.
    unsafe { libc::umount(target.as_ptr()) };
    Ok(())
}

/// One benchmark operation; `Err` stops the loop.
type Op = fn() -> io::Result<()>;

fn bench(op: &str) -> Option<Op> {
    Some(match op {
        "open" => open_close,
        "exec" => fork_exec_true,
        "connect" => udp_connect,
        "getppid" => getppid,
        _ => return None,
    })
}

/// Runs `op` `n` times and prints the mean nanoseconds per call.
fn timed(op: Op, n: u64) -> ExitCode {
    let start = Instant::now();
    for _ in 0..n {
        if let Err(e) = op() {
            println!("error={e}");
            return ExitCode::FAILURE;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("ns_per_op={ns:.1}");
    ExitCode::SUCCESS
}

fn open_close() -> io::Result<()> {
    std::fs::File::open(vigil_guest::layout::ALLOWED_FILE).map(drop)
}

fn fork_exec_true() -> io::Result<()> {
    let status = std::process::Command::new("/bin/true").status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("/bin/true: {status}")))
    }
}

/// socket(AF_INET, SOCK_DGRAM) + connect + close: socket_connect and the cgroup connect4
/// hook, no handshake and no bind.
fn udp_connect() -> io::Result<()> {
    let peer = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: crate::world::BENCH_UDP_PORT.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: socket(2) returns a descriptor this function owns and closes.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    errno(i64::from(fd))?;
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `peer` is a valid sockaddr_in of `len` bytes, alive for the call.
    let rc = unsafe { libc::connect(fd, (&peer as *const libc::sockaddr_in).cast(), len) };
    let result = errno(i64::from(rc));
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    result
}

/// A syscall no vigil program hooks: the control for noise between settings, and the
/// yardstick between the emulated guest and the host.
fn getppid() -> io::Result<()> {
    // SAFETY: getppid(2) takes no arguments and cannot fail.
    unsafe { libc::getppid() };
    Ok(())
}
