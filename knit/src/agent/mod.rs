//! `knit agent`: the long-running part of a host. It serves Docker's remote network and IPAM
//! plugin API on `--plugin-dir/NAME.sock`, knit's local API on `--run-dir/agent.sock`, metrics
//! on `--metrics`, and repairs the kernel from the store at start and every
//! `--reconcile-interval` seconds. One agent per state dir (an flock on `agent.lock` there).
//!
//! Async only here: tokio serves the sockets; every call into the store or libnet runs on a
//! blocking thread.

pub mod cluster;
mod cluster_metrics;
mod cni;
mod cni_ipam;
pub mod docker;
mod docker_cluster;
mod metrics;
mod names;
mod overlay;
pub mod pools;
mod reconcile;
mod stream;
pub mod wire;

use std::fs::File;
use std::future::IntoFuture;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tracing::{error, info};

use crate::cli::{AgentArgs, LogFormat};
use crate::sandbox::Dirs;
use docker::{ApiError, Ctx};
use metrics::Metrics;

/// The largest request body accepted (Docker's are a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;

/// Where Docker looks for plugin sockets.
pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";

/// Docker's content type for plugin answers.
const PLUGIN_JSON: &str = "application/vnd.docker.plugins.v1.2+json";

struct Shared {
    ctx: Ctx,
    metrics: Metrics,
}

pub fn run(state_dir: &Path, dirs: Dirs, a: &AgentArgs) -> Result<i32> {
    init_logs(a.log_format);
    // A daemon: keep nfnetlink sockets open, so a burst of element deletions (endpoints and
    // service backends going) does not serialise on nf_tables' destroy work.
    libnet::nft::keep_sockets();
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating state dir {}", state_dir.display()))?;
    let _lock = lock_state_dir(state_dir)?;
    let store = store::SqliteStore::open(state_dir)
        .with_context(|| format!("opening the store in {}", state_dir.display()))?;
    std::fs::create_dir_all(&dirs.run_dir)
        .with_context(|| format!("creating run dir {}", dirs.run_dir.display()))?;
    let store: Arc<dyn store::Store> = Arc::new(store);
    let docker_sock = names::socket_of(&a.docker_host)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let st = store.clone();
    let data_dir = dirs.cni_data_dir.clone();
    std::thread::Builder::new()
        .name("docker-names".into())
        .spawn(move || names::run(st, docker_sock, data_dir, rx))
        .context("starting the naming thread")?;
    let shared = Arc::new(Shared {
        ctx: Ctx {
            store,
            dirs,
            namer: names::Namer(Some(tx)),
            repair: std::sync::RwLock::new(()),
        },
        metrics: Metrics::new(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(shared, a))?;
    Ok(0)
}

/// Logs to stderr as text or JSON, filtered by `KNIT_LOG` (default `info`).
pub fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KNIT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

/// One agent per state dir: an exclusive flock on `agent.lock`, holding the pid.
fn lock_state_dir(state_dir: &Path) -> Result<File> {
    let path = state_dir.join("agent.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        bail!(
            "another knit agent (pid {}) is already running on state dir {}: one agent per \
             state dir (stop it, or give this one its own --state-dir)",
            pid.trim(),
            state_dir.display()
        );
    }
    f.set_len(0)?;
    f.rewind()?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

/// Bind a unix socket at `path` (mode 0600), replacing a stale one; refuses one that answers.
async fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("{} is served by another process", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}

async fn serve(shared: Arc<Shared>, a: &AgentArgs) -> Result<()> {
    // Repair first, so the first call sees the kernel as the store says.
    let s = shared.clone();
    tokio::task::spawn_blocking(move || reconcile::pass(&s.ctx, &s.metrics))
        .await
        .context("the reconcile pass panicked")?;

    let plugin_dir = a
        .plugin_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_PLUGIN_DIR.into());
    let plugin_sock = plugin_dir.join(format!("{}.sock", a.plugin_name));
    let api_sock = shared.ctx.dirs.run_dir.join("agent.sock");
    let plugin = bind(&plugin_sock).await?;
    let api = bind(&api_sock).await?;

    let s = shared.clone();
    let plugin_app = Router::new().fallback(move |req: Request<Body>| plugin_call(s.clone(), req));
    let s = shared.clone();
    let api_app = Router::new().route("/v1/status", get(move || status(s.clone())));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        axum::serve(plugin, plugin_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    tasks.spawn(
        axum::serve(api, api_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    if let Some(addr) = a.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics on {addr}"))?;
        let s = shared.clone();
        let app = Router::new().route("/metrics", get(move || metrics_page(s.clone())));
        tasks.spawn(
            axum::serve(l, app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
    }
    if a.dns {
        start_dns(shared.clone(), a).await?;
    }
    let s = shared.clone();
    let every = Duration::from_secs(a.reconcile_interval.max(1));
    let periodic = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let s2 = s.clone();
            let _ =
                tokio::task::spawn_blocking(move || reconcile::pass(&s2.ctx, &s2.metrics)).await;
        }
    });
    info!(
        plugin = %plugin_sock.display(),
        api = %api_sock.display(),
        "knit agent serving"
    );

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let failed = tokio::select! {
        _ = term.recv() => None,
        _ = int.recv() => None,
        r = tasks.join_next() => Some(r),
    };
    periodic.abort();
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    for p in [&plugin_sock, &api_sock] {
        let _ = std::fs::remove_file(p);
    }
    if let Some(Some(r)) = failed {
        error!(?r, "a listener stopped");
        bail!("a listener stopped unexpectedly");
    }
    info!("knit agent stopped");
    Ok(())
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, PLUGIN_JSON)],
        body.to_string(),
    )
        .into_response()
}

async fn plugin_call(s: Arc<Shared>, req: Request<Body>) -> Response {
    let s2 = s.clone();
    plugin_http(
        req,
        move |method, body| docker::call(&s2.ctx, method, body),
        move |label, ok, secs| s.metrics.observe(label, ok, secs),
    )
    .await
}

/// One Docker plugin call over HTTP, in either mode: the body read, `call` run with the method
/// (the path without its `/`) on a blocking thread, the answer in Docker's shape, and
/// `observe` told the method (`unknown` for one knit does not serve), success and seconds.
async fn plugin_http<F, O>(req: Request<Body>, call: F, observe: O) -> Response
where
    F: FnOnce(&str, &[u8]) -> Result<serde_json::Value, ApiError> + Send + 'static,
    O: Fn(&str, bool, f64),
{
    let started = Instant::now();
    let method = req.uri().path().trim_start_matches('/').to_string();
    let body = match to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            observe("invalid", false, started.elapsed().as_secs_f64());
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"Err": format!("{method}: request body unreadable or over {MAX_BODY} bytes: {e}")}),
            );
        }
    };
    tracing::debug!(%method, body = %String::from_utf8_lossy(&body), "call");
    let m2 = method.clone();
    let out = tokio::task::spawn_blocking(move || call(&m2, &body))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError {
                status: 500,
                message: format!("{method}: the handler panicked: {e}"),
            })
        });
    let label = if docker::known(&method) {
        method.as_str()
    } else {
        "unknown"
    };
    observe(label, out.is_ok(), started.elapsed().as_secs_f64());
    match out {
        Ok(v) => {
            tracing::debug!(%method, "ok");
            reply(StatusCode::OK, v)
        }
        Err(e) => {
            error!(%method, status = e.status, error = %e.message, "call failed");
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // `Err` for the network API, `Error` for IPAM answers read with status 200.
            reply(status, json!({"Err": e.message, "Error": e.message}))
        }
    }
}

async fn status(s: Arc<Shared>) -> Response {
    let r = tokio::task::spawn_blocking(move || -> Result<serde_json::Value> {
        let (networks, endpoints) = reconcile::counts(&*s.ctx.store)?;
        Ok(json!({"networks": networks, "endpoints": endpoints, "pid": std::process::id()}))
    })
    .await;
    match r {
        Ok(Ok(v)) => (StatusCode::OK, v.to_string()).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics_page(s: Arc<Shared>) -> Response {
    let s2 = s.clone();
    let _ = tokio::task::spawn_blocking(move || reconcile::count(&s2.ctx, &s2.metrics)).await;
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// knit's DNS inside the agent: records rebuilt as the store changes, and one listener per
/// network gateway (port 53), added and dropped one at a time as networks come and go (a
/// gateway not yet on the host is tried again).
async fn start_dns(shared: Arc<Shared>, a: &AgentArgs) -> Result<()> {
    let st = shared.ctx.store.clone();
    let s2 = st.clone();
    let records =
        tokio::task::spawn_blocking(move || dns::load(&*s2, dns::DEFAULT_DOMAIN, dns::DEFAULT_TTL))
            .await
            .context("loading DNS records")?
            .context("loading DNS records")?;
    let records = dns::server::Shared::new(records);
    let upstreams = dns::forward::upstreams(a.dns_no_forward, &a.dns_upstream);
    let mut listeners = dns::live::Listeners::new(records.clone(), upstreams);
    let changed = Arc::new(tokio::sync::Notify::new());
    let c2 = changed.clone();
    tokio::spawn(dns::live::watch(
        st.clone(),
        records,
        dns::DEFAULT_DOMAIN.to_string(),
        dns::DEFAULT_TTL,
        Duration::from_millis(50),
        move || c2.notify_one(),
    ));
    tokio::spawn(async move {
        loop {
            let s = st.clone();
            let want = tokio::task::spawn_blocking(move || gateways(&*s))
                .await
                .unwrap_or_default();
            listeners.set(&want).await;
            // A change in the store, or a retry for gateways not on the host yet.
            let _ = tokio::time::timeout(Duration::from_secs(2), changed.notified()).await;
        }
    });
    Ok(())
}

/// Port 53 of every gateway of every network.
fn gateways(st: &dyn store::Store) -> Vec<std::net::SocketAddr> {
    let mut v: Vec<std::net::SocketAddr> = st
        .list_networks()
        .unwrap_or_default()
        .iter()
        .flat_map(|n| n.ipam.iter().filter_map(|p| p.gateway))
        .map(|g| std::net::SocketAddr::new(g, 53))
        .collect();
    v.sort();
    v.dedup();
    v
}
