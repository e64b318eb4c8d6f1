//! Docker never tells a plugin a network's name; its Engine API does, once the network exists.
//! After CreateNetwork (and for any Docker network still under its stand-in name at start) a
//! thread asks `GET /networks/ID` on the Docker socket and gives the store record Docker's name
//! and labels, so `knit network ls` and `docker network ls` agree.
//!
//! A network on knit's IPAM keeps its reservations in its pool's directory
//! (`knit-pool-<subnet>`); once named, the directory is also reachable under the network's name
//! (a symlink in the CNI data dir), so a CNI network of the same name — podman's, with knit's
//! `bridge` plugin on the same bridge — draws from the very same reservations.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tracing::{info, warn};

use store::Store;

/// The name a Docker network has until Docker's own is known.
pub fn stand_in(id: &str) -> String {
    format!("docker-{}", id.get(..12).unwrap_or(id))
}

/// The Docker socket of a `DOCKER_HOST`-style address (`unix:///run/docker.sock`).
pub fn socket_of(host: &str) -> Result<PathBuf> {
    match host.strip_prefix("unix://") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!("--docker-host {host:?}: only unix:///PATH is supported"),
    }
}

#[derive(Debug, Deserialize)]
struct Inspect {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    /// Container id → its endpoint on this network.
    #[serde(rename = "Containers", default)]
    containers: Option<BTreeMap<String, Member>>,
}

#[derive(Debug, Deserialize)]
struct Member {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
}

/// One `GET /networks/ID`: `None` while Docker does not know the network (yet).
fn ask(sock: &Path, id: &str) -> Result<Option<Inspect>> {
    let mut s =
        UnixStream::connect(sock).with_context(|| format!("connecting {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /networks/{id} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    match status {
        "200" => Ok(Some(
            serde_json::from_str(body).context("network inspect JSON")?,
        )),
        "404" => Ok(None),
        s => bail!("Docker answered {s}: {body}"),
    }
}

/// What the naming thread is asked to learn from Docker.
#[derive(Debug)]
pub enum Job {
    /// A network's name and labels.
    Network(String),
    /// The container id and name of the endpoints joined to this network.
    Endpoints(String),
}

/// Serve naming jobs until the sender side is dropped.
pub fn run(store: Arc<dyn Store>, sock: PathBuf, cni_data_dir: PathBuf, rx: Receiver<Job>) {
    for job in rx {
        match job {
            Job::Network(id) => name_network(&*store, &sock, &cni_data_dir, &id),
            Job::Endpoints(id) => name_endpoints(&*store, &sock, &id),
        }
    }
}

fn name_network(store: &dyn Store, sock: &Path, cni_data_dir: &Path, id: &str) {
    let t = Instant::now();
    loop {
        match ask(sock, id) {
            Ok(Some(i)) => {
                let labels = i.labels.unwrap_or_default();
                match store.rename_network(id, &i.name, &labels) {
                    Ok(n) => {
                        info!(network = %id, name = %n.name, "named after Docker's network");
                        alias_pool(cni_data_dir, &n);
                    }
                    Err(e) => {
                        warn!(network = %id, name = %i.name, error = %e, "keeping the stand-in name")
                    }
                }
                return;
            }
            Ok(None) if t.elapsed() < Duration::from_secs(30) => {}
            Ok(None) => {
                warn!(network = %id, "Docker does not know this network: keeping the stand-in name");
                return;
            }
            Err(e) => {
                warn!(network = %id, error = %format!("{e:#}"), "cannot ask Docker for the network's name");
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Docker lists a container on a network once its Join returned: until every joined endpoint
/// of the network has its container's id and name (or 5 s passed), ask again.
fn name_endpoints(store: &dyn Store, sock: &Path, id: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        let Ok(Some(i)) = ask(sock, id) else { return };
        let members = i.containers.unwrap_or_default();
        let Ok(eps) = store.network_endpoints(id) else {
            return;
        };
        let mut missing = 0;
        for mut ep in eps.into_iter().filter(|e| e.sandbox_id.is_some()) {
            let Some((cid, m)) = members.iter().find(|(_, m)| m.endpoint_id == ep.id) else {
                missing += 1;
                continue;
            };
            if ep.sandbox_id.as_deref() != Some(cid.as_str()) || ep.name != m.name {
                ep.sandbox_id = Some(cid.clone());
                ep.name = m.name.clone();
                if let Err(e) = store.put_endpoint(&ep) {
                    warn!(endpoint = %ep.id, error = %e, "cannot record the container's name");
                }
            }
        }
        if missing == 0 {
            return;
        }
    }
}

/// A handle the plugin calls use to queue naming jobs.
#[derive(Clone)]
pub struct Namer(pub Option<Sender<Job>>);

impl Namer {
    pub fn queue(&self, job: Job) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(job);
        }
    }
}

/// `<data>/<name>` → the pool directory of a network on knit's IPAM, unless the name is taken.
fn alias_pool(data_dir: &Path, net: &store::Network) {
    let Some(pool) = net.options.get(crate::network::IPAM_DIR) else {
        return;
    };
    let link = data_dir.join(&net.name);
    if link.symlink_metadata().is_ok() {
        warn!(network = %net.name, "{} exists: CNI networks of this name do not share the pool", link.display());
        return;
    }
    if let Err(e) = std::os::unix::fs::symlink(pool, &link) {
        warn!(network = %net.name, error = %e, "cannot alias the pool directory");
    }
}
