//! Drivers: how an endpoint is wired into the kernel for each network type. A driver receives
//! already-decided addresses (IPAM ran before it) and does only kernel work, with an undo guard
//! on attach and a tolerant detach that works when the container's namespace is gone.

pub mod bridge;
pub mod host_device;
pub mod iface;
pub mod macvlan;
pub mod ptp;

use std::fmt::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;

use crate::error::{HasKind, Kind};
use crate::netlink::{Handle, Link, NetlinkError, VethPeer};
use crate::netns::{NetNs, NetnsError};
use crate::sysctl::SysctlError;
use crate::undo::Undo;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exists(String),
    #[error("state file {path}: {source}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl HasKind for DriverError {
    fn kind(&self) -> Kind {
        match self {
            DriverError::Netlink(e) => e.kind(),
            DriverError::Netns(e) => e.kind(),
            DriverError::Sysctl(e) => e.kind(),
            DriverError::Invalid(_) => Kind::Invalid,
            DriverError::Exists(_) => Kind::Exists,
            DriverError::State { source, .. } => HasKind::kind(source),
        }
    }
}

/// One address of an endpoint, with the gateway to reach beyond its subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConf {
    pub addr: IpNet,
    pub gateway: Option<IpAddr>,
}

/// A route to install in the container; `gw: None` means the gateway of the same family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConf {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// What to attach.
#[derive(Debug)]
pub struct Endpoint<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a NetNs,
    pub mac: Option<[u8; 6]>,
    pub ips: Vec<IpConf>,
    pub routes: Vec<RouteConf>,
}

/// A link as reported in a CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRef {
    pub name: String,
    pub mac: String,
}

/// What a driver made for an endpoint, in the order a CNI result lists interfaces: the shared
/// link (a bridge), the host end, then the container's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    pub bridge: Option<LinkRef>,
    pub host: Option<LinkRef>,
    pub container: LinkRef,
}

/// A network type's kernel wiring. The endpoint lifecycle ([`crate::endpoint`]) is its only
/// caller: it decides the addresses first and owns the undo stack the driver pushes onto.
pub trait Driver {
    /// Wire an endpoint whose addresses are decided. Every object is registered on `undo` the
    /// moment it exists, so a failure at any later step (here or in the lifecycle) removes it.
    fn attach<'u>(&'u self, ep: &Endpoint<'_>, undo: &mut Undo<'u>) -> Result<Wired, DriverError>;

    /// Remove what `attach` made. Tolerant: what is already gone is success, and `netns` is
    /// `None` when the container's namespace is gone (everything must still go that can).
    fn detach(
        &self,
        container_id: &str,
        ifname: &str,
        netns: Option<&NetNs>,
    ) -> Result<(), DriverError>;
}

/// The host-side veth name of an endpoint: derived from (container id, ifname) so that DEL finds
/// it again without reading anything from the container (whose netns may be gone). 44 bits of
/// FNV-1a: a collision among 10,000 endpoints on one host has odds of about 3 in a million, and
/// shows up as a clear `Exists` error on ADD rather than as a wrong deletion.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0u8]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut s = String::from("veth");
    let _ = write!(s, "{:011x}", h & 0xfff_ffff_ffff);
    s
}

/// An endpoint's veth pair: `ip link add vethXXXX [mtu M] type veth peer name IFNAME netns CTR
/// [address MAC]`, the host end named from (container id, ifname) so DEL finds it without the
/// container, the peer made straight in the container so no half-made pair is ever visible in
/// the host. Its deletion is registered with `undo`; returns the host end.
pub(crate) fn add_endpoint_veth<'h>(
    h: &'h Handle,
    undo: &mut Undo<'h>,
    container_id: &str,
    ifname: &str,
    netns: &NetNs,
    mac: Option<[u8; 6]>,
    mtu: Option<u32>,
) -> Result<Link, DriverError> {
    let host_name = host_veth_name(container_id, ifname);
    let peer = VethPeer {
        name: ifname,
        netns_fd: Some(netns.as_raw_fd()),
        mac,
        mtu: None,
    };
    if let Err(e) = h.add_veth(&host_name, mtu, None, &peer) {
        if e.errno() == Some(libc::EEXIST) {
            return Err(DriverError::Exists(format!(
                "container {container_id} already has an interface {ifname} on this host or in its namespace ({e})"
            )));
        }
        return Err(e.into());
    }
    // The pair exists from here on: its removal is registered before anything else can fail
    // (by name: the look-up below is such a thing).
    let name = host_name.clone();
    undo.push(format!("veth {host_name}"), move || {
        h.del_link_by_name(&name)
    });
    Ok(h.link_by_name(&host_name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        // The separator keeps ("ab","ceth0") and ("abc","eth0") apart.
        assert_ne!(host_veth_name("ab", "ceth0"), a);
    }
}
