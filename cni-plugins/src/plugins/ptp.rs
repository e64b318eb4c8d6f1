//! `ptp`: a veth pair per container, routed through the host end (containernetworking/plugins
//! `plugins/main/ptp`): options `ipMasq`, `mtu`, `dns`; IPAM required. The kernel work is
//! libnet's ptp driver; the result lists the host end, then the container end (index 1, which
//! every address belongs to), as the reference's does.

use libnet::driver::bridge::Endpoint;
use libnet::driver::ptp as driver;
use libnet::netlink::Handle;
use libnet::HasKind;
use serde::Deserialize;

use super::shared::{self, ReleaseOnError};
use crate::ipam;
use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::{CniResult, Interface};

pub struct Ptp;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conf {
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: i64,
}

impl Conf {
    fn load(a: &Args) -> Result<Conf, CniError> {
        let c: Conf = a.parse()?;
        if ipam::ipam_type(a).is_empty() {
            return Err(CniError::config("ptp requires an IPAM configuration"));
        }
        if !(0..=65535).contains(&c.mtu) {
            return Err(CniError::config(format!("invalid MTU {}", c.mtu)));
        }
        Ok(c)
    }

    fn mtu(&self) -> Option<u32> {
        (self.mtu > 0).then_some(self.mtu as u32)
    }
}

impl Plugin for Ptp {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let c = Conf::load(a)?;
        let mac = shared::requested_mac(a, "")?;
        let ns = shared::open_netns(a)?;
        let mut result = shared::ipam_add(a)?.unwrap_or_default();
        let release = ReleaseOnError::new(a, true);
        let h = Handle::new().cni()?;
        let ep = Endpoint {
            container_id: &a.container_id,
            ifname: &a.ifname,
            netns: &ns,
            mac,
            ips: shared::ip_confs(&result),
            routes: shared::route_confs(&result),
        };
        let att = driver::attach(&h, c.mtu(), &ep).cni()?;
        if c.ip_masq {
            if let Err(e) = crate::masq::ensure(a, &result) {
                let _ = driver::detach(&h, &a.container_id, &a.ifname, Some(&ns));
                return Err(e);
            }
        }
        release.disarm();
        shared::finish_result(
            a,
            &mut result,
            vec![
                Interface {
                    name: att.host.name,
                    mac: att.host.mac,
                    mtu: c.mtu(),
                    ..Default::default()
                },
                Interface {
                    name: att.container.name,
                    mac: att.container.mac,
                    mtu: c.mtu(),
                    sandbox: ns.path().display().to_string(),
                    ..Default::default()
                },
            ],
        );
        Ok(result)
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        shared::teardown(
            |errs| {
                errs.note(ipam::del(a));
                if c.ip_masq {
                    errs.note(crate::masq::del(a));
                }
            },
            || {
                let ns = shared::netns_if_any(a);
                let h = Handle::new().cni()?;
                match driver::detach(&h, &a.container_id, &a.ifname, ns.as_ref()) {
                    Err(e) if e.kind() != libnet::Kind::NotFound => {
                        Err(CniError::from_kind(e.kind(), &e))
                    }
                    _ => Ok(()),
                }
            },
        )
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        let prev = shared::prev_result(a)?;
        ipam::check(a)?;
        let ns = shared::open_netns(a)?;
        let h = Handle::new().cni()?;
        let want = driver::Expected {
            container_id: &a.container_id,
            ifname: &a.ifname,
            netns: &ns,
            mac: shared::container_iface(a, &prev).map(|i| i.mac.as_str()),
            mtu: c.mtu(),
            ips: shared::ip_confs(&prev),
            routes: prev.routes.iter().map(|r| r.dst).collect(),
        };
        driver::check(&h, &want).cni_ctx("CHECK")?;
        if c.ip_masq {
            crate::masq::check(a, &prev)?;
        }
        Ok(())
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        ipam::gc(a)?;
        if c.ip_masq {
            crate::masq::gc(a)?;
        }
        Ok(())
    }

    fn status(&self, a: &Args) -> Result<(), CniError> {
        Conf::load(a).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::shared::tests::call;

    #[test]
    fn bad_input_is_invalid_config() {
        for conf in [
            r#"{"cniVersion":"1.0.0","name":"n","type":"ptp"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"ptp","mtu":-1,"ipam":{"type":"static"}}"#,
        ] {
            let (code, out) = call(&Ptp, "ADD", conf);
            assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{conf}: {out}");
        }
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"ptp","ipMasq":"yes","ipam":{"type":"static"}}"#;
        assert_eq!(call(&Ptp, "ADD", conf).1["code"], 6);
    }
}
