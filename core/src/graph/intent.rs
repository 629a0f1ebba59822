//! The order of one plugin call (DESIGN.md, "One plugin call"), written once.
//!
//! Under the network's lock a call records an [`Intent`] naming what it is
//! about to program, commits its graph change, *then* programs the kernel,
//! then clears the intent. So the kernel never holds a permission (an
//! allow-set member, a backend slot) that the store does not know about.
//!
//! The intent is about this node's kernel, which only this node's processes
//! touch, under this node's lock for the network: so it is kept in the lock
//! file itself (a note, one per service), where recording and clearing it
//! cost a system call each, not a store commit.
//!
//! A call that dies after recording its intent leaves it. The next call of
//! the same service on the network (DEL, GC, `netsvc repair` and the agent
//! alike) finds it first: a dead ADD is rolled back in the graph (the
//! runtime saw it fail and will never use the attachment), a dead DEL or
//! render stands, and the service renders the network in full from the
//! store, which removes whatever the dead call left in the kernel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Endpoint, Graph, GraphError, Tx};
use crate::cni::CniError;
use crate::failpoint;
use crate::inet::IpNet;
use crate::store::{LockGuard, StoreError};

/// What a call was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Del,
    Gc,
    /// A whole network rendered again (`netsvc apply`, `netsvc repair`, the agent).
    Render,
}

impl Op {
    pub fn word(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Del => "del",
            Op::Gc => "gc",
            Op::Render => "render",
        }
    }
}

/// What a call is about to program on this node, committed before it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Intent {
    pub op: Op,
    /// The attachment an ADD or DEL is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The attachment's addresses: what whoever finishes the call takes
    /// out of the kernel when the graph no longer has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpNet>,
    /// The process that recorded it (for the log of whoever finishes it).
    pub pid: u32,
}

impl Intent {
    /// An ADD or DEL of one attachment.
    pub fn attachment(op: Op, container_id: &str, ifname: &str) -> Intent {
        Intent {
            op,
            container_id: Some(container_id.to_string()),
            ifname: Some(ifname.to_string()),
            addresses: Vec::new(),
            pid: std::process::id(),
        }
    }

    /// The ADD of `ep`, with its addresses (the graph does not have them yet).
    pub fn adding(ep: &Endpoint) -> Intent {
        Intent {
            addresses: ep.ips.clone(),
            ..Intent::attachment(Op::Add, &ep.container_id, &ep.ifname)
        }
    }

    /// The attachment (container id, ifname) an ADD or DEL is about.
    pub fn target(&self) -> Option<(&str, &str)> {
        Some((self.container_id.as_deref()?, self.ifname.as_deref()?))
    }

    /// The attachment of an ADD: what the next call rolls back when this
    /// intent is a dead call's.
    pub fn added(&self) -> Option<(&str, &str)> {
        self.target().filter(|_| self.op == Op::Add)
    }

    /// The addresses as IPs.
    pub fn ips(&self) -> Vec<std::net::IpAddr> {
        self.addresses.iter().map(|n| n.addr).collect()
    }

    /// A change of the whole network (GC, a render).
    pub fn network(op: Op) -> Intent {
        Intent {
            op,
            container_id: None,
            ifname: None,
            addresses: Vec::new(),
            pid: std::process::id(),
        }
    }
}

/// A network held locked across the steps of one call.
pub struct Session<'g, 's> {
    graph: &'g Graph<'s>,
    network: String,
    lock: LockGuard,
}

impl<'s> Graph<'s> {
    /// Takes `network`'s lock for a call of several steps (released on drop).
    pub fn lock(&self, network: &str) -> Result<Session<'_, 's>, GraphError> {
        super::validate_name("network", network)?;
        let lock = self.store().lock_network(network, self.lock_timeout())?;
        Ok(Session {
            graph: self,
            network: network.to_string(),
            lock,
        })
    }
}

impl<'s> Session<'_, 's> {
    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn graph(&self) -> &Graph<'s> {
        self.graph
    }

    /// One transaction under the held lock: `f`'s writes are committed
    /// together, or none when `f` fails.
    pub fn transaction<T, E: From<GraphError>>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        let mut tx = self.graph.tx(&self.network);
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// The intent a call of `service` left unfinished, if any.
    pub fn intent(&self, service: &str) -> Result<Option<Intent>, GraphError> {
        Ok(intent_of(&mut read_notes(&self.lock.note()?), service))
    }

    /// Records `intent` as `service`'s (`None`: clears it), keeping the
    /// other services' intents.
    pub fn record_intent(&self, service: &str, intent: Option<&Intent>) -> Result<(), GraphError> {
        let mut notes = read_notes(&self.lock.note()?);
        match intent {
            Some(i) => notes.insert(service.to_string(), serde_json::to_value(i).map_err(StoreError::from)?),
            None => notes.remove(service),
        };
        let body = if notes.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&notes).map_err(StoreError::from)?
        };
        Ok(self.lock.set_note(&body)?)
    }

    /// Removes `service`'s intent: what it named is done (or was done
    /// another way, such as a DEL the kernel took without the store).
    pub fn clear_intent(&self, service: &str) -> Result<(), GraphError> {
        self.record_intent(service, None)
    }

    /// Runs `f` on a transaction that is never committed: the graph as it
    /// would be, for a kernel change the store cannot record (a DEL on a
    /// full disk takes what it removes out of the kernel all the same).
    pub fn uncommitted<T, E>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        f(&mut self.graph.tx(&self.network))
    }

    /// What a call of `service` would plan, changing nothing (`netsvc
    /// repair --dry-run`): `stage` runs on a transaction never committed,
    /// given the intent a dead call left, rolled back as the next call
    /// would roll it back.
    pub fn dry_run<T, E: From<GraphError>>(
        &self,
        service: &str,
        stage: impl FnOnce(&mut Tx<'_>, Option<&Intent>) -> Result<T, E>,
    ) -> Result<T, E> {
        let stale = self.intent(service)?;
        self.uncommitted(|tx| {
            roll_back(tx, stale.as_ref(), service)?;
            stage(tx, stale.as_ref())
        })
    }

    /// DEL's last resort, when the store could not take the DEL (a full
    /// disk): `unprogram` takes the attachment out of the kernel as the
    /// graph would be without it, staging that graph in the transaction it
    /// is given, which is then committed alone (a removal may fit where the
    /// whole DEL did not). Taking out of the kernel first is safe: it only
    /// takes permissions away. DEL succeeds once the store has no record of
    /// the attachment; otherwise it fails with `failed`, and the runtime
    /// retries.
    pub fn del_without_intent<E>(
        &self,
        service: &str,
        failed: E,
        unprogram: impl FnOnce(&mut Tx<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<GraphError> + std::fmt::Display,
    {
        tracing::warn!(service, network = %self.network, error = %failed,
            "DEL failed; taking the attachment out of the kernel without the intent");
        let mut tx = self.graph.tx(&self.network);
        if let Err(e) = unprogram(&mut tx) {
            tracing::warn!(service, error = %e, "could not take the attachment out of the kernel");
            return Err(failed);
        }
        match tx.commit() {
            Ok(()) => {
                // Done, though not the usual way: an intent a call left is finished too.
                let _ = self.clear_intent(service);
                Ok(())
            }
            Err(_) => Err(failed),
        }
    }

    /// Steps 3 to 5 of a call of `service`. `stage` changes the graph,
    /// given the intent a dead call left (already rolled back in the
    /// graph), and says what to program (`None`: nothing, and no intent is
    /// recorded). `intent` is recorded, then `stage`'s changes are
    /// committed; then `program` programs the kernel and the intent is
    /// cleared. When programming or clearing fails, `undo` runs (an ADD
    /// takes its attachment out again) and the error is returned; if `undo`
    /// fails too, the intent stays for the next call to finish.
    pub fn intended<P, T, E>(
        &self,
        service: &str,
        mut intent: Intent,
        stage: impl FnOnce(&mut Tx<'_>, Option<&Intent>) -> Result<Option<P>, E>,
        program: impl FnOnce(&Self, P) -> Result<T, E>,
        undo: impl FnOnce(&Self) -> Result<(), E>,
    ) -> Result<Option<T>, E>
    where
        E: From<GraphError> + From<CniError> + std::fmt::Display,
    {
        let op = intent.op.word();
        let point = |step: &str| format!("{service}/{op}/{step}");
        let stale = self.intent(service)?;
        if let Some(s) = &stale {
            tracing::warn!(service, network = %self.network, op = s.op.word(), pid = s.pid,
                container = ?s.container_id, "finishing what a call that died left");
            // Committed alone, before this call's intent takes the dead one's place.
            if s.added().is_some() {
                self.transaction(|tx| roll_back(tx, stale.as_ref(), service))?;
            }
        }
        let mut tx = self.graph.tx(&self.network);
        // A DEL's addresses are the graph's, read before it detaches them.
        if let (Some((id, ifname)), true) = (intent.target(), intent.addresses.is_empty())
            && let Some(ep) = tx.get_endpoint(id, ifname)?
        {
            intent.addresses = ep.ips;
        }
        // What a dead call left to clean is carried on, should this one die too.
        for a in stale.iter().flat_map(|s| &s.addresses) {
            if !intent.addresses.contains(a) {
                intent.addresses.push(*a);
            }
        }
        let Some(plan) = stage(&mut tx, stale.as_ref())? else {
            tx.commit()?;
            if stale.is_some() {
                self.clear_intent(service)?;
            }
            return Ok(None);
        };
        self.record_intent(service, Some(&intent))?;
        if let Err(e) = tx.commit() {
            // Nothing was programmed: the intent is the dead call's again.
            if let Err(r) = self.record_intent(service, stale.as_ref()) {
                tracing::warn!(service, error = %r, "could not put back the intent a failed commit replaced");
            }
            return Err(e.into());
        }
        let finish = || -> Result<T, E> {
            failpoint::hit(&point("staged"))?;
            let out = program(self, plan)?;
            failpoint::hit(&point("programmed"))?;
            self.clear_intent(service)?;
            Ok(out)
        };
        finish().map(Some).inspect_err(|_| {
            if let Err(u) = undo(self) {
                tracing::warn!(service, network = %self.network, error = %u,
                    "could not undo a failed call; its intent stays for the next call");
            }
        })
    }
}

/// The intents in a lock file's note, by service, as JSON. A note that is
/// not a JSON object (it cannot be torn, see [`LockGuard::set_note`]; only
/// a hand could make it so) reads as empty, with a warning.
fn read_notes(note: &[u8]) -> BTreeMap<String, serde_json::Value> {
    if note.is_empty() {
        return BTreeMap::new();
    }
    match serde_json::Deserializer::from_slice(note).into_iter().next() {
        Some(Ok(notes)) => notes,
        other => {
            tracing::warn!(error = ?other.and_then(Result::err), "the intent note in a network's lock file does not read; ignoring it");
            BTreeMap::new()
        }
    }
}

/// `service`'s intent in `notes`. One that does not decode (written by
/// another version) is taken as an unfinished render: the service renders
/// its network in full, which finishes whatever it was.
fn intent_of(notes: &mut BTreeMap<String, serde_json::Value>, service: &str) -> Option<Intent> {
    let value = notes.remove(service)?;
    Some(serde_json::from_value(value).unwrap_or_else(|e| {
        tracing::warn!(service, error = %e, "an intent that does not decode; rendering the network again");
        Intent {
            pid: 0,
            ..Intent::network(Op::Render)
        }
    }))
}

/// Takes a dead ADD's attachment out of the graph again.
fn roll_back(tx: &mut Tx<'_>, stale: Option<&Intent>, service: &str) -> Result<(), GraphError> {
    if let Some((id, ifname)) = stale.and_then(Intent::added) {
        tx.detach_endpoint(id, ifname, service)?;
    }
    Ok(())
}

/// The intent a dead call of `service` left on `network`, if any (what
/// `netsvc status` and CHECK report), read without the lock.
pub fn pending(graph: &Graph<'_>, network: &str, service: &str) -> Result<Option<Intent>, GraphError> {
    super::validate_name("network", network)?;
    Ok(intent_of(
        &mut read_notes(&graph.store().network_note(network)?),
        service,
    ))
}

/// CHECK's question for every service: code 120 when a call of `service`
/// on `network` died before it finished.
pub fn check_finished(graph: &Graph<'_>, network: &str, service: &str) -> Result<(), CniError> {
    match pending(graph, network, service)? {
        Some(i) => Err(CniError::state_missing(
            service,
            format!(
                "a {} call (pid {}) died before it finished; the next call or `netsvc repair` finishes it",
                i.op.word(),
                i.pid
            ),
        )),
        None => Ok(()),
    }
}
