//! Pure range math: canonical ranges, containment, overlap and the round-robin candidate walk.
//! Addresses are handled as `u128` so IPv4 and IPv6 share one code path.

use super::IpamError;
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A canonical range: every field filled in and checked (see [`Range::canonicalize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    /// First address handed out, inclusive.
    pub range_start: IpAddr,
    /// Last address handed out, inclusive.
    pub range_end: IpAddr,
    /// Never handed out. Defaults to the subnet's first host address, as in the reference.
    pub gateway: IpAddr,
}

/// The ranges one allocation draws from; each set yields one address per attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

/// A range as written in the config, before defaults are filled in.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawRange {
    pub subnet: Option<IpNet>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// IPv4-mapped IPv6 addresses are IPv4 addresses (the reference's `To4()` canonicalisation).
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Range {
    /// Fill in defaults and check the range, as the reference's `Range.Canonicalize` does:
    /// gateway defaults to network+1, rangeStart to network+1, rangeEnd to the last address
    /// (IPv4: the one before broadcast). `field` prefixes error paths (`ranges[0][1]`).
    pub(crate) fn canonicalize(raw: &RawRange, field: &str) -> Result<Range, IpamError> {
        let at = |f: &str| {
            if field.is_empty() {
                f.to_string()
            } else {
                format!("{field}.{f}")
            }
        };
        let subnet = raw
            .subnet
            .ok_or_else(|| IpamError::config(at("subnet"), "missing"))?;
        let v4 = subnet.addr().is_ipv4();
        if subnet.prefix_len() > subnet.max_prefix_len() - 2 {
            return Err(IpamError::config(
                at("subnet"),
                format!("Network {subnet} too small to allocate from"),
            ));
        }
        if subnet.addr() != subnet.network() {
            return Err(IpamError::config(
                at("subnet"),
                format!(
                    "Network has host bits set. For a subnet mask of length {} the network \
                     address is {}",
                    subnet.prefix_len(),
                    subnet.network()
                ),
            ));
        }
        let family = |name: &str, ip: IpAddr| {
            let ip = canonical_ip(ip);
            if ip.is_ipv4() != v4 {
                Err(IpamError::config(
                    at(name),
                    format!("{ip} is not the same protocol as subnet {subnet}"),
                ))
            } else {
                Ok(ip)
            }
        };
        let net = to_u128(subnet.network());
        let first_host = from_u128(net + 1, v4);
        let gateway = match raw.gateway {
            Some(g) => family("gateway", g)?,
            None => first_host,
        };
        let in_net = |ip: IpAddr| subnet.contains(&ip);
        let end = raw.range_end.map(|e| family("rangeEnd", e)).transpose()?;
        let start = match raw.range_start {
            Some(s) => {
                let s = family("rangeStart", s)?;
                // As the reference: checked against the subnet and an explicit rangeEnd.
                if !in_net(s) || end.is_some_and(|e| to_u128(s) > to_u128(e)) {
                    return Err(IpamError::config(
                        at("rangeStart"),
                        format!("RangeStart {s} not in network {subnet} (or after rangeEnd)"),
                    ));
                }
                s
            }
            None => first_host,
        };
        let end = match end {
            Some(e) => {
                if !in_net(e) || to_u128(e) < to_u128(start) {
                    return Err(IpamError::config(
                        at("rangeEnd"),
                        format!("RangeEnd {e} not in network {subnet} (or before rangeStart)"),
                    ));
                }
                e
            }
            None => last_ip(&subnet),
        };
        if to_u128(start) > to_u128(end) {
            return Err(IpamError::config(
                at("rangeStart"),
                format!("RangeStart {start} is after the default rangeEnd {end}"),
            ));
        }
        let r = Range {
            subnet,
            range_start: start,
            range_end: end,
            gateway,
        };
        Ok(r)
    }

    /// In the subnet and between rangeStart and rangeEnd (inclusive), same family.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        ip.is_ipv4() == self.subnet.addr().is_ipv4()
            && self.subnet.contains(&ip)
            && to_u128(ip) >= to_u128(self.range_start)
            && to_u128(ip) <= to_u128(self.range_end)
    }

    /// The reference's overlap test: either range contains an end of the other.
    pub fn overlaps(&self, o: &Range) -> bool {
        self.range_start.is_ipv4() == o.range_start.is_ipv4()
            && (self.contains(o.range_start)
                || self.contains(o.range_end)
                || o.contains(self.range_start)
                || o.contains(self.range_end))
    }

    /// Addresses that are never handed out even when inside the range: the gateway, the
    /// network address and (IPv4) the broadcast address. The reference only skips the gateway.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        ip == self.gateway
            || ip == self.subnet.network()
            || (ip.is_ipv4() && ip == self.subnet.broadcast())
    }

    /// In the range and not reserved.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        self.contains(ip) && !self.is_reserved(ip)
    }

    fn start(&self) -> u128 {
        to_u128(self.range_start)
    }

    fn end(&self) -> u128 {
        to_u128(self.range_end)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.range_start, self.range_end)
    }
}

/// Last usable address: all host bits set, minus one for IPv4 (the broadcast address).
fn last_ip(subnet: &IpNet) -> IpAddr {
    let b = subnet.broadcast();
    match b {
        IpAddr::V4(_) => from_u128(to_u128(b) - 1, true),
        IpAddr::V6(_) => b,
    }
}

impl RangeSet {
    /// Canonicalise every range; reject an empty set, mixed families and overlaps.
    pub(crate) fn canonicalize(raw: &[RawRange], field: &str) -> Result<RangeSet, IpamError> {
        if raw.is_empty() {
            return Err(IpamError::config(field, "empty range set"));
        }
        let mut out: Vec<Range> = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            // The legacy top-level range has no path of its own (field "").
            let rf = if field.is_empty() {
                String::new()
            } else {
                format!("{field}[{i}]")
            };
            let r = Range::canonicalize(r, &rf)?;
            if let Some(first) = out.first() {
                if first.subnet.addr().is_ipv4() != r.subnet.addr().is_ipv4() {
                    return Err(IpamError::config(
                        format!("{field}[{i}]"),
                        "mixed address families",
                    ));
                }
            }
            if let Some(o) = out.iter().find(|o| o.overlaps(&r)) {
                return Err(IpamError::config(
                    format!("{field}[{i}]"),
                    format!("subnets {o} and {r} overlap"),
                ));
            }
            out.push(r);
        }
        Ok(RangeSet(out))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn overlaps(&self, o: &RangeSet) -> bool {
        self.0.iter().any(|a| o.0.iter().any(|b| a.overlaps(b)))
    }

    /// The family of the set (canonicalised sets are never empty; an empty one says IPv4).
    pub fn is_ipv4(&self) -> bool {
        self.0.first().is_none_or(|r| r.subnet.addr().is_ipv4())
    }

    /// The part of the set inside `block` (e.g. a /26 a host leased from the network's /16):
    /// each range cut to the block, ranges outside it dropped; `None` if nothing is left.
    /// Subnet and gateway stay the network's, so the network's gateway, network and broadcast
    /// addresses are still skipped and the block's own first and last addresses are not.
    pub fn within(&self, block: IpNet) -> Option<RangeSet> {
        let (lo, hi) = (to_u128(block.network()), to_u128(block.broadcast()));
        let v4 = block.addr().is_ipv4();
        let cut: Vec<Range> = self
            .0
            .iter()
            .filter(|r| r.subnet.addr().is_ipv4() == v4)
            .filter_map(|r| {
                let (start, end) = (r.start().max(lo), r.end().min(hi));
                (start <= end).then(|| Range {
                    range_start: from_u128(start, v4),
                    range_end: from_u128(end, v4),
                    ..r.clone()
                })
            })
            .collect();
        (!cut.is_empty()).then_some(RangeSet(cut))
    }

    /// Round-robin walk: every allocatable address of the set exactly once, starting after
    /// `last` when `last` lies in the set (else at the first range's start), wrapping from the
    /// end of one range to the start of the next.
    pub fn candidates(&self, last: Option<IpAddr>) -> Candidates<'_> {
        let first = match last.and_then(|l| self.position(l)) {
            Some(p) => Some(self.advance(p)),
            None => self.0.first().map(|r| (0, r.start())),
        };
        Candidates {
            set: self,
            next: first,
            first: first.unwrap_or_default(),
        }
    }

    fn position(&self, ip: IpAddr) -> Option<(usize, u128)> {
        let ip = canonical_ip(ip);
        self.0
            .iter()
            .position(|r| r.contains(ip))
            .map(|i| (i, to_u128(ip)))
    }

    fn advance(&self, (ri, a): (usize, u128)) -> (usize, u128) {
        if a == self.0[ri].end() {
            let n = (ri + 1) % self.0.len();
            (n, self.0[n].start())
        } else {
            (ri, a + 1)
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Iterator of `(range index, address)` returned by [`RangeSet::candidates`].
pub struct Candidates<'a> {
    set: &'a RangeSet,
    next: Option<(usize, u128)>,
    first: (usize, u128),
}

impl Iterator for Candidates<'_> {
    type Item = (usize, IpAddr);

    fn next(&mut self) -> Option<Self::Item> {
        let v4 = self.set.is_ipv4();
        while let Some(pos) = self.next {
            let after = self.set.advance(pos);
            self.next = (after != self.first).then_some(after);
            let ip = from_u128(pos.1, v4);
            if !self.set.0[pos.0].is_reserved(ip) {
                return Some((pos.0, ip));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn raw(subnet: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>) -> RawRange {
        RawRange {
            subnet: Some(subnet.parse().unwrap()),
            range_start: start.map(ip),
            range_end: end.map(ip),
            gateway: gw.map(ip),
        }
    }

    fn set(ranges: &[RawRange]) -> RangeSet {
        RangeSet::canonicalize(ranges, "ranges[0]").unwrap()
    }

    #[test]
    fn candidates_round_robin_and_wrap() {
        let s = set(&[raw("10.244.0.0/29", None, None, None)]);
        let all: Vec<_> = s.candidates(None).map(|c| c.1.to_string()).collect();
        // .0 network, .1 gateway, .7 broadcast (and default end is .6).
        assert_eq!(
            all,
            [
                "10.244.0.2",
                "10.244.0.3",
                "10.244.0.4",
                "10.244.0.5",
                "10.244.0.6"
            ]
        );
        let from4: Vec<_> = s
            .candidates(Some(ip("10.244.0.4")))
            .map(|c| c.1.to_string())
            .collect();
        assert_eq!(
            from4,
            [
                "10.244.0.5",
                "10.244.0.6",
                "10.244.0.2",
                "10.244.0.3",
                "10.244.0.4"
            ]
        );
        // A last address outside the set restarts at the first range.
        assert_eq!(
            s.candidates(Some(ip("10.9.9.9"))).next().unwrap().1,
            ip("10.244.0.2")
        );
    }

    #[test]
    fn candidates_cross_ranges() {
        let s = set(&[
            raw(
                "10.244.1.0/24",
                Some("10.244.1.10"),
                Some("10.244.1.11"),
                None,
            ),
            raw(
                "10.244.2.0/24",
                Some("10.244.2.1"),
                Some("10.244.2.2"),
                None,
            ),
        ]);
        let from: Vec<_> = s
            .candidates(Some(ip("10.244.1.11")))
            .map(|c| (c.0, c.1.to_string()))
            .collect();
        // 10.244.2.1 is the second range's gateway.
        assert_eq!(
            from,
            [
                (1, "10.244.2.2".into()),
                (0, "10.244.1.10".into()),
                (0, "10.244.1.11".into())
            ]
        );
    }

    #[test]
    fn explicit_network_and_broadcast_are_skipped() {
        let s = set(&[raw(
            "10.244.0.0/30",
            Some("10.244.0.0"),
            Some("10.244.0.3"),
            None,
        )]);
        let all: Vec<_> = s.candidates(None).map(|c| c.1.to_string()).collect();
        assert_eq!(all, ["10.244.0.2"]);
    }

    #[test]
    fn an_empty_set_has_no_candidates() {
        // Only a hand-built set can be empty (the field is public): walking it must not panic.
        let empty = RangeSet(Vec::new());
        assert_eq!(empty.candidates(None).count(), 0);
        assert_eq!(empty.candidates(Some(ip("10.0.0.1"))).count(), 0);
        assert!(!empty.contains(ip("10.0.0.1")));
    }

    #[test]
    fn ipv6_defaults_include_last_address() {
        let s = set(&[raw("fd00:6b6e::/126", None, None, None)]);
        let all: Vec<_> = s.candidates(None).map(|c| c.1.to_string()).collect();
        assert_eq!(all, ["fd00:6b6e::2", "fd00:6b6e::3"]);
        assert_eq!(s.to_string(), "fd00:6b6e::1-fd00:6b6e::3");
    }

    fn walk(s: &RangeSet, last: Option<&str>) -> Vec<String> {
        s.candidates(last.map(ip))
            .map(|c| c.1.to_string())
            .collect()
    }

    #[test]
    fn a_block_keeps_the_network_rules_not_its_own() {
        let s = set(&[raw("10.244.0.0/16", None, None, None)]);
        // A block in the middle: its own .64 and .127 are ordinary host addresses.
        let b = s.within("10.244.3.64/26".parse().unwrap()).unwrap();
        let all = walk(&b, None);
        assert_eq!(all.len(), 64);
        assert_eq!(all[0], "10.244.3.64");
        assert_eq!(all[63], "10.244.3.127");
        assert_eq!(b.to_string(), "10.244.3.64-10.244.3.127");
        assert_eq!(b.0[0].subnet, s.0[0].subnet, "prefix stays the network's");
        // The first block holds the network address and the gateway; the last the broadcast.
        let first = walk(&s.within("10.244.0.0/26".parse().unwrap()).unwrap(), None);
        assert_eq!((first.len(), first[0].as_str()), (62, "10.244.0.2"));
        let last = walk(
            &s.within("10.244.255.192/26".parse().unwrap()).unwrap(),
            None,
        );
        assert_eq!(last.len(), 63);
        assert_eq!(last.last().unwrap(), "10.244.255.254");
        // Round robin inside the block; a last address outside it starts at the block.
        assert_eq!(walk(&b, Some("10.244.3.100"))[0], "10.244.3.101");
        assert_eq!(walk(&b, Some("10.244.3.127"))[0], "10.244.3.64");
        assert_eq!(walk(&b, Some("10.244.9.9"))[0], "10.244.3.64");
    }

    #[test]
    fn a_block_outside_the_set_or_its_family_is_none() {
        let s = set(&[raw(
            "10.244.0.0/16",
            Some("10.244.0.10"),
            Some("10.244.0.200"),
            None,
        )]);
        assert!(s.within("10.245.0.0/26".parse().unwrap()).is_none());
        assert!(s.within("10.244.1.0/26".parse().unwrap()).is_none());
        assert!(s.within("fd00::/64".parse().unwrap()).is_none());
        // A block over the range's edge keeps only the range's part.
        let b = s.within("10.244.0.192/26".parse().unwrap()).unwrap();
        assert_eq!(b.to_string(), "10.244.0.192-10.244.0.200");
        // Several ranges: each cut, the ones outside dropped.
        let two = set(&[
            raw("10.244.1.0/24", None, None, None),
            raw("10.244.2.0/24", None, None, None),
        ]);
        let b = two.within("10.244.2.0/25".parse().unwrap()).unwrap();
        assert_eq!(b.0.len(), 1);
        assert_eq!(b.0[0].gateway, ip("10.244.2.1"));
        assert_eq!(walk(&b, None)[0], "10.244.2.2");
        let v6 = set(&[raw("fd00:6b6e::/64", None, None, None)]);
        let b = v6.within("fd00:6b6e::ff00/120".parse().unwrap()).unwrap();
        assert_eq!(walk(&b, None).len(), 256);
    }

    fn arb_range() -> impl Strategy<Value = (RawRange, u32)> {
        (
            22u8..=30,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
        )
            .prop_map(|(plen, a, b, g, with_gw)| {
                let size = 1u32 << (32 - plen);
                let net = u32::from(Ipv4Addr::new(10, 244, 0, 0));
                let (mut lo, mut hi) = (a % size, b % size);
                if lo > hi {
                    std::mem::swap(&mut lo, &mut hi);
                }
                let at = |o: u32| IpAddr::V4(Ipv4Addr::from(net + o));
                let r = RawRange {
                    subnet: Some(IpNet::new(at(0), plen).unwrap()),
                    range_start: Some(at(lo)),
                    range_end: Some(at(hi)),
                    gateway: with_gw.then(|| at(g % size)),
                };
                (r, hi - lo + 1)
            })
    }

    proptest! {
        /// Walking a block yields exactly the full set's candidates that lie in the block.
        #[test]
        fn a_block_walks_the_sets_candidates_inside_it(
            (r, _) in arb_range(), plen in 24u8..=32, off in any::<u32>(), last in any::<u32>()
        ) {
            let s = set(&[r]);
            let net = u32::from(Ipv4Addr::new(10, 244, 0, 0));
            let block = IpNet::new(IpAddr::V4(Ipv4Addr::from(net + off % 1024)), plen).unwrap().trunc();
            let last = Some(IpAddr::V4(Ipv4Addr::from(net + last % 1024)));
            let mut want: Vec<IpAddr> =
                s.candidates(None).map(|c| c.1).filter(|a| block.contains(a)).collect();
            want.sort();
            match s.within(block) {
                None => prop_assert!(want.is_empty()),
                Some(b) => {
                    let mut got: Vec<IpAddr> = b.candidates(last).map(|c| c.1).collect();
                    got.sort();
                    prop_assert_eq!(got, want);
                }
            }
        }

        #[test]
        fn candidates_cover_allocatable_exactly_once((r, n) in arb_range(), last in any::<u32>()) {
            let s = set(&[r]);
            let range = &s.0[0];
            let last = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + last % 1024));
            let got: Vec<IpAddr> = s.candidates(Some(last)).map(|c| c.1).collect();
            let mut uniq = got.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(uniq.len(), got.len());
            for a in &got {
                prop_assert!(range.contains(*a));
                prop_assert!(*a != range.gateway && *a != range.subnet.network());
                prop_assert!(*a != range.subnet.broadcast());
            }
            let reserved = [range.gateway, range.subnet.network(), range.subnet.broadcast()];
            let mut r = reserved.to_vec();
            r.sort();
            r.dedup();
            let inside = r.iter().filter(|a| range.contains(**a)).count() as u32;
            prop_assert_eq!(got.len() as u32, n - inside);
        }
    }
}
