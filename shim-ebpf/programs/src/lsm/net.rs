//! `socket_connect` and `socket_bind(struct socket *sock, struct sockaddr *address,
//! int addrlen)`: refuse an IPv4/IPv6 peer or local port the container's network allow set
//! does not name.
//!
//! These run in __sys_connect_file / __sys_bind (net/socket.c at v6.1) before the protocol's
//! own connect or bind, so before the cgroup sock_addr hooks, which stay attached and report
//! in monitor. The judgement is theirs (crate::net): same `VIGIL_NET_ALLOW` keys, the
//! address v4-mapped, a fixed port first and then any port. Unlike a cgroup hook, which
//! judges by the cgroup that created the socket, these judge the calling task, so a socket
//! handed in from outside the container is judged too. Other families (AF_UNIX, netlink)
//! pass.

use aya_ebpf::{
    btf_maps::lpm_trie::Key, helpers::bpf_probe_read_kernel_buf, macros::lsm, programs::LsmContext,
};
use vigil_ebpf_common::{
    direction, mechanism, mode, verdict, Container, EventKind, NetEvent, NetKey, NET_FIXED_BITS,
};

use super::{offsets, refuse_if_enforced};
use crate::{emit, maps::VIGIL_NET_ALLOW, scope};

/// include/linux/socket.h and include/linux/net.h at v6.1.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;
const SOCK_DGRAM: u16 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[lsm(hook = "socket_connect")]
pub fn vigil_lsm_socket_connect(ctx: LsmContext) -> i32 {
    check(&ctx, direction::CONNECT)
}

#[lsm(hook = "socket_bind")]
pub fn vigil_lsm_socket_bind(ctx: LsmContext) -> i32 {
    check(&ctx, direction::BIND)
}

#[inline(always)]
fn check(ctx: &LsmContext, dir: u8) -> i32 {
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let Some(c) = scope::current_container() else {
        return 0;
    };
    if c.mode != mode::ENFORCE || offsets::ready() == 0 {
        return 0;
    }
    let mut ev = NetEvent {
        direction: dir,
        mechanism: mechanism::LSM,
        ..NetEvent::default()
    };
    if !read_tuple(ctx, &mut ev) || (dir == direction::BIND && ev.port == 0) {
        return 0;
    }
    if allowed(&c, &ev) {
        return 0;
    }
    ev.verdict = verdict::BLOCKED;
    report(&c, &mut ev);
    refuse_if_enforced(&c)
}

/// Fills family, protocol, address and port; false for a family this hook does not judge.
#[inline(always)]
fn read_tuple(ctx: &LsmContext, ev: &mut NetEvent) -> bool {
    let sock: u64 = ctx.arg(0);
    let address: u64 = ctx.arg(1);
    let mut sa = [0u8; 24];
    // SAFETY: the kernel's copy of the caller's sockaddr (move_addr_to_kernel), read with the
    // fault-tolerant helper; sockaddr_in6 is 28 bytes, its address ends at byte 24.
    if unsafe { bpf_probe_read_kernel_buf(address as *const u8, &mut sa) }.is_err() {
        return false;
    }
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    ev.port = u16::from_be_bytes([sa[2], sa[3]]);
    match family {
        AF_INET => {
            ev.addr[10] = 0xff;
            ev.addr[11] = 0xff;
            ev.addr[12..16].copy_from_slice(&sa[4..8]);
        }
        AF_INET6 => ev.addr.copy_from_slice(&sa[8..24]),
        _ => return false,
    }
    ev.family = family as u8;
    let sock_type = crate::kernel::read::<u16>(sock, offsets::socket_type()).unwrap_or(0);
    ev.protocol = match sock_type {
        SOCK_STREAM => IPPROTO_TCP,
        SOCK_DGRAM => IPPROTO_UDP,
        _ => 0,
    };
    true
}

/// The tuple with its port, or with any port, has an entry covering the address.
#[inline(always)]
fn allowed(c: &Container, ev: &NetEvent) -> bool {
    let mut key = NetKey {
        generation: c.generation,
        direction: ev.direction,
        protocol: ev.protocol,
        port_be: ev.port.to_be(),
        addr: ev.addr,
    };
    if VIGIL_NET_ALLOW
        .get(&Key::new(NET_FIXED_BITS + 128, key))
        .is_some()
    {
        return true;
    }
    key.port_be = 0;
    VIGIL_NET_ALLOW
        .get(&Key::new(NET_FIXED_BITS + 128, key))
        .is_some()
}

#[inline(always)]
fn report(c: &Container, ev: &mut NetEvent) {
    // Enforce only: every refused call is reported, as the cgroup hooks do.
    let session = scope::current_task(c).map(|t| t.session).unwrap_or(0);
    ev.header = emit::header(EventKind::Net, c.slot, session);
    emit::send(c.slot, ev);
}
