//! Network: cgroup sock_addr hooks, attached to each registered container's own cgroup, and
//! accepted TCP connections, read at `sys_exit` of accept/accept4 ([`accepted`]).
//!
//! Context fields are `struct bpf_sock_addr` (include/uapi/linux/bpf.h at v6.18): addresses
//! and port in network byte order; the program returns 1 to let the call proceed and 0 to
//! fail it with EPERM.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use vigil_ebpf_common::{
    direction, mode, verdict, Container, EventKind, NetEvent, NetKey, PendingOpen, NET_FIXED_BITS,
};

use crate::{emit, kernel, maps::VIGIL_NET_ALLOW, path, scope};

/// include/linux/socket.h and include/uapi/linux/in.h.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn vigil_connect4(ctx: SockAddrContext) -> i32 {
    check(&ctx, direction::CONNECT, false)
}

#[cgroup_sock_addr(connect6)]
pub fn vigil_connect6(ctx: SockAddrContext) -> i32 {
    check(&ctx, direction::CONNECT, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn vigil_sendmsg4(ctx: SockAddrContext) -> i32 {
    check(&ctx, direction::SEND, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn vigil_sendmsg6(ctx: SockAddrContext) -> i32 {
    check(&ctx, direction::SEND, true)
}

#[cgroup_sock_addr(bind4)]
pub fn vigil_bind4(ctx: SockAddrContext) -> i32 {
    check(&ctx, direction::BIND, false)
}

#[cgroup_sock_addr(bind6)]
pub fn vigil_bind6(ctx: SockAddrContext) -> i32 {
    check(&ctx, direction::BIND, true)
}

#[inline(always)]
/// `v6` is a constant per program: the verifier rejects `user_ip6` reads in IPv4 hooks.
fn check(ctx: &SockAddrContext, dir: u8, v6: bool) -> i32 {
    let Some(c) = scope::current_container() else {
        return ALLOW;
    };
    let mut ev = NetEvent {
        direction: dir,
        ..NetEvent::default()
    };
    read_tuple(ctx, &mut ev, v6);
    if dir == direction::BIND && ev.port == 0 {
        return ALLOW; // an ephemeral port chosen by the kernel: not an entry
    }
    let decision = if c.mode == mode::ENFORCE {
        judge(&c, &ev)
    } else {
        verdict::OBSERVED
    };
    ev.verdict = decision;
    report(&c, &mut ev);
    if decision == verdict::BLOCKED {
        DENY
    } else {
        ALLOW
    }
}

#[inline(always)]
fn read_tuple(ctx: &SockAddrContext, ev: &mut NetEvent, v6: bool) {
    // SAFETY: the context pointer is the kernel's bpf_sock_addr; each field is read with a
    // 4-byte load, which the verifier rewrites to the real socket fields.
    let sa = unsafe { &*ctx.sock_addr };
    ev.protocol = sa.protocol as u8;
    ev.family = sa.user_family as u8;
    ev.port = u16::from_be(sa.user_port as u16);
    if !v6 {
        ev.addr[10] = 0xff;
        ev.addr[11] = 0xff;
        ev.addr[12..16].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        let words = [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ];
        for (i, w) in words.iter().enumerate() {
            ev.addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
    }
}

/// Enforce: allowed if (direction, protocol, port, address) or (.., any port, address) has
/// an entry whose prefix covers the address.
#[inline(always)]
fn judge(c: &Container, ev: &NetEvent) -> u8 {
    let mut key = NetKey {
        generation: c.generation,
        direction: ev.direction,
        protocol: ev.protocol,
        port_be: ev.port.to_be(),
        addr: ev.addr,
    };
    let full = aya_ebpf::btf_maps::lpm_trie::Key::new(NET_FIXED_BITS + 128, key);
    if VIGIL_NET_ALLOW.get(&full).is_some() {
        return verdict::ALLOWED;
    }
    key.port_be = 0;
    let any_port = aya_ebpf::btf_maps::lpm_trie::Key::new(NET_FIXED_BITS + 128, key);
    if VIGIL_NET_ALLOW.get(&any_port).is_some() {
        return verdict::ALLOWED;
    }
    verdict::BLOCKED
}

/// Sends the event the first time this tuple and verdict occur in the registration; every
/// blocked call is sent (each denial leaves an audit line; losses are counted).
#[inline(always)]
fn report(c: &Container, ev: &mut NetEvent) {
    let session = scope::current_task(c).map(|t| t.session).unwrap_or(0);
    send_folded(c.slot, c.generation, session, ev);
}

#[inline(always)]
fn send_folded(slot: u32, generation: u32, session: u32, ev: &mut NetEvent) {
    let mut hash = vigil_ebpf_common::FNV_OFFSET;
    for b in [
        ev.direction,
        ev.protocol,
        ev.verdict,
        (ev.port >> 8) as u8,
        ev.port as u8,
    ] {
        hash = vigil_ebpf_common::fnv_byte(hash, b);
    }
    for b in ev.addr {
        hash = vigil_ebpf_common::fnv_byte(hash, b);
    }
    let blocked = ev.verdict == verdict::BLOCKED;
    if blocked || emit::first_time(generation, EventKind::Net as u32, hash) {
        ev.header = emit::header(EventKind::Net, slot, session);
        emit::send(slot, ev);
    }
}

/// `sys_exit` of an accept/accept4 that returned `fd` in a container whose syscalls are
/// watched (`pending` from its `sys_enter`): reports the local address and port of the
/// accepted TCP connection, folded like the sock_addr records. Accepted sockets of other
/// families (AF_UNIX) or protocols (MPTCP, SCTP) are not reported.
///
/// The descriptor is resolved like an opened file's (`task->files->fdt->fd[fd]`), then
/// `file->private_data` (a socket file's `struct socket`) -> `sk` -> `__sk_common`.
#[inline(always)]
pub fn accepted(pending: &PendingOpen, fd: u32) {
    let off = kernel::offsets();
    if off.ready == 0 {
        return;
    }
    let file = path::fd_file(&off, kernel::current_task(), fd);
    if file == 0 {
        return;
    }
    // A socket's file points back at it: a descriptor that another thread closed and reused
    // since the accept returned is not read as a socket.
    let sock = kernel::read_ptr(file, off.file_private_data);
    if kernel::read_ptr(sock, off.socket_file) != file {
        return;
    }
    let sk = kernel::read_ptr(sock, off.socket_sk);
    let (Some(family), Some(protocol), Some(port)) = (
        kernel::read::<u16>(sk, off.sk_family),
        kernel::read::<u16>(sk, off.sk_protocol),
        kernel::read::<u16>(sk, off.sk_num),
    ) else {
        return;
    };
    if protocol != IPPROTO_TCP {
        return;
    }
    let mut ev = NetEvent {
        direction: direction::ACCEPT,
        protocol: IPPROTO_TCP as u8,
        family: AF_INET as u8,
        port,
        ..NetEvent::default()
    };
    match family {
        AF_INET => {
            ev.addr[10] = 0xff;
            ev.addr[11] = 0xff;
            let v4 = kernel::read::<[u8; 4]>(sk, off.sk_rcv_saddr).unwrap_or_default();
            ev.addr[12..16].copy_from_slice(&v4);
        }
        AF_INET6 => {
            if off.sk_v6_rcv_saddr != 0 {
                ev.addr = kernel::read::<[u8; 16]>(sk, off.sk_v6_rcv_saddr).unwrap_or_default();
            }
            // A dual-stack listener's IPv4 connection: its address is v4-mapped.
            let mapped =
                ev.addr[..10].iter().all(|b| *b == 0) && ev.addr[10] == 0xff && ev.addr[11] == 0xff;
            if !mapped {
                ev.family = AF_INET6 as u8;
            }
        }
        _ => return,
    }
    send_folded(pending.slot, pending.generation, pending.session, &mut ev);
}
