//! The controller's Prometheus metrics (text format on `--metrics ADDR`, any path), served by
//! a minimal HTTP/1.0 responder: one GET, one answer, close.

use std::net::SocketAddr;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub host: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    /// 1 while this replica leads, else 0.
    pub leader: Gauge,
    pub agents: Gauge,
    pub deltas: Counter,
    pub fulls: Counter,
    /// Seconds to turn one etcd event into every host's changes.
    pub compute: Histogram,
    /// Per connected host: the stream's version minus the last version its agent acked.
    pub lag: Family<HostLabel, Gauge>,
    /// The model's version (one counter for the whole cluster).
    pub version: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("knit_controller");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            leader: Gauge::default(),
            agents: Gauge::default(),
            deltas: Counter::default(),
            fulls: Counter::default(),
            compute: Histogram::new(exponential_buckets(0.000_001, 2.0, 24)),
            lag: Family::default(),
            version: Gauge::default(),
        };
        r.register("leader", "1 while this replica leads", m.leader.clone());
        r.register(
            "agents_connected",
            "Agent connections being streamed to",
            m.agents.clone(),
        );
        r.register("deltas_sent", "Delta frames sent", m.deltas.clone());
        r.register("full_syncs_sent", "Full-state frames sent", m.fulls.clone());
        r.register(
            "compute_seconds",
            "Time to turn one etcd event into every concerned host's changes",
            m.compute.clone(),
        );
        r.register(
            "stream_lag",
            "Versions between a host's stream and what its agent acknowledged",
            m.lag.clone(),
        );
        r.register("version", "The model's version", m.version.clone());
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = r;
        m
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// Answers every connection on `listener` with the metrics.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            // Read the request head (we answer any path).
            while got < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    conn.read(&mut buf[got..]),
                )
                .await
                {
                    Ok(Ok(n)) if n > 0 => {
                        got += n;
                        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    _ => return,
                }
            }
            let body = metrics.render();
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
