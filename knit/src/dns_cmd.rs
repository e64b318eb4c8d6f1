//! `knit dns`: knit's service-discovery DNS standalone, over the store in `--state-dir` (or the
//! cluster's with `--etcd`). It
//! answers from records rebuilt whenever the store's revision moves (polled every 50 ms), so a
//! name written after it started is served without a restart.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use store::Store;
use tracing::info;

use crate::cli::DnsArgs;

/// `ADDR` (port 53) or `ADDR:PORT`, IPv6 as `[ADDR]:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("expected ADDR or ADDR:PORT, got {s:?}"))
}

/// Serve from `st`: the SQLite store under `--state-dir`, or with `--etcd` the cluster's (a
/// name registered on any host resolves on every host).
pub fn run(st: Arc<dyn Store>, a: &DnsArgs) -> Result<i32> {
    crate::agent::init_logs(a.log_format);
    let records =
        dns::server::Shared::new(dns::load(&*st, &a.domain, a.ttl).context("reading the store")?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        tokio::spawn(dns::live::watch(
            st.clone(),
            records.clone(),
            a.domain.clone(),
            a.ttl,
            Duration::from_millis(50),
            || {},
        ));
        let upstreams = dns::forward::upstreams(a.no_forward, &a.upstream);
        info!(listen = ?a.listen, domain = %a.domain, ?upstreams, "knit dns serving");
        let server = dns::server::serve(records, &a.listen, upstreams);
        tokio::select! {
            r = server => r.context("serving DNS"),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut t) => { t.recv().await; }
                    Err(_) => std::future::pending::<()>().await,
                }
            } => Ok(()),
        }
    })?;
    Ok(0)
}
