//! The netlink operations as a trait that speaks in meaning, so that decisions (what to
//! create, what to delete) are tested without root against `FakeNetlink`, and the kernel
//! is reached only through [`Handle`].
//!
//! Each method has the meaning, errors and tolerance of the [`Handle`] method of the same
//! name: deletions of addresses, routes, neighbour and FDB entries treat "not there" as
//! success; deleting or changing a missing link is an `ENODEV` kernel error.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::link::NewLink;
use super::{BrportFlags, FdbEntry, Handle, Link, Neigh, Result, Route, Vxlan};
use crate::netlink::addr::Addr;

/// What libnet's callers need of rtnetlink.
pub trait Netlink {
    /// `ip link show NAME`, `None` when there is none.
    fn find_link(&self, name: &str) -> Result<Option<Link>>;
    /// `ip link show` of one index, `None` when there is none.
    fn find_link_index(&self, index: u32) -> Result<Option<Link>>;
    /// `ip link show`
    fn links(&self) -> Result<Vec<Link>>;
    /// `ip link del dev #INDEX`
    fn del_link(&self, index: u32) -> Result<()>;
    /// `ip link set #INDEX up|down`
    fn set_up(&self, index: u32, up: bool) -> Result<()>;
    /// `ip link set #INDEX master #MASTER` (0 = nomaster)
    fn set_master(&self, index: u32, master: u32) -> Result<()>;
    /// `ip link set #INDEX mtu MTU`
    fn set_mtu(&self, index: u32, mtu: u32) -> Result<()>;
    /// `ip link set #INDEX address MAC`
    fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()>;
    /// `sysctl net.ipv4.conf.#INDEX.KEY=VALUE` over netlink (`IPV4_DEVCONF_*` ids, e.g.
    /// [`IPV4_DEVCONF_PROXY_ARP`](super::link::IPV4_DEVCONF_PROXY_ARP))
    fn set_ipv4_devconf(&self, index: u32, id: u16, value: u32) -> Result<()>;
    /// `ip link add NAME [mtu M] [address MAC] type bridge`
    fn add_bridge(&self, name: &str, mtu: Option<u32>, mac: Option<[u8; 6]>) -> Result<()>;
    /// `ip link add NAME type vxlan id VNI local IP dstport PORT nolearning dev #DEV`
    fn add_vxlan(&self, l: &NewLink<'_>, v: &Vxlan) -> Result<()>;
    /// `bridge link set dev #INDEX learning on|off neigh_suppress on|off`
    fn set_brport_flags(&self, index: u32, flags: &BrportFlags) -> Result<()>;

    /// `ip addr show [dev #INDEX]` (0 = every link)
    fn addrs(&self, index: u32) -> Result<Vec<Addr>>;
    /// `ip addr add NET dev #INDEX [nodad]`
    fn add_addr(&self, index: u32, net: IpNet, nodad: bool) -> Result<()>;
    /// `ip addr del NET dev #INDEX` (missing = success)
    fn del_addr(&self, index: u32, net: IpNet) -> Result<()>;

    /// `ip [-6] route show table all` (unicast)
    fn routes(&self, v6: bool) -> Result<Vec<Route>>;
    /// `ip route add ...`
    fn add_route(&self, r: &Route) -> Result<()>;
    /// `ip route replace ...`
    fn replace_route(&self, r: &Route) -> Result<()>;
    /// `ip route del ...` (missing = success)
    fn del_route(&self, r: &Route) -> Result<()>;

    /// `ip neigh show [dev #INDEX]`
    fn neighs(&self, index: u32) -> Result<Vec<Neigh>>;
    /// `ip neigh replace IP lladdr MAC dev #INDEX nud STATE`
    fn replace_neigh(&self, n: &Neigh) -> Result<()>;
    /// `ip neigh del IP dev #INDEX` (missing = success)
    fn del_neigh(&self, n: &Neigh) -> Result<()>;

    /// `bridge fdb show dev #INDEX`
    fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>>;
    /// `bridge fdb append MAC dev #INDEX dst IP self permanent` (a unicast MAC keeps its
    /// first remote: see [`Handle::append_fdb`])
    fn append_fdb(&self, e: &FdbEntry) -> Result<()>;
    /// `bridge fdb replace MAC dev #INDEX dst IP self permanent` (not for flood entries)
    fn replace_fdb(&self, e: &FdbEntry) -> Result<()>;
    /// `bridge fdb del MAC dev #INDEX dst IP self` (missing = success)
    fn del_fdb(&self, e: &FdbEntry) -> Result<()>;
}

impl Netlink for Handle {
    fn find_link(&self, name: &str) -> Result<Option<Link>> {
        Handle::find_link(self, name)
    }
    fn find_link_index(&self, index: u32) -> Result<Option<Link>> {
        match Handle::link_by_index(self, index) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn links(&self) -> Result<Vec<Link>> {
        Handle::links(self)
    }
    fn del_link(&self, index: u32) -> Result<()> {
        Handle::del_link(self, index)
    }
    fn set_up(&self, index: u32, up: bool) -> Result<()> {
        Handle::set_up(self, index, up)
    }
    fn set_master(&self, index: u32, master: u32) -> Result<()> {
        Handle::set_master(self, index, master)
    }
    fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        Handle::set_mtu(self, index, mtu)
    }
    fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        Handle::set_mac(self, index, mac)
    }
    fn set_ipv4_devconf(&self, index: u32, id: u16, value: u32) -> Result<()> {
        Handle::set_ipv4_devconf(self, index, id, value)
    }
    fn add_bridge(&self, name: &str, mtu: Option<u32>, mac: Option<[u8; 6]>) -> Result<()> {
        Handle::add_bridge(self, name, mtu, mac)
    }
    fn add_vxlan(&self, l: &NewLink<'_>, v: &Vxlan) -> Result<()> {
        Handle::add_vxlan(self, l, v)
    }
    fn set_brport_flags(&self, index: u32, flags: &BrportFlags) -> Result<()> {
        Handle::set_brport_flags(self, index, flags)
    }
    fn addrs(&self, index: u32) -> Result<Vec<Addr>> {
        Handle::addrs(self, index)
    }
    fn add_addr(&self, index: u32, net: IpNet, nodad: bool) -> Result<()> {
        Handle::add_addr(self, index, net, nodad)
    }
    fn del_addr(&self, index: u32, net: IpNet) -> Result<()> {
        Handle::del_addr(self, index, net)
    }
    fn routes(&self, v6: bool) -> Result<Vec<Route>> {
        Handle::routes(self, v6)
    }
    fn add_route(&self, r: &Route) -> Result<()> {
        Handle::add_route(self, r)
    }
    fn replace_route(&self, r: &Route) -> Result<()> {
        Handle::replace_route(self, r)
    }
    fn del_route(&self, r: &Route) -> Result<()> {
        Handle::del_route(self, r)
    }
    fn neighs(&self, index: u32) -> Result<Vec<Neigh>> {
        Handle::neighs(self, index)
    }
    fn replace_neigh(&self, n: &Neigh) -> Result<()> {
        Handle::replace_neigh(self, n)
    }
    fn del_neigh(&self, n: &Neigh) -> Result<()> {
        Handle::del_neigh(self, n)
    }
    fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        Handle::fdb(self, index)
    }
    fn append_fdb(&self, e: &FdbEntry) -> Result<()> {
        Handle::append_fdb(self, e)
    }
    fn replace_fdb(&self, e: &FdbEntry) -> Result<()> {
        Handle::replace_fdb(self, e)
    }
    fn del_fdb(&self, e: &FdbEntry) -> Result<()> {
        Handle::del_fdb(self, e)
    }
}

/// What [`sync_fdb`] changes, in the order it does it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdbPlan {
    /// New entries, and new remotes of flood entries (`bridge fdb append`).
    pub append: Vec<FdbEntry>,
    /// Unicast MACs that moved to another remote (`bridge fdb replace`).
    pub replace: Vec<FdbEntry>,
    /// Stale entries and flood remotes (`bridge fdb del ... dst IP`).
    pub del: Vec<FdbEntry>,
}

/// Which entries to append, replace and delete so that the `self` entries with a `dst` on a
/// vxlan device are exactly `desired` (pure). Entries without `dst` (the device's own MAC,
/// learned entries) are not ours and are left alone, except a `self` entry holding a MAC that
/// `desired` wants, which is replaced. A unicast MAC has one remote, so a moved MAC is replaced (never deleted and added: no window without a path); the remotes of
/// a flood entry are a set, appended and deleted one by one. O((n + m) log(n + m)): an
/// overlay network's thousands of remotes are planned in well under a millisecond.
pub fn plan_fdb(current: &[FdbEntry], desired: &[FdbEntry]) -> FdbPlan {
    let ours: Vec<&FdbEntry> = current
        .iter()
        .filter(|e| e.is_self && e.dst.is_some())
        .collect();
    let mac_key = |e: &FdbEntry| (e.index, e.mac, e.vlan);
    let have: BTreeSet<_> = ours.iter().map(|e| e.key()).collect();
    // Any `self` entry holds a unicast MAC, ours or not (one made by hand without `dst`): a
    // second remote would be ignored, so a wanted MAC found there is taken over by replace.
    let have_macs: BTreeSet<_> = current
        .iter()
        .filter(|e| e.is_self && !e.is_flood())
        .map(mac_key)
        .collect();
    let want: BTreeSet<_> = desired.iter().map(FdbEntry::key).collect();
    let mut plan = FdbPlan::default();
    let mut seen = BTreeSet::new();
    let mut moved = BTreeSet::new();
    for e in desired {
        if !seen.insert(e.key()) || have.contains(&e.key()) {
            continue;
        }
        if !e.is_flood() && have_macs.contains(&mac_key(e)) {
            moved.insert(mac_key(e));
            plan.replace.push(e.clone());
        } else {
            plan.append.push(e.clone());
        }
    }
    for c in ours {
        let replaced = !c.is_flood() && moved.contains(&mac_key(c));
        if !want.contains(&c.key()) && !replaced {
            plan.del.push(c.clone());
        }
    }
    plan
}

/// Observe the FDB of vxlan device `index`, then bring its remotes to `desired` (all on that
/// device) with [`plan_fdb`]'s plan: additions and moves first, deletions last. Stops at the
/// first failure; running it again continues from what the kernel then has.
pub fn sync_fdb(nl: &impl Netlink, index: u32, desired: &[FdbEntry]) -> Result<FdbPlan> {
    let plan = plan_fdb(&nl.fdb(index)?, desired);
    for e in &plan.append {
        nl.append_fdb(e)?;
    }
    for e in &plan.replace {
        nl.replace_fdb(e)?;
    }
    for e in &plan.del {
        nl.del_fdb(e)?;
    }
    Ok(plan)
}
