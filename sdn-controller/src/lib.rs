//! knit's SDN controller: one leader among N replicas computes each host's forwarding state
//! from the registrations in etcd and streams it to the hosts' agents ([`proto`]).
//!
//! - [`model`]: the cluster and each host's desired state, computed incrementally (pure).
//! - [`hub`]: versions, each host's stream and its recent deltas (pure, no I/O).

pub mod hub;
pub mod model;
pub mod proto;
