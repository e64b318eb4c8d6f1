//! Scratch namespaces for libnet's kernel tests: unique names, root asserted (never skipped),
//! deleted when dropped.
// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use libnet::netlink::Handle;
use libnet::netns::ScratchNs;

/// `knt-<pid>-<tag><n>`: unique per test process and call.
pub fn uniq(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "knt-{}-{tag}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct TestNs {
    pub name: String,
    pub ns: ScratchNs,
}

impl TestNs {
    /// A fresh named namespace with `lo` up.
    pub fn new(tag: &str) -> TestNs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "root-tests must run as root"
        );
        let name = uniq(tag);
        let ns = ScratchNs::create(&name).expect("create netns");
        let h = Handle::new_in(&ns).expect("netlink socket in the new netns");
        let lo = h.link_by_name("lo").expect("lo");
        h.set_up(lo.index, true).expect("lo up");
        TestNs { name, ns }
    }
}
