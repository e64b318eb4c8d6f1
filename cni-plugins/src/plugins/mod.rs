//! One module per plugin; `by_name` is the multi-call table.

pub mod bandwidth;
pub mod bridge;
pub mod dummy;
pub mod firewall;
pub mod host_device;
pub mod host_local;
pub mod knit;
pub mod loopback;
pub mod macvlan;
pub mod portmap;
pub mod ptp;
pub mod sbr;
mod shared;
pub mod static_ipam;
mod sublink;
pub mod tuning;
pub mod vlan;

use crate::skel::Plugin;

/// Every plugin this binary answers to, under the reference names.
pub const NAMES: &[&str] = &[
    "bandwidth",
    "bridge",
    "dummy",
    "firewall",
    "host-device",
    "host-local",
    "knit",
    "loopback",
    "macvlan",
    "portmap",
    "ptp",
    "sbr",
    "static",
    "tuning",
    "vlan",
];

pub fn by_name(name: &str) -> Option<&'static dyn Plugin> {
    Some(match name {
        "bandwidth" => &bandwidth::Bandwidth,
        "bridge" => &bridge::Bridge,
        "dummy" => &dummy::Dummy,
        "firewall" => &firewall::Firewall,
        "host-device" => &host_device::HostDevice,
        "host-local" => &host_local::HostLocal,
        "knit" => &knit::Knit,
        "loopback" => &loopback::Loopback,
        "macvlan" => &macvlan::Macvlan,
        "portmap" => &portmap::Portmap,
        "ptp" => &ptp::Ptp,
        "sbr" => &sbr::Sbr,
        "static" => &static_ipam::Static,
        "tuning" => &tuning::Tuning,
        "vlan" => &vlan::Vlan,
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
