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
    /// `bridge fdb append MAC dev #INDEX dst IP self permanent`
    fn append_fdb(&self, e: &FdbEntry) -> Result<()>;
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
    fn del_fdb(&self, e: &FdbEntry) -> Result<()> {
        Handle::del_fdb(self, e)
    }
}

/// What [`sync_fdb`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdbPlan {
    pub append: Vec<FdbEntry>,
    pub del: Vec<FdbEntry>,
}

/// Which remotes to append and which to delete so that the `self` entries with a `dst` on
/// a vxlan device are exactly `desired` (pure). Entries without `dst` (the device's own MAC,
/// learned entries) are not ours and are left alone.
pub fn plan_fdb(current: &[FdbEntry], desired: &[FdbEntry]) -> FdbPlan {
    let ours = |e: &&FdbEntry| e.is_self && e.dst.is_some();
    let have: BTreeSet<_> = current.iter().filter(ours).map(FdbEntry::key).collect();
    let want: BTreeSet<_> = desired.iter().map(FdbEntry::key).collect();
    let mut plan = FdbPlan::default();
    for e in desired {
        if !have.contains(&e.key()) && !plan.append.iter().any(|a| a.key() == e.key()) {
            plan.append.push(e.clone());
        }
    }
    for e in current.iter().filter(ours) {
        if !want.contains(&e.key()) {
            plan.del.push(e.clone());
        }
    }
    plan
}

/// Observe the FDB of vxlan device `index`, then append the missing remotes of `desired` and
/// delete the stale ones (`bridge fdb append/del ... dst IP self`). Stops at the first
/// failure; running it again continues from what the kernel then has.
pub fn sync_fdb(nl: &impl Netlink, index: u32, desired: &[FdbEntry]) -> Result<FdbPlan> {
    let plan = plan_fdb(&nl.fdb(index)?, desired);
    for e in &plan.append {
        nl.append_fdb(e)?;
    }
    for e in &plan.del {
        nl.del_fdb(e)?;
    }
    Ok(plan)
}
