//! One module per plugin; `by_name` is the multi-call table.

pub mod bandwidth;
pub mod bridge;
pub mod firewall;
pub mod host_local;
pub mod loopback;
pub mod portmap;
pub mod static_ipam;
pub mod tuning;

use crate::skel::Plugin;

/// Every plugin this binary answers to, under the reference names.
pub const NAMES: &[&str] = &[
    "bandwidth",
    "bridge",
    "firewall",
    "host-local",
    "loopback",
    "portmap",
    "static",
    "tuning",
];

pub fn by_name(name: &str) -> Option<&'static dyn Plugin> {
    Some(match name {
        "bandwidth" => &bandwidth::Bandwidth,
        "bridge" => &bridge::Bridge,
        "firewall" => &firewall::Firewall,
        "host-local" => &host_local::HostLocal,
        "loopback" => &loopback::Loopback,
        "portmap" => &portmap::Portmap,
        "static" => &static_ipam::Static,
        "tuning" => &tuning::Tuning,
        _ => return None,
    })
}

/// The IPAM types that run inside the calling plugin instead of as a second process.
pub fn in_process_ipam(ty: &str) -> Option<&'static dyn Plugin> {
    match ty {
        "static" => Some(&static_ipam::Static),
        "host-local" => Some(&host_local::HostLocal),
        _ => None,
    }
}
