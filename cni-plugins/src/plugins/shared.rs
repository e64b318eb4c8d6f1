//! What the interface-making plugins (bridge, ptp, macvlan, vlan, dummy, host-device) share:
//! the translation of a CNI call into libnet's endpoint lifecycle (the IPAM delegation as its
//! address source, the request, the rendering of its result) and the small look-ups of their
//! configuration (namespace, requested MAC, the container interface of a prevResult). The
//! flow itself (allocate → wire → filters, one undo stack; the tolerant, parallel DEL) is
//! libnet's, not here.

use libnet::driver::{Driver, IpConf, RouteConf};
use libnet::endpoint::{self, boxed, AddressSource, Addressing, BoxError, Filter, Request};
use libnet::netlink::link::parse_mac;
use libnet::netns::NetNs;
use serde_json::Value;

use crate::ipam;
use crate::skel::{Args, CniError, OrCni};
use crate::types::{CniResult, Interface};

pub fn open_netns(a: &Args) -> Result<NetNs, CniError> {
    let path = a
        .netns
        .as_ref()
        .ok_or_else(|| CniError::new(crate::skel::ERR_INVALID_ENV, "CNI_NETNS is not set"))?;
    NetNs::open(path).cni_ctx("opening the container's network namespace")
}

/// The container's namespace on DEL: `None` when not given or already gone.
pub fn netns_if_any(a: &Args) -> Option<NetNs> {
    a.netns.as_ref().and_then(|p| NetNs::open(p).ok())
}

/// The MAC asked for through `runtimeConfig.mac`, `args.cni.mac`, `CNI_ARGS` `MAC=` or the
/// plugin's own `mac` field, strongest first.
pub fn requested_mac(a: &Args, conf_mac: &str) -> Result<Option<[u8; 6]>, CniError> {
    let s = a
        .conf
        .runtime_config
        .get("mac")
        .and_then(Value::as_str)
        .or_else(|| a.conf.args.pointer("/cni/mac").and_then(Value::as_str))
        .or_else(|| a.cni_arg("MAC"))
        .or(Some(conf_mac));
    match s {
        None | Some("") => Ok(None),
        Some(s) => parse_mac(s)
            .map(Some)
            .ok_or_else(|| CniError::config(format!("invalid MAC address {s:?}"))),
    }
}

/// A previous result's addresses as the drivers' CHECK expects them.
pub fn ip_confs(r: &CniResult) -> Vec<IpConf> {
    addressing(r).ips
}

/// An IPAM result as the lifecycle's addressing.
pub fn addressing(r: &CniResult) -> Addressing {
    Addressing {
        ips: r
            .ips
            .iter()
            .map(|ip| IpConf {
                addr: ip.address,
                gateway: ip.gateway,
            })
            .collect(),
        routes: r
            .routes
            .iter()
            .map(|r| RouteConf {
                dst: r.dst,
                gw: r.gw,
            })
            .collect(),
    }
}

/// The container-side interface of a previous result: named IFNAME, in a sandbox.
pub fn container_iface<'r>(a: &Args, prev: &'r CniResult) -> Option<&'r Interface> {
    prev.interfaces
        .iter()
        .find(|i| i.name == a.ifname && !i.sandbox.is_empty())
}

pub fn prev_result(a: &Args) -> Result<CniResult, CniError> {
    a.prev_result()?
        .ok_or_else(|| CniError::config("required prevResult missing"))
}

/// A plugin's own completion of an IPAM result (the bridge's gateways and default routes).
pub type Complete<'a> = Box<dyn Fn(&mut CniResult) -> Result<(), CniError> + Send + 'a>;

/// CNI's IPAM delegation (`ipam.type`, in-process or exec'd) as the lifecycle's address
/// source. Without an `ipam` section the endpoint is layer 2 only. The full IPAM result (DNS,
/// interfaces) is kept for the rendering of the plugin's result.
pub struct CniIpam<'a> {
    a: &'a Args,
    complete: Option<Complete<'a>>,
    pub result: CniResult,
}

impl<'a> CniIpam<'a> {
    pub fn new(a: &'a Args) -> CniIpam<'a> {
        CniIpam {
            a,
            complete: None,
            result: CniResult::default(),
        }
    }

    /// Complete the IPAM result with `f` before the driver sees it.
    pub fn completed_by(mut self, f: Complete<'a>) -> CniIpam<'a> {
        self.complete = Some(f);
        self
    }

    pub fn is_layer2(&self) -> bool {
        ipam::ipam_type(self.a).is_empty()
    }
}

impl AddressSource for CniIpam<'_> {
    fn allocate(&mut self, _: &Request<'_>) -> Result<Addressing, BoxError> {
        if self.is_layer2() {
            return Ok(Addressing::default());
        }
        let mut r = ipam::add(self.a).map_err(boxed)?;
        let checked = if r.ips.is_empty() {
            Err(CniError::config("IPAM plugin returned missing IP config"))
        } else {
            self.complete.as_ref().map_or(Ok(()), |f| f(&mut r))
        };
        if let Err(e) = checked {
            // Reserved but refused: given back here, the lifecycle has not registered it yet.
            if let Err(u) = ipam::del(self.a) {
                eprintln!("knit: rolling back: could not release the addresses: {u}");
            }
            return Err(boxed(e));
        }
        let addrs = addressing(&r);
        self.result = r;
        Ok(addrs)
    }

    fn release(&mut self, _: &Request<'_>) -> Result<(), BoxError> {
        if self.is_layer2() {
            return Ok(());
        }
        ipam::del(self.a).map_err(boxed)
    }
}

/// The lifecycle's request for this invocation.
pub fn request<'a>(a: &'a Args, netns: Option<&'a NetNs>, mac: Option<[u8; 6]>) -> Request<'a> {
    Request {
        network: &a.conf.name,
        container_id: &a.container_id,
        ifname: &a.ifname,
        netns,
        mac,
    }
}

/// ADD through the lifecycle, rendered as the plugin's result: the IPAM result with the links
/// the driver made (shared link, host end, then the container's, which every address belongs
/// to); `mtu` is reported on the host end and the container's link.
pub fn attach(
    a: &Args,
    ns: &NetNs,
    mac: Option<[u8; 6]>,
    mut source: CniIpam<'_>,
    driver: &dyn Driver,
    filters: &[&dyn Filter],
    mtu: Option<u32>,
) -> Result<CniResult, CniError> {
    let req = request(a, Some(ns), mac);
    let att = endpoint::attach(&req, &mut source, driver, filters)?;
    let w = att.wired;
    let mut interfaces = Vec::new();
    if let Some(br) = w.bridge {
        interfaces.push(Interface {
            name: br.name,
            mac: br.mac,
            ..Default::default()
        });
    }
    if let Some(host) = w.host {
        interfaces.push(Interface {
            name: host.name,
            mac: host.mac,
            mtu,
            ..Default::default()
        });
    }
    interfaces.push(Interface {
        name: w.container.name,
        mac: w.container.mac,
        mtu,
        sandbox: ns.path().display().to_string(),
        ..Default::default()
    });
    let mut result = source.result;
    finish_result(a, &mut result, interfaces);
    Ok(result)
}

/// DEL through the lifecycle: the namespace if it is still there, everything keyed by
/// (network, container id, ifname).
pub fn detach(a: &Args, driver: &dyn Driver, filters: &[&dyn Filter]) -> Result<(), CniError> {
    let ns = netns_if_any(a);
    let req = request(a, ns.as_ref(), None);
    Ok(endpoint::detach(
        &req,
        &mut CniIpam::new(a),
        driver,
        filters,
    )?)
}

/// The end of every interface-making ADD: the result names `interfaces`, the last of which is
/// the container's and holds every address, and carries the configuration's `dns` when it has
/// one (else IPAM's).
pub fn finish_result(a: &Args, result: &mut CniResult, interfaces: Vec<Interface>) {
    let container = interfaces.len().checked_sub(1);
    result.interfaces = interfaces;
    for ip in &mut result.ips {
        ip.interface = container;
    }
    if !a.conf.dns.is_empty() {
        result.dns = a.conf.dns.clone();
    }
}

/// DEL's error bookkeeping: keep going, report the first error.
#[derive(Default)]
pub struct FirstErr(Option<CniError>);

impl FirstErr {
    pub fn note<T>(&mut self, r: Result<T, CniError>) {
        if let Err(e) = r {
            self.0.get_or_insert(e);
        }
    }
    pub fn finish(self) -> Result<(), CniError> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
pub mod tests {
    use serde::Deserialize;
    use serde_json::Value;

    use crate::skel::{run, Args, Command, NetConf, Plugin};

    /// Run `p` for `cmd` like a runtime would, with a namespace path that does not exist:
    /// configuration errors must come out before anything touches the kernel.
    pub fn call(p: &dyn Plugin, cmd: &str, conf: &str) -> (i32, Value) {
        let env: &[(&str, &str)] = &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/nonexistent/knit-unit-test"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ];
        let mut out = Vec::new();
        let code = run(p, &env, &mut conf.as_bytes(), &mut out);
        let v = serde_json::from_slice(&out).unwrap_or(Value::Null);
        (code, v)
    }

    /// Parsed arguments for calling a plugin's own functions.
    pub fn args(cmd: &str, conf: &str) -> Args {
        let raw: Value = serde_json::from_str(conf).unwrap();
        let command = match cmd {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            _ => Command::Status,
        };
        Args {
            command,
            container_id: "c1".into(),
            netns: Some("/nonexistent/knit-unit-test".into()),
            ifname: "eth0".into(),
            path: Vec::new(),
            cni_args: Vec::new(),
            stdin: conf.as_bytes().to_vec(),
            conf: NetConf::deserialize(&raw).unwrap(),
            raw,
            ctx: Default::default(),
        }
    }
}
