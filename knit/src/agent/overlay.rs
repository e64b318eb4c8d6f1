//! The agent's overlay in etcd mode: the state the controller gave this host (a `Full`, then
//! `Delta`s applied in order), and the kernel brought to it through `overlay_vxlan`.
//!
//! - `Full`: [`overlay_vxlan::sync_host`] (observe everything, fix everything, delete what is
//!   no longer listed: links of networks gone, stale FDB, neighbour and route entries).
//! - `Delta`: [`sdn_controller::proto::apply_changes`] on a copy, then per touched network
//!   [`overlay_vxlan::apply_delta`] from its previous state (no dump: the work follows the
//!   delta), [`overlay_vxlan::sync_network`] for a new network or when the delta cannot be
//!   applied as such, [`overlay_vxlan::remove_network`] for one gone.
//! - The periodic pass and every lost stream run `sync_host` of the state held, so the kernel
//!   never drifts from it for longer than `--reconcile-interval`.
//!
//! All of it runs on blocking threads (netlink is synchronous), under one lock: a delta and a
//! reconcile never interleave.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use libnet::netlink::Handle;
use overlay_vxlan::{HostDesired, Mode, NetworkDesired};
use sdn_controller::proto::{apply_changes, Change};
use tracing::{info, warn};

use super::cluster_metrics::ClusterMetrics;

/// What this host holds: the controller's state at `version`, and the FDB remotes each of
/// its networks has (for the gauge).
#[derive(Default)]
struct Held {
    version: Option<u64>,
    desired: Option<HostDesired>,
    fdb: BTreeMap<String, usize>,
    /// Networks an ADD made links for that the controller has not sent yet: a host holds a
    /// network only once it is a member (its first block there, claimed by that very ADD), so
    /// a reconcile in between must not delete the links the ADD is attaching to. One stays
    /// while an ADD on it is in flight ([`Adding`]) or a container is attached to its bridge;
    /// after that (the ADD failed, or its container went before the network was ever sent,
    /// as when the network is deleted first) its links go.
    pending: BTreeMap<String, NetworkDesired>,
    /// ADDs in flight, by network.
    adding: BTreeMap<String, usize>,
}

impl Held {
    /// Forgets the pending networks the controller's state now has.
    fn settle(&mut self) {
        if let Some(d) = &self.desired {
            self.pending
                .retain(|id, _| !d.networks.iter().any(|n| n.id == *id));
        }
    }
}

pub struct Overlay {
    nl: Handle,
    held: Mutex<Held>,
    pub metrics: ClusterMetrics,
}

/// What [`Overlay::apply_delta`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum DeltaOutcome {
    Applied,
    /// The delta's base is not the version held (or nothing is held): reconnect for a `Full`.
    OutOfOrder {
        held: Option<u64>,
    },
}

impl Overlay {
    pub fn new(nl: Handle, metrics: ClusterMetrics) -> Overlay {
        Overlay {
            nl,
            held: Mutex::new(Held::default()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The version held, for `Hello` (the controller may resume from it).
    pub fn version(&self) -> Option<u64> {
        self.lock().version
    }

    /// The network as the controller last described it to this host, by id.
    pub fn network(&self, id: &str) -> Option<NetworkDesired> {
        let held = self.lock();
        held.desired
            .as_ref()
            .and_then(|d| d.networks.iter().find(|n| n.id == id).cloned())
    }

    /// The host namespace's netlink socket (the CNI path attaches through it too).
    pub fn netlink(&self) -> &Handle {
        &self.nl
    }

    /// The network's links (bridge, vxlan device), made now if the controller has not yet:
    /// under the same lock as deltas and reconciles. The ADD holds the returned guard until
    /// it is done, failed or not: the links of a network the controller has not sent stay
    /// while it is held (see `Held::pending`).
    pub fn ensure(&self, net: &NetworkDesired) -> Result<Adding<'_>, overlay_vxlan::OverlayError> {
        let mut held = self.lock();
        let sent = held
            .desired
            .as_ref()
            .is_some_and(|d| d.networks.iter().any(|n| n.id == net.id));
        if !sent {
            held.pending.insert(net.id.clone(), net.clone());
        }
        *held.adding.entry(net.id.clone()).or_default() += 1;
        let made = overlay_vxlan::ensure_network(&self.nl, net);
        drop(held);
        let adding = Adding {
            overlay: self,
            network: net.id.clone(),
        };
        // On failure the guard's drop (which takes the lock) takes back what was made.
        made.map(|_| adding)
    }

    /// An ADD on `id` is done: if it was the last in flight and left no container on a
    /// network the controller has not sent, the network's links go now.
    fn added(&self, id: &str) {
        let mut held = self.lock();
        if let Some(n) = held.adding.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                held.adding.remove(id);
            }
        }
        let Some(net) = held.pending.get(id).cloned() else {
            return;
        };
        if self.unused(&held, &net) {
            held.pending.remove(id);
            match overlay_vxlan::remove_network(&self.nl, &net) {
                Ok(_) => {
                    info!(network = %id, "removed the links of a network never sent, its ADD gone")
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    warn!(network = %id, error = %e, "removing the links of a network never sent; the next reconcile retries");
                }
            }
        }
    }

    /// No ADD in flight on `net` and no container attached to its bridge (a port other than
    /// its vxlan device). A bridge that cannot be read counts as used: links are kept, not
    /// lost, when in doubt.
    fn unused(&self, held: &Held, net: &NetworkDesired) -> bool {
        if held.adding.contains_key(&net.id) {
            return false;
        }
        let Ok(links) = self.nl.links() else {
            return false;
        };
        let bridge = overlay_vxlan::bridge_name(net.vni);
        let vxlan = overlay_vxlan::vxlan_name(net.vni);
        let Some(br) = links.iter().find(|l| l.name == bridge) else {
            return true;
        };
        !links
            .iter()
            .any(|l| l.master == Some(br.index) && l.name != vxlan)
    }

    /// A `Full`: the kernel brought to `state`, which replaces what was held.
    pub fn apply_full(&self, version: u64, state: HostDesired) {
        let mut held = self.lock();
        self.sync(&mut held, &state);
        held.version = Some(version);
        held.desired = Some(state);
        held.settle();
        self.metrics.version.set(version as i64);
        self.metrics.fulls.inc();
    }

    /// A `Delta` from `base` to `version`.
    pub fn apply_delta(&self, base: u64, version: u64, changes: &[Change]) -> DeltaOutcome {
        let mut held = self.lock();
        let Some(old) = held.desired.clone().filter(|_| held.version == Some(base)) else {
            return DeltaOutcome::OutOfOrder { held: held.version };
        };
        let mut new = old.clone();
        let touched = apply_changes(&mut new, changes);
        forward_if_routed(&new);
        for id in touched {
            let o = old.networks.iter().find(|n| n.id == id);
            let n = new.networks.iter().find(|n| n.id == id);
            match self.delta_network(o, n) {
                Ok(fdb) => {
                    match fdb {
                        Some(c) => held.fdb.insert(id.clone(), c),
                        None => held.fdb.remove(&id),
                    };
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    warn!(network = %id, error = %e, "applying a delta failed; the next reconcile retries");
                }
            }
        }
        held.version = Some(version);
        held.desired = Some(new);
        held.settle();
        self.metrics.version.set(version as i64);
        self.metrics.deltas.inc();
        self.metrics
            .fdb_entries
            .set(held.fdb.values().sum::<usize>() as i64);
        DeltaOutcome::Applied
    }

    /// One network from `old` to `new`; the FDB remotes it has now (`None`: gone).
    fn delta_network(
        &self,
        old: Option<&NetworkDesired>,
        new: Option<&NetworkDesired>,
    ) -> Result<Option<usize>, overlay_vxlan::OverlayError> {
        let nl = &self.nl;
        match (old, new) {
            (Some(o), None) => overlay_vxlan::remove_network(nl, o).map(|_| None),
            (None, Some(n)) => overlay_vxlan::sync_network(nl, n).map(|s| Some(s.fdb_entries)),
            (Some(o), Some(n)) => {
                if o.vni != n.vni {
                    overlay_vxlan::remove_network(nl, o)?;
                }
                let links = overlay_vxlan::ensure_network(nl, n)?;
                if overlay_vxlan::apply_delta(nl, &links, o, n).is_err() {
                    return overlay_vxlan::sync_network(nl, n).map(|s| Some(s.fdb_entries));
                }
                Ok(Some(overlay_vxlan::plan::wanted(n, &links).remotes.len()))
            }
            (None, None) => Ok(None),
        }
    }

    /// The periodic pass, and after a lost stream: the kernel brought back to the state held
    /// (nothing before the first `Full`: an empty state would delete what a previous run made
    /// before the controller said what stays).
    pub fn reconcile(&self) {
        let mut held = self.lock();
        if let Some(state) = held.desired.clone() {
            self.sync(&mut held, &state);
        }
    }

    fn sync(&self, held: &mut Held, state: &HostDesired) {
        let started = Instant::now();
        forward_if_routed(state);
        // The networks of ADDs in flight, or with containers, stay (see `Held::pending`);
        // the others are not listed, so their links go.
        let has = |s: &HostDesired, id: &str| s.networks.iter().any(|n| n.id == id);
        let gone: Vec<String> = held
            .pending
            .values()
            .filter(|n| !has(state, &n.id) && self.unused(held, n))
            .map(|n| n.id.clone())
            .collect();
        for id in gone {
            info!(network = %id, "a network set up for an ADD was never sent and has no container: removing its links");
            held.pending.remove(&id);
        }
        let merged;
        let state = if held.pending.keys().all(|id| has(state, id)) {
            state
        } else {
            let mut m = state.clone();
            for (id, n) in &held.pending {
                if !has(&m, id) {
                    m.networks.push(n.clone());
                }
            }
            merged = m;
            &merged
        };
        let r = overlay_vxlan::sync_host(&self.nl, state);
        held.fdb = r
            .networks
            .iter()
            .map(|(id, s)| (id.clone(), s.fdb_entries))
            .collect();
        for e in &r.errors {
            self.metrics.errors.inc();
            warn!(error = %e, "reconcile: a network could not be synced");
        }
        let changes = r.applied.changes();
        if changes > 0 || !r.removed.links.is_empty() {
            info!(
                changes,
                removed = ?r.removed.links,
                "reconcile changed the kernel"
            );
        }
        self.metrics
            .fdb_entries
            .set(held.fdb.values().sum::<usize>() as i64);
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// An ADD on a network, from [`Overlay::ensure`] until it is dropped.
pub struct Adding<'a> {
    overlay: &'a Overlay,
    network: String,
}

impl Drop for Adding<'_> {
    fn drop(&mut self) {
        self.overlay.added(&self.network);
    }
}

/// Routed mode needs the host to forward IPv4 (overlay_vxlan leaves host-wide settings to
/// the agent).
fn forward_if_routed(state: &HostDesired) {
    if state.networks.iter().any(|n| n.mode == Mode::Routed) {
        if let Err(e) = libnet::sysctl::set("net/ipv4/ip_forward", "1") {
            warn!(error = %e, "routed mode: could not turn on net.ipv4.ip_forward");
        }
    }
}
