//! Kernel tests of the tc layer (`libnet::netlink::tc`) in a fresh namespace, read back both
//! through our own dumps and through `tc`. Root only: `cargo test -p libnet --features
//! root-tests --test kernel_tc`.
#![cfg(feature = "root-tests")]

use std::process::Command;

use libnet::netlink::tc::{self, Tbf, HANDLE_INGRESS, HANDLE_INGRESS_PARENT, HANDLE_ROOT};
use libnet::netlink::{Handle, VethPeer};
use libnet::netns::ScratchNs;

fn scratch(tag: &str) -> ScratchNs {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root-tests must run as root"
    );
    ScratchNs::create(&format!("knt-{}-tc{tag}", std::process::id())).expect("create netns")
}

fn tc(ns: &ScratchNs, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "tc"])
        .args(args)
        .output()
        .expect("tc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tbf_ingress_redirect_round_trip() {
    let ns = scratch("tbf");
    let h = Handle::new_in(&ns).unwrap();
    let peer = VethPeer {
        name: "kv1",
        ..Default::default()
    };
    h.add_veth("kv0", None, None, &peer).unwrap();
    h.add_ifb("kifb0", Some(1400)).unwrap();
    let veth = h.link_by_name("kv0").unwrap();
    let ifb = h.link_by_name("kifb0").unwrap();
    assert!(ifb.is_up() && ifb.mtu == 1400 && ifb.txqlen == 0, "{ifb:?}");

    // Above 4 GB/s the rate travels in TCA_TBF_RATE64.
    let fast = Tbf::from_rate_burst(10_000_000_000, 1_000_000, 25_000.0, tc::tick_in_usec());
    h.add_tbf(veth.index, &fast).unwrap();
    let slow = Tbf::from_rate_burst(125_000, 12_500, 25_000.0, tc::tick_in_usec());
    h.add_tbf(ifb.index, &slow).unwrap();
    h.add_ingress_qdisc(veth.index).unwrap();
    h.add_redirect_filter(veth.index, ifb.index).unwrap();

    let qs = h.qdiscs(veth.index).unwrap();
    let root = qs.iter().find(|q| q.parent == HANDLE_ROOT).unwrap();
    assert_eq!((root.kind.as_str(), root.handle), ("tbf", tc::HANDLE_TBF));
    assert_eq!(root.tbf, Some(fast));
    assert!(qs
        .iter()
        .any(|q| q.kind == "ingress" && q.handle == HANDLE_INGRESS));
    let q = h.qdiscs(ifb.index).unwrap();
    assert_eq!(q[0].tbf, Some(slow));
    let f = h.filters(veth.index, HANDLE_INGRESS).unwrap();
    assert!(
        f.iter()
            .any(|f| f.kind == "u32" && f.mirred_to.contains(&ifb.index)),
        "{f:?}"
    );

    let shown = tc(&ns, &["qdisc", "show", "dev", "kv0"]);
    assert!(
        // 100 µs of bucket in whole 64 ns ticks (1562), as tc shows it back.
        shown.contains("rate 80Gbit burst 990000b lat 25ms"),
        "{shown}"
    );
    let shown = tc(&ns, &["qdisc", "show", "dev", "kifb0"]);
    assert!(
        shown.contains("rate 1Mbit burst 12500b lat 25ms"),
        "{shown}"
    );

    // Tolerant deletes: twice each, and on a link without such a qdisc.
    for _ in 0..2 {
        h.del_qdisc(veth.index, HANDLE_INGRESS_PARENT).unwrap();
        h.del_qdisc(veth.index, HANDLE_ROOT).unwrap();
    }
    assert!(h.filters(veth.index, HANDLE_INGRESS).unwrap().is_empty());
    let left = tc(&ns, &["qdisc", "show", "dev", "kv0"]);
    assert!(!left.contains("tbf") && !left.contains("ingress"), "{left}");
    h.del_link_by_name("kifb0").unwrap();
    h.del_link_by_name("kifb0").unwrap();
}

#[test]
fn htb_classes_and_prefix_filters_round_trip() {
    use libnet::netlink::tc::{AddrField, HtbClass, PrefixFilter};
    let ns = scratch("htb");
    let h = Handle::new_in(&ns).unwrap();
    let peer = VethPeer {
        name: "kv3",
        ..Default::default()
    };
    h.add_veth("kv2", None, None, &peer).unwrap();
    let veth = h.link_by_name("kv2").unwrap();
    let root = tc::HANDLE_TBF;
    h.add_htb_qdisc(veth.index, root, 0x30).unwrap();
    let slow = HtbClass {
        handle: root | 0x30,
        parent: root,
        rate: 125_000,
        ceil: 125_000,
        buffer: 6_250,
        cbuffer: 6_250,
        quantum: 1514,
    };
    // Above 4 GB/s rate and ceil travel in TCA_HTB_RATE64/CEIL64.
    let fast = HtbClass {
        handle: root | 1,
        rate: 100_000_000_000,
        ceil: 100_000_000_000,
        ..slow
    };
    h.add_htb_class(veth.index, &slow).unwrap();
    h.add_htb_class(veth.index, &fast).unwrap();
    let filters = [
        ("10.244.50.0/24", AddrField::Src, 16),
        ("fd00:6b6e:0:50::/64", AddrField::Dst, 15),
    ]
    .map(|(net, field, priority)| PrefixFilter {
        net: net.parse().unwrap(),
        field,
        class_id: root | 1,
        priority,
    });
    for f in &filters {
        h.add_prefix_filter(veth.index, root, f).unwrap();
    }

    let q = h.qdiscs(veth.index).unwrap();
    let q = q.iter().find(|q| q.parent == HANDLE_ROOT).unwrap();
    assert_eq!(
        (q.kind.as_str(), q.handle, q.htb_default),
        ("htb", root, Some(0x30))
    );
    let mut classes = h.htb_classes(veth.index).unwrap();
    classes.sort_by_key(|c| c.handle);
    // The kernel reports a class right under the qdisc with the parent `root`.
    let under_root = |c: HtbClass| HtbClass {
        parent: HANDLE_ROOT,
        ..c
    };
    assert_eq!(classes, vec![under_root(fast), under_root(slow)]);
    let got = h.filters(veth.index, root).unwrap();
    for f in &filters {
        assert!(
            got.iter().any(|g| g.protocol == f.protocol()
                && g.priority == f.priority
                && g.class_id == Some(f.class_id)
                && g.keys == f.keys()),
            "{f:?} in {got:?}"
        );
    }
    let shown = tc(&ns, &["class", "show", "dev", "kv2"]);
    assert!(
        shown.contains("class htb 1:30 root prio 0 rate 1Mbit ceil 1Mbit"),
        "{shown}"
    );
    assert!(
        shown.contains("class htb 1:1 root prio 0 rate 800Gbit"),
        "{shown}"
    );
    let shown = tc(&ns, &["filter", "show", "dev", "kv2", "parent", "1:"]);
    assert!(shown.contains("match 0af43200/ffffff00 at 12"), "{shown}");
    assert!(shown.contains("match 00000050/ffffffff at 28"), "{shown}");

    h.del_qdisc(veth.index, HANDLE_ROOT).unwrap();
    assert!(h.htb_classes(veth.index).unwrap().is_empty());
}
