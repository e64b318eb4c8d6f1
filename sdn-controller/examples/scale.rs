//! Measures the model at scale, no etcd: `cargo run --release -p sdn-controller --example
//! scale -- HOSTS NETWORKS ENDPOINTS`. Prints the load time, the compute time of one change
//! of each kind (p50/p99 over many), and the sizes of the frames it makes (a delta, a full
//! state) as JSON.

use std::time::Instant;

use sdn_controller::hub::{CatchUp, Hub};
use sdn_controller::model::{Model, Update};
use sdn_controller::proto::ControllerMsg;
use store::etcd::{Block, Host};
use store::{Driver, Endpoint, Network, Pool};

fn host(i: u32) -> Update {
    Update::Host(
        format!("h{i}"),
        Some(Host {
            name: format!("h{i}"),
            underlay_ip: std::net::Ipv4Addr::from(0xC0A8_0000 + i).into(),
            vtep_mac: "02:00:00:00:00:01".into(),
        }),
    )
}

fn endpoint(n: u32, j: u32, hosts: u32) -> Update {
    let mut e = Endpoint::new(format!("n{n}"));
    e.id = format!("e{j}");
    e.host = format!("h{}", j % hosts);
    let ip = std::net::Ipv4Addr::from((10 << 24) + (n << 20) + 2 + j);
    e.mac = format!(
        "0a:58:{}",
        ip.octets().map(|o| format!("{o:02x}")).join(":")
    );
    e.ipv4 = Some(format!("{ip}/12").parse().unwrap());
    Update::Endpoint(format!("n{n}/e{j}"), Some(e))
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (hosts, nets, eps) = (
        *args.first().unwrap_or(&1000),
        *args.get(1).unwrap_or(&10),
        *args.get(2).unwrap_or(&100_000),
    );
    let t = Instant::now();
    let mut m = Model::new();
    for n in 0..nets {
        let mut net = Network::new(format!("net{n}"), Driver::Overlay);
        net.id = format!("n{n}");
        net.ipam
            .push(Pool::new(format!("10.{}.0.0/12", n << 4).parse().unwrap()));
        m.load(Update::Network(net.id.clone(), Some(net)));
        m.load(Update::Vni(format!("n{n}"), Some(4096 + n)));
    }
    for i in 0..hosts {
        m.load(host(i));
        m.load(Update::Block(
            format!("n0/b{i}"),
            Some(Block {
                network_id: "n0".into(),
                cidr: format!("10.0.{}.0/26", i % 250).parse().unwrap(),
                host: format!("h{i}"),
            }),
        ));
    }
    for j in 0..eps {
        m.load(endpoint(j % nets, j, hosts));
    }
    println!(
        "load: {hosts} hosts, {nets} networks, {eps} endpoints in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mut hub = Hub::new(m, 1 << 24, 256);
    let mut times = Vec::new();
    for k in 0..200 {
        let t = Instant::now();
        hub.apply(vec![endpoint(k % nets, eps + k, hosts)]);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "endpoint put: p50 {:.3} ms, p99 {:.3} ms (changes for {} hosts each)",
        pct(times.clone(), 0.5),
        pct(times, 0.99),
        hosts - 1
    );
    let mut times = Vec::new();
    for k in 0..50 {
        let t = Instant::now();
        hub.apply(vec![Update::Block(
            format!("n0/x{k}"),
            Some(Block {
                network_id: "n0".into(),
                cidr: format!("10.1.{k}.0/26").parse().unwrap(),
                host: format!("h{}", k % hosts),
            }),
        )]);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "block put: p50 {:.3} ms, p99 {:.3} ms",
        pct(times.clone(), 0.5),
        pct(times, 0.99)
    );
    let t = Instant::now();
    hub.apply(vec![host(hosts)]);
    println!(
        "host registers: {:.1} ms (every other host gets it in every network, with its endpoints)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let v = hub.host_version("h1").unwrap_or(0);
    hub.apply(vec![endpoint(0, eps + 1000, hosts)]);
    if let CatchUp::Deltas(d) = hub.catch_up("h1", Some(v)) {
        let sizes: Vec<usize> = d
            .iter()
            .map(|m| {
                serde_json::to_vec(&m.to_msg())
                    .map(|b| b.len())
                    .unwrap_or(0)
            })
            .collect();
        println!("delta of one endpoint put: {sizes:?} bytes");
    }
    let t = Instant::now();
    if let CatchUp::Full(f) = hub.catch_up("h1", None) {
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let len = serde_json::to_vec(&f).map(|b| b.len()).unwrap_or(0);
        if let ControllerMsg::Full { state, .. } = &f {
            let n: usize = state.networks.iter().map(|n| n.endpoints.len()).sum();
            println!(
                "full state of one host: {len} bytes, {n} endpoints ({} bytes each), computed in {ms:.1} ms",
                len / n.max(1)
            );
        }
    }
}
