//! `tuning`: per-namespace sysctls and link settings (mac, mtu, promisc, allmulti, txQLen) of
//! the container's interface, as the reference `plugins/meta/tuning`. What ADD changes on the
//! link is saved first (`<dataDir>/<containerID>_<ifname>.json`, default `/run/cni/tuning`) and
//! restored by DEL, or at once when the ADD fails half way. Sysctls are limited to the network
//! subsystem (`/proc/sys/net/...`, which is per namespace) and, when
//! `/etc/cni/tuning/allowlist.conf` exists, to keys matching one of its regular expressions.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use libnet::netlink::link::parse_mac;
use libnet::netlink::{Handle, Link};
use libnet::netns::NetNs;
use libnet::sysctl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::skel::{Args, CniError, OrCni, Plugin, ERR_INVALID_ENV, ERR_IO};
use crate::types::CniResult;

pub struct Tuning;

const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
const ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    #[serde(default)]
    sysctl: Option<BTreeMap<String, String>>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(default, rename = "txQLen")]
    txqlen: Option<u32>,
}

#[derive(Debug)]
struct Conf {
    data_dir: PathBuf,
    sysctl: BTreeMap<String, String>,
    mac: Option<[u8; 6]>,
    promisc: bool,
    mtu: Option<u32>,
    allmulti: Option<bool>,
    txqlen: Option<u32>,
}

/// What ADD changed on the link, to put back on DEL.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Backup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allmulti: Option<bool>,
    #[serde(default, rename = "txQLen", skip_serializing_if = "Option::is_none")]
    txqlen: Option<u32>,
}

impl Conf {
    /// The configuration, overridden by `CNI_ARGS` `MAC=`, `runtimeConfig.mac` and `args.cni`.
    fn load(a: &Args) -> Result<Conf, CniError> {
        let base: Settings = a.parse()?;
        let args: Settings = match a.conf.args.get("cni") {
            Some(v) => Settings::deserialize(v)
                .map_err(|e| CniError::config(format!("tuning: invalid args.cni: {e}")))?,
            None => Settings::default(),
        };
        let mut sysctl = base.sysctl.unwrap_or_default();
        sysctl.extend(args.sysctl.unwrap_or_default());
        let mac = args
            .mac
            .or_else(|| {
                a.conf
                    .runtime_config
                    .get("mac")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or_else(|| a.cni_arg("MAC").map(str::to_string))
            .or(base.mac)
            .filter(|m| !m.is_empty());
        let mac =
            match mac {
                Some(m) => Some(parse_mac(&m).ok_or_else(|| {
                    CniError::config(format!("tuning: invalid MAC address {m:?}"))
                })?),
                None => None,
            };
        let data_dir = a
            .raw
            .get("dataDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_DATA_DIR);
        let c = Conf {
            data_dir: PathBuf::from(data_dir),
            sysctl,
            mac,
            promisc: args.promisc.or(base.promisc).unwrap_or(false),
            mtu: args.mtu.or(base.mtu).filter(|m| *m != 0),
            allmulti: args.allmulti.or(base.allmulti),
            txqlen: args.txqlen.or(base.txqlen),
        };
        c.validate_sysctls(&a.ifname, &read_allowlist()?)?;
        Ok(c)
    }

    fn touches_link(&self) -> bool {
        self.mac.is_some()
            || self.promisc
            || self.mtu.is_some()
            || self.allmulti.is_some()
            || self.txqlen.is_some()
    }

    fn validate_sysctls(&self, ifname: &str, allow: &[regex_lite::Regex]) -> Result<(), CniError> {
        for key in self.sysctl.keys() {
            sysctl_path(key, ifname)?;
            if !allow.is_empty() && !allow.iter().any(|re| re.is_match(key)) {
                return Err(CniError::config(format!(
                    "tuning: sysctl {key} is not allowed by {ALLOWLIST}"
                )));
            }
        }
        Ok(())
    }

    fn backup_path(&self, a: &Args) -> PathBuf {
        self.data_dir
            .join(format!("{}_{}.json", a.container_id, a.ifname))
    }
}

/// The slashed key under /proc/sys/net for `key` (dots or slashes, `IFNAME` replaced by the
/// interface). Anything that would leave /proc/sys/net is refused.
fn sysctl_path(key: &str, ifname: &str) -> Result<String, CniError> {
    let slashed = key.replace('.', "/").replacen("IFNAME", ifname, 1);
    let p = Path::new(&slashed);
    let clean = !key.contains("..")
        && !slashed.contains("//")
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !clean || !slashed.starts_with("net/") || slashed.len() <= 4 {
        return Err(CniError::config(format!(
            "tuning: invalid net sysctl key {key:?}: only keys under net.* can be set"
        )));
    }
    Ok(slashed)
}

fn read_allowlist() -> Result<Vec<regex_lite::Regex>, CniError> {
    let text = match std::fs::read_to_string(ALLOWLIST) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CniError::new(ERR_IO, format!("reading {ALLOWLIST}: {e}"))),
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            regex_lite::Regex::new(l)
                .map_err(|e| CniError::config(format!("{ALLOWLIST}: bad pattern {l:?}: {e}")))
        })
        .collect()
}

fn backup_of(c: &Conf, l: &Link) -> Backup {
    Backup {
        mac: c.mac.map(|_| l.mac_string()),
        promisc: c.promisc.then_some(l.is_promisc()),
        mtu: c.mtu.map(|_| l.mtu),
        allmulti: c.allmulti.map(|_| l.flags & libc::IFF_ALLMULTI as u32 != 0),
        txqlen: c.txqlen.map(|_| l.txqlen),
    }
}

fn apply_link(h: &Handle, index: u32, b: &Backup) -> Result<(), CniError> {
    if let Some(m) = b.mtu {
        h.set_mtu(index, m).cni_ctx("tuning: setting mtu")?;
    }
    if let Some(m) = b.mac.as_deref().and_then(parse_mac) {
        h.set_mac(index, m).cni_ctx("tuning: setting mac")?;
    }
    if let Some(p) = b.promisc {
        h.set_promisc(index, p).cni_ctx("tuning: setting promisc")?;
    }
    if let Some(am) = b.allmulti {
        h.set_allmulti(index, am)
            .cni_ctx("tuning: setting allmulti")?;
    }
    if let Some(q) = b.txqlen {
        h.set_txqlen(index, q)
            .cni_ctx("tuning: setting txqueuelen")?;
    }
    Ok(())
}

fn write_backup(path: &Path, b: &Backup) -> Result<(), CniError> {
    let io = |e: std::io::Error| {
        CniError::new(ERR_IO, format!("tuning: saving {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(b).unwrap_or_default()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The skel refuses ADD and CHECK without `CNI_NETNS`; a caller that builds `Args` itself gets
/// the same error here instead of an abort.
fn open_ns(a: &Args) -> Result<NetNs, CniError> {
    let path = a
        .netns
        .as_ref()
        .ok_or_else(|| CniError::new(ERR_INVALID_ENV, "tuning: CNI_NETNS is not set"))?;
    NetNs::open(path).cni_ctx("tuning: container netns")
}

impl Plugin for Tuning {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let c = Conf::load(a)?;
        let mut prev = a
            .prev_result()?
            .ok_or_else(|| CniError::config("tuning: required prevResult missing"))?;
        let ns = open_ns(a)?;
        let backup_path = c.backup_path(a);
        ns.run_in(|| -> Result<(), CniError> {
            for (k, v) in &c.sysctl {
                sysctl::set(&sysctl_path(k, &a.ifname)?, v).cni()?;
            }
            if !c.touches_link() {
                return Ok(());
            }
            let h = Handle::new().cni()?;
            let link = h.link_by_name(&a.ifname).cni()?;
            let backup = backup_of(&c, &link);
            write_backup(&backup_path, &backup)?;
            let want = Backup {
                mac: c.mac.map(|m| libnet::netlink::link::format_mac(&m)),
                promisc: c.promisc.then_some(true),
                mtu: c.mtu,
                allmulti: c.allmulti,
                txqlen: c.txqlen,
            };
            if let Err(e) = apply_link(&h, link.index, &want) {
                // Leave the link as we found it.
                let _ = apply_link(&h, link.index, &backup);
                let _ = std::fs::remove_file(&backup_path);
                return Err(e);
            }
            Ok(())
        })
        .cni()??;
        if let Some(mac) = c.mac {
            for i in prev.interfaces.iter_mut().filter(|i| i.name == a.ifname) {
                i.mac = libnet::netlink::link::format_mac(&mac);
            }
        }
        Ok(prev)
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        let path = c.backup_path(a);
        let backup: Option<Backup> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let ns = a.netns.as_ref().and_then(|p| NetNs::open(p).ok());
        if let (Some(b), Some(ns)) = (backup, ns) {
            ns.run_in(|| -> Result<(), CniError> {
                let h = Handle::new().cni()?;
                match h.find_link(&a.ifname).cni()? {
                    Some(l) => apply_link(&h, l.index, &b),
                    None => Ok(()),
                }
            })
            .cni()??;
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::new(
                ERR_IO,
                format!("tuning: removing {}: {e}", path.display()),
            )),
            _ => Ok(()),
        }
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let c = Conf::load(a)?;
        a.prev_result()?
            .ok_or_else(|| CniError::config("tuning: required prevResult missing"))?;
        let drift = |m: String| Err(CniError::config(format!("tuning: {m}")));
        open_ns(a)?
            .run_in(|| -> Result<(), CniError> {
                for (k, v) in &c.sysctl {
                    let cur = sysctl::get(&sysctl_path(k, &a.ifname)?).cni()?;
                    if cur.trim() != v.trim() {
                        return drift(format!("sysctl {k} is {cur}, configured {v}"));
                    }
                }
                let l = Handle::new().cni()?.link_by_name(&a.ifname).cni()?;
                if let Some(m) = c.mac {
                    if l.mac != m {
                        return drift(format!("mac of {} is {}", a.ifname, l.mac_string()));
                    }
                }
                if c.promisc != l.is_promisc() {
                    return drift(format!("promisc of {} is {}", a.ifname, l.is_promisc()));
                }
                if c.mtu.is_some_and(|m| m != l.mtu) {
                    return drift(format!("mtu of {} is {}", a.ifname, l.mtu));
                }
                if c.txqlen.is_some_and(|q| q != l.txqlen) {
                    return drift(format!("txqueuelen of {} is {}", a.ifname, l.txqlen));
                }
                let am = l.flags & libc::IFF_ALLMULTI as u32 != 0;
                if c.allmulti.is_some_and(|want| want != am) {
                    return drift(format!("allmulti of {} is {am}", a.ifname));
                }
                Ok(())
            })
            .cni()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_stay_under_net() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.IFNAME.arp_filter", "eth0").unwrap(),
            "net/ipv4/conf/eth0/arp_filter"
        );
        assert_eq!(
            sysctl_path("net/core/somaxconn", "e").unwrap(),
            "net/core/somaxconn"
        );
        for bad in [
            "kernel.hostname",
            "net/../kernel/hostname",
            "net",
            "/net/x",
            "net//",
        ] {
            assert!(sysctl_path(bad, "eth0").is_err(), "{bad}");
        }
    }

    #[test]
    fn add_and_check_without_a_netns_are_errors_not_aborts() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"tuning","mtu":1400,
            "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}]}}"#;
        for cmd in ["ADD", "CHECK"] {
            let mut a = crate::plugins::shared::tests::args(cmd, conf);
            a.netns = None;
            let e = match cmd {
                "ADD" => Tuning.add(&a).map(|_| ()),
                _ => Tuning.check(&a),
            }
            .unwrap_err();
            assert_eq!(e.code, ERR_INVALID_ENV, "{cmd}: {e}");
            assert!(e.msg.contains("CNI_NETNS"), "{cmd}: {e}");
        }
    }

    #[test]
    fn allowlist_patterns_gate_keys() {
        let c = Conf {
            data_dir: PathBuf::new(),
            sysctl: [("net.core.somaxconn".to_string(), "1".to_string())].into(),
            mac: None,
            promisc: false,
            mtu: None,
            allmulti: None,
            txqlen: None,
        };
        let allow = vec![regex_lite::Regex::new(r"^net\.ipv4\.conf\.IFNAME\.[a-z_]+$").unwrap()];
        assert!(c.validate_sysctls("eth0", &allow).is_err());
        let allow = vec![regex_lite::Regex::new(r"^net\.core\.somaxconn$").unwrap()];
        c.validate_sysctls("eth0", &allow).unwrap();
        c.validate_sysctls("eth0", &[]).unwrap();
    }
}
