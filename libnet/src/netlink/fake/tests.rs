//! Unit tests of the fake: it must answer like the kernel for the planner tests to mean anything.

use super::*;
use crate::error::{HasKind, Kind};
use crate::netlink::link::VXLAN_PORT;
use crate::netlink::ops::{plan_fdb, sync_fdb, FdbPlan};
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vx() -> Vxlan {
    Vxlan {
        vni: 1,
        local: Some(ip("10.0.0.1")),
        port: VXLAN_PORT,
        learning: false,
        link: None,
    }
}

fn nl(name: &str) -> NewLink<'_> {
    NewLink {
        name,
        ..Default::default()
    }
}

#[test]
fn links_behave_like_the_kernel() {
    let f = FakeNetlink::new();
    assert_eq!(f.find_link("lo").unwrap().unwrap().index, 1);
    f.add_bridge("br0", Some(1400), None).unwrap();
    f.add_vxlan(&nl("vx0"), &vx()).unwrap();
    let err = f.add_bridge("br0", None, None).unwrap_err();
    assert_eq!(err.kind(), Kind::Exists);
    let br = f.find_link("br0").unwrap().unwrap();
    let vxl = f.find_link("vx0").unwrap().unwrap();
    assert_eq!(vxl.vxlan, Some(vx()));
    assert_eq!(br.mtu, 1400);

    // Port flags need a bridge port.
    let flags = BrportFlags {
        learning: Some(false),
        neigh_suppress: Some(true),
    };
    assert_eq!(
        f.set_brport_flags(vxl.index, &flags).unwrap_err().errno(),
        Some(libc::EOPNOTSUPP)
    );
    f.set_master(vxl.index, br.index).unwrap();
    f.set_brport_flags(vxl.index, &flags).unwrap();
    f.set_up(vxl.index, true).unwrap();
    let vxl = f.find_link_index(vxl.index).unwrap().unwrap();
    assert_eq!(vxl.learning, Some(false));
    assert_eq!(vxl.neigh_suppress, Some(true));
    assert!(vxl.is_up());
    // Only a bridge can be a master.
    assert_eq!(
        f.set_master(br.index, vxl.index).unwrap_err().kind(),
        Kind::Invalid
    );

    // Deleting the bridge releases its port; deleting a missing link is ENODEV.
    f.del_link(br.index).unwrap();
    assert_eq!(f.find_link("vx0").unwrap().unwrap().master, None);
    assert_eq!(
        f.del_link(br.index).unwrap_err().errno(),
        Some(libc::ENODEV)
    );
    assert_eq!(f.set_up(999, true).unwrap_err().kind(), Kind::NotFound);
}

#[test]
fn a_link_takes_its_addresses_routes_neighbours_and_fdb_with_it() {
    let f = FakeNetlink::new();
    f.add_vxlan(&nl("vx0"), &vx()).unwrap();
    let i = f.find_link("vx0").unwrap().unwrap().index;
    let net: IpNet = "10.244.1.0/32".parse().unwrap();
    f.add_addr(i, net, false).unwrap();
    assert_eq!(f.add_addr(i, net, false).unwrap_err().kind(), Kind::Exists);
    let r = Route::new("10.244.2.0/24".parse().unwrap(), None, Some(i));
    f.add_route(&r).unwrap();
    assert_eq!(f.add_route(&r).unwrap_err().kind(), Kind::Exists);
    f.replace_route(&r).unwrap();
    let mac = [2, 0, 0, 0, 0, 2];
    f.replace_neigh(&Neigh::permanent(i, ip("10.244.2.0"), mac))
        .unwrap();
    // replace is idempotent and overwrites the MAC
    f.replace_neigh(&Neigh::permanent(i, ip("10.244.2.0"), [2, 0, 0, 0, 0, 3]))
        .unwrap();
    assert_eq!(f.neighs(i).unwrap().len(), 1);
    assert_eq!(f.neighs(i).unwrap()[0].mac, Some([2, 0, 0, 0, 0, 3]));
    f.append_fdb(&FdbEntry::vxlan_remote(i, mac, ip("192.168.0.2")))
        .unwrap();
    assert_eq!(f.routes(false).unwrap().len(), 1);
    assert!(f.routes(true).unwrap().is_empty());

    f.del_link(i).unwrap();
    let m = f.model();
    assert_eq!(m.links.len(), 1, "only lo is left: {m:?}");
    assert!(m.addrs.is_empty() && m.routes.is_empty());
    assert!(m.neighs.is_empty() && m.fdb.is_empty());
    // Tolerant deletions of what is gone.
    f.del_addr(i, net).unwrap();
    f.del_route(&r).unwrap();
    f.del_neigh(&Neigh::permanent(i, ip("10.244.2.0"), mac))
        .unwrap();
    f.del_fdb(&FdbEntry::vxlan_remote(i, mac, ip("192.168.0.2")))
        .unwrap();
    // ... but adding to a missing link is ENODEV.
    assert_eq!(
        f.append_fdb(&FdbEntry::vxlan_remote(i, mac, ip("192.168.0.2")))
            .unwrap_err()
            .kind(),
        Kind::NotFound
    );
}

#[test]
fn fdb_append_keeps_one_entry_per_remote_and_del_without_dst_drops_all() {
    let f = FakeNetlink::new();
    f.add_vxlan(&nl("vx0"), &vx()).unwrap();
    let i = f.find_link("vx0").unwrap().unwrap().index;
    let zero = [0u8; 6];
    for dst in ["192.168.0.2", "192.168.0.3", "192.168.0.2"] {
        f.append_fdb(&FdbEntry::vxlan_remote(i, zero, ip(dst)))
            .unwrap();
    }
    assert_eq!(f.fdb(i).unwrap().len(), 2);
    let mut all = FdbEntry::vxlan_remote(i, zero, ip("192.168.0.2"));
    all.dst = None;
    f.del_fdb(&all).unwrap();
    assert!(f.fdb(i).unwrap().is_empty());
}

#[test]
fn injected_failures_change_nothing_and_are_recorded() {
    let f = FakeNetlink::new();
    f.fail_next("add_bridge", libc::EBUSY);
    let err = f.add_bridge("br0", None, None).unwrap_err();
    assert_eq!(err.kind(), Kind::Busy);
    assert!(err.to_string().contains("br0"), "{err}");
    assert!(f.find_link("br0").unwrap().is_none());
    // Only the next call fails.
    f.add_bridge("br0", None, None).unwrap();
    assert_eq!(
        f.calls(),
        vec![Call::AddBridge("br0".into()), Call::AddBridge("br0".into())]
    );
}

#[test]
fn a_link_made_in_another_namespace_is_not_in_this_one() {
    let f = FakeNetlink::new();
    let l = NewLink {
        name: "vx0",
        netns_fd: Some(9),
        ..Default::default()
    };
    f.add_vxlan(&l, &vx()).unwrap();
    assert!(f.find_link("vx0").unwrap().is_none());
    assert_eq!(f.calls(), vec![Call::AddVxlan("vx0".into(), vx())]);
}

#[test]
fn a_unicast_mac_has_one_remote_and_moves_by_replace() {
    let f = FakeNetlink::new();
    f.add_vxlan(&nl("vx0"), &vx()).unwrap();
    let i = f.find_link("vx0").unwrap().unwrap().index;
    let m = [2, 0, 0, 0, 0, 1];
    f.append_fdb(&FdbEntry::vxlan_remote(i, m, ip("192.168.0.2")))
        .unwrap();
    f.append_fdb(&FdbEntry::vxlan_remote(i, m, ip("192.168.0.3")))
        .unwrap();
    let dsts = |f: &FakeNetlink| f.fdb(i).unwrap().iter().map(|e| e.dst).collect::<Vec<_>>();
    assert_eq!(dsts(&f), vec![Some(ip("192.168.0.2"))]);
    f.replace_fdb(&FdbEntry::vxlan_remote(i, m, ip("192.168.0.3")))
        .unwrap();
    assert_eq!(dsts(&f), vec![Some(ip("192.168.0.3"))]);
    // A flood entry's remotes are not replaced.
    let z = FdbEntry::vxlan_remote(i, [0; 6], ip("192.168.0.2"));
    f.append_fdb(&z).unwrap();
    assert_eq!(
        f.replace_fdb(&z).unwrap_err().errno(),
        Some(libc::EOPNOTSUPP)
    );
}

#[test]
fn sync_fdb_converges_and_leaves_entries_it_does_not_own() {
    let f = FakeNetlink::new();
    f.add_vxlan(&nl("vx0"), &vx()).unwrap();
    let i = f.find_link("vx0").unwrap().unwrap().index;
    let (m1, m2, m3) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
    let zero = [0u8; 6];
    let moved = FdbEntry::vxlan_remote(i, m1, ip("192.168.0.9"));
    let gone = FdbEntry::vxlan_remote(i, m3, ip("192.168.0.9"));
    let flood_kept = FdbEntry::vxlan_remote(i, zero, ip("192.168.0.2"));
    let flood_stale = FdbEntry::vxlan_remote(i, zero, ip("192.168.0.9"));
    for e in [&moved, &gone, &flood_kept, &flood_stale] {
        f.append_fdb(e).unwrap();
    }
    // A learned entry (no dst, not self): not ours to remove.
    let mut learned = FdbEntry::vxlan_remote(i, [2, 0, 0, 0, 0, 4], ip("192.168.0.9"));
    learned.dst = None;
    learned.is_self = false;
    f.lock().model.fdb.push(learned.clone());

    let want = vec![
        FdbEntry::vxlan_remote(i, m1, ip("192.168.0.2")),
        FdbEntry::vxlan_remote(i, m2, ip("192.168.0.3")),
        flood_kept.clone(),
        FdbEntry::vxlan_remote(i, zero, ip("192.168.0.3")),
    ];
    let plan = sync_fdb(&f, i, &want).unwrap();
    assert_eq!(
        plan,
        FdbPlan {
            append: vec![want[1].clone(), want[3].clone()],
            replace: vec![want[0].clone()],
            del: vec![gone, flood_stale],
        }
    );
    let mut got = f.fdb(i).unwrap();
    got.sort();
    let mut expect = want.clone();
    expect.push(learned);
    expect.sort();
    assert_eq!(got, expect);

    // A second run finds nothing to do and asks nothing of the kernel.
    let n = f.calls().len();
    assert_eq!(sync_fdb(&f, i, &want).unwrap(), FdbPlan::default());
    assert_eq!(f.calls().len(), n);
    // Duplicates in the desired list are appended once.
    assert_eq!(
        plan_fdb(&[], &[want[0].clone(), want[0].clone()]).append,
        vec![want[0].clone()]
    );
}

#[test]
fn mtu_mac_and_ipv4_settings_change_the_link_and_go_with_it() {
    use crate::netlink::link::IPV4_DEVCONF_PROXY_ARP;
    let f = FakeNetlink::new();
    f.add_bridge("br0", Some(1500), None).unwrap();
    let br = f.find_link("br0").unwrap().unwrap().index;
    f.set_mtu(br, 1450).unwrap();
    f.set_mac(br, [6, 1, 2, 3, 4, 5]).unwrap();
    f.set_ipv4_devconf(br, IPV4_DEVCONF_PROXY_ARP, 1).unwrap();
    f.set_ipv4_devconf(br, IPV4_DEVCONF_PROXY_ARP, 0).unwrap();
    let l = f.find_link_index(br).unwrap().unwrap();
    assert_eq!((l.mtu, l.mac.as_slice()), (1450, &[6u8, 1, 2, 3, 4, 5][..]));
    assert_eq!(f.model().ipv4_devconf(br, IPV4_DEVCONF_PROXY_ARP), Some(0));
    assert_eq!(f.set_mtu(99, 1400).unwrap_err().errno(), Some(libc::ENODEV));
    assert_eq!(
        f.set_ipv4_devconf(99, IPV4_DEVCONF_PROXY_ARP, 1)
            .unwrap_err()
            .errno(),
        Some(libc::ENODEV)
    );
    f.del_link(br).unwrap();
    assert_eq!(f.model().ipv4_devconf, vec![]);
}

#[test]
fn self_and_master_entries_of_one_mac_are_two_tables() {
    let f = FakeNetlink::new();
    f.add_bridge("br0", None, None).unwrap();
    f.add_vxlan(&nl("vx0"), &vx()).unwrap();
    let br = f.find_link("br0").unwrap().unwrap().index;
    let v = f.find_link("vx0").unwrap().unwrap().index;
    f.set_master(v, br).unwrap();
    let mac = [2, 0, 0, 0, 0, 7];
    let remote = FdbEntry::vxlan_remote(v, mac, ip("10.0.0.2"));
    let port = FdbEntry {
        dst: None,
        is_self: false,
        state: crate::netlink::fdb::FDB_STATIC,
        ..remote.clone()
    };
    f.append_fdb(&remote).unwrap();
    f.append_fdb(&port).unwrap();
    assert_eq!(f.model().fdb, vec![remote.clone(), port.clone()]);
    f.del_fdb(&port).unwrap();
    assert_eq!(f.model().fdb, vec![remote]);
}

mod sync_fdb_property {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// An entry of a tiny alphabet, so that moves, duplicates and flood lists happen often:
    /// MAC 0 is the all-zeros flood entry, dst 0 means none (an entry that is not ours).
    fn entry(index: u32, (mac, dst, is_self): (u8, u8, bool)) -> FdbEntry {
        FdbEntry {
            index,
            mac: if mac == 0 {
                [0; 6]
            } else {
                [2, 0, 0, 0, 0, mac]
            },
            dst: (dst != 0).then(|| ip(&format!("10.0.0.{dst}"))),
            vlan: None,
            is_self,
            state: crate::netlink::neigh::NUD_PERMANENT,
            master: None,
        }
    }

    proptest! {
        #[test]
        fn sync_fdb_reaches_desired_and_leaves_the_rest(
            current in proptest::collection::vec((0u8..4, 0u8..4, any::<bool>()), 0..12),
            desired in proptest::collection::vec((0u8..4, 1u8..4), 0..12),
        ) {
            let f = FakeNetlink::new();
            f.add_vxlan(&nl("vx0"), &vx()).unwrap();
            let v = f.find_link("vx0").unwrap().unwrap().index;
            for c in &current {
                f.append_fdb(&entry(v, *c)).unwrap();
            }
            let before = f.model().fdb;
            // A unicast MAC has one remote: the desired list names each MAC once (flood
            // entries, MAC 0, may list several remotes).
            let mut macs = BTreeSet::new();
            let want: Vec<FdbEntry> = desired
                .iter()
                .filter(|(m, _)| *m == 0 || macs.insert(*m))
                .map(|(m, d)| entry(v, (*m, *d, true)))
                .collect();
            sync_fdb(&f, v, &want).unwrap();
            let after = f.model().fdb;
            let ours = |e: &&FdbEntry| e.is_self && e.dst.is_some();
            let got: BTreeSet<_> = after.iter().filter(ours).map(FdbEntry::key).collect();
            let wanted: BTreeSet<_> = want.iter().map(FdbEntry::key).collect();
            prop_assert_eq!(got, wanted);
            // Left alone: every entry but ours, and but a `self` entry of a MAC wanted
            // (taken over, since a unicast MAC has one entry).
            let taken = |e: &FdbEntry| e.is_self && want.iter().any(|w| !w.is_flood() && w.mac == e.mac);
            let not_ours = |m: &[FdbEntry]| -> Vec<FdbEntry> {
                m.iter().filter(|e| !ours(e) && !taken(e)).cloned().collect()
            };
            prop_assert_eq!(not_ours(&after), not_ours(&before));
            // Converged: nothing more to do.
            prop_assert_eq!(plan_fdb(&after, &want), FdbPlan::default());
        }
    }
}
