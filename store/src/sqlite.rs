//! The single-host backend: one SQLite database, `STATE_DIR/knit.db`.
//!
//! Several processes use it at once (the CLI, the CNI plugins, the agent), so:
//! - **WAL**: readers never wait for a writer and see the last committed state.
//! - **Every write is `BEGIN IMMEDIATE`**: it takes the write lock before reading what it
//!   checks (duplicate names, overlapping subnets), so the check and the insert are one atomic
//!   step across processes, and a deferred reader never has to be upgraded to a writer (that
//!   upgrade fails with `SQLITE_BUSY` at once, whatever the busy timeout).
//! - **A busy timeout** ([`BUSY_TIMEOUT`]): a writer waits for another's commit instead of
//!   failing; only a lock held longer than that surfaces, as `ErrorKind::Busy`.
//! - **Durability by kind of record.** WAL alone survives `kill -9` at any point (a
//!   transaction is in the log whole or not at all). Writes of networks are also
//!   `synchronous=FULL`: the commit reaches the disk before the call returns, so networks
//!   survive a power loss (about 0.3 ms to a few ms per write here). Endpoints and sandboxes
//!   are `synchronous=NORMAL` (no flush per commit; the log is flushed at checkpoints and by the
//!   next network write): like the IPAM reservations (DESIGN.md), they matter only while their
//!   containers live, and no container outlives a power loss.
//! - Records are stored whole as JSON (`body`), with the columns the store searches or keeps
//!   unique beside them. `PRAGMA user_version` is the schema version, migrated on open.
//! - The revision is a row of `meta` bumped in every write transaction.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::model::{Endpoint, Network, Sandbox, Service};
use crate::validate::{
    find_overlap, host_addr, validate_endpoint, validate_id, validate_network, validate_sandbox,
    validate_service,
};
use crate::Store;

/// The database file under the state dir.
pub const DB_FILE: &str = "knit.db";
/// How long a write waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// The schema this code writes; `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE networks (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE sandboxes (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE endpoints (
    id         TEXT PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks(id),
    sandbox_id TEXT,
    name       TEXT NOT NULL,
    ipv4       TEXT,
    ipv6       TEXT,
    body       TEXT NOT NULL
);
CREATE INDEX endpoints_by_network ON endpoints(network_id);
CREATE INDEX endpoints_by_sandbox ON endpoints(sandbox_id);
CREATE UNIQUE INDEX endpoints_name ON endpoints(network_id, name) WHERE name <> '';
CREATE UNIQUE INDEX endpoints_ipv4 ON endpoints(network_id, ipv4) WHERE ipv4 IS NOT NULL;
CREATE UNIQUE INDEX endpoints_ipv6 ON endpoints(network_id, ipv6) WHERE ipv6 IS NOT NULL;
";

/// Version 2: services (a virtual address unique in its network).
const SCHEMA_V2: &str = "
CREATE TABLE services (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    network_id TEXT NOT NULL REFERENCES networks(id),
    vip        TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE UNIQUE INDEX services_vip ON services(network_id, vip);
";

/// The SQLite [`Store`]. One connection per value, serialised by a mutex; open one per process
/// (or several: each is an independent connection, as another process's would be).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and `state_dir` if needed) `state_dir/knit.db`, switches it to WAL and
    /// migrates its schema. Safe while other processes open or write the same store.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, Error> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let sql = |op| {
            let path = path.clone();
            move |source| Error::Sqlite { op, path, source }
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(sql("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("busy_timeout"))?;
        // Switching a new database to WAL needs a moment of exclusive access; when several
        // processes open a fresh store at once SQLite may answer BUSY here without calling the
        // busy handler, so retry within the same timeout.
        retry_busy(|| conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)))
            .map_err(sql("journal_mode=WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql("foreign_keys"))?;
        migrate(&mut conn, &path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `PRAGMA integrity_check`: the problems found, empty when the file is sound.
    pub fn integrity_check(&self) -> Result<Vec<String>, Error> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("PRAGMA integrity_check")
            .map_err(self.sql("integrity_check"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("integrity_check"))?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no transaction open (the Transaction's Drop
        // rolls it back), so the connection is still good.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sql(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
        move |source| Error::Sqlite {
            op,
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in one write transaction and bumps the revision in it; nothing is written
    /// unless `f` succeeds and the commit does.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.write_as(op, Durable::UntilPowerLoss, f)
    }

    /// [`Self::write`] with the durability a record of this kind needs.
    fn write_as<T>(
        &self,
        op: &'static str,
        durable: Durable,
        f: impl FnOnce(&Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.lock();
        let mode = match durable {
            Durable::Always => "FULL",
            Durable::UntilPowerLoss => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", mode)
            .map_err(self.sql(op))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql(op))?;
        let out = f(&Tx { tx: &tx, st: self })?;
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'revision'",
            [],
        )
        .map_err(self.sql(op))?;
        tx.commit().map_err(self.sql(op))?;
        Ok(out)
    }

    /// Runs `f` over one consistent snapshot.
    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(self.sql(op))?;
        f(&Tx { tx: &tx, st: self })
        // Dropping a read-only transaction rolls it back: nothing to commit.
    }
}

/// How long a committed write must last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    /// Across a power loss (networks): flushed before the commit returns.
    Always,
    /// Across a crash of any process, not a power loss (endpoints, sandboxes).
    UntilPowerLoss,
}

fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e)
                if start.elapsed() < BUSY_TIMEOUT
                    && matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Creates or upgrades the schema in one write transaction, so concurrent openers of a fresh
/// store run it once. An open of a current store only reads the version: a `knit network ls`
/// never waits for the agent's write lock.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    let sql = |op| {
        let path = path.to_path_buf();
        move |source| Error::Sqlite { op, path, source }
    };
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql("user_version"))?;
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("migrate"))?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql("user_version"))?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 1 {
        tx.execute_batch(SCHEMA_V1).map_err(sql("create schema"))?;
    }
    if found < 2 {
        tx.execute_batch(SCHEMA_V2).map_err(sql("migrate to 2"))?;
    }
    // Later versions: `if found < 3 { ... }`, each step in this same transaction.
    if found < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql("user_version"))?;
    }
    tx.commit().map_err(sql("migrate"))
}

/// A transaction with the queries the store's operations share.
struct Tx<'a> {
    tx: &'a Transaction<'a>,
    st: &'a SqliteStore,
}

/// The tables that hold named records looked up Docker's way.
#[derive(Clone, Copy)]
enum Named {
    Networks,
    Sandboxes,
    Services,
}

impl Named {
    fn table(self) -> &'static str {
        match self {
            Named::Networks => "networks",
            Named::Sandboxes => "sandboxes",
            Named::Services => "services",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Named::Networks => "network",
            Named::Sandboxes => "sandbox",
            Named::Services => "service",
        }
    }
    fn not_found(self, name_or_id: &str) -> Error {
        let name_or_id = name_or_id.to_string();
        match self {
            Named::Networks => Error::NetworkNotFound { name_or_id },
            Named::Sandboxes => Error::SandboxNotFound { name_or_id },
            Named::Services => Error::ServiceNotFound { name_or_id },
        }
    }
}

impl Tx<'_> {
    fn decode<T: DeserializeOwned>(table: &'static str, id: &str, body: &str) -> Result<T, Error> {
        serde_json::from_str(body).map_err(|source| Error::Corrupt {
            table,
            id: id.to_string(),
            source,
        })
    }

    fn exists(&self, sql: &str, arg: &str) -> Result<bool, Error> {
        self.tx
            .query_row(sql, [arg], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(self.st.sql("query"))
    }

    /// `(id, body)` rows of a query.
    fn rows(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<(String, String)>, Error> {
        let mut stmt = self.tx.prepare(sql).map_err(self.st.sql("prepare"))?;
        let rows = stmt
            .query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.st.sql("query"))?;
        Ok(rows)
    }

    fn records<T: DeserializeOwned>(
        &self,
        table: &'static str,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<T>, Error> {
        self.rows(sql, args)?
            .iter()
            .map(|(id, body)| Self::decode(table, id, body))
            .collect()
    }

    /// Docker's lookup: a full id, else an exact name, else a unique id prefix.
    fn lookup<T: DeserializeOwned>(&self, kind: Named, name_or_id: &str) -> Result<T, Error> {
        let table = kind.table();
        if name_or_id.is_empty() {
            return Err(kind.not_found(name_or_id));
        }
        for col in ["id", "name"] {
            let sql = format!("SELECT id, body FROM {table} WHERE {col} = ?1");
            if let Some((id, body)) = self.rows(&sql, [name_or_id])?.into_iter().next() {
                return Self::decode(table, &id, &body);
            }
        }
        let sql = format!(
            "SELECT id, body FROM {table} WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id"
        );
        let mut found = self.rows(&sql, [name_or_id])?;
        match found.len() {
            0 => Err(kind.not_found(name_or_id)),
            1 => {
                let (id, body) = found.remove(0);
                Self::decode(table, &id, &body)
            }
            count => Err(Error::Ambiguous {
                what: kind.what(),
                prefix: name_or_id.to_string(),
                count,
            }),
        }
    }

    fn networks(&self) -> Result<Vec<Network>, Error> {
        self.records(
            "networks",
            "SELECT id, body FROM networks ORDER BY name",
            [],
        )
    }

    fn endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        let found = self.rows("SELECT id, body FROM endpoints WHERE id = ?1", [id])?;
        match found.first() {
            Some((id, body)) => Self::decode("endpoints", id, body),
            None => Err(Error::EndpointNotFound { id: id.to_string() }),
        }
    }

    fn count_endpoints(&self, col: &str, id: &str) -> Result<usize, Error> {
        let sql = format!("SELECT count(*) FROM endpoints WHERE {col} = ?1");
        let n: i64 = self
            .tx
            .query_row(&sql, [id], |r| r.get(0))
            .map_err(self.st.sql("count endpoints"))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn insert_named(&self, table: &str, id: &str, name: &str, body: &str) -> Result<(), Error> {
        let sql = format!("INSERT INTO {table} (id, name, body) VALUES (?1, ?2, ?3)");
        self.tx
            .execute(&sql, params![id, name, body])
            .map(|_| ())
            .map_err(self.st.sql("insert"))
    }

    fn count_services(&self, network_id: &str) -> Result<usize, Error> {
        let n: i64 = self
            .tx
            .query_row(
                "SELECT COUNT(*) FROM services WHERE network_id = ?1",
                [network_id],
                |r| r.get(0),
            )
            .map_err(self.st.sql("count services"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The name of the service of this network whose virtual address is `vip`.
    fn service_holding(&self, network_id: &str, vip: &str) -> Result<Option<String>, Error> {
        self.tx
            .query_row(
                "SELECT name FROM services WHERE network_id = ?1 AND vip = ?2",
                params![network_id, vip],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.st.sql("query"))
    }

    /// The endpoint other than `ep` on the same network that already has this column's value.
    fn endpoint_holding(
        &self,
        ep: &Endpoint,
        col: &str,
        value: &str,
    ) -> Result<Option<String>, Error> {
        let sql =
            format!("SELECT id FROM endpoints WHERE network_id = ?1 AND {col} = ?2 AND id <> ?3");
        self.tx
            .query_row(&sql, params![ep.network_id, value, ep.id], |r| r.get(0))
            .optional()
            .map_err(self.st.sql("query"))
    }
}

fn to_json<T: serde::Serialize>(table: &'static str, id: &str, v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|source| Error::Encode {
        table,
        id: id.to_string(),
        source,
    })
}

impl Store for SqliteStore {
    fn create_network(&self, net: &Network) -> Result<(), Error> {
        validate_network(net)?;
        let body = to_json("networks", &net.id, net)?;
        self.write_as("create network", Durable::Always, |tx| {
            if tx.exists("SELECT 1 FROM networks WHERE id = ?1", &net.id)? {
                return Err(Error::NetworkIdExists { id: net.id.clone() });
            }
            if tx.exists("SELECT 1 FROM networks WHERE name = ?1", &net.name)? {
                return Err(Error::NetworkExists {
                    name: net.name.clone(),
                });
            }
            let all = tx.networks()?;
            if let Some((subnet, other, o)) = find_overlap(net, &all) {
                return Err(Error::SubnetOverlap {
                    subnet,
                    other: o,
                    network: other.name.clone(),
                });
            }
            tx.insert_named("networks", &net.id, &net.name, &body)
        })
    }

    fn network(&self, name_or_id: &str) -> Result<Network, Error> {
        self.read("get network", |tx| tx.lookup(Named::Networks, name_or_id))
    }

    fn list_networks(&self) -> Result<Vec<Network>, Error> {
        self.read("list networks", |tx| tx.networks())
    }

    fn rename_network(
        &self,
        id: &str,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Network, Error> {
        self.write_as("rename network", Durable::Always, |tx| {
            let mut net: Network = tx.lookup(Named::Networks, id)?;
            if net.id != id {
                return Err(Error::NetworkNotFound {
                    name_or_id: id.to_string(),
                });
            }
            if net.name != name && tx.exists("SELECT 1 FROM networks WHERE name = ?1", name)? {
                return Err(Error::NetworkExists {
                    name: name.to_string(),
                });
            }
            net.name = name.to_string();
            net.labels = labels.clone();
            validate_network(&net)?;
            let body = to_json("networks", &net.id, &net)?;
            tx.tx
                .execute(
                    "UPDATE networks SET name = ?2, body = ?3 WHERE id = ?1",
                    params![net.id, net.name, body],
                )
                .map_err(self.sql("rename network"))?;
            Ok(net)
        })
    }

    fn delete_network(&self, name_or_id: &str) -> Result<Network, Error> {
        self.write_as("delete network", Durable::Always, |tx| {
            let net: Network = tx.lookup(Named::Networks, name_or_id)?;
            let endpoints = tx.count_endpoints("network_id", &net.id)?;
            if endpoints > 0 {
                return Err(Error::NetworkInUse {
                    network: net.name,
                    endpoints,
                });
            }
            let services = tx.count_services(&net.id)?;
            if services > 0 {
                return Err(Error::NetworkHasServices {
                    network: net.name,
                    services,
                });
            }
            tx.tx
                .execute("DELETE FROM networks WHERE id = ?1", [&net.id])
                .map_err(self.sql("delete network"))?;
            Ok(net)
        })
    }

    fn put_endpoint(&self, ep: &Endpoint) -> Result<(), Error> {
        validate_id("endpoint", &ep.id)?;
        validate_id("network", &ep.network_id)?;
        let body = to_json("endpoints", &ep.id, ep)?;
        let v4 = host_addr(&ep.ipv4).map(|a| a.to_string());
        let v6 = host_addr(&ep.ipv6).map(|a| a.to_string());
        self.write("put endpoint", |tx| {
            let found = tx.rows(
                "SELECT id, body FROM networks WHERE id = ?1",
                [&ep.network_id],
            )?;
            let Some((id, nbody)) = found.first() else {
                return Err(Error::NetworkNotFound {
                    name_or_id: ep.network_id.clone(),
                });
            };
            let net: Network = Tx::decode("networks", id, nbody)?;
            validate_endpoint(ep, &net)?;
            if !ep.name.is_empty() && tx.endpoint_holding(ep, "name", &ep.name)?.is_some() {
                return Err(Error::EndpointNameExists {
                    name: ep.name.clone(),
                    network: net.name,
                });
            }
            for (col, value, addr) in [("ipv4", &v4, &ep.ipv4), ("ipv6", &v6, &ep.ipv6)] {
                let (Some(value), Some(addr)) = (value, addr) else {
                    continue;
                };
                if let Some(holder) = tx.endpoint_holding(ep, col, value)? {
                    return Err(Error::AddressInUse {
                        addr: addr.addr(),
                        endpoint: holder,
                        network: net.name,
                    });
                }
                if let Some(service) = tx.service_holding(&ep.network_id, value)? {
                    return Err(Error::AddressIsVip {
                        addr: addr.addr(),
                        service,
                        network: net.name,
                    });
                }
            }
            tx.tx
                .execute(
                    "INSERT INTO endpoints (id, network_id, sandbox_id, name, ipv4, ipv6, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(id) DO UPDATE SET network_id = ?2, sandbox_id = ?3, name = ?4,
                         ipv4 = ?5, ipv6 = ?6, body = ?7",
                    params![ep.id, ep.network_id, ep.sandbox_id, ep.name, v4, v6, body],
                )
                .map(|_| ())
                .map_err(self.sql("put endpoint"))
        })
    }

    fn endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        self.read("get endpoint", |tx| tx.endpoint(id))
    }

    fn delete_endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        self.write("delete endpoint", |tx| {
            let ep = tx.endpoint(id)?;
            tx.tx
                .execute("DELETE FROM endpoints WHERE id = ?1", [id])
                .map_err(self.sql("delete endpoint"))?;
            Ok(ep)
        })
    }

    fn network_endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>, Error> {
        self.read("network endpoints", |tx| {
            tx.records(
                "endpoints",
                "SELECT id, body FROM endpoints WHERE network_id = ?1 ORDER BY name, id",
                [network_id],
            )
        })
    }

    fn sandbox_endpoints(&self, sandbox_id: &str) -> Result<Vec<Endpoint>, Error> {
        self.read("sandbox endpoints", |tx| {
            tx.records(
                "endpoints",
                "SELECT id, body FROM endpoints WHERE sandbox_id = ?1 ORDER BY name, id",
                [sandbox_id],
            )
        })
    }

    fn create_sandbox(&self, sb: &Sandbox) -> Result<(), Error> {
        validate_sandbox(sb)?;
        let body = to_json("sandboxes", &sb.id, sb)?;
        self.write("create sandbox", |tx| {
            if tx.exists("SELECT 1 FROM sandboxes WHERE id = ?1", &sb.id)? {
                return Err(Error::SandboxIdExists { id: sb.id.clone() });
            }
            if tx.exists("SELECT 1 FROM sandboxes WHERE name = ?1", &sb.name)? {
                return Err(Error::SandboxExists {
                    name: sb.name.clone(),
                });
            }
            tx.insert_named("sandboxes", &sb.id, &sb.name, &body)
        })
    }

    fn sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        self.read("get sandbox", |tx| tx.lookup(Named::Sandboxes, name_or_id))
    }

    fn list_sandboxes(&self) -> Result<Vec<Sandbox>, Error> {
        self.read("list sandboxes", |tx| {
            tx.records(
                "sandboxes",
                "SELECT id, body FROM sandboxes ORDER BY name",
                [],
            )
        })
    }

    fn delete_sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        self.write("delete sandbox", |tx| {
            let sb: Sandbox = tx.lookup(Named::Sandboxes, name_or_id)?;
            let endpoints = tx.count_endpoints("sandbox_id", &sb.id)?;
            if endpoints > 0 {
                return Err(Error::SandboxInUse {
                    sandbox: sb.name,
                    endpoints,
                });
            }
            tx.tx
                .execute("DELETE FROM sandboxes WHERE id = ?1", [&sb.id])
                .map_err(self.sql("delete sandbox"))?;
            Ok(sb)
        })
    }

    fn create_service(&self, svc: &Service) -> Result<(), Error> {
        let body = to_json("services", &svc.id, svc)?;
        let vip = svc.vip.to_string();
        self.write_as("create service", Durable::Always, |tx| {
            let net: Network = tx.lookup(Named::Networks, &svc.network_id)?;
            if net.id != svc.network_id {
                return Err(Error::NetworkNotFound {
                    name_or_id: svc.network_id.clone(),
                });
            }
            validate_service(svc, &net)?;
            if tx.exists("SELECT 1 FROM services WHERE id = ?1", &svc.id)? {
                return Err(Error::ServiceIdExists { id: svc.id.clone() });
            }
            if tx.exists("SELECT 1 FROM services WHERE name = ?1", &svc.name)? {
                return Err(Error::ServiceExists {
                    name: svc.name.clone(),
                });
            }
            if let Some(service) = tx.service_holding(&net.id, &vip)? {
                return Err(Error::AddressIsVip {
                    addr: svc.vip,
                    service,
                    network: net.name,
                });
            }
            let col = if svc.vip.is_ipv4() { "ipv4" } else { "ipv6" };
            let holder: Option<String> = tx
                .tx
                .query_row(
                    &format!("SELECT id FROM endpoints WHERE network_id = ?1 AND {col} = ?2"),
                    params![net.id, vip],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.sql("query"))?;
            if let Some(endpoint) = holder {
                return Err(Error::AddressInUse {
                    addr: svc.vip,
                    endpoint,
                    network: net.name,
                });
            }
            tx.tx
                .execute(
                    "INSERT INTO services (id, name, network_id, vip, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![svc.id, svc.name, svc.network_id, vip, body],
                )
                .map(|_| ())
                .map_err(self.sql("create service"))
        })
    }

    fn service(&self, name_or_id: &str) -> Result<Service, Error> {
        self.read("get service", |tx| tx.lookup(Named::Services, name_or_id))
    }

    fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.read("list services", |tx| {
            tx.records(
                "services",
                "SELECT id, body FROM services ORDER BY name",
                [],
            )
        })
    }

    fn network_services(&self, network_id: &str) -> Result<Vec<Service>, Error> {
        self.read("network services", |tx| {
            tx.records(
                "services",
                "SELECT id, body FROM services WHERE network_id = ?1 ORDER BY name",
                [network_id],
            )
        })
    }

    fn delete_service(&self, name_or_id: &str) -> Result<Service, Error> {
        self.write_as("delete service", Durable::Always, |tx| {
            let svc: Service = tx.lookup(Named::Services, name_or_id)?;
            tx.tx
                .execute("DELETE FROM services WHERE id = ?1", [&svc.id])
                .map_err(self.sql("delete service"))?;
            Ok(svc)
        })
    }

    fn revision(&self) -> Result<u64, Error> {
        let conn = self.lock();
        let v: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .map_err(self.sql("revision"))?;
        Ok(u64::try_from(v).unwrap_or(0))
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}
