//! Serving from a live store: records rebuilt whenever its revision moves, and a set of
//! listeners changed one address at a time (a network that comes or goes adds or drops its own
//! listener; the others keep serving: aardvark-dns#389).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::server::Server;
use store::Store;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::forward::Forwarder;
use crate::server::{Handler, Shared};

/// Rebuild the records from `st` whenever its revision moves (polled every `every`); after
/// each swap, `changed` is called (the agent re-derives its listeners there).
pub async fn watch(
    st: Arc<dyn Store>,
    shared: Shared,
    domain: String,
    ttl: u32,
    every: Duration,
    changed: impl Fn() + Send + 'static,
) {
    let mut seen = None;
    loop {
        let s = st.clone();
        let now = match tokio::task::spawn_blocking(move || s.revision()).await {
            Ok(Ok(r)) => r,
            _ => {
                tokio::time::sleep(every).await;
                continue;
            }
        };
        if seen != Some(now) {
            let (s, d) = (st.clone(), domain.clone());
            match tokio::task::spawn_blocking(move || crate::load(&*s, &d, ttl)).await {
                Ok(Ok(r)) => {
                    // The new records answer at once (through the hickory handler); the fast
                    // path's table follows, built off the serving threads.
                    // Not awaited: the next change is seen on time. A table built from
                    // records swapped out meanwhile is refused by `set_table`.
                    let (g, r) = shared.set_records(r);
                    let s2 = shared.clone();
                    tokio::task::spawn_blocking(move || {
                        s2.set_table(g, crate::fast::Table::build(&r))
                    });
                    seen = Some(now);
                    changed();
                }
                Ok(Err(e)) => warn!(error = %e, "reloading the DNS records"),
                Err(e) => warn!(error = %e, "reloading the DNS records"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The listeners in force, one server (UDP and TCP) per address.
pub struct Listeners {
    records: Shared,
    forward: Arc<Forwarder>,
    running: HashMap<SocketAddr, JoinHandle<()>>,
}

impl Listeners {
    pub fn new(records: Shared, upstreams: Vec<SocketAddr>) -> Listeners {
        Listeners {
            records,
            forward: Arc::new(Forwarder::new(upstreams)),
            running: HashMap::new(),
        }
    }

    /// The addresses served now.
    pub fn serving(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.running.keys().copied().collect();
        v.sort();
        v
    }

    /// Serve exactly `want`: start what is missing (an address not on the host yet is tried
    /// again on the next call), stop what is no longer wanted; leave the rest alone.
    pub async fn set(&mut self, want: &[SocketAddr]) {
        let gone: Vec<SocketAddr> = self
            .running
            .keys()
            .filter(|a| !want.contains(a))
            .copied()
            .collect();
        for a in gone {
            if let Some(h) = self.running.remove(&a) {
                // Dropping the server closes its sockets.
                h.abort();
                info!(listen = %a, "DNS listener stopped");
            }
        }
        for a in want {
            if self.running.contains_key(a) {
                continue;
            }
            let udp = match tokio::net::UdpSocket::bind(a).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(listen = %a, error = %e, "DNS listener not yet possible");
                    continue;
                }
            };
            let tcp = match tokio::net::TcpListener::bind(a).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(listen = %a, error = %e, "DNS listener not yet possible");
                    continue;
                }
            };
            let handler = || Handler {
                records: self.records.clone(),
                forward: self.forward.clone(),
            };
            let mut server = Server::new(handler());
            server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
            let udp = crate::udp::serve(udp, self.records.clone(), Arc::new(handler()));
            let addr = *a;
            // Aborting this task drops both the UDP loop and the TCP server (their sockets).
            let h = tokio::spawn(async move {
                tokio::select! {
                    r = server.block_until_done() => if let Err(e) = r {
                        warn!(listen = %addr, error = %e, "DNS listener failed (TCP)");
                    },
                    r = udp => if let Err(e) = r {
                        warn!(listen = %addr, error = %e, "DNS listener failed (UDP)");
                    },
                }
            });
            info!(listen = %a, "DNS listener started");
            self.running.insert(*a, h);
        }
    }
}
