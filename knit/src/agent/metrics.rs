//! The agent's Prometheus metrics (text format on `--metrics ADDR`, path `/metrics`).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Call {
    pub method: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Method {
    pub method: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<Call, Counter>,
    pub latency: Family<Method, Histogram>,
    pub networks: Gauge,
    pub endpoints: Gauge,
    pub repairs: Counter,
    pub reconcile_seconds: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("knit_agent");
        let requests = Family::<Call, Counter>::default();
        let latency = Family::<Method, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let networks = Gauge::default();
        let endpoints = Gauge::default();
        let repairs = Counter::default();
        let reconcile_seconds = Gauge::<f64, AtomicU64>::default();
        r.register(
            "requests",
            "Docker plugin calls by method and outcome (ok, error)",
            requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Docker plugin call latency by method",
            latency.clone(),
        );
        r.register("networks", "Networks in the store", networks.clone());
        r.register("endpoints", "Endpoints in the store", endpoints.clone());
        r.register(
            "repairs",
            "Differences between the store and the kernel that the reconcile pass repaired",
            repairs.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of the last reconcile pass",
            reconcile_seconds.clone(),
        );
        Metrics {
            registry: Mutex::new(r),
            requests,
            latency,
            networks,
            endpoints,
            repairs,
            reconcile_seconds,
        }
    }

    pub fn observe(&self, method: &str, ok: bool, seconds: f64) {
        let outcome = if ok { "ok" } else { "error" };
        self.requests
            .get_or_create(&Call {
                method: method.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&Method {
                method: method.to_string(),
            })
            .observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}
