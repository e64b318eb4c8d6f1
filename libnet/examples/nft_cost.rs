//! Measures what the nft layer costs per CNI call in a throwaway namespace (root):
//! `cargo run --release -p libnet --example nft_cost [STATE_DIR]`.
//! Prints: one element transaction through libnftables vs a forked `nft -f -`, the state file
//! write, a whole ensure_portmap with 0 and 1,000 attachments present, and a whole del_portmap.
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libnet::netns::NetNs;
use libnet::nft::{Attachment, LibNft, Nft, NftApply, NftCli, RawPortMapping, StateDir};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut(u32)>(n: u32, mut f: F) -> Duration {
    median(
        (0..n)
            .map(|i| {
                let t0 = Instant::now();
                f(i);
                t0.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let pid = std::process::id();
    let name = format!("knt-{pid}-cost");
    let ns = NetNs::create_named(&name).unwrap();
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("/tmp/knt-{pid}-cost-state"));
    let nft = Nft::with(LibNft::new().unwrap(), StateDir::new(&dir));
    let pm = |port: u32| {
        RawPortMapping {
            host_port: i64::from(port),
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }
        .validate()
        .unwrap()
    };
    let cip = |i: u32| IpAddr::from([10, 244, 40 + (i / 250) as u8, (i % 250) as u8 + 2]);
    ns.run_in(|| {
        let att = |i: u32| Attachment::new("knt-cost", &format!("c{i}"), "eth0");
        nft.ensure_portmap(&att(0), &[pm(40000)], &[cip(0)])
            .unwrap();
        let lib = time(50, |i| {
            let s = format!("add element inet knit masq4 {{ 10.244.60.{} }}\n", i + 2);
            LibNft.run("add", &s).unwrap();
        });
        let cli = time(20, |i| {
            let s = format!("add element inet knit masq4 {{ 10.244.61.{} }}\n", i + 2);
            NftCli.run("add", &s).unwrap();
        });
        let first = time(50, |i| {
            nft.ensure_portmap(&att(i + 1), &[pm(40001 + i)], &[cip(i + 1)])
                .unwrap();
        });
        for i in 51..1000 {
            nft.ensure_portmap(&att(i), &[pm(40000 + i)], &[cip(i)])
                .unwrap();
        }
        let last = time(50, |i| {
            nft.ensure_portmap(&att(1000 + i), &[pm(41000 + i)], &[cip(1000 + i)])
                .unwrap();
        });
        let del = time(50, |i| nft.del_portmap(&att(1000 + i)).unwrap());
        let check = time(20, |i| {
            nft.check_portmap(&att(i + 1), &[pm(40001 + i)], &[cip(i + 1)])
                .unwrap();
        });
        let st = StateDir::new(format!("{dir}/w"));
        let write = time(50, |i| {
            let rec = libnet::nft::Record {
                attachment: att(5000 + i),
                feature: libnet::nft::Feature::Portmap,
                elems: Vec::new(),
            };
            st.write(&rec).unwrap();
        });
        println!("one element add, libnftables in-process: {lib:?} (median)");
        println!("state file write + fsync:                {write:?}");
        println!("one element add, forked nft -f -:        {cli:?}");
        println!("ensure_portmap, ~50 present:             {first:?}");
        println!("ensure_portmap, ~1000 present:           {last:?}");
        println!("del_portmap, ~1000 present:              {del:?}");
        println!("check_portmap:                           {check:?}");
    })
    .unwrap();
    let _ = NetNs::delete_named(&name);
    let _ = std::fs::remove_dir_all(&dir);
}
