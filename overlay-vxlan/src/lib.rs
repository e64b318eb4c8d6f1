//! The overlay data plane the agent programs on each host: per network a Linux bridge with an
//! anycast gateway, a vxlan device as its port, and the static FDB, neighbour and route
//! entries that make remote endpoints reachable. No flood-and-learn between hosts: the
//! controller's view is the only source, and knit is never in the packet path.
//!
//! ## What it programs, in which order
//! 1. [`ensure_network`]: bridge `knov<vni hex>` (MTU 1450, MAC [`gateway_mac`]`(vni)`, the
//!    subnets' gateways: the same IP and MAC on every host, so a container's ARP for its
//!    gateway gets the same answer wherever it runs); in vxlan mode `knvx<vni>` (`local
//!    UNDERLAY dstport 4789 nolearning`, MTU 1450) enslaved with `learning off
//!    neigh_suppress on`; in routed mode `proxy_arp` on the bridge instead.
//! 2. [`plan`]: observe the entries on those links, diff them against the desired state
//!    ([`desired::NetworkDesired`]), apply: FDB remotes (one per remote MAC, one all-zeros
//!    flood entry per remote VTEP), the bridge's static entries of remote MACs, permanent
//!    neighbours on the bridge, routes to other hosts' blocks (routed mode). An address that
//!    changes hands has its neighbour entry *replaced*, and a MAC that moves host its FDB
//!    entry replaced, never deleted first: no window without a path.
//!
//! ## Why `neigh_suppress` and not the vxlan device's `proxy`
//! With `proxy` the vxlan device answers ARP from its own neighbour table, but only after the
//! bridge has flooded the request to it (and to every local port). With `neigh_suppress` on
//! the vxlan port, permanent neighbours on the bridge and a static bridge entry per remote
//! MAC (which also keeps the bridge, learning off on that port, from flooding unicast to
//! remote MACs out of every local port), the bridge answers ARP and ND itself and nothing
//! reaches the tunnel. Measured by the kernel test: ARP frames the bridge forwards to the
//! vxlan port while containers resolve known remotes, counted by nft: none (and a positive
//! control, an address nobody has, is counted). The host's own neighbour lookups use the same
//! permanent entries.
//!
//! ## How the state grows
//! Per network on a host: 2 links; per remote host one flood entry (or one route per block);
//! per remote endpoint address one FDB remote, one bridge entry and one neighbour. A sync is
//! three dumps of that plus the changes: its cost follows the network's size, and the work
//! of a delta ([`apply_delta`]) follows the delta. Measured (kernel test, a loaded 2-core
//! machine): 1,000 remote endpoints on 20 hosts, first sync 20-45 ms, a converged sync
//! 3-10 ms, one endpoint more by `apply_delta` under 1 ms.
//!
//! ## Use from the agent
//! Hold one [`libnet::netlink::Handle`] on the host namespace; on start-up, periodically and
//! after a lost stream call [`sync_host`] (observe everything, fix everything, remove what is
//! no longer listed); on each delta of a network call [`apply_delta`] with the network's
//! previous and new state (no kernel dump: the work follows the delta), falling back to
//! [`sync_network`] when it fails or when the VNI, mode, underlay or subnets change. Report
//! the [`Applied`] counts as metrics and the errors as logs (in `sync_host` a failing network
//! does not stop the others). Call [`remove_network`] when a network is deleted. Endpoints
//! attached locally should take [`endpoint_mac`]`(ip)` as their MAC, so an
//! address handed to a new container keeps its MAC and peers' ARP caches stay right. The
//! containers' veths go on the bridge with MTU [`MTU`]. Routed mode needs the host to forward
//! IPv4 (`net.ipv4.ip_forward=1`, also what makes the bridge's `proxy_arp` answer): the agent
//! sets it; this crate touches no host-wide setting.

pub mod apply;
pub mod desired;
pub mod error;
pub mod links;
pub mod names;
pub mod plan;

pub use apply::{apply_delta, apply_plan, sync_host, sync_network, Applied, HostSynced, Synced};
pub use desired::{
    HostDesired, Mac, Mode, NetworkDesired, RemoteEndpoint, RemoteHost, Subnet, FORMAT,
};
pub use error::{DesiredError, OverlayError};
pub use links::{ensure_network, remove_network, remove_stale_networks, NetworkLinks, Removed};
pub use names::{bridge_name, endpoint_mac, gateway_mac, vxlan_name, MTU, RTPROT_KNIT_OVERLAY};
pub use plan::{observe, plan_delta, plan_network, Observed, Plan};

#[cfg(test)]
mod tests;
