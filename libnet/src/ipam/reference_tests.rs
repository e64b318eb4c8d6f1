//! knit's FileStore and the reference host-local (containernetworking-plugins 1.1.1, installed
//! at /usr/lib/cni/host-local by `make test`) share one data dir and see each other's
//! reservations. Gated with the root tests because they need the apt-installed binary.

use super::file_store_tests::TempDir;
use super::*;
use serde_json::{json, Value};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const REFERENCE: &str = "/usr/lib/cni/host-local";
const NET: &str = "knit-ref";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ipam(data: &Path) -> Value {
    json!({
        "type": "host-local",
        "ranges": [
            [{"subnet": "10.244.7.0/24"}],
            [{"subnet": "fd00:6b6e:0:1::/64", "rangeStart": "fd00:6b6e:0:1::2",
              "rangeEnd": "fd00:6b6e:0:1::40"}]
        ],
        "dataDir": data,
    })
}

/// Run the reference plugin; Ok(stdout JSON) or Err(stdout+stderr text).
fn reference(
    cmd: &str,
    data: &Path,
    id: &str,
    ifname: &str,
    ips: &[&str],
) -> Result<Value, String> {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "root-tests must run as root");
    assert!(
        Path::new(REFERENCE).exists(),
        "{REFERENCE} missing: run `make deps`"
    );
    let mut conf =
        json!({"cniVersion": "1.0.0", "name": NET, "type": "host-local", "ipam": ipam(data)});
    if !ips.is_empty() {
        conf["runtimeConfig"] = json!({"ips": ips});
    }
    let mut child = Command::new(REFERENCE)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reference host-local");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    })
}

fn ref_addrs(v: &Value) -> Vec<String> {
    v["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect()
}

fn knit(data: &Path) -> (FileStore, IpamConfig) {
    (
        FileStore::open(data, NET).unwrap(),
        IpamConfig::from_json(&ipam(data)).unwrap(),
    )
}

#[test]
fn reference_and_knit_share_one_data_dir() {
    let t = TempDir::new("ref");
    let (mut s, c) = knit(&t.0);
    let dir = t.0.join(NET);

    // knit first; the reference continues the round robin after it and writes the same bytes.
    let a = allocate(&mut s, &c, "k1", "eth0", &[]).unwrap();
    assert_eq!(a[0].address.to_string(), "10.244.7.2/24");
    assert_eq!(a[1].address.to_string(), "fd00:6b6e:0:1::2/64");
    let r = reference("ADD", &t.0, "r1", "eth0", &[]).unwrap();
    assert_eq!(ref_addrs(&r), ["10.244.7.3/24", "fd00:6b6e:0:1::3/64"]);
    assert_eq!(fs::read(dir.join("10.244.7.3")).unwrap(), b"r1\r\neth0");
    assert_eq!(
        fs::read(dir.join("fd00:6b6e:0:1::3")).unwrap(),
        b"r1\r\neth0"
    );
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.1")).unwrap(),
        b"fd00:6b6e:0:1::3"
    );

    // knit continues after the reference, and refuses a duplicate of the reference's ADD.
    let a = allocate(&mut s, &c, "k2", "eth0", &[]).unwrap();
    assert_eq!(a[0].address.to_string(), "10.244.7.4/24");
    let e = allocate(&mut s, &c, "r1", "eth0", &[]).unwrap_err();
    assert!(matches!(e, IpamError::Duplicate { .. }), "{e}");

    // The reference sees knit's reservations: CHECK finds them, a duplicate ADD and a request
    // for a knit address fail (the IPv6 file names agree), DEL removes them.
    reference("CHECK", &t.0, "k1", "eth0", &[]).unwrap();
    reference("ADD", &t.0, "k1", "eth0", &[]).unwrap_err();
    reference("ADD", &t.0, "r9", "eth0", &["fd00:6b6e:0:1::2"]).unwrap_err();
    reference("DEL", &t.0, "k1", "eth0", &[]).unwrap();
    assert!(!dir.join("10.244.7.2").exists() && !dir.join("fd00:6b6e:0:1::2").exists());
    assert!(held_by(&mut s, "k1", "eth0").unwrap().is_empty());
    allocate(&mut s, &c, "k1", "eth0", &[]).unwrap();

    // knit sees the reference's reservations: requests for them fail, CHECK/DEL find them.
    let e = allocate(&mut s, &c, "k3", "eth0", &[ip("fd00:6b6e:0:1::3")]).unwrap_err();
    assert_eq!(HasKind::kind(&e), crate::Kind::Exists);
    let mut held = held_by(&mut s, "r1", "eth0").unwrap();
    held.sort();
    assert_eq!(held, [ip("10.244.7.3"), ip("fd00:6b6e:0:1::3")]);
    release(&mut s, "r1", "eth0").unwrap();
    assert!(!dir.join("10.244.7.3").exists());
    reference("CHECK", &t.0, "r1", "eth0", &[]).unwrap_err();

    // A knit-requested address with a lone zero group is refused to the reference too.
    allocate(&mut s, &c, "k4", "eth0", &[ip("fd00:6b6e:0:1::20")]).unwrap();
    reference("ADD", &t.0, "r4", "eth0", &["fd00:6b6e:0:1::20"]).unwrap_err();

    // Nothing of knit's is inside the reference's directory.
    for e in fs::read_dir(&dir).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        assert!(
            n == "lock" || n.starts_with("last_reserved_ip.") || n.parse::<IpAddr>().is_ok(),
            "{n}"
        );
    }
}
