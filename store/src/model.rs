//! The network model as plain data: networks, endpoints and sandboxes, shaped like Docker's
//! (libnetwork) so that `knit network inspect` and the Docker plugin translate field by field.
//!
//! Nothing here has effects except [`new_id`] (reads the kernel's random pool) and [`now_rfc3339`]
//! (reads the clock). The store keeps each record whole as JSON, so a field added later must be
//! `#[serde(default)]` for records written by an older knit to keep loading.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Docker's option names, kept verbatim so `-o KEY=VALUE` means the same to knit and to Docker.
pub mod options {
    /// The Linux bridge's name (default: derived from the network id).
    pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
    /// `true|false`: may endpoints of one network talk to each other (default true).
    pub const BRIDGE_ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
    /// `true|false`: masquerade traffic leaving the host (default true).
    pub const BRIDGE_ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
    /// The host address that `-p` binds to when a mapping names none (default 0.0.0.0).
    pub const BRIDGE_HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
    /// The MTU of the bridge and of every veth on it.
    pub const DRIVER_MTU: &str = "com.docker.network.driver.mtu";
    /// Docker's `--internal` as an option name; the model keeps it as [`super::Network::internal`].
    pub const INTERNAL: &str = "internal";
}

/// A network: an L2 domain (bridge, macvlan) or a namespace policy (null, host) with its pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 lowercase hex characters, random ([`new_id`]); looked up by full id or unique prefix.
    pub id: String,
    /// Unique among networks; [`crate::validate::validate_name`] gives the rule.
    pub name: String,
    pub driver: Driver,
    /// Address pools, at most one per subnet; v4 and v6 may both be present (dual stack).
    #[serde(default)]
    pub ipam: Vec<Pool>,
    /// Docker's `EnableIPv6`: an IPv6 pool is only accepted when this is set.
    #[serde(default)]
    pub ipv6: bool,
    /// No route out of the network (`--internal`).
    #[serde(default)]
    pub internal: bool,
    /// Driver options under Docker's names ([`options`]); unknown keys are kept for the driver.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 in UTC with nanoseconds, as Docker prints `Created`.
    pub created: String,
}

impl Network {
    /// A network with a fresh random id, created now, no pools, options or labels.
    pub fn new(name: impl Into<String>, driver: Driver) -> Network {
        Network {
            id: new_id(),
            name: name.into(),
            driver,
            ipam: Vec::new(),
            ipv6: false,
            internal: false,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            created: now_rfc3339(),
        }
    }

    /// A boolean option under Docker's name (`enable_icc`, …), or `default` when unset.
    /// Values are checked by validation, so an unparsable one here can only come from a record
    /// written by hand; it counts as unset.
    pub fn option_bool(&self, key: &str, default: bool) -> bool {
        self.options
            .get(key)
            .and_then(|v| parse_bool(v))
            .unwrap_or(default)
    }

    /// The MTU option ([`options::DRIVER_MTU`]), if set.
    pub fn mtu(&self) -> Option<u32> {
        self.options
            .get(options::DRIVER_MTU)
            .and_then(|v| v.parse().ok())
    }
}

/// Docker accepts the same spellings for boolean options as Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One address pool of a network (Docker's `IPAM.Config[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Canonical (host bits zero), e.g. `10.88.0.0/16`.
    pub subnet: IpNet,
    /// Inside `subnet`; `None` lets the IPAM pick (the first host address).
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Canonical and inside `subnet`: addresses are handed out from here only.
    #[serde(default)]
    pub ip_range: Option<IpNet>,
}

impl Pool {
    pub fn new(subnet: IpNet) -> Pool {
        Pool {
            subnet,
            gateway: None,
            ip_range: None,
        }
    }
}

/// The driver of a network. Stored and printed as its Docker name (`bridge`, `macvlan`, …);
/// a name knit does not know is kept as [`Driver::Other`] so a newer knit's records still load.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Driver {
    Bridge,
    Macvlan,
    /// `--net=none`: loopback only.
    Null,
    /// The host's own namespace.
    Host,
    Overlay,
    Other(String),
}

impl Driver {
    pub fn as_str(&self) -> &str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Macvlan => "macvlan",
            Driver::Null => "null",
            Driver::Host => "host",
            Driver::Overlay => "overlay",
            Driver::Other(s) => s,
        }
    }
}

impl From<String> for Driver {
    fn from(s: String) -> Driver {
        match s.as_str() {
            "bridge" => Driver::Bridge,
            "macvlan" => Driver::Macvlan,
            "null" => Driver::Null,
            "host" => Driver::Host,
            "overlay" => Driver::Overlay,
            _ => Driver::Other(s),
        }
    }
}

impl From<Driver> for String {
    fn from(d: Driver) -> String {
        d.as_str().to_string()
    }
}

impl FromStr for Driver {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Driver, Self::Err> {
        Ok(Driver::from(s.to_string()))
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network attachment: one interface of a sandbox on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Unique among endpoints; knit makes 64 hex chars ([`new_id`]), Docker sends its own.
    pub id: String,
    /// The full id of an existing network.
    pub network_id: String,
    /// The sandbox it is joined to. `None` between Docker's `CreateEndpoint` and `Join`, and
    /// free-form for Docker's sandboxes, which are not knit's records.
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// The container's name on this network (DNS); unique within the network when not empty.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The interface name inside the sandbox (`eth0`).
    #[serde(default)]
    pub ifname: String,
    /// `aa:bb:cc:dd:ee:ff`, empty when unknown yet.
    #[serde(default)]
    pub mac: String,
    /// The address with the subnet's prefix length, e.g. `10.88.0.2/16`; unique in the network.
    #[serde(default)]
    pub ipv4: Option<IpNet>,
    #[serde(default)]
    pub ipv6: Option<IpNet>,
    #[serde(default)]
    pub ports: Vec<PortMap>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The host whose agent attached it (a cluster on etcd); empty on a single host, and then
    /// not written, so single-host records stay as they were.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

impl Endpoint {
    /// An endpoint with a fresh random id on `network_id`, nothing else set.
    pub fn new(network_id: impl Into<String>) -> Endpoint {
        Endpoint {
            id: new_id(),
            network_id: network_id.into(),
            sandbox_id: None,
            name: String::new(),
            aliases: Vec::new(),
            ifname: String::new(),
            mac: String::new(),
            ipv4: None,
            ipv6: None,
            ports: Vec::new(),
            labels: BTreeMap::new(),
            host: String::new(),
        }
    }
}

/// A port mapping (`-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub proto: Proto,
    /// `None`: the network's `host_binding_ipv4`, else every address.
    #[serde(default)]
    pub host_ip: Option<IpAddr>,
    /// 0 asks for any free port (Docker's `-p 80`).
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(format!("unknown protocol {s:?}: tcp, udp or sctp")),
        }
    }
}

/// A named network namespace that endpoints join (`knit run`'s container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// 64 hex chars ([`new_id`]); looked up by full id or unique prefix.
    pub id: String,
    /// Unique among sandboxes; same rule as network names.
    pub name: String,
    /// The namespace's bind mount, e.g. `/run/knit/netns/NAME`.
    pub netns: PathBuf,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra DNS names of the sandbox's endpoints (`knit run --alias`), besides its name.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// RFC 3339 in UTC with nanoseconds.
    pub created: String,
}

impl Sandbox {
    /// A sandbox with a fresh random id, created now.
    pub fn new(name: impl Into<String>, netns: impl Into<PathBuf>) -> Sandbox {
        Sandbox {
            id: new_id(),
            name: name.into(),
            netns: netns.into(),
            labels: BTreeMap::new(),
            aliases: Vec::new(),
            created: now_rfc3339(),
        }
    }
}

/// 64 lowercase hex characters from the kernel's random pool, as Docker's ids.
///
/// `/dev/urandom` never blocks once the pool is initialised and cannot fail short on Linux; if
/// it cannot be opened at all (a broken chroot), the time and pid stand in: ids must be unique,
/// not secret, and the store refuses a duplicate id anyway.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf[..16].copy_from_slice(&nanos.to_le_bytes());
        buf[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The current time as RFC 3339 in UTC with nanoseconds (`2026-12-05T11:42:37.123456789Z`).
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_nanos())
}

/// Unix seconds + nanoseconds as RFC 3339 UTC (the civil-from-days algorithm of H. Hinnant).
pub(crate) fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56
        assert_eq!(rfc3339(951_827_696, 5), "2000-02-29T12:34:56.000000005Z");
        assert_eq!(rfc3339(1_796_470_957, 0), "2026-12-05T11:42:37.000000000Z");
        assert_eq!(rfc3339(4_107_542_399, 0), "2100-02-28T23:59:59.000000000Z");
        assert_eq!(rfc3339(4_107_542_400, 0), "2100-03-01T00:00:00.000000000Z");
    }

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn driver_round_trips_as_its_docker_name() {
        for (d, s) in [
            (Driver::Bridge, "\"bridge\""),
            (Driver::Null, "\"null\""),
            (Driver::Other("ipvlan".into()), "\"ipvlan\""),
        ] {
            assert_eq!(serde_json::to_string(&d).unwrap(), s);
            assert_eq!(serde_json::from_str::<Driver>(s).unwrap(), d);
        }
        assert_eq!("macvlan".parse::<Driver>().unwrap(), Driver::Macvlan);
    }

    #[test]
    fn records_written_with_only_required_fields_load() {
        let n: Network = serde_json::from_str(
            r#"{"id":"ab","name":"n","driver":"bridge","created":"1970-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(n.ipam.is_empty() && !n.ipv6 && n.options.is_empty());
        let e: Endpoint = serde_json::from_str(r#"{"id":"e","network_id":"ab"}"#).unwrap();
        assert_eq!(e.sandbox_id, None);
        assert!(e.ports.is_empty());
    }

    #[test]
    fn option_bool_uses_go_spellings() {
        let mut n = Network::new("n", Driver::Bridge);
        assert!(n.option_bool(options::BRIDGE_ENABLE_ICC, true));
        n.options
            .insert(options::BRIDGE_ENABLE_ICC.into(), "False".into());
        assert!(!n.option_bool(options::BRIDGE_ENABLE_ICC, true));
        n.options.insert(options::DRIVER_MTU.into(), "1400".into());
        assert_eq!(n.mtu(), Some(1400));
    }
}

/// A service: a stable virtual address and DNS name in front of the endpoints of one network
/// whose labels match its selector (Kubernetes' Service, knit's `knit service create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// 64 hex chars ([`new_id`]); looked up by full id, name or unique prefix.
    pub id: String,
    /// Unique among services; a DNS label (`[a-z0-9-]`, at most 63), since it is the service's
    /// name in DNS (`NAME`, `NAME.NETWORK.DOMAIN`).
    pub name: String,
    /// The full id of an existing network.
    pub network_id: String,
    /// The virtual address: inside one of the network's subnets, held by no endpoint.
    pub vip: IpAddr,
    /// The labels an endpoint must carry (every pair) to be a backend. Empty selects nothing.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 in UTC with nanoseconds.
    pub created: String,
}

impl Service {
    /// A service with a fresh random id, created now, no ports or selector yet.
    pub fn new(name: impl Into<String>, network_id: impl Into<String>, vip: IpAddr) -> Service {
        Service {
            id: new_id(),
            name: name.into(),
            network_id: network_id.into(),
            vip,
            selector: BTreeMap::new(),
            ports: Vec::new(),
            labels: BTreeMap::new(),
            created: now_rfc3339(),
        }
    }

    /// Whether `ep` is one of this service's backends: on its network, carrying every label of
    /// the selector (a service without selector has no backends).
    pub fn selects(&self, ep: &Endpoint) -> bool {
        ep.network_id == self.network_id
            && !self.selector.is_empty()
            && self
                .selector
                .iter()
                .all(|(k, v)| ep.labels.get(k) == Some(v))
    }
}

/// One port of a service: connections to `VIP:port/proto` go to a backend's `target_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub port: u16,
    pub target_port: u16,
    pub proto: Proto,
    /// The port's service name, the SRV record's `_NAME._PROTO` (`http` for 80/tcp): given, or
    /// the IANA name of the port ([`iana_service_name`]); `None` when neither exists (no SRV).
    #[serde(default)]
    pub name: Option<String>,
}

impl ServicePort {
    /// Parses `[NAME=]PORT[:TARGET][/PROTO]` (`80/tcp`, `http=8080:80`, `53/udp`); the protocol
    /// defaults to tcp, the target to the port, the name to the IANA name of `PORT/PROTO`.
    pub fn parse(s: &str) -> Result<ServicePort, String> {
        let bad = |why: &str| format!("port {s:?}: {why} (expected [NAME=]PORT[:TARGET][/PROTO])");
        let (name, rest) = match s.split_once('=') {
            Some((n, r)) => (Some(n.to_string()), r),
            None => (None, s),
        };
        let (ports, proto) = match rest.split_once('/') {
            Some((p, pr)) => (p, pr.parse::<Proto>().map_err(|e| bad(&e))?),
            None => (rest, Proto::Tcp),
        };
        let num = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("a port is 1 to 65535")),
            Ok(n) => Ok(n),
        };
        let (port, target_port) = match ports.split_once(':') {
            Some((p, t)) => (num(p)?, num(t)?),
            None => (num(ports)?, num(ports)?),
        };
        let name = name.or_else(|| iana_service_name(port, proto).map(str::to_string));
        Ok(ServicePort {
            port,
            target_port,
            proto,
            name,
        })
    }
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.name {
            write!(f, "{n}=")?;
        }
        write!(f, "{}", self.port)?;
        if self.target_port != self.port {
            write!(f, ":{}", self.target_port)?;
        }
        write!(f, "/{}", self.proto)
    }
}

/// The IANA service name of a well-known port (a subset of the registry, as `/etc/services`
/// names them), used for SRV records: 80/tcp is `http`, 53/udp is `domain`.
pub fn iana_service_name(port: u16, proto: Proto) -> Option<&'static str> {
    const BOTH: &[(u16, &str)] = &[
        (53, "domain"),
        (88, "kerberos"),
        (123, "ntp"),
        (161, "snmp"),
        (389, "ldap"),
        (443, "https"),
        (500, "isakmp"),
        (514, "syslog"),
        (1812, "radius"),
        (3478, "stun"),
        (5060, "sip"),
        (5353, "mdns"),
    ];
    const TCP: &[(u16, &str)] = &[
        (21, "ftp"),
        (22, "ssh"),
        (23, "telnet"),
        (25, "smtp"),
        (80, "http"),
        (110, "pop3"),
        (143, "imap"),
        (179, "bgp"),
        (465, "submissions"),
        (587, "submission"),
        (636, "ldaps"),
        (873, "rsync"),
        (993, "imaps"),
        (995, "pop3s"),
        (1883, "mqtt"),
        (2379, "etcd-client"),
        (2380, "etcd-server"),
        (3306, "mysql"),
        (5432, "postgresql"),
        (5672, "amqp"),
        (6379, "redis"),
        (8080, "http-alt"),
        (9090, "websm"),
        (11211, "memcache"),
        (27017, "mongodb"),
    ];
    const UDP: &[(u16, &str)] = &[
        (67, "bootps"),
        (68, "bootpc"),
        (69, "tftp"),
        (4789, "vxlan"),
    ];
    let own = match proto {
        Proto::Tcp => TCP,
        Proto::Udp => UDP,
        Proto::Sctp => &[],
    };
    BOTH.iter()
        .chain(own)
        .find(|(p, _)| *p == port)
        .map(|(_, n)| *n)
}
