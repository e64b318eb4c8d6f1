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
    golden("masq_add.nft", &render_add(&elems, &att().comment()));
    golden("masq_del.nft", &render_del(&elems));
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
    golden("portmap_add.nft", &render_add(&elems, &att().comment()));
}

#[test]
fn golden_firewall() {
    let ips = [ip("10.244.1.5"), ip("fd00:6b6e:1::5")];
    let open = plan_firewall("knbr0", &ips, IngressPolicy::Open).unwrap();
    let iso = plan_firewall("knbr0", &ips, IngressPolicy::SameBridge).unwrap();
    let mut s = render_add(&open, "c");
    s.push_str("# same-bridge\n");
    s.push_str(&render_add(&iso, "c"));
    golden("firewall_add.nft", &s);
}

#[test]
fn golden_skeleton_create() {
    golden("skeleton_create.nft", &render_create_skeleton());
}

#[test]
fn replace_deletes_only_stale() {
    let ips = [ip("10.244.1.5")];
    let old = plan_portmap(&[pm(8080, 80, "tcp", ""), pm(8081, 81, "tcp", "")], &ips).unwrap();
    let new = plan_portmap(&[pm(8080, 80, "tcp", "")], &ips).unwrap();
    golden("portmap_replace.nft", &render_replace(&old, &new, "c"));
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

/// Records scripts; reports "missing" until a skeleton was created.
#[derive(Default)]
struct Fake {
    scripts: RefCell<Vec<String>>,
    have_table: RefCell<bool>,
}

impl NftApply for Fake {
    fn run(&self, op: &'static str, script: &str) -> Result<(), NftError> {
        self.scripts.borrow_mut().push(script.to_string());
        if script.starts_with("create table") {
            *self.have_table.borrow_mut() = true;
        } else if !*self.have_table.borrow() {
            return Err(NftError::apply(op, "Error: No such file or directory"));
        }
        Ok(())
    }

    fn query(&self, _: &'static str, _: &str, _: bool) -> Result<String, NftError> {
        Ok(r#"{"nftables":[]}"#.into())
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
        assert_eq!(s.len(), 3, "try, retry under lock, create+elements");
        assert!(s[2].starts_with("create table inet knit\n"));
        assert!(s[2].ends_with(&s[0]));
    }
    nft.ensure_masq(&a, &["10.244.1.5/24".parse().unwrap()])
        .unwrap();
    assert_eq!(
        nft.apply.scripts.borrow().len(),
        4,
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
    nft.gc(&[]).unwrap();
    assert!(
        nft.state.read(&a, Feature::Masq).unwrap().is_none(),
        "gc removed masq"
    );
    let _ = std::fs::remove_dir_all(nft.state.dir());
}

#[test]
fn state_dir_from_env() {
    // The only test touching this variable.
    std::env::set_var(STATE_DIR_ENV, "/tmp/knit-x");
    assert_eq!(
        StateDir::from_env().dir(),
        std::path::Path::new("/tmp/knit-x/nft")
    );
    std::env::remove_var(STATE_DIR_ENV);
    assert_eq!(
        StateDir::from_env().dir(),
        std::path::Path::new(DEFAULT_STATE_DIR)
    );
}
