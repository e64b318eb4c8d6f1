//! rtnetlink over one synchronous socket per namespace.
//!
//! A CNI plugin lives for a few milliseconds, so start-up dominates: no async runtime, one
//! `NETLINK_ROUTE` socket per namespace opened once (inside the namespace, on a short-lived
//! thread, see [`Handle::new_in`]) and used from then on from any thread. Messages are built
//! with `netlink-packet-route`; errno is classified once here into [`Kind`].
//!
//! The semantic operations live in [`link`], [`addr`], [`route`], [`rule`], [`neigh`], [`fdb`]
//! and [`tc`]; each documents its `ip ...` (or `bridge ...`, `tc ...`) equivalent.
//!
//! ## What a [`Handle`] guarantees
//!
//! A daemon may hold one handle for months and call it from many threads:
//! - **One exchange at a time.** Sending a request and reading all of its answers (up to the
//!   ack, or the end of a dump) happens under one internal lock, so a thread never reads the
//!   replies of another. The lock is the only per-request cost added: no extra syscall.
//! - **No hang.** The socket has a receive timeout ([`DEFAULT_TIMEOUT`], changed with
//!   [`Handle::set_timeout`]); a request whose answer does not come fails with
//!   [`NetlinkError::Timeout`], of kind [`Kind::Transient`].
//! - **No crossed replies.** Each request gets the next sequence number. While waiting for
//!   request N, an answer numbered *older* than N (modulo 2^32; the tail of a request that timed
//!   out) is skipped; any other number (newer than N, or 0) is [`NetlinkError::Sequence`]
//!   ([`Kind::Internal`]), never silently taken or dropped.
//! - Kernel notifications are not read here: [`events::Subscription`] opens its own socket
//!   bound to the multicast groups.
//!
//! [`ops::Netlink`] is the same vocabulary as a trait; `FakeNetlink` (in `fake`, built under
//! `cfg(test)` or the `fake` feature only) keeps a model of the kernel's state in memory.

pub mod addr;
pub mod events;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod fdb;
pub mod link;
pub mod neigh;
pub mod ops;
pub mod route;
pub mod rule;
pub mod tc;

use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{kind_of_errno, HasKind, Kind};
use crate::netns::{NetNs, NetnsError};

pub use addr::Addr;
pub use fdb::FdbEntry;
pub use link::{BrportFlags, Link, LinkKind, VethPeer, Vxlan};
pub use neigh::Neigh;
pub use ops::Netlink;
pub use route::{Route, RouteScope};
pub use rule::{Rule, RuleAction};

/// A failed netlink operation, naming what it was done to.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink {op} {object}: {}{}", std::io::Error::from_raw_os_error(*errno), ext.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        op: &'static str,
        object: String,
        errno: i32,
        ext: Option<String>,
    },
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink {op} {object}: cannot decode the kernel's answer: {detail}")]
    Decode {
        op: &'static str,
        object: String,
        detail: String,
    },
    #[error("{op} {object}: not found")]
    NotFound { op: &'static str, object: String },
    #[error("{op} {object}: {detail}")]
    Invalid {
        op: &'static str,
        object: String,
        detail: String,
    },
    #[error("netlink {op} {object}: no answer from the kernel within the handle's timeout")]
    Timeout { op: &'static str, object: String },
    #[error(
        "netlink {op} {object}: answer with sequence number {got} while waiting for {expected}"
    )]
    Sequence {
        op: &'static str,
        object: String,
        expected: u32,
        got: u32,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl NetlinkError {
    /// The errno the kernel returned, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl HasKind for NetlinkError {
    fn kind(&self) -> Kind {
        match self {
            NetlinkError::Kernel { errno, .. } => kind_of_errno(*errno),
            NetlinkError::Socket(e) => HasKind::kind(e),
            NetlinkError::Decode { .. } => Kind::Internal,
            NetlinkError::NotFound { .. } => Kind::NotFound,
            NetlinkError::Invalid { .. } => Kind::Invalid,
            NetlinkError::Timeout { .. } => Kind::Transient,
            NetlinkError::Sequence { .. } => Kind::Internal,
            NetlinkError::Netns(e) => e.kind(),
        }
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// A synchronous rtnetlink socket bound to one network namespace.
///
/// Shareable between threads (`&self` everywhere): one request/response exchange at a time
/// holds the handle's lock, so no thread ever reads another's replies. See the module doc for
/// the sequence-number rule and the receive timeout.
#[derive(Debug)]
pub struct Handle {
    sock: Socket,
    /// Held for a whole exchange (send, then every answer up to the ack or the end of a
    /// dump). It guards the receive buffer and the last sequence number sent.
    io: Mutex<Io>,
}

/// What one exchange needs and the next one reuses.
struct Io {
    /// The sequence number of the last request sent.
    seq: u32,
    /// Answers are read into this buffer, allocated once per handle.
    buf: Vec<u8>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// How long a request waits for the kernel's answer before it fails as [`Kind::Transient`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Receive buffer: the kernel fills dump answers up to 32 KiB (one page on most systems), so
/// 64 KiB holds any single read.
const RECV_BUF: usize = 64 * 1024;

impl Handle {
    /// A socket in the calling thread's namespace.
    pub fn new() -> Result<Handle> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        sock.bind_auto().map_err(NetlinkError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        // Extended acks carry the kernel's reason text ("Invalid MTU", ...), worth the bytes.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_rx_buf_sz(1 << 20);
        // Strict checking lets the kernel filter dumps (addresses of one link) instead of
        // sending every object of the namespace: an ADD must not cost more with 1,000 links.
        let _ = sock.set_netlink_get_strict_chk(true);
        set_rcv_timeout(&sock, Some(DEFAULT_TIMEOUT)).map_err(NetlinkError::Socket)?;
        Ok(Handle {
            sock,
            io: Mutex::new(Io {
                seq: 0,
                buf: vec![0u8; RECV_BUF],
            }),
        })
    }

    /// A socket in `ns`: opened on a short-lived thread inside it, usable from anywhere after.
    pub fn new_in(ns: &NetNs) -> Result<Handle> {
        ns.run_in(Handle::new)?
    }

    /// How long each request waits for the kernel's answer (`None`: forever). The default is
    /// [`DEFAULT_TIMEOUT`]. One `setsockopt`, here only: requests pay nothing for it.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        set_rcv_timeout(&self.sock, timeout).map_err(NetlinkError::Socket)
    }

    /// Lock the exchange state. A thread that panicked mid-exchange leaves at worst unread
    /// answers behind, which the sequence rule skips, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Io> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send `msg` under the exchange lock and hand every answer to `each`.
    fn exchange(
        &self,
        op: &'static str,
        object: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
        each: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> Result<()> {
        let mut io = self.lock();
        // 0 is the number of notifications; a request never uses it, even after the wrap.
        io.seq = io.seq.wrapping_add(1).max(1);
        let seq = io.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let len = packet.buffer_len();
        // Requests are small; the receive buffer (idle until the answer comes) holds them.
        if io.buf.len() < len {
            io.buf.resize(len, 0);
        }
        packet.serialize(&mut io.buf[..len]);
        self.sock
            .send(&io.buf[..len], 0)
            .map_err(NetlinkError::Socket)?;
        collect(&self.sock, &mut io.buf, op, object, seq, each)
    }

    /// Send a request that changes state and wait for its acknowledgement.
    pub(crate) fn exec(
        &self,
        op: &'static str,
        object: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<()> {
        self.exchange(
            op,
            object,
            msg,
            NLM_F_REQUEST | NLM_F_ACK | extra_flags,
            &mut |_| {},
        )
    }

    /// Send a get (one object) and return the answers.
    pub(crate) fn get(
        &self,
        op: &'static str,
        object: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        self.exchange(op, object, msg, NLM_F_REQUEST | NLM_F_ACK, &mut |m| {
            out.push(m)
        })?;
        Ok(out)
    }

    /// Send a dump request and return every answer.
    pub(crate) fn dump(
        &self,
        op: &'static str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        self.exchange(
            op,
            &|| "(dump)".into(),
            msg,
            NLM_F_REQUEST | NLM_F_DUMP,
            &mut |m| out.push(m),
        )?;
        Ok(out)
    }
}

fn set_rcv_timeout(sock: &Socket, timeout: Option<Duration>) -> std::io::Result<()> {
    let tv = match timeout {
        // A zero timeval means "forever" to the kernel: round anything below 1 µs up to it.
        Some(t) => {
            let t = t.max(Duration::from_micros(1));
            libc::timeval {
                tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_usec: t.subsec_micros() as libc::suseconds_t,
            }
        }
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: tv is a valid timeval that outlives the call; the size passed is its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where an answer's sequence number stands relative to the request being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqOrder {
    Current,
    /// Sent before the current request (modulo 2^32): the rest of an exchange that timed out.
    Older,
    /// Neither: a number this handle has not sent yet, or a notification (sequence 0).
    Unexpected,
}

fn seq_order(current: u32, got: u32) -> SeqOrder {
    if got == current {
        return SeqOrder::Current;
    }
    // Half the number space behind `current` counts as older; a handle would need 2^31
    // requests in flight for that to be ambiguous.
    let behind = current.wrapping_sub(got);
    if got != 0 && behind < (1 << 31) {
        SeqOrder::Older
    } else {
        SeqOrder::Unexpected
    }
}

/// Read answers to `seq` until the ack, the end of a dump, or an error.
fn collect(
    sock: &Socket,
    buf: &mut [u8],
    op: &'static str,
    object: &dyn Fn() -> String,
    seq: u32,
    each: &mut dyn FnMut(RouteNetlinkMessage),
) -> Result<()> {
    let decode = |detail: String| NetlinkError::Decode {
        op,
        object: object(),
        detail,
    };
    loop {
        let n = loop {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes for the call.
            let r = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r >= 0 {
                break r as usize;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // SO_RCVTIMEO expired: the answer is lost or late; a late one is skipped by
                // the next exchange as older.
                Some(libc::EAGAIN) => {
                    return Err(NetlinkError::Timeout {
                        op,
                        object: object(),
                    })
                }
                _ => return Err(NetlinkError::Socket(e)),
            }
        };
        let mut off = 0;
        while off < n {
            let frame = &buf[off..n];
            let len = NetlinkBuffer::new_checked(frame)
                .map(|b| b.length() as usize)
                .map_err(|e| decode(e.to_string()))?;
            if len == 0 {
                break;
            }
            let aligned = (len + 3) & !3;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&frame[..len])
                .map_err(|e| decode(e.to_string()))?;
            off += aligned.min(n - off);
            match seq_order(seq, msg.header.sequence_number) {
                SeqOrder::Current => {}
                SeqOrder::Older => continue,
                SeqOrder::Unexpected => {
                    return Err(NetlinkError::Sequence {
                        op,
                        object: object(),
                        expected: seq,
                        got: msg.header.sequence_number,
                    })
                }
            }
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(err) => match err.code {
                    None => return Ok(()),
                    Some(code) => {
                        return Err(NetlinkError::Kernel {
                            op,
                            object: object(),
                            errno: -code.get(),
                            ext: ext_ack_msg(msg.header.flags, &err.header),
                        })
                    }
                },
                NetlinkPayload::InnerMessage(m) => each(m),
                _ => {}
            }
        }
    }
}

/// The lost-reply paths against the kernel, in a fresh namespace (they need the private
/// `exchange` to send what the public operations never send).
#[cfg(all(test, feature = "root-tests"))]
mod kernel_tests {
    use super::*;
    use crate::netns::ScratchNs;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use std::time::Instant;

    fn get_lo() -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName("lo".into()));
        RouteNetlinkMessage::GetLink(m)
    }

    fn scratch(tag: &str) -> ScratchNs {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "root-tests must run as root");
        ScratchNs::create(&format!("knt-{}-{tag}", std::process::id())).unwrap()
    }

    #[test]
    fn a_lost_answer_is_a_transient_timeout_and_its_late_tail_is_skipped() {
        let ns = scratch("nlto");
        let h = Handle::new_in(&ns).unwrap();
        h.set_timeout(Some(Duration::from_millis(100))).unwrap();
        // A get without NLM_F_ACK: the kernel sends the link, never the ack we wait for.
        let t = Instant::now();
        let mut got = 0;
        let err = h
            .exchange(
                "get link",
                &|| "link lo".into(),
                get_lo(),
                NLM_F_REQUEST,
                &mut |_| got += 1,
            )
            .unwrap_err();
        assert!(matches!(err, NetlinkError::Timeout { .. }), "{err}");
        assert_eq!(err.kind(), Kind::Transient);
        assert_eq!(got, 1);
        assert!(
            t.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        // A dump whose waiter gave up: its answers sit in the socket, numbered older than the
        // next request, which skips them and gets its own answer.
        {
            let mut io = h.lock();
            io.seq = io.seq.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            header.sequence_number = io.seq;
            let mut packet = NetlinkMessage::new(
                header,
                NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
            );
            packet.finalize();
            let mut buf = vec![0u8; packet.buffer_len()];
            packet.serialize(&mut buf);
            h.sock.send(&buf, 0).unwrap();
        }
        let lo = h.link_by_name("lo").unwrap();
        assert_eq!(lo.name, "lo");
        assert_eq!(h.links().unwrap().len(), 1);
    }
}

/// The kernel's reason text (`NLMSGERR_ATTR_MSG`) of an error answer, if it sent one: after
/// the echoed request (only its header when `NLM_F_CAPPED`) come attributes when
/// `NLM_F_ACK_TLVS` is set. Read only on errors, so successful requests pay nothing.
fn ext_ack_msg(flags: u16, payload: &[u8]) -> Option<String> {
    const NLM_F_CAPPED: u16 = 0x100;
    const NLM_F_ACK_TLVS: u16 = 0x200;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize
    };
    let mut rest = payload.get(echoed.next_multiple_of(4)..)?;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let value = rest.get(4..len)?;
        if kind == NLMSGERR_ATTR_MSG {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned()).filter(|t| !t.is_empty());
        }
        rest = rest
            .get(len.next_multiple_of(4).max(4)..)
            .unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_reason_is_read_from_the_ack_attributes() {
        let nla = |kind: u16, v: &[u8]| {
            let len = 4 + v.len();
            let mut b = [(len as u16).to_ne_bytes(), kind.to_ne_bytes()].concat();
            b.extend_from_slice(v);
            b.resize(len.next_multiple_of(4), 0);
            b
        };
        // An echoed request of 20 bytes (its length first), an offset attribute, the text.
        let mut p = 20u32.to_ne_bytes().to_vec();
        p.resize(20, 0);
        p.extend(nla(2, &7u32.to_ne_bytes()));
        p.extend(nla(1, b"Invalid MTU\0"));
        assert_eq!(ext_ack_msg(0x200, &p).as_deref(), Some("Invalid MTU"));
        assert_eq!(ext_ack_msg(0, &p), None, "no NLM_F_ACK_TLVS, no text");
        // Capped: only the 16-byte header is echoed, whatever its length field says.
        let mut c = 999u32.to_ne_bytes().to_vec();
        c.resize(16, 0);
        c.extend(nla(1, b"Unknown device type\0"));
        assert_eq!(
            ext_ack_msg(0x300, &c).as_deref(),
            Some("Unknown device type")
        );
        // Truncated or lying lengths are no text, never a panic.
        assert_eq!(ext_ack_msg(0x200, &p[..30]), None);
        assert_eq!(ext_ack_msg(0x200, &[0xff, 0xff, 0, 0]), None);
    }

    #[test]
    fn sequence_rule_skips_only_older_answers() {
        assert_eq!(seq_order(7, 7), SeqOrder::Current);
        assert_eq!(seq_order(7, 6), SeqOrder::Older);
        assert_eq!(seq_order(7, 1), SeqOrder::Older);
        assert_eq!(seq_order(7, 8), SeqOrder::Unexpected);
        assert_eq!(seq_order(7, 0), SeqOrder::Unexpected);
        // Across the wrap: u32::MAX was sent just before 1.
        assert_eq!(seq_order(1, u32::MAX), SeqOrder::Older);
        assert_eq!(seq_order(u32::MAX, 1), SeqOrder::Unexpected);
    }

    #[test]
    fn timeouts_and_crossed_replies_have_kinds() {
        let t = NetlinkError::Timeout {
            op: "get link",
            object: "link eth0".into(),
        };
        assert_eq!(t.kind(), Kind::Transient);
        assert!(t.to_string().contains("link eth0"), "{t}");
        let s = NetlinkError::Sequence {
            op: "dump links",
            object: "(dump)".into(),
            expected: 3,
            got: 9,
        };
        assert_eq!(s.kind(), Kind::Internal);
    }
}
