//! `ptp`: a veth pair per container, routed through the host end (containernetworking/plugins
//! `plugins/main/ptp`): options `ipMasq`, `mtu`, `dns`; IPAM required. The kernel work is
//! libnet's ptp driver; the result lists the host end, then the container end (index 1, which
//! every address belongs to), as the reference's does.

use libnet::driver::ptp as driver;
use libnet::driver::Driver;
use libnet::endpoint::filters::Masq;
use libnet::endpoint::Filter;
use libnet::netlink::Handle;
use serde::Deserialize;

use super::shared::{self, CniIpam};
use crate::ipam;
use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::CniResult;

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

/// Run `f` with the lifecycle's driver and the filters the configuration asks for (ipMasq).
fn with_endpoint<T>(
    a: &Args,
    c: &Conf,
    f: impl FnOnce(&dyn Driver, &[&dyn Filter]) -> Result<T, CniError>,
) -> Result<T, CniError> {
    let h = Handle::new().cni()?;
    let nft = a.nft();
    let masq = Masq { nft: &nft };
    let filters: &[&dyn Filter] = if c.ip_masq { &[&masq] } else { &[] };
    f(
        &driver::Ptp {
            h: &h,
            mtu: c.mtu(),
        },
        filters,
    )
}

impl Plugin for Ptp {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let c = Conf::load(a)?;
        let mac = shared::requested_mac(a, "")?;
        let ns = shared::open_netns(a)?;
        with_endpoint(a, &c, |driver, filters| {
            shared::attach(a, &ns, mac, CniIpam::new(a), driver, filters, c.mtu())
        })
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        with_endpoint(a, &c, |driver, filters| shared::detach(a, driver, filters))
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
