//! knit's nftables layer: the one owner of every packet-filter rule knit makes.
//!
//! # What it programs
//! One table, `table inet knit` (inet nat handles `masquerade`, `dnat ip to`, `dnat ip6 to` and
//! `fib` on kernel 6.18), and nothing else: no other table is ever listed-and-rewritten, flushed
//! or replaced. The table has a **static skeleton** ([`plan::SKELETON`], `golden/skeleton.nft`):
//! sets and maps, and chains whose rules only look elements up:
//! - `prerouting` (nat, dstnat) and `output` (nat, -100): `fib daddr type local jump portmap`;
//!   `portmap` DNATs through `pm{4,6}_ip` (host ip . proto . port, tried first) then
//!   `pm{4,6}_any` (proto . port) to `container ip . port`.
//! - `postrouting` (nat, srcnat): masquerade DNATed hairpin traffic (`hairpin{4,6}`: container .
//!   itself), DNATed traffic from 127.0.0.0/8 to a mapped container (`pm_ctr4`; the caller sets
//!   `route_localnet=1` on the bridge, see [`route_localnet_key`]), then jump to `masq{4,6}` for
//!   sources in `masq{4,6}`: return for multicast and for `masq_skip{4,6}` (container . its own
//!   subnet, an interval concatenation), else masquerade (the bridge plugin's ipMasq).
//! - `forward` (filter, 0): `same-bridge` isolation first — drop when the destination is an
//!   isolated container (`iso{4,6}`: bridge . container), the source is an isolated container
//!   arriving from its own bridge, and the destination is not on the input bridge (the reference
//!   firewall's CNI-ISOLATION stages, keyed per container instead of per bridge so that every
//!   element belongs to exactly one attachment and needs no refcount) — then accept traffic from
//!   containers in `fw{4,6}` and established/related traffic to them. An accept here cannot
//!   override a drop in another table's forward chain (nftables semantics); the reference's
//!   iptables rules have the same limit towards other tables.
//!
//! # Order and atomicity
//! Each ensure/del is ONE nft transaction of element operations. If it fails because the table or
//! a set is missing, the caller takes the state dir's flock, retries, and if still missing runs
//! `create table inet knit` + skeleton + the elements as one transaction (`create` fails if
//! another process made the table meanwhile, so fixed rules are never duplicated). A failed ADD
//! leaves nothing. DEL uses `add element X; delete element X` pairs (nft 1.0.6 has no `destroy`),
//! which never fail on a missing element. After a successful ADD the elements are recorded in
//! `<state dir>/<attachment id>.<feature>.json` (fsynced) and DEL reads them from there, so DEL
//! needs only (network, container id, ifname). Every element also carries the comment
//! `knit:<attachment id> net/cid/if`, so [`Nft::gc`] finds leaked ones without state files.
//!
//! # How state grows
//! Per attachment: masq 2 elements per address, portmap 1 per mapping and family plus 2 per
//! container address, firewall 1-2 per address. No per-container chains or rules, no rule
//! scanning: the 1,000th mapping costs what the first did (hash sets; `masq_skip` is a pipapo
//! set whose lookups stay O(1)-ish in practice).
//!
//! # Speed (measured here, kernel 6.18, nft 1.0.6, 2 loaded cores; `examples/nft_cost.rs`)
//! - One element transaction: libnftables in-process ~0.14-0.19 ms (a fresh `nft_ctx` per call:
//!   its cache fetch reads tables and sets, not elements); forked `nft -f -` 3-8 ms. Chosen:
//!   libnftables ([`LibNft`], dlopen'ed) for element transactions and the skeleton.
//! - The state file's fsync: median ~0.5 ms on this ext4, p90 ~5 ms while others compile; it is
//!   the largest part of an ensure (whole `ensure_portmap` ~1-4 ms under load, the same with 50
//!   or 1,000 attachments present). A state dir on tmpfs (e.g. under /run, which is enough: the
//!   elements do not survive a reboot either) removes it.
//! - DEL: ~15 ms, independent of the table size, and not nft's: closing an nf_tables netlink
//!   socket after a transaction that freed elements waits for the deferred destroy work (an RCU
//!   grace period, like a veth's unregister). A caller deleting a veth too can overlap the two.
//! - CHECK: libnftables' `get element` dumps every element first (~25 µs per element: 50 ms at
//!   1,000 attachments), so CHECK sends its own NFT_MSG_GETSETELEM per element ([`wire`]):
//!   ~0.04 ms whatever the table holds.
//!
//! # Portmap options not implemented
//! `markMasqBit` / `externalSetMarkChain`: accepted and ignored; we masquerade directly instead
//! of marking (no other chain needs the mark). `conditionsV4/V6` (iptables match syntax):
//! ignored, they cannot be expressed as elements.

mod apply;
mod error;
pub mod plan;
mod state;
mod wire;

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

pub use apply::{LibNft, NftApply, NftCli};
pub use error::NftError;
pub use plan::{Elem, IngressPolicy, PortMapping, Proto, RawPortMapping};
pub use state::{Attachment, Feature, Record, StateDir, DEFAULT_STATE_DIR, STATE_DIR_ENV};
pub use wire::WireElem;

/// The sysctl the portmap caller sets to 1 on the bridge so 127.0.0.0/8 can be DNATed out.
pub fn route_localnet_key(bridge: &str) -> String {
    format!("net/ipv4/conf/{bridge}/route_localnet")
}

/// The nftables layer: an applier plus the state directory.
#[derive(Debug, Clone)]
pub struct Nft<A: NftApply = LibNft> {
    apply: A,
    state: StateDir,
}

impl Nft<LibNft> {
    /// libnftables in-process, state dir from the environment.
    pub fn new() -> Result<Nft<LibNft>, NftError> {
        Ok(Nft::with(LibNft::new()?, StateDir::from_env()))
    }
}

impl<A: NftApply> Nft<A> {
    pub fn with(apply: A, state: StateDir) -> Nft<A> {
        Nft { apply, state }
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// bridge ipMasq for `ips` (each with its subnet prefix). Replaces what this attachment had.
    pub fn ensure_masq(&self, att: &Attachment, ips: &[IpNet]) -> Result<(), NftError> {
        self.ensure(att, Feature::Masq, plan::plan_masq(ips))
    }

    pub fn del_masq(&self, att: &Attachment) -> Result<(), NftError> {
        self.del(att, Feature::Masq)
    }

    pub fn check_masq(&self, att: &Attachment, ips: &[IpNet]) -> Result<(), NftError> {
        self.check(att, &plan::plan_masq(ips))
    }

    /// portmap: DNAT `maps` to the container's first address of each family.
    pub fn ensure_portmap(
        &self,
        att: &Attachment,
        maps: &[PortMapping],
        container_ips: &[IpAddr],
    ) -> Result<(), NftError> {
        self.ensure(
            att,
            Feature::Portmap,
            plan::plan_portmap(maps, container_ips)?,
        )
    }

    pub fn del_portmap(&self, att: &Attachment) -> Result<(), NftError> {
        self.del(att, Feature::Portmap)
    }

    pub fn check_portmap(
        &self,
        att: &Attachment,
        maps: &[PortMapping],
        container_ips: &[IpAddr],
    ) -> Result<(), NftError> {
        self.check(att, &plan::plan_portmap(maps, container_ips)?)
    }

    /// firewall: allow forwarding for `ips`; with `SameBridge`, isolate them on `bridge`.
    pub fn ensure_firewall(
        &self,
        att: &Attachment,
        bridge: &str,
        ips: &[IpAddr],
        policy: IngressPolicy,
    ) -> Result<(), NftError> {
        let elems = plan::plan_firewall(bridge, ips, policy)?;
        self.ensure(att, Feature::Firewall, elems)
    }

    pub fn del_firewall(&self, att: &Attachment) -> Result<(), NftError> {
        self.del(att, Feature::Firewall)
    }

    pub fn check_firewall(
        &self,
        att: &Attachment,
        bridge: &str,
        ips: &[IpAddr],
        policy: IngressPolicy,
    ) -> Result<(), NftError> {
        self.check(att, &plan::plan_firewall(bridge, ips, policy)?)
    }

    fn ensure(&self, att: &Attachment, feature: Feature, elems: Vec<Elem>) -> Result<(), NftError> {
        let old = self
            .state
            .read(att, feature)?
            .map(|r| r.elems)
            .unwrap_or_default();
        let script = plan::render_replace(&old, &elems, &att.comment());
        if !script.is_empty() {
            self.run_with_skeleton("add", &script)?;
        }
        if elems.is_empty() {
            return self.state.remove(att, feature);
        }
        self.state.write(&Record {
            attachment: att.clone(),
            feature,
            elems,
        })
    }

    /// Run one transaction, retrying a few times when the kernel says "try again" (a dump
    /// interrupted by a concurrent change, a full socket buffer).
    fn run(&self, op: &'static str, script: &str) -> Result<(), NftError> {
        let mut tries = 0;
        loop {
            match self.apply.run(op, script) {
                Err(e) if crate::HasKind::kind(&e) == crate::Kind::Transient && tries < 3 => {
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    /// Run `script`; if our table or a set is missing, create the skeleton under the lock.
    fn run_with_skeleton(&self, op: &'static str, script: &str) -> Result<(), NftError> {
        match self.run(op, script) {
            Err(e) if e.is_missing() => {}
            r => return r,
        }
        let _lock = self.state.lock()?;
        match self.run(op, script) {
            Err(e) if e.is_missing() => {}
            r => return r,
        }
        let full = format!("{}{script}", plan::render_create_skeleton());
        self.run(op, &full).map_err(|e| match e {
            NftError::Apply {
                kind: crate::Kind::Exists,
                text,
                ..
            } => NftError::Skeleton(text),
            e => e,
        })
    }

    fn del(&self, att: &Attachment, feature: Feature) -> Result<(), NftError> {
        let Some(rec) = self.state.read(att, feature)? else {
            return Ok(());
        };
        self.del_elems(&rec.elems)?;
        self.state.remove(att, feature)
    }

    /// Delete tolerantly. If the batch fails (the table is gone: fine; a map key was taken over
    /// by another attachment with a different value: not ours, leave it), retry one by one.
    fn del_elems(&self, elems: &[Elem]) -> Result<(), NftError> {
        match self.run("del", &plan::render_del(elems)) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_missing() => return Ok(()),
            Err(_) => {}
        }
        for e in elems {
            match self
                .apply
                .run("del", &plan::render_del(std::slice::from_ref(e)))
            {
                Ok(()) => {}
                Err(err)
                    if err.is_missing() || crate::HasKind::kind(&err) == crate::Kind::Exists => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// One NFT_MSG_GETSETELEM per element, compared with the planned key and map data.
    /// (libnftables' `get element` would dump every element first: O(table) instead of O(1).)
    fn check(&self, att: &Attachment, elems: &[Elem]) -> Result<(), NftError> {
        for e in elems {
            let want = WireElem::encode(e)?;
            let got = self.apply.lookup(&want)?;
            let ok = match (&got, &want.data) {
                (None, _) => false,
                (Some(d), Some(w)) => d == w,
                (Some(_), None) => true,
            };
            if !ok {
                let value = e
                    .value
                    .as_deref()
                    .map(|v| format!(" : {v}"))
                    .unwrap_or_default();
                return Err(NftError::Missing {
                    attachment: att.to_string(),
                    detail: format!("{} {{ {}{value} }}", e.set, e.key),
                });
            }
        }
        Ok(())
    }

    /// CNI GC: remove everything of attachments not in `valid`, found through the state files
    /// and through element comments (elements whose state file was lost).
    pub fn gc(&self, valid: &[Attachment]) -> Result<(), NftError> {
        let keep: HashSet<String> = valid.iter().map(Attachment::id).collect();
        for rec in self.state.list()? {
            if !keep.contains(&rec.attachment.id()) {
                self.del_elems(&rec.elems)?;
                self.state.remove(&rec.attachment, rec.feature)?;
            }
        }
        let listing = match self
            .apply
            .query("gc", &format!("list table {}", plan::TABLE), true)
        {
            Ok(s) => s,
            Err(e) if e.is_missing() => return Ok(()),
            Err(e) => return Err(e),
        };
        let script = gc::leaked_json(&listing, &keep)?;
        if let Some(script) = script {
            self.apply.query("gc", &script, true)?;
        }
        Ok(())
    }
}

mod gc;

#[cfg(test)]
mod tests;
