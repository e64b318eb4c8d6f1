//! Measures what one bridge attach/detach costs through libnet in a throwaway namespace pair:
//! `cargo run --release -p libnet --example probe_cost` (root).
use std::time::Instant;

use libnet::driver::bridge::{self, BridgeNet, Endpoint, IpConf, RouteConf};
use libnet::netlink::Handle;
use libnet::netns::NetNs;

fn main() {
    let pid = std::process::id();
    let (hn, cn) = (format!("knt-{pid}-ph"), format!("knt-{pid}-pc"));
    let host = NetNs::create_named(&hn).unwrap();
    let ctr = NetNs::create_named(&cn).unwrap();
    let net = BridgeNet {
        bridge: "kbrp".into(),
        is_gateway: true,
        ..Default::default()
    };
    let ips = vec![IpConf {
        addr: "10.244.3.2/24".parse().unwrap(),
        gateway: "10.244.3.1".parse().ok(),
    }];
    let routes = vec![RouteConf {
        dst: "0.0.0.0/0".parse().unwrap(),
        gw: None,
    }];
    host.run_in(|| {
        let h = Handle::new().unwrap();
        for i in 0..10 {
            let t0 = Instant::now();
            let c = NetNs::open(format!("/run/netns/{cn}")).unwrap();
            let ep = Endpoint {
                container_id: "x",
                ifname: "eth0",
                netns: &c,
                mac: None,
                ips: ips.clone(),
                routes: routes.clone(),
            };
            bridge::attach(&h, &net, &ep).unwrap();
            let t1 = Instant::now();
            bridge::detach(&h, "x", "eth0", None).unwrap();
            let t2 = Instant::now();
            println!("{i}: attach {:?} detach {:?}", t1 - t0, t2 - t1);
        }
    })
    .unwrap();
    drop(ctr);
    NetNs::delete_named(&hn).unwrap();
    NetNs::delete_named(&cn).unwrap();
}
