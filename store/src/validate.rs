//! The model's rules as pure functions. Every backend runs them before a write, and the rules
//! that need other records (overlap between networks) take those records as arguments, so the
//! backend calls them inside its write transaction.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::error::ValidationError;
use crate::model::{options, parse_bool, Endpoint, Network, Pool, Sandbox, Service};

/// Longest network or sandbox name. Docker sets none; ours keeps names usable in paths and
/// table output.
pub const MAX_NAME_LEN: usize = 128;
/// Longest id; Docker's are 64 hex characters.
pub const MAX_ID_LEN: usize = 128;

/// Docker's rule for network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, plus no `..` (so a name is
/// always safe as one path component: no `/`, never `.` or `..`) and at most [`MAX_NAME_LEN`].
/// `what` names the object in the error ("network", "sandbox").
pub fn validate_name(what: &'static str, name: &str) -> Result<(), ValidationError> {
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() {
        return Err(ValidationError::NameEmpty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ValidationError::NameTooLong {
            what,
            name: name.to_string(),
            max: MAX_NAME_LEN,
        });
    }
    let chars_ok = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !first_ok || !chars_ok || name.contains("..") {
        return Err(ValidationError::NameChars {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Ids (ours are 64 hex chars, Docker's too): 1..=[`MAX_ID_LEN`] of `[a-zA-Z0-9_.-]`.
pub fn validate_id(what: &'static str, id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::Id {
            what,
            id: id.to_string(),
        })
    }
}

/// One pool on its own: canonical subnet and range, gateway and range inside the subnet.
pub fn validate_pool(pool: &Pool) -> Result<(), ValidationError> {
    let subnet = pool.subnet;
    if subnet.trunc() != subnet {
        return Err(ValidationError::SubnetNotCanonical {
            subnet,
            canonical: subnet.trunc(),
        });
    }
    if let Some(gateway) = pool.gateway {
        if !subnet.contains(&gateway) {
            return Err(ValidationError::GatewayOutsideSubnet { gateway, subnet });
        }
    }
    if let Some(range) = pool.ip_range {
        if range.trunc() != range {
            return Err(ValidationError::RangeNotCanonical {
                range,
                canonical: range.trunc(),
            });
        }
        if !subnet.contains(&range) {
            return Err(ValidationError::RangeOutsideSubnet { range, subnet });
        }
    }
    Ok(())
}

/// Do two subnets share an address? (Of one family; a v4 and a v6 subnet never do.)
pub fn subnets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A network on its own: name, id, each pool, no two pools overlapping, IPv6 pools only with
/// `ipv6`, and Docker's options that knit interprets holding values it can parse.
pub fn validate_network(net: &Network) -> Result<(), ValidationError> {
    validate_id("network", &net.id)?;
    validate_name("network", &net.name)?;
    validate_name("driver", net.driver.as_str())?;
    for (i, pool) in net.ipam.iter().enumerate() {
        validate_pool(pool)?;
        if pool.subnet.addr().is_ipv6() && !net.ipv6 {
            return Err(ValidationError::Ipv6NotEnabled {
                subnet: pool.subnet,
            });
        }
        if let Some(other) = net.ipam[..i]
            .iter()
            .find(|o| subnets_overlap(&o.subnet, &pool.subnet))
        {
            return Err(ValidationError::PoolsOverlap {
                a: other.subnet,
                b: pool.subnet,
            });
        }
    }
    validate_options(&net.options)
}

fn validate_options(opts: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    for (key, value) in opts {
        if let Some(expected) = option_problem(key, value) {
            return Err(ValidationError::Option {
                key: key.to_string(),
                value: value.to_string(),
                expected,
            });
        }
    }
    Ok(())
}

/// What a known option's value should have been, or `None` when it is fine (or unknown: Docker
/// passes unknown options through to the driver, and so do we).
fn option_problem(key: &str, value: &str) -> Option<&'static str> {
    let ok = match key {
        options::BRIDGE_ENABLE_ICC | options::BRIDGE_ENABLE_IP_MASQUERADE | options::INTERNAL => {
            parse_bool(value).is_some()
        }
        options::DRIVER_MTU => matches!(value.parse::<u32>(), Ok(68..=65535)),
        options::BRIDGE_HOST_BINDING_IPV4 => value.parse::<Ipv4Addr>().is_ok(),
        // The kernel's IFNAMSIZ is 16 with the NUL; no '/' or ':', no whitespace, not . or ..
        options::BRIDGE_NAME => {
            !value.is_empty()
                && value.len() < 16
                && value != "."
                && value != ".."
                && value
                    .bytes()
                    .all(|c| c.is_ascii_graphic() && c != b'/' && c != b':')
        }
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match key {
        options::DRIVER_MTU => "an MTU from 68 to 65535",
        options::BRIDGE_HOST_BINDING_IPV4 => "an IPv4 address",
        options::BRIDGE_NAME => "an interface name of 1 to 15 characters",
        _ => "true or false",
    })
}

/// The first subnet of `net` that overlaps one of `existing`'s, as
/// `(new subnet, existing network, its subnet)`. `existing` is every other network in the store.
pub fn find_overlap<'a>(
    net: &Network,
    existing: impl IntoIterator<Item = &'a Network>,
) -> Option<(IpNet, &'a Network, IpNet)> {
    for other in existing {
        if other.id == net.id {
            continue;
        }
        for a in &net.ipam {
            if let Some(b) = other
                .ipam
                .iter()
                .find(|b| subnets_overlap(&a.subnet, &b.subnet))
            {
                return Some((a.subnet, other, b.subnet));
            }
        }
    }
    None
}

/// An endpoint on its own, and against its network: the addresses are of the right family and,
/// when the network has pools of that family, inside one of them.
pub fn validate_endpoint(ep: &Endpoint, net: &Network) -> Result<(), ValidationError> {
    validate_id("endpoint", &ep.id)?;
    if let Some(sb) = &ep.sandbox_id {
        validate_id("sandbox", sb)?;
    }
    if !ep.name.is_empty() {
        validate_name("endpoint", &ep.name)?;
    }
    for (addr, v4) in [(ep.ipv4, true), (ep.ipv6, false)] {
        let Some(addr) = addr else { continue };
        if addr.addr().is_ipv4() != v4 {
            return Err(ValidationError::AddressFamily {
                addr,
                expected: if v4 { 4 } else { 6 },
            });
        }
        let mut same_family = net
            .ipam
            .iter()
            .filter(|p| p.subnet.addr().is_ipv4() == v4)
            .peekable();
        if same_family.peek().is_some() && !same_family.any(|p| p.subnet.contains(&addr.addr())) {
            return Err(ValidationError::AddressOutsidePools {
                addr,
                network: net.name.clone(),
            });
        }
    }
    if ep.ports.iter().any(|p| p.container_port == 0) {
        return Err(ValidationError::ContainerPortZero);
    }
    Ok(())
}

pub fn validate_sandbox(sb: &Sandbox) -> Result<(), ValidationError> {
    validate_id("sandbox", &sb.id)?;
    validate_name("sandbox", &sb.name)
}

/// A DNS label as RFC 1123 allows it in a host name, lower case: `[a-z0-9]([a-z0-9-]*[a-z0-9])?`,
/// at most `max` characters.
fn dns_label(name: &str, max: usize) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A service on its own and against its network: a DNS-label name, at least one port, no port
/// twice, port names fit for SRV (`_NAME._PROTO`, RFC 6335: at most 15 characters), and a
/// virtual address inside one of the network's subnets that is not its network address,
/// broadcast address or gateway.
pub fn validate_service(svc: &Service, net: &Network) -> Result<(), ValidationError> {
    validate_id("service", &svc.id)?;
    if !dns_label(&svc.name, 63) {
        return Err(ValidationError::ServiceName {
            name: svc.name.clone(),
        });
    }
    let service = || svc.name.clone();
    if svc.ports.is_empty() {
        return Err(ValidationError::ServiceNoPorts { service: service() });
    }
    for (i, p) in svc.ports.iter().enumerate() {
        if p.port == 0 || p.target_port == 0 {
            return Err(ValidationError::ServicePortZero { service: service() });
        }
        if svc.ports[..i]
            .iter()
            .any(|q| q.port == p.port && q.proto == p.proto)
        {
            return Err(ValidationError::ServicePortTwice {
                service: service(),
                port: p.port,
                proto: p.proto,
            });
        }
        if let Some(name) = &p.name {
            if !dns_label(name, 15) {
                return Err(ValidationError::ServicePortName {
                    service: service(),
                    name: name.clone(),
                });
            }
        }
    }
    let Some(pool) = net.ipam.iter().find(|p| p.subnet.contains(&svc.vip)) else {
        return Err(ValidationError::VipOutsidePools {
            vip: svc.vip,
            network: net.name.clone(),
        });
    };
    let subnet = pool.subnet;
    let what = if svc.vip == subnet.network() && subnet.prefix_len() < subnet.max_prefix_len() - 1 {
        Some("the network address")
    } else if svc.vip == subnet.broadcast() && subnet.addr().is_ipv4() && subnet.prefix_len() < 31 {
        Some("the broadcast address")
    } else if pool.gateway == Some(svc.vip) {
        Some("the gateway")
    } else {
        None
    };
    match what {
        Some(what) => Err(ValidationError::VipReserved {
            vip: svc.vip,
            what,
            subnet,
        }),
        None => Ok(()),
    }
}

/// The address part of an endpoint's address, the key that must be unique within a network.
pub(crate) fn host_addr(a: &Option<IpNet>) -> Option<IpAddr> {
    a.as_ref().map(IpNet::addr)
}

/// Docker's lookup over `(id, name)` pairs: a full id, else an exact name, else a unique id
/// prefix. `Ok(None)`: nothing matched. (The SQLite store does the same in SQL.)
#[cfg(any(test, feature = "fake", feature = "etcd"))]
pub(crate) fn resolve<'a, T>(
    what: &'static str,
    items: impl Iterator<Item = (&'a str, &'a str, &'a T)> + Clone,
    name_or_id: &str,
) -> Result<Option<&'a T>, crate::error::Error> {
    if name_or_id.is_empty() {
        return Ok(None);
    }
    if let Some((_, _, t)) = items.clone().find(|(id, _, _)| *id == name_or_id) {
        return Ok(Some(t));
    }
    if let Some((_, _, t)) = items.clone().find(|(_, name, _)| *name == name_or_id) {
        return Ok(Some(t));
    }
    let mut prefixed = items.filter(|(id, _, _)| id.starts_with(name_or_id));
    match (prefixed.next(), prefixed.count()) {
        (None, _) => Ok(None),
        (Some((_, _, t)), 0) => Ok(Some(t)),
        (Some(_), more) => Err(crate::error::Error::Ambiguous {
            what,
            prefix: name_or_id.to_string(),
            count: more + 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Driver, PortMap, Proto};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in [
            "a",
            "isolated_nw",
            "N1.b-c_d",
            "0",
            "x".repeat(MAX_NAME_LEN).as_str(),
        ] {
            assert_eq!(validate_name("network", ok), Ok(()), "{ok}");
        }
        for bad in ["-a", "_a", ".a", "a/b", "a..b", "a b", "é", "a\0", "a:b"] {
            assert!(
                matches!(
                    validate_name("network", bad),
                    Err(ValidationError::NameChars { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            validate_name("network", ""),
            Err(ValidationError::NameEmpty { what: "network" })
        );
        assert!(matches!(
            validate_name("network", &"x".repeat(MAX_NAME_LEN + 1)),
            Err(ValidationError::NameTooLong { .. })
        ));
    }

    #[test]
    fn pools() {
        let mut p = Pool::new(net("10.1.0.0/16"));
        p.gateway = Some("10.1.0.1".parse().unwrap());
        p.ip_range = Some(net("10.1.2.0/24"));
        assert_eq!(validate_pool(&p), Ok(()));

        let bad = Pool::new(net("10.1.0.1/16"));
        assert_eq!(
            validate_pool(&bad),
            Err(ValidationError::SubnetNotCanonical {
                subnet: net("10.1.0.1/16"),
                canonical: net("10.1.0.0/16")
            })
        );
        let mut gw = Pool::new(net("10.1.0.0/16"));
        gw.gateway = Some("10.2.0.1".parse().unwrap());
        assert!(matches!(
            validate_pool(&gw),
            Err(ValidationError::GatewayOutsideSubnet { .. })
        ));
        gw.gateway = Some("fd00::1".parse().unwrap());
        assert!(matches!(
            validate_pool(&gw),
            Err(ValidationError::GatewayOutsideSubnet { .. })
        ));
        let mut r = Pool::new(net("10.1.0.0/16"));
        r.ip_range = Some(net("10.0.0.0/8"));
        assert!(matches!(
            validate_pool(&r),
            Err(ValidationError::RangeOutsideSubnet { .. })
        ));
        r.ip_range = Some(net("10.1.3.0/23"));
        assert!(matches!(
            validate_pool(&r),
            Err(ValidationError::RangeNotCanonical { .. })
        ));
        let mut v6 = Pool::new(net("fd00:1::/64"));
        v6.gateway = Some("fd00:1::1".parse().unwrap());
        v6.ip_range = Some(net("fd00:1::/80"));
        assert_eq!(validate_pool(&v6), Ok(()));
    }

    #[test]
    fn overlap() {
        assert!(subnets_overlap(&net("10.0.0.0/8"), &net("10.1.0.0/16")));
        assert!(subnets_overlap(&net("10.1.0.0/16"), &net("10.0.0.0/8")));
        assert!(subnets_overlap(&net("10.1.0.0/16"), &net("10.1.0.0/16")));
        assert!(!subnets_overlap(&net("10.1.0.0/16"), &net("10.2.0.0/16")));
        assert!(!subnets_overlap(&net("10.0.0.0/8"), &net("::/0")));

        let mut a = Network::new("a", Driver::Bridge);
        a.ipam.push(Pool::new(net("10.1.0.0/16")));
        let mut b = Network::new("b", Driver::Bridge);
        b.ipam.push(Pool::new(net("192.168.0.0/24")));
        b.ipam.push(Pool::new(net("10.1.128.0/17")));
        let found = find_overlap(&b, [&a]).map(|(s, n, o)| (s, n.name.clone(), o));
        assert_eq!(
            found,
            Some((net("10.1.128.0/17"), "a".to_string(), net("10.1.0.0/16")))
        );
        // A network never overlaps itself (re-validation of a stored record).
        assert!(find_overlap(&a, [&a]).is_none());
    }

    #[test]
    fn networks() {
        let mut n = Network::new("n", Driver::Bridge);
        n.ipam.push(Pool::new(net("10.1.0.0/16")));
        assert_eq!(validate_network(&n), Ok(()));

        let mut twice = n.clone();
        twice.ipam.push(Pool::new(net("10.1.3.0/24")));
        assert!(matches!(
            validate_network(&twice),
            Err(ValidationError::PoolsOverlap { .. })
        ));

        let mut v6 = n.clone();
        v6.ipam.push(Pool::new(net("fd00::/64")));
        assert!(matches!(
            validate_network(&v6),
            Err(ValidationError::Ipv6NotEnabled { .. })
        ));
        v6.ipv6 = true;
        assert_eq!(validate_network(&v6), Ok(()));

        let mut slash = n.clone();
        slash.name = "../etc".into();
        assert!(validate_network(&slash).is_err());
        let mut id = n.clone();
        id.id = "a/b".into();
        assert!(matches!(
            validate_network(&id),
            Err(ValidationError::Id { .. })
        ));
    }

    #[test]
    fn options_knit_reads_must_parse() {
        let cases = [
            (options::BRIDGE_ENABLE_ICC, "false", true),
            (options::BRIDGE_ENABLE_ICC, "no", false),
            (options::BRIDGE_ENABLE_IP_MASQUERADE, "1", true),
            (options::DRIVER_MTU, "1450", true),
            (options::DRIVER_MTU, "67", false),
            (options::DRIVER_MTU, "big", false),
            (options::BRIDGE_HOST_BINDING_IPV4, "127.0.0.1", true),
            (options::BRIDGE_HOST_BINDING_IPV4, "::1", false),
            (options::BRIDGE_NAME, "knit-br0", true),
            (options::BRIDGE_NAME, "a-very-long-bridge", false),
            (options::BRIDGE_NAME, "a/b", false),
            ("com.example.unknown", "anything", true),
        ];
        for (k, v, ok) in cases {
            let mut n = Network::new("n", Driver::Bridge);
            n.options.insert(k.into(), v.into());
            assert_eq!(validate_network(&n).is_ok(), ok, "{k}={v}");
        }
    }

    #[test]
    fn endpoints() {
        let mut n = Network::new("n", Driver::Bridge);
        n.ipam.push(Pool::new(net("10.1.0.0/16")));
        let mut e = Endpoint::new(n.id.clone());
        e.ipv4 = Some(net("10.1.0.2/16"));
        e.ipv6 = Some(net("fd00::2/64")); // no v6 pool: the address is not checked
        assert_eq!(validate_endpoint(&e, &n), Ok(()));

        e.ipv4 = Some(net("10.2.0.2/16"));
        assert!(matches!(
            validate_endpoint(&e, &n),
            Err(ValidationError::AddressOutsidePools { .. })
        ));
        e.ipv4 = Some(net("fd00::3/64"));
        assert!(matches!(
            validate_endpoint(&e, &n),
            Err(ValidationError::AddressFamily { expected: 4, .. })
        ));
        e.ipv4 = None;
        e.ports.push(PortMap {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: 8080,
            container_port: 0,
        });
        assert_eq!(
            validate_endpoint(&e, &n),
            Err(ValidationError::ContainerPortZero)
        );
    }
}
