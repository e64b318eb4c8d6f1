//! The `ipam` object of a host-local network config, parsed and canonicalised like the
//! reference's `LoadIPAMConfig`; plus resolv.conf parsing and the requested-IP sources.

use super::range::{canonical_ip, RangeSet, RawRange};
use super::IpamError;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the reference keeps its reservations when `dataDir` is not set.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// One address is allocated from each set (several sets = dual stack).
    pub ranges: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
}

/// A route for the result, as CNI's `types.Route` (`{"dst": ..., "gw": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// CNI's DNS result section, filled from a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl IpamConfig {
    /// Parse the `ipam` object of a network config.
    pub fn from_json(ipam: &Value) -> Result<IpamConfig, IpamError> {
        IpamConfig::from_json_with_runtime(ipam, None)
    }

    /// As [`from_json`](Self::from_json), with the `ipRanges` capability
    /// (`runtimeConfig.ipRanges`) prepended to the configured ranges, as the reference does.
    pub fn from_json_with_runtime(
        ipam: &Value,
        ip_ranges: Option<&Value>,
    ) -> Result<IpamConfig, IpamError> {
        let obj = ipam
            .as_object()
            .ok_or_else(|| IpamError::config("ipam", "expected an object"))?;
        let mut raw_sets: Vec<(String, Vec<RawRange>)> = Vec::new();
        if let Some(v) = ip_ranges.filter(|v| !v.is_null()) {
            raw_sets.extend(raw_range_sets(v, "runtimeConfig.ipRanges")?);
        }
        // The legacy single range (top-level subnet) comes before `ranges`.
        if let Some(subnet) = opt_net(obj, "subnet", "")? {
            raw_sets.push((
                String::new(),
                vec![RawRange {
                    subnet: Some(subnet),
                    range_start: opt_ip(obj, "rangeStart", "")?,
                    range_end: opt_ip(obj, "rangeEnd", "")?,
                    gateway: opt_ip(obj, "gateway", "")?,
                }],
            ));
        }
        if let Some(v) = obj.get("ranges").filter(|v| !v.is_null()) {
            raw_sets.extend(raw_range_sets(v, "ranges")?);
        }
        if raw_sets.is_empty() {
            return Err(IpamError::config("ranges", "no IP ranges specified"));
        }
        let mut ranges: Vec<RangeSet> = Vec::with_capacity(raw_sets.len());
        for (i, (field, raw)) in raw_sets.iter().enumerate() {
            let set = RangeSet::canonicalize(raw, field)?;
            if let Some(j) = ranges.iter().position(|s| s.overlaps(&set)) {
                let name = if field.is_empty() { "subnet" } else { field };
                return Err(IpamError::config(
                    name,
                    format!("range set {j} overlaps with {i}"),
                ));
            }
            ranges.push(set);
        }
        Ok(IpamConfig {
            ranges,
            routes: routes(obj)?,
            data_dir: opt_str(obj, "dataDir", "")?
                .filter(|s| !s.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
            resolv_conf: opt_str(obj, "resolvConf", "")?
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        })
    }
}

fn path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A string field; JSON null and absent are the same (Go's zero value).
fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    prefix: &str,
) -> Result<Option<&'a str>, IpamError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(IpamError::config(path(prefix, key), "expected a string")),
    }
}

/// An IP field; like Go's `net.IP`, an empty string means absent.
fn opt_ip(obj: &Map<String, Value>, key: &str, prefix: &str) -> Result<Option<IpAddr>, IpamError> {
    match opt_str(obj, key, prefix)? {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<IpAddr>()
            .map(|ip| Some(canonical_ip(ip)))
            .map_err(|_| IpamError::config(path(prefix, key), format!("invalid IP address {s:?}"))),
    }
}

fn parse_net(s: &str, field: String) -> Result<IpNet, IpamError> {
    s.parse::<IpNet>()
        .map_err(|_| IpamError::config(field, format!("invalid CIDR address {s:?}")))
}

fn opt_net(obj: &Map<String, Value>, key: &str, prefix: &str) -> Result<Option<IpNet>, IpamError> {
    opt_str(obj, key, prefix)?
        .map(|s| parse_net(s, path(prefix, key)))
        .transpose()
}

fn raw_range_sets(v: &Value, field: &str) -> Result<Vec<(String, Vec<RawRange>)>, IpamError> {
    let sets = v
        .as_array()
        .ok_or_else(|| IpamError::config(field, "expected an array of range sets"))?;
    let mut out = Vec::with_capacity(sets.len());
    for (i, set) in sets.iter().enumerate() {
        let sf = format!("{field}[{i}]");
        let ranges = set
            .as_array()
            .ok_or_else(|| IpamError::config(&sf, "expected an array of ranges"))?;
        let mut raw = Vec::with_capacity(ranges.len());
        for (j, r) in ranges.iter().enumerate() {
            let rf = format!("{sf}[{j}]");
            let o = r
                .as_object()
                .ok_or_else(|| IpamError::config(&rf, "expected an object"))?;
            let subnet = opt_net(o, "subnet", &rf)?
                .ok_or_else(|| IpamError::config(path(&rf, "subnet"), "missing"))?;
            raw.push(RawRange {
                subnet: Some(subnet),
                range_start: opt_ip(o, "rangeStart", &rf)?,
                range_end: opt_ip(o, "rangeEnd", &rf)?,
                gateway: opt_ip(o, "gateway", &rf)?,
            });
        }
        out.push((sf, raw));
    }
    Ok(out)
}

fn routes(obj: &Map<String, Value>) -> Result<Vec<Route>, IpamError> {
    let Some(v) = obj.get("routes").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let arr = v
        .as_array()
        .ok_or_else(|| IpamError::config("routes", "expected an array"))?;
    arr.iter()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("routes[{i}]");
            let o = r
                .as_object()
                .ok_or_else(|| IpamError::config(&f, "expected an object"))?;
            let dst = opt_net(o, "dst", &f)?
                .ok_or_else(|| IpamError::config(path(&f, "dst"), "missing"))?;
            Ok(Route {
                dst,
                gw: opt_ip(o, "gw", &f)?,
            })
        })
        .collect()
}

/// Parse resolv.conf text the way the reference does: `nameserver` (first argument),
/// `domain` (last one wins), `search` and `options` (all arguments, accumulated); comments
/// (`#`, `;`), blank lines and lines with fewer than two words are skipped.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 {
            continue;
        }
        let rest = f[1..].iter().map(|s| s.to_string());
        match f[0] {
            "nameserver" => dns.nameservers.push(f[1].to_string()),
            "domain" => dns.domain = f[1].to_string(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

/// Read and parse the `resolvConf` file named in the config.
pub fn read_resolv_conf(path: &Path) -> Result<Dns, IpamError> {
    std::fs::read_to_string(path)
        .map(|t| parse_resolv_conf(&t))
        .map_err(|e| IpamError::io("read resolvConf", path, e))
}

/// The requested addresses of an ADD, from the three places the reference reads them:
/// `CNI_ARGS` (`IP=...`), the network config's `args.cni.ips`, and `runtimeConfig.ips` (the
/// `ips` capability, which may carry a prefix length: `10.244.0.5/24`). Duplicates collapse.
pub fn requested_ips(cni_args: &str, net_conf: &Value) -> Result<Vec<IpAddr>, IpamError> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut push = |s: &str, field: &str| -> Result<(), IpamError> {
        let s = s.trim();
        let ip = s
            .parse::<IpAddr>()
            .or_else(|_| s.parse::<IpNet>().map(|n| n.addr()))
            .map_err(|_| IpamError::config(field, format!("cannot understand ip {s:?}")))?;
        let ip = canonical_ip(ip);
        if !out.contains(&ip) {
            out.push(ip);
        }
        Ok(())
    };
    for kv in cni_args.split(';') {
        if let Some(("IP", v)) = kv.split_once('=') {
            push(v, "CNI_ARGS.IP")?;
        }
    }
    let lists = [
        ("args.cni.ips", net_conf.pointer("/args/cni/ips")),
        ("runtimeConfig.ips", net_conf.pointer("/runtimeConfig/ips")),
    ];
    for (field, list) in lists {
        for v in list.and_then(Value::as_array).into_iter().flatten() {
            let s = v
                .as_str()
                .ok_or_else(|| IpamError::config(field, "expected strings"))?;
            push(s, field)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
