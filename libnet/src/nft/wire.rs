//! nf_tables netlink encoding of our elements: the batches ensure/del send (NEWSETELEM and
//! DELSETELEM between BATCH_BEGIN/END) and the one-key GETSETELEM requests of [`super::lookup`].
//!
//! Key layout as the kernel wants it: the concatenated fields, each padded to 4 bytes (ipv4 4,
//! ipv6 16, inet_proto 1→4, inet_service 2 big-endian→4, ifname 16, ether_addr 6→8); an interval concatenation
//! also carries KEY_END (the last address of the prefix).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::error::NftError;
use super::plan::{Elem, ElemOp, Proto, Table};

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETSETELEM: u16 = 13;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(super) const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// libnftnl's user-data TLV type for an element comment.
pub(super) const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;
const NLM_F_CREATE: u16 = 0x400;
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// NFT_GOTO: jump to a chain without coming back to the one that looked the map up.
const NFT_GOTO: i32 = -4;
pub(super) const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// The table name inside `inet knit` and `bridge knit`.
const TABLE_NAME: &str = "knit";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// An IPv4 or IPv6 address (the set's type decides; both are unpadded).
    Addr,
    /// The second half of a masq_skip key: a prefix, i.e. a range.
    Net,
    Proto,
    Port,
    Ifname,
    /// A MAC address `aa:bb:cc:dd:ee:ff`.
    Ether,
    /// A service's slot: the value of `numgen random mod N`, a 32-bit number in host order
    /// (a plain map does not convert the register).
    Slot,
    /// Map data `goto CHAIN` (a verdict map's element).
    Verdict,
}

/// (key fields, data fields) of each of our sets; see `golden/skeleton.nft`.
fn schema(set: &str) -> Option<(&'static [Field], &'static [Field])> {
    use Field::*;
    Some(match set {
        "masq4" | "masq6" | "pm_ctr4" | "fw4" | "fw6" => (&[Addr], &[]),
        "masq_skip4" | "masq_skip6" => (&[Addr, Net], &[]),
        "hairpin4" | "hairpin6" => (&[Addr, Addr], &[]),
        "pm4_ip" | "pm6_ip" => (&[Addr, Proto, Port], &[Addr, Port]),
        "pm4_any" | "pm6_any" => (&[Proto, Port], &[Addr, Port]),
        "iso4" | "iso6" => (&[Ifname, Addr], &[]),
        "spoof_ports" => (&[Ifname], &[]),
        "spoof_ok" => (&[Ifname, Ether], &[]),
        "svc_n4" | "svc_n6" => (&[Addr, Proto, Port], &[Verdict]),
        "svc_slot4" | "svc_slot6" => (&[Addr, Proto, Port, Slot], &[Addr, Port]),
        "svc_vips4" | "svc_vips6" => (&[Addr], &[]),
        _ => return None,
    })
}

/// An element in kernel bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireElem {
    pub set: String,
    pub key: Vec<u8>,
    pub key_end: Option<Vec<u8>>,
    pub data: Option<Vec<u8>>,
    /// The chain of a `goto` verdict (verdict maps).
    pub verdict: Option<String>,
}

fn bad(e: &Elem, why: &str) -> NftError {
    NftError::invalid("element", format!("{} {{ {} }}: {why}", e.set, e.key))
}

/// Encode `s` (fields joined by " . ") into (start, end) bytes.
fn encode_fields(e: &Elem, s: &str, fields: &[Field]) -> Result<(Vec<u8>, Vec<u8>), NftError> {
    let parts: Vec<&str> = s.split(" . ").map(str::trim).collect();
    if parts.len() != fields.len() {
        return Err(bad(e, "wrong number of fields"));
    }
    let (mut start, mut end) = (Vec::new(), Vec::new());
    for (p, f) in parts.iter().zip(fields) {
        let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(4) * 4, 0);
        match f {
            Field::Addr => {
                let ip: IpAddr = p.parse().map_err(|_| bad(e, "bad address"))?;
                let b = ip_bytes(ip);
                start.extend_from_slice(&b);
                end.extend_from_slice(&b);
            }
            Field::Net => {
                let net: IpNet = p.parse().map_err(|_| bad(e, "bad prefix"))?;
                start.extend_from_slice(&ip_bytes(net.network()));
                end.extend_from_slice(&ip_bytes(net.broadcast()));
            }
            Field::Proto => {
                let n = match Proto::parse(p)? {
                    Proto::Tcp => 6,
                    Proto::Udp => 17,
                    Proto::Sctp => 132,
                };
                start.extend_from_slice(&[n, 0, 0, 0]);
                end.extend_from_slice(&[n, 0, 0, 0]);
            }
            Field::Port => {
                let port: u16 = p.parse().map_err(|_| bad(e, "bad port"))?;
                let b = port.to_be_bytes();
                start.extend_from_slice(&[b[0], b[1], 0, 0]);
                end.extend_from_slice(&[b[0], b[1], 0, 0]);
            }
            Field::Ifname => {
                let name = p.trim_matches('"').as_bytes();
                if name.len() >= 16 {
                    return Err(bad(e, "ifname too long"));
                }
                let mut b = [0u8; 16];
                b[..name.len()].copy_from_slice(name);
                start.extend_from_slice(&b);
                end.extend_from_slice(&b);
            }
            Field::Ether => {
                let mac = crate::netlink::link::parse_mac(p).ok_or_else(|| bad(e, "bad MAC"))?;
                start.extend_from_slice(&mac);
                end.extend_from_slice(&mac);
            }
            Field::Slot => {
                let n: u32 = p.parse().map_err(|_| bad(e, "bad slot"))?;
                start.extend_from_slice(&n.to_ne_bytes());
                end.extend_from_slice(&n.to_ne_bytes());
            }
            Field::Verdict => return Err(bad(e, "a verdict is map data, not a key")),
        }
        pad(&mut start);
        pad(&mut end);
    }
    Ok((start, end))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl WireElem {
    pub fn encode(e: &Elem) -> Result<WireElem, NftError> {
        let (kf, df) = schema(&e.set).ok_or_else(|| bad(e, "not one of our sets"))?;
        let (key, end) = encode_fields(e, &e.key, kf)?;
        let key_end = kf.contains(&Field::Net).then_some(end);
        let (data, verdict) = match (&e.value, df) {
            (Some(v), [Field::Verdict]) => {
                let chain = v
                    .strip_prefix("goto ")
                    .filter(|c| !c.is_empty() && c.len() < 256 && !c.contains(char::is_whitespace))
                    .ok_or_else(|| bad(e, "a verdict is `goto CHAIN`"))?;
                (None, Some(chain.to_string()))
            }
            (Some(v), df) if !df.is_empty() => (Some(encode_fields(e, v, df)?.0), None),
            (None, []) => (None, None),
            _ => return Err(bad(e, "value does not match the set's type")),
        };
        Ok(WireElem {
            set: e.set.clone(),
            key,
            key_end,
            data,
            verdict,
        })
    }

    /// NFTA_SET_ELEM_LIST_* for this one element: key (+ key end), data and comment if given.
    fn list_body(&self, with_data: bool, comment: Option<&str>) -> Vec<u8> {
        let value = |v: &[u8]| {
            let mut b = Vec::new();
            nla(&mut b, NFTA_DATA_VALUE, v);
            b
        };
        let mut el = Vec::new();
        nla(&mut el, NFTA_SET_ELEM_KEY | NLA_F_NESTED, &value(&self.key));
        if let Some(end) = &self.key_end {
            nla(&mut el, NFTA_SET_ELEM_KEY_END | NLA_F_NESTED, &value(end));
        }
        if let (true, Some(d)) = (with_data, &self.data) {
            nla(&mut el, NFTA_SET_ELEM_DATA | NLA_F_NESTED, &value(d));
        }
        if let (true, Some(chain)) = (with_data, &self.verdict) {
            let mut v = Vec::new();
            nla(&mut v, NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
            nla(&mut v, NFTA_VERDICT_CHAIN, &cstr(chain));
            let mut d = Vec::new();
            nla(&mut d, NFTA_DATA_VERDICT | NLA_F_NESTED, &v);
            nla(&mut el, NFTA_SET_ELEM_DATA | NLA_F_NESTED, &d);
        }
        if let Some(c) = comment {
            let c = &c.as_bytes()[..c.len().min(super::plan::COMMENT_MAX - 1)];
            let mut ud = vec![NFTNL_UDATA_SET_ELEM_COMMENT, (c.len() + 1) as u8];
            ud.extend_from_slice(c);
            ud.push(0);
            nla(&mut el, NFTA_SET_ELEM_USERDATA, &ud);
        }
        let mut list = Vec::new();
        nla(&mut list, NFTA_LIST_ELEM | NLA_F_NESTED, &el);
        let family = match Table::of_set(&self.set) {
            Table::Inet => NFPROTO_INET,
            Table::Bridge => NFPROTO_BRIDGE,
        };
        let mut body = vec![family, 0, 0, 0]; // nfgenmsg: family, version, res_id
        nla(&mut body, NFTA_SET_ELEM_LIST_TABLE, &cstr(TABLE_NAME));
        nla(&mut body, NFTA_SET_ELEM_LIST_SET, &cstr(&self.set));
        nla(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &list);
        body
    }

    /// NFT_MSG_GETSETELEM for this key (no dump: the kernel looks the one key up).
    pub fn get_request(&self, seq: u32) -> Vec<u8> {
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM;
        nlmsg(
            ty,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            &self.list_body(false, None),
        )
    }
}

/// When this process last committed a batch that deleted elements (ms since the epoch).
static LAST_DESTROY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// How long after such a batch another nfnetlink socket's release may still wait for it.
const DESTROY_PENDING_MS: u64 = 100;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn note_destroy() {
    LAST_DESTROY_MS.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// Whether this process keeps its nfnetlink sockets open ([`keep_sockets`]).
static KEEP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Sockets kept open, by the inode of their network namespace.
static POOL: std::sync::Mutex<Vec<(u64, Socket)>> = std::sync::Mutex::new(Vec::new());
/// Sockets kept per namespace (more concurrent users open and close their own).
const POOL_PER_NS: usize = 4;

/// For long-lived processes (the agent, benchmarks): keep nfnetlink sockets open and reuse
/// them. The release of ANY nfnetlink socket flushes nf_tables' pending destroy work (an RCU
/// grace period, 6-20 ms here) while holding the commit mutex, so in a burst of changes that
/// delete elements (service backends coming and going) every close, even by a helper, makes
/// the next transaction wait for the previous one. With the sockets kept, the destroy work runs
/// in the background and the next batch does not wait. Short-lived processes (CNI plugins, the
/// CLI) close theirs (see [`close`]).
pub fn keep_sockets() {
    KEEP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn netns_ino() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

/// A socket for one request in the calling thread's namespace: a kept one (drained of anything
/// a failed request left) or a new one.
pub(super) fn take_socket(op: &'static str) -> Result<Socket, NftError> {
    if KEEP.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(ino) = netns_ino() {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = pool.iter().position(|(n, _)| *n == ino) {
                let (_, sock) = pool.swap_remove(i);
                drop(pool);
                while let Ok(Some(_)) = recv_queued(&sock, op) {}
                return Ok(sock);
            }
        }
    }
    socket(op)
}

/// Done with a socket: kept for reuse ([`keep_sockets`]), else closed; right after this process
/// deleted elements a plain close would wait for that change's destroy work, so then a helper
/// closes it instead.
pub(super) fn close(sock: Socket) {
    if KEEP.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(ino) = netns_ino() {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if pool.iter().filter(|(n, _)| *n == ino).count() < POOL_PER_NS {
                pool.push((ino, sock));
                return;
            }
        }
    }
    let since = now_ms().saturating_sub(LAST_DESTROY_MS.load(std::sync::atomic::Ordering::Relaxed));
    if since < DESTROY_PENDING_MS {
        crate::linger::close_detached(sock);
    }
}

/// One nfnetlink batch (BEGIN, one NEWSETELEM/DELSETELEM per op, END): the kernel applies it as
/// one transaction or not at all. Every element message asks for an ack.
pub fn batch(ops: &[ElemOp], comment: &str) -> Result<Vec<u8>, NftError> {
    let subsys = NFNL_SUBSYS_NFTABLES.to_be_bytes();
    let ctl = [0, 0, subsys[0], subsys[1]]; // AF_UNSPEC, v0, res_id = the subsystem
    let mut out = nlmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, &ctl);
    for (i, op) in ops.iter().enumerate() {
        let (ty, flags, body) = match op {
            ElemOp::Add(e) => (
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                WireElem::encode(e)?.list_body(true, Some(comment)),
            ),
            ElemOp::Touch(e) => (
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                WireElem::encode(e)?.list_body(true, None),
            ),
            ElemOp::Del(e) => (
                NFT_MSG_DELSETELEM,
                0,
                WireElem::encode(e)?.list_body(false, None),
            ),
        };
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | ty;
        out.extend(nlmsg(
            ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            i as u32 + 1,
            &body,
        ));
    }
    out.extend(nlmsg(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        ops.len() as u32 + 1,
        &ctl,
    ));
    Ok(out)
}

/// A netlink socket for nf_tables in the calling thread's namespace.
pub(super) fn socket(op: &'static str) -> Result<Socket, NftError> {
    let io = |what: &str, err: std::io::Error| NftError::apply(op, format!("{what}: {err}"));
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| io("socket", e))?;
    sock.bind_auto().map_err(|e| io("bind", e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| io("connect", e))?;
    Ok(sock)
}

/// Apply `ops` as one transaction over netlink (no nft process, no libnftables, no cache).
/// The kernel handles the whole batch inside `send`, so every answer is queued when it returns.
pub fn apply(op: &'static str, ops: &[ElemOp], comment: &str) -> Result<(), NftError> {
    if ops.is_empty() {
        return Ok(());
    }
    let msg = batch(ops, comment)?;
    let sock = take_socket(op)?;
    let _ = sock.set_rx_buf_sz(1 << 20);
    sock.send(&msg, 0)
        .map_err(|e| NftError::apply(op, format!("send: {e}")))?;
    let mut acks = 0;
    let mut first_err: Option<(usize, i32)> = None;
    while acks < ops.len() {
        let Some(buf) = recv_queued(&sock, op)? else {
            return Err(NftError::Apply {
                op,
                kind: crate::Kind::Internal,
                text: format!("kernel answered {acks} of {} messages", ops.len()),
            });
        };
        for (ty, seq, body) in messages(&buf) {
            if ty != NLMSG_ERROR || body.len() < 4 {
                continue;
            }
            acks += 1;
            let errno = -i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            if errno != 0 && first_err.is_none() {
                first_err = Some((seq as usize, errno));
            }
        }
        if first_err.is_some() {
            break;
        }
    }
    if ops.iter().any(|o| matches!(o, ElemOp::Del(_))) {
        // The elements are gone; the socket's release would wait out nf_tables' destroy work
        // (6-9 ms): a helper pays it (see linger.rs), unless the socket is kept.
        note_destroy();
    }
    close(sock);
    match first_err {
        None => Ok(()),
        Some((seq, errno)) => {
            let what = match ops.get(seq.wrapping_sub(1)) {
                Some(ElemOp::Add(e) | ElemOp::Touch(e)) => {
                    format!("add element {} {{ {} }}", e.set, e.key)
                }
                Some(ElemOp::Del(e)) => format!("delete element {} {{ {} }}", e.set, e.key),
                None => "batch".to_string(),
            };
            let err = std::io::Error::from_raw_os_error(errno);
            Err(NftError::Apply {
                op,
                kind: crate::error::kind_of_errno(errno),
                text: format!("{what}: {err}"),
            })
        }
    }
}

/// The next queued datagram, `None` when nothing more is queued. nfnetlink handles a request
/// inside `send`, so every answer is already queued when `send` returns: never block for more.
pub(super) fn recv_queued(sock: &Socket, op: &'static str) -> Result<Option<Vec<u8>>, NftError> {
    sock.set_non_blocking(true)
        .map_err(|e| NftError::apply(op, format!("nonblock: {e}")))?;
    match sock.recv_from_full() {
        Ok((buf, _)) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(NftError::apply(op, format!("recv: {e}"))),
    }
}

/// The netlink messages in a datagram: (type, seq, payload after the header).
pub(super) fn messages(mut b: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = (u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize).min(b.len());
        if len < 16 {
            break;
        }
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        out.push((ty, seq, &b[16..len]));
        b = &b[(len.div_ceil(4) * 4).min(b.len())..];
    }
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn nla(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = (4 + payload.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

fn nlmsg(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// Iterate over netlink attributes: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[(len.div_ceil(4) * 4).min(b.len())..];
        Some((ty, payload))
    })
}

pub(super) fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(set: &str, key: &str, value: Option<&str>) -> Elem {
        Elem {
            set: set.into(),
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn encodes_keys_padded_to_4_bytes() {
        let w = WireElem::encode(&el("pm4_any", "tcp . 8080", Some("10.244.1.5 . 80"))).unwrap();
        assert_eq!(w.key, [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(w.data.unwrap(), [10, 244, 1, 5, 0, 80, 0, 0]);
        let w = WireElem::encode(&el("masq_skip4", "10.244.1.5 . 10.244.1.0/24", None)).unwrap();
        assert_eq!(w.key, [10, 244, 1, 5, 10, 244, 1, 0]);
        assert_eq!(w.key_end.unwrap(), [10, 244, 1, 5, 10, 244, 1, 255]);
        let w = WireElem::encode(&el("iso4", "\"knbr0\" . 10.0.0.1", None)).unwrap();
        assert_eq!(&w.key[..6], b"knbr0\0");
        assert_eq!(w.key.len(), 20);
        let w = WireElem::encode(&el("pm6_ip", "fd00::1 . sctp . 1", Some("fd00::2 . 2"))).unwrap();
        assert_eq!(w.key.len(), 24);
        assert_eq!(w.data.unwrap().len(), 20);
        let w = WireElem::encode(&el("spoof_ok", "\"veth1\" . 0a:58:0a:f4:00:05", None)).unwrap();
        assert_eq!(&w.key[16..], [0x0a, 0x58, 0x0a, 0xf4, 0, 5, 0, 0]);
        assert_eq!(w.list_body(false, None)[0], NFPROTO_BRIDGE);
        assert!(WireElem::encode(&el("spoof_ok", "\"veth1\" . 0a:58", None)).is_err());
        assert!(WireElem::encode(&el("nope", "1.2.3.4", None)).is_err());
        assert!(WireElem::encode(&el("masq4", "1.2.3.4", Some("x"))).is_err());
    }

    #[test]
    fn walks_attributes() {
        let mut b = Vec::new();
        nla(&mut b, 1, b"abc");
        nla(&mut b, 2 | NLA_F_NESTED, &[1, 2, 3, 4]);
        let v: Vec<_> = attrs(&b).collect();
        assert_eq!(v, vec![(1, &b"abc"[..]), (2, &[1u8, 2, 3, 4][..])]);
    }
}
