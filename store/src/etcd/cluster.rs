//! Cluster records: hosts under a lease, one VNI per network, IPAM blocks leased per host.
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
//! - **Blocks** (flannel#1289). `P/blocks/NETWORK/ADDR_LEN` holds a [`Block`] under the owning
//!   host's lease, so a dead host's blocks vanish with its lease. Every claim is a transaction
//!   that compares the block key absent, the host key still under *this* lease (an expired host
//!   can claim nothing: its key is gone), and the network unchanged. A host that comes back
//!   (a new lease) gets its old block back only through [`EtcdStore::reclaim_block`], whose
//!   transaction compares the block still absent or still its own: a block handed on to another
//!   host meanwhile is refused ([`Error::BlockTaken`]), so two hosts never serve one block.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use ipnet::IpNet;
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

/// An IPAM block of a network, leased to one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub network_id: String,
    pub cidr: IpNet,
    pub host: String,
}

/// A live registration: the host's lease, kept alive in the background until dropped (which
/// revokes it), [`HostLease::abandon`]ed, or lost.
pub struct HostLease {
    host: Host,
    id: i64,
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

/// The `i`th block of `prefix_len` bits in `subnet`, if there is one.
fn nth_block(subnet: &IpNet, prefix_len: u8, i: u128) -> Option<IpNet> {
    let (base, bits) = match subnet.network() {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
        IpAddr::V6(a) => (u128::from(a), 128u32),
    };
    let size = 1u128.checked_shl(bits.checked_sub(u32::from(prefix_len))?)?;
    let addr = base.checked_add(i.checked_mul(size)?)?;
    let addr = match subnet {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(addr).ok()?)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(addr)),
    };
    let block = IpNet::new(addr, prefix_len).ok()?;
    subnet.contains(&block).then_some(block)
}

/// The first block of `prefix_len` in the network's pools that is not in `taken`.
fn free_block(net: &Network, prefix_len: u8, taken: &BTreeSet<IpNet>) -> Result<IpNet, Error> {
    let max = |s: &IpNet| if s.addr().is_ipv4() { 32 } else { 128 };
    let fitting: Vec<IpNet> = net
        .ipam
        .iter()
        .map(|p| p.subnet)
        .filter(|s| s.prefix_len() <= prefix_len && prefix_len <= max(s))
        .collect();
    if fitting.is_empty() {
        return Err(Error::BlockSize {
            network: net.name.clone(),
            subnet: net.ipam.first().map(|p| p.subnet).unwrap_or_default(),
            prefix_len,
        });
    }
    for subnet in &fitting {
        // Every taken block can rule out at most one candidate: taken.len() + 1 tries suffice.
        let mut i = 0u128;
        while let Some(b) = nth_block(subnet, prefix_len, i) {
            if !taken.iter().any(|t| t.contains(&b) || b.contains(t)) {
                return Ok(b);
            }
            i += 1;
            if i > taken.len() as u128 + 1 {
                break;
            }
        }
    }
    Err(Error::BlocksExhausted {
        network: net.name.clone(),
        prefix_len,
    })
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
                });
            }
            let holder = got
                .get(1)
                .and_then(|v| v.first())
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                .unwrap_or_default();
            return Err(Error::UnderlayIpInUse {
                ip: host.underlay_ip,
                host: holder,
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

    /// [`EtcdStore::claim_block`].
    pub async fn claim_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        prefix_len: u8,
    ) -> Result<IpNet, Error> {
        crate::validate::validate_id("network", network_id)?;
        let (nkey, hkey) = (
            self.keys.network(network_id),
            self.keys.host(&lease.host.name),
        );
        for _ in 0..MAX_ATTEMPTS {
            let r = self
                .read(
                    "claim block",
                    vec![
                        Get::Key(nkey.clone()),
                        Get::Prefix(self.keys.network_blocks(network_id)),
                        Get::Key(hkey.clone()),
                    ],
                )
                .await?;
            let Some(nkv) = r.one(0) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: network_id.to_string(),
                });
            };
            self.check_lease(lease, r.one(2))?;
            let net: Network = decode("networks", nkv)?;
            let taken: Vec<Block> = decode_all("blocks", r.all(1))?;
            let taken: BTreeSet<IpNet> = taken.into_iter().map(|b| b.cidr).collect();
            let cidr = free_block(&net, prefix_len, &taken)?;
            if self
                .put_block(lease, network_id, nkv.create_revision(), cidr, None)
                .await?
            {
                return Ok(cidr);
            }
        }
        Err(Error::Contention {
            op: "claim block",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// [`EtcdStore::reclaim_block`].
    pub async fn reclaim_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<(), Error> {
        crate::validate::validate_id("network", network_id)?;
        let bkey = self.keys.block(network_id, &cidr);
        let (nkey, hkey) = (
            self.keys.network(network_id),
            self.keys.host(&lease.host.name),
        );
        for _ in 0..MAX_ATTEMPTS {
            let r = self
                .read(
                    "reclaim block",
                    vec![
                        Get::Key(nkey.clone()),
                        Get::Key(bkey.clone()),
                        Get::Key(hkey.clone()),
                    ],
                )
                .await?;
            let Some(nkv) = r.one(0) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: network_id.to_string(),
                });
            };
            self.check_lease(lease, r.one(2))?;
            let net: Network = decode("networks", nkv)?;
            if cidr.trunc() != cidr || !net.ipam.iter().any(|p| p.subnet.contains(&cidr)) {
                return Err(Error::BlockSize {
                    network: net.name,
                    subnet: net.ipam.first().map(|p| p.subnet).unwrap_or_default(),
                    prefix_len: cidr.prefix_len(),
                });
            }
            // Absent: nobody holds it, take it back. Present: only if it is still ours.
            let seen = match r.one(1) {
                None => None,
                Some(kv) => {
                    let b: Block = decode("blocks", kv)?;
                    if b.host != lease.host.name || kv.lease() != lease.id {
                        return Err(Error::BlockTaken {
                            block: cidr,
                            network: net.name,
                            host: b.host,
                        });
                    }
                    Some(kv.mod_revision())
                }
            };
            if self
                .put_block(lease, network_id, nkv.create_revision(), cidr, seen)
                .await?
            {
                return Ok(());
            }
        }
        Err(Error::Contention {
            op: "reclaim block",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Puts the block under the lease if the network is the one read, the host key is still
    /// under this lease, and the block key is absent (`seen` None) or unchanged since `seen`.
    async fn put_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        network_created: i64,
        cidr: IpNet,
        seen: Option<i64>,
    ) -> Result<bool, Error> {
        let bkey = self.keys.block(network_id, &cidr);
        let block = Block {
            network_id: network_id.to_string(),
            cidr,
            host: lease.host.name.clone(),
        };
        let body = encode("blocks", &bkey, &block)?;
        let compares = vec![
            match seen {
                None => Compare::create_revision(bkey.clone(), CompareOp::Equal, 0),
                Some(m) => Compare::mod_revision(bkey.clone(), CompareOp::Equal, m),
            },
            Compare::lease(self.keys.host(&lease.host.name), CompareOp::Equal, lease.id),
            Compare::create_revision(
                self.keys.network(network_id),
                CompareOp::Equal,
                network_created,
            ),
        ];
        let put = TxnOp::put(bkey, body, Some(PutOptions::new().with_lease(lease.id)));
        self.commit("claim block", compares, vec![put]).await
    }

    /// Gives a block back (tolerant: a block already gone is fine; one held by another host is
    /// [`Error::BlockTaken`]).
    pub async fn release_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<(), Error> {
        crate::validate::validate_id("network", network_id)?;
        let bkey = self.keys.block(network_id, &cidr);
        let compares = vec![Compare::lease(bkey.clone(), CompareOp::Equal, lease.id)];
        if self
            .commit(
                "release block",
                compares,
                vec![TxnOp::delete(bkey.clone(), None)],
            )
            .await?
        {
            return Ok(());
        }
        let r = self.read("release block", vec![Get::Key(bkey)]).await?;
        match r.one(0) {
            None => Ok(()),
            Some(kv) => {
                let b: Block = decode("blocks", kv)?;
                Err(Error::BlockTaken {
                    block: cidr,
                    network: network_id.to_string(),
                    host: b.host,
                })
            }
        }
    }

    /// Is this block held by this very lease right now? An agent asks before serving
    /// addresses from a block it held before a lost lease.
    pub async fn owns_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<bool, Error> {
        let r = self
            .read(
                "get block",
                vec![Get::Key(self.keys.block(network_id, &cidr))],
            )
            .await?;
        Ok(r.one(0).is_some_and(|kv| kv.lease() == lease.id))
    }

    /// The network's blocks and who holds them, ordered by address.
    pub async fn blocks(&self, network_id: &str) -> Result<Vec<Block>, Error> {
        let r = self
            .read(
                "list blocks",
                vec![Get::Prefix(self.keys.network_blocks(network_id))],
            )
            .await?;
        let mut all: Vec<Block> = decode_all("blocks", r.all(0))?;
        all.sort_by_key(|a| a.cidr);
        Ok(all)
    }

    /// The host key read must be under this lease, else the lease is gone.
    fn check_lease(
        &self,
        lease: &HostLease,
        host_kv: Option<&etcd_client::KeyValue>,
    ) -> Result<(), Error> {
        if host_kv.is_some_and(|kv| kv.lease() == lease.id) {
            return Ok(());
        }
        Err(Error::LeaseExpired {
            host: lease.host.name.clone(),
            lease: lease.id,
        })
    }
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Renews the lease every third of its TTL over one keepalive stream, re-opening the stream
/// when it breaks. Gives up (marks the lease lost) when etcd says it is gone, or when no renewal
/// got through for a whole TTL (etcd has expired it by then, or will before we could know).
async fn keep_alive(store: AsyncEtcdStore, id: i64, ttl: Duration, live: Arc<AtomicBool>) {
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

    /// Leases the lowest free block of `/prefix_len` of the network's subnets to the host, by
    /// a transaction that compares the block absent and the host's lease still live.
    pub fn claim_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        prefix_len: u8,
    ) -> Result<IpNet, Error> {
        let (lease, id) = (lease.shallow(), network_id.to_string());
        self.run(move |s| async move { s.claim_block(&lease, &id, prefix_len).await })
    }

    /// Takes back a block this host held before (a restart): only if it is still absent or
    /// still its own; a block handed on to another host is [`Error::BlockTaken`].
    pub fn reclaim_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<(), Error> {
        let (lease, id) = (lease.shallow(), network_id.to_string());
        self.run(move |s| async move { s.reclaim_block(&lease, &id, cidr).await })
    }

    /// Gives a block back; see [`AsyncEtcdStore::release_block`].
    pub fn release_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<(), Error> {
        let (lease, id) = (lease.shallow(), network_id.to_string());
        self.run(move |s| async move { s.release_block(&lease, &id, cidr).await })
    }

    /// Is this block held by this very lease right now?
    pub fn owns_block(
        &self,
        lease: &HostLease,
        network_id: &str,
        cidr: IpNet,
    ) -> Result<bool, Error> {
        let (lease, id) = (lease.shallow(), network_id.to_string());
        self.run(move |s| async move { s.owns_block(&lease, &id, cidr).await })
    }

    /// The network's blocks and who holds them.
    pub fn blocks(&self, network_id: &str) -> Result<Vec<Block>, Error> {
        let id = network_id.to_string();
        self.run(|s| async move { s.blocks(&id).await })
    }
}

impl HostLease {
    /// A copy that names the same lease but neither renews nor revokes it (to move into a
    /// future).
    fn shallow(&self) -> HostLease {
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
    use crate::model::{Driver, Pool};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_are_handed_out_in_order_around_taken_ones() {
        let mut n = Network::new("n", Driver::Overlay);
        n.ipam.push(Pool::new(net("10.0.0.0/24")));
        let mut taken = BTreeSet::new();
        assert_eq!(free_block(&n, 26, &taken).unwrap(), net("10.0.0.0/26"));
        taken.insert(net("10.0.0.0/26"));
        taken.insert(net("10.0.0.128/26"));
        assert_eq!(free_block(&n, 26, &taken).unwrap(), net("10.0.0.64/26"));
        taken.insert(net("10.0.0.64/26"));
        assert_eq!(free_block(&n, 26, &taken).unwrap(), net("10.0.0.192/26"));
        taken.insert(net("10.0.0.192/26"));
        assert!(matches!(
            free_block(&n, 26, &taken),
            Err(Error::BlocksExhausted { prefix_len: 26, .. })
        ));
        assert!(matches!(
            free_block(&n, 20, &taken),
            Err(Error::BlockSize { .. })
        ));
        assert_eq!(
            nth_block(&net("fd00::/64"), 80, 1),
            Some(net("fd00::1:0:0:0/80"))
        );
    }

    #[test]
    fn macs() {
        assert!(valid_mac("02:42:ac:11:00:02"));
        assert!(!valid_mac("02:42:ac:11:00"));
        assert!(!valid_mac("02:42:ac:11:00:zz"));
    }
}
