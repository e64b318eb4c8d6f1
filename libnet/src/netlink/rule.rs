//! Policy routing rules: `ip [-6] rule ...`. A rule selects packets (source/destination prefix,
//! fwmark, in/out interface) and says what to do with them, usually `lookup TABLE`. Tables
//! above 255 travel in `FRA_TABLE` (the header's byte then says `RT_TABLE_UNSPEC`).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::rule::{RuleAction as NlAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Handle, Result};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleAction {
    /// `lookup TABLE`
    #[default]
    Lookup,
    Goto,
    Nop,
    Blackhole,
    Unreachable,
    Prohibit,
    Other(u8),
}

/// One policy routing rule of one address family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub v6: bool,
    /// `pref N`; `None` on add lets the kernel pick (one below the second rule's, 32765 in a
    /// fresh namespace). Rules read back always carry it (0 for the `local` rule).
    pub priority: Option<u32>,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub fwmark: Option<u32>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub table: u32,
    pub action: RuleAction,
}

impl Rule {
    /// `ip rule add from SRC/32 lookup TABLE` (a /128 for IPv6).
    pub fn lookup_from(src: IpAddr, table: u32) -> Rule {
        Rule {
            v6: src.is_ipv6(),
            src: Some(IpNet::from(src)),
            table,
            ..Rule::default()
        }
    }

    fn to_msg(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = if self.v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.header.table = u8::try_from(self.table).unwrap_or(0);
        m.header.action = match self.action {
            RuleAction::Lookup => NlAction::ToTable,
            RuleAction::Goto => NlAction::Goto,
            RuleAction::Nop => NlAction::Nop,
            RuleAction::Blackhole => NlAction::Blackhole,
            RuleAction::Unreachable => NlAction::Unreachable,
            RuleAction::Prohibit => NlAction::Prohibit,
            RuleAction::Other(n) => NlAction::Other(n),
        };
        if let Some(p) = self.priority {
            m.attributes.push(RuleAttribute::Priority(p));
        }
        if let Some(src) = self.src {
            m.header.src_len = src.prefix_len();
            m.attributes.push(RuleAttribute::Source(src.addr()));
        }
        if let Some(dst) = self.dst {
            m.header.dst_len = dst.prefix_len();
            m.attributes.push(RuleAttribute::Destination(dst.addr()));
        }
        if let Some(mark) = self.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
        }
        if let Some(i) = &self.iif {
            m.attributes.push(RuleAttribute::Iifname(i.clone()));
        }
        if let Some(o) = &self.oif {
            m.attributes.push(RuleAttribute::Oifname(o.clone()));
        }
        if self.table > 0 {
            m.attributes.push(RuleAttribute::Table(self.table));
        }
        m
    }
}

fn rule_from_msg(m: RuleMessage) -> Option<Rule> {
    let h = &m.header;
    let v6 = match h.family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let mut r = Rule {
        v6,
        priority: Some(0),
        table: u32::from(h.table),
        action: match h.action {
            NlAction::ToTable => RuleAction::Lookup,
            NlAction::Goto => RuleAction::Goto,
            NlAction::Nop => RuleAction::Nop,
            NlAction::Blackhole => RuleAction::Blackhole,
            NlAction::Unreachable => RuleAction::Unreachable,
            NlAction::Prohibit => RuleAction::Prohibit,
            NlAction::Unspec => RuleAction::Other(0),
            NlAction::Other(n) => RuleAction::Other(n),
            _ => RuleAction::Other(u8::MAX),
        },
        ..Rule::default()
    };
    let (src_len, dst_len) = (h.src_len, h.dst_len);
    for a in m.attributes {
        match a {
            RuleAttribute::Priority(p) => r.priority = Some(p),
            RuleAttribute::Source(ip) => r.src = IpNet::new(ip, src_len).ok(),
            RuleAttribute::Destination(ip) => r.dst = IpNet::new(ip, dst_len).ok(),
            RuleAttribute::FwMark(v) => r.fwmark = Some(v),
            RuleAttribute::Iifname(s) => r.iif = Some(s),
            RuleAttribute::Oifname(s) => r.oif = Some(s),
            RuleAttribute::Table(t) => r.table = t,
            _ => {}
        }
    }
    Some(r)
}

impl Handle {
    /// `ip [-6] rule add [pref N] [from SRC] [to DST] [fwmark M] [iif I] [oif O] lookup T`;
    /// an identical rule already there is an `Exists` error.
    pub fn add_rule(&self, r: &Rule) -> Result<()> {
        self.exec(
            "add rule",
            &|| describe(r),
            RouteNetlinkMessage::NewRule(r.to_msg()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `ip [-6] rule del ...`: the first rule matching every given field; none is success.
    pub fn del_rule(&self, r: &Rule) -> Result<()> {
        match self.exec(
            "del rule",
            &|| describe(r),
            RouteNetlinkMessage::DelRule(r.to_msg()),
            0,
        ) {
            Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
            res => res,
        }
    }

    /// `ip [-6] rule show`
    pub fn rules(&self, v6: bool) -> Result<Vec<Rule>> {
        let mut m = RuleMessage::default();
        m.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        Ok(self
            .dump("dump rules", RouteNetlinkMessage::GetRule(m))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => rule_from_msg(r),
                _ => None,
            })
            .filter(|r| r.v6 == v6)
            .collect())
    }
}

/// The rule as `ip rule` shows it (without the family).
pub fn describe(r: &Rule) -> String {
    let mut s = String::new();
    if let Some(p) = r.priority {
        s.push_str(&format!("pref {p} "));
    }
    match r.src {
        Some(n) => s.push_str(&format!("from {n}")),
        None => s.push_str("from all"),
    }
    if let Some(n) = r.dst {
        s.push_str(&format!(" to {n}"));
    }
    if let Some(m) = r.fwmark {
        s.push_str(&format!(" fwmark {m:#x}"));
    }
    if let Some(i) = &r.iif {
        s.push_str(&format!(" iif {i}"));
    }
    if let Some(o) = &r.oif {
        s.push_str(&format!(" oif {o}"));
    }
    match r.action {
        RuleAction::Lookup => s.push_str(&format!(" lookup {}", r.table)),
        RuleAction::Goto => s.push_str(" goto"),
        RuleAction::Nop => s.push_str(" nop"),
        RuleAction::Blackhole => s.push_str(" blackhole"),
        RuleAction::Unreachable => s.push_str(" unreachable"),
        RuleAction::Prohibit => s.push_str(" prohibit"),
        RuleAction::Other(n) => s.push_str(&format!(" action {n}")),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_tables_go_in_the_attribute_and_round_trip() {
        let r = Rule {
            priority: Some(100),
            ..Rule::lookup_from("fd00:6b6e::2".parse().unwrap(), 1000)
        };
        let m = r.to_msg();
        assert_eq!(m.header.table, 0);
        assert_eq!(m.header.src_len, 128);
        assert!(m.attributes.contains(&RuleAttribute::Table(1000)));
        assert_eq!(rule_from_msg(m).unwrap(), r);

        let r = Rule::lookup_from("10.244.0.2".parse().unwrap(), 100);
        let m = r.to_msg();
        assert_eq!((m.header.table, m.header.src_len), (100, 32));
        let back = rule_from_msg(m).unwrap();
        assert_eq!(back.src, r.src);
        assert_eq!(back.table, 100);
        assert_eq!(back.priority, Some(0), "read back, no pref means 0");
    }

    #[test]
    fn describe_reads_like_ip_rule() {
        let r = Rule {
            priority: Some(32765),
            ..Rule::lookup_from("10.244.0.2".parse().unwrap(), 100)
        };
        assert_eq!(describe(&r), "pref 32765 from 10.244.0.2/32 lookup 100");
    }
}
