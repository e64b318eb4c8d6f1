//! The table of conflists the differential test and the benchmark run. Pure data: each case is
//! a conflist plus what to probe once containers are attached. Addresses: case N uses
//! 10.244.N.0/24 and fd00:6b6e:N::/64; every side gets its own host namespace, so the two
//! implementations can use the same addresses.
//!
//! A case whose containers each need something of their own (host-device lends each one a
//! device) writes `{i}` in conflist strings, rendered per container index by [`for_container`],
//! and lists the `ip` commands that make those things in its [`HostSetup`].

use serde_json::{json, Map, Value};

use crate::scenario::OUTSIDE_LINK;

/// The bridge every case names (inside the test's own host namespace).
pub const BRIDGE: &str = "kntbr0";
/// The host's address on the link to the "outside" namespace, and the outside's own.
pub const OUTSIDE_HOST_IP: &str = "10.244.250.1";
pub const OUTSIDE_IP: &str = "10.244.250.2";

/// A port mapping given to the first container through runtimeConfig `portMappings`.
#[derive(Debug, Clone)]
pub struct PortMap {
    pub proto: &'static str,
    pub host_port: u16,
    pub container_port: u16,
    pub host_ip: Option<&'static str>,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub conflist: Value,
    /// Addresses container 1 must ping (the bridge's gateway addresses).
    pub gateways: Vec<String>,
    /// Port mappings of container 1 (probed from the host and from outside).
    pub ports: Vec<PortMap>,
    /// ipMasq: container 1 reaches the outside namespace, which has no route back.
    pub masq: bool,
    /// hairpinMode with portmap: container 1 reaches its own mapped port via the gateway.
    pub hairpin: bool,
    /// Runtime-fixed MACs, per container (capability `mac`).
    pub macs: Vec<&'static str>,
    /// Static addresses, per container (capability `ips`).
    pub ips: Vec<&'static str>,
    /// Extra container sysctls to compare (`{if}` = ifname).
    pub container_sysctls: Vec<&'static str>,
    /// Source-based routing (sbr): the container routes only traffic that carries one of its
    /// addresses as source, so pings are sent with `-I ADDR`.
    pub ping_from_own_addr: bool,
    /// Reference failures of DEL that are noted, not required: the reference sbr and
    /// host-device (1.1.1) fail DEL once their interface is gone (a second DEL), sbr also
    /// without a netns.
    pub ref_del_may_fail: bool,
    /// What the side's host namespace needs before the ADDs.
    pub host_setup: HostSetup,
    /// macspoofchk: container 0 under another MAC reaches neither the gateway nor container 1;
    /// under its own MAC again it does.
    pub spoof: bool,
    /// Container 0 reaches container 1 (false for links with no shared segment: vlan links
    /// on one master send out of it, dummy links send nowhere).
    pub peers_reachable: bool,
}

/// Commands run in each side's host namespace, each an argv split on whitespace.
#[derive(Debug, Clone, Default)]
pub struct HostSetup {
    /// Once, when the side is made.
    pub once: Vec<&'static str>,
    /// Before the ADD of container `i`, with `{i}` replaced by `i`.
    pub per_container: Vec<&'static str>,
}

impl Case {
    fn new(name: &'static str, conflist: Value) -> Case {
        Case {
            name,
            conflist,
            gateways: Vec::new(),
            ports: Vec::new(),
            masq: false,
            hairpin: false,
            macs: Vec::new(),
            ips: Vec::new(),
            container_sysctls: Vec::new(),
            host_setup: HostSetup::default(),
            peers_reachable: true,
            spoof: false,
            ping_from_own_addr: false,
            ref_del_may_fail: false,
        }
    }

    /// Capability arguments for container `i` (0-based).
    pub fn capability_args(&self, i: usize) -> Map<String, Value> {
        let mut m = Map::new();
        if i == 0 && !self.ports.is_empty() {
            let maps: Vec<Value> = self
                .ports
                .iter()
                .map(|p| {
                    let mut v = json!({"hostPort": p.host_port, "containerPort": p.container_port,
                        "protocol": p.proto});
                    if let Some(ip) = p.host_ip {
                        v["hostIP"] = json!(ip);
                    }
                    v
                })
                .collect();
            m.insert("portMappings".into(), Value::Array(maps));
        }
        if let Some(mac) = self.macs.get(i) {
            m.insert("mac".into(), json!(mac));
        }
        if let Some(ip) = self.ips.get(i) {
            m.insert("ips".into(), json!([ip]));
        }
        m
    }
}

/// The conflist of container `i`: `{i}` in every string replaced by `i`.
pub fn for_container(conflist: &Value, i: usize) -> Value {
    match conflist {
        Value::String(s) => Value::String(s.replace("{i}", &i.to_string())),
        Value::Array(a) => Value::Array(a.iter().map(|v| for_container(v, i)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), for_container(v, i)))
                .collect(),
        ),
        v => v.clone(),
    }
}

/// The conflist with every plugin's `ipam.dataDir` pointed at `dir`.
pub fn with_data_dir(conflist: &Value, dir: &str) -> Value {
    let mut c = conflist.clone();
    if let Some(plugins) = c.get_mut("plugins").and_then(Value::as_array_mut) {
        for p in plugins {
            if let Some(ipam) = p.get_mut("ipam").and_then(Value::as_object_mut) {
                if ipam.get("type").and_then(Value::as_str) == Some("host-local") {
                    ipam.insert("dataDir".into(), json!(dir));
                }
            }
        }
    }
    c
}

fn host_local(n: u8, v6: bool, default_route: bool) -> Value {
    let mut ranges = vec![json!([{"subnet": format!("10.244.{n}.0/24")}])];
    let mut routes = Vec::new();
    if default_route {
        routes.push(json!({"dst": "0.0.0.0/0"}));
    }
    if v6 {
        ranges.push(json!([{"subnet": format!("fd00:6b6e:{n}::/64")}]));
        if default_route {
            routes.push(json!({"dst": "::/0"}));
        }
    }
    json!({"type": "host-local", "ranges": ranges, "routes": routes})
}

fn bridge(extra: Value, ipam: Value) -> Value {
    let mut b = json!({"type": "bridge", "bridge": BRIDGE, "ipam": ipam});
    if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    b
}

fn list(version: &str, name: &str, plugins: Vec<Value>) -> Value {
    json!({"cniVersion": version, "name": name, "plugins": plugins})
}

fn gw(n: u8) -> String {
    format!("10.244.{n}.1")
}

fn ports(n: u8) -> Vec<PortMap> {
    vec![
        PortMap {
            proto: "tcp",
            host_port: 18080 + u16::from(n),
            container_port: 8080,
            host_ip: None,
        },
        PortMap {
            proto: "udp",
            host_port: 18180 + u16::from(n),
            container_port: 8081,
            host_ip: None,
        },
        PortMap {
            proto: "tcp",
            host_port: 18280 + u16::from(n),
            container_port: 8082,
            host_ip: Some(OUTSIDE_HOST_IP),
        },
    ]
}

/// bridge + host-local, gateway on the bridge, default route: the common case (and the bench's).
pub fn bridge_gateway(n: u8) -> Case {
    let c = list(
        "1.0.0",
        "knt-gw",
        vec![bridge(
            json!({"isGateway": true}),
            host_local(n, false, true),
        )],
    );
    let mut case = Case::new("bridge-gateway", c);
    case.gateways = vec![gw(n)];
    // Set by both over different paths (knit: netlink); the values must agree.
    case.container_sysctls = vec![
        "net/ipv4/conf/{if}/arp_notify",
        "net/ipv6/conf/{if}/accept_dad",
    ];
    case
}

/// podman's own chain, as `podman network create` writes it (0.4.0).
pub fn podman(n: u8) -> Case {
    let mut ipam = host_local(n, false, true);
    ipam["ranges"] = json!([[{"subnet": format!("10.244.{n}.0/24"), "gateway": gw(n)}]]);
    let c = list(
        "0.4.0",
        "knt-podman",
        vec![
            bridge(
                json!({"isGateway": true, "ipMasq": true, "hairpinMode": true}),
                ipam,
            ),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            json!({"type": "firewall", "backend": ""}),
            json!({"type": "tuning"}),
        ],
    );
    let mut case = Case::new("podman-chain", c);
    case.gateways = vec![gw(n)];
    case.ports = ports(n);
    case.masq = true;
    case.hairpin = true;
    case
}

/// Every case of the differential test.
pub fn all() -> Vec<Case> {
    let mut cases = vec![bridge_gateway(1)];

    let mut c = Case::new(
        "bridge-no-gateway",
        list(
            "1.0.0",
            "knt-nogw",
            vec![bridge(json!({}), host_local(2, false, false))],
        ),
    );
    c.gateways = vec![];
    cases.push(c);

    let mut c = Case::new(
        "bridge-ipmasq",
        list(
            "1.0.0",
            "knt-masq",
            vec![bridge(
                json!({"isGateway": true, "ipMasq": true}),
                host_local(3, false, true),
            )],
        ),
    );
    c.gateways = vec![gw(3)];
    c.masq = true;
    cases.push(c);

    let mut c = Case::new(
        "dual-stack",
        list(
            "1.0.0",
            "knt-dual",
            vec![bridge(
                json!({"isGateway": true}),
                host_local(4, true, true),
            )],
        ),
    );
    c.gateways = vec![gw(4), "fd00:6b6e:4::1".into()];
    cases.push(c);

    let static_ipam = json!({"type": "static", "routes": [{"dst": "0.0.0.0/0", "gw": gw(5)}]});
    let mut c = Case::new(
        "static-ips",
        list(
            "1.0.0",
            "knt-static",
            vec![{
                let mut b = bridge(json!({"isGateway": true}), static_ipam);
                b["capabilities"] = json!({"ips": true});
                b
            }],
        ),
    );
    c.gateways = vec![gw(5)];
    c.ips = vec!["10.244.5.10/24", "10.244.5.11/24", "10.244.5.12/24"];
    cases.push(c);

    let mut c = Case::new(
        "hairpin-portmap",
        list(
            "1.0.0",
            "knt-hairpin",
            vec![
                bridge(
                    json!({"isGateway": true, "hairpinMode": true}),
                    host_local(6, false, true),
                ),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ],
        ),
    );
    c.gateways = vec![gw(6)];
    c.ports = ports(6);
    c.hairpin = true;
    cases.push(c);

    let mut c = Case::new(
        "portmap",
        list(
            "1.0.0",
            "knt-portmap",
            vec![
                bridge(json!({"isGateway": true}), host_local(7, false, true)),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ],
        ),
    );
    c.gateways = vec![gw(7)];
    c.ports = ports(7);
    cases.push(c);

    let mut c = Case::new(
        "firewall",
        list(
            "1.0.0",
            "knt-firewall",
            vec![
                bridge(json!({"isGateway": true}), host_local(8, false, true)),
                json!({"type": "firewall"}),
            ],
        ),
    );
    c.gateways = vec![gw(8)];
    cases.push(c);

    let mut c = Case::new(
        "tuning",
        list(
            "1.0.0",
            "knt-tuning",
            vec![
                bridge(json!({"isGateway": true}), host_local(9, false, true)),
                json!({"type": "tuning", "mtu": 1400, "capabilities": {"mac": true},
                    "sysctl": {"net.core.somaxconn": "512",
                               "net.ipv4.conf.eth0.log_martians": "1"}}),
            ],
        ),
    );
    c.gateways = vec![gw(9)];
    c.macs = vec!["02:6b:6e:00:09:0a", "02:6b:6e:00:09:0b"];
    c.container_sysctls = vec!["net/core/somaxconn", "net/ipv4/conf/{if}/log_martians"];
    cases.push(c);

    cases.push(podman(10));

    // ptp: no bridge; the host end carries the gateway as /32 and routes to each container.
    let mut c = Case::new(
        "ptp",
        list(
            "1.0.0",
            "knt-ptp",
            vec![json!({"type": "ptp", "ipMasq": true, "mtu": 1400,
                "ipam": host_local(11, true, true)})],
        ),
    );
    c.gateways = vec![gw(11)];
    c.masq = true;
    c.container_sysctls = vec![
        "net/ipv4/conf/{if}/arp_notify",
        "net/ipv6/conf/{if}/accept_dad",
    ];
    cases.push(c);

    // macvlan on the host's link to the outside namespace: containers reach each other and
    // the outside directly (layer 2), not the host through their master (macvlan isolation).
    let mut c = Case::new(
        "macvlan",
        list(
            "0.4.0",
            "knt-macvlan",
            vec![
                json!({"type": "macvlan", "master": OUTSIDE_LINK, "mode": "bridge",
                "ipam": host_local(12, false, false)}),
            ],
        ),
    );
    c.gateways = vec![];
    c.container_sysctls = vec![
        "net/ipv4/conf/{if}/arp_notify",
        "net/ipv6/conf/{if}/ndisc_notify",
    ];
    cases.push(c);

    // bandwidth after bridge: tbf on the host veth, ifb + redirect for the other direction.
    let mut c = Case::new(
        "bandwidth",
        list(
            "1.0.0",
            "knt-bandwidth",
            vec![
                bridge(json!({"isGateway": true}), host_local(13, false, true)),
                json!({"type": "bandwidth",
                    "ingressRate": 50_000_000, "ingressBurst": 400_000,
                    "egressRate": 50_000_000, "egressBurst": 400_000}),
            ],
        ),
    );
    c.gateways = vec![gw(13)];
    cases.push(c);

    cases.push(host_device());

    // vlan on the host's link to the outside: tagged frames leave through the master, so the
    // containers do not reach each other through it. Needs CONFIG_VLAN_8021Q (probed).
    let mut c = Case::new(
        "vlan",
        list(
            "1.0.0",
            "knt-vlan",
            vec![
                json!({"type": "vlan", "master": OUTSIDE_LINK, "vlanId": 100, "mtu": 1400,
                "ipam": host_local(16, false, false)}),
            ],
        ),
    );
    c.peers_reachable = false;
    cases.push(c);

    // dummy: an address on a link that goes nowhere. Needs CONFIG_DUMMY (probed).
    let mut c = Case::new(
        "dummy",
        list(
            "1.0.0",
            "knt-dummy",
            vec![json!({"type": "dummy", "ipam": host_local(17, false, false)})],
        ),
    );
    c.peers_reachable = false;
    cases.push(c);
    // sbr after bridge: per-address rule and table, the interface's main-table routes moved.
    let mut c = Case::new(
        "sbr",
        list(
            "1.0.0",
            "knt-sbr",
            vec![
                bridge(json!({"isGateway": true}), host_local(15, false, true)),
                json!({"type": "sbr"}),
            ],
        ),
    );
    c.gateways = vec![gw(15)];
    c.ping_from_own_addr = true;
    c.ref_del_may_fail = true;
    cases.push(c);

    // macspoofchk: frames from each container's host port must carry its own MAC (the
    // reference's `bridge nat` chains, knit's `bridge knit` elements).
    let mut c = Case::new(
        "bridge-macspoofchk",
        list(
            "1.0.0",
            "knt-spoof",
            vec![bridge(
                json!({"isGateway": true, "macspoofchk": true}),
                host_local(18, false, true),
            )],
        ),
    );
    c.gateways = vec![gw(18)];
    c.spoof = true;
    cases.push(c);
    cases
}

/// host-device: container `i` is lent `kntd<i>`, one end of a veth whose other end `kntdp<i>`
/// is a port of the host bridge `kntlb0` holding the gateway, so reachability is real; after
/// DEL the devices must be back in the host under their names and in their state.
fn host_device() -> Case {
    let n = 14; // also in the setup commands' addresses
    let mut c = Case::new(
        "host-device",
        list(
            "1.0.0",
            "knt-hostdev",
            vec![json!({"type": "host-device", "device": "kntd{i}",
                "ipam": host_local(n, false, true)})],
        ),
    );
    c.gateways = vec![gw(n)];
    // The reference host-device's second DEL looks for IFNAME and fails when it is gone
    // (v1.1.1 cmdDel); the spec asks DEL to tolerate that. knit's must pass.
    c.ref_del_may_fail = true;
    c.host_setup = HostSetup {
        once: vec![
            "ip link add kntlb0 type bridge",
            "ip addr add 10.244.14.1/24 dev kntlb0",
            "ip link set kntlb0 up",
        ],
        per_container: vec![
            "ip link add kntd{i} type veth peer name kntdp{i}",
            "ip link set kntdp{i} master kntlb0",
            "ip link set kntdp{i} up",
            "ip link set kntd{i} up",
        ],
    };
    c
}

/// The case of `all()` named `name`.
pub fn by_name(name: &str) -> Option<Case> {
    all().into_iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_goes_into_host_local_only() {
        let c = podman(10);
        let with = with_data_dir(&c.conflist, "/tmp/x");
        assert_eq!(with["plugins"][0]["ipam"]["dataDir"], "/tmp/x");
        assert!(with["plugins"][1].get("ipam").is_none());
        let s = with_data_dir(&all()[4].conflist, "/tmp/x");
        assert!(s["plugins"][0]["ipam"].get("dataDir").is_none());
    }

    #[test]
    fn case_names_are_unique_and_ports_only_for_the_first_container() {
        let cases = all();
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len());
        let pm = cases.iter().find(|c| c.name == "portmap").unwrap();
        assert_eq!(
            pm.capability_args(0)["portMappings"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert!(pm.capability_args(1).get("portMappings").is_none());
    }

    #[test]
    fn per_container_conflists_render_the_index() {
        let hd = by_name("host-device").unwrap();
        assert_eq!(
            for_container(&hd.conflist, 2)["plugins"][0]["device"],
            "kntd2"
        );
        assert!(hd.host_setup.once[1].contains(&gw(14)));
        let bg = bridge_gateway(1);
        assert_eq!(for_container(&bg.conflist, 1), bg.conflist);
    }
}
