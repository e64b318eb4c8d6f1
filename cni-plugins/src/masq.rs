//! The bridge plugin's `ipMasq`, through libnet's nftables layer (keyed by network, container
//! id and ifname, so DEL works without the container's namespace).

use crate::skel::{Args, CniError, ERR_UNSUPPORTED_FIELD};
use crate::types::CniResult;

fn unsupported() -> CniError {
    CniError::new(
        ERR_UNSUPPORTED_FIELD,
        "ipMasq: knit's nftables layer is not in this build yet",
    )
}

pub fn ensure(_a: &Args, _r: &CniResult) -> Result<(), CniError> {
    Err(unsupported())
}

pub fn del(_a: &Args) -> Result<(), CniError> {
    Ok(())
}

pub fn check(_a: &Args) -> Result<(), CniError> {
    Err(unsupported())
}

pub fn gc(_a: &Args) -> Result<(), CniError> {
    Ok(())
}
