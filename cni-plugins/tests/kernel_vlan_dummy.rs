//! Kernel tests of `vlan` and `dummy`. Each first probes its link type by creating one in a
//! throwaway namespace (never by reading the kernel config). When the kernel lacks it, the
//! full test is NOT RUN and says so on stderr (written past the test harness's capture) and
//! in a summary line; what still runs is the failure path: ADD fails with a spec error and
//! leaves nothing behind, addresses included. Root only:
//! `cargo test -p cni-plugins --features root-tests --test kernel_vlan_dummy`.
#![cfg(feature = "root-tests")]

mod common;

use std::io::Write;

use common::*;
use libnet::netlink::link::NewLink;
use libnet::netlink::Handle;
use libnet::netns::ScratchNs;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vlan,
    Dummy,
}

impl Kind {
    fn config(self) -> &'static str {
        match self {
            Kind::Vlan => "CONFIG_VLAN_8021Q",
            Kind::Dummy => "CONFIG_DUMMY",
        }
    }
}

/// Make one link of `kind` in a throwaway namespace: `Ok(false)` when the kernel says it has
/// no such link type.
fn kernel_has(kind: Kind) -> bool {
    let ns = scratch("probe");
    let h = Handle::new_in(&ns).unwrap();
    let l = NewLink {
        name: "kntprobe",
        ..Default::default()
    };
    let r = match kind {
        Kind::Vlan => {
            ip(
                &ns,
                &["link", "add", "p0", "type", "veth", "peer", "name", "p1"],
            );
            let p0 = h.link_by_name("p0").unwrap();
            h.add_vlan(&l, p0.index, 7)
        }
        Kind::Dummy => h.add_dummy(&l),
    };
    match r {
        Ok(()) => true,
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => false,
        Err(e) => panic!("probing {kind:?}: unexpected error {e}"),
    }
}

fn loud(line: &str) {
    // std::io::stderr() is not captured by the test harness (only eprintln! is).
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn vlan_conf(addr: &str) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "knt-vlan", "type": "vlan", "master": "kvl0",
        "vlanId": 42, "mtu": 1400,
        "ipam": {"type": "static", "addresses": [{"address": addr, "gateway": "10.244.70.1"}]}
    })
}

fn dummy_conf() -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "knt-dummy", "type": "dummy",
        "ipam": {"type": "static", "addresses": [{"address": "10.244.71.2/24"}],
            "routes": [{"dst": "10.244.97.0/24"}]}
    })
}

fn host_for(kind: Kind) -> ScratchNs {
    let host = scratch("h");
    if kind == Kind::Vlan {
        ip(
            &host,
            &[
                "link", "add", "kvl0", "type", "veth", "peer", "name", "kvl0p",
            ],
        );
        ip(&host, &["link", "set", "kvl0", "up"]);
    }
    host
}

fn plugin_and_conf(kind: Kind) -> (&'static str, Value) {
    match kind {
        Kind::Vlan => ("vlan", vlan_conf("10.244.70.2/24")),
        Kind::Dummy => ("dummy", dummy_conf()),
    }
}

/// The whole life of an attachment, for a kernel that has the link type.
fn full_test(kind: Kind) {
    let host = host_for(kind);
    let ctr = scratch("c");
    let n = ctr.path().display().to_string();
    let (plugin, conf) = plugin_and_conf(kind);
    let id = cid(plugin);
    let host_before = links(&host);
    let (code, res) = call(&host, plugin, "ADD", &id, &n, "eth0", &conf);
    assert_eq!(code, 0, "{res}");
    assert_eq!(links(&host), host_before, "nothing new in the host");
    let c = Handle::new_in(&ctr).unwrap();
    let eth0 = c.link_by_name("eth0").unwrap();
    assert_eq!(eth0.kind.as_deref(), Some(plugin));
    assert!(eth0.is_up());
    if kind == Kind::Vlan {
        assert_eq!((eth0.vlan_id, eth0.mtu), (Some(42), 1400));
    }
    let checked = with_prev(&conf, &res);
    let (code, out) = call(&host, plugin, "CHECK", &id, &n, "eth0", &checked);
    assert_eq!(code, 0, "{out}");
    c.del_addr(
        eth0.index,
        res["ips"][0]["address"].as_str().unwrap().parse().unwrap(),
    )
    .unwrap();
    assert_check_fails(&host, plugin, &id, &n, &checked, "is missing");
    let (code, out) = call(&host, plugin, "DEL", &id, &n, "eth0", &checked);
    assert_eq!(code, 0, "{out}");
    assert_eq!(links(&ctr), vec!["lo".to_string()]);
    let (code, out) = call(&host, plugin, "DEL", &id, &n, "eth0", &checked);
    assert_eq!(code, 0, "DEL is idempotent: {out}");
    let (code, out) = call(&host, plugin, "DEL", &id, "", "eth0", &checked);
    assert_eq!(code, 0, "DEL without a netns: {out}");
}

/// On a kernel without the link type: ADD fails with a spec error and leaves nothing.
fn failure_path(kind: Kind) {
    let host = host_for(kind);
    let ctr = scratch("c");
    let n = ctr.path().display().to_string();
    let data = std::env::temp_dir().join(format!("knt-vd-{}-{kind:?}", std::process::id()));
    let (plugin, mut conf) = plugin_and_conf(kind);
    conf["ipam"] = json!({"type": "host-local", "dataDir": data, "subnet": "10.244.72.0/24"});
    let host_before = links(&host);
    let (code, out) = call(&host, plugin, "ADD", &cid(plugin), &n, "eth0", &conf);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert_eq!(links(&host), host_before);
    assert_eq!(links(&ctr), vec!["lo".to_string()]);
    let net_dir = data.join(conf["name"].as_str().unwrap());
    let leases = std::fs::read_dir(&net_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leases, 0, "the address was given back");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn vlan_and_dummy_in_the_kernel() {
    let mut ran = Vec::new();
    let mut not_run = Vec::new();
    for kind in [Kind::Vlan, Kind::Dummy] {
        if kernel_has(kind) {
            full_test(kind);
            ran.push(format!("{kind:?}"));
        } else {
            loud(&format!(
                "NOT RUN: {kind:?} plugin kernel test: kernel lacks {} (probed in a throwaway netns); ran its failure path instead",
                kind.config()
            ));
            failure_path(kind);
            not_run.push(format!("{kind:?}: kernel lacks {}", kind.config()));
        }
    }
    loud(&format!(
        "kernel_vlan_dummy summary: {} run [{}], {} NOT RUN [{}]",
        ran.len(),
        ran.join(", "),
        not_run.len(),
        not_run.join("; ")
    ));
}
