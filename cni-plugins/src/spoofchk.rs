//! The bridge plugin's `macspoofchk`, through libnet's nftables layer (`table bridge knit`):
//! frames entering the bridge from the container's host-side veth must carry the container
//! interface's MAC. ADD and DEL are the lifecycle's filter
//! (`libnet::endpoint::filters::SpoofCheck`); this is its CHECK against a prevResult.

use libnet::netlink::link::parse_mac;

use crate::masq::attachment;
use crate::skel::{Args, CniError, OrCni};
use crate::types::CniResult;

fn mac(s: &str) -> Result<[u8; 6], CniError> {
    parse_mac(s).ok_or_else(|| CniError::config(format!("macspoofchk: invalid MAC {s:?}")))
}

/// The host port and container MAC of a bridge result: the container interface is `ifname`
/// with a sandbox, the host port the interface without sandbox that is not the bridge.
fn port_and_mac<'r>(a: &Args, prev: &'r CniResult, bridge: &str) -> Option<(&'r str, &'r str)> {
    let ctr = prev
        .interfaces
        .iter()
        .find(|i| i.name == a.ifname && !i.sandbox.is_empty())?;
    let host = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_empty() && i.name != bridge)?;
    Some((&host.name, &ctr.mac))
}

pub fn check(a: &Args, prev: &CniResult, bridge: &str) -> Result<(), CniError> {
    let (port, m) = port_and_mac(a, prev, bridge).ok_or_else(|| {
        CniError::config("macspoofchk: prevResult lacks the host or container interface")
    })?;
    a.nft()
        .check_spoofchk(&attachment(a), port, mac(m)?)
        .cni_ctx("macspoofchk")
}
