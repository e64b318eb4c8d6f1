//! The allocator: pure logic over an [`IpamStore`]. Each public function takes the store's lock
//! for its whole duration (one lock for all range sets of an ADD, unlike the reference's lock
//! per set), so callers never lock themselves.

use super::config::IpamConfig;
use super::range::{canonical_ip, RangeSet};
use super::store::{IpamStore, LockedStore, Lookup};
use super::IpamError;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

/// One address handed out for one range set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address with its subnet's prefix length.
    pub address: IpNet,
    /// The range's gateway; always set today (the reference defaults it to the first host).
    pub gateway: Option<IpAddr>,
    /// Index into [`IpamConfig::ranges`].
    pub range_set: usize,
}

/// Run `f` under the store's lock; the lock is released on every path (and by the kernel if
/// the process dies, since it is an flock), and a failed release is reported.
fn locked<S, T>(
    store: &mut S,
    f: impl FnOnce(&mut S::Locked<'_>) -> Result<T, IpamError>,
) -> Result<T, IpamError>
where
    S: IpamStore + ?Sized,
{
    let mut guard = store.lock()?;
    let out = f(&mut guard);
    let unlocked = guard.unlock();
    let v = out?;
    unlocked?;
    Ok(v)
}

/// Allocate one address from every range set of `cfg` for (id, ifname). `requested` addresses
/// must each fall into a distinct range set; that set then yields exactly that address. On any
/// failure the addresses reserved by this call are released again.
pub fn allocate<S: IpamStore + ?Sized>(
    store: &mut S,
    cfg: &IpamConfig,
    id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<Vec<Allocation>, IpamError> {
    allocate_in_blocks(store, cfg, &[], id, ifname, requested)
}

/// Like [`allocate`], but a range set a block of `blocks` falls into hands out (and accepts
/// requests for) only addresses inside that block: the overlay leases one block of the
/// network per host (e.g. a /26 of a /16) and allocates locally. The network's subnet still
/// rules: its gateway, network and broadcast addresses are skipped, the block's own edges are
/// not, and the address carries the network's prefix length. A set without a block draws
/// from all of it. A full block is [`IpamError::BlockExhausted`] (lease another); a block
/// outside every set, or two blocks for one set, is [`IpamError::Block`].
pub fn allocate_in_blocks<S: IpamStore + ?Sized>(
    store: &mut S,
    cfg: &IpamConfig,
    blocks: &[IpNet],
    id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<Vec<Allocation>, IpamError> {
    check_attachment(id, ifname)?;
    let pools = pools(&cfg.ranges, blocks)?;
    let sets: Vec<RangeSet> = pools.iter().map(|p| p.set.clone()).collect();
    let wanted = assign_requested(&sets, requested)?;
    locked(store, |s| {
        // Duplicate allocation is not allowed (spec); checked for every (whole) set before
        // reserving.
        let held = s.held_by(id, ifname, Lookup::Fast)?;
        for set in &cfg.ranges {
            if let Some(ip) = held.iter().find(|ip| set.contains(**ip)) {
                return Err(IpamError::Duplicate {
                    ip: *ip,
                    id: id.to_string(),
                    ifname: ifname.to_string(),
                });
            }
        }
        let mut done: Vec<Allocation> = Vec::with_capacity(cfg.ranges.len());
        for (i, pool) in pools.iter().enumerate() {
            match allocate_in_set(s, i, pool, id, ifname, wanted[i]) {
                Ok(a) => done.push(a),
                Err(e) => {
                    // Undo that tells: an address that cannot be given back is named.
                    for a in &done {
                        let ip = a.address.addr();
                        if let Err(u) = s.release_ip(ip) {
                            eprintln!("knit: rolling back: could not release {ip}: {u}");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    })
}

/// What one range set draws from: the whole set, or its part inside a leased block.
struct Pool<'a> {
    whole: &'a RangeSet,
    set: RangeSet,
    block: Option<IpNet>,
}

fn pools<'a>(sets: &'a [RangeSet], blocks: &[IpNet]) -> Result<Vec<Pool<'a>>, IpamError> {
    let mut out: Vec<Pool<'a>> = sets
        .iter()
        .map(|s| Pool {
            whole: s,
            set: s.clone(),
            block: None,
        })
        .collect();
    for b in blocks {
        let bad = |reason| IpamError::Block { block: *b, reason };
        let (pool, cut) = out
            .iter_mut()
            .find_map(|p| p.whole.within(*b).map(|cut| (p, cut)))
            .ok_or_else(|| bad("outside every range set"))?;
        if pool.block.is_some() {
            return Err(bad("a second block for one range set"));
        }
        pool.set = cut;
        pool.block = Some(*b);
    }
    Ok(out)
}

/// The reservation file holds `<id>\r\n<ifname>`: neither may be empty or break that format.
fn check_attachment(id: &str, ifname: &str) -> Result<(), IpamError> {
    let bad = |reason| {
        Err(IpamError::Attachment {
            id: id.to_string(),
            ifname: ifname.to_string(),
            reason,
        })
    };
    if id.trim().is_empty() || ifname.is_empty() {
        return bad("empty container ID or ifname");
    }
    if id.trim().contains(['\r', '\n', '\0']) {
        return bad("container ID contains a line break or NUL");
    }
    if ifname.contains(|c: char| c.is_whitespace() || c == '/' || c == '\0') {
        return bad("ifname contains whitespace, '/' or NUL");
    }
    Ok(())
}

/// Map each requested address to the first set containing it; a set takes at most one.
/// Leftovers (outside every set, or a second address for one set) are an error.
fn assign_requested(
    sets: &[RangeSet],
    requested: &[IpAddr],
) -> Result<Vec<Option<IpAddr>>, IpamError> {
    let mut left: Vec<IpAddr> = Vec::new();
    for ip in requested.iter().map(|i| canonical_ip(*i)) {
        if !left.contains(&ip) {
            left.push(ip);
        }
    }
    let mut out = vec![None; sets.len()];
    for (i, set) in sets.iter().enumerate() {
        if let Some(pos) = left.iter().position(|ip| set.contains(*ip)) {
            out[i] = Some(left.remove(pos));
        }
    }
    if !left.is_empty() {
        return Err(IpamError::RequestedUnassigned { ips: left });
    }
    Ok(out)
}

fn allocate_in_set<L: LockedStore>(
    s: &mut L,
    index: usize,
    pool: &Pool<'_>,
    id: &str,
    ifname: &str,
    wanted: Option<IpAddr>,
) -> Result<Allocation, IpamError> {
    let set = &pool.set;
    let found = |ri: usize, ip: IpAddr| {
        let r = &set.0[ri];
        // Cannot fail (the range holds `ip`, so the families agree), but never aborts either.
        let address = IpNet::new(ip, r.subnet.prefix_len()).map_err(|_| {
            IpamError::config(
                format!("ranges[{index}]"),
                format!("{ip} does not fit subnet {}", r.subnet),
            )
        })?;
        Ok(Allocation {
            address,
            gateway: Some(r.gateway),
            range_set: index,
        })
    };
    if let Some(ip) = wanted {
        // Assigned to this set by containment, so some range holds it.
        let Some(ri) = set.0.iter().position(|r| r.contains(ip)) else {
            return Err(IpamError::RequestedUnassigned { ips: vec![ip] });
        };
        let r = &set.0[ri];
        if ip == r.gateway {
            return Err(IpamError::RequestedGateway { ip });
        }
        if r.is_reserved(ip) {
            return Err(IpamError::RequestedReserved { ip });
        }
        if !s.reserve(id, ifname, ip, index)? {
            return Err(IpamError::RequestedTaken {
                ip,
                range_set: pool.whole.to_string(),
            });
        }
        return found(ri, ip);
    }
    let last = s.last_reserved(index).unwrap_or(None);
    for (ri, ip) in set.candidates(last) {
        if s.reserve(id, ifname, ip, index)? {
            return found(ri, ip);
        }
    }
    Err(match pool.block {
        Some(block) => IpamError::BlockExhausted {
            index,
            block,
            range_set: pool.whole.to_string(),
        },
        None => IpamError::Exhausted {
            index,
            range_set: set.to_string(),
        },
    })
}

/// Release every address of (id, ifname). Idempotent: releasing nothing is success.
pub fn release<S: IpamStore + ?Sized>(
    store: &mut S,
    id: &str,
    ifname: &str,
) -> Result<(), IpamError> {
    locked(store, |s| s.release_owner(id, ifname).map(|_| ()))
}

/// Addresses held by (id, ifname), including ones the reference plugin reserved (for CHECK).
pub fn held_by<S: IpamStore + ?Sized>(
    store: &mut S,
    id: &str,
    ifname: &str,
) -> Result<Vec<IpAddr>, IpamError> {
    locked(store, |s| s.held_by(id, ifname, Lookup::Thorough))
}

/// CNI GC: release every reservation whose (containerID, ifname) is not in `valid`. A
/// reservation in the reference's old format (container ID only) is kept if any valid
/// attachment has that ID. Returns the released addresses, sorted.
pub fn gc<S: IpamStore + ?Sized>(
    store: &mut S,
    valid: &[(String, String)],
) -> Result<Vec<IpAddr>, IpamError> {
    gc_sparing(store, valid, &|_| false)
}

/// [`gc`], also keeping every reservation whose owner `spare` accepts (another front's
/// addresses in a shared directory, which the CNI runtime's list does not name), in the same
/// locked pass.
pub fn gc_sparing<S: IpamStore + ?Sized>(
    store: &mut S,
    valid: &[(String, String)],
    spare: &dyn Fn(&str) -> bool,
) -> Result<Vec<IpAddr>, IpamError> {
    let pairs: HashSet<(&str, &str)> = valid.iter().map(|(i, n)| (i.trim(), n.as_str())).collect();
    let ids: HashSet<&str> = valid.iter().map(|(i, _)| i.trim()).collect();
    let keep = |id: &str, ifname: Option<&str>| {
        spare(id)
            || match ifname {
                Some(n) => pairs.contains(&(id, n)),
                None => ids.contains(id),
            }
    };
    locked(store, |s| {
        let mut released = Vec::new();
        for r in s.reservations()? {
            if !keep(&r.id, r.ifname.as_deref()) && s.release_ip(r.ip)? {
                released.push(r.ip);
            }
        }
        s.forget_unless(&|id, ifname| keep(id, Some(ifname)))?;
        released.sort();
        Ok(released)
    })
}

#[cfg(test)]
#[path = "alloc_tests.rs"]
mod tests;
