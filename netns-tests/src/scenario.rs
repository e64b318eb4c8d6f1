//! One side of a differential case: a fresh "host" namespace (where the plugins run and the
//! bridge lives), an "outside" namespace joined to it by a veth (a client that is neither host
//! nor container, with no route back to container subnets), a per-test IPAM data dir, and the
//! containers attached through the chain.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cases::{Case, OUTSIDE_HOST_IP, OUTSIDE_IP};
use crate::cni::{Runner, Runtime};
use crate::topology::TestNs;

/// The host's end of the link to the outside namespace.
pub const OUTSIDE_LINK: &str = "kntx0";

/// A directory under /tmp removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("knt-{}-{tag}{n}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One implementation's world for one case.
#[derive(Debug)]
pub struct Side {
    pub label: String,
    pub plugin_dir: PathBuf,
    pub host: TestNs,
    pub outside: TestNs,
    pub data: TempDir,
    /// The case's conflist with `ipam.dataDir` pointed at `data` (`{i}` not yet rendered:
    /// see [`Side::conflist_for`]).
    pub conflist: Value,
    /// Host links made by the case's setup (not plugin leftovers).
    fixture_links: Mutex<BTreeSet<String>>,
}

impl Side {
    pub fn new(label: &str, plugin_dir: &Path, conflist: &Value) -> Result<Side> {
        let host = TestNs::new("h")?;
        let outside = TestNs::new("x")?;
        let data = TempDir::new("data")?;
        let conflist = crate::cases::with_data_dir(conflist, &data.path().display().to_string());
        join_outside(&host, &outside)?;
        Ok(Side {
            label: label.into(),
            plugin_dir: plugin_dir.into(),
            host,
            outside,
            data,
            conflist,
            fixture_links: Mutex::default(),
        })
    }

    /// A side for `case`, its host setup run once.
    pub fn for_case(label: &str, plugin_dir: &Path, case: &Case) -> Result<Side> {
        let side = Side::new(label, plugin_dir, &case.conflist)?;
        side.setup(&case.host_setup.once, None)?;
        Ok(side)
    }

    /// The conflist of container `i` (`{i}` rendered).
    pub fn conflist_for(&self, i: usize) -> Value {
        crate::cases::for_container(&self.conflist, i)
    }

    /// Run setup commands in the host namespace (`{i}` replaced by `i` when given), and
    /// remember the links they made as fixtures.
    pub fn setup(&self, cmds: &[&str], i: Option<usize>) -> Result<()> {
        if cmds.is_empty() {
            return Ok(());
        }
        let names = |h: &libnet::netlink::Handle| -> Result<BTreeSet<String>> {
            Ok(h.links()?.into_iter().map(|l| l.name).collect())
        };
        let h = self.host.handle()?;
        let before = names(&h)?;
        for cmd in cmds {
            let cmd = match i {
                Some(i) => cmd.replace("{i}", &i.to_string()),
                None => cmd.to_string(),
            };
            let argv: Vec<&str> = cmd.split_whitespace().collect();
            self.host
                .run(&argv)
                .with_context(|| format!("{} setup", self.label))?;
        }
        let made = names(&h)?;
        let mut fixtures = self.fixture_links.lock().expect("not poisoned");
        fixtures.extend(made.difference(&before).cloned());
        Ok(())
    }

    pub fn runner(&self) -> Runner<'_> {
        Runner::new(&self.plugin_dir, self.host.ns())
    }

    pub fn network_name(&self) -> &str {
        self.conflist
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Address reservations left in host-local's store (`<dataDir>/<network>/<ip>`).
    pub fn reserved_ips(&self) -> Vec<String> {
        let dir = self.data.path().join(self.network_name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut ips: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        ips.sort();
        ips
    }

    /// Container veths left on the host (the outside link and setup fixtures excluded).
    pub fn host_veths(&self) -> Result<Vec<String>> {
        let fixtures = self.fixture_links.lock().expect("not poisoned").clone();
        Ok(crate::snapshot::veths(&self.host)?
            .into_iter()
            .filter(|n| n != OUTSIDE_LINK && !fixtures.contains(n))
            .collect())
    }

    /// `nft list table inet knit` and `... bridge knit` in the host namespace: `None` when
    /// neither table exists, else the lines holding set/map elements or naming a test container
    /// (`knt-...` ids, in element comments): what must be gone after DEL.
    pub fn knit_nft_elements(&self) -> Result<Option<Vec<String>>> {
        let mut found = None;
        for family in ["inet", "bridge"] {
            let out = self
                .host
                .command("nft")
                .args(["list", "table", family, "knit"])
                .output()
                .context("spawn nft")?;
            if !out.status.success() {
                continue;
            }
            let text = String::from_utf8_lossy(&out.stdout);
            found.get_or_insert_with(Vec::new).extend(
                text.lines()
                    .filter(|l| l.contains("elements =") || l.contains("knt-"))
                    .map(|l| format!("{family}: {}", l.trim())),
            );
        }
        Ok(found)
    }
}

/// `ip link add kntx0 type veth peer name eth0 netns OUTSIDE`, 10.244.250.1/30 ↔ .2/30
/// ([`OUTSIDE_HOST_IP`] on the host's end, [`OUTSIDE_IP`] in the outside namespace).
pub fn join_outside(host: &TestNs, outside: &TestNs) -> Result<()> {
    host.run(&[
        "ip",
        "link",
        "add",
        OUTSIDE_LINK,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        outside.name(),
    ])?;
    host.run(&[
        "ip",
        "addr",
        "add",
        &format!("{OUTSIDE_HOST_IP}/30"),
        "dev",
        OUTSIDE_LINK,
    ])?;
    host.run(&["ip", "link", "set", OUTSIDE_LINK, "up"])?;
    outside.run(&[
        "ip",
        "addr",
        "add",
        &format!("{OUTSIDE_IP}/30"),
        "dev",
        "eth0",
    ])?;
    outside.run(&["ip", "link", "set", "eth0", "up"])?;
    Ok(())
}

/// A container attached through the chain: its namespace, conflist, runtime args and cached
/// result.
#[derive(Debug)]
pub struct Attached {
    pub ns: TestNs,
    pub conflist: Value,
    pub rt: Runtime,
    pub result: Value,
}

impl Attached {
    /// The container's addresses from the result (`ips[].address` without the prefix).
    pub fn addrs(&self) -> Vec<std::net::IpAddr> {
        result_addrs(&self.result)
    }
}

/// The host devices a conflist lends (host-device's `device`), which DEL must give back.
pub fn lent_devices(conflist: &Value) -> Vec<String> {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("host-device"))
        .filter_map(|p| p.get("device").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// `ips[].address` of a CNI result, without prefix lengths.
pub fn result_addrs(result: &Value) -> Vec<std::net::IpAddr> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address").and_then(Value::as_str))
        .filter_map(|a| a.split('/').next().and_then(|a| a.parse().ok()))
        .collect()
}

/// A CNI result with random parts replaced by roles: host-side interface names, MACs (unless
/// in `keep_macs`) and sandbox paths.
pub fn normalise_result(result: &Value, keep_macs: &[&str]) -> Value {
    let mut r = result.clone();
    if let Some(ifaces) = r.get_mut("interfaces").and_then(Value::as_array_mut) {
        for (i, iface) in ifaces.iter_mut().enumerate() {
            let Some(obj) = iface.as_object_mut() else {
                continue;
            };
            let in_sandbox = obj.contains_key("sandbox");
            if in_sandbox {
                obj.insert("sandbox".into(), "<netns>".into());
            } else if obj.get("name").and_then(Value::as_str) != Some(crate::cases::BRIDGE) {
                obj.insert("name".into(), format!("<host-veth-{i}>").into());
            }
            let keep = obj
                .get("mac")
                .and_then(Value::as_str)
                .is_some_and(|m| keep_macs.iter().any(|k| k.eq_ignore_ascii_case(m)));
            if obj.contains_key("mac") && !keep {
                obj.insert("mac".into(), "<mac>".into());
            }
        }
    }
    r
}
