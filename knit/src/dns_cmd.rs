//! `knit dns`: knit's service-discovery DNS standalone, over the store in `--state-dir`. It
//! answers from records rebuilt whenever the store's revision moves (polled every 50 ms), so a
//! name written after it started is served without a restart.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use store::Store;
use tracing::{info, warn};

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

pub fn run(state_dir: &Path, a: &DnsArgs) -> Result<i32> {
    crate::agent::init_logs(a.log_format);
    let st: Arc<dyn Store> = Arc::new(
        store::SqliteStore::open(state_dir)
            .with_context(|| format!("opening the store in {}", state_dir.display()))?,
    );
    let load = {
        let st = st.clone();
        let (domain, ttl) = (a.domain.clone(), a.ttl);
        move || dns::load(&*st, &domain, ttl)
    };
    let records = dns::server::Shared::new(load().context("reading the store")?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let shared = records.clone();
        let st2 = st.clone();
        tokio::spawn(async move {
            let mut seen = st2.revision().unwrap_or(0);
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let st3 = st2.clone();
                let now = match tokio::task::spawn_blocking(move || st3.revision()).await {
                    Ok(Ok(r)) => r,
                    _ => continue,
                };
                if now == seen {
                    continue;
                }
                let l = load.clone();
                match tokio::task::spawn_blocking(l).await {
                    Ok(Ok(r)) => {
                        shared.set(r);
                        seen = now;
                    }
                    Ok(Err(e)) => warn!(error = %e, "reloading the records"),
                    Err(e) => warn!(error = %e, "reloading the records"),
                }
            }
        });
        let upstreams = if a.no_forward {
            Vec::new()
        } else if a.upstream.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            dns::forward::resolv_conf_servers(&text)
        } else {
            a.upstream.clone()
        };
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
