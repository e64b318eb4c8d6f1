//! The store the allocator drives: reservations keyed by address, owned by an attachment
//! (containerID, ifname). [`super::FileStore`] is the real one; `FakeStore` (tests only) keeps
//! everything in memory and counts its locks.

use super::IpamError;
use std::net::IpAddr;

/// How hard [`IpamStore::held_by`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Constant cost (ADD's duplicate check): the store's own index only.
    Fast,
    /// Also finds reservations made by other writers (CHECK): may scan every reservation.
    Thorough,
}

/// One reservation as found in the store. `ifname` is `None` for the reference's old format,
/// which stored the container ID only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub ip: IpAddr,
    pub id: String,
    pub ifname: Option<String>,
}

/// Reservations of one network, behind the network's exclusive lock. The only way to read or
/// change reservations is through the guard [`lock`](IpamStore::lock) returns, so a call
/// without the lock does not compile (the functions in [`super::alloc`] take it once per call).
/// A backend is a pair: the store (an open handle, or a client of a shared database) and its
/// guard (the held flock, or a lease/transaction).
///
/// Reserving without the lock, or after giving it back, does not compile:
/// ```compile_fail
/// use libnet::ipam::{FileStore, IpamStore, LockedStore};
/// fn add(s: &mut FileStore) -> Result<(), libnet::ipam::IpamError> {
///     let mut g = s.lock()?;
///     g.unlock()?;
///     g.reserve("c1", "eth0", "10.244.0.2".parse().unwrap(), 0)?; // `g` was moved by unlock
///     Ok(())
/// }
/// ```
/// ```compile_fail
/// use libnet::ipam::{FileStore, LockedStore};
/// fn add(s: &mut FileStore) {
///     let _ = LockedStore::reserve(s, "c1", "eth0", "10.244.0.2".parse().unwrap(), 0);
/// }
/// ```
pub trait IpamStore {
    /// The held lock; dropping it releases the lock, [`LockedStore::unlock`] also reports
    /// whether finishing (bookkeeping, the release itself) failed.
    type Locked<'a>: LockedStore
    where
        Self: 'a;

    /// Take the network's exclusive lock (blocks until it is free).
    fn lock(&mut self) -> Result<Self::Locked<'_>, IpamError>;
}

/// Reservations under the lock: what [`IpamStore::lock`] hands out.
pub trait LockedStore {
    /// Reserve `ip` for (id, ifname) and remember it as the last one of `range_set`.
    /// `Ok(false)` when the address is already reserved.
    fn reserve(
        &mut self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        range_set: usize,
    ) -> Result<bool, IpamError>;
    /// Reserve `ip` for (id, ifname) without moving any range set's round robin: an address
    /// chosen by hand, such as a service's virtual address, must not make the next allocation
    /// resume after it (and hand out at once an address just freed). `Ok(false)` when taken.
    fn reserve_fixed(&mut self, id: &str, ifname: &str, ip: IpAddr) -> Result<bool, IpamError>;
    /// The last address reserved in `range_set`, if known (unreadable counts as unknown).
    fn last_reserved(&mut self, range_set: usize) -> Result<Option<IpAddr>, IpamError>;
    fn held_by(&mut self, id: &str, ifname: &str, how: Lookup) -> Result<Vec<IpAddr>, IpamError>;
    /// Drop one reservation whoever holds it; `Ok(false)` if there was none.
    fn release_ip(&mut self, ip: IpAddr) -> Result<bool, IpamError>;
    /// Drop every reservation of (id, ifname), tolerating none; returns what was released.
    fn release_owner(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError>;
    /// Every reservation of the network (GC; may scan).
    fn reservations(&mut self) -> Result<Vec<Reservation>, IpamError>;
    /// Housekeeping after GC: forget bookkeeping of attachments `keep` rejects.
    fn forget_unless(&mut self, _keep: &dyn Fn(&str, &str) -> bool) -> Result<(), IpamError> {
        Ok(())
    }
    /// Finish the locked operation and release the lock, reporting what failed. Dropping the
    /// guard does the same and ignores errors (an flock also dies with the process).
    fn unlock(self) -> Result<(), IpamError>
    where
        Self: Sized;
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    /// In-memory store; counts locks and records whether one is held.
    #[derive(Debug, Default)]
    pub struct FakeStore {
        pub ips: BTreeMap<IpAddr, (String, String)>,
        pub last: HashMap<usize, IpAddr>,
        pub locked: bool,
        pub lock_count: usize,
        /// Reservation attempts, taken or not (to check the walk's cost).
        pub attempts: usize,
    }

    /// The fake's guard: clears `locked` on unlock or drop.
    #[derive(Debug)]
    pub struct FakeLocked<'a>(&'a mut FakeStore);

    impl IpamStore for FakeStore {
        type Locked<'a> = FakeLocked<'a>;

        fn lock(&mut self) -> Result<FakeLocked<'_>, IpamError> {
            assert!(!self.locked, "lock taken twice");
            self.locked = true;
            self.lock_count += 1;
            Ok(FakeLocked(self))
        }
    }

    impl Drop for FakeLocked<'_> {
        fn drop(&mut self) {
            self.0.locked = false;
        }
    }

    impl LockedStore for FakeLocked<'_> {
        fn reserve(
            &mut self,
            id: &str,
            ifn: &str,
            ip: IpAddr,
            set: usize,
        ) -> Result<bool, IpamError> {
            let s = &mut *self.0;
            s.attempts += 1;
            if s.ips.contains_key(&ip) {
                return Ok(false);
            }
            s.ips.insert(ip, (id.trim().to_string(), ifn.to_string()));
            s.last.insert(set, ip);
            Ok(true)
        }
        fn reserve_fixed(&mut self, id: &str, ifn: &str, ip: IpAddr) -> Result<bool, IpamError> {
            let s = &mut *self.0;
            if s.ips.contains_key(&ip) {
                return Ok(false);
            }
            s.ips.insert(ip, (id.trim().to_string(), ifn.to_string()));
            Ok(true)
        }
        fn last_reserved(&mut self, set: usize) -> Result<Option<IpAddr>, IpamError> {
            Ok(self.0.last.get(&set).copied())
        }
        fn held_by(&mut self, id: &str, ifn: &str, _: Lookup) -> Result<Vec<IpAddr>, IpamError> {
            let owner = (id.trim().to_string(), ifn.to_string());
            Ok(self
                .0
                .ips
                .iter()
                .filter(|(_, o)| **o == owner)
                .map(|(ip, _)| *ip)
                .collect())
        }
        fn release_ip(&mut self, ip: IpAddr) -> Result<bool, IpamError> {
            Ok(self.0.ips.remove(&ip).is_some())
        }
        fn release_owner(&mut self, id: &str, ifn: &str) -> Result<Vec<IpAddr>, IpamError> {
            let ips = self.held_by(id, ifn, Lookup::Thorough)?;
            for ip in &ips {
                self.0.ips.remove(ip);
            }
            Ok(ips)
        }
        fn reservations(&mut self) -> Result<Vec<Reservation>, IpamError> {
            Ok(self
                .0
                .ips
                .iter()
                .map(|(ip, (id, ifn))| Reservation {
                    ip: *ip,
                    id: id.clone(),
                    ifname: Some(ifn.clone()),
                })
                .collect())
        }
        fn unlock(self) -> Result<(), IpamError> {
            Ok(())
        }
    }
}
