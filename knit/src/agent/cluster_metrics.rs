//! The agent's metrics in etcd mode (text format on `--metrics ADDR`, path `/metrics`).

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct ClusterMetrics {
    registry: Mutex<Registry>,
    pub fdb_entries: Gauge,
    pub deltas: Counter,
    pub fulls: Counter,
    pub errors: Counter,
    pub reconcile_seconds: Histogram,
    pub connected: Gauge,
    pub version: Gauge,
    pub endpoints: Gauge,
}

impl ClusterMetrics {
    pub fn new() -> ClusterMetrics {
        let mut r = Registry::with_prefix("knit_agent");
        let m = ClusterMetrics {
            registry: Mutex::new(Registry::default()),
            fdb_entries: Gauge::default(),
            deltas: Counter::default(),
            fulls: Counter::default(),
            errors: Counter::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            connected: Gauge::default(),
            version: Gauge::default(),
            endpoints: Gauge::default(),
        };
        r.register(
            "fdb_entries",
            "VXLAN FDB remotes programmed for the overlay networks",
            m.fdb_entries.clone(),
        );
        r.register(
            "deltas_applied",
            "Deltas from the controller applied",
            m.deltas.clone(),
        );
        r.register(
            "full_states_applied",
            "Full states from the controller applied",
            m.fulls.clone(),
        );
        r.register(
            "overlay_errors",
            "Networks that failed to sync or apply (retried by the next reconcile)",
            m.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of a sync of the whole host to the controller's state",
            m.reconcile_seconds.clone(),
        );
        r.register(
            "stream_connected",
            "1 while a stream from the leading controller is open",
            m.connected.clone(),
        );
        r.register(
            "state_version",
            "Version of the controller's state this host holds",
            m.version.clone(),
        );
        r.register(
            "endpoints",
            "Endpoints this host attached through the knit CNI plugin",
            m.endpoints.clone(),
        );
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
