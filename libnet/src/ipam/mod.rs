//! IPAM for knit's `host-local` plugin: a drop-in for the reference host-local (plugins 1.1.1).
//!
//! # Design note
//!
//! Layers, pure first:
//! - [`config`] parses the `ipam` JSON object and canonicalises it exactly like the reference
//!   (defaults for rangeStart/rangeEnd/gateway, /31 and /32 rejected, overlaps rejected), naming
//!   the offending field in every error.
//! - [`range`] is range math over `u128` addresses: containment, overlap, and the round-robin
//!   candidate walk (from `last_reserved_ip + 1`, wrapping across the ranges of a set, skipping
//!   the gateway, the network address and the IPv4 broadcast address).
//! - [`alloc`] (re-exported here as [`allocate`], [`allocate_in_blocks`], [`release`],
//!   [`held_by`], [`gc`]) drives an [`IpamStore`] under the store's lock. It never touches the
//!   filesystem itself. [`allocate_in_blocks`] confines a range set to a block the caller
//!   leased (the overlay's per-host block of the network, from etcd) while the network's
//!   gateway, network and broadcast rules still apply.
//! - [`store`] is the backend seam: [`IpamStore::lock`] returns a guard ([`LockedStore`]) that
//!   is the only way to reserve, look up or release, and releases the lock when dropped.
//! - [`file_store`] is the on-disk store, byte-compatible with the reference so a node can switch
//!   between the reference and knit without conflicts:
//!   `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`, `last_reserved_ip.<set>` holds
//!   the last address handed out in that set, and `lock` is `flock(LOCK_EX)`ed around every
//!   allocate/release/GC (the reference takes the same lock, so the two serialise).
//!
//! # Why ADD is O(1) in the number of reservations
//!
//! The reference scans (reads every file of) the network directory on every ADD to refuse a
//! duplicate allocation for the same (containerID, ifname), and on every DEL and CHECK. knit
//! keeps an index `(containerID, ifname) → addresses` in `<dataDir>/.knit-ipam/<network>/`, one
//! small file per attachment (`<bucket>/o.<id>@<ifname>`, 256 buckets). It sits *outside* the
//! network directory, because the reference walks that directory recursively and would read an
//! index file as a reservation. (CNI network names may not start with a dot, so `.knit-ipam`
//! cannot be a network; knit rejects such names.)
//!
//! The reservation files stay the truth; the index is checked against them:
//! - every address read from the index is verified against `<network>/<ip>` (its content must
//!   name the same owner) before it is used, so stale entries (e.g. the reference released the
//!   address) are harmless;
//! - the entry is written *before* the reservation file, so a crash can leave an index entry
//!   without a reservation (filtered out by verification), never the other way round;
//! - completeness is proven by a stamp: at the end of every locked operation knit records the
//!   network directory's inode, mtime and ctime and the content of `last_reserved_ip.0/.1`
//!   (the reference rewrites one of those on every successful ADD, whatever the timestamp
//!   granularity). When the next lock finds the same state, nobody else reserved anything in
//!   between and the index alone answers ADD's duplicate check, DEL and CHECK. When it differs
//!   (the reference plugin ran, or a knit crashed mid-way), the index is rebuilt from one scan
//!   under the lock, so reservations made by the reference are found, refused as duplicates and
//!   released like knit's own. The cost of a switch from the reference is one scan, once.
//! - if the directory holds reservations in the reference's old format (container ID only,
//!   nothing to key by) the index is not trusted and DEL/CHECK scan with the reference's
//!   matching rules, as the reference does.
//!
//! Known limit: on a kernel or filesystem without fine-grained (multigrain) directory
//! timestamps, a reference ADD in the same clock tick as knit's last change *and* landing on
//! the same address as knit's last `last_reserved_ip` would go unnoticed until the next change.
//!
//! An ADD therefore costs a constant number of small file operations: `fstat` the directory and
//! read the stamp, the index entry and `last_reserved_ip.<n>`, `stat` the candidate, write the
//! index entry (in place, not synced: it is checked anyway), write the reservation (a temp file
//! in the index dir, `link(2)` into place so it appears whole or not at all and never replaces
//! someone else's, then ONE `fsync` of that inode, which commits its data and the new name in
//! the same journal transaction), overwrite `last_reserved_ip.<n>` in place as the reference
//! does (a hint, not synced), update the stamp. Taken candidates cost one `stat` each, as in
//! the reference's round robin. Files that already hold data are overwritten from offset 0 and
//! cut to length, never truncated to zero or renamed over: on ext4 both force a data flush
//! (`auto_da_alloc`). The one `fsync` (a disk cache flush, ~4 ms on this VM's disk) dominates;
//! ~0.1 ms on tmpfs; the same with 1 or 1,000 reservations (`add_cost_*` tests, `--ignored`).
//! DEL removes the file and fsyncs the directory once.
//!
//! Locking: [`allocate`], [`release`], [`held_by`] and [`gc`] take the network's flock
//! themselves, once per call (the reference takes it once per range set), through the guard
//! [`FileLocked`]; the guard's unlock (or drop) writes the stamp, then releases the flock.

pub mod alloc;
pub mod config;
pub mod file_store;
mod index;
pub mod range;
pub mod store;

#[cfg(test)]
mod file_store_tests;
#[cfg(all(test, feature = "root-tests"))]
mod reference_tests;

pub use alloc::{allocate, allocate_in_blocks, gc, gc_sparing, held_by, release, Allocation};
pub use config::{parse_resolv_conf, read_resolv_conf, requested_ips, Dns, IpamConfig, Route};
pub use file_store::{FileLocked, FileStore, Unsynced};
pub use range::{Range, RangeSet};
pub use store::{IpamStore, LockedStore, Lookup, Reservation};

use crate::error::{HasKind, Kind};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::PathBuf;

/// Everything IPAM can fail with; each variant names the object that failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The `ipam` configuration is wrong; `field` is a JSON path such as `ranges[0][1].rangeEnd`.
    #[error("invalid ipam config: {field}: {reason}")]
    Config { field: String, reason: String },
    #[error("invalid attachment ({id:?}, {ifname:?}): {reason}")]
    Attachment {
        id: String,
        ifname: String,
        reason: &'static str,
    },
    #[error("invalid network name {name:?}: {reason}")]
    NetworkName { name: String, reason: &'static str },
    #[error("requested IP address {ip} is not available in range set {range_set}")]
    RequestedTaken { ip: IpAddr, range_set: String },
    #[error("requested ip {ip} is subnet's gateway")]
    RequestedGateway { ip: IpAddr },
    #[error("requested ip {ip} is the network or broadcast address of its subnet")]
    RequestedReserved { ip: IpAddr },
    #[error("failed to allocate all requested IPs: {}", join_ips(.ips))]
    RequestedUnassigned { ips: Vec<IpAddr> },
    #[error("{ip} has been allocated to {id}, duplicate allocation is not allowed")]
    Duplicate {
        ip: IpAddr,
        id: String,
        ifname: String,
    },
    #[error("no IP addresses available in range set: {range_set}")]
    Exhausted { index: usize, range_set: String },
    /// The leased block is full (its range set may not be): lease another block.
    #[error("no IP addresses available in block {block} of range set {range_set}")]
    BlockExhausted {
        index: usize,
        block: IpNet,
        range_set: String,
    },
    #[error("invalid block {block}: {reason}")]
    Block { block: IpNet, reason: &'static str },
    #[error("ipam {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl IpamError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        IpamError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IpamError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl HasKind for IpamError {
    fn kind(&self) -> Kind {
        match self {
            IpamError::Config { .. }
            | IpamError::NetworkName { .. }
            | IpamError::Attachment { .. }
            | IpamError::RequestedGateway { .. }
            | IpamError::RequestedReserved { .. }
            | IpamError::RequestedUnassigned { .. }
            | IpamError::Block { .. } => Kind::Invalid,
            IpamError::RequestedTaken { .. } | IpamError::Duplicate { .. } => Kind::Exists,
            IpamError::Exhausted { .. } | IpamError::BlockExhausted { .. } => Kind::Busy,
            IpamError::Io { source, .. } => HasKind::kind(source),
        }
    }
}
