//! What a controller wants of one host, as plain serde data: the payload of the protocol
//! between the controller and the agents.
//!
//! Versionable: [`HostDesired::format`] says which shape this is ([`FORMAT`]); fields added
//! later get a `#[serde(default)]`, and unknown fields are ignored, so an older agent reads a
//! newer controller's message and a newer agent an older one. Only remote entries travel:
//! endpoints and hosts whose underlay IP is this host's own are skipped by the planner, so a
//! controller may also send a network's whole view.
//!
//! ```json
//! {"format": 1, "networks": [{"id": "blue", "vni": 4097,
//!   "subnets": [{"cidr": "10.244.0.0/16", "gateway": "10.244.0.1"}],
//!   "mode": "vxlan", "underlay_ip": "192.168.50.1",
//!   "endpoints": [{"ip": "10.244.1.5", "mac": "0a:58:0a:f4:01:05", "host": "192.168.50.2"}],
//!   "hosts": [{"underlay_ip": "192.168.50.2", "blocks": ["10.244.1.0/24"]}]}]}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use libnet::netlink::link::{format_mac, parse_mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DesiredError;
use crate::names::VNI_MAX;

/// The shape of [`HostDesired`] this crate writes.
pub const FORMAT: u32 = 1;

fn format_v1() -> u32 {
    FORMAT
}

/// Everything one host should have programmed, network by network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDesired {
    #[serde(default = "format_v1")]
    pub format: u32,
    #[serde(default)]
    pub networks: Vec<NetworkDesired>,
}

/// How a network crosses hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// L2 in VXLAN (UDP 4789) between the hosts' VTEPs: any underlay that routes IP.
    #[default]
    Vxlan,
    /// Plain routes to the other hosts' IPAM blocks via their underlay IPs (flannel's
    /// DirectRouting): the hosts must share an L2 underlay. IPv4 only.
    Routed,
}

/// One subnet of a network and its anycast gateway (the same IP and MAC on every host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub cidr: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// One network as this host should see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDesired {
    /// The network's id (names it in errors and logs; the kernel names derive from the VNI).
    pub id: String,
    /// 1..=0xFFFFFF, unique per network in the cluster.
    pub vni: u32,
    pub subnets: Vec<Subnet>,
    #[serde(default)]
    pub mode: Mode,
    /// This host's underlay IP: the local VTEP (vxlan) and where the other hosts route to.
    pub underlay_ip: IpAddr,
    /// The network's endpoints on other hosts.
    #[serde(default)]
    pub endpoints: Vec<RemoteEndpoint>,
    /// The other hosts of this network (flood targets; their blocks for routed mode).
    #[serde(default)]
    pub hosts: Vec<RemoteHost>,
}

/// An endpoint on another host: one address (a dual-stack endpoint is two, same MAC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub ip: IpAddr,
    pub mac: Mac,
    /// The underlay IP of the host it lives on (its VTEP).
    pub host: IpAddr,
}

/// Another host of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteHost {
    pub underlay_ip: IpAddr,
    /// Its IPAM blocks (routed mode routes them via `underlay_ip`).
    #[serde(default)]
    pub blocks: Vec<IpNet>,
}

/// A MAC address, `aa:bb:cc:dd:ee:ff` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_mac(&self.0))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        parse_mac(&s)
            .map(Mac)
            .ok_or_else(|| serde::de::Error::custom(format!("not a MAC address: {s:?}")))
    }
}

impl NetworkDesired {
    /// The endpoints on other hosts (entries naming this host are skipped).
    pub fn remote_endpoints(&self) -> impl Iterator<Item = &RemoteEndpoint> {
        self.endpoints
            .iter()
            .filter(move |e| e.host != self.underlay_ip)
    }

    /// The other hosts (an entry naming this host is skipped).
    pub fn remote_hosts(&self) -> impl Iterator<Item = &RemoteHost> {
        self.hosts
            .iter()
            .filter(move |h| h.underlay_ip != self.underlay_ip)
    }

    /// Whether `net` lies inside one of the network's subnets.
    pub fn covers(&self, net: &IpNet) -> bool {
        self.subnets.iter().any(|s| s.cidr.contains(net))
    }

    /// Check what the kernel would refuse or what would make two entries fight: every
    /// problem is [`Kind::Invalid`](libnet::Kind::Invalid) and nothing has been changed.
    pub fn validate(&self) -> Result<(), DesiredError> {
        let bad = |detail: String| DesiredError {
            network: self.id.clone(),
            detail,
        };
        if self.id.is_empty() {
            return Err(bad("empty network id".into()));
        }
        if !(1..=VNI_MAX).contains(&self.vni) {
            return Err(bad(format!("VNI {} outside 1..={VNI_MAX}", self.vni)));
        }
        if self.subnets.is_empty() {
            return Err(bad("no subnet".into()));
        }
        for s in &self.subnets {
            if let Some(gw) = s.gateway {
                if !s.cidr.contains(&gw) {
                    return Err(bad(format!("gateway {gw} outside subnet {}", s.cidr)));
                }
            }
        }
        if self.mode == Mode::Routed && self.subnets.iter().any(|s| s.cidr.addr().is_ipv6()) {
            return Err(bad("routed mode is IPv4 only".into()));
        }
        let same_family = |a: &IpAddr| a.is_ipv4() == self.underlay_ip.is_ipv4();
        let mut by_ip: BTreeMap<IpAddr, Mac> = BTreeMap::new();
        let mut by_mac: BTreeMap<Mac, IpAddr> = BTreeMap::new();
        let mut by_block: BTreeMap<IpNet, IpAddr> = BTreeMap::new();
        let gateways: Vec<IpAddr> = self.subnets.iter().filter_map(|s| s.gateway).collect();
        for e in self.remote_endpoints() {
            if !self.covers(&IpNet::from(e.ip)) {
                return Err(bad(format!("endpoint {} outside the subnets", e.ip)));
            }
            if gateways.contains(&e.ip) {
                return Err(bad(format!("endpoint {} is the gateway", e.ip)));
            }
            if e.mac.0 == [0; 6] || e.mac.0[0] & 1 == 1 {
                return Err(bad(format!(
                    "endpoint {}: MAC {} is not unicast",
                    e.ip, e.mac
                )));
            }
            if !same_family(&e.host) {
                return Err(bad(format!(
                    "endpoint {}: host {} is not of the underlay's family",
                    e.ip, e.host
                )));
            }
            if by_ip.insert(e.ip, e.mac).is_some_and(|m| m != e.mac) {
                return Err(bad(format!("address {} given to two MACs", e.ip)));
            }
            if by_mac.insert(e.mac, e.host).is_some_and(|h| h != e.host) {
                return Err(bad(format!("MAC {} on two hosts", e.mac)));
            }
        }
        for h in self.remote_hosts() {
            if !same_family(&h.underlay_ip) {
                return Err(bad(format!(
                    "host {} is not of the underlay's family",
                    h.underlay_ip
                )));
            }
            if let Some(b) = h.blocks.iter().find(|b| !self.covers(b)) {
                return Err(bad(format!(
                    "block {b} of host {} outside the subnets",
                    h.underlay_ip
                )));
            }
            for b in &h.blocks {
                if by_block
                    .insert(*b, h.underlay_ip)
                    .is_some_and(|o| o != h.underlay_ip)
                {
                    return Err(bad(format!("block {b} on two hosts")));
                }
            }
        }
        Ok(())
    }
}

impl HostDesired {
    /// Every network valid, a format this crate reads, and no VNI twice.
    pub fn validate(&self) -> Result<(), DesiredError> {
        self.networks
            .iter()
            .try_for_each(NetworkDesired::validate)?;
        self.check_host()
    }

    /// What concerns the whole message: a format this crate reads ([`FORMAT`] or older; a
    /// newer one may mean what this agent cannot do) and no VNI given to two networks.
    pub fn check_host(&self) -> Result<(), DesiredError> {
        if !(1..=FORMAT).contains(&self.format) {
            return Err(DesiredError {
                network: "(all)".into(),
                detail: format!("format {} is not one of 1..={FORMAT}", self.format),
            });
        }
        let mut seen = BTreeMap::new();
        for n in &self.networks {
            if let Some(other) = seen.insert(n.vni, &n.id) {
                return Err(DesiredError {
                    network: n.id.clone(),
                    detail: format!("VNI {} also used by network {other}", n.vni),
                });
            }
        }
        Ok(())
    }
}
