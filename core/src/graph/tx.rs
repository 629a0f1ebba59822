//! Per-network transactions over the store.
//!
//! A transaction takes the network's lock, reads through the store (recording
//! each key's revision), stages writes, and commits them in one
//! [`Store::commit`] against the revisions it saw. If the closure fails
//! nothing is written; if a key moved (someone wrote without the lock), the
//! commit fails and leaves each key as it was.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::types::endpoint_id;
use super::{Endpoint, GraphError, Network, Peer, Policy, Service, Shaping, validate_name};
use crate::node::NodeName;
use crate::store::{Change, Revision, Store, key};

/// Default wait for a network's lock before answering "try again".
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The graph over a store.
pub struct Graph<'s> {
    store: &'s dyn Store,
    lock_timeout: Duration,
    node: String,
}

fn network_key(net: &str) -> Result<String, GraphError> {
    Ok(key::join(&["networks", net])?)
}

/// The store prefix under which a network's VPN peers live (what a mesh
/// watches for new nodes and new keys).
pub fn peers_prefix(net: &str) -> Result<String, GraphError> {
    Ok(format!("{}/peers/", network_key(net)?))
}

fn child_key(net: &str, kind: &str, name: &str) -> Result<String, GraphError> {
    Ok(key::join(&["networks", net, kind, name])?)
}

/// A service's record is what it rendered on one node: scoped by network and node.
fn record_key(net: &str, node: &str, service: &str, name: &str) -> Result<String, GraphError> {
    Ok(key::join(&["networks", net, "nodes", node, service, name])?)
}

fn decode<T: DeserializeOwned>(key: &str, v: Value) -> Result<T, GraphError> {
    serde_json::from_value(v).map_err(|e| GraphError::Decode {
        key: key.to_string(),
        why: e.to_string(),
    })
}

impl<'s> Graph<'s> {
    /// The graph as `node` sees it: its records are `node`'s, and so are
    /// the records its transactions write.
    pub fn new(store: &'s dyn Store, node: &NodeName) -> Self {
        Graph {
            store,
            lock_timeout: LOCK_TIMEOUT,
            node: node.to_string(),
        }
    }

    /// The node whose records this graph reads and writes.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Runs `f` under `network`'s lock and commits its writes atomically
    /// with respect to other transactions; an `Err` from `f` (any error type a
    /// graph error converts into) commits nothing.
    pub fn transaction<T, E: From<GraphError>>(
        &self,
        network: &str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.lock(network)?.transaction(f)
    }

    pub(crate) fn store(&self) -> &'s dyn Store {
        self.store
    }

    pub(crate) fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// A transaction on `network` (its lock held by the caller).
    pub(crate) fn tx(&self, network: &str) -> Tx<'s> {
        Tx {
            store: self.store,
            network: network.to_string(),
            node: self.node.clone(),
            seen: HashMap::new(),
            staged: BTreeMap::new(),
        }
    }

    pub fn network(&self, name: &str) -> Result<Option<Network>, GraphError> {
        self.get(&network_key(name)?)
    }

    /// Endpoints of one network, sorted by id.
    pub fn endpoints(&self, network: &str) -> Result<Vec<Endpoint>, GraphError> {
        self.list(&format!("{}/endpoints/", network_key(network)?))
    }

    pub fn endpoint(&self, network: &str, container_id: &str, ifname: &str) -> Result<Option<Endpoint>, GraphError> {
        self.get(&child_key(network, "endpoints", &endpoint_id(container_id, ifname))?)
    }

    /// Removes an attachment in its own transaction; absent is not an error.
    pub fn remove_endpoint(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Endpoint>, GraphError> {
        self.transaction(network, |tx| tx.remove_endpoint(container_id, ifname))
    }

    /// Every attachment of every network (for GC).
    pub fn attachments(&self) -> Result<Vec<Endpoint>, GraphError> {
        let mut out = Vec::new();
        for e in self.store.list("networks/")? {
            let parts: Vec<&str> = e.key.split('/').collect();
            if parts.len() == 4 && parts[2] == "endpoints" {
                out.push(decode(&e.key, e.value)?);
            }
        }
        Ok(out)
    }

    pub fn services(&self, network: &str) -> Result<Vec<Service>, GraphError> {
        self.list(&format!("{}/services/", network_key(network)?))
    }

    /// Every record of `service` in `network`, by name.
    pub fn records<T: DeserializeOwned>(&self, network: &str, service: &str) -> Result<Vec<(String, T)>, GraphError> {
        let prefix = format!("{}/", key::join(&["networks", network, "nodes", &self.node, service])?);
        self.store
            .list(&prefix)?
            .into_iter()
            .map(|e| {
                let name = e.key[prefix.len()..].to_string();
                decode(&e.key, e.value).map(|v| (name, v))
            })
            .collect()
    }

    /// One record of `service` in `network`.
    pub fn record<T: DeserializeOwned>(
        &self,
        network: &str,
        service: &str,
        name: &str,
    ) -> Result<Option<T>, GraphError> {
        self.get(&record_key(network, &self.node, service, name)?)
    }

    /// Every network that has a network document.
    pub fn networks(&self) -> Result<Vec<Network>, GraphError> {
        self.store
            .list("networks/")?
            .into_iter()
            .filter(|e| e.key.matches('/').count() == 1)
            .map(|e| decode(&e.key, e.value))
            .collect()
    }

    pub fn policies(&self, network: &str) -> Result<Vec<Policy>, GraphError> {
        self.list(&format!("{}/policies/", network_key(network)?))
    }

    pub fn shapings(&self, network: &str) -> Result<Vec<Shaping>, GraphError> {
        self.list(&format!("{}/shaping/", network_key(network)?))
    }

    pub fn peers(&self, network: &str) -> Result<Vec<Peer>, GraphError> {
        self.list(&peers_prefix(network)?)
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, GraphError> {
        self.store.get(key)?.map(|e| decode(key, e.value)).transpose()
    }

    fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, GraphError> {
        self.store
            .list(prefix)?
            .into_iter()
            .map(|e| decode(&e.key, e.value))
            .collect()
    }
}

/// A transaction in progress on one network.
pub struct Tx<'s> {
    store: &'s dyn Store,
    network: String,
    node: String,
    /// Revision and value of each key as first read (None: absent).
    seen: HashMap<String, (Option<Revision>, Option<Value>)>,
    /// Staged writes (None: delete), applied in key order at commit.
    staged: BTreeMap<String, Option<Value>>,
}

impl Tx<'_> {
    pub fn network_name(&self) -> &str {
        &self.network
    }

    /// The node this transaction runs on (whose records it reads and writes).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The endpoints `service` holds on this node (its kernel state to render).
    pub fn local_endpoints(&mut self, service: &str) -> Result<Vec<Endpoint>, GraphError> {
        let node = self.node.clone();
        Ok(self
            .endpoints()?
            .into_iter()
            .filter(|e| e.held_by(service) && e.is_on(&node))
            .collect())
    }

    /// Reads a key as this transaction sees it (staged writes first).
    fn read(&mut self, key: &str) -> Result<Option<Value>, GraphError> {
        if let Some(staged) = self.staged.get(key) {
            return Ok(staged.clone());
        }
        let entry = self.store.get(key)?;
        let (revision, value) = (entry.as_ref().map(|e| e.revision), entry.map(|e| e.value));
        self.seen.entry(key.to_string()).or_insert((revision, value.clone()));
        Ok(value)
    }

    fn stage(&mut self, key: String, value: Option<Value>) -> Result<(), GraphError> {
        if !self.seen.contains_key(&key) {
            self.read(&key)?; // record the revision the CAS will expect
        }
        self.staged.insert(key, value);
        Ok(())
    }

    fn get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, GraphError> {
        self.read(key)?.map(|v| decode(key, v)).transpose()
    }

    fn put<T: Serialize>(&mut self, key: String, value: &T) -> Result<(), GraphError> {
        let v = serde_json::to_value(value).map_err(|e| GraphError::Decode {
            key: key.clone(),
            why: e.to_string(),
        })?;
        self.stage(key, Some(v))
    }

    fn remove<T: DeserializeOwned>(&mut self, key: String) -> Result<Option<T>, GraphError> {
        let old = self.get(&key)?;
        self.stage(key, None)?;
        Ok(old)
    }

    fn check_network(&self, field: &str, network: &str) -> Result<(), GraphError> {
        if network != self.network {
            return Err(GraphError::invalid(
                field,
                network,
                format!("transaction is on network {:?}", self.network),
            ));
        }
        Ok(())
    }

    pub fn get_network(&mut self) -> Result<Option<Network>, GraphError> {
        let k = network_key(&self.network)?;
        self.get(&k)
    }

    pub fn put_network(&mut self, net: &Network) -> Result<(), GraphError> {
        self.check_network("network.name", &net.name)?;
        self.put(network_key(&self.network)?, net)
    }

    /// Removes the network document (when nothing holds the network any
    /// more); absent is not an error.
    pub fn remove_network(&mut self) -> Result<Option<Network>, GraphError> {
        let k = network_key(&self.network)?;
        self.remove(k)
    }

    pub fn get_endpoint(&mut self, container_id: &str, ifname: &str) -> Result<Option<Endpoint>, GraphError> {
        let k = child_key(&self.network, "endpoints", &endpoint_id(container_id, ifname))?;
        self.get(&k)
    }

    pub fn put_endpoint(&mut self, ep: &Endpoint) -> Result<(), GraphError> {
        self.check_network("endpoint.network", &ep.network)?;
        for (i, n) in ep.names.iter().enumerate() {
            validate_name(&format!("endpoint.names[{i}]"), n)?;
        }
        for (k, v) in &ep.labels {
            super::validate_label("endpoint.labels", k, v)?;
        }
        let k = child_key(&self.network, "endpoints", &ep.id())?;
        self.put(k, ep)
    }

    /// Removes an endpoint; absent is not an error.
    pub fn remove_endpoint(&mut self, container_id: &str, ifname: &str) -> Result<Option<Endpoint>, GraphError> {
        let k = child_key(&self.network, "endpoints", &endpoint_id(container_id, ifname))?;
        self.remove(k)
    }

    /// Puts `ep` as held by `service`, keeping the services that already
    /// hold it. Returns whether `service` newly holds it.
    pub fn attach_endpoint(&mut self, ep: &Endpoint, service: &str) -> Result<bool, GraphError> {
        let mut services = self
            .get_endpoint(&ep.container_id, &ep.ifname)?
            .map(|e| e.services)
            .unwrap_or_default();
        let newly = !services.iter().any(|s| s == service);
        if newly {
            services.push(service.to_string());
        }
        self.put_endpoint(&Endpoint { services, ..ep.clone() })?;
        Ok(newly)
    }

    /// Drops `service`'s hold on an endpoint; the endpoint goes when no service
    /// holds it. Returns the endpoint as it was (None: `service` did not hold it).
    pub fn detach_endpoint(
        &mut self,
        container_id: &str,
        ifname: &str,
        service: &str,
    ) -> Result<Option<Endpoint>, GraphError> {
        let Some(ep) = self.get_endpoint(container_id, ifname)? else {
            return Ok(None);
        };
        if !ep.held_by(service) {
            return Ok(None);
        }
        let rest: Vec<String> = ep.services.iter().filter(|s| *s != service).cloned().collect();
        if rest.is_empty() {
            self.remove_endpoint(container_id, ifname)?;
        } else {
            self.put_endpoint(&Endpoint {
                services: rest,
                ..ep.clone()
            })?;
        }
        Ok(Some(ep))
    }

    /// Endpoints of this network including this transaction's staged changes.
    pub fn endpoints(&mut self) -> Result<Vec<Endpoint>, GraphError> {
        let prefix = format!("{}/endpoints/", network_key(&self.network)?);
        let mut all: BTreeMap<String, Value> = BTreeMap::new();
        for e in self.store.list(&prefix)? {
            self.seen
                .entry(e.key.clone())
                .or_insert((Some(e.revision), Some(e.value.clone())));
            all.insert(e.key, e.value);
        }
        for (k, v) in self
            .staged
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            match v {
                Some(v) => all.insert(k.clone(), v.clone()),
                None => all.remove(k),
            };
        }
        all.into_iter().map(|(k, v)| decode(&k, v)).collect()
    }

    pub fn put_service(&mut self, s: &Service) -> Result<(), GraphError> {
        validate_name("service.name", &s.name)?;
        s.selector.validate("service.selector")?;
        let k = child_key(&self.network, "services", &s.name)?;
        self.put(k, s)
    }

    pub fn remove_service(&mut self, name: &str) -> Result<Option<Service>, GraphError> {
        let k = child_key(&self.network, "services", name)?;
        self.remove(k)
    }

    pub fn put_policy(&mut self, p: &Policy) -> Result<(), GraphError> {
        validate_name("policy.name", &p.name)?;
        p.selector.validate("policy.selector")?;
        let k = child_key(&self.network, "policies", &p.name)?;
        self.put(k, p)
    }

    pub fn remove_policy(&mut self, name: &str) -> Result<Option<Policy>, GraphError> {
        let k = child_key(&self.network, "policies", name)?;
        self.remove(k)
    }

    pub fn put_shaping(&mut self, s: &Shaping) -> Result<(), GraphError> {
        let k = child_key(&self.network, "shaping", &s.endpoint)?;
        self.put(k, s)
    }

    pub fn remove_shaping(&mut self, endpoint: &str) -> Result<Option<Shaping>, GraphError> {
        let k = child_key(&self.network, "shaping", endpoint)?;
        self.remove(k)
    }

    pub fn put_peer(&mut self, p: &Peer) -> Result<(), GraphError> {
        validate_name("peer.name", &p.name)?;
        let k = child_key(&self.network, "peers", &p.name)?;
        self.put(k, p)
    }

    pub fn get_peer(&mut self, name: &str) -> Result<Option<Peer>, GraphError> {
        let k = child_key(&self.network, "peers", name)?;
        self.get(&k)
    }

    pub fn remove_peer(&mut self, name: &str) -> Result<Option<Peer>, GraphError> {
        let k = child_key(&self.network, "peers", name)?;
        self.remove(k)
    }

    /// A service's own record in this network on this node (what it
    /// rendered for an endpoint, its settings, …):
    /// `networks/<net>/nodes/<node>/<service>/<name>`.
    pub fn get_record<T: DeserializeOwned>(&mut self, service: &str, name: &str) -> Result<Option<T>, GraphError> {
        let k = record_key(&self.network, &self.node, service, name)?;
        self.get(&k)
    }

    pub fn put_record<T: Serialize>(&mut self, service: &str, name: &str, value: &T) -> Result<(), GraphError> {
        let k = record_key(&self.network, &self.node, service, name)?;
        self.put(k, value)
    }

    /// Removes a service record; absent is not an error.
    pub fn remove_record<T: DeserializeOwned>(&mut self, service: &str, name: &str) -> Result<Option<T>, GraphError> {
        let k = record_key(&self.network, &self.node, service, name)?;
        self.remove(k)
    }

    /// Writes what changed, all together: a key someone else moved fails
    /// the whole commit (the network lock keeps that to writers without it).
    /// A store that places documents one by one (the file store) may be
    /// stopped midway: the call's intent, recorded before, explains a
    /// partial commit to the next call.
    pub(crate) fn commit(self) -> Result<(), GraphError> {
        let changes: Vec<Change<'_>> = self
            .staged
            .iter()
            .filter_map(|(key, value)| {
                let (expected, was) = self
                    .seen
                    .get(key)
                    .map(|(r, v)| (*r, v.as_ref()))
                    .unwrap_or((None, None));
                // Unchanged keys cost nothing (each write is fsynced); the
                // network lock keeps others from changing them meanwhile.
                (value.as_ref() != was).then_some(Change {
                    key,
                    expected,
                    was,
                    value: value.as_ref(),
                })
            })
            .collect();
        Ok(self.store.commit(&changes)?)
    }
}
