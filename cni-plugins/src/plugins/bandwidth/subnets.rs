//! `shapedSubnets` / `unshapedSubnets`: shape only the traffic exchanged with some subnets, or
//! all but that, as containernetworking/plugins 1.5.0 introduced it (later reverted there).
//!
//! Instead of a tbf, the shaped link gets `tc qdisc add dev L root handle 1: htb default D`, a
//! shaped class `1:30` (rate and burst from the configuration), an unshaped class `1:1`
//! (100 GB/s: effectively unlimited) and, for each listed subnet, a u32 filter (priority 16 for
//! IPv4, 15 for IPv6) sending it to the class it names: `1:30` for `shapedSubnets` (default
//! `1:1`), `1:1` for `unshapedSubnets` (default `1:30`). The class ids, default class, rates
//! and priorities are the reference's.
//!
//! One deliberate difference: the reference matches the destination address on both links. On
//! the ifb (traffic *from* the container) that is the peer's address, but on the host veth
//! (traffic *to* the container) the destination is the container itself, so its lists never
//! matched there. knit matches the peer's address in both directions: the source on the veth,
//! the destination on the ifb.

use ipnet::IpNet;
use libnet::netlink::tc::{AddrField, HtbClass, PrefixFilter, HANDLE_ROOT, HANDLE_TBF};
use libnet::netlink::{Handle, Link};

use super::{drift, Shape};
use crate::skel::{CniError, OrCni};

/// The shaped class's minor (`1:30`, 48), the reference's `ShapedClassMinorID`.
pub const SHAPED_MINOR: u32 = 0x30;
/// The unshaped class's minor (`1:1`), the reference's `UnShapedClassMinorID`.
pub const UNSHAPED_MINOR: u32 = 1;
/// The unshaped class's rate and ceiling, bytes/s (the reference's `UncappedRate`).
pub const UNSHAPED_RATE: u64 = 100_000_000_000;
/// The unshaped class's bucket: a millisecond at its rate, what `tc` picks without `burst`.
const UNSHAPED_BUFFER_US: f64 = 1_000.0;
/// u32 filter priorities; IPv4 and IPv6 need distinct ones (one list per priority+protocol).
const PRIO_V4: u16 = 16;
const PRIO_V6: u16 = 15;
/// The Ethernet header, added to the MTU for the classes' quantum.
const ETH_HLEN: u32 = 14;

/// Which of the two lists the configuration gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `shapedSubnets`: only traffic with these subnets is shaped.
    Shaped,
    /// `unshapedSubnets`: all traffic but that with these subnets is shaped.
    Unshaped,
}

/// A validated, non-empty subnet list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnets {
    pub mode: Mode,
    pub nets: Vec<IpNet>,
}

impl Subnets {
    /// Validate the two lists: at most one non-empty, every entry a CIDR (host bits are
    /// dropped, as Go's `net.ParseCIDR`).
    pub fn parse(
        shaped: Option<&[String]>,
        unshaped: Option<&[String]>,
    ) -> Result<Option<Subnets>, CniError> {
        let (shaped, unshaped) = (shaped.unwrap_or_default(), unshaped.unwrap_or_default());
        let (mode, list) = match (shaped.is_empty(), unshaped.is_empty()) {
            (true, true) => return Ok(None),
            (false, false) => {
                return Err(CniError::config(
                    "bandwidth: unshapedSubnets and shapedSubnets cannot be both specified, \
                     one of them should be discarded",
                ))
            }
            (false, true) => (Mode::Shaped, shaped),
            (true, false) => (Mode::Unshaped, unshaped),
        };
        let nets = list
            .iter()
            .map(|s| {
                s.trim().parse::<IpNet>().map(|n| n.trunc()).map_err(|e| {
                    CniError::config(format!("bandwidth: bad subnet {s:?} provided: {e}"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Subnets { mode, nets }))
    }

    /// The class that takes what no filter matches.
    pub fn default_minor(&self) -> u32 {
        match self.mode {
            Mode::Shaped => UNSHAPED_MINOR,
            Mode::Unshaped => SHAPED_MINOR,
        }
    }

    /// The class the listed subnets go to.
    pub fn listed_minor(&self) -> u32 {
        match self.mode {
            Mode::Shaped => SHAPED_MINOR,
            Mode::Unshaped => UNSHAPED_MINOR,
        }
    }

    /// The filters for one link, matching the peer's address in `field`.
    pub fn filters(&self, field: AddrField) -> Vec<PrefixFilter> {
        self.nets
            .iter()
            .map(|&net| PrefixFilter {
                net,
                field,
                class_id: HANDLE_TBF | self.listed_minor(),
                priority: if net.addr().is_ipv4() {
                    PRIO_V4
                } else {
                    PRIO_V6
                },
            })
            .collect()
    }
}

/// The two classes of a shaped link with MTU `mtu`: shaped first, then unshaped.
pub fn classes(shape: &Shape, mtu: u32, tick_in_usec: f64) -> [HtbClass; 2] {
    let buffer = shape.tbf(tick_in_usec).buffer;
    let quantum = mtu + ETH_HLEN;
    let shaped = HtbClass {
        handle: HANDLE_TBF | SHAPED_MINOR,
        parent: HANDLE_TBF,
        rate: shape.rate / 8,
        ceil: shape.rate / 8,
        buffer,
        cbuffer: buffer,
        quantum,
    };
    let unshaped_buffer = (UNSHAPED_BUFFER_US * tick_in_usec) as u32;
    let unshaped = HtbClass {
        handle: HANDLE_TBF | UNSHAPED_MINOR,
        rate: UNSHAPED_RATE,
        ceil: UNSHAPED_RATE,
        buffer: unshaped_buffer,
        cbuffer: unshaped_buffer,
        ..shaped
    };
    [shaped, unshaped]
}

/// Program `link`: htb root qdisc `1:`, both classes, the subnets' filters. A failure halfway
/// removes the root qdisc again, which takes the classes and filters with it.
pub fn add_htb(
    h: &Handle,
    link: &Link,
    shape: &Shape,
    subnets: &Subnets,
    field: AddrField,
    ticks: f64,
) -> Result<(), CniError> {
    let ctx = |what: &str| format!("bandwidth: {what} on {}", link.name);
    h.add_htb_qdisc(link.index, HANDLE_TBF, subnets.default_minor())
        .cni_ctx(&ctx("htb qdisc"))?;
    let fill = || -> Result<(), CniError> {
        for class in classes(shape, link.mtu, ticks) {
            h.add_htb_class(link.index, &class)
                .cni_ctx(&ctx(&format!("htb class 1:{:x}", class.handle & 0xffff)))?;
        }
        for f in subnets.filters(field) {
            h.add_prefix_filter(link.index, HANDLE_TBF, &f)
                .cni_ctx(&ctx(&format!("filter for {}", f.net)))?;
        }
        Ok(())
    };
    fill().inspect_err(|_| drop(h.del_qdisc(link.index, HANDLE_ROOT)))
}

/// CHECK one link's htb layout against the configuration; the first difference is the error.
pub fn check_htb(
    h: &Handle,
    link: &Link,
    shape: &Shape,
    subnets: &Subnets,
    field: AddrField,
    ticks: f64,
) -> Result<(), CniError> {
    let on = |what: String| drift(format!("{what} on {}", link.name));
    let qdiscs = h.qdiscs(link.index).cni_ctx("bandwidth")?;
    let root = qdiscs
        .iter()
        .find(|q| q.parent == HANDLE_ROOT && q.kind == "htb" && q.handle == HANDLE_TBF)
        .ok_or_else(|| on("no htb root qdisc 1:".into()))?;
    if root.htb_default != Some(subnets.default_minor()) {
        return Err(on(format!(
            "htb default class is {:x?}, expected {:x}",
            root.htb_default,
            subnets.default_minor()
        )));
    }
    let got = h.htb_classes(link.index).cni_ctx("bandwidth")?;
    for want in classes(shape, link.mtu, ticks) {
        let minor = want.handle & 0xffff;
        let c = got
            .iter()
            .find(|c| c.handle == want.handle)
            .ok_or_else(|| on(format!("htb class 1:{minor:x} is missing")))?;
        if (c.rate, c.ceil, c.buffer) != (want.rate, want.ceil, want.buffer) {
            return Err(on(format!(
                "htb class 1:{minor:x} has rate {} ceil {} buffer {}, expected rate {} ceil {} \
                 buffer {}",
                c.rate, c.ceil, c.buffer, want.rate, want.ceil, want.buffer
            )));
        }
    }
    let filters = h.filters(link.index, HANDLE_TBF).cni_ctx("bandwidth")?;
    let wanted = subnets.filters(field);
    for want in &wanted {
        let keys = want.keys();
        let present = filters.iter().any(|f| {
            f.kind == "u32"
                && f.protocol == want.protocol()
                && f.class_id == Some(want.class_id)
                && f.keys == keys
        });
        if !present {
            return Err(on(format!(
                "no filter sends {} to class 1:{:x}",
                want.net,
                want.class_id & 0xffff
            )));
        }
    }
    // Nothing else either; the kernel also lists each priority's hash table, which has no keys.
    let matching = filters.iter().filter(|f| !f.keys.is_empty()).count();
    if matching != wanted.len() {
        return Err(on(format!(
            "{matching} u32 filters under 1:, expected {}",
            wanted.len()
        )));
    }
    Ok(())
}
