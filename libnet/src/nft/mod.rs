//! knit's nftables layer: the one owner of every packet-filter rule knit makes.
//!
//! # What it programs
//! Two tables, `table inet knit` (inet nat handles `masquerade`, `dnat ip to`, `dnat ip6 to` and
//! `fib` on kernel 6.18) and `table bridge knit` (macspoofchk), and nothing else: no other table
//! is ever listed-and-rewritten, flushed or replaced. Each table has a **static skeleton**
//! ([`plan::SKELETON`], `golden/skeleton.nft`; [`plan::BRIDGE_SKELETON`],
//! `golden/bridge_skeleton.nft`), created on first use of one of its sets: sets and maps, and
//! chains whose rules only look elements up. Set names are unique across the two tables
//! ([`plan::Table::of_set`]). In `inet knit`:
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
//! In `bridge knit`, `prerouting` (filter, -300, as the reference's `bridge nat PREROUTING`):
//! frames entering a bridge from a port in `spoof_ports` (a container's host-side veth) are
//! dropped unless `port . ether saddr` is in `spoof_ok` (the container interface's MAC). Frames
//! from other ports, and the bridge's own, are untouched. The drop comes before the bridge
//! learns the source MAC, so a spoofed MAC never reaches the FDB either.
//!
//! # Order and atomicity
//! Each ensure/del is ONE nf_tables transaction of element operations, sent as an nfnetlink
//! batch of NEWSETELEM/DELSETELEM built by [`wire`] (no nft process, no libnftables, no cache).
//! If the kernel answers ENOENT (the table or a set is missing), the caller takes the state
//! dir's flock, retries, and if still missing creates the skeleton with libnftables
//! (`create table inet knit` + skeleton in one transaction: `create` fails if the table exists,
//! so the fixed rules are never duplicated) and applies the elements again. A failed ADD leaves
//! none of its elements (the shared skeleton may stay).
//!
//! Every element carries the comment `knit:<attachment id> <network>/<cid>/<if>` and is owned by
//! that attachment: before adding, ensure looks its new elements up (one GETSETELEM each, over
//! one socket) and refuses with `Exists` if another attachment (or a hand-made element) has one;
//! del looks its recorded elements up and deletes only those still present and still its own,
//! so DEL never takes another attachment's element and costs no transaction when everything is
//! already gone. The delete batch still uses `add element X; delete element X` pairs (nft 1.0.6
//! and its kernel interface have no `destroy`), so an element vanishing meanwhile cannot fail
//! it. The elements are recorded in `<state dir>/<attachment id>.<feature>.json` (written to a
//! temp file and renamed; not fsynced, see [`StateDir::write`]) *before* the transaction that
//! adds them (old and new together; after it, the new alone), so a process killed in between
//! leaves no element its DEL cannot find; DEL reads them from there, so DEL needs only
//! (network, container id, ifname). [`Nft::gc`] uses the state files and, for elements
//! whose state file was lost, the comments (listing only our table).
//!
//! # How state grows
//! Per attachment: masq 2 elements per address, portmap 1 per mapping and family plus 2 per
//! container address, firewall 1-2 per address, macspoofchk 2. No per-container chains or rules, no rule
//! scanning: the 1,000th mapping costs what the first did (hash sets; `masq_skip` is a pipapo
//! set). The only per-call work proportional to the host is GC's listing of our tables.
//!
//! # Speed (measured here, kernel 6.18, nft 1.0.6, 2 cores shared with 4 compiles;
//! `cargo run --release -p libnet --example nft_cost [STATE_DIR]`)
//! - One element transaction: netlink batch ~0.01 ms; libnftables in-process 0.1-0.2 ms per call
//!   (+0.6-0.8 ms to dlopen it once per process); forked `nft -f -` 2.5-8 ms. Hence elements go
//!   over netlink and libnftables is loaded only to create the skeleton (once per namespace,
//!   ~28 ms including the dlopen) and for GC.
//! - A whole `ensure_portmap` (state read, ownership lookups, batch, state write): ~0.05 ms with
//!   the state dir on tmpfs, the same with 50 or 1,000 attachments present. On ext4, when the
//!   record was still fsynced, that fsync dominated: median ~0.5 ms, 3-5 ms while others
//!   compile. The state need not outlive a reboot (neither do the elements), so the record is
//!   not fsynced and the default state dir is [`DEFAULT_STATE_DIR`] (`/run/cni/knit/nft`, on
//!   tmpfs); callers choose another one as a value ([`Nft::at`], [`crate::StateRoot::nft`]),
//!   never through the environment.
//! - DEL: ~12-16 ms, independent of the table size, and not ours: the kernel frees deleted
//!   elements after an RCU grace period, and closing any bound nf_tables netlink socket while such
//!   work is pending waits for it (`nft_rcv_nl_event` flushes the destroy work). The batch itself
//!   is ~0.01 ms. A caller that also deletes a veth can overlap the two waits.
//! - CHECK: one NFT_MSG_GETSETELEM per element, ~0.03 ms; libnftables' `get element` dumps every
//!   element first (~25 µs per element: ~50 ms at 1,000 attachments).
//!
//! # Portmap options not implemented
//! `markMasqBit` / `externalSetMarkChain`: accepted and ignored; we masquerade directly instead
//! of marking (no other chain needs the mark). `conditionsV4/V6` (iptables match syntax):
//! ignored, they cannot be expressed as elements.

mod apply;
mod error;
mod lookup;
pub mod plan;
mod state;
mod wire;

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

pub use apply::{LibNft, NftApply, NftCli};
pub use error::NftError;
pub use lookup::Found;
pub use plan::{
    Elem, ElemOp, IngressPolicy, PortMapping, Proto, RawPortMapping, ServicePort, Table,
    SERVICE_MAX_BACKENDS,
};
pub use state::{Attachment, Feature, Record, StateDir, DEFAULT_STATE_DIR};
pub use wire::{keep_sockets, WireElem};

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
    /// Elements over netlink, the skeleton through libnftables (loaded only when needed), the
    /// state in [`DEFAULT_STATE_DIR`].
    pub fn new() -> Nft<LibNft> {
        Nft::at(StateDir::new(DEFAULT_STATE_DIR))
    }

    /// Like [`Nft::new`] with the state in `state` (e.g. [`crate::StateRoot::nft`]).
    pub fn at(state: StateDir) -> Nft<LibNft> {
        Nft::with(LibNft::new(), state)
    }
}

impl Default for Nft<LibNft> {
    fn default() -> Nft<LibNft> {
        Nft::new()
    }
}

impl<A: NftApply> Nft<A> {
    pub fn with(apply: A, state: StateDir) -> Nft<A> {
        Nft { apply, state }
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    pub fn apply(&self) -> &A {
        &self.apply
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

    /// bridge macspoofchk: frames entering the bridge from host port `port` must carry source
    /// MAC `mac` (the container interface's), others from that port are dropped.
    pub fn ensure_spoofchk(
        &self,
        att: &Attachment,
        port: &str,
        mac: [u8; 6],
    ) -> Result<(), NftError> {
        self.ensure(att, Feature::Spoofchk, plan::plan_spoofchk(port, mac)?)
    }

    pub fn del_spoofchk(&self, att: &Attachment) -> Result<(), NftError> {
        self.del(att, Feature::Spoofchk)
    }

    pub fn check_spoofchk(
        &self,
        att: &Attachment,
        port: &str,
        mac: [u8; 6],
    ) -> Result<(), NftError> {
        self.check(att, &plan::plan_spoofchk(port, mac)?)
    }

    /// A service's elements ([`plan::plan_service`]) as `att` owns them: only what changed
    /// since the recorded state is added or deleted, in one transaction.
    pub fn ensure_service(
        &self,
        att: &Attachment,
        vip: IpAddr,
        ports: &[plan::ServicePort],
        backends: &[IpAddr],
    ) -> Result<(), NftError> {
        let elems = plan::plan_service(vip, ports, &self.service_slots(att, vip, backends)?)?;
        self.ensure(att, Feature::Service, elems)
    }

    /// The backends of the VIP's family in slot order, keeping the recorded order
    /// ([`plan::assign_slots`]).
    fn service_slots(
        &self,
        att: &Attachment,
        vip: IpAddr,
        backends: &[IpAddr],
    ) -> Result<Vec<IpAddr>, NftError> {
        let backends: Vec<IpAddr> = backends
            .iter()
            .filter(|b| b.is_ipv4() == vip.is_ipv4())
            .copied()
            .collect();
        let previous = match self.state.read(att, Feature::Service) {
            Ok(Some(rec)) => plan::slots_of(&rec.elems),
            Ok(None) | Err(NftError::StateContent { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(plan::assign_slots(&previous, &backends))
    }

    pub fn del_service(&self, att: &Attachment) -> Result<(), NftError> {
        self.del(att, Feature::Service)
    }

    pub fn check_service(
        &self,
        att: &Attachment,
        vip: IpAddr,
        ports: &[plan::ServicePort],
        backends: &[IpAddr],
    ) -> Result<(), NftError> {
        let slots = self.service_slots(att, vip, backends)?;
        self.check(att, &plan::plan_service(vip, ports, &slots)?)
    }

    fn ensure(&self, att: &Attachment, feature: Feature, elems: Vec<Elem>) -> Result<(), NftError> {
        let old = self
            .state
            .read(att, feature)?
            .map(|r| r.elems)
            .unwrap_or_default();
        let fresh: Vec<Elem> = elems.iter().filter(|e| !old.contains(e)).cloned().collect();
        self.refuse_foreign(att, &fresh)?;
        let stale: Vec<Elem> = old.iter().filter(|e| !elems.contains(e)).cloned().collect();
        let stale = self.owned(att, &stale)?;
        let ops = plan::ops_replace(&stale, &elems);
        if !fresh.is_empty() {
            // Write ahead: the record names every element the transaction may leave (the old
            // and the new), so a process killed between the transaction and the final record
            // leaves nothing its DEL cannot find (DEL takes only what is still ours).
            let mut ahead = old.clone();
            ahead.extend(fresh.iter().cloned());
            self.state.write(&Record {
                attachment: att.clone(),
                feature,
                elems: ahead,
            })?;
        }
        if !ops.is_empty() {
            if let Err(e) = self.elems_with_skeleton(&ops, &att.comment()) {
                // One transaction: none of it was applied, so the old record is true again.
                // Should restoring it fail, the wider record is harmless: DEL and GC take only
                // elements present and ours.
                let _ = if old.is_empty() {
                    self.state.remove(att, feature)
                } else {
                    self.state.write(&Record {
                        attachment: att.clone(),
                        feature,
                        elems: old,
                    })
                };
                return Err(e);
            }
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

    /// Fail if one of `elems` is already there under another owner: adding it would be a no-op
    /// and a later DEL of that owner would take it from us (or ours from them).
    fn refuse_foreign(&self, att: &Attachment, elems: &[Elem]) -> Result<(), NftError> {
        let wire: Vec<WireElem> = elems
            .iter()
            .map(WireElem::encode)
            .collect::<Result<_, _>>()?;
        let me = att.id();
        for (e, found) in elems.iter().zip(self.apply.lookup(&wire)?) {
            if let Some(f) = found.filter(|f| f.owner() != Some(me.as_str())) {
                return Err(NftError::Taken {
                    attachment: att.to_string(),
                    element: format!("{} {{ {} }}", e.set, e.key),
                    owner: f
                        .comment
                        .unwrap_or_else(|| "an element without comment".into()),
                });
            }
        }
        Ok(())
    }

    /// The elements of `elems` that are present and carry this attachment's comment.
    fn owned(&self, att: &Attachment, elems: &[Elem]) -> Result<Vec<Elem>, NftError> {
        let wire: Vec<WireElem> = elems
            .iter()
            .map(WireElem::encode)
            .collect::<Result<_, _>>()?;
        let me = att.id();
        let found = self.apply.lookup(&wire)?;
        Ok(elems
            .iter()
            .zip(found)
            .filter(|(_, f)| f.as_ref().and_then(Found::owner) == Some(me.as_str()))
            .map(|(e, _)| e.clone())
            .collect())
    }

    /// Retry a few times when the kernel says "try again" (a dump interrupted by a concurrent
    /// change, a full socket buffer).
    fn retry(mut f: impl FnMut() -> Result<(), NftError>) -> Result<(), NftError> {
        let mut tries = 0;
        loop {
            match f() {
                Err(e) if crate::HasKind::kind(&e) == crate::Kind::Transient && tries < 3 => {
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    fn elems(&self, op: &'static str, ops: &[ElemOp], comment: &str) -> Result<(), NftError> {
        Self::retry(|| self.apply.elems(op, ops, comment))
    }

    /// Apply `ops`; if one of our tables or a set is missing, create the skeleton of each table
    /// `ops` touches under the lock (one libnftables transaction each: `create table` +
    /// skeleton; a table already there is left alone), then apply `ops` again.
    fn elems_with_skeleton(&self, ops: &[ElemOp], comment: &str) -> Result<(), NftError> {
        match self.elems("add", ops, comment) {
            Err(e) if e.is_missing() => {}
            r => return r,
        }
        let _lock = self.state.lock()?;
        match self.elems("add", ops, comment) {
            Err(e) if e.is_missing() => {}
            r => return r,
        }
        let tables: BTreeSet<Table> = ops.iter().map(|op| Table::of_set(&op.elem().set)).collect();
        let mut existing = Vec::new();
        for t in tables {
            let skeleton = plan::render_create_skeleton(t);
            match Self::retry(|| self.apply.run("create skeleton", &skeleton)) {
                Err(NftError::Apply {
                    kind: crate::Kind::Exists,
                    text,
                    ..
                }) => existing.push(format!("table {}: {text}", t.name())),
                r => r?,
            }
        }
        match self.elems("add", ops, comment) {
            // A table was there but lacks a set: another knit version made it.
            Err(e) if e.is_missing() && !existing.is_empty() => {
                Err(NftError::Skeleton(existing.join("; ")))
            }
            r => r,
        }
    }

    fn del(&self, att: &Attachment, feature: Feature) -> Result<(), NftError> {
        let rec = match self.state.read(att, feature) {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(()),
            // A record cut short by a crash (records are not fsynced: after a power loss the
            // kernel's elements are gone too). Find this attachment's elements by their
            // comments instead, then drop the record.
            Err(NftError::StateContent { .. }) => {
                let id = att.id();
                self.sweep(&|owner, _| owner == id)?;
                return self.state.remove(att, feature);
            }
            Err(e) => return Err(e),
        };
        self.del_elems(att, &rec.elems)?;
        self.state.remove(att, feature)
    }

    /// Delete every element of our tables whose comment names an owner `doomed` picks.
    fn sweep(&self, doomed: &dyn Fn(&str, &str) -> bool) -> Result<(), NftError> {
        for t in Table::ALL {
            let listing = match self
                .apply
                .query("gc", &format!("list table {}", t.name()), true)
            {
                Ok(s) => s,
                Err(e) if e.is_missing() => continue,
                Err(e) => return Err(e),
            };
            if let Some(script) = gc::sweep_json(&listing, doomed)? {
                self.apply.query("gc", &script, true)?;
            }
        }
        Ok(())
    }

    /// Delete tolerantly what is still there and still ours (elements already gone cost no
    /// transaction). If the batch fails anyway (the table went away meanwhile: fine), retry
    /// one by one and skip what is gone or no longer ours.
    fn del_elems(&self, att: &Attachment, elems: &[Elem]) -> Result<(), NftError> {
        let mine = self.owned(att, elems)?;
        if mine.is_empty() {
            return Ok(());
        }
        match self.elems("del", &plan::ops_del(&mine), "") {
            Ok(()) => return Ok(()),
            Err(e) if e.is_missing() => return Ok(()),
            Err(_) => {}
        }
        for e in &mine {
            match self.elems("del", &plan::ops_del(std::slice::from_ref(e)), "") {
                Ok(()) => {}
                Err(err)
                    if err.is_missing() || crate::HasKind::kind(&err) == crate::Kind::Exists => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// One NFT_MSG_GETSETELEM per element over one socket, compared with the planned key, map
    /// data and owner. (libnftables' `get element` would dump every element first.)
    fn check(&self, att: &Attachment, elems: &[Elem]) -> Result<(), NftError> {
        let wire: Vec<WireElem> = elems
            .iter()
            .map(WireElem::encode)
            .collect::<Result<_, _>>()?;
        let me = att.id();
        for ((e, w), found) in elems.iter().zip(&wire).zip(self.apply.lookup(&wire)?) {
            let ok = found.is_some_and(|f| {
                f.owner() == Some(me.as_str()) && w.data.as_ref().is_none_or(|d| *d == f.data)
            });
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

    /// CNI GC of `network`: remove everything of its attachments not in `valid`, found through
    /// the state files and through element comments (elements whose state file was lost).
    /// Other networks' attachments are never touched.
    pub fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), NftError> {
        let keep: HashSet<String> = valid.iter().map(Attachment::id).collect();
        for rec in self.state.list()? {
            if rec.attachment.network == network && !keep.contains(&rec.attachment.id()) {
                self.del_elems(&rec.attachment, &rec.elems)?;
                self.state.remove(&rec.attachment, rec.feature)?;
            }
        }
        self.sweep(&|id, net| net == network && !keep.contains(id))
    }
}

mod gc;

#[cfg(test)]
mod tests;
