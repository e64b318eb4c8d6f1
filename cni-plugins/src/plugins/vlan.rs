//! `vlan`: an 802.1Q link on a master, moved into the container under CNI_IFNAME
//! (containernetworking/plugins `plugins/main/vlan`): `master` (required; looked up in the
//! container's namespace with `linkInContainer`), `vlanId` (0..=4094), `mtu` (at most the
//! master's); IPAM optional. The verbs are in [`super::sublink`]. (The kernel this was built
//! on has no 8021q: the messages are unit-tested in libnet, the kernel tests say "not run".)

use libnet::driver::macvlan::{SubKind, SubNet};
use serde::Deserialize;

use super::sublink;
use crate::skel::{Args, CniError, Plugin};
use crate::types::CniResult;

pub struct Vlan;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conf {
    #[serde(default)]
    master: String,
    #[serde(default)]
    vlan_id: i64,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    link_in_container: bool,
}

impl Conf {
    fn load(a: &Args) -> Result<SubNet, CniError> {
        let c: Conf = a.parse()?;
        if c.master.is_empty() {
            return Err(CniError::config(
                "\"master\" field is required. It specifies the host interface name to create the VLAN for",
            ));
        }
        if !(0..=4094).contains(&c.vlan_id) {
            return Err(CniError::config(format!(
                "invalid VLAN ID {} (must be between 0 and 4094 inclusive)",
                c.vlan_id
            )));
        }
        if !(0..=65535).contains(&c.mtu) {
            return Err(CniError::config(format!(
                "invalid MTU {}, must be [0, master MTU]",
                c.mtu
            )));
        }
        Ok(SubNet {
            kind: SubKind::Vlan(c.vlan_id as u16),
            master: Some(c.master),
            master_in_container: c.link_in_container,
            mtu: (c.mtu > 0).then_some(c.mtu as u32),
        })
    }
}

impl Plugin for Vlan {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        sublink::add(a, &Conf::load(a)?, "")
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        Conf::load(a)?;
        sublink::del(a)
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        sublink::check(a, &Conf::load(a)?)
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        Conf::load(a)?;
        sublink::gc(a)
    }

    fn status(&self, a: &Args) -> Result<(), CniError> {
        Conf::load(a).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::shared::tests::{args, call};

    fn conf(fields: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"vlan"{fields}}}"#)
    }

    #[test]
    fn bad_input_is_invalid_config() {
        for (fields, msg) in [
            (r#","vlanId":5"#, "\"master\" field is required"),
            (r#","master":"eth0","vlanId":4095"#, "invalid VLAN ID 4095"),
            (r#","master":"eth0","vlanId":-1"#, "invalid VLAN ID -1"),
            (r#","master":"eth0","vlanId":1,"mtu":-5"#, "invalid MTU"),
        ] {
            for verb in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
                let v = if matches!(verb, "STATUS" | "GC") {
                    conf(fields).replace("1.0.0", "1.1.0")
                } else {
                    conf(fields)
                };
                let (code, out) = call(&Vlan, verb, &v);
                assert_eq!(
                    (code, out["code"].as_u64()),
                    (1, Some(7)),
                    "{verb} {fields}: {out}"
                );
                assert!(out["msg"].as_str().unwrap().contains(msg), "{out}");
            }
        }
        let (code, out) = call(&Vlan, "ADD", &conf(r#","master":"eth0","vlanId":"x""#));
        assert_eq!(
            (code, out["code"].as_u64()),
            (1, Some(6)),
            "a string id: {out}"
        );
    }

    #[test]
    fn good_config_becomes_a_vlan_subnet() {
        for id in [0, 1, 4094] {
            let a = args(
                "ADD",
                &conf(&format!(r#","master":"eth0","vlanId":{id},"mtu":1400"#)),
            );
            let net = Conf::load(&a).unwrap();
            assert_eq!(net.kind, SubKind::Vlan(id));
            assert_eq!(net.master.as_deref(), Some("eth0"));
            assert_eq!(net.mtu, Some(1400));
        }
    }
}
