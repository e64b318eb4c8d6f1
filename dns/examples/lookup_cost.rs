//! Where a query's CPU goes inside knit's DNS, without the network: `Records::lookup` alone,
//! then the whole `Handler::handle_request` (hickory's request parse, the lookup, the response
//! built and encoded into a buffer), for 1,000 names, A and PTR alternating, as knit-bench's
//! `dns` part asks them. What the server spends per answer beyond the second figure is hickory's
//! UDP loop (a task spawned per request, the answer handed back through a channel) and the
//! socket calls.
//!
//! Then the fast path ([`dns::fast::Table`]): the table's build for those names, and an answer
//! copied from it (header and question scanned, one hash lookup, the copy patched).
//!
//! `cargo run --release -p dns --example lookup_cost`

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use dns::forward::Forwarder;
use dns::records::{Records, DEFAULT_DOMAIN, DEFAULT_TTL};
use dns::server::{Handler, Shared};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

const NAMES: u32 = 1000;
const ROUNDS: u32 = 200;

fn addr_of(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 80, 10)) + i)
}

fn arpa(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.').filter(|l| !l.is_empty()) {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, qtype as u8, 0, 1]);
    q
}

/// Encodes the answer as the UDP path does, and drops it.
#[derive(Clone)]
struct Sink;

#[async_trait::async_trait]
impl ResponseHandler for Sink {
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
        let mut buf = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut buf);
        let info = response
            .destructive_emit(&mut enc)
            .map_err(|e| NetError::from(e.to_string()))?;
        std::hint::black_box(&buf);
        Ok(info)
    }
}

fn main() {
    let mut net = store::Network::new("kbench", store::Driver::Bridge);
    net.ipam
        .push(store::Pool::new("10.244.80.0/21".parse().expect("subnet")));
    let eps: Vec<store::Endpoint> = (0..NAMES)
        .map(|i| {
            let mut e = store::Endpoint::new(net.id.clone());
            e.name = format!("n{i}");
            e.ipv4 = Some(format!("{}/21", addr_of(i)).parse().expect("address"));
            e
        })
        .collect();
    let t = Instant::now();
    let records = Records::build(DEFAULT_DOMAIN, DEFAULT_TTL, &[(net, eps)]);
    println!(
        "Records::build of {NAMES} names: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let src = IpAddr::V4(Ipv4Addr::new(10, 244, 80, 2));
    let names: Vec<(Name, RecordType)> = (0..NAMES)
        .flat_map(|i| {
            [
                (
                    Name::from_ascii(format!("n{i}")).expect("name"),
                    RecordType::A,
                ),
                (
                    Name::from_ascii(arpa(addr_of(i))).expect("name"),
                    RecordType::PTR,
                ),
            ]
        })
        .collect();
    let n = f64::from(ROUNDS) * names.len() as f64;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for (name, qt) in &names {
            std::hint::black_box(records.lookup(src, name, *qt));
        }
    }
    let lookup_us = t.elapsed().as_secs_f64() * 1e6 / n;
    println!("Records::lookup: {lookup_us:.3} us per query (A+PTR mixed)");

    let raw: Vec<Vec<u8>> = (0..NAMES)
        .flat_map(|i| {
            [
                query(1, &format!("n{i}"), 1),
                query(2, &arpa(addr_of(i)), 12),
            ]
        })
        .collect();
    let from = SocketAddr::new(src, 40000);
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for q in &raw {
            std::hint::black_box(Request::from_bytes(q.clone(), from, Protocol::Udp).ok());
        }
    }
    let parse_us = t.elapsed().as_secs_f64() * 1e6 / n;
    println!("hickory Request::from_bytes: {parse_us:.3} us per query");

    let t = Instant::now();
    let table = dns::fast::Table::build(&records);
    println!(
        "fast::Table::build: {:.2} ms ({} answers)",
        t.elapsed().as_secs_f64() * 1e3,
        table.len()
    );
    let (mut key, mut out) = (Vec::new(), Vec::with_capacity(512));
    let t = Instant::now();
    let mut fast = 0usize;
    for _ in 0..ROUNDS {
        for q in &raw {
            fast += usize::from(table.answer(src, q, &mut key, &mut out));
            std::hint::black_box(&out);
        }
    }
    let fast_us = t.elapsed().as_secs_f64() * 1e6 / n;
    assert_eq!(fast as f64, n, "the table answers every query");
    println!("fast::Table::answer: {fast_us:.3} us per query");

    let handler = Handler {
        records: Shared::new(records),
        forward: Arc::new(Forwarder::new(Vec::new())),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let t = Instant::now();
    rt.block_on(async {
        for _ in 0..ROUNDS {
            for q in &raw {
                let Ok(req) = Request::from_bytes(q.clone(), from, Protocol::Udp) else {
                    continue;
                };
                std::hint::black_box(handler.handle_request::<_, TokioTime>(&req, Sink).await);
            }
        }
    });
    let whole_us = t.elapsed().as_secs_f64() * 1e6 / n;
    println!(
        "parse + Handler::handle_request + encode: {whole_us:.3} us per query \
         (lookup {:.0}%)",
        lookup_us / whole_us * 100.0
    );
}
