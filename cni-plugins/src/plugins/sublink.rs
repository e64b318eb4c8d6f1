//! The verbs of the plugins that make one link inside the container (macvlan, vlan, dummy):
//! each of those modules only parses its configuration into a [`SubNet`]; this module runs
//! IPAM, libnet's macvlan driver (which makes all three kinds) and builds the result: one
//! interface, in the sandbox, that every address belongs to.

use libnet::driver::macvlan::{self as driver, SubLink, SubNet};
use libnet::netlink::Handle;

use super::shared::{self, CniIpam};
use crate::ipam;
use crate::skel::{Args, CniError, OrCni};
use crate::types::CniResult;

pub fn add(a: &Args, net: &SubNet, conf_mac: &str) -> Result<CniResult, CniError> {
    let mac = shared::requested_mac(a, conf_mac)?;
    let ns = shared::open_netns(a)?;
    let h = Handle::new().cni()?;
    let driver = SubLink::new(&h, net.clone());
    shared::attach(a, &ns, mac, CniIpam::new(a), &driver, &[], net.mtu)
}

/// DEL needs no master: only the container's link, by name, if its namespace is still there.
pub fn del(a: &Args) -> Result<(), CniError> {
    shared::detach(a, &SubLink::for_detach(), &[])
}

pub fn check(a: &Args, net: &SubNet) -> Result<(), CniError> {
    let prev = shared::prev_result(a)?;
    if !ipam::ipam_type(a).is_empty() {
        ipam::check(a)?;
    }
    let ns = shared::open_netns(a)?;
    let h = Handle::new().cni()?;
    let want = driver::Expected {
        ifname: &a.ifname,
        netns: &ns,
        mac: shared::container_iface(a, &prev).map(|i| i.mac.as_str()),
        ips: prev.ips.iter().map(|ip| ip.address).collect(),
        routes: prev.routes.iter().map(|r| r.dst).collect(),
    };
    driver::check(&h, net, &want).cni_ctx("CHECK")
}

pub fn gc(a: &Args) -> Result<(), CniError> {
    if !ipam::ipam_type(a).is_empty() {
        ipam::gc(a)?;
    }
    Ok(())
}
