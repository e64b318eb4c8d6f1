//! The cluster backend: the network model and the cluster records (hosts, VNIs, IPAM blocks) in
//! etcd v3, under one key prefix. This module is the only code that imports `etcd-client`.
//!
//! **Key layout** (`P` is the prefix given to [`EtcdStore::connect`], e.g. `/knit`; the full
//! table with leases and compares is in ARCHITECTURE.md, "The store on etcd"):
//! - `P/rev`: empty value; every write of the [`Store`](crate::Store) trait puts it in its transaction, so its
//!   etcd `version` is [`Store::revision`](crate::Store::revision). Network and sandbox writes compare its
//!   `mod_revision` (optimistic concurrency: read, check, then commit only if no other trait
//!   write came in between; else read again); endpoint writes compare only the keys they read.
//! - `P/networks/ID`, `P/sandboxes/ID`: the records as JSON.
//! - `P/endpoints/NETWORK_ID/ID`: an endpoint as JSON, beside `P/endpoint-ids/ID` (where the
//!   body is and which keys it holds), its claims `P/endpoint-names/NETWORK_ID/NAME` and
//!   `P/endpoint-addrs/NETWORK_ID/ADDR` (the endpoint id), and
//!   `P/sandbox-endpoints/SANDBOX_ID/ID` (the network id).
//! - cluster records ([`cluster`]): `P/hosts/NAME`, `P/host-ips/IP` (leased), `P/vnis/VNI`,
//!   `P/network-vni/NETWORK_ID`; [`blocks`]: `P/blocks/NETWORK_ID/ADDR_LEN` (leased).
//!
//! **Runtime.** The [`Store`](crate::Store) trait is synchronous; the store owns a small tokio runtime (one
//! worker thread, where the gRPC channel's tasks and the lease keepalives run). A synchronous
//! call spawns its future there and waits on a channel, so it works from any thread: a plain
//! one, a `spawn_blocking` thread of another runtime, even (blocking it) a worker of another
//! runtime. Daemons use the same operations without blocking through [`AsyncEtcdStore`].
//!
//! **Failures.** Every request has a deadline ([`OP_TIMEOUT`]); etcd down or restarting is
//! [`Error::EtcdUnavailable`] naming the URL (kind `Transient`), never a hang or a panic. The
//! gRPC channel reconnects by itself, so the next call after etcd is back succeeds.

pub mod blocks;
pub mod cluster;
mod leader;
mod model_ops;
pub mod watch;

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse,
};
use serde::de::DeserializeOwned;

use crate::error::Error;

pub use blocks::Block;
pub use cluster::{Host, HostLease, VNI_FIRST, VNI_LAST};
pub use watch::{BlockingWatcher, Kind, Records, WatchEvent, Watcher};

/// The deadline of one etcd request.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to an endpoint may take before a request gives up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a trait write re-reads and retries when other writers got in first.
pub(crate) const MAX_ATTEMPTS: u32 = 64;

/// The key names under the prefix (one place, so the layout above is the code).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn rev(&self) -> String {
        format!("{}/rev", self.prefix)
    }
    pub(crate) fn dir(&self, kind: &str) -> String {
        format!("{}/{kind}/", self.prefix)
    }
    pub(crate) fn network(&self, id: &str) -> String {
        format!("{}/networks/{id}", self.prefix)
    }
    pub(crate) fn sandbox(&self, id: &str) -> String {
        format!("{}/sandboxes/{id}", self.prefix)
    }
    pub(crate) fn service(&self, id: &str) -> String {
        format!("{}/services/{id}", self.prefix)
    }
    pub(crate) fn endpoint(&self, network_id: &str, id: &str) -> String {
        format!("{}/endpoints/{network_id}/{id}", self.prefix)
    }
    pub(crate) fn network_endpoints(&self, network_id: &str) -> String {
        format!("{}/endpoints/{network_id}/", self.prefix)
    }
    pub(crate) fn endpoint_index(&self, id: &str) -> String {
        format!("{}/endpoint-ids/{id}", self.prefix)
    }
    pub(crate) fn endpoint_name(&self, network_id: &str, name: &str) -> String {
        format!("{}/endpoint-names/{network_id}/{name}", self.prefix)
    }
    pub(crate) fn endpoint_addr(&self, network_id: &str, addr: &std::net::IpAddr) -> String {
        format!("{}/endpoint-addrs/{network_id}/{addr}", self.prefix)
    }
    pub(crate) fn sandbox_endpoint(&self, sandbox_id: &str, id: &str) -> String {
        format!("{}/sandbox-endpoints/{sandbox_id}/{id}", self.prefix)
    }
    pub(crate) fn sandbox_endpoints(&self, sandbox_id: &str) -> String {
        format!("{}/sandbox-endpoints/{sandbox_id}/", self.prefix)
    }
    pub(crate) fn host(&self, name: &str) -> String {
        format!("{}/hosts/{name}", self.prefix)
    }
    pub(crate) fn host_ip(&self, ip: &std::net::IpAddr) -> String {
        format!("{}/host-ips/{ip}", self.prefix)
    }
    pub(crate) fn vni(&self, vni: u32) -> String {
        format!("{}/vnis/{vni}", self.prefix)
    }
    pub(crate) fn network_vni(&self, network_id: &str) -> String {
        format!("{}/network-vni/{network_id}", self.prefix)
    }
    pub(crate) fn block(&self, network_id: &str, block: &ipnet::IpNet) -> String {
        format!(
            "{}/blocks/{network_id}/{}_{}",
            self.prefix,
            block.network(),
            block.prefix_len()
        )
    }
    pub(crate) fn network_blocks(&self, network_id: &str) -> String {
        format!("{}/blocks/{network_id}/", self.prefix)
    }
}

/// The store's operations without blocking, for daemons on their own tokio runtime. Cheap to
/// clone; valid while the [`EtcdStore`] it came from is alive (its runtime runs the gRPC
/// channel and the lease keepalives).
#[derive(Clone)]
pub struct AsyncEtcdStore {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    /// The endpoints as given, for error messages.
    pub(crate) url: String,
    pub(crate) rt: tokio::runtime::Handle,
}

/// The etcd [`crate::Store`] (see the module note). Open one per process and share it.
pub struct EtcdStore {
    inner: AsyncEtcdStore,
    /// `Some` until dropped; shut down in the background so a drop inside another runtime's
    /// task never blocks or panics.
    rt: Option<tokio::runtime::Runtime>,
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://HOST:PORT`), keeping every key
    /// under `prefix` (`/knit`; several stores may share one etcd under distinct prefixes).
    /// Connecting is lazy: an unreachable etcd is reported by the first call, as
    /// [`Error::EtcdUnavailable`].
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, Error> {
        let prefix = prefix.trim_end_matches('/');
        if endpoints.is_empty() {
            return Err(Error::EtcdConfig {
                detail: "no etcd endpoint given".into(),
            });
        }
        if prefix.is_empty() || !prefix.starts_with('/') {
            return Err(Error::EtcdConfig {
                detail: format!("key prefix {prefix:?} must start with '/' and name something"),
            });
        }
        let url = endpoints.join(",");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("knit-etcd")
            .enable_all()
            .build()
            .map_err(|e| Error::EtcdConfig {
                detail: format!("starting the etcd client's runtime: {e}"),
            })?;
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let eps = endpoints.to_vec();
        let client = rt
            .block_on(async move {
                tokio::time::timeout(OP_TIMEOUT, Client::connect(eps, Some(options))).await
            })
            .map_err(|_| Error::EtcdUnavailable {
                url: url.clone(),
                op: "connect",
                detail: format!("timed out after {OP_TIMEOUT:?}"),
            })?
            .map_err(|e| classify(&url, "connect", e))?;
        let inner = AsyncEtcdStore {
            client,
            keys: Keys {
                prefix: prefix.to_string(),
            },
            url,
            rt: rt.handle().clone(),
        };
        Ok(EtcdStore {
            inner,
            rt: Some(rt),
        })
    }

    /// The same store for async callers (daemons).
    pub fn asynchronous(&self) -> &AsyncEtcdStore {
        &self.inner
    }

    /// The endpoints this store talks to, as in its error messages.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Runs `f(store)` on the store's runtime and waits for it from this thread, whatever
    /// thread it is (see the module note).
    pub(crate) fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(AsyncEtcdStore) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let fut = f(self.inner.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.inner.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(Error::EtcdUnavailable {
                url: self.inner.url.clone(),
                op: "call",
                detail: "the etcd client's runtime stopped".into(),
            })
        })
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.keys.prefix)
            .finish()
    }
}

/// etcd-client's errors, classified once: no answer is `EtcdUnavailable` (Transient), any
/// other refusal `Etcd` (Internal).
pub(crate) fn classify(url: &str, op: &'static str, e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    let unavailable = match &e {
        E::TransportError(_) | E::IoError(_) => true,
        // gRPC's Cancelled (1), DeadlineExceeded (4), Unavailable (14); and a connection that
        // broke under a request, which tonic reports as Unknown with the I/O error as source.
        E::GRpcStatus(s) => {
            matches!(s.code() as i32, 1 | 4 | 14)
                || s.message().contains("no leader")
                || s.message() == "transport error"
                || io_in_chain(s)
        }
        _ => false,
    };
    let detail = e.to_string();
    if unavailable {
        Error::EtcdUnavailable {
            url: url.to_string(),
            op,
            detail,
        }
    } else {
        Error::Etcd {
            url: url.to_string(),
            op,
            detail,
        }
    }
}

/// Is an I/O error (a broken connection) somewhere in this error's sources?
fn io_in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = e.source();
    while let Some(c) = cur {
        if c.is::<std::io::Error>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// The reads of one consistent snapshot: each entry the key-values of one get, in order.
pub(crate) struct Reads {
    pub(crate) kvs: Vec<Vec<KeyValue>>,
    /// The store revision they were read at (etcd's header revision).
    pub(crate) revision: i64,
}

impl Reads {
    pub(crate) fn one(&self, i: usize) -> Option<&KeyValue> {
        self.kvs.get(i).and_then(|v| v.first())
    }
    pub(crate) fn all(&self, i: usize) -> &[KeyValue] {
        self.kvs.get(i).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// One get of a read: a key, or every key under a prefix.
pub(crate) enum Get {
    Key(String),
    Prefix(String),
}

impl AsyncEtcdStore {
    pub(crate) fn unavailable(&self, op: &'static str, detail: String) -> Error {
        Error::EtcdUnavailable {
            url: self.url.clone(),
            op,
            detail,
        }
    }

    /// Awaits one etcd request with the deadline, classifying its error.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|e| classify(&self.url, op, e)),
            Err(_) => Err(self.unavailable(op, format!("no answer within {OP_TIMEOUT:?}"))),
        }
    }

    /// Several gets in one transaction without compares: one consistent snapshot.
    pub(crate) async fn read(&self, op: &'static str, gets: Vec<Get>) -> Result<Reads, Error> {
        let ops: Vec<TxnOp> = gets
            .into_iter()
            .map(|g| match g {
                Get::Key(k) => TxnOp::get(k, None),
                Get::Prefix(p) => TxnOp::get(p, Some(GetOptions::new().with_prefix())),
            })
            .collect();
        let mut kv = self.client.kv_client();
        let resp = self.call(op, kv.txn(Txn::new().and_then(ops))).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let kvs = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(mut g) => g.take_kvs(),
                _ => Vec::new(),
            })
            .collect();
        Ok(Reads { kvs, revision })
    }

    /// Commits `ops` if every compare holds; `Ok(false)` when one did not.
    pub(crate) async fn commit(
        &self,
        op: &'static str,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<bool, Error> {
        let mut kv = self.client.kv_client();
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = self.call(op, kv.txn(txn)).await?;
        Ok(resp.succeeded())
    }

    /// A write of the [`crate::Store`] trait: reads `gets` (after `P/rev`, which is always
    /// read first, at index 0) in one snapshot, lets `plan` check them and say what to write,
    /// and commits that together with a put of `P/rev` only if `P/rev` was not modified since
    /// the read. Retries on a lost race, up to [`MAX_ATTEMPTS`] times.
    pub(crate) async fn write<T>(
        &self,
        op: &'static str,
        gets: impl Fn() -> Vec<Get>,
        plan: impl Fn(&Reads) -> Result<Option<Planned<T>>, Error>,
    ) -> Result<T, Error> {
        self.write_inner(op, gets, plan, true).await
    }

    /// A trait write whose plan compares every key it read itself ([`unchanged`]), so writes
    /// on other keys do not make it retry: endpoints of different networks are written in
    /// parallel. It still puts `P/rev`, so the revision counts it and every [`Self::write`]
    /// (which compares `P/rev`) that read before it retries.
    pub(crate) async fn write_own<T>(
        &self,
        op: &'static str,
        gets: impl Fn() -> Vec<Get>,
        plan: impl Fn(&Reads) -> Result<Option<Planned<T>>, Error>,
    ) -> Result<T, Error> {
        self.write_inner(op, gets, plan, false).await
    }

    async fn write_inner<T>(
        &self,
        op: &'static str,
        gets: impl Fn() -> Vec<Get>,
        plan: impl Fn(&Reads) -> Result<Option<Planned<T>>, Error>,
        compare_rev: bool,
    ) -> Result<T, Error> {
        let rev_key = self.keys.rev();
        let mut pause = Duration::from_millis(1);
        for _ in 0..MAX_ATTEMPTS {
            let mut all = vec![Get::Key(rev_key.clone())];
            all.extend(gets());
            let reads = self.read(op, all).await?;
            // `None`: the plan learnt which keys it needs (an id behind a name): read again.
            let Some((mut compares, mut ops, out)) = plan(&reads)? else {
                continue;
            };
            if compare_rev {
                compares.push(unchanged(rev_key.clone(), reads.one(0)));
            }
            ops.push(TxnOp::put(rev_key.clone(), Vec::new(), None));
            if self.commit(op, compares, ops).await? {
                return Ok(out);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        Err(Error::Contention {
            op,
            attempts: MAX_ATTEMPTS,
        })
    }
}

/// A compare that `key` is still as read: `kv`'s `mod_revision`, or absent when `kv` is None.
pub(crate) fn unchanged(key: impl Into<Vec<u8>>, kv: Option<&KeyValue>) -> Compare {
    let seen = kv.map(KeyValue::mod_revision).unwrap_or(0);
    Compare::mod_revision(key, CompareOp::Equal, seen)
}

/// What a write's plan commits: extra compares, the operations, and what the call returns.
pub(crate) type Planned<T> = (Vec<Compare>, Vec<TxnOp>, T);

/// Decodes a record, naming it when it is damaged.
pub(crate) fn decode<T: DeserializeOwned>(table: &'static str, kv: &KeyValue) -> Result<T, Error> {
    serde_json::from_slice(kv.value()).map_err(|source| Error::Corrupt {
        table,
        id: String::from_utf8_lossy(kv.key()).into_owned(),
        source,
    })
}

pub(crate) fn encode<T: serde::Serialize>(
    table: &'static str,
    id: &str,
    v: &T,
) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|source| Error::Encode {
        table,
        id: id.to_string(),
        source,
    })
}

/// Decodes every record of a get.
pub(crate) fn decode_all<T: DeserializeOwned>(
    table: &'static str,
    kvs: &[KeyValue],
) -> Result<Vec<T>, Error> {
    kvs.iter().map(|kv| decode(table, kv)).collect()
}
