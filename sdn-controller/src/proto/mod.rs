//! The protocol between the controller and the agents: length-prefixed JSON frames over TCP.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of JSON (at most
//! [`MAX_FRAME`]). Why not gRPC: the messages are few and small, both ends are ours, and a
//! frame codec needs no code generation, no HTTP/2 and no protoc at build time; JSON keeps a
//! captured stream readable. The payload types are `overlay_vxlan`'s ([`HostDesired`],
//! [`NetworkDesired`]), versioned by their `format` field; this layer is versioned by
//! [`PROTOCOL`].
//!
//! The conversation:
//! 1. The agent connects to the leader (its address is in etcd) and sends
//!    [`AgentMsg::Hello`] with its host name and the version it holds, if any.
//! 2. A standby answers [`ControllerMsg::NotLeader`] (with the leader's address when known) and
//!    closes. The leader answers [`ControllerMsg::Full`] (the whole state, version V), unless
//!    the agent's version is one it can resume from, then it sends the deltas after it. A
//!    full state of more than [`PART_ITEMS`] endpoints and hosts goes as
//!    [`ControllerMsg::FullPart`]s instead, the last one marked: no frame ever nears
//!    [`MAX_FRAME`], however large the cluster.
//! 3. Then [`ControllerMsg::Delta`]s, each with the version it applies to (`base`) and the one
//!    it makes (`version`; the controller splices a change list serialized once for every
//!    host that gets it into each host's frame: [`delta_frame`]); an agent that sees a `base` other than its version reconnects (and
//!    gets a `Full`). The agent acknowledges what it applied ([`AgentMsg::Ack`]: a Full at
//!    once, deltas together [`ack_delay`] after the first of them), which gives the
//!    controller each agent's lag.
//! 4. Either side may close at any time; the agent reconnects with backoff and, meanwhile,
//!    keeps the kernel state it has (traffic between existing containers never stops).

use std::net::IpAddr;

use overlay_vxlan::{HostDesired, NetworkDesired, RemoteEndpoint, RemoteHost};
use serde::{Deserialize, Serialize};

mod acks;
mod frame;

pub use acks::{ack_delay, Acks, ACK_DELAY, ACK_SPREAD};
pub use frame::{
    delta_frame, delta_parts, frame, split, write_frame, Frame, FrameReader, ProtoError, Split,
};

/// This layer's version (the payload carries its own `format`).
pub const PROTOCOL: u32 = 1;

/// The largest frame either side accepts (a full state of a very large cluster fits).
pub const MAX_FRAME: usize = 64 << 20;

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMsg {
    Hello {
        protocol: u32,
        /// The host's registered name.
        host: String,
        /// The version of the state it holds (from an earlier stream), if any.
        #[serde(default)]
        version: Option<u64>,
    },
    /// It applied everything up to `version`.
    Ack { version: u64 },
}

/// What the controller sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControllerMsg {
    /// Everything this host should hold, at `version`: replaces whatever the agent had.
    Full { version: u64, state: HostDesired },
    /// One part of a full state too large for one frame ([`split_full`]): the agent merges
    /// the parts ([`merge_part`]) and applies them as one `Full` when `last` is true (and
    /// acknowledges only that). A network may span parts (the same id, its settings again,
    /// more endpoints and hosts).
    FullPart {
        version: u64,
        state: HostDesired,
        last: bool,
    },
    /// Changes turning the state at `base` into the state at `version`.
    Delta {
        base: u64,
        version: u64,
        changes: Vec<Change>,
    },
    /// This replica is not the leader; `leader` is the leader's address when known.
    NotLeader {
        #[serde(default)]
        leader: Option<String>,
    },
    /// The request was refused (an unknown host, a protocol this controller does not speak).
    Error { message: String },
}

/// One change to a host's state, in the order to apply them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A network added, or its own settings changed (VNI, subnets, mode, this host's underlay
    /// IP): the whole network as the host should see it.
    NetworkPut {
        network: NetworkDesired,
    },
    NetworkDel {
        id: String,
    },
    /// An endpoint address on another host added or changed (a MAC or host for that IP).
    EndpointPut {
        network: String,
        endpoint: RemoteEndpoint,
    },
    EndpointDel {
        network: String,
        ip: IpAddr,
    },
    /// Another host of the network added or changed (its blocks).
    HostPut {
        network: String,
        host: RemoteHost,
    },
    HostDel {
        network: String,
        underlay_ip: IpAddr,
    },
}

/// Apply `changes` to `state`; returns the ids of the networks they touched, in order, each
/// once (a change naming a network the state lacks is skipped: a `NetworkPut` comes first).
pub fn apply_changes(state: &mut HostDesired, changes: &[Change]) -> Vec<String> {
    let mut touched: Vec<String> = Vec::new();
    let mut touch = |id: &str| {
        if !touched.iter().any(|t| t == id) {
            touched.push(id.to_string());
        }
    };
    for c in changes {
        match c {
            Change::NetworkPut { network } => {
                match state.networks.iter_mut().find(|n| n.id == network.id) {
                    Some(n) => *n = network.clone(),
                    None => state.networks.push(network.clone()),
                }
                touch(&network.id);
            }
            Change::NetworkDel { id } => {
                state.networks.retain(|n| n.id != *id);
                touch(id);
            }
            Change::EndpointPut { network, endpoint } => {
                if let Some(n) = state.networks.iter_mut().find(|n| n.id == *network) {
                    n.endpoints.retain(|e| e.ip != endpoint.ip);
                    n.endpoints.push(endpoint.clone());
                    touch(network);
                }
            }
            Change::EndpointDel { network, ip } => {
                if let Some(n) = state.networks.iter_mut().find(|n| n.id == *network) {
                    n.endpoints.retain(|e| e.ip != *ip);
                    touch(network);
                }
            }
            Change::HostPut { network, host } => {
                if let Some(n) = state.networks.iter_mut().find(|n| n.id == *network) {
                    n.hosts.retain(|h| h.underlay_ip != host.underlay_ip);
                    n.hosts.push(host.clone());
                    touch(network);
                }
            }
            Change::HostDel {
                network,
                underlay_ip,
            } => {
                if let Some(n) = state.networks.iter_mut().find(|n| n.id == *network) {
                    n.hosts.retain(|h| h.underlay_ip != *underlay_ip);
                    touch(network);
                }
            }
        }
    }
    touched
}

/// Endpoints and hosts per part of a full state: about 10 MB of JSON, far below
/// [`MAX_FRAME`].
pub const PART_ITEMS: usize = 100_000;

/// `state` in parts of at most `items` endpoints and hosts each (one part, as is, when it
/// fits): a network larger than that is cut into pieces carrying its settings.
pub fn split_full(state: HostDesired, items: usize) -> Vec<HostDesired> {
    let items = items.max(1);
    let size = |n: &NetworkDesired| n.endpoints.len() + n.hosts.len();
    if state.networks.iter().map(size).sum::<usize>() <= items {
        return vec![state];
    }
    let format = state.format;
    let part = || HostDesired {
        format,
        networks: Vec::new(),
    };
    let mut parts = vec![part()];
    let mut room = items;
    for mut n in state.networks {
        let mut endpoints = std::mem::take(&mut n.endpoints).into_iter().peekable();
        let mut hosts = std::mem::take(&mut n.hosts).into_iter().peekable();
        loop {
            if room == 0 {
                parts.push(part());
                room = items;
            }
            let mut piece = n.clone();
            piece.endpoints = endpoints.by_ref().take(room).collect();
            room -= piece.endpoints.len();
            piece.hosts = hosts.by_ref().take(room).collect();
            room -= piece.hosts.len();
            if let Some(last) = parts.last_mut() {
                last.networks.push(piece);
            }
            if endpoints.peek().is_none() && hosts.peek().is_none() {
                break;
            }
        }
    }
    parts
}

/// Adds one part of a full state to the parts received so far.
pub fn merge_part(acc: &mut HostDesired, part: HostDesired) {
    for n in part.networks {
        match acc.networks.iter_mut().find(|a| a.id == n.id) {
            Some(a) => {
                a.endpoints.extend(n.endpoints);
                a.hosts.extend(n.hosts);
            }
            None => acc.networks.push(n),
        }
    }
}

/// A full state arriving in [`ControllerMsg::FullPart`]s, put together for the agent.
#[derive(Debug, Default)]
pub struct FullAssembly(Option<(u64, HostDesired)>);

impl FullAssembly {
    /// Adds one part; returns the whole state (its version and the merged parts) with the
    /// part marked `last`. A part of another version than the parts before it is an error:
    /// the stream is out of order and the agent must resync.
    pub fn add(
        &mut self,
        version: u64,
        part: HostDesired,
        last: bool,
    ) -> Result<Option<(u64, HostDesired)>, String> {
        let format = part.format;
        let acc = self.0.get_or_insert_with(|| {
            (
                version,
                HostDesired {
                    format,
                    networks: Vec::new(),
                },
            )
        });
        if acc.0 != version {
            return Err(format!(
                "a part of the full state at {version} after parts at {}",
                acc.0
            ));
        }
        merge_part(&mut acc.1, part);
        Ok(if last { self.0.take() } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_vxlan::{Mac, Mode, Subnet};

    fn net(id: &str) -> NetworkDesired {
        NetworkDesired {
            id: id.into(),
            vni: 4097,
            subnets: vec![Subnet {
                cidr: "10.244.0.0/16".parse().unwrap(),
                gateway: Some("10.244.0.1".parse().unwrap()),
            }],
            mode: Mode::Vxlan,
            underlay_ip: "192.168.50.1".parse().unwrap(),
            endpoints: vec![],
            hosts: vec![],
        }
    }

    fn ep(ip: &str, host: &str) -> RemoteEndpoint {
        RemoteEndpoint {
            ip: ip.parse().unwrap(),
            mac: Mac([0x0a, 0x58, 10, 244, 1, 5]),
            host: host.parse().unwrap(),
        }
    }

    #[test]
    fn changes_apply_in_order_and_name_what_they_touched() {
        let mut s = HostDesired {
            format: overlay_vxlan::FORMAT,
            networks: vec![],
        };
        let touched = apply_changes(
            &mut s,
            &[
                Change::EndpointPut {
                    network: "blue".into(),
                    endpoint: ep("10.244.1.5", "192.168.50.2"),
                },
                Change::NetworkPut {
                    network: net("blue"),
                },
                Change::EndpointPut {
                    network: "blue".into(),
                    endpoint: ep("10.244.1.5", "192.168.50.2"),
                },
                Change::EndpointPut {
                    network: "blue".into(),
                    endpoint: ep("10.244.1.5", "192.168.50.3"),
                },
                Change::HostPut {
                    network: "blue".into(),
                    host: RemoteHost {
                        underlay_ip: "192.168.50.3".parse().unwrap(),
                        blocks: vec![],
                    },
                },
            ],
        );
        assert_eq!(touched, ["blue"]);
        assert_eq!(s.networks[0].endpoints, [ep("10.244.1.5", "192.168.50.3")]);
        assert_eq!(s.networks[0].hosts.len(), 1);
        apply_changes(
            &mut s,
            &[Change::EndpointDel {
                network: "blue".into(),
                ip: "10.244.1.5".parse().unwrap(),
            }],
        );
        assert!(s.networks[0].endpoints.is_empty());
        apply_changes(&mut s, &[Change::NetworkDel { id: "blue".into() }]);
        assert!(s.networks.is_empty());
    }

    #[test]
    fn a_full_state_split_in_parts_merges_back_and_no_part_is_larger_than_asked() {
        let mut a = net("a");
        a.endpoints = (0..7)
            .map(|i| ep(&format!("10.244.1.{i}"), "192.168.50.2"))
            .collect();
        a.hosts = (2..5)
            .map(|i| RemoteHost {
                underlay_ip: format!("192.168.50.{i}").parse().unwrap(),
                blocks: vec![],
            })
            .collect();
        let mut b = net("b");
        b.endpoints = vec![ep("10.244.2.1", "192.168.50.3")];
        let state = HostDesired {
            format: overlay_vxlan::FORMAT,
            networks: vec![a, b, net("c")],
        };
        let one = split_full(state.clone(), 100);
        assert_eq!(one.len(), 1, "fits: one part");
        assert_eq!(one[0], state);
        let parts = split_full(state.clone(), 4);
        assert_eq!(parts.len(), 3, "11 items in parts of 4");
        for p in &parts {
            let items: usize = p
                .networks
                .iter()
                .map(|n| n.endpoints.len() + n.hosts.len())
                .sum();
            assert!(items <= 4, "{items}");
        }
        let mut got = HostDesired {
            format: overlay_vxlan::FORMAT,
            networks: vec![],
        };
        for p in parts.clone() {
            merge_part(&mut got, p);
        }
        assert_eq!(got, state);
        // As the agent receives them: nothing until the last part, then the whole state.
        let mut asm = FullAssembly::default();
        let n = parts.len();
        let mut whole = None;
        for (i, p) in parts.clone().into_iter().enumerate() {
            let r = asm.add(9, p, i + 1 == n).unwrap();
            assert_eq!(r.is_some(), i + 1 == n, "part {i}");
            whole = r.or(whole);
        }
        assert_eq!(whole, Some((9, state)));
        // A part of another version in the middle is refused.
        let mut asm = FullAssembly::default();
        assert_eq!(asm.add(9, parts[0].clone(), false), Ok(None));
        assert!(asm.add(10, parts[1].clone(), false).is_err());
    }
}
