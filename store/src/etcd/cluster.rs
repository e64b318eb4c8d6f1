//! Cluster records: hosts under a lease and one VNI per network (IPAM blocks: [`super::blocks`]).
//!
//! - **Hosts.** [`EtcdStore::register_host`] grants a lease and, in one transaction that
//!   compares both keys absent, puts `P/hosts/NAME` (the [`Host`] as JSON) and `P/host-ips/IP`
//!   (the name), both under that lease. A second host claiming a live host's name or underlay IP
//!   fails the compare and is told who holds it. The lease is kept alive by a task on the
//!   store's runtime; when etcd says the lease is gone, or no renewal succeeded for a whole TTL,
//!   the [`HostLease`] reports itself lost and everything it held has expired with it.
//! - **VNIs.** [`EtcdStore::allocate_vni`] takes the lowest free VNI from [`VNI_FIRST`] by a
//!   transaction that compares `P/vnis/VNI` and `P/network-vni/NETWORK` absent and the network
//!   still the same record (its `create_revision`); losers re-read and take the next one.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::{decode, decode_all, encode, AsyncEtcdStore, EtcdStore, Get, MAX_ATTEMPTS};
use crate::error::Error;
use crate::model::Network;
use crate::validate::validate_name;

/// The lowest VNI handed out (below it: room for VNIs given by hand).
pub const VNI_FIRST: u32 = 4096;
/// The highest VNI (24 bits).
pub const VNI_LAST: u32 = (1 << 24) - 1;

/// A host of the cluster, as its agent registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Unique among live hosts; the network-name rule.
    pub name: String,
    /// The address other hosts send VXLAN to; unique among live hosts.
    pub underlay_ip: IpAddr,
    /// The MAC of the host's VTEP (`aa:bb:cc:dd:ee:ff`).
    pub vtep_mac: String,
}

/// A live registration: the host's lease, kept alive in the background until dropped (which
/// revokes it), [`HostLease::abandon`]ed, or lost.
pub struct HostLease {
    pub(crate) host: Host,
    pub(crate) id: i64,
    ttl: Duration,
    live: Arc<AtomicBool>,
    keeper: Option<tokio::task::JoinHandle<()>>,
    store: AsyncEtcdStore,
}

impl HostLease {
    pub fn host(&self) -> &Host {
        &self.host
    }
    /// etcd's lease id.
    pub fn id(&self) -> i64 {
        self.id
    }
    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    /// False once etcd said the lease is gone or no renewal got through for a whole TTL: the
    /// host's name, IP and blocks may be someone else's now; register again.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
    /// Stops renewing without revoking, as a crashed or cut-off host would: the lease, and
    /// every key under it, expires after its TTL. The handle stays, holding nothing: claims
    /// made with it are refused ([`Error::LeaseExpired`]).
    pub fn abandon(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        self.live.store(false, Ordering::SeqCst);
    }
}

impl Drop for HostLease {
    fn drop(&mut self) {
        let Some(keeper) = self.keeper.take() else {
            return;
        };
        keeper.abort();
        // Revoke in the background: a drop must not block (it may run in a runtime's task).
        let (mut lease, id) = (self.store.client.lease_client(), self.id);
        self.store.rt.spawn(async move {
            let _ = tokio::time::timeout(super::OP_TIMEOUT, lease.revoke(id)).await;
        });
    }
}

impl std::fmt::Debug for HostLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLease")
            .field("host", &self.host)
            .field("id", &self.id)
            .field("live", &self.is_live())
            .finish()
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

impl AsyncEtcdStore {
    /// [`EtcdStore::register_host`].
    pub async fn register_host(&self, host: &Host, ttl: Duration) -> Result<HostLease, Error> {
        validate_name("host", &host.name)?;
        if !valid_mac(&host.vtep_mac) {
            return Err(Error::HostInvalid {
                name: host.name.clone(),
                detail: format!("VTEP MAC {:?} is not aa:bb:cc:dd:ee:ff", host.vtep_mac),
            });
        }
        let body = encode("hosts", &host.name, host)?;
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut leases = self.client.lease_client();
        let grant = self.call("grant lease", leases.grant(secs, None)).await?;
        let id = grant.id();
        let (hkey, ikey) = (
            self.keys.host(&host.name),
            self.keys.host_ip(&host.underlay_ip),
        );
        let txn = Txn::new()
            .when(vec![
                Compare::create_revision(hkey.clone(), CompareOp::Equal, 0),
                Compare::create_revision(ikey.clone(), CompareOp::Equal, 0),
            ])
            .and_then(vec![
                TxnOp::put(hkey.clone(), body, Some(PutOptions::new().with_lease(id))),
                TxnOp::put(
                    ikey.clone(),
                    host.name.clone(),
                    Some(PutOptions::new().with_lease(id)),
                ),
            ])
            .or_else(vec![TxnOp::get(hkey, None), TxnOp::get(ikey, None)]);
        let mut kv = self.client.kv_client();
        let resp = match self.call("register host", kv.txn(txn)).await {
            Ok(r) => r,
            Err(e) => {
                let _ = self.call("revoke lease", leases.revoke(id)).await;
                return Err(e);
            }
        };
        if !resp.succeeded() {
            let _ = self.call("revoke lease", leases.revoke(id)).await;
            let got: Vec<Vec<etcd_client::KeyValue>> = resp
                .op_responses()
                .into_iter()
                .map(|r| match r {
                    TxnOpResponse::Get(mut g) => g.take_kvs(),
                    _ => Vec::new(),
                })
                .collect();
            if let Some(kv) = got.first().and_then(|v| v.first()) {
                let holder: Host = decode("hosts", kv)?;
                return Err(Error::HostExists {
                    name: host.name.clone(),
                    underlay_ip: holder.underlay_ip,
                    lease: kv.lease(),
                });
            }
            let ip = got.get(1).and_then(|v| v.first());
            return Err(Error::UnderlayIpInUse {
                ip: host.underlay_ip,
                host: ip
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    .unwrap_or_default(),
                lease: ip.map_or(0, |kv| kv.lease()),
            });
        }
        let ttl = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(1));
        let live = Arc::new(AtomicBool::new(true));
        let keeper = self
            .rt
            .spawn(keep_alive(self.clone(), id, ttl, live.clone()));
        Ok(HostLease {
            host: host.clone(),
            id,
            ttl,
            live,
            keeper: Some(keeper),
            store: self.clone(),
        })
    }

    /// Every live host, ordered by name.
    pub async fn hosts(&self) -> Result<Vec<Host>, Error> {
        let r = self
            .read("list hosts", vec![Get::Prefix(self.keys.dir("hosts"))])
            .await?;
        decode_all("hosts", r.all(0))
    }

    /// [`EtcdStore::allocate_vni`].
    pub async fn allocate_vni(&self, network_id: &str) -> Result<u32, Error> {
        crate::validate::validate_id("network", network_id)?;
        for _ in 0..MAX_ATTEMPTS {
            let r = self
                .read(
                    "allocate vni",
                    vec![
                        Get::Key(self.keys.network(network_id)),
                        Get::Key(self.keys.network_vni(network_id)),
                        Get::Prefix(self.keys.dir("vnis")),
                    ],
                )
                .await?;
            let Some(nkv) = r.one(0) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: network_id.to_string(),
                });
            };
            if let Some(v) = r.one(1).and_then(|kv| parse_u32(kv.value())) {
                return Ok(v);
            }
            let dir = self.keys.dir("vnis");
            let used: BTreeSet<u32> = r
                .all(2)
                .iter()
                .filter_map(|kv| parse_u32(kv.key().strip_prefix(dir.as_bytes())?))
                .collect();
            let Some(vni) = (VNI_FIRST..=VNI_LAST).find(|v| !used.contains(v)) else {
                let net: Network = decode("networks", nkv)?;
                return Err(Error::VnisExhausted { network: net.name });
            };
            let compares = vec![
                Compare::create_revision(
                    self.keys.network(network_id),
                    CompareOp::Equal,
                    nkv.create_revision(),
                ),
                Compare::create_revision(self.keys.network_vni(network_id), CompareOp::Equal, 0),
                Compare::create_revision(self.keys.vni(vni), CompareOp::Equal, 0),
            ];
            let ops = vec![
                TxnOp::put(self.keys.vni(vni), network_id, None),
                TxnOp::put(self.keys.network_vni(network_id), vni.to_string(), None),
            ];
            if self.commit("allocate vni", compares, ops).await? {
                return Ok(vni);
            }
        }
        Err(Error::Contention {
            op: "allocate vni",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The network's VNI, if one was allocated.
    pub async fn vni(&self, network_id: &str) -> Result<Option<u32>, Error> {
        let r = self
            .read("get vni", vec![Get::Key(self.keys.network_vni(network_id))])
            .await?;
        Ok(r.one(0).and_then(|kv| parse_u32(kv.value())))
    }
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Renews the lease every third of its TTL over one keepalive stream, re-opening the stream
/// when it breaks. Gives up (marks the lease lost) when etcd says it is gone, or when no renewal
/// got through for a whole TTL (etcd has expired it by then, or will before we could know).
pub(super) async fn keep_alive(
    store: AsyncEtcdStore,
    id: i64,
    ttl: Duration,
    live: Arc<AtomicBool>,
) {
    let period = (ttl / 3).max(Duration::from_millis(300));
    let mut last_ok = Instant::now();
    loop {
        let mut leases = store.client.lease_client();
        let opened = tokio::time::timeout(super::OP_TIMEOUT, leases.keep_alive(id)).await;
        match opened {
            Ok(Ok((mut keeper, mut stream))) => {
                last_ok = Instant::now();
                loop {
                    tokio::time::sleep(period).await;
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(period, stream.message()).await {
                        Ok(Ok(Some(resp))) if resp.ttl() > 0 => last_ok = Instant::now(),
                        Ok(Ok(Some(_))) => {
                            live.store(false, Ordering::SeqCst);
                            return;
                        }
                        _ => break,
                    }
                }
            }
            // etcd-client's answer when the first renewal finds no lease.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                live.store(false, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
        if last_ok.elapsed() >= ttl {
            live.store(false, Ordering::SeqCst);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl EtcdStore {
    /// Registers `host` under a new lease of `ttl` (etcd may round it up: at least about 2 s)
    /// kept alive in the background. Refuses a name or underlay IP held by a live host
    /// ([`Error::HostExists`], [`Error::UnderlayIpInUse`]) and then writes nothing.
    pub fn register_host(&self, host: &Host, ttl: Duration) -> Result<HostLease, Error> {
        let host = host.clone();
        self.run(move |s| async move { s.register_host(&host, ttl).await })
    }

    /// Revokes the lease now: the host's name, IP and blocks are free at once.
    pub fn unregister_host(&self, mut lease: HostLease) -> Result<(), Error> {
        if let Some(k) = lease.keeper.take() {
            k.abort();
        }
        lease.live.store(false, Ordering::SeqCst);
        let id = lease.id;
        self.run(move |s| async move {
            let mut leases = s.client.lease_client();
            s.call("revoke lease", leases.revoke(id)).await.map(|_| ())
        })
    }

    /// Revokes lease `id` whoever holds it (its keys go with it): a host restarted after a
    /// crash ends its previous run's lease instead of waiting out its TTL. Revoking a lease
    /// that is already gone is success.
    pub fn revoke_lease(&self, id: i64) -> Result<(), Error> {
        self.run(move |s| async move {
            let mut leases = s.client.lease_client();
            match s.call("revoke lease", leases.revoke(id)).await {
                Err(Error::Etcd { detail, .. }) if detail.contains("lease not found") => Ok(()),
                r => r.map(|_| ()),
            }
        })
    }

    /// Every live host, ordered by name.
    pub fn hosts(&self) -> Result<Vec<Host>, Error> {
        self.run(|s| async move { s.hosts().await })
    }

    /// The network's VNI: the one it has, or the lowest free one from [`VNI_FIRST`], taken by a
    /// transaction so that no two networks ever share one.
    pub fn allocate_vni(&self, network_id: &str) -> Result<u32, Error> {
        let id = network_id.to_string();
        self.run(|s| async move { s.allocate_vni(&id).await })
    }

    /// The network's VNI, if one was allocated.
    pub fn vni(&self, network_id: &str) -> Result<Option<u32>, Error> {
        let id = network_id.to_string();
        self.run(|s| async move { s.vni(&id).await })
    }
}

impl HostLease {
    /// A copy that names the same lease but neither renews nor revokes it (to move into a
    /// future).
    pub(crate) fn shallow(&self) -> HostLease {
        HostLease {
            host: self.host.clone(),
            id: self.id,
            ttl: self.ttl,
            live: self.live.clone(),
            keeper: None,
            store: self.store.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert!(valid_mac("02:42:ac:11:00:02"));
        assert!(!valid_mac("02:42:ac:11:00"));
        assert!(!valid_mac("02:42:ac:11:00:zz"));
    }
}
