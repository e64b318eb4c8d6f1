//! knit's CNI plugins: drop-in replacements for the reference plugin set, built as one
//! multi-call binary (`knit-cni`) linked under each plugin's name. This library holds the
//! skeleton (environment, versions, error codes) and one module per plugin.

pub mod durable;
pub mod hashname;
pub mod ipam;
pub mod masq;
pub mod plugins;
pub mod skel;
pub mod spoofchk;
pub mod types;
