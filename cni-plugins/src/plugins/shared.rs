//! Pieces shared by the plugins that hand a link to the container (ptp, macvlan, vlan, dummy,
//! host-device): opening the namespace, the requested MAC, IPAM results as driver input, the
//! container interface of a prevResult, and giving addresses back when an ADD fails.

use libnet::driver::bridge::{IpConf, RouteConf};
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

pub fn ip_confs(r: &CniResult) -> Vec<IpConf> {
    r.ips
        .iter()
        .map(|ip| IpConf {
            addr: ip.address,
            gateway: ip.gateway,
        })
        .collect()
}

pub fn route_confs(r: &CniResult) -> Vec<RouteConf> {
    r.routes
        .iter()
        .map(|r| RouteConf {
            dst: r.dst,
            gw: r.gw,
        })
        .collect()
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

/// Run IPAM when the network has one; `None` for a layer-2-only attachment.
pub fn ipam_add(a: &Args) -> Result<Option<CniResult>, CniError> {
    if ipam::ipam_type(a).is_empty() {
        return Ok(None);
    }
    let r = ipam::add(a)?;
    if r.ips.is_empty() {
        let _ = ipam::del(a);
        return Err(CniError::config("IPAM plugin returned missing IP config"));
    }
    Ok(Some(r))
}

/// Gives an ADD's addresses back to IPAM unless disarmed.
pub struct ReleaseOnError<'a> {
    a: &'a Args,
    armed: bool,
}

impl ReleaseOnError<'_> {
    pub fn new(a: &Args, armed: bool) -> ReleaseOnError<'_> {
        ReleaseOnError { a, armed }
    }
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ReleaseOnError<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = ipam::del(self.a);
        }
    }
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

/// DEL of an endpoint with a link: the bookkeeping (address release, nftables elements) runs
/// beside the link deletion. Deleting a link and closing an nf_tables socket after a delete
/// each wait for an RCU grace period in the kernel (~15 ms here); concurrent waits share one.
/// Everything is attempted; the first failure (bookkeeping first) is returned.
pub fn teardown(
    bookkeeping: impl FnOnce(&mut FirstErr) + Send,
    link: impl FnOnce() -> Result<(), CniError>,
) -> Result<(), CniError> {
    std::thread::scope(|s| {
        let side = s.spawn(|| {
            let mut errs = FirstErr::default();
            bookkeeping(&mut errs);
            errs
        });
        let linked = link();
        let mut errs = side.join().unwrap_or_else(|_| {
            FirstErr(Some(CniError::new(
                crate::skel::ERR_INTERNAL,
                "DEL: teardown thread panicked",
            )))
        });
        errs.note(linked);
        errs.finish()
    })
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
