//! `loopback`: bring the loopback link up in the container (`ip -n CTR link set lo up`), down
//! again on DEL. As in the reference, `CNI_IFNAME` is ignored (a runtime may pass `eth0`): the
//! link is always `lo`. A `prevResult` passes through unchanged; otherwise the result names
//! `lo` and its first v4 and v6 address.

use libnet::netlink::Handle;
use libnet::netns::NetNs;

use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::{CniResult, Interface, IpConfig};

pub struct Loopback;

/// The only link this plugin touches, whatever `CNI_IFNAME` says (as the reference).
const LO: &str = "lo";

fn in_netns<T: Send>(
    a: &Args,
    f: impl FnOnce(&Handle) -> Result<T, CniError> + Send,
) -> Result<Option<T>, CniError> {
    let Some(path) = &a.netns else {
        return Ok(None);
    };
    let ns = match NetNs::open(path) {
        Ok(ns) => ns,
        // The namespace is gone, and with it its loopback.
        Err(_) if a.command == crate::skel::Command::Del => return Ok(None),
        Err(e) => return Err(e).cni(),
    };
    let h = Handle::new_in(&ns).cni()?;
    f(&h).map(Some)
}

impl Plugin for Loopback {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let addrs = in_netns(a, |h| {
            let lo = h.link_by_name(LO).cni()?;
            h.set_up(lo.index, true).cni()?;
            h.addrs(lo.index).cni()
        })?
        .unwrap_or_default();
        if let Some(prev) = a.prev_result()? {
            return Ok(prev);
        }
        let sandbox = a.netns.as_ref().map(|p| p.display().to_string());
        let first = |v4: bool| addrs.iter().find(|ad| ad.net.addr().is_ipv4() == v4);
        Ok(CniResult {
            interfaces: vec![Interface {
                name: LO.into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: sandbox.unwrap_or_default(),
                ..Default::default()
            }],
            ips: [first(true), first(false)]
                .into_iter()
                .flatten()
                .map(|ad| IpConfig {
                    interface: Some(0),
                    address: ad.net,
                    gateway: None,
                })
                .collect(),
            ..Default::default()
        })
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        in_netns(a, |h| match h.find_link(LO).cni()? {
            Some(lo) => h.set_up(lo.index, false).cni(),
            None => Ok(()),
        })?;
        Ok(())
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        in_netns(a, |h| {
            let lo = h.link_by_name(LO).cni()?;
            if lo.is_up() {
                Ok(())
            } else {
                Err(CniError::config("loopback interface is down"))
            }
        })?;
        Ok(())
    }
}
