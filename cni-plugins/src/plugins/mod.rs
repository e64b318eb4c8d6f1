//! One module per plugin; `by_name` is the multi-call table.

pub mod bridge;
pub mod loopback;
pub mod static_ipam;
pub mod tuning;

use crate::skel::Plugin;

/// Every plugin this binary answers to, under the reference names.
pub const NAMES: &[&str] = &["bridge", "loopback", "static", "tuning"];

pub fn by_name(name: &str) -> Option<&'static dyn Plugin> {
    Some(match name {
        "bridge" => &bridge::Bridge,
        "loopback" => &loopback::Loopback,
        "static" => &static_ipam::Static,
        "tuning" => &tuning::Tuning,
        _ => return None,
    })
}

/// The IPAM types that run inside the calling plugin instead of as a second process.
pub fn in_process_ipam(ty: &str) -> Option<&'static dyn Plugin> {
    match ty {
        "static" => Some(&static_ipam::Static),
        _ => None,
    }
}
