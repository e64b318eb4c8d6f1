//! libnet: the only crate of knit that talks to the kernel (netlink, namespaces, sysctls,
//! nftables) and the home of the pure planners (IPAM, rule plans) those effects are driven by.

pub mod driver;
pub mod endpoint;
pub mod error;
pub mod ipam;
pub mod linger;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod state;
pub mod sysctl;
pub mod undo;

pub use error::{HasKind, Kind};
pub use state::{StateRoot, DEFAULT_STATE_ROOT};
