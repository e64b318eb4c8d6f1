//! `host-local` IPAM on libnet's allocator and its reference-compatible file store. Also run
//! in-process by the bridge plugin when its `ipam.type` is `host-local`.

use libnet::ipam::{self, FileStore, IpamConfig};

use crate::skel::{Args, CniError, OrCni, Plugin};
use crate::types::{CniResult, Dns, IpConfig, RouteEntry};

pub struct HostLocal;

fn config(a: &Args) -> Result<IpamConfig, CniError> {
    IpamConfig::from_json_with_runtime(&a.conf.ipam, a.conf.runtime_config.get("ipRanges"))
        .cni_ctx("host-local")
}

fn store(a: &Args, cfg: &IpamConfig) -> Result<FileStore, CniError> {
    FileStore::open(&cfg.data_dir, &a.conf.name).cni_ctx("host-local")
}

/// `CNI_ARGS` as the raw `K=V;...` string the allocator's parser reads.
fn raw_cni_args(a: &Args) -> String {
    a.cni_args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn dns(cfg: &IpamConfig) -> Result<Dns, CniError> {
    let Some(path) = &cfg.resolv_conf else {
        return Ok(Dns::default());
    };
    let d = ipam::read_resolv_conf(path).cni_ctx("host-local")?;
    Ok(Dns {
        nameservers: d.nameservers,
        domain: d.domain,
        search: d.search,
        options: d.options,
    })
}

impl Plugin for HostLocal {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let cfg = config(a)?;
        let dns = dns(&cfg)?;
        let requested = ipam::requested_ips(&raw_cni_args(a), &a.raw).cni_ctx("host-local")?;
        let mut st = store(a, &cfg)?;
        st.defer_sync();
        let allocs = ipam::allocate(&mut st, &cfg, &a.container_id, &a.ifname, &requested)
            .cni_ctx("host-local")?;
        // Made durable beside the caller's kernel work; the answer waits for it.
        let unsynced = st.take_unsynced();
        a.ctx
            .deferred
            .defer(move || unsynced.sync().cni_ctx("host-local"));
        Ok(CniResult {
            ips: allocs
                .into_iter()
                .map(|al| IpConfig {
                    interface: None,
                    address: al.address,
                    gateway: al.gateway,
                })
                .collect(),
            routes: cfg
                .routes
                .iter()
                .map(|r| RouteEntry::new(r.dst, r.gw))
                .collect(),
            dns,
            ..Default::default()
        })
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        let cfg = config(a)?;
        ipam::release(&mut store(a, &cfg)?, &a.container_id, &a.ifname).cni_ctx("host-local")
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        let cfg = config(a)?;
        let held = ipam::held_by(&mut store(a, &cfg)?, &a.container_id, &a.ifname)
            .cni_ctx("host-local")?;
        if held.is_empty() {
            return Err(CniError::config(format!(
                "host-local: no address is reserved for container {} interface {}",
                a.container_id, a.ifname
            )));
        }
        // Every address the previous result names in our ranges must still be ours.
        let prev = a.conf.prev_result.as_ref().map(CniResult::from_value);
        if let Some(Ok(prev)) = prev {
            for ip in prev.ips.iter().map(|i| i.address.addr()) {
                if cfg.ranges.iter().any(|s| s.contains(ip)) && !held.contains(&ip) {
                    return Err(CniError::config(format!(
                        "host-local: {ip} is no longer reserved for container {}",
                        a.container_id
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        let cfg = config(a)?;
        ipam::gc(&mut store(a, &cfg)?, &a.valid_attachments()).cni_ctx("host-local")?;
        Ok(())
    }

    fn status(&self, a: &Args) -> Result<(), CniError> {
        if a.conf.ipam.is_null() {
            return Ok(());
        }
        config(a).map(|_| ())
    }
}
