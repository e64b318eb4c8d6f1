//! The [`Store`] trait on etcd: the same pure rules as the SQLite store ([`crate::validate`]),
//! run on one consistent read and committed by a transaction that compares `P/rev` (see
//! [`AsyncEtcdStore::write`]), so a check and its write are one atomic step across hosts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use etcd_client::{DeleteOptions, TxnOp};
use serde::{Deserialize, Serialize};

use super::{decode, decode_all, encode, AsyncEtcdStore, EtcdStore, Get, Reads};
use crate::error::Error;
use crate::model::{Endpoint, Network, Sandbox};
use crate::validate::{
    find_overlap, host_addr, resolve, validate_endpoint, validate_id, validate_network,
    validate_sandbox,
};
use crate::Store;

/// `P/endpoint-ids/ID`: where an endpoint's body and sandbox index are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EndpointIndex {
    network_id: String,
    #[serde(default)]
    sandbox_id: Option<String>,
}

/// An id a plan learnt from its read (the network behind a name) and needs the next read to
/// cover; shared by a write's `gets` and `plan` closures.
#[derive(Default)]
struct Guess(Mutex<String>);

impl Guess {
    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Records `id`; true when it was already the guess (the read covered it).
    fn settle(&self, id: &str) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if *g == id {
            return true;
        }
        *g = id.to_string();
        false
    }
}

fn network_named(all: &[Network], name_or_id: &str) -> Result<Network, Error> {
    let items = all.iter().map(|n| (n.id.as_str(), n.name.as_str(), n));
    resolve("network", items, name_or_id)?
        .cloned()
        .ok_or_else(|| Error::NetworkNotFound {
            name_or_id: name_or_id.to_string(),
        })
}

fn sandbox_named(all: &[Sandbox], name_or_id: &str) -> Result<Sandbox, Error> {
    let items = all.iter().map(|s| (s.id.as_str(), s.name.as_str(), s));
    resolve("sandbox", items, name_or_id)?
        .cloned()
        .ok_or_else(|| Error::SandboxNotFound {
            name_or_id: name_or_id.to_string(),
        })
}

fn sort_endpoints(eps: &mut [Endpoint]) {
    eps.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
}

impl AsyncEtcdStore {
    async fn networks(&self) -> Result<Vec<Network>, Error> {
        let reads = self
            .read(
                "list networks",
                vec![Get::Prefix(self.keys.dir("networks"))],
            )
            .await?;
        let mut all: Vec<Network> = decode_all("networks", reads.all(0))?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn sandboxes(&self) -> Result<Vec<Sandbox>, Error> {
        let reads = self
            .read(
                "list sandboxes",
                vec![Get::Prefix(self.keys.dir("sandboxes"))],
            )
            .await?;
        let mut all: Vec<Sandbox> = decode_all("sandboxes", reads.all(0))?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// [`Store::create_network`].
    pub async fn create_network(&self, net: &Network) -> Result<(), Error> {
        validate_network(net)?;
        let body = encode("networks", &net.id, net)?;
        let key = self.keys.network(&net.id);
        let gets = || vec![Get::Prefix(self.keys.dir("networks"))];
        self.write("create network", gets, |r: &Reads| {
            let all: Vec<Network> = decode_all("networks", r.all(1))?;
            if all.iter().any(|n| n.id == net.id) {
                return Err(Error::NetworkIdExists { id: net.id.clone() });
            }
            if all.iter().any(|n| n.name == net.name) {
                return Err(Error::NetworkExists {
                    name: net.name.clone(),
                });
            }
            if let Some((subnet, other, o)) = find_overlap(net, &all) {
                return Err(Error::SubnetOverlap {
                    subnet,
                    other: o,
                    network: other.name.clone(),
                });
            }
            Ok(Some((
                vec![],
                vec![TxnOp::put(key.clone(), body.clone(), None)],
                (),
            )))
        })
        .await
    }

    /// [`Store::network`].
    pub async fn network(&self, name_or_id: &str) -> Result<Network, Error> {
        network_named(&self.networks().await?, name_or_id)
    }

    /// [`Store::list_networks`].
    pub async fn list_networks(&self) -> Result<Vec<Network>, Error> {
        self.networks().await
    }

    /// [`Store::delete_network`]; also frees the network's VNI and IPAM blocks.
    pub async fn delete_network(&self, name_or_id: &str) -> Result<Network, Error> {
        let guess = Guess::default();
        let gets = || {
            let id = guess.get();
            vec![
                Get::Prefix(self.keys.dir("networks")),
                Get::Prefix(self.keys.network_endpoints(&id)),
                Get::Key(self.keys.network_vni(&id)),
            ]
        };
        self.write("delete network", gets, |r: &Reads| {
            let all: Vec<Network> = decode_all("networks", r.all(1))?;
            let net = network_named(&all, name_or_id)?;
            if !guess.settle(&net.id) {
                return Ok(None);
            }
            let endpoints = r.all(2).len();
            if endpoints > 0 {
                return Err(Error::NetworkInUse {
                    network: net.name,
                    endpoints,
                });
            }
            let vni_key = self.keys.network_vni(&net.id);
            let mut ops = vec![
                TxnOp::delete(self.keys.network(&net.id), None),
                TxnOp::delete(
                    self.keys.network_blocks(&net.id),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            ];
            // The VNI is allocated outside trait writes: compare it is still the one read.
            let seen = r.one(3).map(|kv| kv.mod_revision()).unwrap_or(0);
            let compares = vec![etcd_client::Compare::mod_revision(
                vni_key.clone(),
                etcd_client::CompareOp::Equal,
                seen,
            )];
            if let Some(kv) = r.one(3) {
                if let Some(vni) = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    ops.push(TxnOp::delete(self.keys.vni(vni), None));
                }
                ops.push(TxnOp::delete(vni_key, None));
            }
            Ok(Some((compares, ops, net)))
        })
        .await
    }

    /// [`Store::rename_network`].
    pub async fn rename_network(
        &self,
        id: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Network, Error> {
        let gets = || vec![Get::Prefix(self.keys.dir("networks"))];
        self.write("rename network", gets, |r: &Reads| {
            let all: Vec<Network> = decode_all("networks", r.all(1))?;
            let mut net = network_named(&all, id)?;
            if net.id != id {
                return Err(Error::NetworkNotFound {
                    name_or_id: id.to_string(),
                });
            }
            if net.name != name && all.iter().any(|n| n.name == name) {
                return Err(Error::NetworkExists {
                    name: name.to_string(),
                });
            }
            net.name = name.to_string();
            net.labels = labels.clone();
            validate_network(&net)?;
            let body = encode("networks", &net.id, &net)?;
            let put = TxnOp::put(self.keys.network(&net.id), body, None);
            Ok(Some((vec![], vec![put], net)))
        })
        .await
    }

    /// [`Store::put_endpoint`].
    pub async fn put_endpoint(&self, ep: &Endpoint) -> Result<(), Error> {
        validate_id("endpoint", &ep.id)?;
        validate_id("network", &ep.network_id)?;
        let body = encode("endpoints", &ep.id, ep)?;
        let index = EndpointIndex {
            network_id: ep.network_id.clone(),
            sandbox_id: ep.sandbox_id.clone(),
        };
        let index_body = encode("endpoints", &ep.id, &index)?;
        let gets = || {
            vec![
                Get::Key(self.keys.network(&ep.network_id)),
                Get::Prefix(self.keys.network_endpoints(&ep.network_id)),
                Get::Key(self.keys.endpoint_index(&ep.id)),
            ]
        };
        self.write("put endpoint", gets, |r: &Reads| {
            let Some(nkv) = r.one(1) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: ep.network_id.clone(),
                });
            };
            let net: Network = decode("networks", nkv)?;
            validate_endpoint(ep, &net)?;
            let others: Vec<Endpoint> = decode_all("endpoints", r.all(2))?;
            let others = || others.iter().filter(|o| o.id != ep.id);
            if !ep.name.is_empty() && others().any(|o| o.name == ep.name) {
                return Err(Error::EndpointNameExists {
                    name: ep.name.clone(),
                    network: net.name,
                });
            }
            for (mine, v4) in [(host_addr(&ep.ipv4), true), (host_addr(&ep.ipv6), false)] {
                let Some(mine) = mine else { continue };
                let of = |o: &Endpoint| host_addr(if v4 { &o.ipv4 } else { &o.ipv6 });
                if let Some(holder) = others().find(|o| of(o) == Some(mine)) {
                    return Err(Error::AddressInUse {
                        addr: mine,
                        endpoint: holder.id.clone(),
                        network: net.name.clone(),
                    });
                }
            }
            let mut ops = vec![
                TxnOp::put(
                    self.keys.endpoint(&ep.network_id, &ep.id),
                    body.clone(),
                    None,
                ),
                TxnOp::put(self.keys.endpoint_index(&ep.id), index_body.clone(), None),
            ];
            if let Some(sb) = &ep.sandbox_id {
                let key = self.keys.sandbox_endpoint(sb, &ep.id);
                ops.push(TxnOp::put(key, ep.network_id.clone(), None));
            }
            if let Some(kv) = r.one(3) {
                let old: EndpointIndex = decode("endpoints", kv)?;
                if old.network_id != ep.network_id {
                    ops.push(TxnOp::delete(
                        self.keys.endpoint(&old.network_id, &ep.id),
                        None,
                    ));
                }
                if let Some(old_sb) = old.sandbox_id.filter(|s| Some(s) != ep.sandbox_id.as_ref()) {
                    ops.push(TxnOp::delete(
                        self.keys.sandbox_endpoint(&old_sb, &ep.id),
                        None,
                    ));
                }
            }
            Ok(Some((vec![], ops, ())))
        })
        .await
    }

    /// [`Store::endpoint`].
    pub async fn endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        let not_found = || Error::EndpointNotFound { id: id.to_string() };
        if validate_id("endpoint", id).is_err() {
            return Err(not_found());
        }
        let r = self
            .read("get endpoint", vec![Get::Key(self.keys.endpoint_index(id))])
            .await?;
        let Some(kv) = r.one(0) else {
            return Err(not_found());
        };
        let index: EndpointIndex = decode("endpoints", kv)?;
        let key = self.keys.endpoint(&index.network_id, id);
        let r = self.read("get endpoint", vec![Get::Key(key)]).await?;
        match r.one(0) {
            Some(kv) => decode("endpoints", kv),
            None => Err(not_found()),
        }
    }

    /// [`Store::delete_endpoint`].
    pub async fn delete_endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        let not_found = || Error::EndpointNotFound { id: id.to_string() };
        if validate_id("endpoint", id).is_err() {
            return Err(not_found());
        }
        let guess = Guess::default();
        let gets = || {
            vec![
                Get::Key(self.keys.endpoint_index(id)),
                Get::Key(self.keys.endpoint(&guess.get(), id)),
            ]
        };
        self.write("delete endpoint", gets, |r: &Reads| {
            let Some(kv) = r.one(1) else {
                return Err(not_found());
            };
            let index: EndpointIndex = decode("endpoints", kv)?;
            if !guess.settle(&index.network_id) {
                return Ok(None);
            }
            let Some(body) = r.one(2) else {
                return Err(not_found());
            };
            let ep: Endpoint = decode("endpoints", body)?;
            let mut ops = vec![
                TxnOp::delete(self.keys.endpoint(&index.network_id, id), None),
                TxnOp::delete(self.keys.endpoint_index(id), None),
            ];
            if let Some(sb) = &index.sandbox_id {
                ops.push(TxnOp::delete(self.keys.sandbox_endpoint(sb, id), None));
            }
            Ok(Some((vec![], ops, ep)))
        })
        .await
    }

    /// [`Store::network_endpoints`].
    pub async fn network_endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>, Error> {
        if validate_id("network", network_id).is_err() {
            return Ok(Vec::new());
        }
        let key = self.keys.network_endpoints(network_id);
        let r = self
            .read("network endpoints", vec![Get::Prefix(key)])
            .await?;
        let mut eps: Vec<Endpoint> = decode_all("endpoints", r.all(0))?;
        sort_endpoints(&mut eps);
        Ok(eps)
    }

    /// [`Store::sandbox_endpoints`].
    pub async fn sandbox_endpoints(&self, sandbox_id: &str) -> Result<Vec<Endpoint>, Error> {
        if validate_id("sandbox", sandbox_id).is_err() {
            return Ok(Vec::new());
        }
        let key = self.keys.sandbox_endpoints(sandbox_id);
        let r = self
            .read("sandbox endpoints", vec![Get::Prefix(key.clone())])
            .await?;
        let gets: Vec<Get> = r
            .all(0)
            .iter()
            .filter_map(|kv| {
                let id = kv.key().strip_prefix(key.as_bytes())?;
                let id = std::str::from_utf8(id).ok()?;
                let net = std::str::from_utf8(kv.value()).ok()?;
                Some(Get::Key(self.keys.endpoint(net, id)))
            })
            .collect();
        if gets.is_empty() {
            return Ok(Vec::new());
        }
        let bodies = self.read("sandbox endpoints", gets).await?;
        let mut eps = Vec::new();
        for kvs in &bodies.kvs {
            // An endpoint deleted between the two reads is simply gone.
            for kv in kvs {
                eps.push(decode::<Endpoint>("endpoints", kv)?);
            }
        }
        eps.retain(|e| e.sandbox_id.as_deref() == Some(sandbox_id));
        sort_endpoints(&mut eps);
        Ok(eps)
    }

    /// [`Store::create_sandbox`].
    pub async fn create_sandbox(&self, sb: &Sandbox) -> Result<(), Error> {
        validate_sandbox(sb)?;
        let body = encode("sandboxes", &sb.id, sb)?;
        let gets = || vec![Get::Prefix(self.keys.dir("sandboxes"))];
        self.write("create sandbox", gets, |r: &Reads| {
            let all: Vec<Sandbox> = decode_all("sandboxes", r.all(1))?;
            if all.iter().any(|s| s.id == sb.id) {
                return Err(Error::SandboxIdExists { id: sb.id.clone() });
            }
            if all.iter().any(|s| s.name == sb.name) {
                return Err(Error::SandboxExists {
                    name: sb.name.clone(),
                });
            }
            let put = TxnOp::put(self.keys.sandbox(&sb.id), body.clone(), None);
            Ok(Some((vec![], vec![put], ())))
        })
        .await
    }

    /// [`Store::sandbox`].
    pub async fn sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        sandbox_named(&self.sandboxes().await?, name_or_id)
    }

    /// [`Store::list_sandboxes`].
    pub async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, Error> {
        self.sandboxes().await
    }

    /// [`Store::delete_sandbox`].
    pub async fn delete_sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        let guess = Guess::default();
        let gets = || {
            vec![
                Get::Prefix(self.keys.dir("sandboxes")),
                Get::Prefix(self.keys.sandbox_endpoints(&guess.get())),
            ]
        };
        self.write("delete sandbox", gets, |r: &Reads| {
            let all: Vec<Sandbox> = decode_all("sandboxes", r.all(1))?;
            let sb = sandbox_named(&all, name_or_id)?;
            if !guess.settle(&sb.id) {
                return Ok(None);
            }
            let endpoints = r.all(2).len();
            if endpoints > 0 {
                return Err(Error::SandboxInUse {
                    sandbox: sb.name,
                    endpoints,
                });
            }
            let del = TxnOp::delete(self.keys.sandbox(&sb.id), None);
            Ok(Some((vec![], vec![del], sb)))
        })
        .await
    }

    /// [`Store::revision`]: the etcd `version` of `P/rev`, which every trait write puts once.
    pub async fn revision(&self) -> Result<u64, Error> {
        let r = self
            .read("revision", vec![Get::Key(self.keys.rev())])
            .await?;
        Ok(r.one(0)
            .map(|kv| u64::try_from(kv.version()).unwrap_or(0))
            .unwrap_or(0))
    }
}

impl Store for EtcdStore {
    fn create_network(&self, net: &Network) -> Result<(), Error> {
        let net = net.clone();
        self.run(|s| async move { s.create_network(&net).await })
    }
    fn network(&self, name_or_id: &str) -> Result<Network, Error> {
        let n = name_or_id.to_string();
        self.run(|s| async move { s.network(&n).await })
    }
    fn list_networks(&self) -> Result<Vec<Network>, Error> {
        self.run(|s| async move { s.list_networks().await })
    }
    fn delete_network(&self, name_or_id: &str) -> Result<Network, Error> {
        let n = name_or_id.to_string();
        self.run(|s| async move { s.delete_network(&n).await })
    }
    fn rename_network(
        &self,
        id: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Network, Error> {
        let (id, name, labels) = (id.to_string(), name.to_string(), labels.clone());
        self.run(|s| async move { s.rename_network(&id, &name, &labels).await })
    }
    fn put_endpoint(&self, ep: &Endpoint) -> Result<(), Error> {
        let ep = ep.clone();
        self.run(|s| async move { s.put_endpoint(&ep).await })
    }
    fn endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        let id = id.to_string();
        self.run(|s| async move { s.endpoint(&id).await })
    }
    fn delete_endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        let id = id.to_string();
        self.run(|s| async move { s.delete_endpoint(&id).await })
    }
    fn network_endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>, Error> {
        let id = network_id.to_string();
        self.run(|s| async move { s.network_endpoints(&id).await })
    }
    fn sandbox_endpoints(&self, sandbox_id: &str) -> Result<Vec<Endpoint>, Error> {
        let id = sandbox_id.to_string();
        self.run(|s| async move { s.sandbox_endpoints(&id).await })
    }
    fn create_sandbox(&self, sb: &Sandbox) -> Result<(), Error> {
        let sb = sb.clone();
        self.run(|s| async move { s.create_sandbox(&sb).await })
    }
    fn sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        let n = name_or_id.to_string();
        self.run(|s| async move { s.sandbox(&n).await })
    }
    fn list_sandboxes(&self) -> Result<Vec<Sandbox>, Error> {
        self.run(|s| async move { s.list_sandboxes().await })
    }
    fn delete_sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        let n = name_or_id.to_string();
        self.run(|s| async move { s.delete_sandbox(&n).await })
    }
    fn revision(&self) -> Result<u64, Error> {
        self.run(|s| async move { s.revision().await })
    }
}
