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
}

impl Model {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
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

fn same_fdb_mac(a: &FdbEntry, b: &FdbEntry) -> bool {
    (a.index, a.mac, a.vlan) == (b.index, b.mac, b.vlan)
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
                    m.fdb.iter().any(|x| x.key() == e.key())
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
                // Without `dst`, every remote of the MAC goes.
                m.fdb.retain(|x| {
                    !(x.index == e.index
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
mod tests {
    use super::*;
    use crate::error::{HasKind, Kind};
    use crate::netlink::link::VXLAN_PORT;
    use crate::netlink::ops::{plan_fdb, sync_fdb, FdbPlan};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn vx() -> Vxlan {
        Vxlan {
            vni: 1,
            local: Some(ip("10.0.0.1")),
            port: VXLAN_PORT,
            learning: false,
            link: None,
        }
    }

    fn nl(name: &str) -> NewLink<'_> {
        NewLink {
            name,
            ..Default::default()
        }
    }

    #[test]
    fn links_behave_like_the_kernel() {
        let f = FakeNetlink::new();
        assert_eq!(f.find_link("lo").unwrap().unwrap().index, 1);
        f.add_bridge("br0", Some(1400), None).unwrap();
        f.add_vxlan(&nl("vx0"), &vx()).unwrap();
        let err = f.add_bridge("br0", None, None).unwrap_err();
        assert_eq!(err.kind(), Kind::Exists);
        let br = f.find_link("br0").unwrap().unwrap();
        let vxl = f.find_link("vx0").unwrap().unwrap();
        assert_eq!(vxl.vxlan, Some(vx()));
        assert_eq!(br.mtu, 1400);

        // Port flags need a bridge port.
        let flags = BrportFlags {
            learning: Some(false),
            neigh_suppress: Some(true),
        };
        assert_eq!(
            f.set_brport_flags(vxl.index, &flags).unwrap_err().errno(),
            Some(libc::EOPNOTSUPP)
        );
        f.set_master(vxl.index, br.index).unwrap();
        f.set_brport_flags(vxl.index, &flags).unwrap();
        f.set_up(vxl.index, true).unwrap();
        let vxl = f.find_link_index(vxl.index).unwrap().unwrap();
        assert_eq!(vxl.learning, Some(false));
        assert_eq!(vxl.neigh_suppress, Some(true));
        assert!(vxl.is_up());
        // Only a bridge can be a master.
        assert_eq!(
            f.set_master(br.index, vxl.index).unwrap_err().kind(),
            Kind::Invalid
        );

        // Deleting the bridge releases its port; deleting a missing link is ENODEV.
        f.del_link(br.index).unwrap();
        assert_eq!(f.find_link("vx0").unwrap().unwrap().master, None);
        assert_eq!(
            f.del_link(br.index).unwrap_err().errno(),
            Some(libc::ENODEV)
        );
        assert_eq!(f.set_up(999, true).unwrap_err().kind(), Kind::NotFound);
    }

    #[test]
    fn a_link_takes_its_addresses_routes_neighbours_and_fdb_with_it() {
        let f = FakeNetlink::new();
        f.add_vxlan(&nl("vx0"), &vx()).unwrap();
        let i = f.find_link("vx0").unwrap().unwrap().index;
        let net: IpNet = "10.244.1.0/32".parse().unwrap();
        f.add_addr(i, net, false).unwrap();
        assert_eq!(f.add_addr(i, net, false).unwrap_err().kind(), Kind::Exists);
        let r = Route::new("10.244.2.0/24".parse().unwrap(), None, Some(i));
        f.add_route(&r).unwrap();
        assert_eq!(f.add_route(&r).unwrap_err().kind(), Kind::Exists);
        f.replace_route(&r).unwrap();
        let mac = [2, 0, 0, 0, 0, 2];
        f.replace_neigh(&Neigh::permanent(i, ip("10.244.2.0"), mac))
            .unwrap();
        // replace is idempotent and overwrites the MAC
        f.replace_neigh(&Neigh::permanent(i, ip("10.244.2.0"), [2, 0, 0, 0, 0, 3]))
            .unwrap();
        assert_eq!(f.neighs(i).unwrap().len(), 1);
        assert_eq!(f.neighs(i).unwrap()[0].mac, Some([2, 0, 0, 0, 0, 3]));
        f.append_fdb(&FdbEntry::vxlan_remote(i, mac, ip("192.168.0.2")))
            .unwrap();
        assert_eq!(f.routes(false).unwrap().len(), 1);
        assert!(f.routes(true).unwrap().is_empty());

        f.del_link(i).unwrap();
        let m = f.model();
        assert_eq!(m.links.len(), 1, "only lo is left: {m:?}");
        assert!(m.addrs.is_empty() && m.routes.is_empty());
        assert!(m.neighs.is_empty() && m.fdb.is_empty());
        // Tolerant deletions of what is gone.
        f.del_addr(i, net).unwrap();
        f.del_route(&r).unwrap();
        f.del_neigh(&Neigh::permanent(i, ip("10.244.2.0"), mac))
            .unwrap();
        f.del_fdb(&FdbEntry::vxlan_remote(i, mac, ip("192.168.0.2")))
            .unwrap();
        // ... but adding to a missing link is ENODEV.
        assert_eq!(
            f.append_fdb(&FdbEntry::vxlan_remote(i, mac, ip("192.168.0.2")))
                .unwrap_err()
                .kind(),
            Kind::NotFound
        );
    }

    #[test]
    fn fdb_append_keeps_one_entry_per_remote_and_del_without_dst_drops_all() {
        let f = FakeNetlink::new();
        f.add_vxlan(&nl("vx0"), &vx()).unwrap();
        let i = f.find_link("vx0").unwrap().unwrap().index;
        let zero = [0u8; 6];
        for dst in ["192.168.0.2", "192.168.0.3", "192.168.0.2"] {
            f.append_fdb(&FdbEntry::vxlan_remote(i, zero, ip(dst)))
                .unwrap();
        }
        assert_eq!(f.fdb(i).unwrap().len(), 2);
        let mut all = FdbEntry::vxlan_remote(i, zero, ip("192.168.0.2"));
        all.dst = None;
        f.del_fdb(&all).unwrap();
        assert!(f.fdb(i).unwrap().is_empty());
    }

    #[test]
    fn injected_failures_change_nothing_and_are_recorded() {
        let f = FakeNetlink::new();
        f.fail_next("add_bridge", libc::EBUSY);
        let err = f.add_bridge("br0", None, None).unwrap_err();
        assert_eq!(err.kind(), Kind::Busy);
        assert!(err.to_string().contains("br0"), "{err}");
        assert!(f.find_link("br0").unwrap().is_none());
        // Only the next call fails.
        f.add_bridge("br0", None, None).unwrap();
        assert_eq!(
            f.calls(),
            vec![Call::AddBridge("br0".into()), Call::AddBridge("br0".into())]
        );
    }

    #[test]
    fn a_link_made_in_another_namespace_is_not_in_this_one() {
        let f = FakeNetlink::new();
        let l = NewLink {
            name: "vx0",
            netns_fd: Some(9),
            ..Default::default()
        };
        f.add_vxlan(&l, &vx()).unwrap();
        assert!(f.find_link("vx0").unwrap().is_none());
        assert_eq!(f.calls(), vec![Call::AddVxlan("vx0".into(), vx())]);
    }

    #[test]
    fn a_unicast_mac_has_one_remote_and_moves_by_replace() {
        let f = FakeNetlink::new();
        f.add_vxlan(&nl("vx0"), &vx()).unwrap();
        let i = f.find_link("vx0").unwrap().unwrap().index;
        let m = [2, 0, 0, 0, 0, 1];
        f.append_fdb(&FdbEntry::vxlan_remote(i, m, ip("192.168.0.2")))
            .unwrap();
        f.append_fdb(&FdbEntry::vxlan_remote(i, m, ip("192.168.0.3")))
            .unwrap();
        let dsts = |f: &FakeNetlink| f.fdb(i).unwrap().iter().map(|e| e.dst).collect::<Vec<_>>();
        assert_eq!(dsts(&f), vec![Some(ip("192.168.0.2"))]);
        f.replace_fdb(&FdbEntry::vxlan_remote(i, m, ip("192.168.0.3")))
            .unwrap();
        assert_eq!(dsts(&f), vec![Some(ip("192.168.0.3"))]);
        // A flood entry's remotes are not replaced.
        let z = FdbEntry::vxlan_remote(i, [0; 6], ip("192.168.0.2"));
        f.append_fdb(&z).unwrap();
        assert_eq!(
            f.replace_fdb(&z).unwrap_err().errno(),
            Some(libc::EOPNOTSUPP)
        );
    }

    #[test]
    fn sync_fdb_converges_and_leaves_entries_it_does_not_own() {
        let f = FakeNetlink::new();
        f.add_vxlan(&nl("vx0"), &vx()).unwrap();
        let i = f.find_link("vx0").unwrap().unwrap().index;
        let (m1, m2, m3) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        let zero = [0u8; 6];
        let moved = FdbEntry::vxlan_remote(i, m1, ip("192.168.0.9"));
        let gone = FdbEntry::vxlan_remote(i, m3, ip("192.168.0.9"));
        let flood_kept = FdbEntry::vxlan_remote(i, zero, ip("192.168.0.2"));
        let flood_stale = FdbEntry::vxlan_remote(i, zero, ip("192.168.0.9"));
        for e in [&moved, &gone, &flood_kept, &flood_stale] {
            f.append_fdb(e).unwrap();
        }
        // A learned entry (no dst, not self): not ours to remove.
        let mut learned = FdbEntry::vxlan_remote(i, [2, 0, 0, 0, 0, 4], ip("192.168.0.9"));
        learned.dst = None;
        learned.is_self = false;
        f.lock().model.fdb.push(learned.clone());

        let want = vec![
            FdbEntry::vxlan_remote(i, m1, ip("192.168.0.2")),
            FdbEntry::vxlan_remote(i, m2, ip("192.168.0.3")),
            flood_kept.clone(),
            FdbEntry::vxlan_remote(i, zero, ip("192.168.0.3")),
        ];
        let plan = sync_fdb(&f, i, &want).unwrap();
        assert_eq!(
            plan,
            FdbPlan {
                append: vec![want[1].clone(), want[3].clone()],
                replace: vec![want[0].clone()],
                del: vec![gone, flood_stale],
            }
        );
        let mut got = f.fdb(i).unwrap();
        got.sort();
        let mut expect = want.clone();
        expect.push(learned);
        expect.sort();
        assert_eq!(got, expect);

        // A second run finds nothing to do and asks nothing of the kernel.
        let n = f.calls().len();
        assert_eq!(sync_fdb(&f, i, &want).unwrap(), FdbPlan::default());
        assert_eq!(f.calls().len(), n);
        // Duplicates in the desired list are appended once.
        assert_eq!(
            plan_fdb(&[], &[want[0].clone(), want[0].clone()]).append,
            vec![want[0].clone()]
        );
    }
}
