//! Pure tests: golden renderings of the plans, validation, and the ensure/del/gc flow against a
//! fake applier. No root needed. `KNIT_UPDATE_GOLDEN=1` rewrites the golden files.

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::PathBuf;

use super::plan::*;
use super::*;
use crate::{HasKind, Kind};

fn golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/nft/golden")
        .join(name);
    if std::env::var_os("KNIT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "golden {name} differs (KNIT_UPDATE_GOLDEN=1 to accept)"
    );
}

fn att() -> Attachment {
    Attachment::new("podman", "0123456789abcdef0123456789abcdef", "eth0")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pm(h: i64, c: i64, proto: &str, host_ip: &str) -> PortMapping {
    RawPortMapping {
        host_port: h,
        container_port: c,
        protocol: proto.into(),
        host_ip: host_ip.into(),
    }
    .validate()
    .unwrap()
}

#[test]
fn golden_masq() {
    let ips: Vec<IpNet> = vec![
        "10.244.1.5/24".parse().unwrap(),
        "fd00:6b6e:1::5/64".parse().unwrap(),
    ];
    let elems = plan_masq(&ips);
    golden(
        "masq_add.nft",
        &render_ops(&ops_add(&elems), &att().comment()),
    );
    golden("masq_del.nft", &render_ops(&ops_del(&elems), "unused"));
}

#[test]
fn golden_portmap() {
    let maps = vec![
        pm(8080, 80, "tcp", ""),
        pm(5353, 53, "udp", "127.0.0.1"),
        pm(9000, 9000, "sctp", "0.0.0.0"),
        pm(8443, 443, "TCP", "fd00:6b6e::1"),
    ];
    let ips = [ip("10.244.1.5"), ip("fd00:6b6e:1::5")];
    let elems = plan_portmap(&maps, &ips).unwrap();
    golden(
        "portmap_add.nft",
        &render_ops(&ops_add(&elems), &att().comment()),
    );
}

#[test]
fn golden_firewall() {
    let ips = [ip("10.244.1.5"), ip("fd00:6b6e:1::5")];
    let open = plan_firewall("knbr0", &ips, IngressPolicy::Open).unwrap();
    let iso = plan_firewall("knbr0", &ips, IngressPolicy::SameBridge).unwrap();
    let mut s = render_ops(&ops_add(&open), "c");
    s.push_str("# same-bridge\n");
    s.push_str(&render_ops(&ops_add(&iso), "c"));
    golden("firewall_add.nft", &s);
}

#[test]
fn golden_skeleton_create() {
    golden("skeleton_create.nft", &render_create_skeleton(Table::Inet));
    golden(
        "bridge_skeleton_create.nft",
        &render_create_skeleton(Table::Bridge),
    );
}

#[test]
fn golden_spoofchk() {
    let elems = plan_spoofchk("veth0a1b2c3d", [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05]).unwrap();
    let mut s = render_ops(&ops_add(&elems), &att().comment());
    s.push_str(&render_ops(&ops_del(&elems), "unused"));
    golden("spoofchk.nft", &s);
    assert!(elems.iter().all(|e| Table::of_set(&e.set) == Table::Bridge));
    assert!(plan_spoofchk("", [0; 6]).is_err());
    assert!(plan_spoofchk("a\"b", [0; 6]).is_err());
}

#[test]
fn golden_service() {
    let ports = [
        ServicePort {
            protocol: Proto::Tcp,
            port: 80,
            target: 8080,
        },
        ServicePort {
            protocol: Proto::Udp,
            port: 53,
            target: 53,
        },
    ];
    let three = [
        ip("10.244.1.5"),
        ip("fd00:6b6e:1::5"),
        ip("10.244.1.6"),
        ip("10.244.1.7"),
    ];
    let vip = ip("10.244.1.250");
    let v4: Vec<IpAddr> = three.iter().filter(|a| a.is_ipv4()).copied().collect();
    let slots = assign_slots(&[], &v4);
    let elems = plan_service(vip, &ports, &slots).unwrap();
    assert_eq!(
        slots_of(&elems),
        [ip("10.244.1.5"), ip("10.244.1.6"), ip("10.244.1.7")]
    );
    let mut s = render_ops(&ops_add(&elems), &att().comment());
    // The first backend goes: the last one takes its slot, nothing else moves.
    let after = assign_slots(&slots_of(&elems), &v4[1..]);
    assert_eq!(after, [ip("10.244.1.7"), ip("10.244.1.6")]);
    let two = plan_service(vip, &ports, &after).unwrap();
    s.push_str("# one backend less\n");
    s.push_str(&render_ops(&ops_replace(&elems, &two), "c"));
    let v6 = plan_service(ip("fd00:6b6e:1::fa"), &ports[..1], &three).unwrap();
    s.push_str("# v6\n");
    s.push_str(&render_ops(&ops_add(&v6), "c"));
    golden("service.nft", &s);
    for e in elems.iter().chain(&two).chain(&v6) {
        WireElem::encode(e).unwrap();
    }
    assert!(plan_service(vip, &[ports[0], ports[0]], &three).is_err());
    let none = plan_service(vip, &ports, &[]).unwrap();
    assert_eq!(none.len(), 1, "only the VIP: {none:?}");
}

#[test]
fn slots_stay_put_and_holes_are_filled_by_the_last() {
    let b: Vec<IpAddr> = (1..=6).map(|i| ip(&format!("10.0.0.{i}"))).collect();
    assert_eq!(assign_slots(&[], &b[..3]), b[..3]);
    // Added: appended. Removed in the middle: the last fills the hole.
    assert_eq!(assign_slots(&b[..3], &b[..4]), b[..4]);
    assert_eq!(
        assign_slots(&b[..4], &[b[0], b[2], b[3]]),
        [b[0], b[3], b[2]]
    );
    // Removed and added at once: the new one takes the hole.
    assert_eq!(
        assign_slots(&b[..3], &[b[0], b[2], b[5]]),
        [b[0], b[5], b[2]]
    );
    // Duplicates count once; at most SERVICE_MAX_BACKENDS slots.
    assert_eq!(assign_slots(&[], &[b[0], b[0], b[1]]), b[..2]);
    let many: Vec<IpAddr> = (0..100u32)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    assert_eq!(assign_slots(&[], &many).len(), SERVICE_MAX_BACKENDS);
    // Every slot order survives its elements.
    let e = plan_service(
        ip("10.0.0.100"),
        &[ServicePort {
            protocol: Proto::Tcp,
            port: 1,
            target: 1,
        }],
        &b,
    )
    .unwrap();
    assert_eq!(slots_of(&e), b);
}

#[test]
fn the_skeleton_has_one_chain_per_backend_count() {
    for n in 1..=SERVICE_MAX_BACKENDS {
        assert!(
            SKELETON.contains(&format!("chain svc_mod_{n} {{")),
            "svc_mod_{n} missing"
        );
        assert!(SKELETON.contains(&format!("numgen random mod {n} map @svc_slot4")));
    }
    assert!(!SKELETON.contains(&format!("chain svc_mod_{} {{", SERVICE_MAX_BACKENDS + 1)));
}

#[test]
fn replace_deletes_only_stale() {
    let ips = [ip("10.244.1.5")];
    let old = plan_portmap(&[pm(8080, 80, "tcp", ""), pm(8081, 81, "tcp", "")], &ips).unwrap();
    let new = plan_portmap(&[pm(8080, 80, "tcp", "")], &ips).unwrap();
    golden(
        "portmap_replace.nft",
        &render_ops(&ops_replace(&old, &new), "c"),
    );
}

#[test]
fn validation() {
    let bad = |h: i64, c: i64, p: &str, hip: &str| {
        RawPortMapping {
            host_port: h,
            container_port: c,
            protocol: p.into(),
            host_ip: hip.into(),
        }
        .validate()
        .unwrap_err()
        .kind()
    };
    assert_eq!(bad(0, 80, "tcp", ""), Kind::Invalid);
    assert_eq!(bad(65536, 80, "tcp", ""), Kind::Invalid);
    assert_eq!(bad(80, -1, "tcp", ""), Kind::Invalid);
    assert_eq!(bad(80, 80, "icmp", ""), Kind::Invalid);
    assert_eq!(bad(80, 80, "tcp", "not-an-ip"), Kind::Invalid);
    assert_eq!(pm(80, 80, "", "").protocol, Proto::Tcp);
    // A v6 hostIP with only a v4 container address is skipped, as the reference does.
    assert!(
        plan_portmap(&[pm(80, 80, "tcp", "::1")], &[ip("10.244.1.5")])
            .unwrap()
            .is_empty()
    );
    let dup = [pm(80, 80, "tcp", ""), pm(80, 81, "tcp", "")];
    assert_eq!(
        plan_portmap(&dup, &[ip("10.244.1.5")]).unwrap_err().kind(),
        Kind::Invalid
    );
    assert!(plan_firewall("a\"b", &[], IngressPolicy::Open).is_err());
    assert_eq!(
        IngressPolicy::parse("same-bridge").unwrap(),
        IngressPolicy::SameBridge
    );
    assert!(IngressPolicy::parse("closed").is_err());
}

#[test]
fn comment_is_bounded_and_names_id() {
    let long = Attachment::new(&"n".repeat(200), "c", "eth0");
    let c = long.comment();
    assert!(c.len() < COMMENT_MAX);
    assert!(c.starts_with(&format!("knit:{} ", long.id())));
    assert_ne!(att().id(), Attachment::new("podman", "0123", "eth1").id());
}

type Key = (String, Vec<u8>);

/// Records transactions (as nft syntax) and keeps the elements they leave; reports "missing"
/// until a skeleton was created.
#[derive(Default)]
struct Fake {
    scripts: RefCell<Vec<String>>,
    tables: RefCell<std::collections::HashSet<String>>,
    elems: RefCell<std::collections::HashMap<Key, Found>>,
    /// Die (panic) right after the kernel took an element transaction: a process killed
    /// between the transaction and whatever it does next.
    die_after: std::cell::Cell<bool>,
    /// Refuse every element transaction (as the kernel would a bad batch).
    refuse: std::cell::Cell<bool>,
}

impl NftApply for Fake {
    fn run(&self, _: &'static str, script: &str) -> Result<(), NftError> {
        self.scripts.borrow_mut().push(script.to_string());
        if let Some(t) = script.lines().next().unwrap().strip_prefix("create table ") {
            self.tables.borrow_mut().insert(t.to_string());
        }
        Ok(())
    }

    fn query(&self, _: &'static str, _: &str, _: bool) -> Result<String, NftError> {
        Ok(r#"{"nftables":[]}"#.into())
    }

    fn elems(&self, op: &'static str, ops: &[ElemOp], comment: &str) -> Result<(), NftError> {
        self.scripts.borrow_mut().push(render_ops(ops, comment));
        if self.refuse.get() {
            return Err(NftError::apply(op, "Error: Invalid argument"));
        }
        let tables = self.tables.borrow();
        if ops
            .iter()
            .any(|op| !tables.contains(Table::of_set(&op.elem().set).name()))
        {
            return Err(NftError::apply(op, "Error: No such file or directory"));
        }
        let mut have = self.elems.borrow_mut();
        for op in ops {
            let (ElemOp::Add(e) | ElemOp::Touch(e) | ElemOp::Del(e)) = op;
            let w = WireElem::encode(e).unwrap();
            let key = (w.set.clone(), w.key.clone());
            match op {
                ElemOp::Add(_) => {
                    have.entry(key).or_insert(Found {
                        data: w.data.unwrap_or_default(),
                        comment: Some(comment.to_string()),
                    });
                }
                ElemOp::Touch(_) => {}
                ElemOp::Del(_) => {
                    have.remove(&key);
                }
            }
        }
        if self.die_after.get() {
            panic!("killed after the transaction");
        }
        Ok(())
    }

    fn lookup(&self, elems: &[WireElem]) -> Result<Vec<Option<Found>>, NftError> {
        let have = self.elems.borrow();
        Ok(elems
            .iter()
            .map(|w| have.get(&(w.set.clone(), w.key.clone())).cloned())
            .collect())
    }
}

fn tmp_state(tag: &str) -> StateDir {
    let d = std::env::temp_dir().join(format!("knit-nft-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    StateDir::new(d)
}

#[test]
fn ensure_makes_skeleton_once_and_del_uses_state() {
    let nft = Nft::with(Fake::default(), tmp_state("flow"));
    let a = att();
    nft.ensure_portmap(&a, &[pm(8080, 80, "tcp", "")], &[ip("10.244.1.5")])
        .unwrap();
    {
        let s = nft.apply.scripts.borrow();
        assert_eq!(s.len(), 4, "try, retry under lock, skeleton, elements");
        assert!(s[2].starts_with("create table inet knit\n"));
        assert_eq!(s[3], s[0]);
    }
    nft.ensure_masq(&a, &["10.244.1.5/24".parse().unwrap()])
        .unwrap();
    assert_eq!(
        nft.apply.scripts.borrow().len(),
        5,
        "table exists: one transaction"
    );
    nft.del_portmap(&a).unwrap();
    let last = nft.apply.scripts.borrow().last().unwrap().clone();
    assert!(
        last.contains("delete element inet knit pm4_any { tcp . 8080 }"),
        "{last}"
    );
    assert!(nft.state.read(&a, Feature::Portmap).unwrap().is_none());
    let n = nft.apply.scripts.borrow().len();
    nft.del_portmap(&a).unwrap();
    assert_eq!(
        nft.apply.scripts.borrow().len(),
        n,
        "second DEL: nothing to do"
    );
    nft.gc("other-net", &[]).unwrap();
    assert!(
        nft.state.read(&a, Feature::Masq).unwrap().is_some(),
        "another network's GC"
    );
    nft.gc("podman", &[]).unwrap();
    assert!(
        nft.state.read(&a, Feature::Masq).unwrap().is_none(),
        "gc removed masq"
    );
    let _ = std::fs::remove_dir_all(nft.state.dir());
}

#[test]
fn spoofchk_makes_the_bridge_table_and_is_owned_per_attachment() {
    let nft = Nft::with(Fake::default(), tmp_state("spoof"));
    let (a, b) = (att(), Attachment::new("podman", "other", "eth0"));
    let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05];
    nft.ensure_masq(&a, &["10.244.1.5/24".parse().unwrap()])
        .unwrap();
    nft.ensure_spoofchk(&a, "veth1", mac).unwrap();
    {
        let s = nft.apply.scripts.borrow();
        let creates: Vec<_> = s.iter().filter(|s| s.starts_with("create")).collect();
        assert_eq!(creates.len(), 2, "{s:?}");
        assert!(creates[1].starts_with("create table bridge knit\n"));
    }
    nft.check_spoofchk(&a, "veth1", mac).unwrap();
    let other = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x06];
    assert_eq!(
        nft.check_spoofchk(&a, "veth1", other).unwrap_err().kind(),
        Kind::NotFound
    );
    // The same port for another attachment: refused.
    assert_eq!(
        nft.ensure_spoofchk(&b, "veth1", mac).unwrap_err().kind(),
        Kind::Exists
    );
    // A new MAC replaces the old pair in one transaction.
    nft.ensure_spoofchk(&a, "veth1", other).unwrap();
    nft.check_spoofchk(&a, "veth1", other).unwrap();
    assert!(nft.check_spoofchk(&a, "veth1", mac).is_err());
    nft.del_spoofchk(&a).unwrap();
    nft.del_spoofchk(&a).unwrap();
    assert!(nft.check_spoofchk(&a, "veth1", other).is_err());
    assert!(nft.apply.elems.borrow().len() == 2, "masq stays");
    nft.ensure_spoofchk(&a, "veth1", mac).unwrap();
    nft.gc("podman", std::slice::from_ref(&a)).unwrap();
    nft.check_spoofchk(&a, "veth1", mac).unwrap();
    nft.gc("podman", &[]).unwrap();
    assert!(nft.apply.elems.borrow().is_empty());
    assert!(nft.state.read(&a, Feature::Spoofchk).unwrap().is_none());
    let _ = std::fs::remove_dir_all(nft.state.dir());
}

#[test]
fn state_dir_is_a_value_never_the_environment() {
    assert_eq!(
        Nft::new().state().dir(),
        std::path::Path::new(DEFAULT_STATE_DIR)
    );
    let root = crate::StateRoot::new("/tmp/knit-x");
    assert_eq!(
        Nft::at(root.nft()).state().dir(),
        std::path::Path::new("/tmp/knit-x/nft")
    );
}

#[test]
fn golden_netlink_batch() {
    let elems = plan_portmap(&[pm(8080, 80, "tcp", "")], &[ip("10.244.1.5")]).unwrap();
    let mut ops = ops_del(&elems[..1]);
    ops.extend(ops_add(&elems));
    let bytes = super::wire::batch(&ops, "knit:c").unwrap();
    let mut hex = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        hex.push_str(&format!("{:04x}  {}\n", i * 16, line.join(" ")));
    }
    golden("portmap_batch.hex", &hex);
}

#[test]
fn elements_of_another_attachment_are_refused_and_never_deleted() {
    let nft = Nft::with(Fake::default(), tmp_state("owner"));
    let (a, b) = (att(), Attachment::new("podman", "other", "eth0"));
    let ips: Vec<IpNet> = vec!["10.244.1.5/24".parse().unwrap()];
    nft.ensure_masq(&a, &ips).unwrap();
    nft.ensure_masq(&a, &ips).unwrap();
    let e = nft.ensure_masq(&b, &ips).unwrap_err();
    assert_eq!(e.kind(), Kind::Exists, "{e}");
    nft.check_masq(&a, &ips).unwrap();
    assert_eq!(nft.check_masq(&b, &ips).unwrap_err().kind(), Kind::NotFound);
    // b's DEL (nothing recorded) and a stale record of b leave a's elements alone.
    nft.del_masq(&b).unwrap();
    nft.state
        .write(&Record {
            attachment: b.clone(),
            feature: Feature::Masq,
            elems: plan_masq(&ips),
        })
        .unwrap();
    nft.del_masq(&b).unwrap();
    nft.check_masq(&a, &ips).unwrap();
    nft.del_masq(&a).unwrap();
    assert!(nft.check_masq(&a, &ips).is_err());
    let _ = std::fs::remove_dir_all(nft.state.dir());
}

#[test]
fn a_process_killed_after_its_transaction_leaves_nothing_del_cannot_find() {
    let nft = Nft::with(Fake::default(), tmp_state("killed"));
    let a = att();
    let ips = [ip("10.244.1.5")];
    nft.ensure_firewall(&a, "cni0", &ips, IngressPolicy::SameBridge)
        .unwrap();
    // A second ADD with one more address dies once its elements are in.
    let more = [ip("10.244.1.5"), ip("10.244.1.6")];
    nft.apply.die_after.set(true);
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        nft.ensure_firewall(&a, "cni0", &more, IngressPolicy::SameBridge)
    }));
    assert!(died.is_err(), "the fake did not die");
    nft.apply.die_after.set(false);
    assert!(
        nft.apply.elems.borrow().len() > 2,
        "the new elements are in"
    );
    // A later process's DEL, from the state dir alone, takes them all.
    nft.del_firewall(&a).unwrap();
    assert!(
        nft.apply.elems.borrow().is_empty(),
        "left: {:?}",
        nft.apply.elems.borrow().keys().collect::<Vec<_>>()
    );
    assert!(nft.state.read(&a, Feature::Firewall).unwrap().is_none());
    // A transaction the kernel refuses restores the record it widened.
    nft.ensure_firewall(&a, "cni0", &ips, IngressPolicy::SameBridge)
        .unwrap();
    let before = nft.state.read(&a, Feature::Firewall).unwrap();
    nft.apply.refuse.set(true);
    nft.ensure_firewall(&a, "cni0", &more, IngressPolicy::SameBridge)
        .unwrap_err();
    nft.apply.refuse.set(false);
    assert_eq!(nft.state.read(&a, Feature::Firewall).unwrap(), before);
    let b = Attachment::new("podman", "other", "eth0");
    nft.apply.refuse.set(true);
    nft.ensure_firewall(&b, "cni0", &[ip("10.244.1.7")], IngressPolicy::SameBridge)
        .unwrap_err();
    nft.apply.refuse.set(false);
    assert!(nft.state.read(&b, Feature::Firewall).unwrap().is_none());
    let _ = std::fs::remove_dir_all(nft.state.dir());
}
