//! The filters of libnet's nftables layer as lifecycle steps: the bridge network's masquerade
//! and MAC spoof check. Both are keyed by the request's attachment, so their DEL needs neither
//! the container's namespace nor a previous result.

use super::{boxed, Addressing, BoxError, Filter, Request};
use crate::driver::{DriverError, Wired};
use crate::netlink::link::parse_mac;
use crate::nft::{Nft, NftApply};

/// Masquerade what the endpoint's addresses send beyond their subnets (`ipMasq`).
#[derive(Debug)]
pub struct Masq<'n, A: NftApply> {
    pub nft: &'n Nft<A>,
}

impl<A: NftApply + Sync> Filter for Masq<'_, A> {
    fn name(&self) -> &'static str {
        "ipMasq"
    }

    fn ensure(&self, req: &Request<'_>, addrs: &Addressing, _: &Wired) -> Result<(), BoxError> {
        let ips: Vec<_> = addrs.ips.iter().map(|ip| ip.addr).collect();
        self.nft.ensure_masq(&req.attachment(), &ips).map_err(boxed)
    }

    fn del(&self, req: &Request<'_>) -> Result<(), BoxError> {
        self.nft.del_masq(&req.attachment()).map_err(boxed)
    }
}

/// Frames entering the bridge from the endpoint's host port must carry the container
/// interface's MAC (`macspoofchk`).
#[derive(Debug)]
pub struct SpoofCheck<'n, A: NftApply> {
    pub nft: &'n Nft<A>,
}

impl<A: NftApply + Sync> Filter for SpoofCheck<'_, A> {
    fn name(&self) -> &'static str {
        "macspoofchk"
    }

    fn ensure(&self, req: &Request<'_>, _: &Addressing, wired: &Wired) -> Result<(), BoxError> {
        let host = wired.host.as_ref().ok_or_else(|| {
            boxed(DriverError::Invalid(
                "macspoofchk needs a host-side port (a bridge network)".into(),
            ))
        })?;
        let mac = parse_mac(&wired.container.mac).ok_or_else(|| {
            boxed(DriverError::Invalid(format!(
                "invalid MAC {:?}",
                wired.container.mac
            )))
        })?;
        self.nft
            .ensure_spoofchk(&req.attachment(), &host.name, mac)
            .map_err(boxed)
    }

    fn del(&self, req: &Request<'_>) -> Result<(), BoxError> {
        self.nft.del_spoofchk(&req.attachment()).map_err(boxed)
    }
}
