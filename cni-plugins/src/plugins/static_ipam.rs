//! `static` IPAM: addresses written in the configuration, or passed by the runtime through
//! `CNI_ARGS` (`IP=a/n,b/m;GATEWAY=g`, which replace the configured ones), `args.cni.ips` or
//! `runtimeConfig.ips` (the `ips` capability; both added to them). Nothing is stored, so DEL has
//! nothing to do.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::skel::{Args, CniError, Plugin};
use crate::types::{CniResult, Dns, IpConfig, RouteEntry};

pub struct Static;

#[derive(Debug, Deserialize)]
struct Address {
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct Route {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
}

#[derive(Debug, Default, Deserialize)]
struct Conf {
    #[serde(default)]
    addresses: Vec<Address>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

fn parse_cidr(s: &str) -> Result<IpNet, CniError> {
    s.trim()
        .parse()
        .map_err(|_| CniError::config(format!("static: invalid address {s:?}: expected a CIDR")))
}

fn ips_from(v: Option<&Value>, what: &str) -> Result<Vec<IpNet>, CniError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let list = v
        .as_array()
        .ok_or_else(|| CniError::config(format!("static: {what} must be a list of CIDRs")))?;
    list.iter()
        .map(|s| {
            s.as_str()
                .ok_or_else(|| CniError::config(format!("static: {what} must hold strings")))
                .and_then(parse_cidr)
        })
        .collect()
}

/// The addresses of this attachment with every source merged as the reference merges them.
fn addresses(a: &Args) -> Result<(Vec<Address>, Conf), CniError> {
    let mut c: Conf = Conf::deserialize(&a.conf.ipam)
        .map_err(|e| CniError::config(format!("static: invalid ipam configuration: {e}")))?;
    let mut addrs = std::mem::take(&mut c.addresses);
    if let Some(ip) = a.cni_arg("IP") {
        let gateway = match a.cni_arg("GATEWAY") {
            Some(g) => Some(g.parse().map_err(|_| {
                CniError::config(format!("static: invalid GATEWAY {g:?} in CNI_ARGS"))
            })?),
            None => None,
        };
        addrs = ip
            .split(',')
            .map(|s| {
                Ok(Address {
                    address: parse_cidr(s)?,
                    gateway,
                })
            })
            .collect::<Result<_, CniError>>()?;
    }
    let extra = ips_from(a.conf.args.pointer("/cni/ips"), "args.cni.ips")?
        .into_iter()
        .chain(ips_from(
            a.conf.runtime_config.get("ips"),
            "runtimeConfig.ips",
        )?);
    addrs.extend(extra.map(|address| Address {
        address,
        gateway: None,
    }));
    for ad in &addrs {
        if let Some(gw) = ad.gateway {
            if gw.is_ipv4() != ad.address.addr().is_ipv4() {
                return Err(CniError::config(format!(
                    "static: gateway {gw} is not of the family of {}",
                    ad.address
                )));
            }
        }
    }
    Ok((addrs, c))
}

impl Plugin for Static {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let (addrs, c) = addresses(a)?;
        Ok(CniResult {
            ips: addrs
                .into_iter()
                .map(|ad| IpConfig {
                    interface: None,
                    address: ad.address,
                    gateway: ad.gateway,
                })
                .collect(),
            routes: c
                .routes
                .into_iter()
                .map(|r| RouteEntry::new(r.dst, r.gw))
                .collect(),
            dns: c.dns,
            ..Default::default()
        })
    }

    fn del(&self, _a: &Args) -> Result<(), CniError> {
        Ok(())
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        addresses(a).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skel::run;

    fn add(stdin: &str, cni_args: &str) -> (i32, Value) {
        let env: &[(&str, &str)] = &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", cni_args),
        ];
        let mut out = Vec::new();
        let code = run(&Static, &env, &mut stdin.as_bytes(), &mut out);
        (code, serde_json::from_slice(&out).unwrap())
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"n","type":"static","ipam":{"type":"static",
        "addresses":[{"address":"10.244.5.3/24","gateway":"10.244.5.1"},{"address":"fd00:6b6e:5::3/64"}],
        "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.244.5.1"]}},
        "runtimeConfig":{"ips":["10.244.6.9/24"]}}"#;

    #[test]
    fn config_and_runtime_addresses_merge() {
        let (code, v) = add(CONF, "");
        assert_eq!(code, 0, "{v}");
        let ips: Vec<&str> = v["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap())
            .collect();
        assert_eq!(ips, ["10.244.5.3/24", "fd00:6b6e:5::3/64", "10.244.6.9/24"]);
        assert_eq!(v["ips"][0]["gateway"], "10.244.5.1");
        assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(v["dns"]["nameservers"][0], "10.244.5.1");
    }

    #[test]
    fn cni_args_replace_configured_addresses() {
        let (code, v) = add(CONF, "IP=10.244.7.2/24;GATEWAY=10.244.7.1");
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["ips"][0]["address"], "10.244.7.2/24");
        assert_eq!(v["ips"][0]["gateway"], "10.244.7.1");
        assert_eq!(v["ips"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn bad_addresses_are_config_errors() {
        for bad in [
            "IP=10.244.7.2",
            "IP=10.244.7.2/24;GATEWAY=fd00::1",
            "IP=x/24",
        ] {
            let (code, v) = add(CONF, bad);
            assert_eq!((code, v["code"].as_u64()), (1, Some(7)), "{bad}: {v}");
        }
    }
}
