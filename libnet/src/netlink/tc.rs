//! Traffic control: `tc qdisc ...` and `tc filter ...`, as much as bandwidth shaping needs.
//!
//! Shaping a container the way the reference `bandwidth` plugin does takes three objects:
//! a `tbf` root qdisc (token bucket) on a link, an `ingress` qdisc on the host-side veth, and a
//! match-all `u32` filter under it whose `mirred` action redirects every packet to an `ifb`
//! device, so traffic *from* the container is queued (and shaped) on the ifb's egress.
//!
//! `netlink-packet-route` models the ingress qdisc, u32 and mirred; `tbf` is not modelled, so
//! its `TCA_OPTIONS` are encoded and decoded here as raw nested attributes (`struct
//! tc_tbf_qopt` from `linux/pkt_sched.h`).
//!
//! Shaping only some traffic (by address prefix) takes an `htb` root qdisc with classes
//! ([`htb`]) and `u32` prefix filters steering packets to them ([`prefix`]).

mod htb;
mod prefix;

pub use htb::HtbClass;
pub use prefix::{AddrField, PrefixFilter};

use netlink_packet_core::{DefaultNla, Nla, NlasIterator, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Handle, Result};

/// `TC_H_ROOT`: the parent of a root qdisc.
pub const HANDLE_ROOT: u32 = 0xFFFF_FFFF;
/// `TC_H_INGRESS` (`ffff:fff1`): the parent of the ingress qdisc.
pub const HANDLE_INGRESS_PARENT: u32 = 0xFFFF_FFF1;
/// `ffff:`: the ingress qdisc's own handle, the parent of its filters.
pub const HANDLE_INGRESS: u32 = 0xFFFF_0000;
/// `1:`: the handle the reference gives its tbf qdiscs.
pub const HANDLE_TBF: u32 = 0x0001_0000;
/// Microseconds in a second (`TIME_UNITS_PER_SEC` of iproute2).
pub const USEC_PER_SEC: f64 = 1_000_000.0;

const ETH_P_ALL: u16 = 0x0003;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
/// `sizeof(struct tc_tbf_qopt)`: two `tc_ratespec` (12 bytes each), limit, buffer, mtu.
const TBF_QOPT_LEN: usize = 36;

/// The parameters of a `tbf` qdisc, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// Bytes that may wait in the queue.
    pub limit: u32,
    /// The bucket size as the time it takes to send it at `rate`, in psched ticks.
    pub buffer: u32,
}

impl Tbf {
    /// `tc qdisc add ... tbf rate RATE burst BURST latency LATENCY` in kernel units, computed as
    /// iproute2 and the reference plugin do: `buffer = ticks(burst / rate)`,
    /// `limit = rate * latency + burst`. Rates and burst are in bytes, latency in µs,
    /// `tick_in_usec` from [`tick_in_usec`]. The float truncations are the reference's.
    pub fn from_rate_burst(rate: u64, burst: u32, latency_us: f64, tick_in_usec: f64) -> Tbf {
        let burst_time = (f64::from(burst) * USEC_PER_SEC / rate as f64) as u32;
        let buffer = (f64::from(burst_time) * tick_in_usec) as u32;
        let limit = ((rate as f64 * latency_us / USEC_PER_SEC) as u32).wrapping_add(burst);
        Tbf {
            rate,
            limit,
            buffer,
        }
    }

    /// The `TCA_OPTIONS` nest of a tbf qdisc: `TCA_TBF_PARMS` and, above 4 GB/s,
    /// `TCA_TBF_RATE64`.
    fn options(&self) -> Vec<TcOption> {
        let mut qopt = [0u8; TBF_QOPT_LEN];
        // tc_ratespec.rate sits after cell_log, linklayer, overhead, cell_align, mpu (8 bytes).
        let rate32 = u32::try_from(self.rate).unwrap_or(u32::MAX);
        qopt[8..12].copy_from_slice(&rate32.to_ne_bytes());
        qopt[24..28].copy_from_slice(&self.limit.to_ne_bytes());
        qopt[28..32].copy_from_slice(&self.buffer.to_ne_bytes());
        let mut opts = vec![TcOption::Other(DefaultNla::new(
            TCA_TBF_PARMS,
            qopt.to_vec(),
        ))];
        if self.rate > u64::from(u32::MAX) {
            opts.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                self.rate.to_ne_bytes().to_vec(),
            )));
        }
        opts
    }

    /// Read the parameters back from the nested attributes the kernel dumps.
    fn parse(nested: &[u8]) -> Option<Tbf> {
        let mut tbf = None;
        let mut rate64 = None;
        for nla in NlasIterator::new(nested) {
            let nla = nla.ok()?;
            let v = nla.value();
            match nla.kind() {
                TCA_TBF_PARMS if v.len() >= TBF_QOPT_LEN => {
                    let u = |o: usize| u32::from_ne_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
                    tbf = Some(Tbf {
                        rate: u64::from(u(8)),
                        limit: u(24),
                        buffer: u(28),
                    });
                }
                TCA_TBF_RATE64 if v.len() >= 8 => {
                    rate64 = Some(u64::from_ne_bytes(v[..8].try_into().ok()?));
                }
                _ => {}
            }
        }
        let mut tbf = tbf?;
        if let Some(r) = rate64 {
            tbf.rate = r;
        }
        Some(tbf)
    }
}

/// Ticks of the packet scheduler clock per microsecond, from `/proc/net/psched` as iproute2
/// reads it (15.625 on every kernel since 2.6.x with high resolution timers).
pub fn tick_in_usec() -> f64 {
    std::fs::read_to_string("/proc/net/psched")
        .ok()
        .and_then(|s| tick_in_usec_from(&s))
        .unwrap_or(15.625)
}

/// Parse `/proc/net/psched`: `t2us us2t clock_res hz`, in hex.
pub fn tick_in_usec_from(psched: &str) -> Option<f64> {
    let v: Vec<u64> = psched
        .split_whitespace()
        .map(|p| u64::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    let (mut t2us, us2t, clock_res) = (*v.first()?, *v.get(1)?, *v.get(2)?);
    if us2t == 0 {
        return None;
    }
    if clock_res == 1_000_000_000 {
        t2us = us2t; // old kernels' compatibility mode, as iproute2
    }
    Some(t2us as f64 / us2t as f64 * (clock_res as f64 / USEC_PER_SEC))
}

/// What the kernel says about one qdisc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    /// For a `tbf` qdisc: its parameters.
    pub tbf: Option<Tbf>,
    /// For an `htb` qdisc: the minor of its default class.
    pub htb_default: Option<u32>,
}

/// What the kernel says about one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub index: u32,
    pub parent: u32,
    pub kind: String,
    /// Priority (`pref`).
    pub priority: u16,
    /// Ethertype (host order; `ETH_P_ALL` is 3).
    pub protocol: u16,
    /// Interface indexes this filter's `mirred` actions redirect or mirror to.
    pub mirred_to: Vec<u32>,
    /// For u32: the class (`flowid`) it classifies into.
    pub class_id: Option<u32>,
    /// For u32: the keys of its selector (none for the hash table entries the kernel lists).
    pub keys: Vec<TcU32Key>,
}

fn tc_msg(index: u32, parent: u32, handle: u32) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::from(parent);
    m.header.handle = TcHandle::from(handle);
    m
}

/// Whatever `TCA_OPTIONS` holds for a kind the crate does not model, as raw nested bytes.
fn raw_options(attrs: &[TcAttribute]) -> Option<Vec<u8>> {
    attrs.iter().find_map(|a| match a {
        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcOption::Other(nla) => {
                let mut buf = vec![0u8; nla.value_len()];
                nla.emit_value(&mut buf);
                Some(buf)
            }
            _ => None,
        }),
        _ => None,
    })
}

fn kind_of(attrs: &[TcAttribute]) -> String {
    attrs
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn qdisc_from_msg(m: TcMessage) -> Qdisc {
    let kind = kind_of(&m.attributes);
    let opts = raw_options(&m.attributes);
    let tbf = opts
        .as_deref()
        .filter(|_| kind == "tbf")
        .and_then(Tbf::parse);
    let htb_default = opts
        .as_deref()
        .filter(|_| kind == "htb")
        .and_then(htb::parse_default);
    Qdisc {
        index: m.header.index as u32,
        handle: m.header.handle.into(),
        parent: m.header.parent.into(),
        kind,
        tbf,
        htb_default,
    }
}

fn filter_from_msg(m: TcMessage) -> Filter {
    let mut mirred_to = Vec::new();
    let (mut class_id, mut keys) = (None, Vec::new());
    for a in &m.attributes {
        let TcAttribute::Options(opts) = a else {
            continue;
        };
        for o in opts {
            let acts = match o {
                TcOption::U32(TcFilterU32Option::Action(acts)) => acts,
                TcOption::U32(TcFilterU32Option::ClassId(c)) => {
                    class_id = Some((*c).into());
                    continue;
                }
                TcOption::U32(TcFilterU32Option::Selector(sel)) => {
                    keys.clone_from(&sel.keys);
                    continue;
                }
                _ => continue,
            };
            for act in acts {
                for attr in &act.attributes {
                    let TcActionAttribute::Options(aopts) = attr else {
                        continue;
                    };
                    for ao in aopts {
                        if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = ao {
                            mirred_to.push(p.ifindex);
                        }
                    }
                }
            }
        }
    }
    Filter {
        index: m.header.index as u32,
        parent: m.header.parent.into(),
        kind: kind_of(&m.attributes),
        priority: (m.header.info >> 16) as u16,
        protocol: u16::from_be((m.header.info & 0xffff) as u16),
        mirred_to,
        class_id,
        keys,
    }
}

fn mirred_redirect(order: u16, target: u32, verdict: TcActionType) -> TcAction {
    let mut p = TcMirror::default();
    p.generic.action = verdict;
    p.eaction = TcMirrorActionType::EgressRedir;
    p.ifindex = target;
    let mut act = TcAction::default();
    act.tab = order;
    act.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(p))]),
    ];
    act
}

/// The message of [`Handle::add_redirect_filter`], built apart for tests.
fn redirect_filter_msg(index: u32, target: u32) -> TcMessage {
    let mut m = tc_msg(index, HANDLE_INGRESS, 0);
    m.header.info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()]; // match 0/0 at 0: every packet
    m.attributes = vec![
        TcAttribute::Kind("u32".into()),
        TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(sel)),
            TcOption::U32(TcFilterU32Option::ClassId(TcHandle::from(0x0001_0001))),
            // The reference (vishvananda/netlink's U32 with both RedirIndex and Actions) installs
            // the redirect twice, `stolen` then `pass`; the second never runs. Same here, so
            // `tc filter show` reads the same under either plugin set.
            TcOption::U32(TcFilterU32Option::Action(vec![
                mirred_redirect(1, target, TcActionType::Stolen),
                mirred_redirect(2, target, TcActionType::Ok),
            ])),
        ]),
    ];
    m
}

impl Handle {
    /// `tc qdisc add dev #INDEX root handle 1: tbf rate R burst B latency L` (kernel units, see
    /// [`Tbf::from_rate_burst`]).
    pub fn add_tbf(&self, index: u32, tbf: &Tbf) -> Result<()> {
        let mut m = tc_msg(index, HANDLE_ROOT, HANDLE_TBF);
        m.attributes = vec![
            TcAttribute::Kind("tbf".into()),
            TcAttribute::Options(tbf.options()),
        ];
        self.exec(
            "add tbf qdisc",
            &|| format!("link #{index}"),
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `tc qdisc add dev #INDEX handle ffff: ingress`
    pub fn add_ingress_qdisc(&self, index: u32) -> Result<()> {
        let mut m = tc_msg(index, HANDLE_INGRESS_PARENT, HANDLE_INGRESS);
        m.attributes = vec![TcAttribute::Kind("ingress".into())];
        self.exec(
            "add ingress qdisc",
            &|| format!("link #{index}"),
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `tc filter add dev #INDEX parent ffff: protocol all prio 1 u32 match u32 0 0 flowid 1:1
    /// action mirred egress redirect dev #TARGET`: everything arriving on the link is sent out
    /// of `target` instead (an ifb, where it can be queued).
    pub fn add_redirect_filter(&self, index: u32, target: u32) -> Result<()> {
        self.exec(
            "add u32 filter",
            &|| format!("link #{index} (redirect to #{target})"),
            RouteNetlinkMessage::NewTrafficFilter(redirect_filter_msg(index, target)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `tc qdisc del dev #INDEX root` (`parent` [`HANDLE_ROOT`]) or `... ingress`
    /// (`parent` [`HANDLE_INGRESS_PARENT`]); a missing qdisc or link is success.
    pub fn del_qdisc(&self, index: u32, parent: u32) -> Result<()> {
        let m = tc_msg(index, parent, 0);
        match self.exec(
            "del qdisc",
            &|| format!("link #{index} parent {parent:#x}"),
            RouteNetlinkMessage::DelQueueDiscipline(m),
            0,
        ) {
            Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)) => {
                Ok(())
            }
            r => r,
        }
    }

    /// `tc qdisc show dev #INDEX` (the kernel's default qdiscs included).
    pub fn qdiscs(&self, index: u32) -> Result<Vec<Qdisc>> {
        let all = self.dump(
            "dump qdiscs",
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(index as i32)),
        )?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) => Some(qdisc_from_msg(q)),
                _ => None,
            })
            .filter(|q| q.index == index)
            .collect())
    }

    /// `tc filter show dev #INDEX parent PARENT` (e.g. [`HANDLE_INGRESS`] for `ingress`).
    pub fn filters(&self, index: u32, parent: u32) -> Result<Vec<Filter>> {
        let m = tc_msg(index, parent, 0);
        let all = match self.dump("dump filters", RouteNetlinkMessage::GetTrafficFilter(m)) {
            Err(e) if matches!(e.errno(), Some(libc::EINVAL | libc::ENOENT)) => {
                return Ok(Vec::new()); // no such qdisc: no filters
            }
            r => r?,
        };
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(f) => Some(filter_from_msg(f)),
                _ => None,
            })
            .collect())
    }
}

/// Say what is wrong with a tbf qdisc compared with what was asked for (for CHECK).
pub fn tbf_mismatch(want: &Tbf, got: &Tbf) -> Option<String> {
    let field = if want.rate != got.rate {
        ("rate", want.rate, got.rate)
    } else if want.limit != got.limit {
        ("limit", u64::from(want.limit), u64::from(got.limit))
    } else if want.buffer != got.buffer {
        ("buffer", u64::from(want.buffer), u64::from(got.buffer))
    } else {
        return None;
    };
    Some(format!(
        "tbf {} is {}, expected {}",
        field.0, field.2, field.1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    // 50 Mbit/s with a 400 kbit burst, as the reference computes it (values checked against
    // `tc -d qdisc show` after the reference plugin ran here: rate 50Mbit burst 50000b lat 25ms).
    #[test]
    fn tbf_math_matches_the_reference() {
        let t = Tbf::from_rate_burst(50_000_000 / 8, 400_000 / 8, 25_000.0, 15.625);
        assert_eq!(t.rate, 6_250_000);
        assert_eq!(t.buffer, 125_000); // 8000 µs of 64 ns ticks
        assert_eq!(t.limit, 156_250 + 50_000);
        // Truncation of the burst time happens before the tick conversion, as in the reference.
        let t = Tbf::from_rate_burst(1_000_003, 3_333, 25_000.0, 15.625);
        let burst_us = (3_333.0f64 * 1e6 / 1_000_003.0) as u32;
        assert_eq!(t.buffer, (f64::from(burst_us) * 15.625) as u32);
        assert_eq!(t.limit, (1_000_003.0f64 * 0.025) as u32 + 3_333);
    }

    #[test]
    fn psched_is_parsed_like_iproute2() {
        let v = tick_in_usec_from("000003e8 00000040 000f4240 3b9aca00\n").unwrap();
        assert_eq!(v, 15.625);
        assert_eq!(
            tick_in_usec_from("00000001 00000001 3b9aca00 3b9aca00"),
            Some(1000.0)
        );
        assert_eq!(tick_in_usec_from("garbage"), None);
        assert_eq!(tick_in_usec_from("1 0 1"), None);
    }

    #[test]
    fn tbf_options_round_trip_with_rate64() {
        for rate in [6_250_000u64, 10_000_000_000] {
            let t = Tbf {
                rate,
                limit: 206_250,
                buffer: 125_000,
            };
            let opts = t.options();
            let mut buf = vec![0u8; opts.as_slice().buffer_len()];
            opts.as_slice().emit(&mut buf);
            assert_eq!(Tbf::parse(&buf), Some(t));
            assert_eq!(opts.len(), if rate > u64::from(u32::MAX) { 2 } else { 1 });
        }
    }

    #[test]
    fn redirect_filter_parses_back() {
        let m = redirect_filter_msg(7, 9);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let back = TcMessage::parse(&buf).unwrap();
        let f = filter_from_msg(back);
        assert_eq!(f.kind, "u32");
        assert_eq!(f.priority, 1);
        assert_eq!(f.parent, HANDLE_INGRESS);
        assert_eq!(f.mirred_to, vec![9, 9]);
        assert_eq!(
            m.header.info & 0xffff,
            0x0300,
            "protocol all, network order"
        );
    }

    #[test]
    fn tbf_mismatch_names_the_field() {
        let a = Tbf {
            rate: 1,
            limit: 2,
            buffer: 3,
        };
        assert_eq!(tbf_mismatch(&a, &a), None);
        let b = Tbf { limit: 5, ..a };
        assert_eq!(tbf_mismatch(&a, &b).unwrap(), "tbf limit is 5, expected 2");
    }
}
