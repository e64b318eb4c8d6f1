//! knit's UDP listener: one plain loop per socket that takes the queries in batches
//! (`recvmmsg`), answers those the fast path's [`Table`] has by copying an answer built ahead,
//! sends those answers in one batch (`sendmmsg`), and hands every other packet to the hickory
//! [`Handler`] in a task of its own, as hickory-server's UDP loop would (forwarding, REFUSED for
//! outsiders, FORMERR for malformed queries; no answer to responses or to senders that cannot
//! be answered). TCP stays on hickory-server's listener.
//!
//! The loop holds an `Arc` of the table and takes the shared lock only when the records'
//! generation moved, checked once per batch.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::fast::Table;
use crate::server::{Handler, Shared};

/// Queries taken per `recvmmsg` at most.
pub const BATCH: usize = 32;
/// The largest query read, as hickory-server's UDP stream reads.
const RECV_BUF: usize = 4096;

/// Serve UDP on `socket` until it fails: answers from `records`' table, the rest by `handler`.
pub async fn serve(socket: UdpSocket, records: Shared, handler: Arc<Handler>) -> io::Result<()> {
    let socket = Arc::new(socket);
    let (mut generation, mut table) = records.table();
    let mut b = Batch::new();
    let mut slow = JoinSet::new();
    loop {
        socket.readable().await?;
        loop {
            let n = match socket.try_io(Interest::READABLE, || b.recv(socket.as_raw_fd())) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error queued by an earlier send, and the like: wait for the next.
                Err(e) => {
                    debug!(error = %e, "receiving DNS queries");
                    break;
                }
            };
            if records.generation() != generation {
                (generation, table) = records.table();
            }
            let answered = b.answer(n, &table, |packet, src| {
                let (h, s) = (handler.clone(), socket.clone());
                slow.spawn(answer_slowly(h, s, packet.to_vec(), src));
            });
            send_all(&socket, &mut b, answered).await;
            while slow.try_join_next().is_some() {}
        }
    }
}

/// Whether hickory-server would answer `src` (not port 0, nor an unspecified or broadcast
/// address).
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast(),
            IpAddr::V6(a) => !a.is_unspecified(),
        }
}

/// Send the first `n` answers of `b`; answers the socket refuses are dropped, as a lost
/// datagram would be.
async fn send_all(socket: &UdpSocket, b: &mut Batch, n: usize) {
    let mut from = 0;
    while from < n {
        match socket.try_io(Interest::WRITABLE, || b.send(socket.as_raw_fd(), from, n)) {
            Ok(sent) => from += sent.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                debug!(error = %e, "sending a DNS answer");
                from += 1;
            }
        }
    }
}

/// One batch of datagrams: the queries received, and the answers to send back to their
/// senders.
struct Batch {
    bufs: Vec<[u8; RECV_BUF]>,
    names: Vec<libc::sockaddr_storage>,
    name_lens: Vec<libc::socklen_t>,
    lens: Vec<usize>,
    /// The answers, and for each the index of the query it answers.
    out: Vec<Vec<u8>>,
    to: Vec<usize>,
    key: Vec<u8>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: vec![[0; RECV_BUF]; BATCH],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
            names: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            name_lens: vec![0; BATCH],
            lens: vec![0; BATCH],
            out: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            to: vec![0; BATCH],
            key: Vec::with_capacity(270),
        }
    }

    /// `recvmmsg` without waiting: how many queries arrived.
    fn recv(&mut self, fd: i32) -> io::Result<usize> {
        let mut iov: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; all zeroes is a valid value.
        let mut msgs: Vec<libc::mmsghdr> =
            vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH];
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            m.msg_hdr.msg_iov = &mut iov[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a buffer and an address of this batch, alive and
        // unaliased for the call; the kernel writes at most their given lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs.iter().enumerate().take(n) {
            self.lens[i] = (m.msg_len as usize).min(RECV_BUF);
            self.name_lens[i] = m.msg_hdr.msg_namelen;
        }
        Ok(n)
    }

    /// The sender of query `i`.
    fn src(&self, i: usize) -> Option<SocketAddr> {
        let s = &self.names[i];
        match i32::from(s.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in here (family AF_INET).
                let a: &libc::sockaddr_in =
                    unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 here (family AF_INET6).
                let a: &libc::sockaddr_in6 =
                    unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    u32::from_be(a.sin6_flowinfo),
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Answer the `n` queries received from the table, handing the others to `slow`; how many
    /// answers are ready to send.
    fn answer(
        &mut self,
        n: usize,
        table: &Table,
        mut slow: impl FnMut(&[u8], SocketAddr),
    ) -> usize {
        let mut ready = 0;
        for i in 0..n {
            let Some(src) = self.src(i).filter(|s| answerable(*s)) else {
                continue;
            };
            let packet = &self.bufs[i][..self.lens[i]];
            if table.answer(src.ip(), packet, &mut self.key, &mut self.out[ready]) {
                self.to[ready] = i;
                ready += 1;
            } else {
                slow(packet, src);
            }
        }
        ready
    }

    /// `sendmmsg` of answers `from..n` to their queries' senders: how many went.
    fn send(&mut self, fd: i32, from: usize, n: usize) -> io::Result<usize> {
        let mut iov: Vec<libc::iovec> = self.out[from..n]
            .iter_mut()
            .map(|o| libc::iovec {
                iov_base: o.as_mut_ptr().cast(),
                iov_len: o.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(n - from);
        for (k, v) in iov.iter_mut().enumerate() {
            let q = self.to[from + k];
            // SAFETY: mmsghdr is plain data; all zeroes is a valid value.
            let mut m: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            m.msg_hdr.msg_name = (&mut self.names[q] as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = self.name_lens[q];
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
        }
        // SAFETY: every header points at an answer and an address of this batch, alive for
        // the call; the kernel only reads them.
        let sent =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, libc::MSG_DONTWAIT) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

/// A packet the table did not answer, through the hickory handler as hickory-server's UDP
/// loop hands it over: no answer to less than a header or to a response, FORMERR to what does
/// not parse.
async fn answer_slowly(
    handler: Arc<Handler>,
    socket: Arc<UdpSocket>,
    packet: Vec<u8>,
    src: SocketAddr,
) {
    let Ok(header) = Header::read(&mut BinDecoder::new(&packet)) else {
        return;
    };
    let mut to = Responder { socket, dst: src };
    let request = match Request::from_bytes(packet, src, Protocol::Udp) {
        Ok(r) => r,
        Err(e) => {
            debug!(%src, error = %e, "malformed DNS query");
            let Ok(none) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return;
            };
            let msg = MessageResponseBuilder::new(&none, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            let _ = to.send_response(msg).await;
            return;
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return;
    }
    handler.handle_request::<_, TokioTime>(&request, to).await;
}

/// Sends the hickory handler's answer back over the listener's socket.
#[derive(Clone)]
struct Responder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for Responder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode_udp(response);
        self.socket.send_to(&bytes, self.dst).await?;
        Ok(info)
    }
}

/// A response as hickory-server encodes it for UDP: at most the EDNS payload size (512
/// without EDNS), truncated past it; SERVFAIL if it cannot be encoded.
pub fn encode_udp<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> (ResponseInfo, Vec<u8>) {
    let id = response.metadata().id;
    let max = response.edns().map_or(512, |e| e.max_payload());
    let mut bytes = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut bytes);
    enc.set_max_size(max);
    match response.destructive_emit(&mut enc) {
        Ok(info) => (info, bytes),
        Err(e) => {
            warn!(error = %e, "encoding a DNS answer");
            let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
            metadata.response_code = ResponseCode::ServFail;
            let header = Header {
                metadata,
                counts: HeaderCounts::default(),
            };
            bytes.clear();
            let _ = header.emit(&mut BinEncoder::new(&mut bytes));
            (ResponseInfo::from(header), bytes)
        }
    }
}
