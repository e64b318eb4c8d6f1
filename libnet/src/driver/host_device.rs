//! The host-device driver: lend an existing host link to a container and take it back.
//!
//! Attach, in order (each step registered with the undo guard):
//! 1. find the link (by name, MAC, `/sys/devices/...` path or PCI address);
//! 2. write a small state file (original name, up/down, alias) and set the alias to the
//!    original name (`ip link set DEV alias DEV`), as the reference does, so either plugin set
//!    can take it back;
//! 3. `ip link set DEV down`, `ip link set DEV netns CTR`, in the container `ip link set DEV
//!    name IFNAME`, addresses and routes (up).
//!
//! Detach, in the container: `ip link set IFNAME down`, `name ORIG`, `netns HOST`. The device
//! stays down on the host with its name as alias, exactly as the reference leaves it (the
//! differential test compares the two); only a failed attach restores the old alias and
//! up/down state. Without the container's namespace there is nothing to move: a physical
//! device returns to the initial namespace by itself when the namespace dies, a virtual one
//! dies with it; only the state file goes.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::iface::{self, Want};
use super::DriverError;
use super::{Driver, Endpoint, LinkRef, Wired};
use crate::netlink::link::parse_mac;
use crate::netlink::{Handle, Link};
use crate::netns::NetNs;
use crate::undo::Undo;

/// How the configuration names the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Name(String),
    Mac([u8; 6]),
    /// `/sys/devices/...` of the device; its `net/` directory names the link.
    KernelPath(PathBuf),
    /// `0000:00:1f.6`; `/sys/bus/pci/devices/ID/net/` (or `virtio*/net/`) names the link.
    PciBusId(String),
}

const SYS_BUS_PCI: &str = "/sys/bus/pci/devices";

impl Selector {
    /// Exactly one of the four must be given.
    pub fn from_fields(
        device: &str,
        hwaddr: &str,
        kernelpath: &str,
        pci: &str,
    ) -> Result<Selector, DriverError> {
        let given = [device, hwaddr, kernelpath, pci]
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        if given != 1 {
            return Err(DriverError::Invalid(
                "specify either \"device\", \"hwaddr\", \"kernelpath\" or \"pciBusID\"".into(),
            ));
        }
        if !device.is_empty() {
            return Ok(Selector::Name(device.into()));
        }
        if !hwaddr.is_empty() {
            return parse_mac(hwaddr)
                .map(Selector::Mac)
                .ok_or_else(|| DriverError::Invalid(format!("invalid hwaddr {hwaddr:?}")));
        }
        if !kernelpath.is_empty() {
            let p = Path::new(kernelpath);
            if !p.is_absolute()
                || !kernelpath.starts_with("/sys/devices/")
                || kernelpath.contains("..")
            {
                return Err(DriverError::Invalid(format!(
                    "kernel device path {kernelpath:?} must be absolute and begin with /sys/devices/"
                )));
            }
            return Ok(Selector::KernelPath(p.into()));
        }
        if pci.contains('/') || pci.starts_with('.') {
            return Err(DriverError::Invalid(format!("invalid pciBusID {pci:?}")));
        }
        Ok(Selector::PciBusId(pci.into()))
    }

    /// The directories whose entries are the candidate link names.
    fn net_dirs(&self) -> Vec<PathBuf> {
        match self {
            Selector::KernelPath(p) => vec![p.join("net")],
            Selector::PciBusId(id) => {
                let dev = Path::new(SYS_BUS_PCI).join(id);
                let mut dirs = vec![dev.join("net")];
                if let Ok(rd) = std::fs::read_dir(&dev) {
                    for e in rd.flatten() {
                        if e.file_name().to_string_lossy().starts_with("virtio") {
                            dirs.push(e.path().join("net"));
                        }
                    }
                }
                dirs
            }
            _ => Vec::new(),
        }
    }
}

/// Find the device among the host's links.
pub fn find(h: &Handle, sel: &Selector) -> Result<Link, DriverError> {
    let links = h.links()?;
    let found = match sel {
        Selector::Name(n) => links.into_iter().find(|l| &l.name == n),
        Selector::Mac(m) => links.into_iter().find(|l| l.mac == m),
        _ => {
            let names: Vec<String> = sel
                .net_dirs()
                .iter()
                .filter_map(|d| std::fs::read_dir(d).ok())
                .flat_map(|rd| rd.flatten())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            links.into_iter().find(|l| names.contains(&l.name))
        }
    };
    found.ok_or_else(|| DriverError::Invalid(format!("no host link matches {sel:?}")))
}

/// What DEL needs to give the device back as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub name: String,
    pub up: bool,
    #[serde(default)]
    pub alias: Option<String>,
    /// The device's MAC, so DEL never takes a link of the container that was not lent.
    #[serde(default)]
    pub mac: String,
}

fn io_err(path: &Path, e: std::io::Error) -> DriverError {
    DriverError::State {
        path: path.display().to_string(),
        source: e,
    }
}

fn save(path: &Path, s: &Saved) -> Result<(), DriverError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(s).unwrap_or_default();
    std::fs::write(&tmp, body).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn load(path: &Path) -> Option<Saved> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn forget(path: &Path) -> Result<(), DriverError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path, e)),
        _ => Ok(()),
    }
}

/// The host-device driver: lends the link `sel` names; DEL's state lives in the file `state`.
#[derive(Debug)]
pub struct HostDevice<'h> {
    pub h: &'h Handle,
    pub sel: Selector,
    pub state: PathBuf,
}

impl Driver for HostDevice<'_> {
    fn attach<'u>(&'u self, ep: &Endpoint<'_>, undo: &mut Undo<'u>) -> Result<Wired, DriverError> {
        let container = attach(self.h, &self.sel, ep, &self.state, undo)?;
        Ok(Wired {
            bridge: None,
            host: None,
            container,
        })
    }

    fn detach(&self, _: &str, ifname: &str, netns: Option<&NetNs>) -> Result<(), DriverError> {
        detach(self.h, ifname, netns, &self.state)
    }
}

/// Steps 1–3 of the module note. On error (here or later in the lifecycle) the undo puts the
/// device back in the host as it was and removes the state file.
fn attach<'h>(
    h: &'h Handle,
    sel: &Selector,
    ep: &Endpoint<'_>,
    state: &'h Path,
    undo: &mut Undo<'h>,
) -> Result<LinkRef, DriverError> {
    let dev = find(h, sel)?;
    let saved = Saved {
        name: dev.name.clone(),
        up: dev.is_up(),
        alias: dev.alias.clone(),
        mac: dev.mac_string(),
    };
    let host_ns = NetNs::current()?;
    let c = Rc::new(Handle::new_in(ep.netns)?);
    save(state, &saved)?;
    undo.push(format!("state file {}", state.display()), move || {
        forget(state)
    });
    h.set_alias(dev.index, &dev.name)?;
    let (s, cr, ifname, mac) = (
        saved.clone(),
        Rc::clone(&c),
        ep.ifname.to_string(),
        dev.mac.clone(),
    );
    undo.push(format!("host device {} lent", dev.name), move || {
        // Wherever it got to: still in the host, or in the container under either name (an
        // IFNAME the container had before is not ours: the MAC tells them apart).
        if let Some(l) = h.find_link(&s.name)? {
            return restore_on_host(h, l.index, &s);
        }
        let mut ours = None;
        for n in [s.name.as_str(), ifname.as_str()] {
            if let Some(l) = cr.find_link(n)?.filter(|l| l.mac == mac) {
                ours = Some(l);
                break;
            }
        }
        match ours {
            Some(l) => {
                let i = move_back(&cr, &l, &host_ns, h, &s.name)?;
                restore_on_host(h, i, &s)
            }
            None => Err(DriverError::Invalid(format!(
                "{} is neither in the host nor in the container",
                s.name
            ))),
        }
    });
    h.set_up(dev.index, false)?;
    h.set_netns(dev.index, ep.netns)?;
    let link = c.link_by_name(&dev.name)?;
    if let Err(e) = c.rename(link.index, ep.ifname) {
        if e.errno() == Some(libc::EEXIST) {
            return Err(DriverError::Exists(format!(
                "the container already has an interface {}",
                ep.ifname
            )));
        }
        return Err(e.into());
    }
    iface::configure(&c, link.index, &ep.ips, &ep.routes)?;
    let link = c.link_by_index(link.index)?;
    Ok(LinkRef {
        name: link.name.clone(),
        mac: link.mac_string(),
    })
}

fn restore_on_host(h: &Handle, index: u32, s: &Saved) -> Result<(), DriverError> {
    h.set_alias(index, s.alias.as_deref().unwrap_or_default())?;
    h.set_up(index, s.up)?;
    Ok(())
}

/// In the container: down, original name, back to `host_ns`; the device's index on the host.
fn move_back(
    c: &Handle,
    l: &Link,
    host_ns: &NetNs,
    h: &Handle,
    name: &str,
) -> Result<u32, DriverError> {
    c.set_up(l.index, false)?;
    if l.name != name {
        c.rename(l.index, name)?;
    }
    c.set_netns(l.index, host_ns)?;
    Ok(h.link_by_name(name)?.index)
}

/// Give the device back, down and with its name as alias (as the reference does). Tolerant: a
/// missing link or namespace is success.
pub fn detach(
    h: &Handle,
    ifname: &str,
    netns: Option<&NetNs>,
    state: &Path,
) -> Result<(), DriverError> {
    if let Some(ns) = netns {
        let c = Handle::new_in(ns)?;
        if let Some(l) = c.find_link(ifname)? {
            // Without our state file (a reference ADD), the alias holds the original name; a
            // link with neither, or with another MAC, was not lent by us and stays.
            let s = load(state).or_else(|| {
                l.alias.clone().map(|name| Saved {
                    name,
                    up: false,
                    alias: None,
                    mac: String::new(),
                })
            });
            if let Some(s) = s.filter(|s| s.mac.is_empty() || s.mac == l.mac_string()) {
                let host_ns = NetNs::current()?;
                move_back(&c, &l, &host_ns, h, &s.name)?;
            }
        }
    }
    forget(state)
}

/// What CHECK expects, from the previous result.
#[derive(Debug)]
pub struct Expected<'a> {
    pub ifname: &'a str,
    pub netns: &'a NetNs,
    pub mac: Option<&'a str>,
    pub ips: Vec<IpNet>,
    pub routes: Vec<IpNet>,
}

/// Verify the device is in the container as IFNAME with its MAC, addresses and routes.
pub fn check(want: &Expected<'_>) -> Result<(), DriverError> {
    let c = Handle::new_in(want.netns)?;
    iface::check(
        &c,
        &Want {
            ifname: want.ifname,
            mac: want.mac,
            ips: &want.ips,
            routes: &want.routes,
            ..Default::default()
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_selector() {
        assert!(Selector::from_fields("", "", "", "").is_err());
        assert!(Selector::from_fields("eth1", "0a:58:00:00:00:01", "", "").is_err());
        assert_eq!(
            Selector::from_fields("eth1", "", "", "").unwrap(),
            Selector::Name("eth1".into())
        );
        assert_eq!(
            Selector::from_fields("", "0A:58:00:00:00:01", "", "").unwrap(),
            Selector::Mac([0x0a, 0x58, 0, 0, 0, 1])
        );
        assert!(Selector::from_fields("", "0a:58", "", "").is_err());
        assert!(Selector::from_fields("", "", "/tmp/x", "").is_err());
        assert!(Selector::from_fields("", "", "/sys/devices/../etc", "").is_err());
        assert!(matches!(
            Selector::from_fields("", "", "/sys/devices/pci0000:00/0000:00:03.0", ""),
            Ok(Selector::KernelPath(_))
        ));
        assert!(Selector::from_fields("", "", "", "../x").is_err());
        assert_eq!(
            Selector::from_fields("", "", "", "0000:00:03.0").unwrap(),
            Selector::PciBusId("0000:00:03.0".into())
        );
    }

    #[test]
    fn state_round_trips() {
        let dir = std::env::temp_dir().join(format!("knit-hd-{}", std::process::id()));
        let p = dir.join("c1-eth1");
        let s = Saved {
            name: "enp3s0".into(),
            up: true,
            alias: Some("uplink".into()),
            mac: "0a:58:00:00:00:01".into(),
        };
        save(&p, &s).unwrap();
        assert_eq!(load(&p), Some(s));
        forget(&p).unwrap();
        forget(&p).unwrap();
        assert_eq!(load(&p), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
