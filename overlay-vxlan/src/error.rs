//! Errors of the overlay, each naming the network and the object that failed.

use std::net::IpAddr;

use libnet::netlink::NetlinkError;
use libnet::{HasKind, Kind};

/// A desired state the planner refuses (always [`Kind::Invalid`]); nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("overlay network {network}: {detail}")]
pub struct DesiredError {
    pub network: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Desired(#[from] DesiredError),
    /// A kernel operation failed; the netlink error names the link or entry.
    #[error("overlay network {network}: {source}")]
    Netlink {
        network: String,
        #[source]
        source: NetlinkError,
    },
    /// A link of ours by name is something else (`kind`): not ours to change.
    #[error("overlay network {network}: link {name} exists and is a {kind}, not ours")]
    NameTaken {
        network: String,
        name: String,
        kind: String,
    },
    /// No link of this host holds the underlay IP the vxlan device must send from.
    #[error("overlay network {network}: no link holds the underlay address {ip}")]
    NoUnderlay { network: String, ip: IpAddr },
    /// A link made a moment ago is not there (someone deleted it meanwhile).
    #[error("overlay network {network}: link {name} vanished while being set up")]
    Vanished { network: String, name: String },
}

impl HasKind for DesiredError {
    fn kind(&self) -> Kind {
        Kind::Invalid
    }
}

impl HasKind for OverlayError {
    fn kind(&self) -> Kind {
        match self {
            OverlayError::Desired(e) => e.kind(),
            OverlayError::Netlink { source, .. } => source.kind(),
            OverlayError::NameTaken { .. } => Kind::Exists,
            OverlayError::NoUnderlay { .. } => Kind::NotFound,
            OverlayError::Vanished { .. } => Kind::Transient,
        }
    }
}

/// Attach the network's id to a netlink result.
pub(crate) trait InNetwork<T> {
    fn in_net(self, network: &str) -> Result<T, OverlayError>;
}

impl<T> InNetwork<T> for Result<T, NetlinkError> {
    fn in_net(self, network: &str) -> Result<T, OverlayError> {
        self.map_err(|source| OverlayError::Netlink {
            network: network.to_string(),
            source,
        })
    }
}
