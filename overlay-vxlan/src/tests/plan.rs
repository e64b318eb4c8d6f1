//! Observe → plan → apply of the entries, on the fake.

use super::*;

#[test]
fn sync_programs_remotes_flood_entries_bridge_entries_and_neighbours_once() {
    let (f, _) = host();
    let net = blue();
    let s = sync_network(&f, &net).unwrap();
    let (br, vx) = (s.links.bridge, s.links.vxlan.unwrap());
    assert_eq!(
        remotes(&f, vx),
        vec![
            ([0; 6], ip(B)),
            ([0; 6], ip(C)),
            (MAC1, ip(B)),
            (MAC2, ip(C)),
        ]
    );
    assert_eq!(ports(&f, vx), vec![MAC1, MAC2]);
    assert_eq!(
        neighs(&f, br),
        vec![(ip("10.244.1.5"), MAC1), (ip("10.244.2.7"), MAC2)]
    );
    assert_eq!(routes(&f), vec![], "no routes in vxlan mode");
    assert_eq!(
        s.applied,
        Applied {
            fdb_added: 4,
            port_added: 2,
            neigh_replaced: 2,
            ..Applied::default()
        }
    );
    assert_eq!((s.fdb_entries, s.neighs, s.routes), (4, 2, 0));
    // Converged: a second sync plans nothing and changes nothing.
    let seen = observe(&f, &net, &s.links).unwrap();
    assert!(plan_network(&net, &s.links, &seen).is_empty());
    let s2 = sync_network(&f, &net).unwrap();
    assert_eq!(s2.applied, Applied::default());
}

#[test]
fn a_removed_endpoint_and_host_lose_their_entries() {
    let (f, _) = host();
    let mut net = blue();
    let s = sync_network(&f, &net).unwrap();
    let (br, vx) = (s.links.bridge, s.links.vxlan.unwrap());
    net.endpoints.retain(|e| e.mac.0 != MAC2);
    net.hosts.retain(|h| h.underlay_ip != ip(C));
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(remotes(&f, vx), vec![([0; 6], ip(B)), (MAC1, ip(B))]);
    assert_eq!(ports(&f, vx), vec![MAC1]);
    assert_eq!(neighs(&f, br), vec![(ip("10.244.1.5"), MAC1)]);
    assert_eq!(
        s.applied,
        Applied {
            fdb_removed: 2,
            port_removed: 1,
            neigh_removed: 1,
            ..Applied::default()
        }
    );
}

#[test]
fn a_mac_moving_to_another_host_is_replaced_never_deleted() {
    let (f, _) = host();
    let mut net = blue();
    let s = sync_network(&f, &net).unwrap();
    let vx = s.links.vxlan.unwrap();
    net.endpoints[0].host = ip(C);
    let before = f.calls().len();
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(
        s.applied,
        Applied {
            fdb_moved: 1,
            ..Applied::default()
        }
    );
    assert!(remotes(&f, vx).contains(&(MAC1, ip(C))));
    assert!(!remotes(&f, vx).contains(&(MAC1, ip(B))));
    let calls = &f.calls()[before..];
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::DelFdb(e) if e.mac == MAC1)),
        "{calls:?}"
    );
}

#[test]
fn an_address_changing_hands_has_its_neighbour_replaced() {
    let (f, _) = host();
    let mut net = blue();
    let s = sync_network(&f, &net).unwrap();
    let (br, vx) = (s.links.bridge, s.links.vxlan.unwrap());
    // 10.244.2.7 leaves C's container (MAC2) for a new container on B (MAC3).
    net.endpoints[1] = ep("10.244.2.7", MAC3, B);
    let before = f.calls().len();
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(neighs(&f, br)[1], (ip("10.244.2.7"), MAC3));
    assert!(remotes(&f, vx).contains(&(MAC3, ip(B))));
    assert!(!remotes(&f, vx).iter().any(|(m, _)| *m == MAC2));
    assert_eq!(ports(&f, vx), vec![MAC1, MAC3]);
    assert_eq!(
        s.applied,
        Applied {
            fdb_added: 1,
            fdb_removed: 1,
            port_added: 1,
            port_removed: 1,
            neigh_replaced: 1,
            ..Applied::default()
        }
    );
    // Replaced in place: never deleted (no window in which the address has no entry).
    let calls = &f.calls()[before..];
    assert!(
        !calls.iter().any(|c| matches!(c, Call::DelNeigh(_))),
        "{calls:?}"
    );
    // The new path exists before the neighbour points at it.
    let pos = |want: &dyn Fn(&Call) -> bool| calls.iter().position(want).unwrap();
    assert!(
        pos(&|c| matches!(c, Call::AppendFdb(e) if e.mac == MAC3 && e.is_self))
            < pos(&|c| matches!(c, Call::ReplaceNeigh(_)))
    );
}

#[test]
fn stale_entries_of_a_previous_run_go_and_entries_not_ours_stay() {
    let (f, eth0) = host();
    let net = blue();
    let links = ensure_network(&f, &net).unwrap();
    let (br, vx) = (links.bridge, links.vxlan.unwrap());
    let old = [0x0a, 0x58, 10, 244, 9, 9];
    // Left by a previous run: a remote, a flood target, a bridge entry, a neighbour, a route.
    let stale_remote = FdbEntry::vxlan_remote(vx, old, ip("192.168.50.9"));
    let stale_flood = FdbEntry::vxlan_remote(vx, [0; 6], ip("192.168.50.9"));
    let stale_port = FdbEntry {
        dst: None,
        is_self: false,
        state: FDB_STATIC,
        ..stale_remote.clone()
    };
    let stale_neigh = Neigh::permanent(br, ip("10.244.9.9"), old);
    let stale_route = block_route("10.244.9.0/24".parse().unwrap(), ip("192.168.50.9"));
    // Not ours: a learned bridge entry, a dynamic neighbour, entries on another link, a
    // route of another protocol inside the subnet.
    let learned = FdbEntry {
        mac: [0x0a, 0x58, 10, 244, 0, 77],
        state: NUD_REACHABLE,
        ..stale_port.clone()
    };
    let dynamic = Neigh {
        state: NUD_REACHABLE,
        ..Neigh::permanent(br, ip("10.244.0.77"), old)
    };
    let elsewhere_neigh = Neigh::permanent(eth0, ip("192.168.50.9"), old);
    let elsewhere_fdb = FdbEntry::vxlan_remote(eth0, old, ip("192.168.50.9"));
    let boot_route = Route::new(
        "10.244.8.0/24".parse().unwrap(),
        Some(ip("192.168.50.8")),
        None,
    );
    for e in [
        &stale_remote,
        &stale_flood,
        &stale_port,
        &learned,
        &elsewhere_fdb,
    ] {
        f.append_fdb(e).unwrap();
    }
    for n in [&stale_neigh, &dynamic, &elsewhere_neigh] {
        f.replace_neigh(n).unwrap();
    }
    f.add_route(&stale_route).unwrap();
    f.add_route(&boot_route).unwrap();

    let s = sync_network(&f, &net).unwrap();
    let m = f.model();
    assert!(!m.fdb.iter().any(|e| e.key() == stale_remote.key()));
    assert!(!m.fdb.iter().any(|e| e.key() == stale_flood.key()));
    assert!(!m.fdb.contains(&stale_port));
    assert!(m.fdb.contains(&learned), "a learned entry is the kernel's");
    assert!(m.fdb.contains(&elsewhere_fdb));
    assert!(!m.neighs.contains(&stale_neigh));
    assert!(m.neighs.contains(&dynamic) && m.neighs.contains(&elsewhere_neigh));
    assert_eq!(
        routes(&f),
        vec![(
            "10.244.8.0/24".into(),
            Some(ip("192.168.50.8")),
            RTPROT_BOOT
        )]
    );
    assert_eq!(
        (
            s.applied.fdb_removed,
            s.applied.port_removed,
            s.applied.neigh_removed,
            s.applied.routes_removed
        ),
        (2, 1, 1, 1)
    );
}

#[test]
fn routed_mode_routes_the_other_hosts_blocks_via_their_underlay_and_has_no_vxlan() {
    let (f, _) = host();
    // Start in vxlan mode: switching to routed deletes the vxlan device.
    sync_network(&f, &blue()).unwrap();
    let mut net = routed();
    net.hosts.push(rhost(LOCAL, &["10.244.0.0/24"])); // our own block: skipped
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(s.links.vxlan, None);
    assert!(f.find_link("knvx4097").unwrap().is_none());
    assert_eq!(
        f.model()
            .ipv4_devconf(s.links.bridge, IPV4_DEVCONF_PROXY_ARP),
        Some(1)
    );
    let p = RTPROT_KNIT_OVERLAY;
    assert_eq!(
        routes(&f),
        vec![
            ("10.244.1.0/24".into(), Some(ip(B)), p),
            ("10.244.2.0/24".into(), Some(ip(C)), p),
        ]
    );
    assert_eq!(s.applied.routes_replaced, 2);
    assert_eq!(sync_network(&f, &net).unwrap().applied, Applied::default());

    // C's block moves to a new host D, and B goes away.
    net.hosts = vec![rhost("192.168.50.4", &["10.244.2.0/24", "10.244.3.0/24"])];
    let s = sync_network(&f, &net).unwrap();
    let d = Some(ip("192.168.50.4"));
    assert_eq!(
        routes(&f),
        vec![
            ("10.244.2.0/24".into(), d, p),
            ("10.244.3.0/24".into(), d, p)
        ]
    );
    assert_eq!(
        (s.applied.routes_replaced, s.applied.routes_removed),
        (2, 1)
    );
}

#[test]
fn a_failed_apply_stops_and_the_next_sync_converges() {
    let (f, _) = host();
    let net = blue();
    f.fail_next("replace_neigh", libc::ENOBUFS);
    let err = sync_network(&f, &net).unwrap_err();
    assert_eq!(err.kind(), Kind::Transient);
    assert!(err.to_string().contains("blue"), "{err}");
    let s = sync_network(&f, &net).unwrap();
    assert_eq!(
        s.applied,
        Applied {
            neigh_replaced: 2,
            ..Applied::default()
        }
    );
    assert_eq!(neighs(&f, s.links.bridge).len(), 2);
}

#[test]
fn sync_host_syncs_every_network_and_removes_those_no_longer_listed() {
    let (f, _) = host();
    let mut desired = HostDesired {
        format: FORMAT,
        networks: vec![blue(), {
            let mut r = routed();
            r.vni = 7;
            r.id = "red".into();
            r.subnets[0].cidr = "10.246.0.0/16".parse().unwrap();
            r.subnets[0].gateway = Some(ip("10.246.0.1"));
            r.hosts = vec![rhost(B, &["10.246.1.0/24"])];
            r
        }],
    };
    // Not ours although it looks close: a bridge named like ours with a non-canonical VNI.
    f.add_bridge("knov01", None, None).unwrap();
    let s = sync_host(&f, &desired);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.networks.len(), 2);
    assert_eq!(s.applied.fdb_added, 4);
    assert_eq!(s.applied.routes_replaced, 1);
    assert_eq!(s.removed, Removed::default());

    // "red" goes; a bad network is reported and does not stop "blue".
    desired.networks.pop();
    let mut bad = blue_as(9, "10.247.0.0/16");
    bad.subnets[0].gateway = Some(ip("10.1.0.1"));
    desired.networks.push(bad);
    let s = sync_host(&f, &desired);
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert_eq!(s.networks.len(), 1);
    assert_eq!(s.removed.links, vec!["knov7".to_string()]);
    assert_eq!(s.removed.routes, 1);
    assert!(f.find_link("knov01").unwrap().is_some());
    assert!(f.find_link("knov1001").unwrap().is_some());

    // A format from the future: nothing is touched at all.
    let before = f.calls().len();
    let future = HostDesired {
        format: FORMAT + 1,
        ..desired.clone()
    };
    let s = sync_host(&f, &future);
    assert!(
        s.errors[0].to_string().contains("format 2"),
        "{:?}",
        s.errors
    );
    assert_eq!(f.calls().len(), before);

    // One VNI for two networks: nothing is touched at all.
    desired.networks.push(NetworkDesired {
        id: "dup".into(),
        ..blue()
    });
    let before = f.calls().len();
    let s = sync_host(&f, &desired);
    assert!(
        s.errors[0].to_string().contains("VNI 4097 also used"),
        "{:?}",
        s.errors
    );
    assert_eq!(f.calls().len(), before);
}

#[test]
fn a_delta_is_planned_from_the_previous_state_and_converges_like_a_sync() {
    let (f, _) = host();
    let old = blue();
    let s = sync_network(&f, &old).unwrap();
    let mut new = old.clone();
    new.endpoints[0].host = ip(C); // MAC1 moves
    new.endpoints[1] = ep("10.244.2.7", MAC3, B); // the address changes hands
    new.endpoints
        .push(ep("10.244.3.3", [0x0a, 0x58, 10, 244, 3, 3], C));
    let seen = observe(&f, &old, &s.links).unwrap();
    assert_eq!(
        plan_delta(&old, &new, &s.links),
        plan_network(&new, &s.links, &seen)
    );
    let done = apply_delta(&f, &s.links, &old, &new).unwrap();
    assert_eq!(
        done,
        Applied {
            fdb_added: 2,
            fdb_moved: 1,
            fdb_removed: 1,
            port_added: 2,
            port_removed: 1,
            neigh_replaced: 2,
            ..Applied::default()
        }
    );
    assert_eq!(sync_network(&f, &new).unwrap().applied, Applied::default());

    // A delta that is not one: refused, nothing changed.
    let before = f.calls().len();
    let other = NetworkDesired {
        mode: Mode::Routed,
        ..new.clone()
    };
    let err = apply_delta(&f, &s.links, &new, &other).unwrap_err();
    assert_eq!(err.kind(), Kind::Invalid);
    assert_eq!(f.calls().len(), before);
}
