//! The CLI's repair pass: what a `knit` killed mid-way (kill -9, a crash, a power cut of the
//! run dir aside) left half made, finished or undone with the same removal and the same
//! lifecycle detach as the commands themselves. Run at the start of every command that
//! changes state (quick) and by `knit sandbox prune` (deep).
//!
//! What a killed command leaves, and what the pass does (the order of each command makes
//! these the only cases):
//! - a sandbox lease ([`crate::lease`]) free, but its word says `creating` or `removing`
//!   (`knit run` or `sandbox rm` died), or a sandbox whose namespace is gone: the sandbox is
//!   removed ([`crate::sandbox::remove`]: every endpoint detached, namespace, record, lease);
//! - a lease free and saying `changing` (`network connect|disconnect` died), and with `deep`
//!   every sandbox: endpoint records still marked [`ATTACHING`] or whose link is gone from
//!   the namespace are detached and dropped;
//! - a lease without a sandbox record (`run` died before the record, `rm` after it): its
//!   `knit-*` namespace, if any, and the lease are deleted. The lease is what makes such a
//!   namespace this run dir's and not another knit's;
//! - a bridge network of knit's whose bridge is missing (`network create` died between the
//!   record and the bridge): the bridge is made;
//! - a network removal's journal ([`NetworkRm`]) free (`network rm` died): the removal is
//!   finished, from the record if it is still there (the bridge may be gone already), else
//!   the bridge, if left, and the IPAM directories.
//!
//! A lease held by a live process (a `knit run` whose command still runs, a concurrent
//! command) is skipped: the kernel drops the lock only when its holder is gone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libnet::netlink::Handle;
use libnet::netns::NetNs;
use serde::{Deserialize, Serialize};
use store::{Driver, Network, Sandbox, Store};

use crate::connect::{detach_endpoint, ATTACHING};
use crate::lease::{self, Lease, State};
use crate::network::{bridge_name, ensure_network_bridge, is_dockers, BRIDGE_CREATED};
use crate::sandbox::{self, netns_name, Dirs};

/// What one pass did and what it could not do.
#[derive(Debug, Default)]
pub struct Repaired {
    pub fixed: Vec<String>,
    pub errors: Vec<String>,
}

/// One pass. `deep` also checks the endpoints of every sandbox against its namespace's links
/// (a netlink socket per sandbox: `sandbox prune`, not every command).
pub fn repair(st: &dyn Store, dirs: &Dirs, deep: bool) -> Repaired {
    let mut r = Repaired::default();
    if let Err(e) = sandboxes(st, dirs, deep, &mut r) {
        r.errors.push(format!("{e:#}"));
    }
    if let Err(e) = networks(st, dirs, &mut r) {
        r.errors.push(format!("{e:#}"));
    }
    r
}

/// The quick pass before a command that changes state: what it fixed and could not fix goes
/// to stderr, and the command goes on.
pub fn before_change(st: &dyn Store, dirs: &Dirs) {
    let r = repair(st, dirs, false);
    for f in r.fixed {
        eprintln!("knit: repaired: {f}");
    }
    for e in r.errors {
        eprintln!("knit: repair failed: {e}");
    }
}

/// Is `path` a mounted network namespace (not a missing or half-made file)?
fn netns_alive(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) on a NUL-terminated path into a zeroed struct it fills.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == NSFS_MAGIC
    }
}

fn sandboxes(st: &dyn Store, dirs: &Dirs, deep: bool, r: &mut Repaired) -> Result<()> {
    let sbs = st.list_sandboxes().context("listing sandboxes")?;
    let ldir = lease::dir(dirs);
    for sb in &sbs {
        let path = ldir.join(&sb.id);
        let suspect = deep || !netns_alive(&sb.netns) || lease::peek(&path) != State::Ready;
        if !suspect {
            continue;
        }
        let Some(mut l) = Lease::try_take(dirs, &sb.id)? else {
            continue;
        };
        let state = l.state();
        let alive = netns_alive(&sb.netns);
        if matches!(state, State::Creating | State::Removing) || !alive {
            let why = match (state, alive) {
                (_, false) => "its namespace is gone",
                (State::Creating, _) => "knit run did not finish it",
                _ => "knit sandbox rm did not finish",
            };
            l.set(State::Removing)?;
            match sandbox::remove(st, dirs, sb) {
                Ok(()) => {
                    l.remove();
                    r.fixed
                        .push(format!("removed sandbox {:?} ({why})", sb.name));
                }
                Err(e) => r.errors.push(format!("{e:#}")),
            }
            continue;
        }
        let errors = r.errors.len();
        endpoints(st, dirs, sb, r)?;
        if state == State::Changing && r.errors.len() == errors {
            l.set(State::Ready)?;
        }
    }
    // Leases whose sandbox record is gone, with the namespace they name.
    let ids: HashSet<&str> = sbs.iter().map(|s| s.id.as_str()).collect();
    let Ok(rd) = std::fs::read_dir(&ldir) else {
        return Ok(());
    };
    for e in rd.filter_map(|e| e.ok()) {
        let id = e.file_name().to_string_lossy().into_owned();
        if ids.contains(id.as_str()) || store::validate::validate_id("sandbox", &id).is_err() {
            continue;
        }
        let Some(l) = Lease::try_take(dirs, &id)? else {
            continue;
        };
        // The record may have been made since the listing (by a run that has let go since).
        if st.sandbox(&id).is_ok_and(|s| s.id == id) {
            continue;
        }
        let ns = netns_name(&id);
        if Path::new(libnet::netns::NETNS_RUN_DIR).join(&ns).exists() {
            if let Err(e) = NetNs::delete_named(&ns) {
                r.errors.push(format!("deleting namespace {ns}: {e}"));
                continue;
            }
            r.fixed
                .push(format!("deleted namespace {ns} (no sandbox record)"));
        }
        l.remove();
    }
    Ok(())
}

/// Detach the endpoints of `sb` that are half attached ([`ATTACHING`]) or whose link is gone
/// from its namespace.
fn endpoints(st: &dyn Store, dirs: &Dirs, sb: &Sandbox, r: &mut Repaired) -> Result<()> {
    let eps = st
        .sandbox_endpoints(&sb.id)
        .with_context(|| format!("listing the endpoints of sandbox {:?}", sb.name))?;
    if eps.is_empty() {
        return Ok(());
    }
    let ns = NetNs::open(&sb.netns)
        .with_context(|| format!("opening the namespace of sandbox {:?}", sb.name))?;
    let h = Handle::new_in(&ns).context("opening a netlink socket in the sandbox")?;
    let links: HashSet<String> = h
        .links()
        .context("listing the sandbox's links")?
        .into_iter()
        .map(|l| l.name)
        .collect();
    for ep in &eps {
        let half = ep.labels.contains_key(ATTACHING);
        let ifname = if ep.ifname.is_empty() {
            sandbox::IFNAME
        } else {
            &ep.ifname
        };
        if !half && links.contains(ifname) {
            continue;
        }
        match detach_endpoint(st, dirs, sb, Some(&ns), ep) {
            Ok(()) => {
                r.fixed.push(format!(
                    "detached {ifname} of sandbox {:?} ({})",
                    sb.name,
                    if half {
                        "half attached"
                    } else {
                        "its link is gone"
                    }
                ));
            }
            Err(e) => r.errors.push(format!("{e:#}")),
        }
    }
    Ok(())
}

/// The journal of a `knit network rm`: `RUN_DIR/networks/<network id>`, held while the
/// network is removed, saying what of it the kernel and the IPAM files still have.
#[derive(Debug, Serialize, Deserialize)]
pub struct NetworkRm {
    /// The bridge knit made for the network (`None`: it owns none).
    pub bridge: Option<String>,
    /// The network's host-local IPAM directory.
    pub ipam_dir: String,
}

fn journal_dir(dirs: &Dirs) -> PathBuf {
    dirs.run_dir.join("networks")
}

/// Take the journal of removing `net` and write it; the caller removes the network and then
/// the journal ([`Lease::remove`]).
pub fn journal_network_rm(dirs: &Dirs, net: &Network) -> Result<Lease> {
    let path = journal_dir(dirs).join(&net.id);
    let mut l =
        Lease::take(&path, true)?.with_context(|| format!("the journal {}", path.display()))?;
    let owned = net.options.get(BRIDGE_CREATED).is_some_and(|v| v == "true");
    let j = NetworkRm {
        bridge: (net.driver == Driver::Bridge && owned).then(|| bridge_name(net)),
        ipam_dir: crate::network::ipam_dir_name(net).to_string(),
    };
    l.put(&serde_json::to_string(&j).unwrap_or_default())?;
    Ok(l)
}

fn networks(st: &dyn Store, dirs: &Dirs, r: &mut Repaired) -> Result<()> {
    let journals: Vec<PathBuf> = std::fs::read_dir(journal_dir(dirs))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    let mut h: Option<Handle> = None;
    for path in journals {
        let Some(mut l) = Lease::take(&path, false)? else {
            continue;
        };
        let id = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(j) = serde_json::from_str::<NetworkRm>(&l.text()) else {
            l.remove();
            continue;
        };
        finish_network_rm(st, dirs, handle(&mut h)?, &id, &j, r);
        l.remove();
    }
    let nets = st.list_networks().context("listing networks")?;
    let ours: Vec<&Network> = nets
        .iter()
        .filter(|n| {
            n.driver == Driver::Bridge
                && !is_dockers(n)
                && n.options.get(BRIDGE_CREATED).is_some_and(|v| v == "true")
        })
        .collect();
    if ours.is_empty() {
        return Ok(());
    }
    let h = handle(&mut h)?;
    let links: HashSet<String> = h
        .links()
        .context("listing links")?
        .into_iter()
        .map(|l| l.name)
        .collect();
    for net in ours {
        // Not one being removed (its journal exists) or removed since the listing.
        let removing = journal_dir(dirs).join(&net.id).exists();
        if !links.contains(&bridge_name(net))
            && !removing
            && st.network(&net.id).is_ok_and(|n| n.id == net.id)
        {
            match ensure_network_bridge(h, net) {
                Ok(()) => r.fixed.push(format!(
                    "made bridge {} of network {:?}",
                    bridge_name(net),
                    net.name
                )),
                Err(e) => r.errors.push(format!("{e:#}")),
            }
        }
    }
    Ok(())
}

/// The host's netlink socket, opened on first use.
fn handle(h: &mut Option<Handle>) -> Result<&Handle> {
    if h.is_none() {
        *h = Some(Handle::new().context("opening a netlink socket")?);
    }
    h.as_ref().context("opening a netlink socket")
}

/// Finish a `network rm` that was killed: the same removal when the record is still there
/// (its bridge may be gone already), else what the removal does after the record (the bridge,
/// should it still be there, and the IPAM directories).
fn finish_network_rm(
    st: &dyn Store,
    dirs: &Dirs,
    h: &Handle,
    id: &str,
    j: &NetworkRm,
    r: &mut Repaired,
) {
    if let Some(net) = st.network(id).ok().filter(|n| n.id == id) {
        match crate::network::remove(st, &net, &dirs.cni_data_dir) {
            Ok(()) => r
                .fixed
                .push(format!("finished removing network {:?}", net.name)),
            Err(e) => r.errors.push(format!("{e:#}")),
        }
        return;
    }
    if let Some(br) = j.bridge.as_deref() {
        match h.find_link(br) {
            Ok(Some(link)) if link.kind.as_deref() == Some("bridge") => {
                match h.del_link(link.index) {
                    Ok(()) => r
                        .fixed
                        .push(format!("deleted bridge {br} of a removed network")),
                    Err(e) => {
                        r.errors.push(format!("deleting bridge {br}: {e}"));
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                r.errors.push(format!("looking up {br}: {e}"));
                return;
            }
        }
    }
    crate::network::remove_ipam_dirs(&dirs.cni_data_dir, &j.ipam_dir);
}
