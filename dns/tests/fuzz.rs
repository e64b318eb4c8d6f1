//! The request path under bad input: knit's DNS server, really listening on loopback, gets
//! arbitrary packets, mutated queries and random names. Properties:
//! - it never stops answering (a valid query after each case still gets its answer);
//! - a requester on a knit network gets knit's names or nothing (no forwarder here: REFUSED),
//!   never records for a name that is not knit's;
//! - a requester on no knit network gets REFUSED, whatever it asks.
//!
//! `cargo test -p dns --test fuzz` runs a short budget (in `make test`); `make fuzz` runs many
//! more cases (`KNIT_FUZZ_CASES`) for at least ten minutes.

use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dns::server::Shared;
use dns::Records;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;
use store::{Driver, Endpoint, Network, Pool};

/// knit's network covers 127.0.0.0/24: a client bound to 127.0.0.9 is on it, 127.0.1.9 is not.
const INSIDE: &str = "127.0.0.9:0";
const OUTSIDE: &str = "127.0.1.9:0";

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let mut n = Network::new("lo1", Driver::Bridge);
        n.ipam.push(Pool::new("127.0.0.0/24".parse().unwrap()));
        let mut e = Endpoint::new(n.id.clone());
        e.name = "web".into();
        e.aliases = vec!["www".into()];
        e.ipv4 = Some("127.0.0.20/24".parse().unwrap());
        let records = Records::build(dns::DEFAULT_DOMAIN, 5, &[(n, vec![e])]);
        // Find a free port, then serve on it from a runtime of its own.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(dns::server::serve(
                Shared::new(records),
                &[addr],
                Vec::new(),
            ))
            .unwrap();
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
    })
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
        let knit = ["web.", "www.", "web.lo1.knit.internal.", "www.lo1.knit.internal."];
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
