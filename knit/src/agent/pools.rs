//! Docker's IPAM driver over knit's host-local reservations, so Docker's containers, knit's
//! sandboxes and podman's containers on knit's CNI plugins draw from one address space.
//!
//! A pool needs no record of its own: its id says everything (`SUBNET` or `SUBNET@SUBPOOL`),
//! and its reservations live in the host-local directory `knit-pool-<addr>-<len>` under the
//! CNI data dir, which exists from `RequestPool` to `ReleasePool`. A network made on the pool
//! names that directory (`io.knit.ipam.dir`), so the CLI allocates from it too. Addresses Docker
//! asks for are owned by `docker-<random>` (Docker's RequestAddress names no endpoint) and
//! released by address.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use libnet::ipam::store::{IpamStore, LockedStore};
use libnet::ipam::{self, FileStore};
use store::{Driver, Network, Pool, Store};

use crate::attach::ipam_config;
use crate::network::{first_host, ipam_dir_name, pick_subnet, IPAM_DIR};

/// The address space knit's IPAM answers for (local scope).
pub const LOCAL_SPACE: &str = "knit";
/// The global address space's name: served by an agent with `--etcd` (overlay networks).
pub const GLOBAL_SPACE: &str = "knit-global";

const DIR_PREFIX: &str = "knit-pool-";

/// A pool as its id spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolId {
    pub subnet: IpNet,
    pub range: Option<IpNet>,
}

impl PoolId {
    pub fn parse(id: &str) -> Result<PoolId> {
        let (s, r) = match id.split_once('@') {
            Some((s, r)) => (s, Some(r)),
            None => (id, None),
        };
        let subnet: IpNet = s
            .parse()
            .with_context(|| format!("pool id {id:?} is not one knit handed out"))?;
        let range = r
            .map(|r| r.parse::<IpNet>())
            .transpose()
            .with_context(|| format!("pool id {id:?} is not one knit handed out"))?;
        Ok(PoolId { subnet, range })
    }

    pub fn id(&self) -> String {
        match self.range {
            Some(r) => format!("{}@{r}", self.subnet),
            None => self.subnet.to_string(),
        }
    }

    /// The host-local directory of the pool's reservations.
    pub fn dir_name(&self) -> String {
        dir_name(&self.subnet)
    }

    /// The pool as a throwaway network, to reuse the host-local configuration of networks.
    fn as_network(&self) -> Network {
        let mut n = Network::new(self.dir_name(), Driver::Bridge);
        let mut p = Pool::new(self.subnet);
        p.gateway = Some(first_host(&self.subnet));
        p.ip_range = self.range;
        n.ipam.push(p);
        n
    }
}

pub fn dir_name(subnet: &IpNet) -> String {
    format!("{DIR_PREFIX}{}-{}", subnet.addr(), subnet.prefix_len())
}

/// The subnet of a pool directory's name.
fn dir_subnet(name: &str) -> Option<IpNet> {
    let (a, l) = name.strip_prefix(DIR_PREFIX)?.rsplit_once('-')?;
    IpNet::new(a.parse().ok()?, l.parse().ok()?).ok()
}

/// The subnets of every pool directory under `data_dir`.
fn pools_on_disk(data_dir: &Path) -> Result<Vec<IpNet>> {
    let rd = match std::fs::read_dir(data_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", data_dir.display())),
    };
    Ok(rd
        .filter_map(|e| e.ok())
        .filter_map(|e| dir_subnet(&e.file_name().to_string_lossy()))
        .collect())
}

/// What RequestPool decides: the pool, or why not. `taken` are the subnets of networks and
/// pools that exist (a pool of exactly `want` whose directory no network uses is an orphan of
/// an interrupted `docker network create`, and is taken over). Pure.
pub fn decide_pool(
    want: Option<IpNet>,
    sub: Option<IpNet>,
    v6: bool,
    networks: &[Network],
    pools: &[IpNet],
    routed: &[IpNet],
) -> Result<PoolId> {
    let subnet = match want {
        Some(s) => {
            if s.trunc() != s {
                bail!("pool {s} has host bits set: did you mean {}?", s.trunc());
            }
            if s.addr().is_ipv6() != v6 {
                bail!("pool {s} is not of the family asked for (V6={v6})");
            }
            s
        }
        None if v6 => bail!("knit has no default IPv6 pool: give one with --subnet"),
        None => {
            let used: Vec<IpNet> = networks
                .iter()
                .flat_map(|n| n.ipam.iter().map(|p| p.subnet))
                .chain(pools.iter().copied())
                .chain(routed.iter().copied())
                .collect();
            pick_subnet(&used)
                .ok_or_else(|| anyhow::anyhow!("no free automatic subnet left: give --subnet"))?
        }
    };
    if let Some(r) = sub {
        if r.trunc() != r || !subnet.contains(&r) {
            bail!("--ip-range {r} is not a canonical subnet inside {subnet}");
        }
    }
    for n in networks {
        for p in &n.ipam {
            if store::validate::subnets_overlap(&subnet, &p.subnet) {
                bail!(
                    "subnet {subnet} overlaps subnet {} of network {:?}",
                    p.subnet,
                    n.name
                );
            }
        }
    }
    for p in pools {
        if *p == subnet {
            continue; // an orphan: no network uses it (checked above)
        }
        if store::validate::subnets_overlap(&subnet, p) {
            bail!("subnet {subnet} overlaps knit's pool {p}");
        }
    }
    Ok(PoolId { subnet, range: sub })
}

/// RequestPool: decide, then make the directory (the pool exists from here).
pub fn request_pool(
    st: &dyn Store,
    data_dir: &Path,
    want: Option<IpNet>,
    sub: Option<IpNet>,
    v6: bool,
    routed: &[IpNet],
) -> Result<PoolId> {
    let networks = st.list_networks().context("listing networks")?;
    let pools = pools_on_disk(data_dir)?;
    let pool = decide_pool(want, sub, v6, &networks, &pools, routed)?;
    if let Some(n) = networks
        .iter()
        .find(|n| ipam_dir_name(n) == pool.dir_name())
    {
        bail!("pool {} is in use by network {:?}", pool.subnet, n.name);
    }
    FileStore::open(data_dir, &pool.dir_name())
        .with_context(|| format!("making the reservations directory of pool {}", pool.id()))?;
    Ok(pool)
}

/// ReleasePool: the directory goes once nothing is reserved in it.
pub fn release_pool(data_dir: &Path, pool: &PoolId) {
    crate::network::remove_ipam_dirs(data_dir, &pool.dir_name());
}

/// RequestAddress. The gateway (`gateway` set) is the address asked for or the subnet's first
/// host, which the pool's ranges exclude; a gateway elsewhere inside the range is reserved like
/// any address. Returns the address with the subnet's prefix length.
pub fn request_address(
    data_dir: &Path,
    pool: &PoolId,
    want: Option<IpAddr>,
    gateway: bool,
) -> Result<IpNet> {
    if let Some(a) = want {
        if !pool.subnet.contains(&a) {
            bail!("address {a} is not in pool {}", pool.subnet);
        }
    }
    let prefixed = |a: IpAddr| IpNet::new(a, pool.subnet.prefix_len()).map_err(anyhow::Error::from);
    let first = first_host(&pool.subnet);
    let in_range = |a: &IpAddr| pool.range.is_none_or(|r| r.contains(a));
    if gateway {
        let gw = want.unwrap_or(first);
        if gw == first || !in_range(&gw) {
            return prefixed(gw);
        }
    }
    let net = pool.as_network();
    let cfg = ipam_config(&net, data_dir)?;
    let mut fs = FileStore::open(data_dir, &pool.dir_name())?;
    crate::attach::without_flush(&mut fs);
    let owner = format!("docker-{}", &store::new_id()[..16]);
    let ifname = if gateway { "gateway" } else { "eth0" };
    let got = ipam::allocate(
        &mut fs,
        &cfg,
        &owner,
        ifname,
        &want.into_iter().collect::<Vec<_>>(),
    )
    .with_context(|| format!("allocating an address in pool {}", pool.subnet))?;
    match got.into_iter().next() {
        Some(a) => prefixed(a.address.addr()),
        None => bail!("pool {} gave no address", pool.subnet),
    }
}

/// ReleaseAddress: none held is success.
pub fn release_address(data_dir: &Path, pool: &PoolId, addr: IpAddr) -> Result<()> {
    if !data_dir.join(pool.dir_name()).exists() {
        return Ok(());
    }
    let mut fs = FileStore::open(data_dir, &pool.dir_name())?;
    let mut l = fs.lock()?;
    l.release_ip(addr)
        .with_context(|| format!("releasing {addr} in pool {}", pool.subnet))?;
    l.unlock()?;
    Ok(())
}

/// The `io.knit.ipam.dir` option of a network made on knit's pool `subnet`.
pub fn network_option(subnet: &IpNet) -> (String, String) {
    (IPAM_DIR.to_string(), dir_name(subnet))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn pool_ids_round_trip() {
        for id in [
            "10.244.1.0/24",
            "10.244.1.0/24@10.244.1.128/25",
            "fd00:6b6e::/64",
        ] {
            assert_eq!(PoolId::parse(id).unwrap().id(), id);
        }
        assert!(PoolId::parse("nonsense").is_err());
        let p = PoolId::parse("fd00:6b6e::/64").unwrap();
        assert_eq!(dir_subnet(&p.dir_name()), Some(p.subnet));
        assert_eq!(dir_subnet("knit-pool-10.1.0.0-16"), Some(n("10.1.0.0/16")));
        assert_eq!(dir_subnet("mynet"), None);
    }

    #[test]
    fn pools_refuse_overlaps_and_bad_subnets() {
        let mut other = Network::new("other", Driver::Bridge);
        other.ipam.push(Pool::new(n("10.244.0.0/16")));
        let nets = [other];
        let e = decide_pool(Some(n("10.244.3.0/24")), None, false, &nets, &[], &[]).unwrap_err();
        assert!(e.to_string().contains("network \"other\""), "{e}");
        let e = decide_pool(Some(n("10.9.0.1/24")), None, false, &[], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("did you mean 10.9.0.0/24"), "{e}");
        let e = decide_pool(
            Some(n("10.9.0.0/24")),
            None,
            false,
            &[],
            &[n("10.9.0.0/16")],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("pool 10.9.0.0/16"), "{e}");
        // The same subnet as an orphaned pool directory is taken over.
        let p = decide_pool(
            Some(n("10.9.0.0/24")),
            None,
            false,
            &[],
            &[n("10.9.0.0/24")],
            &[],
        );
        assert_eq!(p.unwrap().subnet, n("10.9.0.0/24"));
        let e = decide_pool(None, None, true, &[], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("IPv6"), "{e}");
        let e = decide_pool(
            Some(n("10.9.0.0/24")),
            Some(n("10.8.0.0/25")),
            false,
            &[],
            &[],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("ip-range"), "{e}");
        // The automatic subnet skips networks, pools and routes.
        let p = decide_pool(
            None,
            None,
            false,
            &nets,
            &[n("172.17.0.0/24")],
            &[n("172.17.1.0/24")],
        );
        assert_eq!(p.unwrap().subnet, n("172.17.2.0/24"));
    }
}
