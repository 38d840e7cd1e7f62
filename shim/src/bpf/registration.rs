//! One registered container: its allow sets, its events, its lost-event count.

use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use vigil_ebpf_common::{
    direction, exec_name_hash, path_hash, NetKey, EXEC_ANY_NAME, EXEC_THIS_NAME, NET_FIXED_BITS,
};

use super::{events::EventReader, node::Mode, BpfError, Node, Result};

/// An exec identity an enforced container may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecRule {
    /// The resolved file (as the container sees it, e.g. `/usr/bin/python3.11`) under any
    /// argv[0].
    Path(String),
    /// One applet of a multi-call binary: the resolved file (`/bin/busybox`) when argv[0]'s
    /// basename is `name` (`cat`). Needed because busybox runs every applet from the same
    /// file, often as execve("/proc/self/exe", ["cat", ...]).
    Applet { path: String, name: String },
}

impl ExecRule {
    /// (`VIGIL_EXEC_ALLOW` key hash, value bits) to insert. An applet adds its name key and
    /// marks its file "allowed under some names" (no [`EXEC_ANY_NAME`]).
    pub(crate) fn keys(&self) -> Vec<(u64, u32)> {
        match self {
            ExecRule::Path(path) => vec![(path_hash(path.as_bytes()), EXEC_ANY_NAME)],
            ExecRule::Applet { path, name } => {
                let file = path_hash(path.as_bytes());
                vec![
                    (file, EXEC_THIS_NAME),
                    (exec_name_hash(file, name.as_bytes()), EXEC_THIS_NAME),
                ]
            }
        }
    }
}

/// Direction of a [`NetRule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetDirection {
    /// connect(2) to the peer.
    Connect,
    /// sendmsg(2)/sendto(2) of UDP to the peer.
    Send,
    /// bind(2) to a local address and fixed port.
    Bind,
    /// accept(2)/accept4(2) of a TCP connection on a local address and port (events only:
    /// the kernel never checks accepts, so a rule with this direction allows nothing).
    Accept,
}

/// IP protocol of a [`NetRule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A network tuple an enforced container may use: peer (or local, for bind) address range
/// and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    pub direction: NetDirection,
    pub protocol: Protocol,
    /// Network address; IPv4 rules also match IPv4-mapped IPv6 peers.
    pub addr: IpAddr,
    /// Prefix length in bits of `addr` (0..=32 for IPv4, 0..=128 for IPv6).
    pub prefix_len: u8,
    /// `None`: any port.
    pub port: Option<u16>,
}

impl NetRule {
    /// The `VIGIL_NET_ALLOW` LPM key (prefix length in bits, data) for a registration.
    pub(crate) fn key(&self, generation: u32) -> Result<(u32, NetKey)> {
        let (addr, bits) = match self.addr {
            IpAddr::V4(v4) if self.prefix_len <= 32 => (
                v4.to_ipv6_mapped().octets(),
                96 + u32::from(self.prefix_len),
            ),
            IpAddr::V6(v6) if self.prefix_len <= 128 => (v6.octets(), u32::from(self.prefix_len)),
            _ => {
                return Err(BpfError::BadRule {
                    rule: format!("{self:?}"),
                    reason: "prefix length longer than the address",
                })
            }
        };
        let data = NetKey {
            generation,
            direction: match self.direction {
                NetDirection::Connect => direction::CONNECT,
                NetDirection::Send => direction::SEND,
                NetDirection::Bind => direction::BIND,
                NetDirection::Accept => direction::ACCEPT,
            },
            protocol: match self.protocol {
                Protocol::Tcp => libc::IPPROTO_TCP as u8,
                Protocol::Udp => libc::IPPROTO_UDP as u8,
            },
            port_be: self.port.unwrap_or(0).to_be(),
            addr,
        };
        Ok((NET_FIXED_BITS + bits, data))
    }
}

/// A registered container. Dropping it does not unregister (a shim that exits while its
/// container runs must keep it guarded); call [`Registration::unregister`] at Delete.
pub struct Registration {
    node: Node,
    cgroup_id: u64,
    slot: u32,
    generation: u32,
    mode: Mode,
    ring: Option<MapData>,
}

impl Registration {
    pub(crate) fn new(
        node: Node,
        cgroup_id: u64,
        slot: u32,
        generation: u32,
        mode: Mode,
        ring: MapData,
    ) -> Self {
        Self {
            node,
            cgroup_id,
            slot,
            generation,
            mode,
            ring: Some(ring),
        }
    }

    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    /// The registration number keying this container's allow-set entries.
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    pub(crate) fn node(&self) -> &Node {
        &self.node
    }

    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The reader of this container's events; `None` after the first call.
    pub fn take_events(&mut self) -> Result<Option<EventReader>> {
        let Some(data) = self.ring.take() else {
            return Ok(None);
        };
        let ring = RingBuf::try_from(aya::maps::Map::RingBuf(data))
            .map_err(|e| BpfError::map("open", "vigil_ring", e))?;
        Ok(Some(EventReader::new(ring)))
    }

    /// Adds an exec identity to the allow set (takes effect for the next exec).
    pub fn allow_exec(&self, rule: &ExecRule) -> Result<()> {
        let generation = self.generation;
        self.node
            .with_lock(|inner| inner.allow_exec(generation, rule))
    }

    /// Adds a network tuple to the allow set (takes effect for the next call).
    pub fn allow_net(&self, rule: &NetRule) -> Result<()> {
        let generation = self.generation;
        self.node
            .with_lock(|inner| inner.allow_net(generation, rule))
    }

    /// Whether process `tgid` belongs to this container's workload as the kernel programs
    /// track it: it, or the process it was forked from, executed a program inside the
    /// container. The runtime's own processes (runc init, for the entrypoint or an exec) are
    /// not tracked until they execute the workload.
    pub fn tracks(&self, tgid: u32) -> bool {
        let inner = self.node.locked();
        matches!(inner.maps.tasks.get(&tgid, 0), Ok(t) if t.generation == self.generation)
    }

    /// Events the kernel could not deliver because this container's ring buffer was full.
    pub fn lost_events(&self) -> Result<u64> {
        let inner = self.node.locked();
        let values = inner
            .maps
            .lost
            .get(&self.slot, 0)
            .map_err(|e| BpfError::map("read", vigil_ebpf_common::map::LOST, e))?;
        Ok(values.iter().sum())
    }

    /// Removes the container from the node's maps, detaches its cgroup hooks and, if it was
    /// the last to need them, the syscall tracepoints. Nothing is recorded afterwards.
    pub fn unregister(self) -> Result<()> {
        let id = self.cgroup_id;
        self.node.with_lock(|inner| inner.unregister_locked(id))
    }
}
