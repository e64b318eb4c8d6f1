//! The request path under bad input: knit's DNS server, really listening on loopback, gets
//! arbitrary packets, mutated queries and random names. Properties:
//! - it never stops answering (a valid query after each case still gets its answer);
//! - a requester on a knit network gets knit's names or nothing (no forwarder here: REFUSED),
//!   never records for a name that is not knit's;
//! - a requester on no knit network gets REFUSED, whatever it asks;
//! - the fast path answers exactly as the hickory path: whatever query the fast path's table
//!   answers, the hickory handler answers with the same bytes (in process, over random
//!   queries: names in any case, flags, EDNS, requesters in every scope), and knit's UDP
//!   listener answers every query with the same bytes as hickory-server's own UDP loop over
//!   the same handler (over the network, fast path and fallback alike).
//!
//! `cargo test -p dns --test fuzz` runs a short budget (in `make test`); `make fuzz` runs many
//! more cases (`KNIT_FUZZ_CASES`) for at least ten minutes.

use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::sync::Arc;

use dns::fast::Table;
use dns::forward::Forwarder;
use dns::server::{Handler, Shared};
use dns::Records;
use hickory_proto::op::MessageType;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::rr::{Name, RecordType};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use proptest::prelude::*;
use store::{Driver, Endpoint, Network, Pool};

/// knit's network covers 127.0.0.0/24: a client bound to 127.0.0.9 is on it, 127.0.1.9 is not.
const INSIDE: &str = "127.0.0.9:0";
const OUTSIDE: &str = "127.0.1.9:0";

/// Two networks, one inside the other, so requesters fall in three scopes: 127.0.0.9 is on
/// both, 127.0.0.200 on lo1 only, 127.0.1.9 on none. lo1 has an IPv6 subnet too.
fn records() -> Records {
    let mut n1 = Network::new("lo1", Driver::Bridge);
    n1.ipam.push(Pool::new("127.0.0.0/24".parse().unwrap()));
    n1.ipam.push(Pool::new("fd00:99::/64".parse().unwrap()));
    let mut web = Endpoint::new(n1.id.clone());
    web.name = "web".into();
    web.aliases = vec!["www".into()];
    web.ipv4 = Some("127.0.0.20/24".parse().unwrap());
    let mut db = Endpoint::new(n1.id.clone());
    db.name = "db".into();
    db.ipv4 = Some("127.0.0.21/24".parse().unwrap());
    db.ipv6 = Some("fd00:99::21/64".parse().unwrap());
    let mut n2 = Network::new("lo2", Driver::Bridge);
    n2.ipam.push(Pool::new("127.0.0.0/25".parse().unwrap()));
    let mut cache = Endpoint::new(n2.id.clone());
    cache.name = "cache".into();
    cache.aliases = vec!["db".into()];
    cache.ipv4 = Some("127.0.0.30/25".parse().unwrap());
    // A service on lo1 with a named port (SRV) and one without an IANA name (no SRV).
    let mut api = store::Service::new("api", n1.id.clone(), "127.0.0.40".parse().unwrap());
    api.ports = vec![
        store::ServicePort::parse("80/tcp").unwrap(),
        store::ServicePort::parse("8443/tcp").unwrap(),
    ];
    let nets = [n1.clone(), n2.clone()];
    let mut r = Records::build(
        dns::DEFAULT_DOMAIN,
        5,
        &[(n1, vec![web, db]), (n2, vec![cache])],
    );
    r.add_services(&nets, &[api]);
    r
}

/// Serve `records()` on a free loopback port from a runtime of its own: through knit's UDP
/// loop and fast path (`serve`), or through hickory-server's own UDP loop with the same
/// handler (`hickory_only`), the path the fast one must not differ from.
fn start(hickory_only: bool) -> SocketAddr {
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Shared::new(records());
        if hickory_only {
            rt.block_on(async move {
                let mut server = hickory_server::Server::new(Handler {
                    records: shared,
                    forward: Arc::new(Forwarder::new(Vec::new())),
                });
                server.register_socket(tokio::net::UdpSocket::bind(addr).await.unwrap());
                server.block_until_done().await.unwrap();
            });
        } else {
            rt.block_on(dns::server::serve(shared, &[addr], Vec::new()))
                .unwrap();
        }
    });
    let t = Instant::now();
    while ask(addr, INSIDE, &query("web", RecordType::A)).is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    addr
}

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start(false))
}

fn hickory_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start(true))
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 7;
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).unwrap_or_else(|_| Name::root()),
        t,
    ));
    m.to_vec().unwrap()
}

/// Send `packet` from `from`; the answer, if one came within a second.
fn ask(server: SocketAddr, from: &str, packet: &[u8]) -> Option<Message> {
    let s = UdpSocket::bind(from).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
    s.send_to(packet, server).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn still_serving(addr: SocketAddr) -> Result<(), TestCaseError> {
    let m = ask(addr, INSIDE, &query("web", RecordType::A))
        .ok_or_else(|| TestCaseError::fail("the server stopped answering"))?;
    prop_assert_eq!(m.answers.len(), 1);
    Ok(())
}

fn cases() -> u32 {
    std::env::var("KNIT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("web".to_string()),
        Just("www".to_string()),
        Just("lo1".to_string()),
        Just("lo2".to_string()),
        Just("db".to_string()),
        Just("cache".to_string()),
        Just("api".to_string()),
        Just("_http".to_string()),
        Just("_tcp".to_string()),
        Just("knit".to_string()),
        Just("internal".to_string()),
        "[a-z0-9-]{1,12}",
    ]
}

fn qtype() -> impl Strategy<Value = RecordType> {
    prop_oneof![
        Just(RecordType::A),
        Just(RecordType::AAAA),
        Just(RecordType::PTR),
        Just(RecordType::ANY),
        Just(RecordType::MX),
        Just(RecordType::SRV),
        Just(RecordType::TXT),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_packets_never_stop_the_server(
        packet in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        let addr = server();
        let _ = ask(addr, INSIDE, &packet);
        still_serving(addr)?;
    }

    #[test]
    fn mutated_queries_never_stop_the_server(
        flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..8),
        name in label(),
    ) {
        let addr = server();
        let mut p = query(&name, RecordType::A);
        for (i, b) in flips {
            let n = p.len();
            p[i % n] = b;
        }
        let _ = ask(addr, INSIDE, &p);
        still_serving(addr)?;
    }

    #[test]
    fn only_knits_names_are_answered(
        labels in proptest::collection::vec(label(), 1..5),
        t in qtype(),
    ) {
        let addr = server();
        let name = labels.join(".") + ".";
        let knit = [
            "web.", "www.", "db.", "cache.",
            "web.lo1.knit.internal.", "www.lo1.knit.internal.", "db.lo1.knit.internal.",
            "cache.lo2.knit.internal.", "db.lo2.knit.internal.",
            "api.", "api.lo1.knit.internal.", "_http._tcp.api.", "_http._tcp.api.lo1.knit.internal.",
        ];
        if let Some(m) = ask(addr, INSIDE, &query(&name, t)) {
            if !m.answers.is_empty() {
                prop_assert!(knit.contains(&name.as_str()), "answered {:?}", name);
                prop_assert!(m.metadata.authoritative);
            }
        }
        if let Some(o) = ask(addr, OUTSIDE, &query(&name, t)) {
            prop_assert_eq!(o.metadata.response_code, ResponseCode::Refused);
            prop_assert!(o.answers.is_empty());
        }
    }
}

/// A query built byte by byte, so that every part is chosen: the name's case (0x20), the header
/// flags, the OPT record.
#[derive(Debug, Clone)]
struct Wire {
    id: u16,
    /// Byte 2 of the header (QR, OPCODE, AA, TC, RD) and byte 3 (RA, Z, AD, CD, RCODE).
    flags: [u8; 2],
    name: String,
    /// Upper-case the letters of the name at these positions.
    upper: Vec<bool>,
    qtype: u16,
    qclass: u16,
    /// (payload size, version, DO, an option (a cookie)).
    edns: Option<(u16, u8, bool, bool)>,
}

impl Wire {
    fn bytes(&self) -> Vec<u8> {
        let mut p = self.id.to_be_bytes().to_vec();
        p.extend_from_slice(&self.flags);
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(self.edns.is_some())]);
        let mut k = 0;
        for l in self.name.split('.').filter(|l| !l.is_empty()) {
            p.push(l.len() as u8);
            for b in l.bytes() {
                let up = self.upper.get(k).copied().unwrap_or(false);
                p.push(if up { b.to_ascii_uppercase() } else { b });
                k += 1;
            }
        }
        p.push(0);
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some((payload, version, dnssec_ok, option)) = self.edns {
            p.extend_from_slice(&[0, 0, 41]);
            p.extend_from_slice(&payload.to_be_bytes());
            p.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0]);
            if option {
                p.extend_from_slice(&[0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
            } else {
                p.extend_from_slice(&[0, 0]);
            }
        }
        p
    }
}

/// Names knit has (bare, fully qualified, reverse) and names it does not.
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "web.", "www.", "db.", "cache.", "nope.",
            "web.lo1.knit.internal.", "db.lo1.knit.internal.", "db.lo2.knit.internal.",
            "cache.lo2.knit.internal.", "cache.lo1.knit.internal.", "lo1.knit.internal.",
            "knit.internal.", "api.", "api.lo1.knit.internal.", "_http._tcp.api.",
            "_http._tcp.api.lo1.knit.internal.", "_http._udp.api.lo1.knit.internal.",
            "40.0.0.127.in-addr.arpa.",
            "20.0.0.127.in-addr.arpa.", "21.0.0.127.in-addr.arpa.", "30.0.0.127.in-addr.arpa.",
            "99.0.0.127.in-addr.arpa.", "1.0.0.10.in-addr.arpa.",
            "1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.9.0.0.0.0.d.f.ip6.arpa.",
        ]).prop_map(String::from),
        1 => proptest::collection::vec(label(), 1..5).prop_map(|l| l.join(".") + "."),
    ]
}

fn any_qtype() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop::sample::select(vec![1u16, 28, 12, 33, 255, 15, 16, 65]),
        1 => any::<u16>(),
    ]
}

/// Queries with any flags (`qr`: the QR bit may be set too) and any EDNS.
fn any_wire(qr: bool) -> impl Strategy<Value = Wire> {
    let byte2 = if qr { 0xffu8 } else { 0x7f };
    (
        any::<u16>(),
        prop_oneof![
            // Any of AA, TC, RD; any of RA, AD, CD; or anything at all.
            3 => (0u8..8, 0u8..8).prop_map(|(a, b)| [a, ((b & 4) << 5) | ((b & 3) << 4)]),
            1 => any::<[u8; 2]>(),
        ],
        any_name(),
        proptest::collection::vec(any::<bool>(), 0..40),
        any_qtype(),
        prop_oneof![9 => Just(1u16), 1 => any::<u16>()],
        prop_oneof![
            2 => Just(None),
            1 => (prop_oneof![Just(1232u16), Just(4096), 0u16..600, any::<u16>()],
                  prop_oneof![4 => Just(0u8), 1 => any::<u8>()], any::<bool>(),
                  prop_oneof![3 => Just(false), 1 => Just(true)]).prop_map(Some),
        ],
    )
        .prop_map(move |(id, flags, name, upper, qtype, qclass, edns)| Wire {
            id,
            flags: [flags[0] & byte2, flags[1]],
            name,
            upper,
            qtype,
            qclass,
            edns,
        })
}

/// Requesters in every scope: on both networks, on lo1 only (v4 and v6), on none, and
/// IPv4-mapped IPv6.
fn any_src() -> impl Strategy<Value = SocketAddr> {
    prop::sample::select(vec![
        "127.0.0.9:4000",
        "127.0.0.200:4000",
        "[fd00:99::5]:4000",
        "[::ffff:127.0.0.9]:4000",
        "127.0.1.9:4000",
        "[fd00:98::5]:4000",
    ])
    .prop_map(|s| s.parse().unwrap())
}

/// The records, their fast table, and a runtime for the hickory handler, made once.
fn fixture() -> &'static (Shared, Arc<Table>, tokio::runtime::Runtime) {
    static F: OnceLock<(Shared, Arc<Table>, tokio::runtime::Runtime)> = OnceLock::new();
    F.get_or_init(|| {
        let shared = Shared::new(records());
        let table = shared.table().1;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (shared, table, rt)
    })
}

/// Keeps the bytes the hickory handler sends, encoded as for UDP.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
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
        let (info, bytes) = dns::udp::encode_udp(response);
        *self.0.lock().unwrap() = Some(bytes);
        Ok(info)
    }
}

/// What the hickory handler answers to `packet` from `src` (`b"FORMERR"` when hickory cannot
/// parse it, None when it answers nothing).
fn hickory_answer(src: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let (shared, _, rt) = fixture();
    let Ok(request) = Request::from_bytes(packet.to_vec(), src, Protocol::Udp) else {
        return Some(b"FORMERR".to_vec());
    };
    if request.metadata.message_type == MessageType::Response {
        return None;
    }
    let handler = Handler {
        records: shared.clone(),
        forward: Arc::new(Forwarder::new(Vec::new())),
    };
    let cap = Capture::default();
    rt.block_on(handler.handle_request::<_, TokioTime>(&request, cap.clone()));
    let got = cap.0.lock().unwrap().take();
    got
}

fn fast_answer(src: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let (_, table, _) = fixture();
    let (mut key, mut out) = (Vec::new(), Vec::new());
    table
        .answer(src.ip(), packet, &mut key, &mut out)
        .then_some(out)
}

/// Send `packet` from `from` and the answer's bytes, if one came within 300 ms.
fn ask_raw(server: SocketAddr, from: &str, packet: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind(from).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.send_to(packet, server).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

#[test]
fn the_fast_path_answers_knits_names_in_every_scope() {
    let (_, table, _) = fixture();
    assert!(!table.is_empty());
    let mut answered = 0;
    let inside = ["127.0.0.9:4000", "127.0.0.200:4000", "[fd00:99::5]:4000"];
    let names = [
        "web.",
        "db.",
        "web.lo1.knit.internal.",
        "20.0.0.127.in-addr.arpa.",
        "21.0.0.127.in-addr.arpa.",
        "api.",
        "_http._tcp.api.lo1.knit.internal.",
        "40.0.0.127.in-addr.arpa.",
    ];
    for src in inside {
        let src: SocketAddr = src.parse().unwrap();
        for name in names {
            for qtype in [1u16, 28, 12, 33] {
                for edns in [None, Some((1232, 0, true, false))] {
                    let w = Wire {
                        id: 0x1234,
                        flags: [0x01, 0x00],
                        name: name.into(),
                        upper: vec![true, false, true],
                        qtype,
                        qclass: 1,
                        edns,
                    };
                    let p = w.bytes();
                    let fast = fast_answer(src, &p);
                    assert!(fast.is_some(), "not answered fast: {w:?} from {src}");
                    assert_eq!(fast, hickory_answer(src, &p), "{w:?} from {src}");
                    answered += 1;
                }
            }
        }
    }
    assert_eq!(answered, 3 * names.len() * 4 * 2);
    // cache (lo2) is known to 127.0.0.9 only; outsiders are left to the handler (REFUSED).
    let cache = Wire {
        id: 1,
        flags: [0, 0],
        name: "cache.".into(),
        upper: vec![],
        qtype: 1,
        qclass: 1,
        edns: None,
    };
    assert!(fast_answer("127.0.0.9:53".parse().unwrap(), &cache.bytes()).is_some());
    assert!(fast_answer("127.0.0.200:53".parse().unwrap(), &cache.bytes()).is_none());
    assert!(fast_answer("127.0.1.9:53".parse().unwrap(), &cache.bytes()).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() * 10, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_path_answers_as_the_hickory_handler(q in any_wire(true), src in any_src()) {
        let p = q.bytes();
        if let Some(fast) = fast_answer(src, &p) {
            prop_assert_eq!(Some(fast), hickory_answer(src, &p));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn knits_udp_listener_answers_as_hickorys(
        q in any_wire(false),
        from in prop::sample::select(vec![INSIDE, OUTSIDE, "127.0.0.200:0"]),
        flips in proptest::collection::vec((0usize..80, any::<u8>()), 0..3),
    ) {
        let mut p = q.bytes();
        for (i, b) in flips {
            let n = p.len();
            p[i % n] = b;
        }
        // Leave QR clear: a response gets no answer from either, and would only wait.
        p[2] &= 0x7f;
        let knit = ask_raw(server(), from, &p);
        let hickory = ask_raw(hickory_server(), from, &p);
        prop_assert_eq!(knit, hickory);
    }
}
