//! The [`Store`] trait on etcd: the same pure rules as the SQLite store ([`crate::validate`]),
//! run on one consistent read and committed by a transaction that compares what the checks
//! read (`P/rev` for networks and sandboxes, [`AsyncEtcdStore::write`]; the endpoint's own keys
//! for endpoints, [`AsyncEtcdStore::write_own`]), so a check and its write are one atomic step
//! across hosts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use etcd_client::{DeleteOptions, TxnOp};
use serde::{Deserialize, Serialize};

use super::{decode, decode_all, encode, unchanged, AsyncEtcdStore, EtcdStore, Get, Reads};
use crate::error::Error;
use crate::model::{Endpoint, Network, Sandbox, Service};
use crate::validate::{
    find_overlap, host_addr, resolve, validate_endpoint, validate_id, validate_network,
    validate_sandbox, validate_service,
};
use crate::Store;

/// `P/endpoint-ids/ID`: where an endpoint's body is, and the index keys it holds (to move or
/// delete them without reading the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EndpointIndex {
    network_id: String,
    #[serde(default)]
    sandbox_id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    addrs: Vec<IpAddr>,
}

/// What an endpoint's claim key stands for.
#[derive(Debug, Clone, Copy)]
enum Claim {
    Name,
    Addr(IpAddr),
}

impl EndpointIndex {
    fn of(ep: &Endpoint) -> EndpointIndex {
        EndpointIndex {
            network_id: ep.network_id.clone(),
            sandbox_id: ep.sandbox_id.clone(),
            name: ep.name.clone(),
            addrs: [host_addr(&ep.ipv4), host_addr(&ep.ipv6)]
                .into_iter()
                .flatten()
                .collect(),
        }
    }

    /// The keys that claim its name and addresses within its network.
    fn claims(&self, keys: &super::Keys) -> Vec<(String, Claim)> {
        let name = (!self.name.is_empty()).then(|| {
            (
                keys.endpoint_name(&self.network_id, &self.name),
                Claim::Name,
            )
        });
        let addrs = self
            .addrs
            .iter()
            .map(|a| (keys.endpoint_addr(&self.network_id, a), Claim::Addr(*a)));
        name.into_iter().chain(addrs).collect()
    }

    /// Every key the endpoint holds: its body, `endpoint-ids`, its claims, its sandbox entry.
    fn keys(&self, keys: &super::Keys, id: &str) -> Vec<String> {
        let mut out = vec![keys.endpoint(&self.network_id, id), keys.endpoint_index(id)];
        out.extend(self.claims(keys).into_iter().map(|(k, _)| k));
        if let Some(sb) = &self.sandbox_id {
            out.push(keys.sandbox_endpoint(sb, id));
        }
        out
    }
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

fn service_named(all: &[Service], name_or_id: &str) -> Result<Service, Error> {
    let items = all.iter().map(|s| (s.id.as_str(), s.name.as_str(), s));
    resolve("service", items, name_or_id)?
        .cloned()
        .ok_or_else(|| Error::ServiceNotFound {
            name_or_id: name_or_id.to_string(),
        })
}

/// A service's VIP holds the endpoint address claim of its network, valued `svc:NAME` (an
/// endpoint id never holds a ':'), so an endpoint and a service never share an address.
const VIP_CLAIM: &str = "svc:";

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
                Get::Prefix(self.keys.dir("services")),
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
            let services: Vec<Service> = decode_all("services", r.all(4))?;
            let services = services.iter().filter(|s| s.network_id == net.id).count();
            if services > 0 {
                return Err(Error::NetworkHasServices {
                    network: net.name,
                    services,
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
            let compares = vec![unchanged(vni_key.clone(), r.one(3))];
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

    /// [`Store::put_endpoint`]. Its name and each address are claimed by a key of their own
    /// (`P/endpoint-names/NETWORK/NAME`, `P/endpoint-addrs/NETWORK/ADDR`, value: the endpoint
    /// id); the transaction compares those, the network and the endpoint's index unchanged
    /// since read, so endpoints on different networks never make each other retry and the cost
    /// does not grow with the network.
    pub async fn put_endpoint(&self, ep: &Endpoint) -> Result<(), Error> {
        validate_id("endpoint", &ep.id)?;
        validate_id("network", &ep.network_id)?;
        if !ep.name.is_empty() {
            crate::validate::validate_name("endpoint", &ep.name)?;
        }
        let body = encode("endpoints", &ep.id, ep)?;
        let index = EndpointIndex::of(ep);
        let index_body = encode("endpoints", &ep.id, &index)?;
        let nkey = self.keys.network(&ep.network_id);
        let ikey = self.keys.endpoint_index(&ep.id);
        // Read at index 3 on, in this order.
        let claims = index.claims(&self.keys);
        let gets = || {
            let mut g = vec![Get::Key(nkey.clone()), Get::Key(ikey.clone())];
            g.extend(claims.iter().map(|(k, _)| Get::Key(k.clone())));
            g
        };
        self.write_own("put endpoint", gets, |r: &Reads| {
            let Some(nkv) = r.one(1) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: ep.network_id.clone(),
                });
            };
            let net: Network = decode("networks", nkv)?;
            validate_endpoint(ep, &net)?;
            let mut compares = vec![
                unchanged(nkey.clone(), Some(nkv)),
                unchanged(ikey.clone(), r.one(2)),
            ];
            for (i, (key, claim)) in claims.iter().enumerate() {
                let kv = r.one(3 + i);
                let holder = kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                if let Some(holder) = holder.filter(|h| *h != ep.id) {
                    return Err(match claim {
                        Claim::Name => Error::EndpointNameExists {
                            name: ep.name.clone(),
                            network: net.name,
                        },
                        Claim::Addr(addr) => match holder.strip_prefix(VIP_CLAIM) {
                            Some(service) => Error::AddressIsVip {
                                addr: *addr,
                                service: service.to_string(),
                                network: net.name,
                            },
                            None => Error::AddressInUse {
                                addr: *addr,
                                endpoint: holder,
                                network: net.name,
                            },
                        },
                    });
                }
                compares.push(unchanged(key.clone(), kv));
            }
            let mut ops = vec![
                TxnOp::put(
                    self.keys.endpoint(&ep.network_id, &ep.id),
                    body.clone(),
                    None,
                ),
                TxnOp::put(ikey.clone(), index_body.clone(), None),
            ];
            ops.extend(
                claims
                    .iter()
                    .map(|(k, _)| TxnOp::put(k.clone(), ep.id.clone(), None)),
            );
            if let Some(sb) = &ep.sandbox_id {
                let key = self.keys.sandbox_endpoint(sb, &ep.id);
                ops.push(TxnOp::put(key, ep.network_id.clone(), None));
            }
            // A replaced endpoint gives up the keys it no longer holds.
            if let Some(kv) = r.one(2) {
                let old: EndpointIndex = decode("endpoints", kv)?;
                let new_keys = index.keys(&self.keys, &ep.id);
                for k in old.keys(&self.keys, &ep.id) {
                    if !new_keys.contains(&k) {
                        ops.push(TxnOp::delete(k, None));
                    }
                }
            }
            Ok(Some((compares, ops, ())))
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

    /// [`Store::delete_endpoint`]: the body and every key it holds, if all are as read.
    pub async fn delete_endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        let not_found = || Error::EndpointNotFound { id: id.to_string() };
        if validate_id("endpoint", id).is_err() {
            return Err(not_found());
        }
        let guess = Guess::default();
        let ikey = self.keys.endpoint_index(id);
        let gets = || {
            vec![
                Get::Key(ikey.clone()),
                Get::Key(self.keys.endpoint(&guess.get(), id)),
            ]
        };
        self.write_own("delete endpoint", gets, |r: &Reads| {
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
            let bkey = self.keys.endpoint(&index.network_id, id);
            let compares = vec![
                unchanged(ikey.clone(), Some(kv)),
                unchanged(bkey, Some(body)),
            ];
            let ops = index
                .keys(&self.keys, id)
                .into_iter()
                .map(|k| TxnOp::delete(k, None))
                .collect();
            Ok(Some((compares, ops, ep)))
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

    async fn services(&self) -> Result<Vec<Service>, Error> {
        let reads = self
            .read(
                "list services",
                vec![Get::Prefix(self.keys.dir("services"))],
            )
            .await?;
        let mut all: Vec<Service> = decode_all("services", reads.all(0))?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// [`Store::create_service`]: the body and the VIP's address claim in its network, one
    /// transaction compared on `P/rev` (names) and on the claim key (addresses).
    pub async fn create_service(&self, svc: &Service) -> Result<(), Error> {
        validate_id("service", &svc.id)?;
        validate_id("network", &svc.network_id)?;
        let body = encode("services", &svc.id, svc)?;
        let nkey = self.keys.network(&svc.network_id);
        let claim = self.keys.endpoint_addr(&svc.network_id, &svc.vip);
        let gets = || {
            vec![
                Get::Prefix(self.keys.dir("services")),
                Get::Key(nkey.clone()),
                Get::Key(claim.clone()),
            ]
        };
        self.write("create service", gets, |r: &Reads| {
            let Some(nkv) = r.one(2) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: svc.network_id.clone(),
                });
            };
            let net: Network = decode("networks", nkv)?;
            validate_service(svc, &net)?;
            let all: Vec<Service> = decode_all("services", r.all(1))?;
            if all.iter().any(|s| s.id == svc.id) {
                return Err(Error::ServiceIdExists { id: svc.id.clone() });
            }
            if all.iter().any(|s| s.name == svc.name) {
                return Err(Error::ServiceExists {
                    name: svc.name.clone(),
                });
            }
            if let Some(kv) = r.one(3) {
                let holder = String::from_utf8_lossy(kv.value()).into_owned();
                return Err(match holder.strip_prefix(VIP_CLAIM) {
                    Some(service) => Error::AddressIsVip {
                        addr: svc.vip,
                        service: service.to_string(),
                        network: net.name,
                    },
                    None => Error::AddressInUse {
                        addr: svc.vip,
                        endpoint: holder,
                        network: net.name,
                    },
                });
            }
            let compares = vec![
                unchanged(nkey.clone(), Some(nkv)),
                unchanged(claim.clone(), None),
            ];
            let ops = vec![
                TxnOp::put(self.keys.service(&svc.id), body.clone(), None),
                TxnOp::put(claim.clone(), format!("{VIP_CLAIM}{}", svc.name), None),
            ];
            Ok(Some((compares, ops, ())))
        })
        .await
    }

    /// [`Store::service`].
    pub async fn service(&self, name_or_id: &str) -> Result<Service, Error> {
        service_named(&self.services().await?, name_or_id)
    }

    /// [`Store::list_services`].
    pub async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.services().await
    }

    /// [`Store::network_services`].
    pub async fn network_services(&self, network_id: &str) -> Result<Vec<Service>, Error> {
        let mut all = self.services().await?;
        all.retain(|s| s.network_id == network_id);
        Ok(all)
    }

    /// [`Store::delete_service`]: the body and the VIP's claim.
    pub async fn delete_service(&self, name_or_id: &str) -> Result<Service, Error> {
        let gets = || vec![Get::Prefix(self.keys.dir("services"))];
        self.write("delete service", gets, |r: &Reads| {
            let all: Vec<Service> = decode_all("services", r.all(1))?;
            let svc = service_named(&all, name_or_id)?;
            let ops = vec![
                TxnOp::delete(self.keys.service(&svc.id), None),
                TxnOp::delete(self.keys.endpoint_addr(&svc.network_id, &svc.vip), None),
            ];
            Ok(Some((vec![], ops, svc)))
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
    fn create_service(&self, svc: &Service) -> Result<(), Error> {
        let svc = svc.clone();
        self.run(|s| async move { s.create_service(&svc).await })
    }
    fn service(&self, name_or_id: &str) -> Result<Service, Error> {
        let n = name_or_id.to_string();
        self.run(|s| async move { s.service(&n).await })
    }
    fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.run(|s| async move { s.list_services().await })
    }
    fn network_services(&self, network_id: &str) -> Result<Vec<Service>, Error> {
        let id = network_id.to_string();
        self.run(|s| async move { s.network_services(&id).await })
    }
    fn delete_service(&self, name_or_id: &str) -> Result<Service, Error> {
        let n = name_or_id.to_string();
        self.run(|s| async move { s.delete_service(&n).await })
    }
    fn revision(&self) -> Result<u64, Error> {
        self.run(|s| async move { s.revision().await })
    }
}
