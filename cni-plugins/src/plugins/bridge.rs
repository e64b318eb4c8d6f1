//! `bridge`: a Linux bridge on the host and a veth pair per container, with the options of the
//! reference plugin (containernetworking/plugins `plugins/main/bridge`). The kernel work is
//! libnet's bridge driver; this module turns configuration and IPAM results into its input and
//! its output into a CNI result.

use std::net::IpAddr;

use ipnet::IpNet;
use libnet::driver::bridge::{self as driver, Bridge as BridgeDriver, BridgeNet};
use libnet::driver::Driver;
use libnet::endpoint::filters::{Masq, SpoofCheck};
use libnet::endpoint::Filter;
use libnet::netlink::link::parse_mac;
use libnet::netlink::Handle;
use libnet::nft::Nft;
use serde::Deserialize;
use serde_json::Value;

use super::shared::{self, CniIpam};
use crate::ipam;
use crate::skel::{Args, CniError, OrCni, Plugin, ERR_UNSUPPORTED_FIELD};
use crate::types::{CniResult, IpConfig, RouteEntry};

pub struct Bridge;

fn default_bridge() -> String {
    "cni0".into()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conf {
    #[serde(default = "default_bridge")]
    bridge: String,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: i64,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(default, rename = "enabledad")]
    enable_dad: bool,
    #[serde(default)]
    disable_container_interface: bool,
}

impl Conf {
    fn load(a: &Args) -> Result<Conf, CniError> {
        let mut c: Conf = a.parse()?;
        if c.is_default_gateway {
            c.is_gateway = true;
        }
        if c.vlan != 0 {
            return Err(CniError::new(
                ERR_UNSUPPORTED_FIELD,
                "vlan: VLAN filtering on the bridge is not supported by knit yet",
            ));
        }
        if c.hairpin_mode && c.promisc_mode {
            return Err(CniError::config(
                "cannot set hairpin mode and promiscuous mode at the same time",
            ));
        }
        if c.disable_container_interface && !ipam::ipam_type(a).is_empty() {
            return Err(CniError::config(
                "disableContainerInterface keeps the interface down, so it cannot be used with IPAM",
            ));
        }
        Ok(c)
    }

    /// ipMasq, then macspoofchk (the host port must carry only the container's MAC).
    fn filters<'n>(&self, nft: &'n Nft) -> Vec<Box<dyn Filter + 'n>> {
        let mut f: Vec<Box<dyn Filter + 'n>> = Vec::new();
        if self.ip_masq {
            f.push(Box::new(Masq { nft }));
        }
        if self.macspoofchk {
            f.push(Box::new(SpoofCheck { nft }));
        }
        f
    }

    fn net(&self) -> BridgeNet {
        BridgeNet {
            bridge: self.bridge.clone(),
            mtu: (self.mtu != 0).then_some(self.mtu),
            promisc: self.promisc_mode,
            hairpin: self.hairpin_mode,
            is_gateway: self.is_gateway,
            force_address: self.force_address,
            enable_dad: self.enable_dad,
            disable_container_interface: self.disable_container_interface,
            hand_off: false,
        }
    }
}

/// The MAC asked for through `runtimeConfig.mac` (capability `mac`), `args.cni.mac` or
/// `CNI_ARGS` `MAC=`, strongest first.
fn requested_mac(a: &Args) -> Result<Option<[u8; 6]>, CniError> {
    let s = a
        .conf
        .runtime_config
        .get("mac")
        .and_then(Value::as_str)
        .or_else(|| a.conf.args.pointer("/cni/mac").and_then(Value::as_str))
        .or_else(|| a.cni_arg("MAC"));
    match s {
        None | Some("") => Ok(None),
        Some(s) => parse_mac(s)
            .map(Some)
            .ok_or_else(|| CniError::config(format!("invalid MAC address {s:?}"))),
    }
}

/// The first address of a subnet, the reference's gateway when IPAM named none.
fn first_host(net: &IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(n) => IpAddr::V4((u32::from(n) + 1).into()),
        IpAddr::V6(n) => IpAddr::V6((u128::from(n) + 1).into()),
    }
}

/// Fill in gateways and the default routes the configuration asks for.
fn complete_ipam(c: &Conf, r: &mut CniResult) -> Result<(), CniError> {
    for ip in &mut r.ips {
        if ip.gateway.is_none() && c.is_gateway {
            ip.gateway = Some(first_host(&ip.address));
        }
    }
    if !c.is_default_gateway {
        return Ok(());
    }
    for ip in &r.ips {
        let Some(gw) = ip.gateway else { continue };
        let any: IpNet = if gw.is_ipv4() {
            "0.0.0.0/0".parse().unwrap()
        } else {
            "::/0".parse().unwrap()
        };
        match r.routes.iter().find(|rt| rt.dst == any) {
            Some(rt) if rt.gw.is_some_and(|g| g != gw) => {
                return Err(CniError::config(format!(
                    "isDefaultGateway ineffective because IPAM sets default route via {}",
                    rt.gw.unwrap()
                )))
            }
            Some(_) => {}
            None => r.routes.push(RouteEntry::new(any, Some(gw))),
        }
    }
    Ok(())
}

/// Run `f` with the lifecycle's driver and the filters the configuration asks for.
fn with_endpoint<T>(
    a: &Args,
    c: &Conf,
    f: impl FnOnce(&dyn Driver, &[&dyn Filter]) -> Result<T, CniError>,
) -> Result<T, CniError> {
    let h = Handle::new().cni()?;
    let nft = a.nft();
    let filters = c.filters(&nft);
    let refs: Vec<&dyn Filter> = filters.iter().map(|f| &**f).collect();
    f(
        &BridgeDriver {
            h: &h,
            net: c.net(),
        },
        &refs,
    )
}

impl Plugin for Bridge {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let c = Conf::load(a)?;
        let mac = requested_mac(a)?;
        let ns = shared::open_netns(a)?;
        let source = CniIpam::new(a).completed_by(Box::new(|r| complete_ipam(&c, r)));
        with_endpoint(a, &c, |driver, filters| {
            shared::attach(a, &ns, mac, source, driver, filters, None)
        })
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        with_endpoint(a, &c, |driver, filters| shared::detach(a, driver, filters))
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        let prev = a
            .prev_result()?
            .ok_or_else(|| CniError::config("required prevResult missing"))?;
        if !ipam::ipam_type(a).is_empty() {
            ipam::check(a)?;
        }
        let ns = shared::open_netns(a)?;
        let h = Handle::new().cni()?;
        let want = driver::Expected {
            container_id: &a.container_id,
            ifname: &a.ifname,
            netns: &ns,
            mac: prev
                .interfaces
                .iter()
                .find(|i| i.name == a.ifname && !i.sandbox.is_empty())
                .map(|i| i.mac.clone()),
            ips: prev.ips.iter().map(|ip: &IpConfig| ip.address).collect(),
            routes: prev.routes.iter().map(|r| r.dst).collect(),
        };
        driver::check(&h, &c.net(), &want).cni()?;
        if c.ip_masq {
            crate::masq::check(a, &prev)?;
        }
        if c.macspoofchk {
            crate::spoofchk::check(a, &prev, &c.bridge)?;
        }
        Ok(())
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        if !ipam::ipam_type(a).is_empty() {
            ipam::gc(a)?;
        }
        // One GC of the network's nftables state covers ipMasq and macspoofchk.
        if c.ip_masq || c.macspoofchk {
            crate::masq::gc(a)?;
        }
        Ok(())
    }

    fn status(&self, a: &Args) -> Result<(), CniError> {
        Conf::load(a)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> Conf {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn gateways_and_default_routes_are_completed_like_the_reference() {
        let c = conf(r#"{"isDefaultGateway": true, "isGateway": true}"#);
        let mut r = CniResult {
            ips: vec![IpConfig {
                interface: None,
                address: "10.244.1.7/24".parse().unwrap(),
                gateway: None,
            }],
            ..Default::default()
        };
        complete_ipam(&c, &mut r).unwrap();
        assert_eq!(r.ips[0].gateway, "10.244.1.1".parse().ok());
        assert_eq!(
            r.routes,
            vec![RouteEntry::new(
                "0.0.0.0/0".parse().unwrap(),
                "10.244.1.1".parse().ok()
            )]
        );
        // A default route via another gateway makes isDefaultGateway ineffective: an error.
        r.routes = vec![RouteEntry::new(
            "0.0.0.0/0".parse().unwrap(),
            "10.244.1.254".parse().ok(),
        )];
        assert!(complete_ipam(&c, &mut r).is_err());
    }

    #[test]
    fn first_host_of_v6() {
        assert_eq!(
            first_host(&"fd00:6b6e:1::9/64".parse().unwrap()),
            "fd00:6b6e:1::1".parse::<IpAddr>().unwrap()
        );
    }
}
