//! Kernel notifications: `ip monitor link address neigh` and `bridge monitor fdb`.
//!
//! A [`Subscription`] is its own `NETLINK_ROUTE` socket, joined to multicast groups, separate
//! from any [`Handle`](super::Handle) (whose socket only ever carries answers to its own
//! requests). FDB entries arrive on the neighbour group as RTM_NEWNEIGH/RTM_DELNEIGH of family
//! AF_BRIDGE and are told apart as [`Event::FdbNew`]/[`Event::FdbDel`].
//!
//! Events can be lost: when the socket's buffer overflows the kernel drops notifications and
//! says so once; [`Event::Lost`] passes that on. From then until the socket's queue has been
//! read empty the kernel drops every new notification without saying so again, so the reader
//! drains what is queued (`recv` with a short timeout until `None`), then re-reads the state it
//! watches (observe → diff → apply), as it must at start.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::addr::{addr_from_msg, Addr};
use super::fdb::FdbEntry;
use super::link::{link_from_msg, Link};
use super::neigh::{neigh_msg, Neigh, NeighMsg};
use super::{NetlinkError, Result};
use crate::netns::NetNs;

/// `RTNLGRP_*` (linux/rtnetlink.h)
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;

/// Which notifications to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Groups {
    /// Links created, changed, deleted (`ip monitor link`).
    pub link: bool,
    /// IPv4 and IPv6 addresses (`ip monitor address`).
    pub addr: bool,
    /// Neighbour and FDB entries (`ip monitor neigh`, `bridge monitor fdb`).
    pub neigh: bool,
}

impl Groups {
    pub const ALL: Groups = Groups {
        link: true,
        addr: true,
        neigh: true,
    };

    fn numbers(self) -> Vec<u32> {
        let mut v = Vec::new();
        if self.link {
            v.push(RTNLGRP_LINK);
        }
        if self.addr {
            v.extend([RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR]);
        }
        if self.neigh {
            v.push(RTNLGRP_NEIGH);
        }
        v
    }
}

/// One decoded notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// RTM_NEWLINK: a link appeared or changed (state, master, name, ...).
    LinkNew(Link),
    /// RTM_DELLINK: the link is gone.
    LinkDel(Link),
    AddrNew(Addr),
    AddrDel(Addr),
    /// An IPv4/IPv6 neighbour entry appeared or changed state.
    NeighNew(Neigh),
    NeighDel(Neigh),
    /// An FDB entry (family AF_BRIDGE) appeared or changed.
    FdbNew(FdbEntry),
    FdbDel(FdbEntry),
    /// The kernel dropped notifications (socket buffer overrun), and drops more until the
    /// queue is read empty: drain it, then re-read the state (see the module doc).
    Lost,
}

/// A socket subscribed to kernel notifications of one namespace.
pub struct Subscription {
    sock: Socket,
    buf: Vec<u8>,
    /// Decoded from the last datagram and not yet handed out.
    pending: VecDeque<Result<Event>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sock", &self.sock)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Subscribe in the calling thread's namespace.
    pub fn new(groups: Groups) -> Result<Subscription> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        sock.bind_auto().map_err(NetlinkError::Socket)?;
        // Bursts (a bridge with hundreds of ports going down) must not overflow at once.
        let _ = sock.set_rx_buf_sz(4 << 20);
        for g in groups.numbers() {
            sock.add_membership(g).map_err(NetlinkError::Socket)?;
        }
        Ok(Subscription {
            sock,
            buf: vec![0u8; 64 * 1024],
            pending: VecDeque::new(),
        })
    }

    /// Subscribe in `ns`: the socket is opened inside it on a short-lived thread and hears
    /// that namespace's notifications from then on, read from any thread.
    pub fn new_in(ns: &NetNs, groups: Groups) -> Result<Subscription> {
        ns.run_in(move || Subscription::new(groups))?
    }

    /// Size the socket's receive buffer (`SO_RCVBUF`; the kernel doubles it and has a floor):
    /// the burst of notifications it holds before the kernel drops some ([`Event::Lost`]).
    /// The default is 4 MiB.
    pub fn set_rx_buf(&self, bytes: usize) -> Result<()> {
        self.sock.set_rx_buf_sz(bytes).map_err(NetlinkError::Socket)
    }

    /// The next event, waiting at most `timeout` (`None`: without limit); `Ok(None)` when
    /// none came in time. An undecodable notification is an error for itself only: the next
    /// call goes on with the following ones.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.pending.pop_front() {
                return e.map(Some);
            }
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.wait_readable(wait)? {
                return Ok(None);
            }
            self.read_datagram()?;
        }
    }

    /// Every event as it comes, blocking between them; ends only with the socket.
    pub fn iter(&mut self) -> impl Iterator<Item = Result<Event>> + '_ {
        std::iter::from_fn(move || self.recv(None).transpose())
    }

    /// Wait until a datagram is there; false when `wait` ran out first.
    fn wait_readable(&self, wait: Option<Duration>) -> Result<bool> {
        let ms = match wait {
            None => -1,
            // Round up so a short wait is not a busy loop of zero-timeout polls.
            Some(w) => w.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
        };
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(true); // the caller loops back here via read_datagram's EAGAIN
            }
            return Err(NetlinkError::Socket(e));
        }
        Ok(r > 0)
    }

    /// Read one datagram (if any is there) and queue what it says.
    fn read_datagram(&mut self) -> Result<()> {
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: buf is writable for buf.len() bytes and from/from_len describe a
        // sockaddr_nl, all valid for the call.
        let r = unsafe {
            libc::recvfrom(
                self.sock.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut from_len,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(()),
                Some(libc::ENOBUFS) => {
                    self.pending.push_back(Ok(Event::Lost));
                    Ok(())
                }
                _ => Err(NetlinkError::Socket(e)),
            };
        }
        // Only the kernel (port 0) speaks for the kernel's state.
        if from.nl_pid != 0 {
            return Ok(());
        }
        let n = r as usize;
        let mut off = 0;
        while off < n {
            let frame = &self.buf[off..n];
            let len = match NetlinkBuffer::new_checked(frame) {
                Ok(b) => b.length() as usize,
                Err(e) => {
                    self.pending.push_back(Err(decode_error(e.to_string())));
                    break;
                }
            };
            if len == 0 {
                break;
            }
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&frame[..len]) {
                Ok(m) => {
                    if let NetlinkPayload::InnerMessage(m) = m.payload {
                        self.pending.extend(event_of(m).map(Ok));
                    }
                }
                Err(e) => self.pending.push_back(Err(decode_error(e.to_string()))),
            }
            off += ((len + 3) & !3).min(n - off);
        }
        Ok(())
    }
}

fn decode_error(detail: String) -> NetlinkError {
    NetlinkError::Decode {
        op: "read notification",
        object: "(event)".into(),
        detail,
    }
}

/// The event a notification stands for, if it is one we report.
pub fn event_of(m: RouteNetlinkMessage) -> Option<Event> {
    use RouteNetlinkMessage as R;
    Some(match m {
        // Link messages of family AF_BRIDGE are the bridge's view of a port (a DELLINK of
        // that family means "left the bridge", not "deleted"): the link's own message of
        // family AF_UNSPEC follows every such change, so these are left out.
        R::NewLink(l) if l.header.interface_family == AddressFamily::Bridge => return None,
        R::DelLink(l) if l.header.interface_family == AddressFamily::Bridge => return None,
        R::NewLink(l) => Event::LinkNew(link_from_msg(l)),
        R::DelLink(l) => Event::LinkDel(link_from_msg(l)),
        R::NewAddress(a) => Event::AddrNew(addr_from_msg(a)?),
        R::DelAddress(a) => Event::AddrDel(addr_from_msg(a)?),
        R::NewNeighbour(n) => match neigh_msg(&n)? {
            NeighMsg::Neigh(n) => Event::NeighNew(n),
            NeighMsg::Fdb(f) => Event::FdbNew(f),
        },
        R::DelNeighbour(n) => match neigh_msg(&n)? {
            NeighMsg::Neigh(n) => Event::NeighDel(n),
            NeighMsg::Fdb(f) => Event::FdbDel(f),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage};

    #[test]
    fn groups_name_the_kernel_group_numbers() {
        assert_eq!(Groups::ALL.numbers(), vec![1, 5, 9, 3]);
        let only_neigh = Groups {
            link: false,
            addr: false,
            neigh: true,
        };
        assert_eq!(only_neigh.numbers(), vec![3]);
    }

    #[test]
    fn notifications_decode_by_family() {
        let mut l = LinkMessage::default();
        l.header.index = 4;
        l.attributes.push(LinkAttribute::IfName("vx0".into()));
        let Some(Event::LinkDel(link)) = event_of(RouteNetlinkMessage::DelLink(l.clone())) else {
            panic!("link deletion expected");
        };
        assert_eq!((link.index, link.name.as_str()), (4, "vx0"));
        l.header.interface_family = AddressFamily::Bridge;
        assert_eq!(event_of(RouteNetlinkMessage::DelLink(l)), None);

        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Bridge;
        n.header.ifindex = 4;
        n.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]));
        let Some(Event::FdbNew(f)) = event_of(RouteNetlinkMessage::NewNeighbour(n)) else {
            panic!("fdb entry expected");
        };
        assert_eq!((f.index, f.mac), (4, [2, 0, 0, 0, 0, 1]));
    }
}
