//! The pure half of knit's DNS: plain data built from the store, and the lookup over it.
//!
//! A requester sees the names of the networks it is attached to, found by its source address
//! (the subnets of each network): a container resolves only names on its networks, and one on
//! several networks resolves the names of each. Names are answered bare (`web`, as Docker's
//! embedded DNS does) and fully qualified (`web.NETWORK.DOMAIN`); every endpoint address has
//! a PTR to its fully qualified name. NXDOMAIN (no such name) and NODATA (the name exists, not
//! with that type) are told apart. A requester outside every knit network is refused: knit is
//! not an open resolver.
//!
//! Services ([`Records::add_services`]) are names like endpoints' (their virtual address, with
//! a PTR back), plus one SRV record per named port: `_http._tcp.NAME.NETWORK.DOMAIN` (and the
//! bare `_http._tcp.NAME`) → `0 100 PORT NAME.NETWORK.DOMAIN`.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;

/// The default domain under which `NAME.NETWORK.DOMAIN` is answered.
pub const DEFAULT_DOMAIN: &str = "knit.internal";
/// The default TTL of knit's answers, in seconds (short: containers come and go).
pub const DEFAULT_TTL: u32 = 5;

/// One network's names.
#[derive(Debug, Default, Clone)]
struct NetNames {
    /// Lowercase network name, a DNS label of the fully qualified names.
    name: String,
    subnets: Vec<IpNet>,
    /// Lowercase endpoint name or alias → its addresses.
    names: HashMap<String, Vec<IpAddr>>,
    /// Address → the fully qualified name of the endpoint holding it.
    ptr: HashMap<IpAddr, Name>,
    /// (`_service`, `_proto`, service name), lowercase → the ports and the target's FQDN.
    srv: HashMap<(String, String, String), Vec<(u16, Name)>>,
}

/// Everything the DNS answers from, built whole on every change of the store and swapped in.
#[derive(Debug, Clone)]
pub struct Records {
    domain: Name,
    ttl: u32,
    nets: Vec<NetNames>,
}

/// What a lookup decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Records of the name and type asked (NOERROR).
    Answer(Vec<Record>),
    /// The name exists but has no record of that type (NOERROR, empty answer).
    NoData,
    /// No such name among the requester's networks.
    NxDomain,
    /// The requester is on no knit network.
    Refused,
    /// Not a name of knit's: forward it upstream, if there is one.
    Forward,
}

/// A DNS label from a knit name: lowercase; names that are no label (dots, spaces) are skipped.
fn label(s: &str) -> Option<String> {
    let l = s.to_ascii_lowercase();
    let ok = !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(l)
}

/// An IPv4-mapped IPv6 requester (a dual-stack socket) is the IPv4 one, as `lookup` takes it.
pub fn normalize(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
        v4 => v4,
    }
}

impl Records {
    /// The records of `networks` and their `endpoints` (name, aliases, addresses).
    pub fn build(
        domain: &str,
        ttl: u32,
        networks: &[(store::Network, Vec<store::Endpoint>)],
    ) -> Records {
        let domain = Name::from_ascii(domain.trim_end_matches('.').to_string() + ".")
            .unwrap_or_else(|_| Name::root())
            .to_lowercase();
        let mut nets = Vec::new();
        for (net, eps) in networks {
            let Some(nl) = label(&net.name) else { continue };
            let mut n = NetNames {
                name: nl.clone(),
                subnets: net.ipam.iter().map(|p| p.subnet).collect(),
                ..Default::default()
            };
            for ep in eps {
                let addrs: Vec<IpAddr> = [ep.ipv4, ep.ipv6]
                    .into_iter()
                    .flatten()
                    .map(|a| a.addr())
                    .collect();
                let mut primary = None;
                for nm in std::iter::once(&ep.name).chain(&ep.aliases) {
                    let Some(l) = label(nm) else { continue };
                    n.names.entry(l.clone()).or_default().extend(&addrs);
                    primary.get_or_insert(l);
                }
                if let Some(l) = primary {
                    if let Ok(fq) =
                        Name::from_ascii(format!("{l}.{nl}")).and_then(|r| r.append_domain(&domain))
                    {
                        for a in &addrs {
                            n.ptr.entry(*a).or_insert_with(|| fq.clone());
                        }
                    }
                }
            }
            nets.push(n);
        }
        Records { domain, ttl, nets }
    }

    /// Adds services: each one's name resolves to its virtual address on its network, the
    /// address has a PTR to `NAME.NETWORK.DOMAIN`, and each named port an SRV record.
    pub fn add_services(&mut self, networks: &[store::Network], services: &[store::Service]) {
        for svc in services {
            let Some(net) = networks.iter().find(|n| n.id == svc.network_id) else {
                continue;
            };
            let (Some(nl), Some(sl)) = (label(&net.name), label(&svc.name)) else {
                continue;
            };
            let Some(n) = self.nets.iter_mut().find(|n| n.name == nl) else {
                continue;
            };
            n.names.entry(sl.clone()).or_default().push(svc.vip);
            let Ok(fq) =
                Name::from_ascii(format!("{sl}.{nl}")).and_then(|r| r.append_domain(&self.domain))
            else {
                continue;
            };
            n.ptr.entry(svc.vip).or_insert_with(|| fq.clone());
            for p in &svc.ports {
                let Some(pn) = p.name.as_deref().and_then(label) else {
                    continue;
                };
                let key = (format!("_{pn}"), format!("_{}", p.proto), sl.clone());
                n.srv.entry(key).or_default().push((p.port, fq.clone()));
            }
        }
    }

    /// The SRV records of `_svc._proto.NAME` on the requester's networks, if it is one.
    fn srv(&self, mine: &[&NetNames], q: &Name, labels: &[String], qtype: RecordType) -> Outcome {
        let key = (labels[0].clone(), labels[1].clone(), labels[2].clone());
        let found: Vec<&(u16, Name)> = mine
            .iter()
            .filter(|n| labels.len() == 3 || n.name == labels[3])
            .filter_map(|n| n.srv.get(&key))
            .flatten()
            .collect();
        if found.is_empty() {
            return Outcome::NxDomain;
        }
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return Outcome::NoData;
        }
        Outcome::Answer(
            found
                .into_iter()
                .map(|(port, target)| {
                    Record::from_rdata(
                        q.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(0, 100, *port, target.clone())),
                    )
                })
                .collect(),
        )
    }

    /// Every subnet of every network: the requester's scope is the set of these holding its
    /// address (what a table of answers built ahead keys its answers by).
    pub fn subnets(&self) -> impl Iterator<Item = &IpNet> {
        self.nets.iter().flat_map(|n| &n.subnets)
    }

    /// The names a requester at `src` has records under, as [`Records::lookup`] takes them:
    /// the endpoint names of its networks bare and fully qualified, and the reverse names of
    /// their addresses. A table of answers built ahead enumerates these with `lookup`; a name
    /// left out is still answered, by the lookup itself.
    pub fn names_for(&self, src: IpAddr) -> Vec<Name> {
        let mut out = Vec::new();
        for n in self.nets_of(normalize(src)) {
            for l in n.names.keys() {
                if let Ok(bare) = Name::from_ascii(format!("{l}.")) {
                    out.push(bare);
                }
                if let Ok(fq) = Name::from_ascii(format!("{l}.{}", n.name))
                    .and_then(|r| r.append_domain(&self.domain))
                {
                    out.push(fq);
                }
            }
            out.extend(n.ptr.keys().map(|a| Name::from(*a)));
            for (svc, proto, name) in n.srv.keys() {
                if let Ok(bare) = Name::from_ascii(format!("{svc}.{proto}.{name}.")) {
                    out.push(bare);
                }
                if let Ok(fq) = Name::from_ascii(format!("{svc}.{proto}.{name}.{}", n.name))
                    .and_then(|r| r.append_domain(&self.domain))
                {
                    out.push(fq);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The networks `src` is on.
    fn nets_of(&self, src: IpAddr) -> Vec<&NetNames> {
        self.nets
            .iter()
            .filter(|n| n.subnets.iter().any(|s| s.contains(&src)))
            .collect()
    }

    /// Answer `qname`/`qtype` for a requester at `src`.
    pub fn lookup(&self, src: IpAddr, qname: &Name, qtype: RecordType) -> Outcome {
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        let mine = self.nets_of(src);
        if mine.is_empty() {
            return Outcome::Refused;
        }
        let q = qname.to_lowercase();
        let fq = if q.is_fqdn() {
            q.clone()
        } else {
            let mut f = q.clone();
            f.set_fqdn(true);
            f
        };
        // PTR of an address on one of the requester's networks.
        if let Ok(net) = fq.parse_arpa_name() {
            let ip = net.addr();
            for n in &mine {
                if let Some(name) = n.ptr.get(&ip) {
                    return match qtype {
                        RecordType::PTR | RecordType::ANY => {
                            Outcome::Answer(vec![Record::from_rdata(
                                q.clone(),
                                self.ttl,
                                RData::PTR(PTR(name.clone())),
                            )])
                        }
                        _ => Outcome::NoData,
                    };
                }
            }
            if mine
                .iter()
                .any(|n| n.subnets.iter().any(|s| s.contains(&ip)))
            {
                return Outcome::NxDomain;
            }
            return Outcome::Forward;
        }
        let labels: Vec<String> = fq
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let addrs: Vec<IpAddr> = if self.domain.zone_of(&fq) {
            // NAME.NETWORK.DOMAIN, or the domain and its networks themselves.
            let extra = labels.len() - usize::from(self.domain.num_labels());
            match extra {
                0 => return Outcome::NoData,
                1 => {
                    return if mine.iter().any(|n| n.name == labels[0]) {
                        Outcome::NoData
                    } else {
                        Outcome::NxDomain
                    };
                }
                2 => mine
                    .iter()
                    .filter(|n| n.name == labels[1])
                    .filter_map(|n| n.names.get(&labels[0]))
                    .flatten()
                    .copied()
                    .collect(),
                // _SERVICE._PROTO.NAME.NETWORK.DOMAIN
                4 => return self.srv(&mine, &q, &labels, qtype),
                _ => return Outcome::NxDomain,
            }
        } else if labels.len() == 3 && labels[0].starts_with('_') && labels[1].starts_with('_') {
            // A bare `_SERVICE._PROTO.NAME`: knit's when NAME is a service of the asker's.
            return match self.srv(&mine, &q, &labels, qtype) {
                Outcome::NxDomain => Outcome::Forward,
                o => o,
            };
        } else if labels.len() == 1 {
            // A bare name, as Docker's embedded DNS answers it.
            let found: Vec<IpAddr> = mine
                .iter()
                .filter_map(|n| n.names.get(&labels[0]))
                .flatten()
                .copied()
                .collect();
            if found.is_empty() {
                return Outcome::Forward;
            }
            found
        } else {
            return Outcome::Forward;
        };
        if addrs.is_empty() {
            return Outcome::NxDomain;
        }
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for a in addrs {
            if !seen.insert(a) {
                continue;
            }
            let rdata = match (a, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                _ => continue,
            };
            out.push(Record::from_rdata(q.clone(), self.ttl, rdata));
        }
        if out.is_empty() {
            Outcome::NoData
        } else {
            Outcome::Answer(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{Driver, Endpoint, Network, Pool};

    fn net(name: &str, subnet: &str, eps: &[(&str, &str, &[&str])]) -> (Network, Vec<Endpoint>) {
        let mut n = Network::new(name, Driver::Bridge);
        n.ipam.push(Pool::new(subnet.parse().unwrap()));
        let eps = eps
            .iter()
            .map(|(name, ip, aliases)| {
                let mut e = Endpoint::new(n.id.clone());
                e.name = name.to_string();
                e.aliases = aliases.iter().map(|a| a.to_string()).collect();
                let ip: IpNet = ip.parse().unwrap();
                if ip.addr().is_ipv4() {
                    e.ipv4 = Some(ip);
                } else {
                    e.ipv6 = Some(ip);
                }
                e
            })
            .collect();
        (n, eps)
    }

    fn records() -> Records {
        Records::build(
            DEFAULT_DOMAIN,
            DEFAULT_TTL,
            &[
                net(
                    "front",
                    "10.1.0.0/24",
                    &[("web", "10.1.0.2/24", &["www"]), ("db", "10.1.0.3/24", &[])],
                ),
                net(
                    "back",
                    "10.2.0.0/24",
                    &[("db", "10.2.0.3/24", &[]), ("cache", "10.2.0.4/24", &[])],
                ),
                net("v6", "fd00::/64", &[("web", "fd00::2/64", &[])]),
            ],
        )
    }

    fn ips(o: &Outcome) -> Vec<String> {
        match o {
            Outcome::Answer(rs) => rs.iter().map(|r| r.data.to_string()).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    fn q(r: &Records, src: &str, name: &str, t: RecordType) -> Outcome {
        r.lookup(src.parse().unwrap(), &Name::from_ascii(name).unwrap(), t)
    }

    #[test]
    fn names_are_scoped_by_the_requesters_networks() {
        let r = records();
        assert_eq!(ips(&q(&r, "10.1.0.9", "web", RecordType::A)), ["10.1.0.2"]);
        assert_eq!(ips(&q(&r, "10.1.0.9", "WWW.", RecordType::A)), ["10.1.0.2"]);
        // cache is on back only: front asks elsewhere (forward), back gets it.
        assert_eq!(q(&r, "10.1.0.9", "cache", RecordType::A), Outcome::Forward);
        assert_eq!(
            ips(&q(&r, "10.2.0.9", "cache", RecordType::A)),
            ["10.2.0.4"]
        );
        // db is on both: each side sees its own.
        assert_eq!(ips(&q(&r, "10.2.0.9", "db", RecordType::A)), ["10.2.0.3"]);
        // Fully qualified: only on the asker's networks.
        assert_eq!(
            ips(&q(&r, "10.1.0.9", "db.front.knit.internal.", RecordType::A)),
            ["10.1.0.3"]
        );
        assert_eq!(
            q(&r, "10.1.0.9", "db.back.knit.internal.", RecordType::A),
            Outcome::NxDomain
        );
        assert_eq!(
            q(&r, "10.1.0.9", "nope.front.knit.internal.", RecordType::A),
            Outcome::NxDomain
        );
        // Outsiders get nothing, and no forwarding either.
        assert_eq!(q(&r, "192.0.2.1", "web", RecordType::A), Outcome::Refused);
        assert_eq!(
            q(&r, "192.0.2.1", "example.org", RecordType::A),
            Outcome::Refused
        );
        assert_eq!(
            q(&r, "10.1.0.9", "example.org", RecordType::A),
            Outcome::Forward
        );
    }

    #[test]
    fn services_have_a_name_a_ptr_and_srv_per_named_port() {
        let (front, eps) = net("front", "10.1.0.0/24", &[("web", "10.1.0.2/24", &[])]);
        let (back, beps) = net("back", "10.2.0.0/24", &[]);
        let mut r = Records::build(
            DEFAULT_DOMAIN,
            DEFAULT_TTL,
            &[(front.clone(), eps), (back.clone(), beps)],
        );
        let mut svc = store::Service::new("api", front.id.clone(), "10.1.0.250".parse().unwrap());
        svc.ports = vec![
            store::ServicePort::parse("80/tcp").unwrap(),
            store::ServicePort::parse("8443/tcp").unwrap(),
            store::ServicePort::parse("dns=53/udp").unwrap(),
        ];
        r.add_services(&[front, back], &[svc]);
        assert_eq!(
            ips(&q(&r, "10.1.0.9", "api", RecordType::A)),
            ["10.1.0.250"]
        );
        assert_eq!(
            ips(&q(
                &r,
                "10.1.0.9",
                "API.front.knit.internal.",
                RecordType::A
            )),
            ["10.1.0.250"]
        );
        assert_eq!(
            ips(&q(
                &r,
                "10.1.0.9",
                "250.0.1.10.in-addr.arpa.",
                RecordType::PTR
            )),
            ["api.front.knit.internal."]
        );
        let srv = "_http._tcp.api.front.knit.internal.";
        assert_eq!(
            ips(&q(&r, "10.1.0.9", srv, RecordType::SRV)),
            ["0 100 80 api.front.knit.internal."]
        );
        assert_eq!(
            ips(&q(&r, "10.1.0.9", "_dns._udp.api", RecordType::SRV)),
            ["0 100 53 api.front.knit.internal."]
        );
        assert_eq!(q(&r, "10.1.0.9", srv, RecordType::A), Outcome::NoData);
        // No IANA name for 8443: no SRV; the wrong protocol; another network's asker.
        assert_eq!(
            q(
                &r,
                "10.1.0.9",
                "_http._udp.api.front.knit.internal.",
                RecordType::SRV
            ),
            Outcome::NxDomain
        );
        assert_eq!(q(&r, "10.2.0.9", srv, RecordType::SRV), Outcome::NxDomain);
        assert_eq!(q(&r, "10.2.0.9", "api", RecordType::A), Outcome::Forward);
        assert_eq!(
            q(&r, "10.1.0.9", "_http._tcp.example", RecordType::SRV),
            Outcome::Forward
        );
    }

    #[test]
    fn nodata_is_not_nxdomain_and_ptr_points_back() {
        let r = records();
        assert_eq!(q(&r, "10.1.0.9", "web", RecordType::AAAA), Outcome::NoData);
        assert_eq!(
            q(&r, "10.1.0.9", "web.front.knit.internal.", RecordType::MX),
            Outcome::NoData
        );
        assert_eq!(
            q(&r, "10.1.0.9", "front.knit.internal.", RecordType::A),
            Outcome::NoData
        );
        assert_eq!(ips(&q(&r, "fd00::9", "web", RecordType::AAAA)), ["fd00::2"]);
        assert_eq!(
            ips(&q(
                &r,
                "10.1.0.9",
                "2.0.1.10.in-addr.arpa.",
                RecordType::PTR
            )),
            ["web.front.knit.internal."]
        );
        // An address of the asker's subnet nobody holds; one of another network.
        assert_eq!(
            q(&r, "10.1.0.9", "77.0.1.10.in-addr.arpa.", RecordType::PTR),
            Outcome::NxDomain
        );
        assert_eq!(
            q(&r, "10.1.0.9", "4.0.2.10.in-addr.arpa.", RecordType::PTR),
            Outcome::Forward
        );
    }
}
