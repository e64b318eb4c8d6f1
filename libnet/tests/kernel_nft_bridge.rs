//! Kernel tests of `table bridge knit` (macspoofchk elements), each in a fresh namespace: the
//! skeleton made once beside `inet knit`, foreign bridge tables untouched, DEL and GC finding
//! elements by state file or by comment. Traffic through the check is tested with the bridge
//! plugin (cni-plugins/tests/kernel_spoofchk.rs). Run as root: `cargo test -p libnet
//! --features root-tests --test kernel_nft_bridge`.
#![cfg(feature = "root-tests")]

mod common;

use common::{att, nft, TestNs, TmpDir};
use libnet::nft::{Attachment, Feature};

/// A reference-style table of someone else's, with a chain on the same hook as ours.
const FOREIGN: &str = "table bridge nat {
	chain PREROUTING {
		type filter hook prerouting priority -300; policy accept;
		iifname \"vethforeign\" ether saddr != 0a:58:0a:f4:99:99 drop
	}
}
";

fn mac(n: u8) -> [u8; 6] {
    [0x0a, 0x58, 0x0a, 0xf4, 0x1e, n]
}

#[test]
fn bridge_skeleton_made_once_beside_inet_and_foreign_tables_untouched() {
    let h = TestNs::new("h");
    h.sh(&format!("printf '{FOREIGN}' | nft -f -"));
    let foreign = h.sh("nft list table bridge nat");
    let dir = TmpDir::new();
    std::thread::scope(|s| {
        for i in 0..6u8 {
            let (h, dir) = (&h, &dir);
            s.spawn(move || {
                let nft = nft(dir);
                let a = att(&format!("conc{i}"));
                let ips = vec![format!("10.244.30.{}/24", i + 2).parse().unwrap()];
                h.ns.run_in(|| {
                    nft.ensure_masq(&a, &ips).unwrap();
                    nft.ensure_spoofchk(&a, &format!("vethk{i}"), mac(i))
                        .unwrap();
                })
                .unwrap();
            });
        }
    });
    let rules = h
        .knit_objects("bridge")
        .iter()
        .filter(|o| o.get("rule").is_some())
        .count();
    assert_eq!(rules, 1, "the fixed rule made exactly once");
    assert_eq!(h.knit_elems("bridge", "spoof_ports").len(), 6);
    assert_eq!(h.knit_elems("bridge", "spoof_ok").len(), 6);
    h.sh("nft list table inet knit");
    let nft = nft(&dir);
    h.ns.run_in(|| {
        nft.check_spoofchk(&att("conc3"), "vethk3", mac(3)).unwrap();
        assert!(nft.check_spoofchk(&att("conc3"), "vethk3", mac(4)).is_err());
        for i in 0..6 {
            nft.del_spoofchk(&att(&format!("conc{i}"))).unwrap();
        }
        nft.gc("knt-net", &[]).unwrap();
    })
    .unwrap();
    assert!(h.knit_elems("bridge", "spoof_ports").is_empty());
    assert!(h.knit_elems("bridge", "spoof_ok").is_empty());
    assert_eq!(h.sh("nft list table bridge nat"), foreign, "not ours");
}

#[test]
fn gc_and_cut_short_del_sweep_the_bridge_table_by_comment() {
    let h = TestNs::new("h");
    let dir = TmpDir::new();
    let nft = nft(&dir);
    let (keep, leaked, cut) = (att("keep"), att("leak"), att("cut"));
    let other = Attachment::new("knt-other", "other", "eth0");
    h.ns.run_in(|| {
        for (i, a) in [&keep, &leaked, &cut, &other].into_iter().enumerate() {
            nft.ensure_spoofchk(a, &format!("vethg{i}"), mac(i as u8))
                .unwrap();
        }
    })
    .unwrap();
    // `leaked` lost its state file; `cut`'s was cut short by a crash.
    for p in dir.files_of(&leaked) {
        std::fs::remove_file(p).unwrap();
    }
    for p in dir.files_of(&cut) {
        std::fs::write(p, b"").unwrap();
    }
    h.ns.run_in(|| nft.del_spoofchk(&cut)).unwrap().unwrap();
    assert_eq!(
        h.knit_elems("bridge", "spoof_ok").len(),
        3,
        "cut's pair swept by comment"
    );
    assert!(dir.files_of(&cut).is_empty());
    h.ns.run_in(|| nft.gc("knt-net", std::slice::from_ref(&keep)))
        .unwrap()
        .unwrap();
    let left: Vec<String> = h
        .knit_elems("bridge", "spoof_ports")
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(left.len(), 2, "keep's and the other network's: {left:?}");
    assert!(left.iter().any(|e| e.contains("vethg0")), "{left:?}");
    assert!(left.iter().any(|e| e.contains("vethg3")), "{left:?}");
    assert!(nft
        .state()
        .read(&other, Feature::Spoofchk)
        .unwrap()
        .is_some());
}
