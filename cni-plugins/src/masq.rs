//! The bridge plugin's `ipMasq`, through libnet's nftables layer. Keyed by (network, container
//! id, ifname), so DEL needs neither the container's namespace nor a prevResult.

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

pub fn ensure(a: &Args, r: &CniResult) -> Result<(), CniError> {
    let ips: Vec<_> = r.ips.iter().map(|ip| ip.address).collect();
    a.nft().ensure_masq(&attachment(a), &ips).cni_ctx("ipMasq")
}

pub fn del(a: &Args) -> Result<(), CniError> {
    a.nft().del_masq(&attachment(a)).cni_ctx("ipMasq")
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
