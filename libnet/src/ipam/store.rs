//! The store the allocator drives: reservations keyed by address, owned by an attachment
//! (containerID, ifname). [`super::FileStore`] is the real one; `FakeStore` (tests only) keeps
//! everything in memory and records lock discipline.

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

/// Reservations of one network. Callers hold [`lock`](IpamStore::lock) around every sequence of
/// calls (the functions in [`super::alloc`] do); the other methods assume it is held.
pub trait IpamStore {
    /// Take the network's exclusive lock (blocks until it is free).
    fn lock(&mut self) -> Result<(), IpamError>;
    fn unlock(&mut self) -> Result<(), IpamError>;
    /// Reserve `ip` for (id, ifname) and remember it as the last one of `range_set`.
    /// `Ok(false)` when the address is already reserved.
    fn reserve(
        &mut self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        range_set: usize,
    ) -> Result<bool, IpamError>;
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
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    /// In-memory store; panics on calls made without the lock.
    #[derive(Debug, Default)]
    pub struct FakeStore {
        pub ips: BTreeMap<IpAddr, (String, String)>,
        pub last: HashMap<usize, IpAddr>,
        pub locked: bool,
        pub lock_count: usize,
        /// Reservation attempts, taken or not (to check the walk's cost).
        pub attempts: usize,
    }

    impl FakeStore {
        fn held(&self) {
            assert!(self.locked, "store used without its lock");
        }
    }

    impl IpamStore for FakeStore {
        fn lock(&mut self) -> Result<(), IpamError> {
            assert!(!self.locked, "lock taken twice");
            self.locked = true;
            self.lock_count += 1;
            Ok(())
        }
        fn unlock(&mut self) -> Result<(), IpamError> {
            assert!(self.locked, "unlock without lock");
            self.locked = false;
            Ok(())
        }
        fn reserve(
            &mut self,
            id: &str,
            ifn: &str,
            ip: IpAddr,
            set: usize,
        ) -> Result<bool, IpamError> {
            self.held();
            self.attempts += 1;
            if self.ips.contains_key(&ip) {
                return Ok(false);
            }
            self.ips
                .insert(ip, (id.trim().to_string(), ifn.to_string()));
            self.last.insert(set, ip);
            Ok(true)
        }
        fn last_reserved(&mut self, set: usize) -> Result<Option<IpAddr>, IpamError> {
            self.held();
            Ok(self.last.get(&set).copied())
        }
        fn held_by(&mut self, id: &str, ifn: &str, _: Lookup) -> Result<Vec<IpAddr>, IpamError> {
            self.held();
            let owner = (id.trim().to_string(), ifn.to_string());
            Ok(self
                .ips
                .iter()
                .filter(|(_, o)| **o == owner)
                .map(|(ip, _)| *ip)
                .collect())
        }
        fn release_ip(&mut self, ip: IpAddr) -> Result<bool, IpamError> {
            self.held();
            Ok(self.ips.remove(&ip).is_some())
        }
        fn release_owner(&mut self, id: &str, ifn: &str) -> Result<Vec<IpAddr>, IpamError> {
            let ips = self.held_by(id, ifn, Lookup::Thorough)?;
            for ip in &ips {
                self.ips.remove(ip);
            }
            Ok(ips)
        }
        fn reservations(&mut self) -> Result<Vec<Reservation>, IpamError> {
            self.held();
            Ok(self
                .ips
                .iter()
                .map(|(ip, (id, ifn))| Reservation {
                    ip: *ip,
                    id: id.clone(),
                    ifname: Some(ifn.clone()),
                })
                .collect())
        }
    }
}
