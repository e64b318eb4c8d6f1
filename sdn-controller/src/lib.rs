//! knit's SDN controller: one leader among N replicas computes each host's forwarding state
//! from the registrations in etcd and streams it to the hosts' agents ([`proto`]).
//!
//! - [`model`]: the cluster and each host's desired state, computed incrementally (pure).
//! - [`hub`]: versions, each host's stream and its recent deltas (pure, no I/O).
//! - [`controller`]: the daemon: election on etcd, list + watch into the hub, [`server`] for
//!   the agents, [`metrics`].
//!
//! How an agent finds the leader: it reads `P/controller/leader` in etcd (the leader's
//! `--listen` address; `store::EtcdStore::leader`), or connects to any replica, whose
//! `NotLeader` answer names the leader.

pub mod controller;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod proto;
pub mod server;

pub use controller::{run, Config, ControllerError};
