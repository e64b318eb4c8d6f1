//! knit's state: the network model (networks, endpoints, sandboxes) and the [`Store`] that keeps
//! it.
//!
//! `store` is one of the two ground floors (DESIGN.md): it never imports `libnet`, and only it
//! talks to a database. The model is plain serde data ([`model`]); its rules are pure functions
//! ([`validate`]); a backend runs those rules inside the same write transaction as the write, so
//! two processes cannot both create `isolated_nw`, or two networks on overlapping subnets.
//!
//! Backends:
//! - [`SqliteStore`] — single host, the default: one SQLite database under `--state-dir`, shared
//!   by the CLI, the CNI plugins and the agent at once, each write one transaction that is
//!   either committed or absent after a `kill -9`.
//! - [`etcd::EtcdStore`] (feature `etcd`) — a cluster: the same model in etcd, each write one
//!   etcd transaction whose compares make its checks atomic across hosts, plus the cluster's
//!   own records (hosts under leases, VNIs, IPAM blocks leased per host) and watches.
//! - `fake::MemStore` (feature `fake`): in memory, for other crates' unit tests.
//!
//! ```no_run
//! use store::{Driver, Network, Pool, SqliteStore, Store};
//! # fn main() -> Result<(), store::Error> {
//! let st = SqliteStore::open("/var/lib/knit".as_ref())?;
//! let mut net = Network::new("isolated_nw", Driver::Bridge);
//! net.ipam.push(Pool::new("10.89.0.0/24".parse().unwrap()));
//! st.create_network(&net)?;
//! assert_eq!(st.network("isolated_nw")?.id, net.id);
//! assert_eq!(st.network(&net.id[..12])?.name, "isolated_nw");
//! # Ok(()) }
//! ```

pub mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod model;
mod sqlite;
pub mod validate;

pub use error::{Error, ErrorKind, ValidationError};
pub use model::{
    iana_service_name, new_id, now_rfc3339, options, Driver, Endpoint, Network, Pool, PortMap,
    Proto, Sandbox, Service, ServicePort,
};
pub use sqlite::{SqliteStore, BUSY_TIMEOUT, DB_FILE};

#[cfg(feature = "etcd")]
pub use etcd::{AsyncEtcdStore, EtcdStore};

/// The network model's store. Synchronous: the agent calls it from blocking threads, the CLI
/// and the CNI plugins directly.
///
/// Every write is one transaction: it is checked and applied whole or not at all, and it
/// increases [`Store::revision`] by exactly one. Reads never change the revision. Lookups by
/// `name_or_id` follow Docker: a full id first, then an exact name, then a unique id prefix (an
/// ambiguous prefix is [`Error::Ambiguous`]).
///
/// Deletes return the record they removed, so a caller can tear down what it described.
pub trait Store: Send + Sync {
    /// Stores a new network after [`validate::validate_network`]. Refuses a name or id already
    /// in use ([`Error::NetworkExists`], [`Error::NetworkIdExists`]) and a subnet overlapping
    /// another network's ([`Error::SubnetOverlap`]), checked in the same transaction as the
    /// insert.
    fn create_network(&self, net: &Network) -> Result<(), Error>;
    /// The network with this full id, name, or unique id prefix.
    fn network(&self, name_or_id: &str) -> Result<Network, Error>;
    /// Every network, ordered by name.
    fn list_networks(&self) -> Result<Vec<Network>, Error>;
    /// Removes a network that has no endpoints ([`Error::NetworkInUse`] otherwise) and no
    /// services ([`Error::NetworkHasServices`]).
    fn delete_network(&self, name_or_id: &str) -> Result<Network, Error>;
    /// Gives the network with this full id a new name and labels (Docker tells the agent a
    /// network's name only after creating it). The name is validated and must be free
    /// ([`Error::NetworkExists`]). Returns the updated network.
    fn rename_network(
        &self,
        id: &str,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Network, Error>;

    /// Creates or replaces (by id) an endpoint after [`validate::validate_endpoint`] against its
    /// network, which must exist ([`Error::NetworkNotFound`]). Within one network the name (when
    /// not empty) and each address belong to one endpoint only ([`Error::EndpointNameExists`],
    /// [`Error::AddressInUse`]). The sandbox is not required to be a stored [`Sandbox`]: Docker's
    /// sandboxes are Docker's.
    fn put_endpoint(&self, ep: &Endpoint) -> Result<(), Error>;
    /// The endpoint with this exact id.
    fn endpoint(&self, id: &str) -> Result<Endpoint, Error>;
    /// Removes the endpoint with this exact id.
    fn delete_endpoint(&self, id: &str) -> Result<Endpoint, Error>;
    /// The endpoints on a network (by full id), ordered by name then id.
    fn network_endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>, Error>;
    /// The endpoints joined to a sandbox (by full id), ordered by name then id.
    fn sandbox_endpoints(&self, sandbox_id: &str) -> Result<Vec<Endpoint>, Error>;

    /// Stores a new sandbox after [`validate::validate_sandbox`]; refuses a name or id in use.
    fn create_sandbox(&self, sb: &Sandbox) -> Result<(), Error>;
    /// The sandbox with this full id, name, or unique id prefix.
    fn sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error>;
    /// Every sandbox, ordered by name.
    fn list_sandboxes(&self) -> Result<Vec<Sandbox>, Error>;
    /// Removes a sandbox no endpoint is joined to ([`Error::SandboxInUse`] otherwise).
    fn delete_sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error>;

    /// Stores a new service after [`validate::validate_service`] against its network (by full
    /// id, which must exist). Refuses a name or id in use ([`Error::ServiceExists`],
    /// [`Error::ServiceIdExists`]) and a virtual address held by an endpoint
    /// ([`Error::AddressInUse`]) or another service ([`Error::AddressIsVip`]) of that network.
    fn create_service(&self, svc: &Service) -> Result<(), Error>;
    /// The service with this full id, name, or unique id prefix.
    fn service(&self, name_or_id: &str) -> Result<Service, Error>;
    /// Every service, ordered by name.
    fn list_services(&self) -> Result<Vec<Service>, Error>;
    /// The services of a network (by full id), ordered by name.
    fn network_services(&self, network_id: &str) -> Result<Vec<Service>, Error>;
    /// Removes a service.
    fn delete_service(&self, name_or_id: &str) -> Result<Service, Error>;

    /// A counter that every committed write increases by one, seen by every process using the
    /// same store. A watcher polls it and re-reads when it moved.
    fn revision(&self) -> Result<u64, Error>;
}
