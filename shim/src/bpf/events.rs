//! Reading and decoding one container's events from its ring buffer.

use std::{io, os::fd::AsRawFd};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use vigil_ebpf_common::{
    access, path_flags, verdict, EventHeader, EventKind, ExecEvent, FileEvent, NetEvent,
    RenameEvent, ResolvedPath, SyscallEvent,
};

/// The process an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Thread-group id (what `ps` calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent's thread-group id; 0 where the hook cannot know it.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `None` for the container's main process tree; `Some(pid)` for an exec session
    /// (`ctr task exec`), identified by the pid of the process that started it.
    pub exec_session: Option<u32>,
    /// `comm` when the event was made.
    pub comm: String,
    /// CLOCK_BOOTTIME nanoseconds.
    pub boot_ns: u64,
}

/// What the kernel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Observed,
    Allowed,
    Blocked,
    Killed,
}

/// Which kernel mechanism produced an exec, file or network event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// The record's usual program: `sched_process_exec` for exec (a kill is by signal), the
    /// syscall tracepoints for files, the cgroup sock_addr hooks for network.
    Tracing,
    /// An LSM-BPF program: refused with EPERM before the operation, or a monitor deviation.
    Lsm,
}

fn mechanism_of(raw: u8) -> Mechanism {
    if raw == vigil_ebpf_common::mechanism::LSM {
        Mechanism::Lsm
    } else {
        Mechanism::Tracing
    }
}

/// Access kinds of a file open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
    /// O_PATH: located, not opened for I/O.
    pub path_only: bool,
}

/// One decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A syscall number this container (main tree or exec sessions) had not made before.
    Syscall { process: Process, nr: u32 },
    /// An exec.
    Exec(ExecInfo),
    /// A file open with a new (path, access, success) combination.
    File(FileInfo),
    /// A network operation with a new tuple or verdict.
    Net(NetInfo),
    /// A process renamed itself (busybox no-exec applets: `id`, `ls`, `mkdir`...).
    Rename { process: Process, new_comm: String },
    /// An LSM hook without a record of its own: ptrace, mount, cross-container kill.
    Lsm(super::LsmInfo),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecInfo {
    pub process: Process,
    pub verdict: Verdict,
    /// The path passed to execve (`/bin/cat`, `cat`, `/proc/self/exe`).
    pub invoked: String,
    /// The file that ran, resolved below the container's root (`/bin/busybox`); `None` if
    /// the kernel could not resolve it.
    pub exe_path: Option<String>,
    /// The arguments; argv[0] first.
    pub argv: Vec<String>,
    /// The parent process's comm.
    pub parent_comm: String,
    /// The path or argv was longer than the kernel keeps.
    pub truncated: bool,
    pub mechanism: Mechanism,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub process: Process,
    /// The opened file resolved below the container's root; `None` when the open failed.
    pub path: Option<String>,
    /// The path as the program passed it (possibly relative).
    pub raw_path: String,
    pub access: Access,
    /// File descriptor, or -errno.
    pub result: i32,
    /// The syscall (open, openat, openat2, creat); 0 from the LSM tier's `file_open`.
    pub syscall_nr: u32,
    pub mechanism: Mechanism,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInfo {
    pub process: Process,
    pub verdict: Verdict,
    pub direction: super::NetDirection,
    pub protocol: super::Protocol,
    /// The peer for connect/send, the local address for bind and accept; IPv4 unmapped.
    pub addr: std::net::IpAddr,
    /// The peer's port for connect/send, the local port for bind and accept.
    pub port: u16,
    pub mechanism: Mechanism,
}

/// Reads one container's ring buffer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    pub(crate) fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// Decodes every event available now into `out`; returns how many records were read
    /// (records that fail to decode are counted but skipped).
    pub fn drain(&mut self, out: &mut Vec<Event>) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            n += 1;
            if let Some(event) = decode(&item) {
                out.push(event);
            }
        }
        n
    }

    /// An async reader for tokio: waits until the kernel signals new records.
    pub fn into_async(self) -> io::Result<AsyncEventReader> {
        // SAFETY: the descriptor is the ring buffer map's, owned by `self.ring`, which the
        // AsyncFd owns for its whole life; as_raw_fd always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(self) }.map_err(io::Error::from)?;
        Ok(AsyncEventReader { fd })
    }
}

impl AsRawFd for EventReader {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

/// [`EventReader`] driven by tokio's reactor.
pub struct AsyncEventReader {
    fd: AsyncFd<EventReader>,
}

impl AsyncEventReader {
    /// Waits for events, then decodes all that are available into `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let n = guard.get_inner_mut().drain(out);
            guard.clear_ready();
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Decodes every event available now into `out` without waiting (the last read before
    /// a container's registration goes).
    pub fn drain_now(&mut self, out: &mut Vec<Event>) -> usize {
        self.fd.get_mut().drain(out)
    }
}

/// Decodes one record; `None` for a short or unknown record.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    let header: EventHeader = read(bytes)?;
    Some(match EventKind::from_u32(header.kind)? {
        EventKind::Syscall => {
            let ev: SyscallEvent = read(bytes)?;
            Event::Syscall {
                process: process(&ev.header),
                nr: ev.nr,
            }
        }
        EventKind::Exec => {
            let ev: Box<ExecEvent> = read_boxed(bytes)?;
            Event::Exec(exec_info(&ev))
        }
        EventKind::File => {
            let ev: Box<FileEvent> = read_boxed(bytes)?;
            Event::File(file_info(&ev))
        }
        EventKind::Net => Event::Net(net_info(&read::<NetEvent>(bytes)?)?),
        EventKind::Rename => {
            let ev: RenameEvent = read(bytes)?;
            Event::Rename {
                process: process(&ev.header),
                new_comm: c_str(&ev.new_comm),
            }
        }
        EventKind::Lsm => {
            let ev: Box<vigil_ebpf_common::LsmEvent> = read_boxed(bytes)?;
            Event::Lsm(super::lsm::lsm_info(&ev, process(&ev.header))?)
        }
    })
}

fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked; T is a #[repr(C)] record of integers and byte arrays
    // (every bit pattern valid), read unaligned from the ring buffer's bytes.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Reads a record the kernel may have sent without its unused tail (see `send_prefix`):
/// the missing bytes read as zero. At least the header must be there.
fn read_boxed<T: Copy>(bytes: &[u8]) -> Option<Box<T>> {
    if bytes.len() < size_of::<EventHeader>() {
        return None;
    }
    // SAFETY: T is a #[repr(C)] record of integers and byte arrays, for which all-zero bytes
    // are a valid value.
    let mut record: Box<T> = Box::new(unsafe { std::mem::zeroed() });
    let len = bytes.len().min(size_of::<T>());
    // SAFETY: copies `len` bytes, within both the source slice and the boxed T.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut *record).cast::<u8>(), len) };
    Some(record)
}

fn process(h: &EventHeader) -> Process {
    Process {
        pid: h.tgid,
        tid: h.pid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        exec_session: (h.session != 0).then_some(h.session),
        comm: c_str(&h.comm),
        boot_ns: h.boot_ns,
    }
}

fn verdict_of(v: u8) -> Verdict {
    match v {
        verdict::ALLOWED => Verdict::Allowed,
        verdict::BLOCKED => Verdict::Blocked,
        verdict::KILLED => Verdict::Killed,
        _ => Verdict::Observed,
    }
}

fn exec_info(ev: &ExecEvent) -> ExecInfo {
    let argv_len = (ev.argv_len as usize).min(ev.argv.len());
    let argv = ev.argv[..argv_len]
        .split(|b| *b == 0)
        .map(escaped)
        .collect::<Vec<_>>();
    let argv = trim_trailing_empty(argv);
    ExecInfo {
        process: process(&ev.header),
        verdict: verdict_of(ev.verdict),
        invoked: c_str(&ev.filename),
        exe_path: resolved(&ev.path, ev.flags),
        argv,
        parent_comm: c_str(&ev.parent_comm),
        truncated: ev.flags & (path_flags::TRUNCATED | path_flags::ARGV_CUT) != 0,
        mechanism: mechanism_of(ev.mechanism),
    }
}

fn trim_trailing_empty(mut argv: Vec<String>) -> Vec<String> {
    while argv.last().is_some_and(|a| a.is_empty()) {
        argv.pop();
    }
    argv
}

fn file_info(ev: &FileEvent) -> FileInfo {
    FileInfo {
        process: process(&ev.header),
        path: resolved(&ev.path, ev.flags),
        raw_path: c_str(&ev.raw_path),
        access: Access {
            read: ev.access & access::READ != 0,
            write: ev.access & access::WRITE != 0,
            create: ev.access & access::CREATE != 0,
            truncate: ev.access & access::TRUNCATE != 0,
            path_only: ev.access & access::PATH_ONLY != 0,
        },
        result: ev.result,
        syscall_nr: ev.nr,
        mechanism: mechanism_of(ev.mechanism),
    }
}

fn net_info(ev: &NetEvent) -> Option<NetInfo> {
    use super::{NetDirection, Protocol};
    use vigil_ebpf_common::direction;
    let v6 = std::net::Ipv6Addr::from(ev.addr);
    let addr = match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    };
    Some(NetInfo {
        process: process(&ev.header),
        verdict: verdict_of(ev.verdict),
        direction: match ev.direction {
            direction::CONNECT => NetDirection::Connect,
            direction::SEND => NetDirection::Send,
            direction::BIND => NetDirection::Bind,
            direction::ACCEPT => NetDirection::Accept,
            _ => return None,
        },
        protocol: match i32::from(ev.protocol) {
            libc::IPPROTO_UDP => Protocol::Udp,
            _ => Protocol::Tcp,
        },
        addr,
        port: ev.port,
        mechanism: mechanism_of(ev.mechanism),
    })
}

/// Joins resolved components (leaf first) into "/a/b/c".
fn resolved(path: &ResolvedPath, flags: u8) -> Option<String> {
    if flags & path_flags::UNRESOLVED != 0 {
        return None;
    }
    let depth = (path.depth as usize).min(path.names.len());
    let mut out = String::new();
    for name in path.names[..depth].iter().rev().filter(|n| n[0] != 0) {
        out.push('/');
        out.push_str(&c_str(name));
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    escaped(&bytes[..end])
}

/// Kernel bytes as text without loss: valid UTF-8 kept, any other byte as the four
/// characters `\xNN` (as the audit log writes them), so two different byte strings never
/// become the same path or argument.
pub fn escaped(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_components_leaf_first() {
        let mut p = ResolvedPath {
            depth: 2,
            ..ResolvedPath::default()
        };
        p.names[0][..7].copy_from_slice(b"busybox");
        p.names[1][..3].copy_from_slice(b"bin");
        assert_eq!(resolved(&p, 0).as_deref(), Some("/bin/busybox"));
        assert_eq!(resolved(&p, path_flags::UNRESOLVED), None);
    }

    #[test]
    fn short_records_are_rejected() {
        assert_eq!(decode(&[1, 0, 0]), None);
    }
}
