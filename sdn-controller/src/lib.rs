//! knit's SDN controller: one leader among N replicas computes each host's forwarding state
//! from the registrations in etcd and streams it to the hosts' agents ([`proto`]).

pub mod proto;
