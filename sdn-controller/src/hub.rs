//! Versions and streams: the [`Model`] behind one counter, each host's stream of deltas, and
//! what an agent that says hello (or wakes up) should be sent next. Pure: no I/O, no clock.
//!
//! **Versions.** One counter for the whole model, bumped once per applied batch (one watch
//! event, or one resync). A host's stream only gets the batches that concern it, so its
//! versions are increasing but sparse, and a [`ControllerMsg::Delta`]'s `base` is the
//! version *that host* last got, not `version - 1`. Why not empty deltas to everyone: an
//! endpoint put concerns every host but its own, but a block or a host's own endpoint does not,
//! and at 10,000 hosts an empty frame per host per change is most of the traffic. The counter
//! starts at a value given by the leader (its election revision × 2^24), so versions from
//! different leaders never collide: an agent that comes back with a version of the previous
//! leader finds it in no log and gets a `Full`.
//!
//! **Resume.** Each stream keeps its last [`Hub::keep`] deltas; an agent whose version is the
//! base of one of them gets the rest, any other version a `Full`. A host that goes
//! (unregistered) loses its stream: its agents are sent nothing (they keep the kernel state
//! they have) until it registers again, then a `Full`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::{merge, Model, Output, RecordKind, Update};
use crate::proto::{Change, ControllerMsg};

/// How many deltas each stream keeps for agents that reconnect.
pub const KEEP_DELTAS: usize = 256;
/// How many distinct change lists of one batch are looked up for sharing (a batch's changes
/// differ per host only around the hosts whose membership changed).
const SHARED_MAX: usize = 8;

/// One batch's changes for a host, serialized once: every host that gets the same changes
/// (an endpoint put reaches every other member with the same `EndpointPut`) shares one.
#[derive(Debug, PartialEq, Eq)]
pub struct Changes {
    pub changes: Arc<Vec<Change>>,
    /// `changes` as JSON, spliced into each host's frame ([`crate::proto::delta_frame`]).
    pub json: Vec<u8>,
}

impl Changes {
    fn new(changes: Arc<Vec<Change>>) -> Changes {
        // Plain data: serializing it cannot fail.
        let json = serde_json::to_vec(changes.as_slice()).unwrap_or_default();
        Changes { changes, json }
    }
}

/// A delta of one host's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub base: u64,
    pub version: u64,
    pub changes: Arc<Changes>,
}

impl Delta {
    /// As a message (a copy of the changes; the server writes [`Changes::json`] instead).
    pub fn to_msg(&self) -> ControllerMsg {
        ControllerMsg::Delta {
            base: self.base,
            version: self.version,
            changes: self.changes.changes.to_vec(),
        }
    }
}

#[derive(Debug)]
struct Stream {
    /// `None` while the host is not registered.
    version: Option<u64>,
    log: VecDeque<Delta>,
    /// The version the stream last moved to, for its connections' lag (read without the
    /// hub's lock).
    now: Arc<AtomicU64>,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            version: None,
            log: VecDeque::new(),
            now: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// What a connection should send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// The host is not registered: nothing to send yet.
    Wait,
    /// These deltas (none when the agent is up to date).
    Deltas(Vec<Delta>),
    /// The whole state.
    Full(ControllerMsg),
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The version it made (unchanged when it concerned no host).
    pub version: u64,
    /// Hosts whose stream moved.
    pub hosts: usize,
    /// Changes over all hosts.
    pub changes: usize,
    /// Each host whose stream moved, with the delta it got (`None`: its stream was reset,
    /// its agents need a Full or nothing): what the server sends its connections.
    pub moved: Vec<(String, Option<Delta>)>,
}

#[derive(Debug)]
pub struct Hub {
    model: Model,
    version: u64,
    streams: HashMap<String, Stream>,
    keep: usize,
}

impl Hub {
    /// A hub over a loaded model at `version`; every registered host's stream starts there.
    pub fn new(model: Model, version: u64, keep: usize) -> Hub {
        let mut streams = HashMap::new();
        for h in model.hosts() {
            let mut s = Stream::new();
            s.version = Some(version);
            streams.insert(h.to_string(), s);
        }
        Hub {
            model,
            version,
            streams,
            keep: keep.max(1),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies one batch of updates as one version.
    pub fn apply(&mut self, updates: Vec<Update>) -> Applied {
        let mut out = Output::new();
        for u in updates {
            merge(&mut out, self.model.apply(u));
        }
        self.publish(out)
    }

    /// Replaces every record of `kind` ([`Model::resync`]) as one version.
    pub fn resync(&mut self, kind: RecordKind, records: Vec<Update>) -> Applied {
        let out = self.model.resync(kind, records);
        self.publish(out)
    }

    fn publish(&mut self, out: Output) -> Applied {
        if out.is_empty() {
            return Applied {
                version: self.version,
                hosts: 0,
                changes: 0,
                moved: Vec::new(),
            };
        }
        self.version += 1;
        let v = self.version;
        let mut applied = Applied {
            version: v,
            hosts: out.len(),
            changes: 0,
            moved: Vec::with_capacity(out.len()),
        };
        // Distinct change lists of this batch: most hosts share one of very few.
        let mut shared: Vec<Arc<Changes>> = Vec::new();
        let registered = self.model.registered(out.keys(), out.len());
        for ((h, changes), registered) in out.into_iter().zip(registered) {
            applied.changes += changes.len();
            // The same list (every other member of an endpoint's network) is found by
            // pointer; equal lists made apart (a batch of several updates) by value.
            let changes = match shared
                .iter()
                .find(|c| Arc::ptr_eq(&c.changes, &changes))
                .or_else(|| shared.iter().find(|c| c.changes == changes))
            {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(Changes::new(changes));
                    if shared.len() < SHARED_MAX {
                        shared.push(c.clone());
                    }
                    c
                }
            };
            let s = match self.streams.get_mut(&h) {
                Some(s) => s,
                None => self.streams.entry(h.clone()).or_insert_with(Stream::new),
            };
            let mut delta = None;
            match (s.version, registered) {
                (Some(base), true) => {
                    let d = Delta {
                        base,
                        version: v,
                        changes,
                    };
                    delta = Some(d.clone());
                    s.log.push_back(d);
                    while s.log.len() > self.keep {
                        s.log.pop_front();
                    }
                    s.version = Some(v);
                }
                // Registered again or for the first time: its agents get a Full.
                (None, true) => {
                    s.log.clear();
                    s.version = Some(v);
                }
                (_, false) => {
                    s.log.clear();
                    s.version = None;
                }
            }
            s.now.store(v, Ordering::Relaxed);
            applied.moved.push((h, delta));
        }
        applied
    }

    /// The version `host`'s stream last moved to, kept up to date (for a connection's lag).
    pub fn subscribe(&mut self, host: &str) -> Arc<AtomicU64> {
        self.streams
            .entry(host.to_string())
            .or_insert_with(Stream::new)
            .now
            .clone()
    }

    /// The version `host`'s stream is at, if it is registered.
    pub fn host_version(&self, host: &str) -> Option<u64> {
        self.streams.get(host).and_then(|s| s.version)
    }

    /// What to send an agent of `host` that holds `have` (its hello's version, then the last
    /// version sent to it).
    pub fn catch_up(&self, host: &str, have: Option<u64>) -> CatchUp {
        let Some(s) = self.streams.get(host) else {
            return CatchUp::Wait;
        };
        let Some(now) = s.version else {
            return CatchUp::Wait;
        };
        if have == Some(now) {
            return CatchUp::Deltas(Vec::new());
        }
        if let Some(have) = have {
            // From the newest: an agent is most often one delta behind.
            if let Some(i) = s.log.iter().rposition(|d| d.base == have) {
                return CatchUp::Deltas(s.log.iter().skip(i).cloned().collect());
            }
        }
        CatchUp::Full(ControllerMsg::Full {
            version: now,
            state: self.model.desired(host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::apply_changes;
    use overlay_vxlan::HostDesired;
    use store::etcd::Host;
    use store::{Driver, Endpoint, Network, Pool};

    fn host(name: &str, ip: &str) -> Update {
        Update::Host(
            name.into(),
            Some(Host {
                name: name.into(),
                underlay_ip: ip.parse().unwrap(),
                vtep_mac: "02:00:00:00:00:01".into(),
            }),
        )
    }

    fn ep(id: &str, host: &str, ip: &str) -> Update {
        let mut e = Endpoint::new("n1");
        e.id = id.into();
        e.host = host.into();
        e.mac = "0a:58:0a:01:00:05".into();
        e.ipv4 = Some(format!("{ip}/16").parse().unwrap());
        Update::Endpoint(format!("n1/{id}"), Some(e))
    }

    /// A block of n1: makes `host` a member.
    fn block(host: &str, cidr: &str) -> Update {
        Update::Block(
            format!("n1/{host}"),
            Some(store::etcd::Block {
                network_id: "n1".into(),
                cidr: cidr.parse().unwrap(),
                host: host.into(),
            }),
        )
    }

    fn hub() -> Hub {
        let mut net = Network::new("blue", Driver::Overlay);
        net.id = "n1".into();
        net.ipam.push(Pool::new("10.1.0.0/16".parse().unwrap()));
        let mut m = Model::new();
        for u in [
            Update::Network("n1".into(), Some(net)),
            Update::Vni("n1".into(), Some(4096)),
            host("h1", "192.168.0.1"),
            host("h2", "192.168.0.2"),
            block("h1", "10.1.1.0/24"),
            block("h2", "10.1.2.0/24"),
        ] {
            m.load(u);
        }
        Hub::new(m, 100, 2)
    }

    fn apply(s: &mut HostDesired, msgs: &[Delta], mut have: u64) -> u64 {
        for m in msgs.iter().map(Delta::to_msg) {
            let ControllerMsg::Delta {
                base,
                version,
                changes,
            } = m
            else {
                panic!("not a delta: {m:?}")
            };
            assert_eq!(base, have, "deltas chain");
            apply_changes(s, &changes);
            have = version;
        }
        have
    }

    #[test]
    fn versions_are_per_host_and_an_agent_resumes_or_gets_a_full() {
        let mut h = hub();
        let CatchUp::Full(ControllerMsg::Full { version, mut state }) = h.catch_up("h1", None)
        else {
            panic!("a new agent gets a full state")
        };
        assert_eq!(version, 100);
        // h2's own endpoint concerns h1 only: h2's stream skips that version.
        let a = h.apply(vec![ep("e1", "h2", "10.1.0.5")]);
        assert_eq!((a.version, a.hosts, a.changes), (101, 1, 1));
        assert!(
            matches!(&a.moved[..], [(h, Some(d))] if h == "h1" && d.base == 100 && d.version == 101),
            "{:?}",
            a.moved
        );
        assert_eq!(h.host_version("h2"), Some(100));
        let b = h.apply(vec![ep("e2", "h1", "10.1.0.6")]);
        assert_eq!(b.version, 102);
        assert_eq!(h.host_version("h1"), Some(101));
        assert_eq!(h.host_version("h2"), Some(102));
        let CatchUp::Deltas(d) = h.catch_up("h1", Some(100)) else {
            panic!("resumes")
        };
        assert_eq!(apply(&mut state, &d, 100), 101);
        assert_eq!(state, h.model().desired("h1"));
        assert_eq!(h.catch_up("h1", Some(101)), CatchUp::Deltas(vec![]));
        // A version of another leader, or one older than the log: a full state.
        assert!(matches!(h.catch_up("h1", Some(7)), CatchUp::Full(_)));
        h.apply(vec![ep("e3", "h2", "10.1.0.7")]);
        h.apply(vec![ep("e4", "h2", "10.1.0.8")]);
        assert!(
            matches!(h.catch_up("h1", Some(100)), CatchUp::Full(_)),
            "log of 2"
        );
        assert!(matches!(h.catch_up("h1", Some(101)), CatchUp::Deltas(d) if d.len() == 2));
    }

    #[test]
    fn a_host_that_goes_waits_and_gets_a_full_when_back() {
        let mut h = hub();
        let now = h.subscribe("h3");
        assert_eq!(h.catch_up("h3", None), CatchUp::Wait);
        let a = h.apply(vec![host("h3", "192.168.0.3")]);
        assert_eq!(now.load(Ordering::Relaxed), a.version);
        assert!(
            a.moved.iter().any(|(h, d)| h == "h3" && d.is_none()),
            "a host registering gets no delta: {:?}",
            a.moved
        );
        assert!(matches!(h.catch_up("h3", Some(100)), CatchUp::Full(_)));
        h.apply(vec![Update::Host("h3".into(), None)]);
        assert_eq!(h.catch_up("h3", Some(101)), CatchUp::Wait);
        // Nothing concerns anyone: no version.
        let v = h.version();
        assert_eq!(h.apply(vec![Update::Vni("zz".into(), None)]).version, v);
    }
}
