//! The nftables attachment identity of a CNI call (network, container id, ifname), shared by
//! ipMasq, macspoofchk, portmap and firewall, and the CHECK and GC of ipMasq. ADD and DEL of
//! ipMasq are the lifecycle's filter (`libnet::endpoint::filters::Masq`).

use libnet::nft::Attachment;

use crate::skel::{Args, CniError, OrCni};
use crate::types::CniResult;

pub fn attachment(a: &Args) -> Attachment {
    Attachment::new(&a.conf.name, &a.container_id, &a.ifname)
}

/// The valid attachments of a GC call on this network.
pub fn valid_attachments(a: &Args) -> Vec<Attachment> {
    a.valid_attachments()
        .iter()
        .map(|(cid, ifname)| Attachment::new(&a.conf.name, cid, ifname))
        .collect()
}

pub fn check(a: &Args, prev: &CniResult) -> Result<(), CniError> {
    let ips: Vec<_> = prev.ips.iter().map(|ip| ip.address).collect();
    a.nft().check_masq(&attachment(a), &ips).cni_ctx("ipMasq")
}

/// GC of this network's nftables state (every feature) for attachments not in the valid list.
pub fn gc(a: &Args) -> Result<(), CniError> {
    a.nft()
        .gc(&a.conf.name, &valid_attachments(a))
        .cni_ctx("GC of nftables state")
}
