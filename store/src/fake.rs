//! `MemStore`: the [`Store`] in memory, for other crates' unit tests (the `fake` feature, or this
//! crate's own tests). It runs the same pure rules as [`crate::SqliteStore`] and answers with the
//! same errors; `tests/sqlite.rs` runs its scenarios against both, so the two cannot drift.
//! Nothing is persisted and nothing is shared between processes.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::error::Error;
use crate::model::{Endpoint, Network, Sandbox, Service};
use crate::validate::{
    find_overlap, host_addr, resolve, validate_endpoint, validate_id, validate_network,
    validate_sandbox, validate_service,
};
use crate::Store;

#[derive(Default, Clone)]
struct State {
    networks: BTreeMap<String, Network>,
    endpoints: BTreeMap<String, Endpoint>,
    sandboxes: BTreeMap<String, Sandbox>,
    services: BTreeMap<String, Service>,
    revision: u64,
}

/// An in-memory [`Store`]; `Default` is empty at revision 0.
#[derive(Default)]
pub struct MemStore {
    state: Mutex<State>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to a copy of the state and keeps it (with the revision bumped) only if `f`
    /// succeeds: a write is whole or absent, as in a transaction.
    fn write<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Error>) -> Result<T, Error> {
        let mut st = self.lock();
        let mut next = st.clone();
        let out = f(&mut next)?;
        next.revision += 1;
        *st = next;
        Ok(out)
    }
}

impl State {
    fn network(&self, name_or_id: &str) -> Result<Network, Error> {
        let items = self
            .networks
            .values()
            .map(|n| (n.id.as_str(), n.name.as_str(), n));
        resolve("network", items, name_or_id)?
            .cloned()
            .ok_or_else(|| Error::NetworkNotFound {
                name_or_id: name_or_id.to_string(),
            })
    }

    fn sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        let items = self
            .sandboxes
            .values()
            .map(|s| (s.id.as_str(), s.name.as_str(), s));
        resolve("sandbox", items, name_or_id)?
            .cloned()
            .ok_or_else(|| Error::SandboxNotFound {
                name_or_id: name_or_id.to_string(),
            })
    }

    fn service(&self, name_or_id: &str) -> Result<Service, Error> {
        let items = self
            .services
            .values()
            .map(|s| (s.id.as_str(), s.name.as_str(), s));
        resolve("service", items, name_or_id)?
            .cloned()
            .ok_or_else(|| Error::ServiceNotFound {
                name_or_id: name_or_id.to_string(),
            })
    }

    /// The name of the service of `network_id` whose virtual address is `addr`.
    fn vip_holder(&self, network_id: &str, addr: std::net::IpAddr) -> Option<String> {
        self.services
            .values()
            .find(|s| s.network_id == network_id && s.vip == addr)
            .map(|s| s.name.clone())
    }

    fn endpoints_where(&self, pred: impl Fn(&Endpoint) -> bool) -> Vec<Endpoint> {
        let mut eps: Vec<Endpoint> = self
            .endpoints
            .values()
            .filter(|e| pred(e))
            .cloned()
            .collect();
        eps.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        eps
    }
}

impl Store for MemStore {
    fn create_network(&self, net: &Network) -> Result<(), Error> {
        validate_network(net)?;
        self.write(|st| {
            if st.networks.contains_key(&net.id) {
                return Err(Error::NetworkIdExists { id: net.id.clone() });
            }
            if st.networks.values().any(|n| n.name == net.name) {
                return Err(Error::NetworkExists {
                    name: net.name.clone(),
                });
            }
            if let Some((subnet, other, o)) = find_overlap(net, st.networks.values()) {
                return Err(Error::SubnetOverlap {
                    subnet,
                    other: o,
                    network: other.name.clone(),
                });
            }
            st.networks.insert(net.id.clone(), net.clone());
            Ok(())
        })
    }

    fn network(&self, name_or_id: &str) -> Result<Network, Error> {
        self.lock().network(name_or_id)
    }

    fn rename_network(
        &self,
        id: &str,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Network, Error> {
        self.write(|st| {
            let mut net = st
                .networks
                .get(id)
                .cloned()
                .ok_or_else(|| Error::NetworkNotFound {
                    name_or_id: id.to_string(),
                })?;
            if net.name != name && st.networks.values().any(|n| n.name == name) {
                return Err(Error::NetworkExists {
                    name: name.to_string(),
                });
            }
            net.name = name.to_string();
            net.labels = labels.clone();
            validate_network(&net)?;
            st.networks.insert(net.id.clone(), net.clone());
            Ok(net)
        })
    }

    fn list_networks(&self) -> Result<Vec<Network>, Error> {
        let mut nets: Vec<Network> = self.lock().networks.values().cloned().collect();
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nets)
    }

    fn delete_network(&self, name_or_id: &str) -> Result<Network, Error> {
        self.write(|st| {
            let net = st.network(name_or_id)?;
            let endpoints = st
                .endpoints
                .values()
                .filter(|e| e.network_id == net.id)
                .count();
            if endpoints > 0 {
                return Err(Error::NetworkInUse {
                    network: net.name,
                    endpoints,
                });
            }
            let services = st
                .services
                .values()
                .filter(|s| s.network_id == net.id)
                .count();
            if services > 0 {
                return Err(Error::NetworkHasServices {
                    network: net.name,
                    services,
                });
            }
            st.networks.remove(&net.id);
            Ok(net)
        })
    }

    fn put_endpoint(&self, ep: &Endpoint) -> Result<(), Error> {
        validate_id("endpoint", &ep.id)?;
        validate_id("network", &ep.network_id)?;
        self.write(|st| {
            let Some(net) = st.networks.get(&ep.network_id) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: ep.network_id.clone(),
                });
            };
            validate_endpoint(ep, net)?;
            let others = st
                .endpoints
                .values()
                .filter(|o| o.network_id == ep.network_id && o.id != ep.id);
            if !ep.name.is_empty() && others.clone().any(|o| o.name == ep.name) {
                return Err(Error::EndpointNameExists {
                    name: ep.name.clone(),
                    network: net.name.clone(),
                });
            }
            // IPv4 first, then IPv6, as the SQLite store checks them.
            let addr_of = |e: &Endpoint, v4: bool| host_addr(if v4 { &e.ipv4 } else { &e.ipv6 });
            for v4 in [true, false] {
                let Some(addr) = addr_of(ep, v4) else {
                    continue;
                };
                if let Some(holder) = others.clone().find(|o| addr_of(o, v4) == Some(addr)) {
                    return Err(Error::AddressInUse {
                        addr,
                        endpoint: holder.id.clone(),
                        network: net.name.clone(),
                    });
                }
                if let Some(service) = st.vip_holder(&ep.network_id, addr) {
                    return Err(Error::AddressIsVip {
                        addr,
                        service,
                        network: net.name.clone(),
                    });
                }
            }
            st.endpoints.insert(ep.id.clone(), ep.clone());
            Ok(())
        })
    }

    fn endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        self.lock()
            .endpoints
            .get(id)
            .cloned()
            .ok_or_else(|| Error::EndpointNotFound { id: id.to_string() })
    }

    fn delete_endpoint(&self, id: &str) -> Result<Endpoint, Error> {
        self.write(|st| {
            st.endpoints
                .remove(id)
                .ok_or_else(|| Error::EndpointNotFound { id: id.to_string() })
        })
    }

    fn network_endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>, Error> {
        Ok(self.lock().endpoints_where(|e| e.network_id == network_id))
    }

    fn sandbox_endpoints(&self, sandbox_id: &str) -> Result<Vec<Endpoint>, Error> {
        Ok(self
            .lock()
            .endpoints_where(|e| e.sandbox_id.as_deref() == Some(sandbox_id)))
    }

    fn create_sandbox(&self, sb: &Sandbox) -> Result<(), Error> {
        validate_sandbox(sb)?;
        self.write(|st| {
            if st.sandboxes.contains_key(&sb.id) {
                return Err(Error::SandboxIdExists { id: sb.id.clone() });
            }
            if st.sandboxes.values().any(|s| s.name == sb.name) {
                return Err(Error::SandboxExists {
                    name: sb.name.clone(),
                });
            }
            st.sandboxes.insert(sb.id.clone(), sb.clone());
            Ok(())
        })
    }

    fn sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        self.lock().sandbox(name_or_id)
    }

    fn list_sandboxes(&self) -> Result<Vec<Sandbox>, Error> {
        let mut sbs: Vec<Sandbox> = self.lock().sandboxes.values().cloned().collect();
        sbs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(sbs)
    }

    fn delete_sandbox(&self, name_or_id: &str) -> Result<Sandbox, Error> {
        self.write(|st| {
            let sb = st.sandbox(name_or_id)?;
            let endpoints = st
                .endpoints
                .values()
                .filter(|e| e.sandbox_id.as_deref() == Some(sb.id.as_str()))
                .count();
            if endpoints > 0 {
                return Err(Error::SandboxInUse {
                    sandbox: sb.name,
                    endpoints,
                });
            }
            st.sandboxes.remove(&sb.id);
            Ok(sb)
        })
    }

    fn create_service(&self, svc: &Service) -> Result<(), Error> {
        self.write(|st| {
            let Some(net) = st.networks.get(&svc.network_id) else {
                return Err(Error::NetworkNotFound {
                    name_or_id: svc.network_id.clone(),
                });
            };
            validate_service(svc, net)?;
            if st.services.contains_key(&svc.id) {
                return Err(Error::ServiceIdExists { id: svc.id.clone() });
            }
            if st.services.values().any(|s| s.name == svc.name) {
                return Err(Error::ServiceExists {
                    name: svc.name.clone(),
                });
            }
            if let Some(service) = st.vip_holder(&net.id, svc.vip) {
                return Err(Error::AddressIsVip {
                    addr: svc.vip,
                    service,
                    network: net.name.clone(),
                });
            }
            let addr_of =
                |e: &Endpoint| host_addr(if svc.vip.is_ipv4() { &e.ipv4 } else { &e.ipv6 });
            if let Some(holder) = st
                .endpoints
                .values()
                .find(|e| e.network_id == net.id && addr_of(e) == Some(svc.vip))
            {
                return Err(Error::AddressInUse {
                    addr: svc.vip,
                    endpoint: holder.id.clone(),
                    network: net.name.clone(),
                });
            }
            st.services.insert(svc.id.clone(), svc.clone());
            Ok(())
        })
    }

    fn service(&self, name_or_id: &str) -> Result<Service, Error> {
        self.lock().service(name_or_id)
    }

    fn list_services(&self) -> Result<Vec<Service>, Error> {
        let mut all: Vec<Service> = self.lock().services.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn network_services(&self, network_id: &str) -> Result<Vec<Service>, Error> {
        let mut all: Vec<Service> = self
            .lock()
            .services
            .values()
            .filter(|s| s.network_id == network_id)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn delete_service(&self, name_or_id: &str) -> Result<Service, Error> {
        self.write(|st| {
            let svc = st.service(name_or_id)?;
            st.services.remove(&svc.id);
            Ok(svc)
        })
    }

    fn revision(&self) -> Result<u64, Error> {
        Ok(self.lock().revision)
    }
}
