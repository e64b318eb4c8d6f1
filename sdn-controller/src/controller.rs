//! `knit controller`'s daemon: the election, the leader's list + watch of etcd into the
//! [`Hub`], the agents' listener and the metrics.
//!
//! Every replica serves `--listen`. It campaigns for `P/controller/leader` (value: its
//! `--listen` address) when nobody holds it, else watches the key. The leader loads the model
//! (one list per kind, each kind then watched from the revision it was listed at), starts a
//! term whose versions begin at the key's `create_revision` × 2^24, and applies each watch
//! event as one version; a watch that fell behind a compaction delivers a resync, applied as
//! one version too. It steps down when its lease is lost or its key is gone: the term's
//! streams close and their agents reconnect to whoever leads.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use store::etcd::{AsyncEtcdStore, Kind, Leadership, WatchEvent};
use store::EtcdStore;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::hub::{Hub, KEEP_DELTAS};
use crate::metrics::Metrics;
use crate::model::{Model, RecordKind, Update};
use crate::server::Outlets;

/// The leader lease's default TTL: a dead leader is replaced about this long after it died.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// Pause after a failed etcd call before trying again.
const RETRY: Duration = Duration::from_millis(500);

/// The kinds the model follows.
const KINDS: [(Kind, RecordKind); 5] = [
    (Kind::Networks, RecordKind::Networks),
    (Kind::Vnis, RecordKind::Vnis),
    (Kind::Hosts, RecordKind::Hosts),
    (Kind::Blocks, RecordKind::Blocks),
    (Kind::Endpoints, RecordKind::Endpoints),
];

#[derive(Debug, Clone)]
pub struct Config {
    /// etcd endpoints (`http://HOST:PORT`).
    pub etcd: Vec<String>,
    /// The store's key prefix (`/knit`).
    pub prefix: String,
    /// Where agents connect; also the value of the leader key.
    pub listen: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The leader lease's TTL ([`LEASE_TTL`] by default): how long a dead leader goes
    /// unreplaced, and how long a leader cut off from etcd keeps leading.
    pub lease_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("etcd: {0}")]
    Store(#[from] store::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// This replica's role, as the connections see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    pub leading: bool,
    /// The leader's address when known (ours while leading).
    pub leader: Option<String>,
    /// The term's election revision (0 when not leading).
    pub term: i64,
}

/// What the tasks share.
pub struct Shared {
    /// `Some` while leading (the term's model and streams).
    pub hub: Mutex<Option<Hub>>,
    pub role: watch::Sender<Role>,
    pub metrics: Arc<Metrics>,
    /// The connected agents' sockets, for the fan-out after each batch.
    pub outlets: Outlets,
}

/// Runs the controller until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), ControllerError> {
    let st = EtcdStore::connect(&cfg.etcd, &cfg.prefix)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("knit-controller")
        .enable_all()
        .build()
        .map_err(ControllerError::Runtime)?;
    let store = st.asynchronous().clone();
    let url = st.url().to_string();
    let out = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ControllerError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let metrics = Arc::new(Metrics::new());
        if let Some(addr) = cfg.metrics {
            let l = crate::metrics::bind(addr)
                .await
                .map_err(|source| ControllerError::Listen { addr, source })?;
            tokio::spawn(crate::metrics::serve(l, metrics.clone()));
        }
        let shared = Arc::new(Shared {
            hub: Mutex::new(None),
            role: watch::channel(Role::default()).0,
            metrics,
            outlets: Outlets::default(),
        });
        info!(listen = %cfg.listen, etcd = %url, prefix = %cfg.prefix, "knit controller started");
        tokio::spawn(crate::server::serve(listener, shared.clone()));
        let me = cfg.listen.to_string();
        tokio::select! {
            _ = elect(store, me, cfg.lease_ttl, shared.clone()) => {}
            _ = shutdown() => info!("stopping"),
        }
        Ok(())
    });
    // Leaving block_on dropped a Leadership we held: its revoke runs on the store's runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(200));
    drop(st);
    out
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut t) => {
                t.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn set_role(shared: &Shared, role: Role) {
    shared.role.send_if_modified(|r| {
        if *r == role {
            return false;
        }
        if r.leading != role.leading {
            if role.leading {
                info!(term = role.term, "this controller is now the leader");
            } else {
                info!(leader = ?role.leader, "this controller is not the leader");
            }
        } else if r.leader != role.leader {
            info!(leader = ?role.leader, "the leader changed");
        }
        shared.metrics.leader.set(i64::from(role.leading));
        *r = role;
        true
    });
}

/// The election loop: follow the key, campaign when it is free, lead until the term ends.
async fn elect(store: AsyncEtcdStore, me: String, ttl: Duration, shared: Arc<Shared>) {
    loop {
        let (held, rev) = match store.leader().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "reading the leader key");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if let Some((leader, _)) = held {
            // Someone leads (perhaps our own previous process, until its lease expires).
            set_role(
                &shared,
                Role {
                    leading: false,
                    leader: Some(leader),
                    term: 0,
                },
            );
            follow(&store, rev, &shared).await;
            continue;
        }
        match store.campaign(&me, ttl).await {
            Ok(Some(lead)) => {
                lead_term(&store, lead, &me, &shared).await;
                set_role(&shared, Role::default());
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "campaigning");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Watches the leader key from revision `rev + 1` until it is deleted (or the watch fails).
async fn follow(store: &AsyncEtcdStore, rev: i64, shared: &Shared) {
    let mut w = store.watch(Kind::Controller, rev + 1);
    loop {
        match w.next().await {
            Ok(WatchEvent::Delete { key, .. }) if key == "leader" => return,
            Ok(WatchEvent::Put { key, value, .. }) if key == "leader" => set_role(
                shared,
                Role {
                    leading: false,
                    leader: Some(String::from_utf8_lossy(&value).into_owned()),
                    term: 0,
                },
            ),
            Ok(WatchEvent::Resync { .. }) => return,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "watching the leader key");
                tokio::time::sleep(RETRY).await;
                return;
            }
        }
    }
}

/// Decodes one record of `kind` (`None` value: deleted). A record that does not decode counts
/// as absent (logged), so it leaves nothing stale behind.
pub fn decode(kind: Kind, key: String, value: Option<&[u8]>) -> Option<Update> {
    fn json<T: serde::de::DeserializeOwned>(kind: Kind, key: &str, v: Option<&[u8]>) -> Option<T> {
        let v = v?;
        match serde_json::from_slice(v) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(?kind, %key, error = %e, "ignoring a record that does not decode");
                None
            }
        }
    }
    Some(match kind {
        Kind::Networks => {
            let v = json(kind, &key, value);
            Update::Network(key, v)
        }
        Kind::Vnis => {
            let v = value.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
            Update::Vni(key, v)
        }
        Kind::Hosts => {
            let v = json(kind, &key, value);
            Update::Host(key, v)
        }
        Kind::Blocks => {
            let v = json(kind, &key, value);
            Update::Block(key, v)
        }
        Kind::Endpoints => {
            let v = json(kind, &key, value);
            Update::Endpoint(key, v)
        }
        Kind::Sandboxes | Kind::Controller => return None,
    })
}

/// Lists every kind into a model; each kind's revision to watch from.
async fn load(store: &AsyncEtcdStore) -> Result<(Model, Vec<i64>), store::Error> {
    let mut model = Model::new();
    let mut revs = Vec::new();
    for (kind, _) in KINDS {
        let (records, rev) = store.list(kind).await?;
        for (k, v) in records {
            if let Some(u) = decode(kind, k, Some(&v)) {
                model.load(u);
            }
        }
        revs.push(rev);
    }
    Ok((model, revs))
}

/// Forwards one kind's watch events until the receiver is gone; retries a broken watch.
async fn watch_kind(
    store: AsyncEtcdStore,
    kind: Kind,
    rev: i64,
    tx: mpsc::Sender<(Kind, WatchEvent)>,
) {
    let mut w = store.watch(kind, rev + 1);
    loop {
        match w.next().await {
            Ok(ev) => {
                if tx.send((kind, ev)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(?kind, error = %e, "watch broke; resuming");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// One term as the leader: load, serve, apply events until the lease or the key is lost.
async fn lead_term(store: &AsyncEtcdStore, lead: Leadership, me: &str, shared: &Shared) {
    let started = Instant::now();
    let (model, revs) = match load(store).await {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "loading the cluster; stepping down");
            tokio::time::sleep(RETRY).await;
            return;
        }
    };
    let (nets, hosts, eps) = model.size();
    let first = u64::try_from(lead.revision()).unwrap_or(0) << 24;
    *shared.hub.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(Hub::new(model, first, KEEP_DELTAS));
    shared
        .metrics
        .version
        .set(i64::try_from(first).unwrap_or(i64::MAX));
    info!(
        networks = nets,
        hosts,
        endpoints = eps,
        ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    set_role(
        shared,
        Role {
            leading: true,
            leader: Some(me.to_string()),
            term: lead.revision(),
        },
    );
    let (tx, mut rx) = mpsc::channel(1024);
    let watchers: Vec<_> = KINDS
        .iter()
        .zip(&revs)
        .map(|((kind, _), rev)| tokio::spawn(watch_kind(store.clone(), *kind, *rev, tx.clone())))
        .collect();
    drop(tx);
    let mut key = store.watch(Kind::Controller, lead.revision());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some((kind, ev)) => apply_event(shared, kind, ev),
                None => break,
            },
            k = key.next() => match k {
                Ok(WatchEvent::Delete { key, .. }) if key == "leader" => {
                    warn!("the leader key is gone");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "watching the leader key");
                    tokio::time::sleep(RETRY).await;
                }
            },
            _ = tick.tick() => if !lead.is_live() {
                warn!("the leader lease is lost");
                break;
            },
        }
    }
    for w in watchers {
        w.abort();
    }
    *shared.hub.lock().unwrap_or_else(|p| p.into_inner()) = None;
    drop(lead);
}

fn apply_event(shared: &Shared, kind: Kind, ev: WatchEvent) {
    let Some((_, rk)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        return;
    };
    let started = Instant::now();
    let mut guard = shared.hub.lock().unwrap_or_else(|p| p.into_inner());
    let Some(hub) = guard.as_mut() else { return };
    let applied = match ev {
        WatchEvent::Put { key, value, .. } => match decode(kind, key, Some(&value)) {
            Some(u) => hub.apply(vec![u]),
            None => return,
        },
        WatchEvent::Delete { key, .. } => match decode(kind, key, None) {
            Some(u) => hub.apply(vec![u]),
            None => return,
        },
        WatchEvent::Resync { records, revision } => {
            let ups = records
                .into_iter()
                .filter_map(|(k, v)| decode(kind, k, Some(&v)))
                .collect();
            let a = hub.resync(*rk, ups);
            info!(
                ?kind,
                revision,
                hosts = a.hosts,
                changes = a.changes,
                "resynced after a compaction"
            );
            a
        }
    };
    drop(guard);
    shared
        .metrics
        .compute
        .observe(started.elapsed().as_secs_f64());
    shared
        .metrics
        .version
        .set(i64::try_from(applied.version).unwrap_or(i64::MAX));
    // Outside the hub's lock: connections catching up meanwhile are not held.
    shared.outlets.fan_out(&applied.moved, &shared.metrics);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_by_kind_and_a_damaged_one_counts_as_deleted() {
        let host = br#"{"name":"h1","underlay_ip":"192.168.0.1","vtep_mac":"02:00:00:00:00:01"}"#;
        assert!(matches!(
            decode(Kind::Hosts, "h1".into(), Some(host)),
            Some(Update::Host(k, Some(h))) if k == "h1" && h.underlay_ip.to_string() == "192.168.0.1"
        ));
        assert_eq!(
            decode(Kind::Vnis, "n1".into(), Some(b"4097")),
            Some(Update::Vni("n1".into(), Some(4097)))
        );
        assert_eq!(
            decode(Kind::Endpoints, "n1/e1".into(), Some(b"{not json")),
            Some(Update::Endpoint("n1/e1".into(), None))
        );
        assert_eq!(
            decode(Kind::Blocks, "n1/10.0.0.0_26".into(), None),
            Some(Update::Block("n1/10.0.0.0_26".into(), None))
        );
        assert_eq!(decode(Kind::Sandboxes, "s".into(), Some(b"{}")), None);
    }
}
