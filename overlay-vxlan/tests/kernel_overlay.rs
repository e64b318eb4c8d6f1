//! The overlay on real kernels: three "hosts" (namespaces) on an underlay bridge (a namespace
//! of its own), containers (namespaces) on each host's overlay bridge by a veth, the desired
//! state computed here as a controller would and applied with `sync_host` on every host.
//! Run as root: `cargo test --release -p overlay-vxlan --features root-tests --test
//! kernel_overlay`. Without root it fails (never skips).
#![cfg(feature = "root-tests")]

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;
use libnet::netlink::link::{NewLink, VXLAN_PORT};
use libnet::netlink::{Handle, VethPeer, Vxlan};
use libnet::netns::ScratchNs;
use overlay_vxlan::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `knt-<pid>-<tag><n>`
fn uniq(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "knt-{}-ov{tag}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn scratch(tag: &str) -> ScratchNs {
    assert!(
        nix_is_root(),
        "root-tests must run as root (they create namespaces)"
    );
    let ns = ScratchNs::create(&uniq(tag)).expect("create netns");
    let h = Handle::new_in(&ns).unwrap();
    let lo = h.link_by_name("lo").unwrap();
    h.set_up(lo.index, true).unwrap();
    ns
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run `cmd` in namespace `ns` through `sh`; its output, or a panic naming it.
fn sh(ns: &ScratchNs, cmd: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} in {}: {}",
        cmd,
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One echo request from `ns` to `dst`, answered within 2 s.
fn ping(ns: &ScratchNs, dst: IpAddr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "ping", "-c1", "-W2", "-q"])
        .arg(dst.to_string())
        .output()
        .unwrap()
        .status
        .success()
}

/// The kernel must have vxlan: made in a throwaway namespace, or the test fails loudly here.
fn probe_vxlan() {
    let ns = scratch("probe");
    let h = Handle::new_in(&ns).unwrap();
    let new = NewLink {
        name: "vxprobe",
        ..Default::default()
    };
    let conf = Vxlan {
        vni: 1,
        local: None,
        port: VXLAN_PORT,
        learning: false,
        link: None,
    };
    if let Err(e) = h.add_vxlan(&new, &conf) {
        panic!("this kernel cannot make a vxlan device (modprobe vxlan?): {e}");
    }
}

struct Host {
    ns: ScratchNs,
    h: Handle,
    underlay: IpAddr,
}

struct Ctr {
    ns: ScratchNs,
    /// The first address is the container's `ip()`.
    ips: Vec<IpAddr>,
    mac: [u8; 6],
    host: usize,
    vni: u32,
    veth: String,
}

/// A network as the "controller" of these tests knows it.
#[derive(Clone)]
struct Net {
    id: &'static str,
    vni: u32,
    cidrs: Vec<IpNet>,
    mode: Mode,
    /// Hosts that have it, each with its IPAM block (routed mode).
    members: Vec<(usize, IpNet)>,
}

struct Lab {
    ctrs: Vec<Ctr>,
    hosts: Vec<Host>,
    _underlay: ScratchNs,
    nets: Vec<Net>,
    veths: u32,
}

impl Ctr {
    fn ip(&self) -> IpAddr {
        self.ips[0]
    }
}

impl Lab {
    /// An underlay bridge and `n` hosts on it, `eth0` = 10.76.0.(i+1)/24 each.
    fn new(n: usize) -> Lab {
        probe_vxlan();
        let underlay = scratch("ul");
        let uh = Handle::new_in(&underlay).unwrap();
        uh.add_bridge("ul0", None, None).unwrap();
        let ul0 = uh.link_by_name("ul0").unwrap();
        uh.set_up(ul0.index, true).unwrap();
        let mut hosts = Vec::new();
        for i in 0..n {
            let ns = scratch("h");
            let port = format!("u{i}");
            let peer = VethPeer {
                name: "eth0",
                netns_fd: Some(ns.as_raw_fd()),
                ..Default::default()
            };
            uh.add_veth(&port, None, None, &peer).unwrap();
            let p = uh.link_by_name(&port).unwrap();
            uh.set_master(p.index, ul0.index).unwrap();
            uh.set_up(p.index, true).unwrap();
            let h = Handle::new_in(&ns).unwrap();
            let eth0 = h.link_by_name("eth0").unwrap();
            let underlay_ip = ip(&format!("10.76.0.{}", i + 1));
            h.add_addr(eth0.index, IpNet::new(underlay_ip, 24).unwrap(), false)
                .unwrap();
            h.set_up(eth0.index, true).unwrap();
            hosts.push(Host {
                ns,
                h,
                underlay: underlay_ip,
            });
        }
        Lab {
            ctrs: Vec::new(),
            hosts,
            _underlay: underlay,
            nets: Vec::new(),
            veths: 0,
        }
    }

    /// What host `me` should have of `net`: every container of it on the other hosts.
    fn desired(&self, net: &Net, me: usize) -> NetworkDesired {
        NetworkDesired {
            id: net.id.into(),
            vni: net.vni,
            subnets: net
                .cidrs
                .iter()
                .map(|c| Subnet {
                    cidr: *c,
                    // The first address after the network's (IPv6 has no broadcast to skip).
                    gateway: c.hosts().find(|a| *a != c.network()),
                })
                .collect(),
            mode: net.mode,
            underlay_ip: self.hosts[me].underlay,
            endpoints: self
                .ctrs
                .iter()
                .filter(|c| c.vni == net.vni && c.host != me)
                .flat_map(|c| {
                    c.ips.iter().map(|ip| RemoteEndpoint {
                        ip: *ip,
                        mac: Mac(c.mac),
                        host: self.hosts[c.host].underlay,
                    })
                })
                .collect(),
            hosts: net
                .members
                .iter()
                .filter(|(h, _)| *h != me)
                .map(|(h, block)| RemoteHost {
                    underlay_ip: self.hosts[*h].underlay,
                    blocks: vec![*block],
                })
                .collect(),
        }
    }

    /// `sync_host` on every host; returns each host's changes.
    fn sync(&self) -> Vec<Applied> {
        (0..self.hosts.len())
            .map(|me| {
                let want = HostDesired {
                    format: FORMAT,
                    networks: self
                        .nets
                        .iter()
                        .filter(|n| n.members.iter().any(|(h, _)| *h == me))
                        .map(|n| self.desired(n, me))
                        .collect(),
                };
                let s = sync_host(&self.hosts[me].h, &want);
                assert!(s.errors.is_empty(), "host {me}: {:?}", s.errors);
                s.applied
            })
            .collect()
    }

    /// A container on `host` in network `vni` with `addr` (e.g. "10.241.0.5/24") and `mac`.
    fn add_ctr(&mut self, host: usize, vni: u32, addr: &str, mac: [u8; 6]) -> usize {
        self.add_ctr_with(host, vni, &[addr], mac)
    }

    /// A container with several addresses (each one an endpoint entry of the same MAC).
    fn add_ctr_with(&mut self, host: usize, vni: u32, addrs: &[&str], mac: [u8; 6]) -> usize {
        let ns = scratch("c");
        self.veths += 1;
        let veth = format!("kv{}", self.veths);
        let h = &self.hosts[host].h;
        let br = h.link_by_name(&bridge_name(vni)).unwrap();
        let peer = VethPeer {
            name: "eth0",
            netns_fd: Some(ns.as_raw_fd()),
            mac: Some(mac),
            mtu: Some(MTU),
        };
        h.add_veth(&veth, Some(MTU), None, &peer).unwrap();
        let l = h.link_by_name(&veth).unwrap();
        h.set_master(l.index, br.index).unwrap();
        h.set_up(l.index, true).unwrap();
        let ch = Handle::new_in(&ns).unwrap();
        let eth0 = ch.link_by_name("eth0").unwrap();
        let nets: Vec<IpNet> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        for n in &nets {
            // nodad: an IPv6 address is usable at once.
            ch.add_addr(eth0.index, *n, n.addr().is_ipv6()).unwrap();
        }
        ch.set_up(eth0.index, true).unwrap();
        self.ctrs.push(Ctr {
            ns,
            ips: nets.iter().map(|n| n.addr()).collect(),
            mac,
            host,
            vni,
            veth,
        });
        self.ctrs.len() - 1
    }

    /// The container goes (its veth deleted now, its namespace after).
    fn remove_ctr(&mut self, i: usize) -> Ctr {
        let c = self.ctrs.remove(i);
        let h = &self.hosts[c.host].h;
        let l = h.link_by_name(&c.veth).unwrap();
        h.del_link(l.index).unwrap();
        c
    }

    /// Every pair of containers of `vni` pings.
    fn assert_all_pairs_ping(&self, vni: u32) {
        let of: Vec<&Ctr> = self.ctrs.iter().filter(|c| c.vni == vni).collect();
        let mut failed = Vec::new();
        for a in &of {
            for b in &of {
                for dst in b.ips.iter().filter(|_| a.ip() != b.ip()) {
                    if !ping(&a.ns, *dst) {
                        failed.push(format!(
                            "{} (host {}) -> {dst} (host {})",
                            a.ip(),
                            a.host,
                            b.host
                        ));
                    }
                }
            }
        }
        assert!(failed.is_empty(), "no answer: {failed:#?}");
    }
}

fn vxlan_net(id: &'static str, vni: u32, cidr: &str, hosts: &[usize]) -> Net {
    Net {
        id,
        vni,
        cidrs: vec![cidr.parse().unwrap()],
        mode: Mode::Vxlan,
        members: hosts.iter().map(|h| (*h, cidr.parse().unwrap())).collect(),
    }
}

/// Host `h`'s bridge neighbour for `addr` (permanent ones), and whether an FDB entry of `mac`
/// exists on its vxlan device (self or master).
fn entries(lab: &Lab, h: usize, vni: u32, addr: IpAddr, mac: [u8; 6]) -> (Option<[u8; 6]>, bool) {
    let host = &lab.hosts[h].h;
    let br = host.link_by_name(&bridge_name(vni)).unwrap();
    let vx = host.link_by_name(&vxlan_name(vni)).unwrap();
    let neigh = host
        .neighs(br.index)
        .unwrap()
        .into_iter()
        .find(|n| n.ip == addr && n.is_permanent())
        .and_then(|n| n.mac);
    let fdb = host.fdb(vx.index).unwrap().iter().any(|e| e.mac == mac);
    (neigh, fdb)
}

#[test]
fn kernel_has_vxlan() {
    probe_vxlan();
}

#[test]
fn vxlan_overlay_pings_across_hosts_and_follows_removals_and_address_handovers() {
    let mut lab = Lab::new(3);
    let vni = 0x77_0001;
    lab.nets
        .push(vxlan_net("blue", vni, "10.241.0.0/24", &[0, 1, 2]));
    lab.sync();
    let addrs = ["10.241.0.10", "10.241.0.11", "10.241.0.12", "10.241.0.20"];
    for (i, a) in addrs.iter().enumerate() {
        let host = i % 3;
        lab.add_ctr(host, vni, &format!("{a}/24"), endpoint_mac(ip(a)));
    }
    let applied = lab.sync();
    // Host 0 has containers 10 and 20; it learns 11 (host 1) and 12 (host 2) (the flood
    // entries to hosts 1 and 2 came with the first sync).
    assert_eq!(applied[0].neigh_replaced, 2, "{:?}", applied[0]);
    assert_eq!(applied[0].fdb_added, 2, "{:?}", applied[0]);
    assert_eq!(applied[0].port_added, 2, "{:?}", applied[0]);
    lab.assert_all_pairs_ping(vni);
    // Converged: nothing more to do anywhere.
    assert!(lab.sync().iter().all(|a| a.changes() == 0));

    // The links as asked.
    let h0 = &lab.hosts[0];
    let shown = sh(&h0.ns, &format!("ip -d link show {}", vxlan_name(vni)));
    for want in [
        "vxlan id 7798785",
        "local 10.76.0.1",
        "dev eth0",
        "dstport 4789",
        "nolearning",
        "mtu 1450",
        "master knov770001",
    ] {
        assert!(shown.contains(want), "{want:?} not in {shown}");
    }
    let port = sh(
        &h0.ns,
        &format!("bridge -d link show dev {}", vxlan_name(vni)),
    );
    assert!(
        port.contains("learning off") && port.contains("neigh_suppress on"),
        "{port}"
    );
    // The anycast gateway: same IP and MAC on every host.
    for h in &lab.hosts {
        let br = sh(
            &h.ns,
            "ip -br addr show dev knov770001; ip -br link show dev knov770001",
        );
        assert!(br.contains("10.241.0.1/24"), "{br}");
        assert!(br.contains("06:6b:6e:77:00:01"), "{br}");
    }
    // Every container resolves its gateway to that MAC.
    let c = &lab.ctrs[1];
    assert!(ping(&c.ns, ip("10.241.0.1")));
    let n = sh(&c.ns, "ip neigh show 10.241.0.1");
    assert!(n.contains("06:6b:6e:77:00:01"), "{n}");

    // A stale entry planted by hand (a previous run's) goes with the next sync, and a bridge
    // of a network no longer listed too.
    let h1 = &lab.hosts[1];
    sh(
        &h1.ns,
        "bridge fdb append 0a:58:0a:f1:00:63 dev knvx7798785 dst 10.76.0.99 self permanent && \
         bridge fdb add 0a:58:0a:f1:00:63 dev knvx7798785 master static && \
         ip neigh replace 10.241.0.99 lladdr 0a:58:0a:f1:00:63 dev knov770001 nud permanent && \
         bridge fdb append 00:00:00:00:00:00 dev knvx7798785 dst 10.76.0.99 self permanent && \
         ip link add knov99 type bridge",
    );
    let applied = lab.sync();
    assert_eq!(
        (
            applied[1].fdb_removed,
            applied[1].port_removed,
            applied[1].neigh_removed
        ),
        (2, 1, 1),
        "{:?}",
        applied[1]
    );
    let fdb = sh(&h1.ns, "bridge fdb show dev knvx7798785");
    assert!(
        !fdb.contains("10.76.0.99") && !fdb.contains("0a:58:0a:f1:00:63"),
        "{fdb}"
    );
    assert!(!sh(&h1.ns, "ip neigh show dev knov770001").contains("10.241.0.99"));
    assert!(!sh(&h1.ns, "ip link show").contains("knov99"));

    // No ARP crosses the tunnel for a known remote: the bridge answers it. Counted by nft on
    // the frames the bridge forwards out of the vxlan port; a positive control (an address
    // nobody has) shows that the counter does count flooded ARP.
    let h0 = &lab.hosts[0];
    sh(
        &h0.ns,
        "nft add table bridge kntarp && \
         nft add chain bridge kntarp cnt '{ type filter hook forward priority 0; }' && \
         nft add rule bridge kntarp cnt oifname knvx7798785 ether type arp counter",
    );
    let arp_out = || -> u64 {
        let r = sh(&h0.ns, "nft list chain bridge kntarp cnt");
        let p = r.split("packets ").nth(1).unwrap_or_else(|| panic!("{r}"));
        p.split_whitespace().next().unwrap().parse().unwrap()
    };
    let a = &lab.ctrs[0]; // host 0
    sh(&a.ns, "ip neigh flush all");
    assert!(ping(&a.ns, ip("10.241.0.11")) && ping(&a.ns, ip("10.241.0.12")));
    assert_eq!(arp_out(), 0, "ARP for known remotes crossed the tunnel");
    assert!(!ping(&a.ns, ip("10.241.0.250")));
    assert!(arp_out() > 0, "the control ARP was not counted");
    sh(&h0.ns, "nft delete table bridge kntarp");

    // A container removed (10.241.0.12 on host 2): unreachable, its entries gone everywhere.
    let gone = lab
        .ctrs
        .iter()
        .position(|c| c.ip() == ip("10.241.0.12"))
        .unwrap();
    let old = lab.remove_ctr(gone);
    lab.sync();
    assert!(!ping(&lab.ctrs[0].ns, old.ip()));
    for h in [0, 1] {
        assert_eq!(
            entries(&lab, h, vni, old.ip(), old.mac),
            (None, false),
            "host {h}"
        );
    }
    drop(old);

    // The address handed at once to a new container on host 1, with the MAC derived from
    // the address: peers that cached it reach it at once (the FDB entry moved hosts).
    lab.add_ctr(1, vni, "10.241.0.12/24", endpoint_mac(ip("10.241.0.12")));
    let applied = lab.sync();
    assert_eq!(applied[0].fdb_added, 1, "{:?}", applied[0]);
    assert!(ping(&lab.ctrs[0].ns, ip("10.241.0.12")));
    assert_eq!(
        entries(
            &lab,
            0,
            vni,
            ip("10.241.0.12"),
            endpoint_mac(ip("10.241.0.12"))
        ),
        (Some(endpoint_mac(ip("10.241.0.12"))), true)
    );

    // Handed on again, to host 2 and a MAC of its own: the neighbour entry is replaced on
    // every other host, and a container that asks for it now reaches it at once.
    let i = lab
        .ctrs
        .iter()
        .position(|c| c.ip() == ip("10.241.0.12"))
        .unwrap();
    drop(lab.remove_ctr(i));
    let fresh_mac = [0x02, 0x6b, 0x6e, 0x77, 0, 0x12];
    lab.add_ctr(2, vni, "10.241.0.12/24", fresh_mac);
    let applied = lab.sync();
    for h in [0, 1] {
        assert_eq!(applied[h].neigh_replaced, 1, "host {h}: {:?}", applied[h]);
        assert_eq!(
            applied[h].neigh_removed, 0,
            "host {h}: replaced, not deleted"
        );
        assert_eq!(
            entries(&lab, h, vni, ip("10.241.0.12"), fresh_mac),
            (Some(fresh_mac), true),
            "host {h}"
        );
    }
    let newcomer = lab.add_ctr(0, vni, "10.241.0.30/24", endpoint_mac(ip("10.241.0.30")));
    lab.sync();
    assert!(ping(&lab.ctrs[newcomer].ns, ip("10.241.0.12")));
}

#[test]
fn two_vnis_are_isolated_in_l2_and_ip() {
    let mut lab = Lab::new(3);
    let (v1, v2) = (0x77_0101, 0x77_0102);
    lab.nets
        .push(vxlan_net("one", v1, "10.241.1.0/24", &[0, 1, 2]));
    lab.nets
        .push(vxlan_net("two", v2, "10.242.1.0/24", &[1, 2]));
    lab.sync();
    let m = |a: &str| endpoint_mac(ip(a));
    let a1 = lab.add_ctr(0, v1, "10.241.1.10/24", m("10.241.1.10"));
    lab.add_ctr(1, v1, "10.241.1.11/24", m("10.241.1.11"));
    let b2 = lab.add_ctr(1, v2, "10.242.1.11/24", m("10.242.1.11"));
    let c2 = lab.add_ctr(2, v2, "10.242.1.12/24", m("10.242.1.12"));
    lab.sync();
    lab.assert_all_pairs_ping(v1);
    lab.assert_all_pairs_ping(v2);

    // c2 (network two) also holds an address of network one's subnet. Over network two's
    // L2 it answers (the positive control: b2 with an on-link route)...
    sh(&lab.ctrs[c2].ns, "ip addr add 10.241.1.200/24 dev eth0");
    sh(&lab.ctrs[b2].ns, "ip route add 10.241.1.0/24 dev eth0");
    assert!(ping(&lab.ctrs[b2].ns, ip("10.241.1.200")));
    // ... but not over network one's, although host 2 has both networks.
    assert!(!ping(&lab.ctrs[a1].ns, ip("10.241.1.200")));
    // Nor does a1 reach network two's addresses on-link.
    sh(&lab.ctrs[a1].ns, "ip route add 10.242.1.0/24 dev eth0");
    assert!(!ping(&lab.ctrs[a1].ns, ip("10.242.1.12")));
    // Network one's tables on host 1 hold nothing of network two.
    let fdb = sh(
        &lab.hosts[1].ns,
        &format!("bridge fdb show dev {}", vxlan_name(v1)),
    );
    assert!(
        !fdb.contains(&libnet::netlink::link::format_mac(&m("10.242.1.12"))),
        "{fdb}"
    );
    assert!(!sh(
        &lab.hosts[1].ns,
        &format!("ip neigh show dev {}", bridge_name(v1))
    )
    .contains("10.242."));
}

#[test]
fn routed_mode_pings_across_hosts_without_vxlan() {
    let mut lab = Lab::new(3);
    let vni = 0x77_0201;
    lab.nets.push(Net {
        id: "routed",
        vni,
        cidrs: vec!["10.243.0.0/16".parse().unwrap()],
        mode: Mode::Routed,
        members: (0..3)
            .map(|h| (h, format!("10.243.{}.0/24", h + 1).parse().unwrap()))
            .collect(),
    });
    for h in &lab.hosts {
        sh(&h.ns, "sysctl -qw net.ipv4.ip_forward=1");
    }
    let applied = lab.sync();
    assert!(
        applied.iter().all(|a| a.routes_replaced == 2),
        "{applied:?}"
    );
    for h in 0..3 {
        let a = format!("10.243.{}.5", h + 1);
        lab.add_ctr(h, vni, &format!("{a}/16"), endpoint_mac(ip(&a)));
    }
    lab.sync();
    lab.assert_all_pairs_ping(vni);
    let h0 = &lab.hosts[0].ns;
    let routes = sh(h0, "ip route show proto 107");
    assert!(
        routes.contains("10.243.2.0/24 via 10.76.0.2 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.243.3.0/24 via 10.76.0.3 dev eth0"),
        "{routes}"
    );
    assert!(!sh(h0, "ip link show").contains("knvx"));
    // The host answers its containers' ARP for addresses it routes to other hosts.
    let proxy = sh(
        h0,
        &format!("sysctl -n net.ipv4.conf.{}.proxy_arp", bridge_name(vni)),
    );
    assert_eq!(proxy.trim(), "1");

    // Host 2 leaves the network: its block's route goes everywhere, nothing else does.
    lab.ctrs.retain(|c| c.host != 2);
    lab.nets[0].members.retain(|(h, _)| *h != 2);
    lab.sync();
    let routes = sh(h0, "ip route show proto 107");
    assert!(!routes.contains("10.243.3.0/24"), "{routes}");
    assert!(routes.contains("10.243.2.0/24"), "{routes}");
    lab.assert_all_pairs_ping(vni);
}

#[test]
fn dual_stack_vxlan_pings_over_ipv4_and_ipv6_across_hosts() {
    let mut lab = Lab::new(3);
    let vni = 0x77_0301;
    let mut net = vxlan_net("dual", vni, "10.241.3.0/24", &[0, 1, 2]);
    net.cidrs.push("fd00:6b6e:77::/64".parse().unwrap());
    lab.nets.push(net);
    lab.sync();
    for h in 0..3 {
        let v4 = format!("10.241.3.{}", h + 10);
        let v6 = format!("fd00:6b6e:77::{}/64", h + 10);
        lab.add_ctr_with(h, vni, &[&format!("{v4}/24"), &v6], endpoint_mac(ip(&v4)));
    }
    let applied = lab.sync();
    // Per remote container: one MAC (one remote, one bridge entry), two neighbours.
    assert_eq!(
        (
            applied[0].fdb_added,
            applied[0].port_added,
            applied[0].neigh_replaced
        ),
        (2, 2, 4),
        "{:?}",
        applied[0]
    );
    lab.assert_all_pairs_ping(vni);
    let gw = sh(
        &lab.hosts[1].ns,
        &format!("ip -br addr show dev {}", bridge_name(vni)),
    );
    assert!(
        gw.contains("fd00:6b6e:77::1/64") && gw.contains("10.241.3.1/24"),
        "{gw}"
    );
    let n = sh(
        &lab.hosts[1].ns,
        &format!("ip -6 neigh show dev {}", bridge_name(vni)),
    );
    assert!(
        n.contains("fd00:6b6e:77::10 lladdr 0a:58:0a:f1:03:0a PERMANENT"),
        "{n}"
    );
}

#[test]
fn a_thousand_remote_endpoints_sync_in_milliseconds() {
    use std::time::Instant;
    let lab = Lab::new(1);
    let me = &lab.hosts[0];
    let mut net = NetworkDesired {
        id: "big".into(),
        vni: 0x77_0401,
        subnets: vec![Subnet {
            cidr: "10.240.0.0/16".parse().unwrap(),
            gateway: Some(ip("10.240.0.1")),
        }],
        mode: Mode::Vxlan,
        underlay_ip: me.underlay,
        endpoints: Vec::new(),
        hosts: (0..20)
            .map(|h| RemoteHost {
                underlay_ip: ip(&format!("10.76.1.{}", h + 1)),
                blocks: vec![],
            })
            .collect(),
    };
    for i in 0..1000u32 {
        let a = ip(&format!("10.240.{}.{}", 1 + i / 200, 10 + i % 200));
        net.endpoints.push(RemoteEndpoint {
            ip: a,
            mac: Mac(endpoint_mac(a)),
            host: ip(&format!("10.76.1.{}", 1 + i % 20)),
        });
    }
    let t = Instant::now();
    let first = sync_network(&me.h, &net).unwrap();
    let full = t.elapsed();
    assert_eq!(
        (first.applied.fdb_added, first.applied.neigh_replaced),
        (1020, 1000)
    );
    let t = Instant::now();
    let idle = sync_network(&me.h, &net).unwrap();
    let converged = t.elapsed();
    assert_eq!(idle.applied, Applied::default());
    // One endpoint more: the work of a delta, plus the three dumps of the whole network.
    let a = ip("10.240.9.9");
    net.endpoints.push(RemoteEndpoint {
        ip: a,
        mac: Mac(endpoint_mac(a)),
        host: ip("10.76.1.1"),
    });
    let t = Instant::now();
    let one = sync_network(&me.h, &net).unwrap();
    let delta = t.elapsed();
    assert_eq!(one.applied.changes(), 3);
    // The same as a delta: no dump.
    let old = net.clone();
    let b = ip("10.240.9.10");
    net.endpoints.push(RemoteEndpoint {
        ip: b,
        mac: Mac(endpoint_mac(b)),
        host: ip("10.76.1.2"),
    });
    let t = Instant::now();
    let plan = plan_delta(&old, &net, &one.links);
    let planning = t.elapsed();
    assert_eq!(plan.neigh_replace.len(), 1);
    let t = Instant::now();
    let d = apply_delta(&me.h, &one.links, &old, &net).unwrap();
    let by_delta = t.elapsed();
    assert_eq!(d.changes(), 3);
    assert_eq!(
        sync_network(&me.h, &net).unwrap().applied,
        Applied::default()
    );
    eprintln!(
        "1,000 remote endpoints on 20 hosts: first sync {full:?}, converged sync \
         {converged:?}, one endpoint more by sync {delta:?}, by apply_delta {by_delta:?} (planning \
         {planning:?})"
    );
    assert!(converged.as_millis() < 200, "{converged:?}");
    assert!(delta.as_millis() < 200, "{delta:?}");
    assert!(by_delta.as_millis() < 50, "{by_delta:?}");
}
