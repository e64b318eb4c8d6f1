//! An in-memory stand-in for the kernel behind [`Netlink`]: a model of one namespace's links,
//! addresses, routes, neighbour and FDB entries that answers like the kernel (same errnos,
//! same tolerance), and a record of every change asked of it. Built only under `cfg(test)`
//! or libnet's `fake` feature.
//!
//! A planner runs observe → diff → apply against it and a test then reads the model
//! ([`FakeNetlink::model`]) and the calls ([`FakeNetlink::calls`]). [`FakeNetlink::fail_next`]
//! makes one chosen operation fail, to test undo paths.
//!
//! Not modelled: routes the kernel adds by itself (connected and local routes), link
//! namespaces (a link created with `netns_fd` leaves this model at once), carrier.

use std::sync::{Mutex, MutexGuard};

use ipnet::IpNet;
use netlink_packet_route::link::LinkFlags;

use super::addr::Addr;
use super::link::NewLink;
use super::ops::Netlink;
use super::{BrportFlags, FdbEntry, Link, Neigh, NetlinkError, Result, Route, Vxlan};

/// One change asked of the fake, in the words of the trait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    DelLink(u32),
    SetUp(u32, bool),
    SetMaster(u32, u32),
    SetMtu(u32, u32),
    SetMac(u32, [u8; 6]),
    SetIpv4Devconf(u32, u16, u32),
    AddBridge(String),
    AddVxlan(String, Vxlan),
    SetBrportFlags(u32, BrportFlags),
    AddAddr(u32, IpNet),
    DelAddr(u32, IpNet),
    AddRoute(Route),
    ReplaceRoute(Route),
    DelRoute(Route),
    ReplaceNeigh(Neigh),
    DelNeigh(Neigh),
    AppendFdb(FdbEntry),
    ReplaceFdb(FdbEntry),
    DelFdb(FdbEntry),
}

impl Call {
    /// The trait method's name, as [`FakeNetlink::fail_next`] takes it.
    pub fn op(&self) -> &'static str {
        match self {
            Call::DelLink(..) => "del_link",
            Call::SetUp(..) => "set_up",
            Call::SetMaster(..) => "set_master",
            Call::SetMtu(..) => "set_mtu",
            Call::SetMac(..) => "set_mac",
            Call::SetIpv4Devconf(..) => "set_ipv4_devconf",
            Call::AddBridge(..) => "add_bridge",
            Call::AddVxlan(..) => "add_vxlan",
            Call::SetBrportFlags(..) => "set_brport_flags",
            Call::AddAddr(..) => "add_addr",
            Call::DelAddr(..) => "del_addr",
            Call::AddRoute(..) => "add_route",
            Call::ReplaceRoute(..) => "replace_route",
            Call::DelRoute(..) => "del_route",
            Call::ReplaceNeigh(..) => "replace_neigh",
            Call::DelNeigh(..) => "del_neigh",
            Call::AppendFdb(..) => "append_fdb",
            Call::ReplaceFdb(..) => "replace_fdb",
            Call::DelFdb(..) => "del_fdb",
        }
    }
}

/// The kernel state the fake keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    pub neighs: Vec<Neigh>,
    pub fdb: Vec<FdbEntry>,
    /// IPv4 per-device settings set so far: (link, `IPV4_DEVCONF_*` id, value).
    pub ipv4_devconf: Vec<(u32, u16, u32)>,
}

impl Model {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The value of IPv4 setting `id` of link `index`, if one was set.
    pub fn ipv4_devconf(&self, index: u32, id: u16) -> Option<u32> {
        self.ipv4_devconf
            .iter()
            .find(|(i, k, _)| (*i, *k) == (index, id))
            .map(|(_, _, v)| *v)
    }
}

#[derive(Debug, Default)]
struct State {
    model: Model,
    next_index: u32,
    calls: Vec<Call>,
    failures: Vec<(&'static str, i32)>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct FakeNetlink {
    state: Mutex<State>,
}

fn kernel(op: &'static str, object: String, errno: i32) -> NetlinkError {
    NetlinkError::Kernel {
        op,
        object,
        errno,
        ext: None,
    }
}

fn no_link(op: &'static str, index: u32) -> NetlinkError {
    kernel(op, format!("link #{index}"), libc::ENODEV)
}

const UP: u32 = LinkFlags::Up.bits();

impl FakeNetlink {
    /// A fresh namespace: `lo` (index 1, down) and nothing else.
    pub fn new() -> FakeNetlink {
        let f = FakeNetlink::default();
        f.seed_link(Link {
            name: "lo".into(),
            kind: None,
            mtu: 65536,
            mac: vec![0; 6],
            ..Link::default()
        });
        f
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Put a link into the model as if it had always been there (an underlay `eth0`);
    /// an index of 0 gets the next free one. Returns the index.
    pub fn seed_link(&self, mut link: Link) -> u32 {
        let mut s = self.lock();
        if link.index == 0 {
            s.next_index += 1;
            link.index = s.next_index;
        } else {
            s.next_index = s.next_index.max(link.index);
        }
        let index = link.index;
        s.model.links.push(link);
        index
    }

    /// Put an address into the model without recording a call.
    pub fn seed_addr(&self, index: u32, net: IpNet) {
        self.lock().model.addrs.push(Addr {
            index,
            net,
            flags: 0x80,
            scope: 0,
        });
    }

    /// The next call of trait method `op` (e.g. `"append_fdb"`) fails with kernel `errno`
    /// and changes nothing (it is still recorded).
    pub fn fail_next(&self, op: &'static str, errno: i32) {
        self.lock().failures.push((op, errno));
    }

    /// A copy of the kernel state as the fake has it.
    pub fn model(&self) -> Model {
        self.lock().model.clone()
    }

    /// Every change asked so far, in order (failed ones included).
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Record `call`, then apply it unless a failure was queued for it.
    fn change(
        &self,
        call: Call,
        object: impl Fn() -> String,
        apply: impl FnOnce(&mut Model, &mut u32) -> Result<()>,
    ) -> Result<()> {
        let mut s = self.lock();
        let op = call.op();
        s.calls.push(call);
        if let Some(i) = s.failures.iter().position(|(o, _)| *o == op) {
            let (_, errno) = s.failures.remove(i);
            return Err(kernel(op, object(), errno));
        }
        let State {
            model, next_index, ..
        } = &mut *s;
        apply(model, next_index)
    }

    fn add_link(&self, call: Call, op: &'static str, link: Link, elsewhere: bool) -> Result<()> {
        let name = link.name.clone();
        self.change(
            call,
            || format!("link {name}"),
            |m, next| {
                if elsewhere {
                    return Ok(()); // born in another namespace: not in this model
                }
                if m.link(&link.name).is_some() {
                    return Err(kernel(op, format!("link {}", link.name), libc::EEXIST));
                }
                *next += 1;
                m.links.push(Link {
                    index: *next,
                    ..link
                });
                Ok(())
            },
        )
    }
}

fn link_mut<'a>(m: &'a mut Model, op: &'static str, index: u32) -> Result<&'a mut Link> {
    m.links
        .iter_mut()
        .find(|l| l.index == index)
        .ok_or_else(|| no_link(op, index))
}

fn has_link(m: &Model, op: &'static str, index: u32) -> Result<()> {
    m.links
        .iter()
        .any(|l| l.index == index)
        .then_some(())
        .ok_or_else(|| no_link(op, index))
}

/// The same MAC in the same table (a device's own `self` table, or its bridge's `master`
/// table: two tables in the kernel).
fn same_fdb_mac(a: &FdbEntry, b: &FdbEntry) -> bool {
    (a.index, a.is_self, a.mac, a.vlan) == (b.index, b.is_self, b.mac, b.vlan)
}

/// The kernel tells routes apart by table, destination, metric (and, within those, gateway
/// and device for `del`).
fn same_route(a: &Route, b: &Route) -> bool {
    a.table == b.table && a.dst == b.dst && a.metric.unwrap_or(0) == b.metric.unwrap_or(0)
}

impl Netlink for FakeNetlink {
    fn find_link(&self, name: &str) -> Result<Option<Link>> {
        Ok(self.lock().model.link(name).cloned())
    }

    fn find_link_index(&self, index: u32) -> Result<Option<Link>> {
        Ok(self
            .lock()
            .model
            .links
            .iter()
            .find(|l| l.index == index)
            .cloned())
    }

    fn links(&self) -> Result<Vec<Link>> {
        Ok(self.lock().model.links.clone())
    }

    fn del_link(&self, index: u32) -> Result<()> {
        self.change(
            Call::DelLink(index),
            || format!("link #{index}"),
            |m, _| {
                has_link(m, "del link", index)?;
                // What goes with a link in the kernel: its addresses, routes through it, its
                // neighbour and FDB entries, and (for a bridge) its ports' membership.
                m.links.retain(|l| l.index != index);
                m.addrs.retain(|a| a.index != index);
                m.routes.retain(|r| r.oif != Some(index));
                m.neighs.retain(|n| n.index != index);
                m.fdb.retain(|e| e.index != index);
                m.ipv4_devconf.retain(|(i, _, _)| *i != index);
                for l in &mut m.links {
                    if l.master == Some(index) {
                        l.master = None;
                    }
                }
                Ok(())
            },
        )
    }

    fn set_up(&self, index: u32, up: bool) -> Result<()> {
        self.change(
            Call::SetUp(index, up),
            || format!("link #{index}"),
            |m, _| {
                let l = link_mut(m, "set link up/down", index)?;
                l.flags = if up { l.flags | UP } else { l.flags & !UP };
                Ok(())
            },
        )
    }

    fn set_master(&self, index: u32, master: u32) -> Result<()> {
        let call = Call::SetMaster(index, master);
        self.change(
            call,
            || format!("link #{index}"),
            |m, _| {
                if master != 0 {
                    let br = m.links.iter().find(|l| l.index == master);
                    match br {
                        None => return Err(no_link("set master", master)),
                        Some(b) if b.kind.as_deref() != Some("bridge") => {
                            return Err(kernel(
                                "set master",
                                format!("link #{index}"),
                                libc::EINVAL,
                            ))
                        }
                        Some(_) => {}
                    }
                }
                let l = link_mut(m, "set master", index)?;
                l.master = (master != 0).then_some(master);
                if master == 0 {
                    l.learning = None;
                    l.neigh_suppress = None;
                } else {
                    // A new bridge port learns and does not suppress, as in the kernel.
                    l.learning = Some(true);
                    l.neigh_suppress = Some(false);
                }
                Ok(())
            },
        )
    }

    fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.change(
            Call::SetMtu(index, mtu),
            || format!("link #{index}"),
            |m, _| {
                link_mut(m, "set mtu", index)?.mtu = mtu;
                Ok(())
            },
        )
    }

    fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.change(
            Call::SetMac(index, mac),
            || format!("link #{index}"),
            |m, _| {
                link_mut(m, "set address", index)?.mac = mac.to_vec();
                Ok(())
            },
        )
    }

    fn set_ipv4_devconf(&self, index: u32, id: u16, value: u32) -> Result<()> {
        self.change(
            Call::SetIpv4Devconf(index, id, value),
            || format!("link #{index}"),
            |m, _| {
                has_link(m, "set ipv4 devconf", index)?;
                m.ipv4_devconf.retain(|(i, k, _)| (*i, *k) != (index, id));
                m.ipv4_devconf.push((index, id, value));
                Ok(())
            },
        )
    }

    fn add_bridge(&self, name: &str, mtu: Option<u32>, mac: Option<[u8; 6]>) -> Result<()> {
        let link = Link {
            name: name.into(),
            kind: Some("bridge".into()),
            mtu: mtu.unwrap_or(1500),
            mac: mac.map(|m| m.to_vec()).unwrap_or_default(),
            ..Link::default()
        };
        self.add_link(Call::AddBridge(name.into()), "add bridge", link, false)
    }

    fn add_vxlan(&self, l: &NewLink<'_>, v: &Vxlan) -> Result<()> {
        let link = Link {
            name: l.name.into(),
            kind: Some("vxlan".into()),
            mtu: l.mtu.unwrap_or(1450),
            mac: l.mac.map(|m| m.to_vec()).unwrap_or_default(),
            vxlan: Some(*v),
            ..Link::default()
        };
        let call = Call::AddVxlan(l.name.into(), *v);
        self.add_link(call, "add vxlan", link, l.netns_fd.is_some())
    }

    fn set_brport_flags(&self, index: u32, flags: &BrportFlags) -> Result<()> {
        let call = Call::SetBrportFlags(index, *flags);
        self.change(
            call,
            || format!("link #{index}"),
            |m, _| {
                let op = "set bridge port flags";
                let l = link_mut(m, op, index)?;
                if l.master.is_none() {
                    return Err(kernel(op, format!("link #{index}"), libc::EOPNOTSUPP));
                }
                if let Some(on) = flags.learning {
                    l.learning = Some(on);
                }
                if let Some(on) = flags.neigh_suppress {
                    l.neigh_suppress = Some(on);
                }
                Ok(())
            },
        )
    }

    fn addrs(&self, index: u32) -> Result<Vec<Addr>> {
        let s = self.lock();
        Ok(s.model
            .addrs
            .iter()
            .filter(|a| index == 0 || a.index == index)
            .cloned()
            .collect())
    }

    fn add_addr(&self, index: u32, net: IpNet, _nodad: bool) -> Result<()> {
        let object = || format!("{net} on link #{index}");
        self.change(Call::AddAddr(index, net), object, |m, _| {
            has_link(m, "add address", index)?;
            if m.addrs.iter().any(|a| a.index == index && a.net == net) {
                return Err(kernel("add address", object(), libc::EEXIST));
            }
            m.addrs.push(Addr {
                index,
                net,
                flags: 0x80,
                scope: 0,
            });
            Ok(())
        })
    }

    fn del_addr(&self, index: u32, net: IpNet) -> Result<()> {
        let object = || format!("{net} on link #{index}");
        self.change(Call::DelAddr(index, net), object, |m, _| {
            m.addrs.retain(|a| !(a.index == index && a.net == net));
            Ok(())
        })
    }

    fn routes(&self, v6: bool) -> Result<Vec<Route>> {
        let s = self.lock();
        Ok(s.model
            .routes
            .iter()
            .filter(|r| r.dst.addr().is_ipv6() == v6)
            .cloned()
            .collect())
    }

    fn add_route(&self, r: &Route) -> Result<()> {
        let object = || format!("route {}", r.dst);
        self.change(Call::AddRoute(r.clone()), object, |m, _| {
            if let Some(oif) = r.oif {
                has_link(m, "add route", oif)?;
            }
            if m.routes.iter().any(|x| same_route(x, r)) {
                return Err(kernel("add route", object(), libc::EEXIST));
            }
            m.routes.push(r.clone());
            Ok(())
        })
    }

    fn replace_route(&self, r: &Route) -> Result<()> {
        let object = || format!("route {}", r.dst);
        self.change(Call::ReplaceRoute(r.clone()), object, |m, _| {
            if let Some(oif) = r.oif {
                has_link(m, "replace route", oif)?;
            }
            m.routes.retain(|x| !same_route(x, r));
            m.routes.push(r.clone());
            Ok(())
        })
    }

    fn del_route(&self, r: &Route) -> Result<()> {
        let object = || format!("route {}", r.dst);
        self.change(Call::DelRoute(r.clone()), object, |m, _| {
            m.routes.retain(|x| {
                !(same_route(x, r)
                    && r.gw.is_none_or(|g| x.gw == Some(g))
                    && r.oif.is_none_or(|o| x.oif == Some(o)))
            });
            Ok(())
        })
    }

    fn neighs(&self, index: u32) -> Result<Vec<Neigh>> {
        let s = self.lock();
        Ok(s.model
            .neighs
            .iter()
            .filter(|n| index == 0 || n.index == index)
            .cloned()
            .collect())
    }

    fn replace_neigh(&self, n: &Neigh) -> Result<()> {
        let object = || format!("neigh {} dev #{}", n.ip, n.index);
        self.change(Call::ReplaceNeigh(n.clone()), object, |m, _| {
            has_link(m, "replace neigh", n.index)?;
            if n.mac.is_none() {
                return Err(kernel("replace neigh", object(), libc::EINVAL));
            }
            m.neighs.retain(|x| !(x.index == n.index && x.ip == n.ip));
            m.neighs.push(n.clone());
            Ok(())
        })
    }

    fn del_neigh(&self, n: &Neigh) -> Result<()> {
        let object = || format!("neigh {} dev #{}", n.ip, n.index);
        self.change(Call::DelNeigh(n.clone()), object, |m, _| {
            m.neighs.retain(|x| !(x.index == n.index && x.ip == n.ip));
            Ok(())
        })
    }

    fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        let s = self.lock();
        Ok(s.model
            .fdb
            .iter()
            .filter(|e| index == 0 || e.index == index)
            .cloned()
            .collect())
    }

    fn append_fdb(&self, e: &FdbEntry) -> Result<()> {
        self.change(
            Call::AppendFdb(e.clone()),
            || e.describe(),
            |m, _| {
                has_link(m, "append fdb", e.index)?;
                // As in the kernel: the same entry again changes nothing, and neither does a
                // second remote for a unicast MAC; a flood entry gains one more remote.
                let there = if e.is_flood() {
                    m.fdb
                        .iter()
                        .any(|x| x.key() == e.key() && x.is_self == e.is_self)
                } else {
                    m.fdb.iter().any(|x| same_fdb_mac(x, e))
                };
                if !there {
                    m.fdb.push(e.clone());
                }
                Ok(())
            },
        )
    }

    fn replace_fdb(&self, e: &FdbEntry) -> Result<()> {
        self.change(
            Call::ReplaceFdb(e.clone()),
            || e.describe(),
            |m, _| {
                has_link(m, "replace fdb", e.index)?;
                if e.is_flood() && m.fdb.iter().any(|x| same_fdb_mac(x, e)) {
                    return Err(kernel("replace fdb", e.describe(), libc::EOPNOTSUPP));
                }
                m.fdb.retain(|x| !same_fdb_mac(x, e));
                m.fdb.push(e.clone());
                Ok(())
            },
        )
    }

    fn del_fdb(&self, e: &FdbEntry) -> Result<()> {
        self.change(
            Call::DelFdb(e.clone()),
            || e.describe(),
            |m, _| {
                // Without `dst`, every remote of the MAC goes; `self` and `master` entries are
                // two tables, as in the kernel.
                m.fdb.retain(|x| {
                    !(x.index == e.index
                        && x.is_self == e.is_self
                        && x.mac == e.mac
                        && x.vlan == e.vlan
                        && e.dst.is_none_or(|d| x.dst == Some(d)))
                });
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests;
