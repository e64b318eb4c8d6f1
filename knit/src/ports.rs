//! Automatic host ports (`knit run -p 80`, Docker's form): a mapping without a host port gets
//! a free one from the host's ephemeral range (`net.ipv4.ip_local_port_range`, as Docker's
//! port allocator), free meaning no listening socket of the host on it (`/proc/net/tcp*`,
//! `/proc/net/udp*`, read in knit's own namespace) and no other endpoint in the store
//! publishing it. The search starts at a random place in the range, so two `knit run`s at
//! once rarely try the same port; if they do, the second one's DNAT element is refused by
//! knit's nft table ("already belongs") and nothing of it is left.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use store::{PortMap, Proto, Store};

/// The kernel's default `ip_local_port_range`.
const DEFAULT_RANGE: (u16, u16) = (32768, 60999);

/// The host's ephemeral port range, inclusive.
pub fn ephemeral_range() -> (u16, u16) {
    let Ok(s) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return DEFAULT_RANGE;
    };
    let mut it = s.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if 0 < lo && lo <= hi => (lo, hi),
        _ => DEFAULT_RANGE,
    }
}

/// The local ports of a `/proc/net/{tcp,udp}[6]` table: every bound UDP socket, and the TCP
/// sockets in LISTEN (state `0A`).
pub fn parse_proc_net(table: &str, tcp: bool) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if tcp && state != "0A" {
                return None;
            }
            let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (port != 0).then_some(port)
        })
        .collect()
}

/// Ports in use on the host, by protocol.
fn host_ports() -> HashSet<(Proto, u16)> {
    let mut used = HashSet::new();
    for (file, proto) in [
        ("tcp", Proto::Tcp),
        ("tcp6", Proto::Tcp),
        ("udp", Proto::Udp),
        ("udp6", Proto::Udp),
    ] {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/net/{file}")) {
            used.extend(
                parse_proc_net(&t, proto == Proto::Tcp)
                    .into_iter()
                    .map(|p| (proto, p)),
            );
        }
    }
    used
}

/// Ports published by the store's endpoints, by protocol.
fn store_ports(st: &dyn Store) -> Result<HashSet<(Proto, u16)>> {
    let mut used = HashSet::new();
    for net in st.list_networks().context("listing networks")? {
        let eps = st
            .network_endpoints(&net.id)
            .with_context(|| format!("listing the endpoints of network {:?}", net.name))?;
        used.extend(
            eps.iter()
                .flat_map(|e| e.ports.iter().map(|p| (p.proto, p.host_port))),
        );
    }
    Ok(used)
}

/// Give every mapping with host port 0 the first port of `range` (inclusive) from `start` on,
/// wrapping around, that is not in `used` for its protocol nor given to an earlier mapping.
pub fn pick(
    maps: &[PortMap],
    used: &HashSet<(Proto, u16)>,
    range: (u16, u16),
    start: u16,
) -> Result<Vec<PortMap>> {
    let (lo, hi) = range;
    let len = u32::from(hi - lo) + 1;
    let mut taken = used.clone();
    taken.extend(
        maps.iter()
            .filter(|m| m.host_port != 0)
            .map(|m| (m.proto, m.host_port)),
    );
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        let mut m = m.clone();
        if m.host_port == 0 {
            let found = (0..len)
                .map(|i| lo + ((u32::from(start) + i) % len) as u16)
                .find(|p| !taken.contains(&(m.proto, *p)));
            let Some(port) = found else {
                bail!(
                    "no free host port for {}/{} in {lo}-{hi}",
                    m.container_port,
                    m.proto
                );
            };
            m.host_port = port;
            taken.insert((m.proto, port));
        }
        out.push(m);
    }
    Ok(out)
}

/// The mappings with every automatic host port chosen (see the module note).
pub fn resolve(st: &dyn Store, maps: &[PortMap]) -> Result<Vec<PortMap>> {
    if maps.iter().all(|m| m.host_port != 0) {
        return Ok(maps.to_vec());
    }
    let mut used = host_ports();
    used.extend(store_ports(st)?);
    let range = ephemeral_range();
    let id = store::new_id();
    let start = u16::from_str_radix(&id[..4], 16).unwrap_or(0) % (range.1 - range.0 + 1).max(1);
    pick(maps, &used, range, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(proto: Proto, host_port: u16, container_port: u16) -> PortMap {
        PortMap {
            proto,
            host_ip: None,
            host_port,
            container_port,
        }
    }

    #[test]
    fn automatic_ports_skip_used_ones_and_each_other() {
        let used: HashSet<_> = [(Proto::Tcp, 40000), (Proto::Tcp, 40001)].into();
        let maps = [
            map(Proto::Tcp, 0, 80),
            map(Proto::Tcp, 40002, 81),
            map(Proto::Tcp, 0, 82),
            map(Proto::Udp, 0, 53),
        ];
        let got = pick(&maps, &used, (40000, 40010), 0).unwrap();
        let ports: Vec<u16> = got.iter().map(|m| m.host_port).collect();
        // 40000/1 are used, 40002 is asked for explicitly; UDP has its own space.
        assert_eq!(ports, [40003, 40002, 40004, 40000]);
        // The search wraps around the end of the range.
        let got = pick(&[map(Proto::Tcp, 0, 80)], &used, (40000, 40002), 2).unwrap();
        assert_eq!(got[0].host_port, 40002);
        let got = pick(
            &[map(Proto::Tcp, 0, 80)],
            &HashSet::new(),
            (40000, 40002),
            2,
        )
        .unwrap();
        assert_eq!(got[0].host_port, 40002);
        let full: HashSet<_> = (40000..=40002).map(|p| (Proto::Tcp, p)).collect();
        let err = pick(&[map(Proto::Tcp, 0, 80)], &full, (40000, 40002), 0).unwrap_err();
        assert!(err.to_string().contains("no free host port"), "{err}");
    }

    #[test]
    fn proc_net_gives_listening_tcp_and_bound_udp_ports() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
            1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000\n";
        assert_eq!(parse_proc_net(tcp, true), [8080]);
        let udp = "  sl  local_address rem_address   st\n\
            0: 00000000:0035 00000000:0000 07 00000000:00000000\n";
        assert_eq!(parse_proc_net(udp, false), [53]);
        let tcp6 = "  sl  local_address rem_address st\n\
            0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A\n";
        assert_eq!(parse_proc_net(tcp6, true), [80]);
    }
}
