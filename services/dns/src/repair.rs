//! `netsvc repair` for DNS: the daemon must run and serve each network the
//! store serves on this node, with the names of the network's endpoints;
//! it is asked what it serves (its control socket's `served`) and made to
//! load the store when that differs.

use std::time::Duration;

use netsvc_core::cni::{CniError, Result};
use netsvc_core::graph::{Endpoint, Graph, Intent, Op, Tx};
use netsvc_core::node::NodeName;
use netsvc_core::reconcile::{Difference, Repair};
use netsvc_core::store::{Store, StoreHandle};

use crate::daemon::{Paths, control};
use crate::served::{self, View, Wanted};
use crate::{Dns, SERVICE, SETTINGS, Settings, recount, supervise};

/// How long the daemon is given to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

fn handle_of(store: &dyn Store) -> Result<&StoreHandle> {
    store
        .as_handle()
        .ok_or_else(|| CniError::io("netsvc-dns needs the store opened with its state dir to reach netsvc-dnsd"))
}

/// What the daemon serves for the transaction's network against what the
/// store (as the transaction sees it) wants.
fn compare(store: &StoreHandle, tx: &mut Tx<'_>) -> Result<Vec<Difference>> {
    let network = tx.network_name().to_string();
    let socket = Paths::new(store.state_dir()).control();
    let view: std::result::Result<View, String> = match control::served(&socket, &network, ASK_TIMEOUT) {
        Ok(answer) => answer,
        Err(e) => Err(format!("no answer on {}: {e}", socket.display())),
    };
    let withdrawn = view.as_ref().map(|v| v.withdrawn.clone()).unwrap_or_default();
    let wanted = match tx.get_record::<Settings>(SERVICE, SETTINGS)? {
        Some(s) => {
            // A DEL the store could not take is not to be served again.
            let endpoints: Vec<Endpoint> = tx
                .endpoints()?
                .into_iter()
                .filter(|e| e.held_by(SERVICE) && !withdrawn.contains(&e.id()))
                .collect();
            Some(Wanted {
                listen: s.served.listen,
                names: served::names(&s.served.domain, &endpoints),
            })
        }
        None => None,
    };
    Ok(served::differences(
        &network,
        wanted.as_ref(),
        view.as_ref().map_err(String::as_str),
    ))
}

impl Repair for Dns {
    fn plugin_type(&self) -> &'static str {
        SERVICE
    }

    /// Under the lock (an intent found is then a dead call's), with a dead
    /// ADD rolled back as the next call would, in a transaction never committed.
    fn diff(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let handle = handle_of(store)?;
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        session.dry_run(SERVICE, |tx, stale| {
            if stale.is_some() {
                recount(tx)?;
            }
            compare(handle, tx)
        })
    }

    fn repair(&self, store: &dyn Store, node: &NodeName, network: &str) -> Result<Vec<Difference>> {
        let handle = handle_of(store)?;
        let graph = Graph::new(store, node);
        let session = graph.lock(network)?;
        let fixed = session.intended(
            SERVICE,
            Intent::network(Op::Render),
            |tx, stale| -> Result<Option<Vec<Difference>>> {
                if stale.is_some() {
                    recount(tx)?;
                }
                let found = compare(handle, tx)?;
                Ok((!found.is_empty() || stale.is_some()).then_some(found))
            },
            // Started when it is not running; made to load the store.
            |_, found| {
                if found.is_empty() {
                    supervise::poke(handle.state_dir());
                } else {
                    supervise::ensure_synced(handle, node)?;
                }
                Ok(found)
            },
            |_| Ok(()),
        )?;
        Ok(fixed.unwrap_or_default())
    }
}
