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

impl TestNs {
    /// Run a shell command inside the namespace; panic on failure.
    pub fn sh(&self, cmd: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The objects of `nft -j list table FAMILY knit`.
    pub fn knit_objects(&self, family: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&self.sh(&format!("nft -j list table {family} knit"))).unwrap();
        v["nftables"].as_array().unwrap().clone()
    }

    /// Elements of one set or map of `FAMILY knit` (JSON values, comments included).
    pub fn knit_elems(&self, family: &str, set: &str) -> Vec<serde_json::Value> {
        self.knit_objects(family)
            .iter()
            .filter_map(|o| o.get("set").or_else(|| o.get("map")))
            .filter(|s| s["name"] == set)
            .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// A state directory for the nft layer's records, removed when dropped.
pub struct TmpDir(pub std::path::PathBuf);

impl TmpDir {
    pub fn new() -> TmpDir {
        let p = std::env::temp_dir().join(uniq("state"));
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
}

impl TmpDir {
    /// The state files of attachment `a`.
    pub fn files_of(&self, a: &libnet::nft::Attachment) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(&a.id()))
            .collect()
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real nft layer (libnftables + nfnetlink) keeping its records in `dir`.
pub fn nft(dir: &TmpDir) -> libnet::nft::Nft<libnet::nft::LibNft> {
    libnet::nft::Nft::with(
        libnet::nft::LibNft::new(),
        libnet::nft::StateDir::new(&dir.0),
    )
}

/// The attachment of container `cid` on the tests' network, interface eth0.
pub fn att(cid: &str) -> libnet::nft::Attachment {
    libnet::nft::Attachment::new("knt-net", cid, "eth0")
}
