//! `host-device`: lend an existing host link to the container as CNI_IFNAME and give it back on
//! DEL under its own name, down and with that name as alias (containernetworking/plugins
//! `plugins/main/host-device`): exactly one of `device`, `hwaddr`, `kernelpath`, `pciBusID`
//! (or `runtimeConfig.deviceID`, a PCI address, as device plugins pass it); IPAM optional.
//!
//! What DEL needs is kept in a state file keyed by container id and ifname
//! (`host-device/` under the call's state root, default `/run/cni/knit/host-device/`), and the original
//! name also in the link's alias, as the reference keeps it.

use std::path::PathBuf;

use libnet::driver::host_device::{self as driver, Selector};
use libnet::netlink::Handle;
use serde::Deserialize;
use serde_json::Value;

use super::shared::{self, CniIpam};
use crate::ipam;
use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::CniResult;

pub struct HostDevice;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conf {
    #[serde(default)]
    device: String,
    #[serde(default)]
    hwaddr: String,
    #[serde(default)]
    kernelpath: String,
    #[serde(default, rename = "pciBusID")]
    pci_bus_id: String,
}

fn selector(a: &Args) -> Result<Selector, CniError> {
    let c: Conf = a.parse()?;
    let mut pci = c.pci_bus_id;
    if pci.is_empty() && c.device.is_empty() && c.hwaddr.is_empty() && c.kernelpath.is_empty() {
        if let Some(id) = a
            .conf
            .runtime_config
            .get("deviceID")
            .and_then(Value::as_str)
        {
            pci = id.to_string();
        }
    }
    Selector::from_fields(&c.device, &c.hwaddr, &c.kernelpath, &pci).cni()
}

/// Where DEL finds what to restore: one file per (container id, ifname).
fn state_path(a: &Args) -> PathBuf {
    // Both parts are validated identifiers (skel): no '/' can escape the directory.
    a.ctx
        .state
        .host_device()
        .join(format!("{}-{}", a.container_id, a.ifname))
}

impl Plugin for HostDevice {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let sel = selector(a)?;
        let ns = shared::open_netns(a)?;
        let h = Handle::new().cni()?;
        let driver = driver::HostDevice {
            h: &h,
            sel,
            state: state_path(a),
        };
        shared::attach(a, &ns, None, CniIpam::new(a), &driver, &[], None)
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        let sel = selector(a)?;
        let h = Handle::new().cni()?;
        let driver = driver::HostDevice {
            h: &h,
            sel,
            state: state_path(a),
        };
        shared::detach(a, &driver, &[])
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        selector(a)?;
        let prev = shared::prev_result(a)?;
        if !ipam::ipam_type(a).is_empty() {
            ipam::check(a)?;
        }
        let ns = shared::open_netns(a)?;
        let want = driver::Expected {
            ifname: &a.ifname,
            netns: &ns,
            mac: shared::container_iface(a, &prev).map(|i| i.mac.as_str()),
            ips: prev.ips.iter().map(|ip| ip.address).collect(),
            routes: prev.routes.iter().map(|r| r.dst).collect(),
        };
        driver::check(&want).cni_ctx("CHECK")
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        if !ipam::ipam_type(a).is_empty() {
            ipam::gc(a)?;
        }
        Ok(())
    }

    fn status(&self, a: &Args) -> Result<(), CniError> {
        selector(a).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::shared::tests::{args, call};

    #[test]
    fn exactly_one_way_to_name_the_device() {
        for fields in [
            "",
            r#","device":"eth1","hwaddr":"0a:58:00:00:00:01""#,
            r#","kernelpath":"/etc/passwd""#,
            r#","hwaddr":"not-a-mac""#,
        ] {
            let conf =
                format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"host-device"{fields}}}"#);
            let (code, out) = call(&HostDevice, "ADD", &conf);
            assert_eq!(
                (code, out["code"].as_u64()),
                (1, Some(7)),
                "{fields}: {out}"
            );
        }
    }

    #[test]
    fn device_id_from_the_runtime_is_a_pci_address() {
        let a = args(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"n","type":"host-device","runtimeConfig":{"deviceID":"0000:00:03.0"}}"#,
        );
        assert_eq!(
            selector(&a).unwrap(),
            Selector::PciBusId("0000:00:03.0".into())
        );
        assert!(state_path(&a).ends_with("host-device/c1-eth0"));
    }
}
