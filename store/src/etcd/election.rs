//! The controllers' election: one key, `P/controller/leader`, whose value is the leader's
//! address (agents read it to find the leader), held under the leader's lease.
//!
//! [`AsyncEtcdStore::campaign`] grants a lease and puts the key under it in a transaction that
//! compares `create_revision == 0` (nobody holds it); the winner's [`Leadership`] keeps the
//! lease alive (every TTL/3) until dropped (which revokes it: the key goes at once) or lost
//! (etcd said the lease is gone, or no renewal got through for a whole TTL). A `kill -9`ed
//! leader's key goes when its lease expires, one TTL later. Standbys read the key
//! ([`AsyncEtcdStore::leader`]) and watch [`Kind::Controller`](super::Kind::Controller) from
//! the revision read, campaigning again when it is deleted. The key's `create_revision`
//! ([`Leadership::revision`]) is unique per term and grows from term to term.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::{AsyncEtcdStore, EtcdStore, Get};
use crate::error::Error;

/// The leader key, under the prefix.
pub const LEADER_KEY: &str = "controller/leader";

/// This replica holds the leader key; dropping it revokes the lease (the key goes with it).
pub struct Leadership {
    id: i64,
    revision: i64,
    live: Arc<AtomicBool>,
    keeper: Option<tokio::task::JoinHandle<()>>,
    store: AsyncEtcdStore,
}

impl Leadership {
    /// The leader key's `create_revision`: unique to this term, larger than every earlier
    /// term's.
    pub fn revision(&self) -> i64 {
        self.revision
    }
    /// etcd's lease id.
    pub fn lease(&self) -> i64 {
        self.id
    }
    /// False once the lease is lost: someone else may lead now; stop acting as the leader.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        let (mut lease, id) = (self.store.client.lease_client(), self.id);
        self.store.rt.spawn(async move {
            let _ = tokio::time::timeout(super::OP_TIMEOUT, lease.revoke(id)).await;
        });
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", &self.id)
            .field("revision", &self.revision)
            .field("live", &self.is_live())
            .finish()
    }
}

impl AsyncEtcdStore {
    /// The leader's value (its address) and the key's `create_revision`, if someone leads; and
    /// the etcd revision read at (watch [`Kind::Controller`](super::Kind::Controller) from the
    /// next one).
    pub async fn leader(&self) -> Result<(Option<(String, i64)>, i64), Error> {
        let r = self
            .read("read leader", vec![Get::Key(self.keys.leader())])
            .await?;
        let held = r.one(0).map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.create_revision(),
            )
        });
        Ok((held, r.revision))
    }

    /// Takes the leader key with `value` under a new lease of `ttl` (kept alive on the store's
    /// runtime) if nobody holds it; `Ok(None)` when someone does.
    pub async fn campaign(&self, value: &str, ttl: Duration) -> Result<Option<Leadership>, Error> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut leases = self.client.lease_client();
        let grant = self.call("grant lease", leases.grant(secs, None)).await?;
        let id = grant.id();
        let key = self.keys.leader();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![
                TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(id))),
                TxnOp::get(key, None),
            ]);
        let mut kv = self.client.kv_client();
        let resp = match self.call("campaign", kv.txn(txn)).await {
            Ok(r) if r.succeeded() => r,
            other => {
                let _ = self.call("revoke lease", leases.revoke(id)).await;
                return other.map(|_| None);
            }
        };
        let revision = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
                _ => None,
            })
            .unwrap_or_else(|| resp.header().map(|h| h.revision()).unwrap_or(0));
        let ttl = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(1));
        let live = Arc::new(AtomicBool::new(true));
        let keeper = self.rt.spawn(super::cluster::keep_alive(
            self.clone(),
            id,
            ttl,
            live.clone(),
        ));
        Ok(Some(Leadership {
            id,
            revision,
            live,
            keeper: Some(keeper),
            store: self.clone(),
        }))
    }
}

impl EtcdStore {
    /// The leading controller's address, if one leads ([`AsyncEtcdStore::leader`]).
    pub fn leader(&self) -> Result<Option<String>, Error> {
        self.run(|s| async move { s.leader().await.map(|(l, _)| l.map(|(v, _)| v)) })
    }
}
