//! rtnetlink over one synchronous socket per namespace.
//!
//! A CNI plugin lives for a few milliseconds, so start-up dominates: no async runtime, one
//! `NETLINK_ROUTE` socket per namespace opened once (inside the namespace, on a short-lived
//! thread, see [`Handle::new_in`]) and used from then on from any thread. Messages are built
//! with `netlink-packet-route`; errno is classified once here into [`Kind`].
//!
//! The semantic operations live in [`link`], [`addr`], [`route`], [`rule`] and [`tc`]; each documents its
//! `ip ...` (or `tc ...`) equivalent.

pub mod addr;
pub mod link;
pub mod route;
pub mod rule;
pub mod tc;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{kind_of_errno, HasKind, Kind};
use crate::netns::{NetNs, NetnsError};

pub use addr::Addr;
pub use link::{Link, LinkKind, VethPeer};
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
            NetlinkError::Netns(e) => e.kind(),
        }
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// A synchronous rtnetlink socket bound to one network namespace.
#[derive(Debug)]
pub struct Handle {
    sock: Socket,
    seq: AtomicU32,
}

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
        Ok(Handle {
            sock,
            seq: AtomicU32::new(1),
        })
    }

    /// A socket in `ns`: opened on a short-lived thread inside it, usable from anywhere after.
    pub fn new_in(ns: &NetNs) -> Result<Handle> {
        ns.run_in(Handle::new)?
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    fn send(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.next_seq();
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(NetlinkError::Socket)?;
        Ok(packet.header.sequence_number)
    }

    /// Send a request that changes state and wait for its acknowledgement.
    pub(crate) fn exec(
        &self,
        op: &'static str,
        object: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<()> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags)?;
        self.collect(op, object, seq, |_| {}).map(|_| ())
    }

    /// Send a get (one object) and return the answers.
    pub(crate) fn get(
        &self,
        op: &'static str,
        object: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK)?;
        let mut out = Vec::new();
        self.collect(op, object, seq, |m| out.push(m))?;
        Ok(out)
    }

    /// Send a dump request and return every answer.
    pub(crate) fn dump(
        &self,
        op: &'static str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        self.collect(op, &|| "(dump)".into(), seq, |m| out.push(m))?;
        Ok(out)
    }

    /// Read answers to `seq` until the ack, the end of a dump, or an error.
    fn collect(
        &self,
        op: &'static str,
        object: &dyn Fn() -> String,
        seq: u32,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = loop {
                // SAFETY: buf is a valid writable buffer of buf.len() bytes for the call.
                let r = unsafe {
                    libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if r >= 0 {
                    break r as usize;
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(NetlinkError::Socket(e));
                }
            };
            let mut off = 0;
            while off < n {
                let frame = &buf[off..n];
                let len = NetlinkBuffer::new_checked(frame)
                    .map(|b| b.length() as usize)
                    .map_err(|e| NetlinkError::Decode {
                        op,
                        object: object(),
                        detail: e.to_string(),
                    })?;
                if len == 0 {
                    break;
                }
                let aligned = (len + 3) & !3;
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&frame[..len])
                    .map_err(|e| NetlinkError::Decode {
                        op,
                        object: object(),
                        detail: e.to_string(),
                    })?;
                off += aligned.min(n - off);
                if msg.header.sequence_number != seq {
                    continue; // a stale answer to an earlier request
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
                                ext: None,
                            })
                        }
                    },
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
    }
}
