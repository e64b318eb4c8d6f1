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
//! - [`alloc`] (re-exported here as [`allocate`], [`release`], [`held_by`], [`gc`]) drives an
//!   [`IpamStore`] under the store's lock. It never touches the filesystem itself.
//! - [`file_store`] is the on-disk store, byte-compatible with the reference so a node can switch
//!   between the reference and knit without conflicts:
//!   `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`, `last_reserved_ip.<set>` holds
//!   the last address handed out in that set, and `lock` is `flock(LOCK_EX)`ed around every
//!   allocate/release/GC (the reference takes the same lock, so the two serialise).
//!
//! # Why ADD is O(1) in the number of reservations
//!
//! The reference scans (reads every file of) the network directory on every ADD to refuse a
//! duplicate allocation for the same (containerID, ifname), and on every DEL. knit keeps an index
//! `(containerID, ifname) → addresses` in `<dataDir>/.knit-ipam/<network>/`, one small file per
//! attachment. It sits *outside* the network directory, because the reference walks that
//! directory recursively and would read an index file as a reservation. (CNI network names may
//! not start with a dot, so `.knit-ipam` cannot be a network.)
//!
//! The index is only a hint; the reservation files stay the truth:
//! - every address read from the index is verified against `<network>/<ip>` (its content must
//!   name the same owner) before it is used, so stale entries (e.g. the reference released the
//!   address) are harmless;
//! - the entry is written *before* the reservation file, so a crash can leave an index entry
//!   without a reservation (filtered out by verification), never a reservation knit cannot find;
//! - DEL and CHECK whose index entry is missing or verifies to nothing fall back to a directory
//!   scan with the reference's matching rules, so reservations made by the reference plugin (or
//!   by its pre-ifname format, which holds the container ID only) are still found and released;
//! - ADD's duplicate check trusts the index alone (that is what keeps it O(1)); the one thing it
//!   cannot see is a duplicate ADD for an attachment the *reference* plugin made and never DELeted.
//!
//! An ADD therefore costs a constant number of small file operations: read the index entry and
//! `last_reserved_ip.<n>`, `stat` the candidate, write the index entry (in place, not synced: it
//! is a hint), write the reservation (a temp file in the index dir, `fsync`, then `link(2)` into
//! place so it appears whole or not at all and never replaces someone else's), overwrite
//! `last_reserved_ip.<n>` in place as the reference does, and `fsync` the directory. Candidates
//! that are taken cost one `stat` each, as in the reference's round robin. Files that already
//! hold data are overwritten from offset 0 and cut to length, never truncated to zero or renamed
//! over: on ext4 both force a data flush (`auto_da_alloc`) that made ADD slower as the journal
//! got busier. Measured here (ext4, shared disk): ~1.5-2.5 ms per ADD (two journal commits),
//! the median of ADDs 901-1000 at 0.7-1.0x that of ADDs 1-100.
//!
//! Locking: [`allocate`], [`release`], [`held_by`] and [`gc`] take the network's flock
//! themselves, once per call (the reference takes it once per range set).

pub mod alloc;
pub mod config;
pub mod file_store;
pub mod range;
pub mod store;

#[cfg(test)]
mod file_store_tests;
#[cfg(all(test, feature = "root-tests"))]
mod reference_tests;

pub use alloc::{allocate, gc, held_by, release, Allocation};
pub use config::{parse_resolv_conf, read_resolv_conf, requested_ips, Dns, IpamConfig, Route};
pub use file_store::FileStore;
pub use range::{Range, RangeSet};
pub use store::{IpamStore, Lookup, Reservation};

use crate::error::{HasKind, Kind};
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
            | IpamError::RequestedUnassigned { .. } => Kind::Invalid,
            IpamError::RequestedTaken { .. } | IpamError::Duplicate { .. } => Kind::Exists,
            IpamError::Exhausted { .. } => Kind::Busy,
            IpamError::Io { source, .. } => HasKind::kind(source),
        }
    }
}
