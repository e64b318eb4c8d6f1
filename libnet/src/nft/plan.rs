//! Pure plans: the static skeletons of `table inet knit` and `table bridge knit` and the set/map
//! elements each attachment owns, rendered to nft syntax. Nothing here touches the kernel.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::NftError;

/// knit's inet table (NAT, port maps, firewall). Everything else in the ruleset is not ours.
pub const TABLE: &str = "inet knit";
/// knit's bridge-family table (macspoofchk): frames entering a bridge, before any L3 table.
pub const BRIDGE_TABLE: &str = "bridge knit";
/// Priority of the nat output chain (`dstnat` is not accepted by nft 1.0.6 for `output`).
pub const OUTPUT_NAT_PRIORITY: i32 = -100;
/// Longest element comment the kernel keeps (NFT_USERDATA_MAXLEN is 256, nft allows 128).
pub const COMMENT_MAX: usize = 128;

/// The fixed part: sets, maps, chains and rules. Created once per namespace, only when missing.
pub const SKELETON: &str = include_str!("golden/skeleton.nft");
/// The fixed part of `table bridge knit`: created on first use of one of its sets.
pub const BRIDGE_SKELETON: &str = include_str!("golden/bridge_skeleton.nft");

/// One of knit's two tables. Set names are unique across both, so a set names its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Inet,
    Bridge,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Inet, Table::Bridge];

    /// `inet knit` / `bridge knit`, as nft commands name them.
    pub fn name(self) -> &'static str {
        match self {
            Table::Inet => TABLE,
            Table::Bridge => BRIDGE_TABLE,
        }
    }

    /// The nft family word (`inet`, `bridge`).
    pub fn family(self) -> &'static str {
        match self {
            Table::Inet => "inet",
            Table::Bridge => "bridge",
        }
    }

    pub fn skeleton(self) -> &'static str {
        match self {
            Table::Inet => SKELETON,
            Table::Bridge => BRIDGE_SKELETON,
        }
    }

    /// The table holding `set`: the `spoof_*` sets live in the bridge table, the rest in inet.
    pub fn of_set(set: &str) -> Table {
        if set.starts_with("spoof_") {
            Table::Bridge
        } else {
            Table::Inet
        }
    }
}

/// Transport protocols a port mapping may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: &str) -> Result<Proto, NftError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(NftError::invalid(
                "protocol",
                format!("{s:?} (want tcp, udp or sctp)"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One validated port mapping (reference portmap `portMappings` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Proto,
    /// `None`: every local address of both families. An unspecified address (`0.0.0.0`, `::`):
    /// every local address of that family. Otherwise only that host address.
    pub host_ip: Option<IpAddr>,
}

/// A `portMappings` entry as it arrives in CNI runtime config, before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPortMapping {
    pub host_port: i64,
    pub container_port: i64,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

impl RawPortMapping {
    /// Validate: ports 1..=65535, protocol tcp/udp/sctp (empty means tcp), hostIP empty or an IP.
    pub fn validate(&self) -> Result<PortMapping, NftError> {
        let port = |what: &'static str, p: i64| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| NftError::invalid(what, format!("{p} (want 1..65535)")))
        };
        let protocol = if self.protocol.is_empty() {
            Proto::Tcp
        } else {
            Proto::parse(&self.protocol)?
        };
        let host_ip = match self.host_ip.trim() {
            "" => None,
            s => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| NftError::invalid("hostIP", format!("{s:?}")))?,
            ),
        };
        Ok(PortMapping {
            host_port: port("hostPort", self.host_port)?,
            container_port: port("containerPort", self.container_port)?,
            protocol,
            host_ip,
        })
    }
}

/// `same-bridge` isolation of the firewall plugin, or `open` (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngressPolicy {
    #[default]
    Open,
    SameBridge,
}

impl IngressPolicy {
    pub fn parse(s: &str) -> Result<IngressPolicy, NftError> {
        match s {
            "" | "open" => Ok(IngressPolicy::Open),
            "same-bridge" => Ok(IngressPolicy::SameBridge),
            _ => Err(NftError::invalid("ingressPolicy", format!("{s:?}"))),
        }
    }
}

/// One element of one of our sets or maps, in nft syntax. `value` is set for map elements.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Elem {
    pub set: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Elem {
    fn new(set: &str, key: String, value: Option<String>) -> Elem {
        Elem {
            set: set.to_string(),
            key,
            value,
        }
    }

    /// `{ KEY comment "C" : VALUE }` as nft wants it (the comment sits between key and value).
    fn render(&self, comment: Option<&str>) -> String {
        let mut s = format!("{{ {}", self.key);
        if let Some(c) = comment {
            let _ = write!(s, " comment \"{c}\"");
        }
        if let Some(v) = &self.value {
            let _ = write!(s, " : {v}");
        }
        s.push_str(" }");
        s
    }
}

fn fam(ip: &IpAddr) -> char {
    if ip.is_ipv4() {
        '4'
    } else {
        '6'
    }
}

/// bridge ipMasq: masquerade traffic from each address leaving its own subnet (not multicast).
pub fn plan_masq(ips: &[IpNet]) -> Vec<Elem> {
    let mut out = Vec::new();
    for net in ips {
        let ip = net.addr();
        let f = fam(&ip);
        out.push(Elem::new(&format!("masq{f}"), ip.to_string(), None));
        out.push(Elem::new(
            &format!("masq_skip{f}"),
            format!("{ip} . {}", net.trunc()),
            None,
        ));
    }
    out
}

/// portmap: DNAT elements per mapping and family, plus the hairpin/localhost masquerade keys.
/// As the reference does, a mapping whose hostIP family has no container address is skipped
/// (dual-stack configs pass v6 hostIPs to v4-only containers); the same host key twice is invalid.
pub fn plan_portmap(maps: &[PortMapping], container_ips: &[IpAddr]) -> Result<Vec<Elem>, NftError> {
    let first = |v4: bool| container_ips.iter().find(|ip| ip.is_ipv4() == v4).copied();
    let mut out = Vec::new();
    let mut used = BTreeSet::new();
    for m in maps {
        let families: Vec<bool> = match m.host_ip {
            None => vec![true, false],
            Some(h) => vec![h.is_ipv4()],
        };
        for v4 in families {
            let Some(cip) = first(v4) else { continue };
            let f = fam(&cip);
            let proto = m.protocol.as_str();
            let value = Some(format!("{cip} . {}", m.container_port));
            let elem = match m.host_ip.filter(|h| !h.is_unspecified()) {
                Some(h) => Elem::new(
                    &format!("pm{f}_ip"),
                    format!("{h} . {proto} . {}", m.host_port),
                    value,
                ),
                None => Elem::new(
                    &format!("pm{f}_any"),
                    format!("{proto} . {}", m.host_port),
                    value,
                ),
            };
            if !used.insert((elem.set.clone(), elem.key.clone())) {
                return Err(NftError::invalid(
                    "portMappings",
                    format!("host port {} mapped twice", elem.key),
                ));
            }
            out.push(elem);
        }
    }
    if !out.is_empty() {
        for cip in [first(true), first(false)].into_iter().flatten() {
            let f = fam(&cip);
            if f == '4' {
                out.push(Elem::new("pm_ctr4", cip.to_string(), None));
            }
            out.push(Elem::new(
                &format!("hairpin{f}"),
                format!("{cip} . {cip}"),
                None,
            ));
        }
    }
    Ok(out)
}

/// firewall: forwarding allowed to (established) and from each address; with `same-bridge`,
/// the (bridge, address) pairs the isolation rule looks up.
pub fn plan_firewall(
    bridge: &str,
    ips: &[IpAddr],
    policy: IngressPolicy,
) -> Result<Vec<Elem>, NftError> {
    validate_ifname(bridge)?;
    let mut out = Vec::new();
    for ip in ips {
        let f = fam(ip);
        out.push(Elem::new(&format!("fw{f}"), ip.to_string(), None));
        if policy == IngressPolicy::SameBridge {
            out.push(Elem::new(
                &format!("iso{f}"),
                format!("\"{bridge}\" . {ip}"),
                None,
            ));
        }
    }
    Ok(out)
}

/// bridge macspoofchk: frames from the host port `port` (the container's host-side veth) pass
/// only with source MAC `mac` (the container interface's). `spoof_ports` marks the port as
/// checked, `spoof_ok` holds the one allowed (port, MAC) pair; other ports are untouched.
pub fn plan_spoofchk(port: &str, mac: [u8; 6]) -> Result<Vec<Elem>, NftError> {
    validate_ifname(port)?;
    let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    Ok(vec![
        Elem::new("spoof_ports", format!("\"{port}\""), None),
        Elem::new("spoof_ok", format!("\"{port}\" . {}", mac.join(":")), None),
    ])
}

/// One port of a service: `VIP:port/protocol` goes to `backend:target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePort {
    pub protocol: Proto,
    pub port: u16,
    pub target: u16,
}

/// The most backends a service balances over: the skeleton has one chain `svc_mod_N` (`numgen
/// random mod N`) per N up to this. Further backends get no slot (and no new connections).
pub const SERVICE_MAX_BACKENDS: usize = 64;

/// The slot order of a service's backends after a change: each backend of `previous` (the slot
/// order in force) that is still wanted keeps its slot while that slot exists, and the others
/// fill the free slots in the order given. So one backend coming or going moves at most one
/// other (the last one, into the hole): O(1) element changes whatever the number of backends.
pub fn assign_slots(previous: &[IpAddr], backends: &[IpAddr]) -> Vec<IpAddr> {
    let mut wanted: Vec<IpAddr> = Vec::new();
    for b in backends {
        if !wanted.contains(b) {
            wanted.push(*b);
        }
    }
    let n = wanted.len().min(SERVICE_MAX_BACKENDS);
    let mut slots: Vec<Option<IpAddr>> = vec![None; n];
    for (slot, b) in slots.iter_mut().zip(previous) {
        if wanted.contains(b) {
            *slot = Some(*b);
        }
    }
    let placed: Vec<IpAddr> = slots.iter().flatten().copied().collect();
    let mut rest = wanted.iter().filter(|b| !placed.contains(b));
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        *slot = rest.next().copied();
    }
    slots.into_iter().flatten().collect()
}

/// The slot order recorded in a service's elements ([`plan_service`]'s `svc_slot*` keys end in
/// the slot number, their values start with the backend).
pub fn slots_of(elems: &[Elem]) -> Vec<IpAddr> {
    let mut found: Vec<(usize, IpAddr)> = elems
        .iter()
        .filter(|e| e.set.starts_with("svc_slot"))
        .filter_map(|e| {
            let slot = e.key.rsplit(" . ").next()?.parse().ok()?;
            let backend = e.value.as_deref()?.split(" . ").next()?.parse().ok()?;
            Some((slot, backend))
        })
        .collect();
    found.sort();
    found.dedup_by_key(|(slot, _)| *slot);
    found
        .iter()
        .enumerate()
        .take_while(|(i, (slot, _))| i == slot)
        .map(|(_, (_, b))| *b)
        .collect()
}

/// A service: its virtual address in `svc_vips{4,6}` (for the jump, and to masquerade its
/// clients, so replies come back through the host even from a backend on the client's own
/// bridge); per port, `svc_n{4,6}` sends `VIP . proto . port` to the chain `svc_mod_N` (N
/// backends), whose `numgen random mod N` picks slot `i` of `svc_slot{4,6}`, `VIP . proto .
/// port . i` → `backend . target`. `slots` is the backends in slot order ([`assign_slots`]), of
/// the VIP's family. Hash maps only: a change costs the same with 10 or 10,000 services.
pub fn plan_service(
    vip: IpAddr,
    ports: &[ServicePort],
    slots: &[IpAddr],
) -> Result<Vec<Elem>, NftError> {
    let f = fam(&vip);
    let mut out = vec![Elem::new(&format!("svc_vips{f}"), vip.to_string(), None)];
    let mine: Vec<&IpAddr> = slots
        .iter()
        .filter(|b| b.is_ipv4() == vip.is_ipv4())
        .take(SERVICE_MAX_BACKENDS)
        .collect();
    let mut seen = BTreeSet::new();
    for p in ports {
        if p.port == 0 || p.target == 0 {
            return Err(NftError::invalid("service port", "port 0"));
        }
        if !seen.insert((p.protocol, p.port)) {
            return Err(NftError::invalid(
                "service port",
                format!("{}/{} twice", p.port, p.protocol.as_str()),
            ));
        }
        if mine.is_empty() {
            continue;
        }
        let key = format!("{vip} . {} . {}", p.protocol.as_str(), p.port);
        out.push(Elem::new(
            &format!("svc_n{f}"),
            key.clone(),
            Some(format!("goto svc_mod_{}", mine.len())),
        ));
        for (i, b) in mine.iter().enumerate() {
            out.push(Elem::new(
                &format!("svc_slot{f}"),
                format!("{key} . {i}"),
                Some(format!("{b} . {}", p.target)),
            ));
        }
    }
    Ok(out)
}

fn validate_ifname(name: &str) -> Result<(), NftError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(NftError::invalid("interface name", format!("{name:?}")))
    }
}

/// One element operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemOp {
    /// Add with the attachment's comment (a no-op when the same element is already there).
    Add(Elem),
    /// Add without a comment, only ever right before a `Del` of the same element.
    Touch(Elem),
    /// Delete by key.
    Del(Elem),
}

impl ElemOp {
    pub fn elem(&self) -> &Elem {
        let (ElemOp::Add(e) | ElemOp::Touch(e) | ElemOp::Del(e)) = self;
        e
    }
}

/// The elements to add (with the attachment's comment): one transaction.
pub fn ops_add(elems: &[Elem]) -> Vec<ElemOp> {
    elems.iter().cloned().map(ElemOp::Add).collect()
}

/// Tolerant delete: `add` then `delete` of the same element in one transaction never fails on a
/// missing element (nft 1.0.6 has no `destroy`), and leaves the element gone either way.
pub fn ops_del(elems: &[Elem]) -> Vec<ElemOp> {
    elems
        .iter()
        .flat_map(|e| [ElemOp::Touch(e.clone()), ElemOp::Del(e.clone())])
        .collect()
}

/// Replace an attachment's elements `old` by `new` in one transaction: stale ones go, new ones
/// come, unchanged ones are re-added (a no-op for the kernel).
pub fn ops_replace(old: &[Elem], new: &[Elem]) -> Vec<ElemOp> {
    let stale: Vec<Elem> = old.iter().filter(|e| !new.contains(e)).cloned().collect();
    let mut ops = ops_del(&stale);
    ops.extend(ops_add(new));
    ops
}

/// The nft syntax equivalent of a transaction (what `nft -f` would be given; golden tests and
/// the libnftables fallback use it).
pub fn render_ops(ops: &[ElemOp], comment: &str) -> String {
    let mut s = String::new();
    for op in ops {
        let (verb, e, text) = match op {
            ElemOp::Add(e) => ("add", e, e.render(Some(comment))),
            ElemOp::Touch(e) => ("add", e, e.render(None)),
            ElemOp::Del(e) => (
                "delete",
                e,
                Elem::new(&e.set, e.key.clone(), None).render(None),
            ),
        };
        let table = Table::of_set(&e.set).name();
        let _ = writeln!(s, "{verb} element {table} {} {text}", e.set);
    }
    s
}

/// Create a table's skeleton: `create table` fails if the table is already there, so two
/// creators (or a table made by another knit version) can never duplicate the fixed rules.
pub fn render_create_skeleton(table: Table) -> String {
    format!("create table {}\n{}", table.name(), table.skeleton())
}
