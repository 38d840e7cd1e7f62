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
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
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
