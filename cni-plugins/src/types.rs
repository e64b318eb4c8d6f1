//! The CNI result and its conversion between spec versions.
//!
//! Internally a result is always the 1.1.0 shape. Output is converted to the version the
//! configuration asked for: 0.3.x/0.4.0 carry `"version": "4"|"6"` on each IP, 1.0.0 drops the
//! fields 1.1.0 added (interface `mtu`/`socketPath`/`pciID`, route `mtu`/`advmss`/`priority`/
//! `table`/`scope`). A `prevResult` of any supported version parses into the same shape.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Spec versions this plugin set speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A version as a comparable triple; `None` for anything that is not `x.y.z`.
pub fn version_triple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

pub fn version_at_least(v: &str, min: &str) -> bool {
    match (version_triple(v), version_triple(min)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl RouteEntry {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> RouteEntry {
        RouteEntry {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CNI result in its 1.1.0 shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteEntry>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Parse a `prevResult` (or an IPAM plugin's answer) of any supported version.
    pub fn from_value(v: &Value) -> Result<CniResult, serde_json::Error> {
        CniResult::deserialize(v)
    }

    /// The JSON a plugin prints for a configuration of version `version`.
    pub fn to_version(&self, version: &str) -> Value {
        let mut r = self.clone();
        r.cni_version = version.to_string();
        if !version_at_least(version, "1.1.0") {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path.clear();
                i.pci_id.clear();
            }
            for rt in &mut r.routes {
                let gw = rt.gw;
                *rt = RouteEntry::new(rt.dst, gw);
            }
        }
        let mut v = serde_json::to_value(&r).unwrap_or_else(|_| json!({}));
        if !version_at_least(version, "1.0.0") {
            if let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut) {
                for (ip, src) in ips.iter_mut().zip(&r.ips) {
                    let fam = if src.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    ip["version"] = json!(fam);
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:f4:00:02".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/x".into(),
                ..Default::default()
            }],
            ips: vec![
                IpConfig {
                    interface: Some(0),
                    address: "10.244.0.2/24".parse().unwrap(),
                    gateway: "10.244.0.1".parse().ok(),
                },
                IpConfig {
                    interface: Some(0),
                    address: "fd00:6b6e::2/64".parse().unwrap(),
                    gateway: None,
                },
            ],
            routes: vec![RouteEntry {
                mtu: Some(1400),
                ..RouteEntry::new("0.0.0.0/0".parse().unwrap(), None)
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn old_versions_get_ip_versions_and_lose_new_fields() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let out = sample().to_version(v);
            assert_eq!(out["cniVersion"], v);
            assert_eq!(out["ips"][0]["version"], "4");
            assert_eq!(out["ips"][1]["version"], "6");
            assert!(out["interfaces"][0].get("mtu").is_none());
            assert!(out["routes"][0].get("mtu").is_none());
        }
        let out = sample().to_version("1.0.0");
        assert!(out["ips"][0].get("version").is_none());
        assert!(out["routes"][0].get("mtu").is_none());
        let out = sample().to_version("1.1.0");
        assert_eq!(out["routes"][0]["mtu"], 1400);
        assert_eq!(out["interfaces"][0]["mtu"], 1500);
        assert_eq!(out["dns"], json!({}));
    }

    #[test]
    fn prev_results_of_every_version_round_trip() {
        for v in SUPPORTED_VERSIONS {
            let out = sample().to_version(v);
            let back = CniResult::from_value(&out).unwrap();
            assert_eq!(back.ips, sample().ips, "{v}");
            assert_eq!(back.cni_version, *v);
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("0.4.0", "0.4.0"));
        assert!(version_at_least("1.0.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
        assert!(version_at_least("0.10.0", "0.4.0"));
        assert!(!version_at_least("x", "0.4.0"));
        assert_eq!(version_triple("1.0"), None);
    }
}
