//! `htb` qdiscs and classes (`tc qdisc ... htb`, `tc class ... htb`), as much as shaping some
//! traffic and not the rest needs: a root qdisc with a default class, and leaf classes under it.
//!
//! `netlink-packet-route` does not model htb, so its `TCA_OPTIONS` are encoded and decoded here
//! as raw nested attributes (`struct tc_htb_glob`, `struct tc_htb_opt` from `linux/pkt_sched.h`).

use netlink_packet_core::{DefaultNla, NlasIterator, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{TcAttribute, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;

use super::{kind_of, raw_options, tc_msg, HANDLE_ROOT};
use crate::netlink::{Handle, Result};

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
/// `HTB_VER >> 16`: the only version the kernel accepts.
const HTB_VERSION: u32 = 3;
/// iproute2's default `r2q`.
const RATE2QUANTUM: u32 = 10;
/// `sizeof(struct tc_htb_glob)`: version, rate2quantum, defcls, debug, direct_pkts.
const HTB_GLOB_LEN: usize = 20;
/// `sizeof(struct tc_htb_opt)`: two `tc_ratespec` (12 bytes each), buffer, cbuffer, quantum,
/// level, prio.
const HTB_OPT_LEN: usize = 44;
/// `TC_LINKLAYER_ETHERNET`, what `tc` puts in a rate spec.
const LINKLAYER_ETHERNET: u8 = 1;

/// One htb class, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HtbClass {
    /// `major:minor` of the class (`classid`).
    pub handle: u32,
    /// The qdisc or class above it. Dumps show a class right under the qdisc with the parent
    /// [`HANDLE_ROOT`] instead of the qdisc's handle.
    pub parent: u32,
    /// Guaranteed rate, bytes per second.
    pub rate: u64,
    /// Rate it may reach by borrowing, bytes per second.
    pub ceil: u64,
    /// Bucket of `rate` as the time to send it, psched ticks.
    pub buffer: u32,
    /// Bucket of `ceil` as the time to send it, psched ticks.
    pub cbuffer: u32,
    /// Bytes a class may dequeue per round (0: the kernel derives it from the rate).
    pub quantum: u32,
}

/// Put a 32-bit rate in a `tc_ratespec` starting at `at`.
fn put_ratespec(buf: &mut [u8], at: usize, rate: u64) {
    buf[at + 1] = LINKLAYER_ETHERNET;
    let rate32 = u32::try_from(rate).unwrap_or(u32::MAX);
    buf[at + 8..at + 12].copy_from_slice(&rate32.to_ne_bytes());
}

fn u32_at(v: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]])
}

fn other(kind: u16, value: Vec<u8>) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value))
}

impl HtbClass {
    /// The `TCA_OPTIONS` nest: `TCA_HTB_PARMS` and, above 4 GB/s, the 64-bit rates.
    pub(super) fn options(&self) -> Vec<TcOption> {
        let mut opt = [0u8; HTB_OPT_LEN];
        put_ratespec(&mut opt, 0, self.rate);
        put_ratespec(&mut opt, 12, self.ceil);
        opt[24..28].copy_from_slice(&self.buffer.to_ne_bytes());
        opt[28..32].copy_from_slice(&self.cbuffer.to_ne_bytes());
        opt[32..36].copy_from_slice(&self.quantum.to_ne_bytes());
        let mut opts = vec![other(TCA_HTB_PARMS, opt.to_vec())];
        if self.rate > u64::from(u32::MAX) {
            opts.push(other(TCA_HTB_RATE64, self.rate.to_ne_bytes().to_vec()));
        }
        if self.ceil > u64::from(u32::MAX) {
            opts.push(other(TCA_HTB_CEIL64, self.ceil.to_ne_bytes().to_vec()));
        }
        opts
    }

    /// Read a class back from the nested attributes the kernel dumps.
    pub(super) fn parse(handle: u32, parent: u32, nested: &[u8]) -> Option<HtbClass> {
        let mut class = None;
        let (mut rate64, mut ceil64) = (None, None);
        for nla in NlasIterator::new(nested) {
            let nla = nla.ok()?;
            let v = nla.value();
            match nla.kind() {
                TCA_HTB_PARMS if v.len() >= HTB_OPT_LEN => {
                    class = Some(HtbClass {
                        handle,
                        parent,
                        rate: u64::from(u32_at(v, 8)),
                        ceil: u64::from(u32_at(v, 20)),
                        buffer: u32_at(v, 24),
                        cbuffer: u32_at(v, 28),
                        quantum: u32_at(v, 32),
                    });
                }
                TCA_HTB_RATE64 if v.len() >= 8 => {
                    rate64 = Some(u64::from_ne_bytes(v[..8].try_into().ok()?))
                }
                TCA_HTB_CEIL64 if v.len() >= 8 => {
                    ceil64 = Some(u64::from_ne_bytes(v[..8].try_into().ok()?))
                }
                _ => {}
            }
        }
        let mut class = class?;
        class.rate = rate64.unwrap_or(class.rate);
        class.ceil = ceil64.unwrap_or(class.ceil);
        Some(class)
    }
}

/// The `TCA_OPTIONS` nest of an htb qdisc whose unclassified traffic goes to `handle major:default`.
pub(super) fn qdisc_options(default_minor: u32) -> Vec<TcOption> {
    let mut glob = [0u8; HTB_GLOB_LEN];
    glob[0..4].copy_from_slice(&HTB_VERSION.to_ne_bytes());
    glob[4..8].copy_from_slice(&RATE2QUANTUM.to_ne_bytes());
    glob[8..12].copy_from_slice(&default_minor.to_ne_bytes());
    vec![other(TCA_HTB_INIT, glob.to_vec())]
}

/// The default class minor of an htb qdisc, from its dumped options.
pub(super) fn parse_default(nested: &[u8]) -> Option<u32> {
    NlasIterator::new(nested)
        .filter_map(|n| n.ok())
        .find(|n| n.kind() == TCA_HTB_INIT && n.value().len() >= HTB_GLOB_LEN)
        .map(|n| u32_at(n.value(), 8))
}

/// The message of [`Handle::add_htb_class`], built apart for tests.
pub(super) fn class_msg(index: u32, class: &HtbClass) -> TcMessage {
    let mut m = tc_msg(index, class.parent, class.handle);
    m.attributes = vec![
        TcAttribute::Kind("htb".into()),
        TcAttribute::Options(class.options()),
    ];
    m
}

impl Handle {
    /// `tc qdisc add dev #INDEX root handle HANDLE htb default DEFAULT_MINOR` (r2q 10).
    pub fn add_htb_qdisc(&self, index: u32, handle: u32, default_minor: u32) -> Result<()> {
        let mut m = tc_msg(index, HANDLE_ROOT, handle);
        m.attributes = vec![
            TcAttribute::Kind("htb".into()),
            TcAttribute::Options(qdisc_options(default_minor)),
        ];
        self.exec(
            "add htb qdisc",
            &|| format!("link #{index}"),
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `tc class add dev #INDEX parent P classid C htb rate R ceil C burst B cburst CB
    /// quantum Q` (kernel units, see [`HtbClass`]).
    pub fn add_htb_class(&self, index: u32, class: &HtbClass) -> Result<()> {
        self.exec(
            "add htb class",
            &|| format!("link #{index} class {:#x}", class.handle),
            RouteNetlinkMessage::NewTrafficClass(class_msg(index, class)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `tc class show dev #INDEX`, the htb classes only.
    pub fn htb_classes(&self, index: u32) -> Result<Vec<HtbClass>> {
        let all = self.dump(
            "dump classes",
            RouteNetlinkMessage::GetTrafficClass(TcMessage::with_index(index as i32)),
        )?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficClass(c) => Some(c),
                _ => None,
            })
            .filter(|c| c.header.index as u32 == index && kind_of(&c.attributes) == "htb")
            .filter_map(|c| {
                let opts = raw_options(&c.attributes)?;
                HtbClass::parse(c.header.handle.into(), c.header.parent.into(), &opts)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    #[test]
    fn class_round_trips_with_64_bit_rates() {
        for (rate, ceil) in [(125_000u64, 250_000u64), (100_000_000_000, 100_000_000_000)] {
            let c = HtbClass {
                handle: 0x0001_0030,
                parent: 0x0001_0000,
                rate,
                ceil,
                buffer: 125_000,
                cbuffer: 125_000,
                quantum: 1514,
            };
            let m = class_msg(7, &c);
            let mut buf = vec![0u8; m.buffer_len()];
            m.emit(&mut buf);
            let back = TcMessage::parse(&buf).unwrap();
            assert_eq!(kind_of(&back.attributes), "htb");
            let opts = raw_options(&back.attributes).unwrap();
            assert_eq!(HtbClass::parse(c.handle, c.parent, &opts), Some(c));
            let big = rate > u64::from(u32::MAX);
            assert_eq!(c.options().len(), if big { 3 } else { 1 });
        }
    }

    #[test]
    fn class_parms_layout() {
        let c = HtbClass {
            rate: 0x0102_0304,
            ceil: 5,
            buffer: 6,
            cbuffer: 7,
            quantum: 8,
            ..HtbClass::default()
        };
        let TcOption::Other(nla) = &c.options()[0] else {
            panic!("raw parms")
        };
        let mut v = vec![0u8; 44];
        netlink_packet_core::Nla::emit_value(nla, &mut v);
        assert_eq!(
            u32_at(&v, 8),
            0x0102_0304,
            "rate.rate after 8 bytes of ratespec"
        );
        assert_eq!((v[1], v[13]), (LINKLAYER_ETHERNET, LINKLAYER_ETHERNET));
        let tail: Vec<u32> = (20..44).step_by(4).map(|o| u32_at(&v, o)).collect();
        assert_eq!(tail, vec![5, 6, 7, 8, 0, 0]);
    }

    #[test]
    fn qdisc_default_round_trips() {
        let opts = qdisc_options(0x30);
        let mut buf = vec![0u8; opts.as_slice().buffer_len()];
        opts.as_slice().emit(&mut buf);
        assert_eq!(parse_default(&buf), Some(0x30));
        assert_eq!(
            u32_at(&buf, 4),
            HTB_VERSION,
            "version first, after the nla header"
        );
    }
}
