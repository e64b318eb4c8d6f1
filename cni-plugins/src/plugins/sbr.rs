//! `sbr`: source-based routing, a chained plugin, as the reference `plugins/meta/sbr` (1.1.1,
//! plus the later `table` option).
//!
//! What it programs, inside the container's namespace, for the prevResult addresses of
//! CNI_IFNAME (an address without an interface index counts as the interface's):
//! - without `table`: each address gets the first routing table id from 100 up that no rule
//!   and no route uses yet, a rule `from ADDR/32 lookup T` (/128 for IPv6; no pref, so the
//!   kernel puts it just above `main`, 32765 in a fresh namespace), the default route via the
//!   address's gateway in T, and a copy in T of every main-table route out of the interface
//!   whose source or gateway lies in the address's subnet or that has neither. Then every
//!   main-table route out of the interface is deleted: traffic must carry a source address
//!   (a socket bound to it) to be routed at all, as with the reference.
//! - with `table: N`: only the rules `from ADDR lookup N`; routes are left alone.
//!
//! DEL deletes every rule (of table N when set) whose source is an address of the interface
//! or of the prevResult; the tables' routes go with the interface. Planning is pure
//! ([`plan_add`], [`plan_del`], [`check_state`]) over what was observed; [`apply`] executes a
//! plan in order and undoes the executed part when a step fails.

use std::net::IpAddr;

use ipnet::IpNet;
use libnet::netlink::route::RT_TABLE_MAIN;
use libnet::netlink::{Handle, Route, Rule, RuleAction};
use libnet::netns::NetNs;
use serde::Deserialize;

use crate::plugins::shared::{netns_if_any, open_netns, prev_result, FirstErr};
use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::{CniResult, IpConfig};

pub struct Sbr;

/// The first table id the reference hands out.
pub const FIRST_TABLE: u32 = 100;

#[derive(Debug, Default, Deserialize)]
struct Conf {
    /// Put every rule in this table and leave the routes where they are.
    #[serde(default)]
    table: Option<u32>,
}

/// The prevResult addresses of `ifname`: those pointing at an interface of that name, at an
/// index outside `interfaces`, or at none (the reference's rule).
pub fn ips_of<'r>(prev: &'r CniResult, ifname: &str) -> Vec<&'r IpConfig> {
    prev.ips
        .iter()
        .filter(
            |ip| match ip.interface.and_then(|i| prev.interfaces.get(i)) {
                Some(iface) => iface.name == ifname,
                None => true,
            },
        )
        .collect()
}

/// One change to the kernel, in the order a plan gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    AddRule(Rule),
    AddRoute(Route),
    ReplaceRoute(Route),
    DelRoute(Route),
}

/// What ADD needs to know of the namespace: every rule and route (all tables, both
/// families) and the interface's index.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub rules: Vec<Rule>,
    pub routes: Vec<Route>,
    pub link: u32,
}

impl Observed {
    fn read(h: &Handle, link: u32) -> Result<Observed, CniError> {
        let mut o = Observed {
            link,
            ..Observed::default()
        };
        for v6 in [false, true] {
            o.rules.extend(h.rules(v6).cni_ctx("sbr: listing rules")?);
            o.routes
                .extend(h.routes(v6).cni_ctx("sbr: listing routes")?);
        }
        Ok(o)
    }

    fn table_used(&self, t: u32) -> bool {
        self.rules.iter().any(|r| r.table == t) || self.routes.iter().any(|r| r.table == t)
    }

    /// The first table id from `from` up that no rule and no route uses.
    pub fn first_free_table(&self, from: u32) -> u32 {
        (from..=u32::MAX)
            .find(|t| !self.table_used(*t))
            .unwrap_or(u32::MAX)
    }

    /// The interface's own routes in the main table.
    fn link_routes(&self) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .filter(move |r| r.table == RT_TABLE_MAIN && r.oif == Some(self.link))
    }
}

fn default_dst(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
        IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
    }
}

/// Does main-table route `r` belong in the table of `addr` (the reference's test)?
fn belongs_to(r: &Route, addr: &IpNet) -> bool {
    let within = |ip: Option<IpAddr>| ip.is_some_and(|ip| addr.contains(&ip));
    within(r.src) || within(r.gw) || (r.src.is_none() && r.gw.is_none())
}

/// The steps of an ADD for `ips`, given what is in the namespace now.
pub fn plan_add(ips: &[&IpConfig], table: Option<u32>, obs: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(t) = table {
        for ip in ips {
            steps.push(Step::AddRule(Rule::lookup_from(ip.address.addr(), t)));
        }
        return steps;
    }
    let mut t = obs.first_free_table(FIRST_TABLE);
    for ip in ips {
        let addr = ip.address.addr();
        steps.push(Step::AddRule(Rule::lookup_from(addr, t)));
        if let Some(gw) = ip.gateway {
            let mut def = Route::new(default_dst(addr), Some(gw), Some(obs.link));
            def.table = t;
            steps.push(Step::AddRoute(def));
        }
        for r in obs.link_routes().filter(|r| belongs_to(r, &ip.address)) {
            steps.push(Step::ReplaceRoute(Route {
                table: t,
                ..r.clone()
            }));
        }
        t = obs.first_free_table(t.saturating_add(1));
    }
    steps.extend(obs.link_routes().cloned().map(Step::DelRoute));
    steps
}

/// The rules DEL removes: a source equal to one of `addrs` (of table `table` when set).
pub fn plan_del(rules: &[Rule], addrs: &[IpAddr], table: Option<u32>) -> Vec<Rule> {
    rules
        .iter()
        .filter(|r| table.is_none_or(|t| r.table == t))
        .filter(|r| r.src.is_some_and(|s| addrs.contains(&s.addr())))
        .cloned()
        .collect()
}

/// CHECK: every address has its rule (in `table` when set); without `table`, the rule's
/// table routes out of the interface, by the gateway when the address has one.
pub fn check_state(ips: &[&IpConfig], table: Option<u32>, obs: &Observed) -> Result<(), String> {
    for ip in ips {
        let addr = ip.address.addr();
        let host = IpNet::from(addr);
        let rule = obs.rules.iter().find(|r| {
            r.src == Some(host)
                && r.action == RuleAction::Lookup
                && table.is_none_or(|t| r.table == t)
        });
        let Some(rule) = rule else {
            return Err(match table {
                Some(t) => format!("no rule from {addr} lookup {t}"),
                None => format!("no rule from {addr}"),
            });
        };
        if table.is_some() {
            continue;
        }
        let mut in_table = obs
            .routes
            .iter()
            .filter(|r| r.table == rule.table && r.oif == Some(obs.link));
        let ok = match ip.gateway {
            Some(gw) => in_table.any(|r| r.dst == default_dst(addr) && r.gw == Some(gw)),
            None => in_table.next().is_some(),
        };
        if !ok {
            return Err(match ip.gateway {
                Some(gw) => format!("table {} has no default route via {gw}", rule.table),
                None => format!("table {} has no route for {addr}", rule.table),
            });
        }
    }
    Ok(())
}

fn run(h: &Handle, s: &Step) -> Result<(), CniError> {
    match s {
        Step::AddRule(r) => h.add_rule(r).cni_ctx("sbr: adding rule"),
        Step::AddRoute(r) => h.add_route(r).cni_ctx("sbr: adding route"),
        Step::ReplaceRoute(r) => h.replace_route(r).cni_ctx("sbr: copying route"),
        Step::DelRoute(r) => h.del_route(r).cni_ctx("sbr: deleting main-table route"),
    }
}

fn undo(h: &Handle, s: &Step) {
    let _ = match s {
        Step::AddRule(r) => h.del_rule(r),
        Step::AddRoute(r) | Step::ReplaceRoute(r) => h.del_route(r),
        Step::DelRoute(r) => h.replace_route(r),
    };
}

/// Execute `steps` in order; on a failure undo the executed ones, newest first.
pub fn apply(h: &Handle, steps: &[Step]) -> Result<(), CniError> {
    for (i, s) in steps.iter().enumerate() {
        if let Err(e) = run(h, s) {
            steps[..i].iter().rev().for_each(|s| undo(h, s));
            return Err(e);
        }
    }
    Ok(())
}

fn load(a: &Args) -> Result<Conf, CniError> {
    a.parse()
}

/// The container namespace, locked against other sbr runs, and a netlink socket in it.
fn enter(ns: &NetNs) -> Result<Handle, CniError> {
    ns.lock_exclusive().cni_ctx("sbr: locking the netns")?;
    Handle::new_in(ns).cni_ctx("sbr: netlink in the container")
}

impl Plugin for Sbr {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let c = load(a)?;
        let prev = a
            .prev_result()?
            .ok_or_else(|| CniError::config("sbr: must be called as a chained plugin"))?;
        let ips = ips_of(&prev, &a.ifname);
        if ips.is_empty() {
            return Err(CniError::config(format!(
                "sbr: no IP addresses supplied on interface {}",
                a.ifname
            )));
        }
        let ns = open_netns(a)?;
        let h = enter(&ns)?;
        let link = h
            .link_by_name(&a.ifname)
            .cni_ctx("sbr: container interface")?;
        let obs = Observed::read(&h, link.index)?;
        apply(&h, &plan_add(&ips, c.table, &obs))?;
        Ok(prev)
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        let c = load(a)?;
        let Some(ns) = netns_if_any(a) else {
            return Ok(()); // the namespace and its rules are gone
        };
        let h = enter(&ns)?;
        let mut addrs: Vec<IpAddr> = match h.find_link(&a.ifname).cni()? {
            Some(l) => h
                .addrs(l.index)
                .cni_ctx("sbr: listing addresses")?
                .into_iter()
                .map(|x| x.net.addr())
                .collect(),
            None => Vec::new(),
        };
        if let Ok(Some(prev)) = a.prev_result() {
            addrs.extend(ips_of(&prev, &a.ifname).iter().map(|ip| ip.address.addr()));
        }
        let mut rules = Vec::new();
        for v6 in [false, true] {
            rules.extend(h.rules(v6).cni_ctx("sbr: listing rules")?);
        }
        let mut errs = FirstErr::default();
        for r in plan_del(&rules, &addrs, c.table) {
            errs.note(h.del_rule(&r).cni_ctx("sbr: deleting rule"));
        }
        errs.finish()
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let c = load(a)?;
        let prev = prev_result(a)?;
        let ips = ips_of(&prev, &a.ifname);
        let ns = open_netns(a)?;
        let h = enter(&ns)?;
        let link = h
            .link_by_name(&a.ifname)
            .cni_ctx("sbr: container interface")?;
        let obs = Observed::read(&h, link.index)?;
        check_state(&ips, c.table, &obs).map_err(|m| CniError::config(format!("sbr: {m}")))
    }

    fn status(&self, a: &Args) -> Result<(), CniError> {
        load(a).map(|_| ())
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        load(a).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
