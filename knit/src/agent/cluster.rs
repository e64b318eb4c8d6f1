//! `knit --etcd URL agent --host NAME --underlay-ip IP`: the agent as a host of the cluster.
//!
//! It registers the host in etcd under a lease (name, underlay IP, a VTEP MAC derived from
//! the underlay IP) and keeps it alive, registering again if it is ever lost; follows the
//! leading controller's stream ([`super::stream`]) and programs the overlay from it
//! ([`super::overlay`]); reconciles every `--reconcile-interval`; serves its local API on
//! `--run-dir/agent.sock` and metrics on `--metrics`. State only where the flags say:
//! `--state-dir` (the lock), `--run-dir` (the socket). With `--plugin-dir D` it also serves
//! Docker's remote network and IPAM plugin, global scope, on `D/NAME.sock`
//! ([`super::docker_cluster`]); without it no Docker socket is made (several agents of a test
//! cluster share one machine's `/run/docker/plugins`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use store::etcd::{Host, HostLease};
use store::EtcdStore;
use tracing::{error, info, warn};

use super::cluster_metrics::ClusterMetrics;
use super::overlay::Overlay;
use crate::cli::AgentArgs;
use crate::sandbox::Dirs;

/// What the agent's tasks share.
pub struct Node {
    pub store: EtcdStore,
    pub host: Host,
    pub lease: Mutex<HostLease>,
    pub lease_ttl: Duration,
    pub overlay: Arc<Overlay>,
    pub dirs: Dirs,
    /// Where the live lease's id is recorded (see [`LEASE_FILE`]).
    pub lease_file: PathBuf,
    /// This host's IPAM blocks per network (cleared when the lease is renewed: blocks go
    /// with the lease that held them).
    pub blocks: Mutex<super::cni::Blocks>,
}

impl Node {
    /// Runs `f` with the live lease.
    pub fn with_lease<T>(&self, f: impl FnOnce(&HostLease) -> T) -> T {
        let l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        f(&l)
    }

    pub fn blocks(&self) -> std::sync::MutexGuard<'_, super::cni::Blocks> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The VTEP MAC registered for a host: locally administered, `02:6b` ("k") then the last four
/// bytes of the underlay address, so it is stable across restarts and unique per address.
pub fn vtep_mac(underlay: IpAddr) -> String {
    let b = match underlay {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    format!("02:6b:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

pub fn run(
    urls: &[String],
    prefix: &str,
    state_dir: &Path,
    dirs: Dirs,
    a: &AgentArgs,
) -> Result<i32> {
    super::init_logs(a.log_format);
    let (Some(name), Some(underlay)) = (a.host.clone(), a.underlay_ip) else {
        bail!("`knit --etcd URL agent` needs --host NAME and --underlay-ip IP");
    };
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating state dir {}", state_dir.display()))?;
    let _lock = super::lock_state_dir(state_dir)?;
    std::fs::create_dir_all(&dirs.run_dir)
        .with_context(|| format!("creating run dir {}", dirs.run_dir.display()))?;
    let store = EtcdStore::connect(urls, prefix)
        .with_context(|| format!("connecting to etcd {}", urls.join(",")))?;
    let host = Host {
        name,
        underlay_ip: underlay,
        vtep_mac: vtep_mac(underlay),
    };
    let ttl = Duration::from_secs(a.lease_ttl.max(2));
    let lease_file = state_dir.join(LEASE_FILE);
    let lease = register(&store, &host, ttl, &lease_file)?;
    info!(host = %host.name, underlay = %host.underlay_ip, lease = lease.id(), "host registered");
    let nl = libnet::netlink::Handle::new().context("opening a netlink socket")?;
    let node = Arc::new(Node {
        overlay: Arc::new(Overlay::new(nl, ClusterMetrics::new())),
        store,
        host,
        lease: Mutex::new(lease),
        lease_ttl: ttl,
        dirs,
        lease_file,
        blocks: Mutex::new(Default::default()),
    });
    super::cni_ipam::reclaim_blocks(&node);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The Docker naming thread's own connection (made outside the runtime): the thread may
    // outlive the node by a call, and the node must be the last owner of the lease.
    let names_store = match a.plugin_dir {
        Some(_) => Some(
            EtcdStore::connect(urls, prefix)
                .with_context(|| format!("connecting to etcd {}", urls.join(",")))?,
        ),
        None => None,
    };
    let served = rt.block_on(serve(node.clone(), a, names_store));
    // The tasks holding the node go with the runtime; then the lease is revoked now, so the
    // host's name, address and blocks are free at once (a crash leaves them to the TTL).
    drop(rt);
    if let Ok(node) = Arc::try_unwrap(node) {
        let lease = node.lease.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = node.store.unregister_host(lease) {
            warn!(error = %e, "revoking the host's lease");
        }
    }
    served?;
    Ok(0)
}

/// The state dir's record of the host's live lease id: a run that restarts after a crash
/// finds its previous run's lease still holding the host's name and address, and revokes it
/// instead of waiting out its TTL.
pub const LEASE_FILE: &str = "host-lease";

fn record_lease(file: &Path, id: i64) {
    let tmp = file.with_extension("tmp");
    let r = std::fs::write(&tmp, format!("{id}\n")).and_then(|_| std::fs::rename(&tmp, file));
    if let Err(e) = r {
        warn!(error = %e, file = %file.display(), "recording the host's lease id");
    }
}

/// Registers the host. A conflict held by the lease this host recorded (its previous run,
/// killed) is ended at once; one with another live host (this name at another address, this
/// address under another name) is refused at once; this very name and address under an
/// unrecorded lease (a previous run killed before it recorded it), or an etcd not up yet,
/// are waited out, for at most three TTLs.
fn register(store: &EtcdStore, host: &Host, ttl: Duration, file: &Path) -> Result<HostLease> {
    let mut previous: Option<i64> = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let deadline = std::time::Instant::now() + 3 * ttl;
    let fail =
        |e: store::Error| Err(e).with_context(|| format!("registering host {:?}", host.name));
    loop {
        let e = match store.register_host(host, ttl) {
            Ok(l) => {
                record_lease(file, l.id());
                return Ok(l);
            }
            Err(e) => e,
        };
        let (holder, same) = match &e {
            store::Error::HostExists {
                underlay_ip, lease, ..
            } => (Some(*lease), *underlay_ip == host.underlay_ip),
            store::Error::UnderlayIpInUse { lease, .. } => (Some(*lease), false),
            _ => (None, false),
        };
        match holder {
            Some(l) if l != 0 && previous == Some(l) => {
                info!(
                    lease = l,
                    "this host's previous run still holds its lease: revoking it"
                );
                previous = None;
                if let Err(e) = store.revoke_lease(l) {
                    warn!(error = %e, "revoking the previous run's lease");
                }
                continue;
            }
            Some(_) if !same => return fail(e),
            _ if std::time::Instant::now() < deadline => {
                warn!(error = %e, "registering the host; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            _ => return fail(e),
        }
    }
}

/// Registers again whenever the lease is lost (etcd unreachable for a TTL, or restarted
/// without its data).
async fn keep_registered(node: Arc<Node>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if node.with_lease(|l| l.is_live()) {
            continue;
        }
        warn!("the host's lease was lost; registering again");
        let n = node.clone();
        let r =
            tokio::task::spawn_blocking(move || n.store.register_host(&n.host, n.lease_ttl)).await;
        match r {
            Ok(Ok(l)) => {
                info!(lease = l.id(), "host registered again");
                record_lease(&node.lease_file, l.id());
                *node.lease.lock().unwrap_or_else(|p| p.into_inner()) = l;
                node.blocks().clear();
                let n = node.clone();
                let _ =
                    tokio::task::spawn_blocking(move || super::cni_ipam::reclaim_blocks(&n)).await;
            }
            Ok(Err(e)) => warn!(error = %e, "registering again failed; retrying"),
            Err(e) => error!(error = %e, "registering again panicked"),
        }
    }
}

async fn serve(node: Arc<Node>, a: &AgentArgs, names_store: Option<EtcdStore>) -> Result<()> {
    let api_sock = node.dirs.run_dir.join("agent.sock");
    let api = super::bind(&api_sock).await?;
    let n = node.clone();
    let api_app =
        super::cni::routes(node.clone()).route("/v1/status", get(move || status(n.clone())));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move { axum::serve(api, api_app).await });
    if let Some(addr) = a.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics on {addr}"))?;
        let n = node.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let n = n.clone();
                async move {
                    (
                        StatusCode::OK,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        n.overlay.metrics.render(),
                    )
                }
            }),
        );
        tasks.spawn(async move { axum::serve(l, app).await });
    }
    let mut plugin_sock = None;
    if let Some(dir) = &a.plugin_dir {
        let path = dir.join(format!("{}.sock", a.plugin_name));
        let l = super::bind(&path).await?;
        let (tx, rx) = std::sync::mpsc::channel();
        let st: Arc<dyn store::Store> = Arc::new(names_store.context("no store for names")?);
        let docker_sock = super::names::socket_of(&a.docker_host)?;
        let data_dir = node.dirs.cni_data_dir.clone();
        std::thread::Builder::new()
            .name("docker-names".into())
            .spawn(move || super::names::run(st, docker_sock, data_dir, rx))
            .context("starting the naming thread")?;
        let d = Arc::new(super::docker_cluster::DockerNode {
            node: node.clone(),
            namer: super::names::Namer(Some(tx)),
        });
        let app = Router::new().fallback(move |req: axum::http::Request<axum::body::Body>| {
            let d = d.clone();
            super::plugin_http(
                req,
                move |method, body| super::docker_cluster::call(&d, method, body),
                |_, _, _| {},
            )
        });
        tasks.spawn(async move { axum::serve(l, app).await });
        info!(plugin = %path.display(), "serving Docker's plugin API (global scope)");
        plugin_sock = Some(path);
    }
    let mut background = tokio::task::JoinSet::new();
    background.spawn(keep_registered(node.clone()));
    background.spawn(super::stream::run(
        node.overlay.clone(),
        node.store.asynchronous().clone(),
        node.host.name.clone(),
    ));
    let every = Duration::from_secs(a.reconcile_interval.max(1));
    let ov = node.overlay.clone();
    background.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let o = ov.clone();
            let _ = tokio::task::spawn_blocking(move || o.reconcile()).await;
        }
    });
    info!(api = %api_sock.display(), host = %node.host.name, "knit agent serving (etcd mode)");

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let failed = tokio::select! {
        _ = term.recv() => None,
        _ = int.recv() => None,
        r = tasks.join_next() => Some(r),
    };
    background.abort_all();
    tasks.abort_all();
    for p in std::iter::once(&api_sock).chain(plugin_sock.as_ref()) {
        let _ = std::fs::remove_file(p);
    }
    if let Some(r) = failed {
        error!(?r, "a listener stopped");
        bail!("a listener stopped unexpectedly");
    }
    info!("knit agent stopped (the kernel state stays; the lease is revoked)");
    Ok(())
}

async fn status(node: Arc<Node>) -> Response {
    let body = json!({
        "host": node.host.name,
        "underlay_ip": node.host.underlay_ip,
        "lease_live": node.with_lease(|l| l.is_live()),
        "connected": node.overlay.metrics.connected.get() == 1,
        "version": node.overlay.version(),
        "pid": std::process::id(),
    });
    (StatusCode::OK, body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_macs_are_local_and_follow_the_underlay_address() {
        assert_eq!(
            vtep_mac("192.168.50.2".parse().unwrap()),
            "02:6b:c0:a8:32:02"
        );
        assert_eq!(vtep_mac("fd00::a:b".parse().unwrap()), "02:6b:00:0a:00:0b");
    }
}
