//! Measures what one bridge attach/detach costs through libnet in a throwaway namespace pair:
//! `cargo run --release -p libnet --example probe_cost` (root).
use std::time::Instant;

use libnet::driver::bridge::{Bridge, BridgeNet, IpConf, RouteConf};
use libnet::driver::Driver;
use libnet::endpoint::{self, Addressing, Fixed, Request};
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
        let driver = Bridge { h: &h, net };
        for i in 0..10 {
            let t0 = Instant::now();
            let c = NetNs::open(format!("/run/netns/{cn}")).unwrap();
            let req = Request {
                network: "probe",
                container_id: "x",
                ifname: "eth0",
                netns: Some(&c),
                mac: None,
            };
            let mut source = Fixed(Addressing {
                ips: ips.clone(),
                routes: routes.clone(),
            });
            endpoint::attach(&req, &mut source, &driver, &[]).unwrap();
            let t1 = Instant::now();
            driver.detach("x", "eth0", None).unwrap();
            let t2 = Instant::now();
            println!("{i}: attach {:?} detach {:?}", t1 - t0, t2 - t1);
        }
    })
    .unwrap();
    drop(ctr);
    NetNs::delete_named(&hn).unwrap();
    NetNs::delete_named(&cn).unwrap();
}
