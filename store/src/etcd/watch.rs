//! Watching one kind of record, in order, with recovery after compaction.
//!
//! A consumer lists a kind ([`AsyncEtcdStore::list`]: the records and the etcd revision they
//! were read at), then watches from the revision after it. etcd keeps history only back to its
//! last compaction: on etcd 3.4 a watch that starts (or falls) behind it is cancelled with
//! `compact_revision > 0` and *no* reason text, so that number is what we test. The watcher
//! then lists the kind again and hands the consumer a [`WatchEvent::Resync`] (replace
//! everything you hold with these) before the events that follow it. A broken stream (etcd
//! restarted) is an error from `next`; the next call re-opens the watch where it stopped, so no
//! event is lost or repeated.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, Txn, TxnOp, WatchOptions, WatchStream};

use super::{AsyncEtcdStore, EtcdStore, OP_TIMEOUT};
use crate::error::Error;

/// A kind of record, watched as every key under its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `P/networks/ID`: [`crate::Network`] JSON.
    Networks,
    /// `P/sandboxes/ID`: [`crate::Sandbox`] JSON.
    Sandboxes,
    /// `P/endpoints/NETWORK_ID/ID`: [`crate::Endpoint`] JSON.
    Endpoints,
    /// `P/hosts/NAME`: [`super::Host`] JSON.
    Hosts,
    /// `P/blocks/NETWORK_ID/ADDR_LEN`: [`super::Block`] JSON.
    Blocks,
    /// `P/network-vni/NETWORK_ID`: the VNI in decimal.
    Vnis,
    /// `P/controller/`: the controllers' election ([`super::election`]; key `leader`).
    Controller,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Networks => "networks",
            Kind::Sandboxes => "sandboxes",
            Kind::Endpoints => "endpoints",
            Kind::Hosts => "hosts",
            Kind::Blocks => "blocks",
            Kind::Vnis => "network-vni",
            Kind::Controller => "controller",
        }
    }
}

/// Records of one kind as `(key relative to the kind's directory, value)`, ordered by key.
pub type Records = Vec<(String, Vec<u8>)>;

/// One change, keys relative to the kind's directory (`ID`, `NETWORK_ID/ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put {
        key: String,
        value: Vec<u8>,
        revision: i64,
    },
    Delete {
        key: String,
        revision: i64,
    },
    /// The watch fell behind a compaction: these are all the records at `revision`; replace
    /// what you hold with them. Events after `revision` follow.
    Resync {
        records: Records,
        revision: i64,
    },
}

/// A watch of one kind (see the module note). Async; [`BlockingWatcher`] for threads.
pub struct Watcher {
    store: AsyncEtcdStore,
    kind: Kind,
    dir: String,
    /// The first revision not delivered yet.
    next: i64,
    stream: Option<WatchStream>,
    pending: VecDeque<WatchEvent>,
}

impl AsyncEtcdStore {
    /// Every record of `kind` (keys relative to its directory) and the etcd revision read at.
    ///
    /// Read in pages of [`LIST_PAGE`] keys, all at the revision of the first page (one
    /// consistent snapshot): a million endpoints are hundreds of MB, far above a gRPC
    /// message's default 4 MiB.
    pub async fn list(&self, kind: Kind) -> Result<(Records, i64), Error> {
        let dir = self.keys.dir(kind.dir());
        let end = prefix_end(dir.as_bytes());
        let mut records = Records::new();
        let mut from = dir.clone().into_bytes();
        let mut revision = 0;
        let mut kv = self.client.kv_client();
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let mut resp = self.call("list", kv.get(from.clone(), Some(opts))).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            from = last.key().to_vec();
            from.push(0);
            records.extend(
                kvs.iter()
                    .map(|kv| (relative(&dir, kv.key()), kv.value().to_vec())),
            );
            if !more {
                break;
            }
        }
        Ok((records, revision))
    }

    /// Puts `records` (keys relative to `kind`'s directory, as [`Self::list`] returns them),
    /// [`PUT_BATCH`] to a transaction, without any compare: loading a benchmark's cluster in
    /// the key layout the daemons read, not a write of the store trait.
    pub async fn put_records(
        &self,
        kind: Kind,
        records: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        let dir = self.keys.dir(kind.dir());
        let mut kv = self.client.kv_client();
        for chunk in records.chunks(PUT_BATCH) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(k, v)| TxnOp::put(format!("{dir}{k}"), v.clone(), None))
                .collect();
            self.call("put records", kv.txn(Txn::new().and_then(ops)))
                .await?;
        }
        Ok(())
    }

    /// Watches `kind` from etcd revision `from_revision` (the revision of a [`Self::list`] plus
    /// one). Opens the stream on the first [`Watcher::next`].
    pub fn watch(&self, kind: Kind, from_revision: i64) -> Watcher {
        Watcher {
            store: self.clone(),
            kind,
            dir: self.keys.dir(kind.dir()),
            next: from_revision.max(1),
            stream: None,
            pending: VecDeque::new(),
        }
    }

    /// Deletes the records of `kind` at these keys (relative to its directory), in one
    /// transaction without compare: [`Self::put_records`]'s counterpart.
    pub async fn delete_records(&self, kind: Kind, keys: &[String]) -> Result<(), Error> {
        let dir = self.keys.dir(kind.dir());
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::delete(format!("{dir}{k}"), None))
            .collect();
        let mut kv = self.client.kv_client();
        self.call("delete records", kv.txn(Txn::new().and_then(ops)))
            .await
            .map(|_| ())
    }

    /// Compacts etcd's history up to `revision` (what an operator's or etcd's own periodic
    /// compaction does; here for tests and tools).
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        let mut kv = self.client.kv_client();
        self.call("compact", kv.compact(revision, None))
            .await
            .map(|_| ())
    }
}

/// Keys per page of [`AsyncEtcdStore::list`].
pub const LIST_PAGE: i64 = 10_000;
/// Puts per transaction of [`AsyncEtcdStore::put_records`] (etcd's `--max-txn-ops` is 128).
pub const PUT_BATCH: usize = 128;

/// The end of the key range of every key starting with `prefix` (etcd's `WithPrefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn relative(dir: &str, key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    key.strip_prefix(dir).unwrap_or(&key).to_string()
}

impl Watcher {
    /// The first etcd revision not delivered yet.
    pub fn revision(&self) -> i64 {
        self.next
    }

    fn failed(&self, detail: String) -> Error {
        Error::Watch {
            what: self.kind.dir(),
            revision: self.next,
            detail,
        }
    }

    /// The next change, waiting for it. An error leaves the watcher where it was: call again
    /// (after a pause) to resume.
    pub async fn next(&mut self) -> Result<WatchEvent, Error> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            let stream = match &mut self.stream {
                Some(s) => s,
                None => {
                    let mut wc = self.store.client.watch_client();
                    let opts = WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(self.next);
                    let opened =
                        tokio::time::timeout(OP_TIMEOUT, wc.watch(self.dir.clone(), Some(opts)))
                            .await;
                    match opened {
                        Ok(Ok(s)) => self.stream.insert(s),
                        Ok(Err(e)) => {
                            return Err(self.failed(format!("{} at {}", e, self.store.url)))
                        }
                        Err(_) => {
                            return Err(self.failed(format!(
                                "etcd at {} did not answer within {OP_TIMEOUT:?}",
                                self.store.url
                            )))
                        }
                    }
                }
            };
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.stream = None;
                    return Err(
                        self.failed(format!("etcd at {} closed the stream", self.store.url))
                    );
                }
                Err(e) => {
                    self.stream = None;
                    return Err(self.failed(format!("{} at {}", e, self.store.url)));
                }
            };
            if msg.canceled() {
                self.stream = None;
                // etcd 3.4: compacted is told by this number alone (cancel_reason is empty).
                if msg.compact_revision() > 0 {
                    let (records, revision) = self.store.list(self.kind).await?;
                    self.next = revision + 1;
                    self.pending
                        .push_back(WatchEvent::Resync { records, revision });
                    continue;
                }
                return Err(self.failed(format!("cancelled by etcd: {:?}", msg.cancel_reason())));
            }
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let (key, revision) = (relative(&self.dir, kv.key()), kv.mod_revision());
                if revision < self.next {
                    continue;
                }
                self.next = revision + 1;
                self.pending.push_back(match ev.event_type() {
                    EventType::Put => WatchEvent::Put {
                        key,
                        value: kv.value().to_vec(),
                        revision,
                    },
                    EventType::Delete => WatchEvent::Delete { key, revision },
                });
            }
        }
    }
}

/// A [`Watcher`] for threads: each call runs on the store's runtime and waits here.
pub struct BlockingWatcher {
    inner: Option<Watcher>,
    rt: tokio::runtime::Handle,
}

impl BlockingWatcher {
    /// The next change, or `Ok(None)` when none came within `timeout`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, Error> {
        let Some(mut w) = self.inner.take() else {
            return Err(Error::EtcdConfig {
                detail: "watcher lost by an earlier runtime shutdown".into(),
            });
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let out = tokio::time::timeout(timeout, w.next()).await;
            let _ = tx.send((w, out));
        });
        let (w, out) = rx.recv().map_err(|_| Error::EtcdConfig {
            detail: "the etcd client's runtime stopped".into(),
        })?;
        self.inner = Some(w);
        match out {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The first etcd revision not delivered yet.
    pub fn revision(&self) -> i64 {
        self.inner.as_ref().map(Watcher::revision).unwrap_or(0)
    }
}

impl EtcdStore {
    /// Every record of `kind` and the etcd revision read at ([`AsyncEtcdStore::list`]).
    pub fn list(&self, kind: Kind) -> Result<(Records, i64), Error> {
        self.run(move |s| async move { s.list(kind).await })
    }

    /// Watches `kind` from etcd revision `from_revision` ([`AsyncEtcdStore::watch`]).
    pub fn watch(&self, kind: Kind, from_revision: i64) -> BlockingWatcher {
        BlockingWatcher {
            inner: Some(self.inner.watch(kind, from_revision)),
            rt: self.inner.rt.clone(),
        }
    }

    /// [`AsyncEtcdStore::put_records`].
    pub fn put_records(&self, kind: Kind, records: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let records = records.to_vec();
        self.run(move |s| async move { s.put_records(kind, &records).await })
    }

    /// [`AsyncEtcdStore::delete_records`].
    pub fn delete_records(&self, kind: Kind, keys: &[String]) -> Result<(), Error> {
        let keys = keys.to_vec();
        self.run(move |s| async move { s.delete_records(kind, &keys).await })
    }

    /// Compacts etcd's history up to `revision`.
    pub fn compact(&self, revision: i64) -> Result<(), Error> {
        self.run(move |s| async move { s.compact(revision).await })
    }
}
