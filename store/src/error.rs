//! The store's errors, each naming the object that failed, classified into an [`ErrorKind`].
//!
//! `store` and `libnet` never import each other (DESIGN.md: two ground floors), so the
//! classification is our own enum with the same variants as `libnet::Kind`; a front (the CLI,
//! the Docker plugin) maps both with one `match` each.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

/// What a caller can do about an error (the same variants as `libnet::Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The object, its name or its address is already taken.
    Exists,
    /// It is still in use (endpoints on a network), or another process held the database past
    /// the busy timeout.
    Busy,
    /// The request itself is wrong: a bad name, a gateway outside its subnet, …
    Invalid,
    /// Try again: etcd unreachable or restarting, a watch to restart.
    Transient,
    /// A bug, a damaged database, or an I/O error on the state dir.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Exists => "exists",
            ErrorKind::Busy => "busy",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Transient => "transient",
            ErrorKind::Internal => "internal",
        })
    }
}

/// A request that breaks a rule of the model; found by the pure functions in `validate`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{what} name is empty")]
    NameEmpty { what: &'static str },
    #[error("{what} name {name:?} is longer than {max} characters")]
    NameTooLong {
        what: &'static str,
        name: String,
        max: usize,
    },
    #[error(
        "{what} name {name:?} is invalid: it must start with a letter or digit and hold only \
         letters, digits, '_', '.', '-', and no '..'"
    )]
    NameChars { what: &'static str, name: String },
    #[error("{what} id {id:?} is invalid: it must be 1 to 128 characters of [a-zA-Z0-9_.-]")]
    Id { what: &'static str, id: String },
    #[error("subnet {subnet} has host bits set: it should be {canonical}")]
    SubnetNotCanonical { subnet: IpNet, canonical: IpNet },
    #[error("ip-range {range} has host bits set: it should be {canonical}")]
    RangeNotCanonical { range: IpNet, canonical: IpNet },
    #[error("gateway {gateway} is not inside subnet {subnet}")]
    GatewayOutsideSubnet { gateway: IpAddr, subnet: IpNet },
    #[error("ip-range {range} is not inside subnet {subnet}")]
    RangeOutsideSubnet { range: IpNet, subnet: IpNet },
    #[error("subnets {a} and {b} of one network overlap")]
    PoolsOverlap { a: IpNet, b: IpNet },
    #[error("subnet {subnet} is IPv6 but the network does not enable IPv6")]
    Ipv6NotEnabled { subnet: IpNet },
    #[error("option {key}={value:?} is invalid: expected {expected}")]
    Option {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("endpoint address {addr} is not inside any subnet of network {network}")]
    AddressOutsidePools { addr: IpNet, network: String },
    #[error("endpoint address {addr} is an IPv{expected} field but holds another family")]
    AddressFamily { addr: IpNet, expected: u8 },
    #[error("port mapping to container port 0 is invalid")]
    ContainerPortZero,
    #[error(
        "service name {name:?} is invalid: it must be a DNS label (1 to 63 of a-z, 0-9, '-', \
         starting and ending with a letter or digit)"
    )]
    ServiceName { name: String },
    #[error("service {service:?} has no ports: give at least one (--port 80/tcp)")]
    ServiceNoPorts { service: String },
    #[error("service {service:?} lists port {port}/{proto} twice")]
    ServicePortTwice {
        service: String,
        port: u16,
        proto: crate::model::Proto,
    },
    #[error("service {service:?}: port 0 is invalid")]
    ServicePortZero { service: String },
    #[error("service {service:?}: port name {name:?} is invalid: 1 to 15 of a-z, 0-9, '-'")]
    ServicePortName { service: String, name: String },
    #[error("virtual address {vip} is not inside any subnet of network {network:?}")]
    VipOutsidePools { vip: IpAddr, network: String },
    #[error("virtual address {vip} is {what} of subnet {subnet}")]
    VipReserved {
        vip: IpAddr,
        what: &'static str,
        subnet: IpNet,
    },
}

/// Every failure of a [`crate::Store`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network {name_or_id:?} not found")]
    NetworkNotFound { name_or_id: String },
    #[error("endpoint {id:?} not found")]
    EndpointNotFound { id: String },
    #[error("sandbox {name_or_id:?} not found")]
    SandboxNotFound { name_or_id: String },
    #[error("{what} {prefix:?} is ambiguous: {count} ids start with it, give more characters")]
    Ambiguous {
        what: &'static str,
        prefix: String,
        count: usize,
    },
    #[error("network name {name:?} is already in use")]
    NetworkExists { name: String },
    #[error("network id {id} is already in use")]
    NetworkIdExists { id: String },
    #[error("subnet {subnet} overlaps subnet {other} of network {network:?}")]
    SubnetOverlap {
        subnet: IpNet,
        other: IpNet,
        network: String,
    },
    #[error("network {network:?} has {endpoints} endpoint(s): disconnect them first")]
    NetworkInUse { network: String, endpoints: usize },
    #[error("sandbox name {name:?} is already in use")]
    SandboxExists { name: String },
    #[error("sandbox id {id} is already in use")]
    SandboxIdExists { id: String },
    #[error("sandbox {sandbox:?} has {endpoints} endpoint(s): disconnect them first")]
    SandboxInUse { sandbox: String, endpoints: usize },
    #[error("endpoint name {name:?} is already in use on network {network:?}")]
    EndpointNameExists { name: String, network: String },
    #[error("address {addr} is already used by endpoint {endpoint} on network {network:?}")]
    AddressInUse {
        addr: IpAddr,
        endpoint: String,
        network: String,
    },
    #[error("address {addr} is the virtual address of service {service:?} on network {network:?}")]
    AddressIsVip {
        addr: IpAddr,
        service: String,
        network: String,
    },
    #[error("service {name_or_id:?} not found")]
    ServiceNotFound { name_or_id: String },
    #[error("service name {name:?} is already in use")]
    ServiceExists { name: String },
    #[error("service id {id} is already in use")]
    ServiceIdExists { id: String },
    #[error("network {network:?} has {services} service(s): remove them first")]
    NetworkHasServices { network: String, services: usize },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("creating the state dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {op}: {source}")]
    Sqlite {
        op: &'static str,
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store {path}: schema version {found} is newer than this knit's {supported}")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("store record {table}/{id} cannot be encoded: {source}")]
    Encode {
        table: &'static str,
        id: String,
        source: serde_json::Error,
    },
    #[error("store record {table}/{id} is unreadable: {source}")]
    Corrupt {
        table: &'static str,
        id: String,
        source: serde_json::Error,
    },
    /// etcd did not answer (down, restarting, no leader, or slower than the operation timeout).
    #[error("etcd at {url} is unreachable: {op}: {detail}")]
    EtcdUnavailable {
        url: String,
        op: &'static str,
        detail: String,
    },
    /// etcd answered with an error that retrying will not fix.
    #[error("etcd at {url}: {op}: {detail}")]
    Etcd {
        url: String,
        op: &'static str,
        detail: String,
    },
    /// How the etcd store was asked to connect is wrong (no endpoint, an empty key prefix).
    #[error("etcd store: {detail}")]
    EtcdConfig { detail: String },
    /// Other writers kept changing the records this write checks; it was retried that often.
    #[error("{op}: other writers changed the store {attempts} times in a row, try again")]
    Contention { op: &'static str, attempts: u32 },
    #[error("host {name:?}: {detail}")]
    HostInvalid { name: String, detail: String },
    /// `lease`: the holder's (a host restarted after a crash finds its previous run's).
    #[error("host name {name:?} is registered by a live host with underlay IP {underlay_ip}")]
    HostExists {
        name: String,
        underlay_ip: IpAddr,
        lease: i64,
    },
    #[error("underlay IP {ip} is registered by live host {host:?}")]
    UnderlayIpInUse {
        ip: IpAddr,
        host: String,
        lease: i64,
    },
    /// The host's lease expired (or was revoked): it holds no name, block or VNI any more and
    /// must register again.
    #[error("host {host:?}: its lease {lease:x} expired or was revoked, register again")]
    LeaseExpired { host: String, lease: i64 },
    #[error("block {block} of network {network:?} is held by host {host:?}")]
    BlockTaken {
        block: IpNet,
        network: String,
        host: String,
    },
    #[error("network {network:?} has no free /{prefix_len} block left")]
    BlocksExhausted { network: String, prefix_len: u8 },
    #[error("block size /{prefix_len} does not fit network {network:?}'s subnet {subnet}")]
    BlockSize {
        network: String,
        subnet: IpNet,
        prefix_len: u8,
    },
    #[error("no free VNI left for network {network:?}")]
    VnisExhausted { network: String },
    /// A watch could not be (re)started; the watcher keeps its place and can be polled again.
    #[error("watch of {what} from revision {revision}: {detail}")]
    Watch {
        what: &'static str,
        revision: i64,
        detail: String,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NetworkNotFound { .. }
            | Error::EndpointNotFound { .. }
            | Error::SandboxNotFound { .. }
            | Error::ServiceNotFound { .. } => ErrorKind::NotFound,
            Error::Ambiguous { .. } | Error::Invalid(_) => ErrorKind::Invalid,
            Error::NetworkExists { .. }
            | Error::NetworkIdExists { .. }
            | Error::SubnetOverlap { .. }
            | Error::SandboxExists { .. }
            | Error::SandboxIdExists { .. }
            | Error::EndpointNameExists { .. }
            | Error::AddressInUse { .. }
            | Error::AddressIsVip { .. }
            | Error::ServiceExists { .. }
            | Error::ServiceIdExists { .. }
            | Error::HostExists { .. }
            | Error::UnderlayIpInUse { .. }
            | Error::BlockTaken { .. } => ErrorKind::Exists,
            Error::NetworkInUse { .. }
            | Error::SandboxInUse { .. }
            | Error::NetworkHasServices { .. }
            | Error::Contention { .. }
            | Error::BlocksExhausted { .. }
            | Error::VnisExhausted { .. } => ErrorKind::Busy,
            Error::LeaseExpired { .. } => ErrorKind::NotFound,
            Error::EtcdConfig { .. } | Error::BlockSize { .. } | Error::HostInvalid { .. } => {
                ErrorKind::Invalid
            }
            Error::EtcdUnavailable { .. } | Error::Watch { .. } => ErrorKind::Transient,
            Error::Etcd { .. } => ErrorKind::Internal,
            Error::Sqlite { source, .. } => sqlite_kind(source),
            Error::StateDir { .. }
            | Error::SchemaTooNew { .. }
            | Error::Encode { .. }
            | Error::Corrupt { .. } => ErrorKind::Internal,
        }
    }
}

/// SQLite's result codes, classified once. Busy means another process kept the database locked
/// past the busy timeout; a constraint can only fire if our own checks missed a race (they run
/// inside the same write transaction, so it would be a bug, but the answer is still "exists").
fn sqlite_kind(e: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ffi::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Busy,
        Some(ErrorCode::ConstraintViolation) => ErrorKind::Exists,
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            ErrorKind::Invalid
        }
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let nf = Error::NetworkNotFound {
            name_or_id: "x".into(),
        };
        assert_eq!(nf.kind(), ErrorKind::NotFound);
        let busy = Error::NetworkInUse {
            network: "x".into(),
            endpoints: 1,
        };
        assert_eq!(busy.kind(), ErrorKind::Busy);
        let inv: Error = ValidationError::ContainerPortZero.into();
        assert_eq!(inv.kind(), ErrorKind::Invalid);
        let locked = Error::Sqlite {
            op: "begin",
            path: "/x".into(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        };
        assert_eq!(locked.kind(), ErrorKind::Busy);
        assert!(locked.to_string().contains("begin"));
    }
}
