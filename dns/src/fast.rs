//! The fast path for knit's own names: every answer the records can give is built once per
//! change of the records, in wire format, and a query is answered by copying one.
//!
//! Where the time went: on hickory-server's UDP path one answer to a local name cost, besides the
//! two syscalls, a tokio task spawned per request, the full parse of the request into a
//! `MessageRequest` (owned names, a `Vec` of queries, the raw bytes copied twice), the lookup
//! (lowercasing the name, a `Vec` of the requester's networks, the labels as `String`s,
//! `Record`s cloned), the encoding with name compression (a `Vec` of candidate labels per
//! message), and a channel hop to the task that owns the socket. knit answered 0.77–0.89× unbound
//! per CPU-second; a plain recv → handle → send loop still spent the parse, lookup and encode
//! per query and reached 0.95×.
//!
//! What this changes: [`Table::build`] asks [`Records::lookup`] — the same pure lookup the
//! hickory handler asks, through the same response builder
//! ([`crate::server::local_response`]) — for every name the records know
//! ([`Records::names_for`]), every type of [`TYPES`] and every scope of requesters (the set of
//! subnets holding its address: the lookup depends on the requester through that set only), and
//! keeps each answer it decides (records, NODATA, NXDOMAIN) as the bytes hickory sends. A query
//! then costs a scan of the header and question (no allocation), one hash lookup by (scope,
//! qtype, lowercased name), and a copy with the id, the RD and CD bits and the question's exact
//! bytes (its 0x20 case) patched in, plus an OPT record when the query had one. Everything else
//! — forwarded names, outsiders (REFUSED), malformed or unusual packets (several questions,
//! EDNS options or versions, other classes), answers over 512 bytes — goes to the hickory
//! handler unchanged (see [`crate::udp`]). On a change the new records come in with an empty
//! table (the hickory handler answers from them at once: a registration is not held up by the
//! build) and their table follows when built ([`crate::server::Shared::set_table`]): the
//! table never answers from other records than those in force.
//!
//! Measured (`knit-bench --cases dns`, 1,000 names, A+PTR, server pinned to one core, 3 runs
//! alternating with a build on hickory's own UDP loop, this 2-core VM shared with other
//! builds): knit/unbound answers per CPU-second 1.13–1.23 (hickory's loop: 0.80–0.81), knit
//! 163k–180k answers per CPU-second against unbound's 130k–152k; QPS 1.02–1.32× unbound
//! (dnsperf, not the server, is the limit there: the server ran at 31–83 % of its core).
//! The same loop with one datagram per syscall instead of batches of [`crate::udp::BATCH`]:
//! 0.97–1.01× per CPU-second. In process (`cargo run --release -p dns --example
//! lookup_cost`): 0.07 µs per answer from the table against 1.0 µs for hickory's parse, the
//! handler and the encoding; the table of 1,000 names (12,000 answers) builds in 16–24 ms.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::{MessageType, Metadata, OpCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::zone_handler::Queries;

use crate::records::{normalize, Records};

/// The query types answered ahead of time (others go to the lookup itself).
pub const TYPES: [RecordType; 4] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::PTR,
    RecordType::SRV,
];

/// The largest answer sent from the table: the size every UDP requester accepts (RFC 1035
/// 4.2.1), so no answer from the table ever needs truncation.
pub const MAX_ANSWER: usize = 512;

/// DNS header length.
const HEADER: usize = 12;
/// The OPT record the answer carries when the query had one: root name, type 41, the payload
/// size (patched), extended RCODE 0, version 0, no flags (knit does no DNSSEC: DO clear), no
/// options.
const OPT: [u8; 11] = [0, 0, 41, 0, 0, 0, 0, 0, 0, 0, 0];

/// Answers by (scope, qtype, lowercased qname in wire format), built ahead from [`Records`].
#[derive(Debug, Default)]
pub struct Table {
    /// Where the scope changes in the IPv4 space: (first address, scope), sorted; scope 0 is
    /// "on no knit network".
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u32)>,
    /// key: scope (4 bytes BE), qtype (2), name (wire, lowercase) → the answer to a query with
    /// id 0, RD and CD clear, no EDNS, and that name in lowercase.
    answers: HashMap<Box<[u8]>, Box<[u8]>>,
}

/// Breakpoints of a set of address ranges: where the set of ranges holding an address changes,
/// with that set (as indices into `ranges`) at each.
fn pieces<T: Copy + Ord + Default>(
    ranges: &[(T, T)],
    next: impl Fn(T) -> Option<T>,
) -> Vec<(T, Vec<usize>)> {
    let mut points: Vec<T> = vec![T::default()];
    for &(lo, hi) in ranges {
        points.push(lo);
        points.extend(next(hi));
    }
    points.sort();
    points.dedup();
    points
        .into_iter()
        .map(|p| {
            let holding = ranges
                .iter()
                .enumerate()
                .filter(|(_, &(lo, hi))| lo <= p && p <= hi)
                .map(|(i, _)| i)
                .collect();
            (p, holding)
        })
        .collect()
}

/// The key of the answers map, in `buf`: scope, qtype, name.
fn key(buf: &mut Vec<u8>, scope: u32, qtype: u16, name: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&scope.to_be_bytes());
    buf.extend_from_slice(&qtype.to_be_bytes());
    buf.extend_from_slice(name);
}

/// A query the table may answer: its parts, as found by [`parse`].
#[derive(Debug, PartialEq, Eq)]
struct Query {
    /// End of the question (name, type, class) in the packet.
    question_end: usize,
    qtype: u16,
    /// The UDP payload size of the query's OPT record, if it had one.
    edns_payload: Option<u16>,
}

/// The header and question of `p`, appending the lowercased name (wire format) to `name`; None
/// for anything the table does not answer (the hickory path then does).
fn parse(p: &[u8], name: &mut Vec<u8>) -> Option<Query> {
    let h = p.get(..HEADER)?;
    // QR clear (a query), OPCODE 0 (QUERY); Z and RCODE clear.
    if h[2] & 0xf8 != 0 || h[3] & 0x4f != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let additionals = count(10);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || additionals > 1 {
        return None;
    }
    let start = name.len();
    let mut i = HEADER;
    loop {
        let len = usize::from(*p.get(i)?);
        // Compression pointers and extended label types are left to hickory.
        if len > 63 {
            return None;
        }
        name.push(len as u8);
        if len == 0 {
            i += 1;
            break;
        }
        let label = p.get(i + 1..i + 1 + len)?;
        name.extend(label.iter().map(u8::to_ascii_lowercase));
        if name.len() - start > 255 {
            return None;
        }
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*p.get(i + 2)?, *p.get(i + 3)?]);
    if qclass != 1 {
        return None;
    }
    let question_end = i + 4;
    let edns_payload = if additionals == 1 {
        // Exactly one OPT record, EDNS version 0, no options, ending the packet.
        let o = p.get(question_end..)?;
        if o.len() != OPT.len() || o[0] != 0 || o[1..3] != [0, 41] || o[6] != 0 || o[9..] != [0, 0]
        {
            return None;
        }
        Some(u16::from_be_bytes([o[3], o[4]]))
    } else {
        if p.len() != question_end {
            return None;
        }
        None
    };
    Some(Query {
        question_end,
        qtype,
        edns_payload,
    })
}

impl Table {
    /// Every answer of `records` the table can hold, each built by the hickory handler's own
    /// lookup and response builder.
    pub fn build(records: &Records) -> Table {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for s in records.subnets() {
            match (s.network(), s.broadcast()) {
                (IpAddr::V4(lo), IpAddr::V4(hi)) => v4.push((u32::from(lo), u32::from(hi))),
                (IpAddr::V6(lo), IpAddr::V6(hi)) => v6.push((u128::from(lo), u128::from(hi))),
                _ => {}
            }
        }
        let mut t = Table::default();
        let mut scopes: HashMap<(bool, Vec<usize>), u32> = HashMap::new();
        // Each distinct scope once: its answers, asked from an address in it.
        let mut reps: Vec<(u32, IpAddr)> = Vec::new();
        let mut intern = |v6: bool, holding: Vec<usize>, rep: IpAddr| -> u32 {
            if holding.is_empty() {
                return 0;
            }
            let n = scopes.len() as u32 + 1;
            *scopes.entry((v6, holding)).or_insert_with(|| {
                reps.push((n, rep));
                n
            })
        };
        for (p, holding) in pieces(&v4, |hi: u32| hi.checked_add(1)) {
            let s = intern(false, holding, IpAddr::from(p.to_be_bytes()));
            t.v4.push((p, s));
        }
        for (p, holding) in pieces(&v6, |hi: u128| hi.checked_add(1)) {
            let rep = std::net::Ipv6Addr::from(p);
            // An IPv4-mapped address would be looked up as the IPv4 one: such a piece is left
            // to the lookup itself (mapped requesters are looked up in the IPv4 pieces).
            let s = match rep.to_ipv4_mapped() {
                Some(_) => 0,
                None => intern(true, holding, IpAddr::V6(rep)),
            };
            t.v6.push((p, s));
        }
        let mut k = Vec::new();
        for (scope, rep) in reps {
            for name in records.names_for(rep) {
                let Ok(mut wire) = name.to_bytes() else {
                    continue;
                };
                wire.make_ascii_lowercase();
                for qtype in TYPES {
                    let Some(answer) = answer_of(records, rep, &name, &wire, qtype) else {
                        continue;
                    };
                    key(&mut k, scope, u16::from(qtype), &wire);
                    t.answers
                        .insert(k.as_slice().into(), answer.into_boxed_slice());
                }
            }
        }
        t
    }

    /// How many answers the table holds.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The scope of a requester: 0 when it is on no knit network.
    fn scope(&self, src: IpAddr) -> u32 {
        fn find<T: Ord + Copy>(v: &[(T, u32)], a: T) -> u32 {
            match v.partition_point(|&(p, _)| p <= a) {
                0 => 0,
                i => v[i - 1].1,
            }
        }
        match normalize(src) {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// The answer to `packet` from `src`, written to `out`, if the table has it; `key` is
    /// scratch space (no allocation once it has grown).
    pub fn answer(&self, src: IpAddr, p: &[u8], key: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
        let scope = self.scope(src);
        if scope == 0 {
            return false;
        }
        // The key in place: scope, qtype (patched once parsed), the lowercased name.
        key.clear();
        key.extend_from_slice(&scope.to_be_bytes());
        key.extend_from_slice(&[0, 0]);
        let Some(q) = parse(p, key) else { return false };
        key[4..6].copy_from_slice(&q.qtype.to_be_bytes());
        let Some(t) = self.answers.get(key.as_slice()) else {
            return false;
        };
        let opt = if q.edns_payload.is_some() {
            OPT.len()
        } else {
            0
        };
        if t.len() + opt > MAX_ANSWER || t.len() < q.question_end {
            return false;
        }
        out.clear();
        out.extend_from_slice(t);
        out[..2].copy_from_slice(&p[..2]);
        out[2] |= p[2] & 0x01; // RD
        out[3] |= p[3] & 0x10; // CD
        out[HEADER..q.question_end].copy_from_slice(&p[HEADER..q.question_end]);
        if let Some(payload) = q.edns_payload {
            let arcount = u16::from_be_bytes([out[10], out[11]]) + 1;
            out[10..12].copy_from_slice(&arcount.to_be_bytes());
            out.extend_from_slice(&OPT);
            let n = out.len();
            out[n - 8..n - 6].copy_from_slice(&payload.max(512).to_be_bytes());
        }
        true
    }
}

/// The wire answer the hickory handler sends to a query for `name`/`qtype` (id 0, no flags, no
/// EDNS) from `src`, when the lookup answers it from the records and it fits [`MAX_ANSWER`].
fn answer_of(
    records: &Records,
    src: IpAddr,
    name: &Name,
    wire: &[u8],
    qtype: RecordType,
) -> Option<Vec<u8>> {
    let outcome = records.lookup(src, name, qtype);
    let mut question = wire.to_vec();
    question.extend_from_slice(&u16::from(qtype).to_be_bytes());
    question.extend_from_slice(&[0, 1]);
    let queries = Queries::read(&mut BinDecoder::new(&question), 1).ok()?;
    let meta = Metadata::new(0, MessageType::Query, OpCode::Query);
    let response = crate::server::local_response(&queries, &meta, None, &outcome)?;
    let mut buf = Vec::with_capacity(MAX_ANSWER);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_max_size(MAX_ANSWER as u16);
    let info = response.destructive_emit(&mut enc).ok()?;
    (!info.truncation && buf.len() <= MAX_ANSWER).then_some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_nested_and_disjoint_subnets() {
        // 10..=19 holds 12..=13; 30..=39 apart.
        let p = pieces(&[(10u32, 19), (12, 13), (30, 39)], |h| h.checked_add(1));
        let got: Vec<(u32, Vec<usize>)> = p;
        assert_eq!(
            got,
            vec![
                (0, vec![]),
                (10, vec![0]),
                (12, vec![0, 1]),
                (14, vec![0]),
                (20, vec![]),
                (30, vec![2]),
                (40, vec![]),
            ]
        );
        // A range reaching the top of the space has no end point.
        let top = pieces(&[(250u8, 255)], |h| h.checked_add(1));
        assert_eq!(top, vec![(0, vec![]), (250, vec![0])]);
    }

    #[test]
    fn no_scope_is_asked_from_an_ipv4_mapped_address() {
        // A network on the IPv4-mapped range: the lookup would see its requesters as IPv4.
        let mut n = store::Network::new("mapped", store::Driver::Bridge);
        n.ipam
            .push(store::Pool::new("::ffff:0:0/96".parse().unwrap()));
        n.ipam.push(store::Pool::new("fd00::/64".parse().unwrap()));
        let mut e = store::Endpoint::new(n.id.clone());
        e.name = "web".into();
        e.ipv6 = Some("fd00::2/64".parse().unwrap());
        let r = Records::build(crate::DEFAULT_DOMAIN, 5, &[(n, vec![e])]);
        let t = Table::build(&r);
        let mapped = u128::from("::ffff:0:0".parse::<std::net::Ipv6Addr>().unwrap());
        assert!(t.v6.contains(&(mapped, 0)));
        assert_eq!(t.scope("::ffff:10.0.0.1".parse().unwrap()), 0);
        assert_ne!(t.scope("fd00::9".parse().unwrap()), 0);
        assert!(!t.is_empty());
    }

    #[test]
    fn parse_takes_plain_queries_and_leaves_the_rest() {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x03WeB\x00\x00\x01\x00\x01");
        let mut name = Vec::new();
        let got = parse(&q, &mut name).unwrap();
        assert_eq!(name, b"\x03web\x00");
        assert_eq!(got.qtype, 1);
        assert_eq!(got.question_end, q.len());
        assert_eq!(got.edns_payload, None);
        // With an OPT record of version 0 and no options.
        let mut e = q.clone();
        e[11] = 1;
        e.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0, 0, 0]);
        assert_eq!(parse(&e, &mut name).unwrap().edns_payload, Some(4096));
        // Left to hickory: trailing bytes, EDNS version 1, a response, two questions, a
        // compression pointer, class CH.
        let mut t = q.clone();
        t.push(0);
        assert!(parse(&t, &mut name).is_none());
        let mut v = e.clone();
        v[q.len() + 6] = 1;
        assert!(parse(&v, &mut name).is_none());
        let mut r = q.clone();
        r[2] |= 0x80;
        assert!(parse(&r, &mut name).is_none());
        let mut two = q.clone();
        two[5] = 2;
        assert!(parse(&two, &mut name).is_none());
        let mut ptr = q[..12].to_vec();
        ptr.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse(&ptr, &mut name).is_none());
        let mut ch = q.clone();
        let n = ch.len();
        ch[n - 1] = 3;
        assert!(parse(&ch, &mut name).is_none());
    }
}
