//! The lab of the overlay's kernel tests: an underlay bridge in a namespace of its own,
//! "hosts" (namespaces) on it, containers (namespaces) on a host's overlay bridge by a veth,
//! and the desired state of each host computed as a controller would. Unique names
//! (`knt-<pid>-ov...`), root asserted (never skipped), namespaces deleted when dropped.
// Each test file compiles this module on its own and may use a part of it.
#![allow(dead_code)]

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;
use libnet::netlink::link::{NewLink, VXLAN_PORT};
use libnet::netlink::{Handle, VethPeer, Vxlan};
use libnet::netns::ScratchNs;
use overlay_vxlan::*;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `knt-<pid>-<tag><n>`
pub fn uniq(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "knt-{}-ov{tag}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn scratch(tag: &str) -> ScratchNs {
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

pub fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run `cmd` in namespace `ns` through `sh`; its output, or a panic naming it.
pub fn sh(ns: &ScratchNs, cmd: &str) -> String {
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
pub fn ping(ns: &ScratchNs, dst: IpAddr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "ping", "-c1", "-W2", "-q"])
        .arg(dst.to_string())
        .output()
        .unwrap()
        .status
        .success()
}

/// The kernel must have vxlan: made in a throwaway namespace, or the test fails loudly here.
pub fn probe_vxlan() {
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

pub struct Host {
    pub ns: ScratchNs,
    pub h: Handle,
    pub underlay: IpAddr,
}

pub struct Ctr {
    pub ns: ScratchNs,
    /// The first address is the container's `ip()`.
    pub ips: Vec<IpAddr>,
    pub mac: [u8; 6],
    pub host: usize,
    pub vni: u32,
    pub veth: String,
}

/// A network as the "controller" of these tests knows it.
#[derive(Clone)]
pub struct Net {
    pub id: &'static str,
    pub vni: u32,
    pub cidrs: Vec<IpNet>,
    pub mode: Mode,
    /// Hosts that have it, each with its IPAM blocks (routed mode routes them).
    pub members: Vec<(usize, Vec<IpNet>)>,
}

pub struct Lab {
    pub ctrs: Vec<Ctr>,
    pub hosts: Vec<Host>,
    _underlay: ScratchNs,
    pub nets: Vec<Net>,
    veths: u32,
}

impl Ctr {
    pub fn ip(&self) -> IpAddr {
        self.ips[0]
    }
}

impl Lab {
    /// An underlay bridge and `n` hosts on it, `eth0` = 10.76.0.(i+1)/24 each.
    pub fn new(n: usize) -> Lab {
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
    pub fn desired(&self, net: &Net, me: usize) -> NetworkDesired {
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
                .map(|(h, blocks)| RemoteHost {
                    underlay_ip: self.hosts[*h].underlay,
                    blocks: blocks.clone(),
                })
                .collect(),
        }
    }

    /// `sync_host` on every host; returns each host's changes.
    pub fn sync(&self) -> Vec<Applied> {
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
    pub fn add_ctr(&mut self, host: usize, vni: u32, addr: &str, mac: [u8; 6]) -> usize {
        self.add_ctr_with(host, vni, &[addr], mac)
    }

    /// A container with several addresses (each one an endpoint entry of the same MAC).
    pub fn add_ctr_with(&mut self, host: usize, vni: u32, addrs: &[&str], mac: [u8; 6]) -> usize {
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
    pub fn remove_ctr(&mut self, i: usize) -> Ctr {
        let c = self.ctrs.remove(i);
        let h = &self.hosts[c.host].h;
        let l = h.link_by_name(&c.veth).unwrap();
        h.del_link(l.index).unwrap();
        c
    }

    /// Every pair of containers of `vni` pings.
    pub fn assert_all_pairs_ping(&self, vni: u32) {
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

pub fn vxlan_net(id: &'static str, vni: u32, cidr: &str, hosts: &[usize]) -> Net {
    Net {
        id,
        vni,
        cidrs: vec![cidr.parse().unwrap()],
        mode: Mode::Vxlan,
        members: hosts.iter().map(|h| (*h, vec![])).collect(),
    }
}

/// Host `h`'s bridge neighbour for `addr` (permanent ones), and whether an FDB entry of `mac`
/// exists on its vxlan device (self or master).
pub fn entries(
    lab: &Lab,
    h: usize,
    vni: u32,
    addr: IpAddr,
    mac: [u8; 6],
) -> (Option<[u8; 6]>, bool) {
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
