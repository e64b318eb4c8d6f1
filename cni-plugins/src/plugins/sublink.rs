//! The verbs of the plugins that make one link inside the container (macvlan, vlan, dummy):
//! each of those modules only parses its configuration into a [`SubNet`]; this module runs
//! IPAM, libnet's macvlan driver (which makes all three kinds) and builds the result: one
//! interface, in the sandbox, that every address belongs to.

use libnet::driver::bridge::Endpoint;
use libnet::driver::macvlan::{self as driver, SubNet};
use libnet::netlink::Handle;
use libnet::HasKind;

use super::shared::{self, ReleaseOnError};
use crate::ipam;
use crate::skel::{Args, CniError, OrCni};
use crate::types::{CniResult, Interface};

pub fn add(a: &Args, net: &SubNet, conf_mac: &str) -> Result<CniResult, CniError> {
    let mac = shared::requested_mac(a, conf_mac)?;
    let ns = shared::open_netns(a)?;
    let h = Handle::new().cni()?;
    let ipam_result = shared::ipam_add(a)?;
    let release = ReleaseOnError::new(a, ipam_result.is_some());
    let mut result = ipam_result.unwrap_or_default();
    let ep = Endpoint {
        container_id: &a.container_id,
        ifname: &a.ifname,
        netns: &ns,
        mac,
        ips: shared::ip_confs(&result),
        routes: shared::route_confs(&result),
    };
    let link = driver::attach(&h, net, &ep).cni()?;
    release.disarm();
    shared::finish_result(
        a,
        &mut result,
        vec![Interface {
            name: link.name,
            mac: link.mac,
            mtu: net.mtu,
            sandbox: ns.path().display().to_string(),
            ..Default::default()
        }],
    );
    Ok(result)
}

pub fn del(a: &Args) -> Result<(), CniError> {
    shared::teardown(
        |errs| {
            if !ipam::ipam_type(a).is_empty() {
                errs.note(ipam::del(a));
            }
        },
        || {
            let ns = shared::netns_if_any(a);
            match driver::detach(&a.ifname, ns.as_ref()) {
                Err(e) if e.kind() != libnet::Kind::NotFound => {
                    Err(CniError::from_kind(e.kind(), &e))
                }
                _ => Ok(()),
            }
        },
    )
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
