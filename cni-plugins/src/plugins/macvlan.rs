//! `macvlan`: a macvlan link on a master, moved into the container under CNI_IFNAME
//! (containernetworking/plugins `plugins/main/macvlan`): `master` (default: the link of the
//! default route, in the container's namespace with `linkInContainer`), `mode` (bridge,
//! private, vepa, passthru), `mtu` (at most the master's), `mac`; IPAM optional (layer 2 only
//! without). The verbs are in [`super::sublink`].

use libnet::driver::macvlan::{default_route_link, SubKind, SubNet};
use libnet::netlink::link::MacvlanMode;
use libnet::netlink::Handle;
use serde::Deserialize;

use super::{shared, sublink};
use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::CniResult;

pub struct Macvlan;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conf {
    #[serde(default)]
    master: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    link_in_container: bool,
}

impl Conf {
    /// Everything that can be judged without the kernel.
    fn parse(a: &Args) -> Result<(Conf, MacvlanMode), CniError> {
        let c: Conf = a.parse()?;
        let mode = MacvlanMode::parse(&c.mode)
            .ok_or_else(|| CniError::config(format!("unknown macvlan mode: {:?}", c.mode)))?;
        if !(0..=65535).contains(&c.mtu) {
            return Err(CniError::config(format!(
                "invalid MTU {}, must be [0, master MTU]",
                c.mtu
            )));
        }
        Ok((c, mode))
    }

    /// The full network, with the default master looked up where the configuration says.
    fn load(a: &Args) -> Result<(SubNet, String), CniError> {
        let (c, mode) = Conf::parse(a)?;
        let mut master = c.master.clone();
        if master.is_empty() {
            let h = if c.link_in_container {
                Handle::new_in(&shared::open_netns(a)?).cni()?
            } else {
                Handle::new().cni()?
            };
            master = default_route_link(&h).cni()?.ok_or_else(|| {
                CniError::config("no master given and no default route interface found")
            })?;
        }
        let net = SubNet {
            kind: SubKind::Macvlan(mode),
            master: Some(master),
            master_in_container: c.link_in_container,
            mtu: (c.mtu > 0).then_some(c.mtu as u32),
        };
        Ok((net, c.mac))
    }
}

impl Plugin for Macvlan {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let (net, mac) = Conf::load(a)?;
        sublink::add(a, &net, &mac)
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        // No master lookup: DEL must work when the master (or the namespace) is gone.
        Conf::parse(a)?;
        sublink::del(a)
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let (net, _) = Conf::load(a)?;
        sublink::check(a, &net)
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        Conf::parse(a)?;
        sublink::gc(a)
    }

    fn status(&self, a: &Args) -> Result<(), CniError> {
        Conf::parse(a).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::shared::tests::call;

    #[test]
    fn bad_input_is_invalid_config() {
        let cases = [
            (r#""mode": "source""#, "unknown macvlan mode"),
            (r#""mode": "bogus""#, "unknown macvlan mode"),
            (r#""mtu": -1"#, "invalid MTU"),
        ];
        for (field, msg) in cases {
            let conf = format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"eth9",{field}}}"#
            );
            let (code, out) = call(&Macvlan, "ADD", &conf);
            assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{field}: {out}");
            assert!(out["msg"].as_str().unwrap().contains(msg), "{out}");
        }
        let conf =
            r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"eth9","mac":"zz"}"#;
        assert_eq!(call(&Macvlan, "ADD", conf).1["code"], 7);
    }

    #[test]
    fn every_mode_parses() {
        for m in ["", "bridge", "private", "vepa", "passthru"] {
            let conf =
                format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"macvlan","mode":"{m}"}}"#);
            let a = crate::plugins::shared::tests::args("STATUS", &conf);
            assert_eq!(
                Conf::parse(&a).unwrap().1.as_str(),
                if m.is_empty() { "bridge" } else { m }
            );
        }
    }
}
