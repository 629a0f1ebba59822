//! The full path: every service of the network ensured against the kernel,
//! services no longer configured removed, and a table nobody uses dropped.
//! Planned under a table-wide lock (networks share the tables), which the
//! plan holds until it is applied, after the call's records are committed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netsvc_core::cni::{CniError, Result};
use netsvc_core::graph::{Endpoint, LOCK_TIMEOUT, Service, ServicePort, Tx};
use netsvc_core::nft::{Batch, Datum, ElementOp};
use netsvc_core::store::{LockGuard, Store};

use crate::config::LbConf;
use crate::model::{self, Family, Rendered};
use crate::render::{self, HAIRPIN};
use crate::{CONF, SERVICE, SETTINGS, Settings, TABLE_LOCK, digest, kernel, service_record};

/// A full render, planned: one batch per family, and the tables' lock.
pub struct FullPlan {
    batches: Vec<Batch>,
    endpoints: usize,
    changes: usize,
    /// What the scripts fix, object by object.
    pub differences: Vec<netsvc_core::reconcile::Difference>,
    _table: LockGuard,
}

impl FullPlan {
    /// Applies the batches; returns (endpoints, services changed).
    pub fn apply(self) -> Result<(usize, usize)> {
        for batch in &self.batches {
            batch.apply()?;
        }
        Ok((self.endpoints, self.changes))
    }
}

/// Plans the network's render from the graph, staging its records in `tx`;
/// `gone`: addresses of endpoints that just left (their hairpin elements go).
pub fn plan(store: &dyn Store, tx: &mut Tx<'_>, conf: &LbConf, gone: &[IpAddr]) -> Result<FullPlan> {
    let table = store.lock_network(TABLE_LOCK, LOCK_TIMEOUT)?;
    let network = tx.network_name().to_string();
    // Backends on every node; the services live on this node while it holds one of them.
    let endpoints: Vec<Endpoint> = tx.endpoints()?.into_iter().filter(|e| e.held_by(SERVICE)).collect();
    // Only this node's containers reach a VIP through this node's NAT: the
    // hairpin set holds theirs alone.
    let residents: Vec<&Endpoint> = endpoints.iter().filter(|e| e.is_on(tx.node())).collect();
    let local = residents.len();
    let before: Option<LbConf> = tx.get_record(SERVICE, CONF)?;

    let mut names: BTreeSet<String> = conf.services.iter().map(|s| s.name.clone()).collect();
    names.extend(before.iter().flat_map(|c| c.services.iter().map(|s| s.name.clone())));
    let mut old: BTreeMap<String, Rendered> = BTreeMap::new();
    for name in &names {
        if let Some(r) = tx.get_record::<Rendered>(SERVICE, &service_record(name))? {
            old.insert(name.clone(), r);
        }
    }
    let desired: Vec<Rendered> = if local == 0 {
        Vec::new()
    } else {
        conf.services
            .iter()
            .map(|svc| {
                let prefix = model::prefix(&network, svc);
                let previous = old
                    .get(&svc.name)
                    .filter(|o| o.prefix == prefix)
                    .map(|o| o.slots.clone());
                let backends = model::backends(svc, &endpoints);
                Rendered {
                    slots: model::slot_table(svc, &previous.unwrap_or_default(), &backends),
                    conf: svc.clone(),
                    prefix,
                }
            })
            .collect()
    };
    let kept: BTreeSet<&str> = desired.iter().map(|d| d.prefix.as_str()).collect();
    let removed: Vec<&Rendered> = old.values().filter(|o| !kept.contains(o.prefix.as_str())).collect();

    let mut currents = BTreeMap::new();
    for f in Family::ALL {
        currents.insert(f, kernel::read(f)?);
    }
    let ours: BTreeSet<&str> = old
        .values()
        .map(|o| o.prefix.as_str())
        .chain(kept.iter().copied())
        .collect();
    claimed_elsewhere(conf, &desired, &currents, &ours)?;

    let mut changes = 0;
    let mut batches = Vec::new();
    let mut differences = Vec::new();
    for f in Family::ALL {
        let mine: Vec<&Rendered> = desired.iter().filter(|d| d.family() == f).collect();
        let theirs_gone: Vec<&Rendered> = removed.iter().copied().filter(|o| o.family() == f).collect();
        let current = currents.remove(&f).flatten();
        differences.extend(crate::drift::differences(
            &network,
            f,
            &mine,
            &theirs_gone,
            current.as_ref(),
        ));
        let Some(batch) = family_batch(f, &mine, &theirs_gone, current.as_ref(), &residents, gone)? else {
            continue;
        };
        batches.push(batch);
        changes += drifted(&mine, &theirs_gone, current.as_ref());
    }
    let held = endpoints.len();

    for o in &removed {
        tx.remove_record::<Rendered>(SERVICE, &service_record(&o.conf.name))?;
        // The graph's service is the network's: it stays while other nodes serve it.
        let configured = conf.services.iter().any(|s| s.name == o.conf.name);
        if held == 0 || !configured {
            tx.remove_service(&o.conf.name)?;
        }
    }
    for d in &desired {
        tx.put_record(SERVICE, &service_record(&d.conf.name), d)?;
        tx.put_service(&graph_service(d))?;
    }
    if local == 0 {
        tx.remove_record::<Settings>(SERVICE, SETTINGS)?;
        tx.remove_record::<LbConf>(SERVICE, CONF)?;
        if tx.endpoints()?.is_empty() {
            tx.remove_network()?;
        }
    } else {
        let s = Settings {
            digest: digest(conf),
            endpoints: local as u64,
        };
        tx.put_record(SERVICE, SETTINGS, &s)?;
        if before.as_ref() != Some(conf) {
            tx.put_record(SERVICE, CONF, conf)?;
        }
    }
    Ok(FullPlan {
        batches,
        endpoints: held,
        changes,
        differences,
        _table: table,
    })
}

/// A frontend another network's service already holds is a config error
/// (the kernel would refuse the second dispatch entry anyway, less clearly).
fn claimed_elsewhere(
    conf: &LbConf,
    desired: &[Rendered],
    currents: &BTreeMap<Family, Option<kernel::Current>>,
    ours: &BTreeSet<&str>,
) -> Result<()> {
    for d in desired {
        let Some(current) = currents.get(&d.family()).and_then(Option::as_ref) else {
            continue;
        };
        for (p, (key, _)) in d.frontends().iter().enumerate() {
            let Some(target) = current.frontend_target(&key.to_string()) else {
                continue;
            };
            if !ours.iter().any(|prefix| target.starts_with(&format!("{prefix}_"))) {
                let i = conf.services.iter().position(|s| s.name == d.conf.name).unwrap_or(0);
                let port = &d.conf.ports[p];
                return Err(CniError::invalid_config(
                    &format!("services[{i}].ports[{p}]"),
                    format!(
                        "{}:{}/{} is already a service port of another network (service {:?})",
                        d.conf.vip,
                        port.port,
                        port.protocol.as_str(),
                        d.conf.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// One family's batch; `None` when the table neither exists nor is needed.
fn family_batch(
    f: Family,
    mine: &[&Rendered],
    removed: &[&Rendered],
    current: Option<&kernel::Current>,
    residents: &[&Endpoint],
    gone: &[IpAddr],
) -> Result<Option<Batch>> {
    let table = render::table(f);
    if mine.is_empty() {
        let Some(current) = current else {
            return Ok(None);
        };
        // Dropped outright when no other network has a service in it.
        let ours: BTreeSet<String> = removed
            .iter()
            .flat_map(|r| r.frontends())
            .map(|(k, _)| k.to_string())
            .collect();
        if current.frontends().is_subset(&ours) {
            let mut b = Batch::new(&table);
            b.destroy_table();
            return Ok(Some(b));
        }
    }
    let mut s = render::skeleton(f)?;
    for r in removed {
        render::remove_service(&mut s, r)?;
    }
    for r in mine {
        let slots = current.and_then(|c| c.slots(&r.slots_map()));
        render::ensure_service(&mut s, r, slots.as_ref())?;
    }
    for pair in residents
        .iter()
        .flat_map(|e| model::hairpin_keys(&model::addresses(e, f)))
    {
        s.element(ElementOp::Add, HAIRPIN, pair, None)?;
    }
    // An address a resident holds again keeps its element.
    let held: Vec<IpAddr> = residents.iter().flat_map(|e| model::addresses(e, f)).collect();
    let left: Vec<IpAddr> = gone
        .iter()
        .copied()
        .filter(|a| Family::of(*a) == f && !held.contains(a))
        .collect();
    for stale in model::hairpin_keys(&left) {
        s.element(ElementOp::Destroy, HAIRPIN, stale, None::<Datum>)?;
    }
    Ok(Some(s))
}

/// How many services this render changes: desired ones the kernel lacks or
/// holds differently, and removed ones still there.
fn drifted(mine: &[&Rendered], removed: &[&Rendered], current: Option<&kernel::Current>) -> usize {
    let Some(current) = current else {
        return mine.len();
    };
    let differs = |r: &&&Rendered| {
        let want: BTreeMap<usize, IpAddr> = r.slots.iter().copied().enumerate().collect();
        current.slots(&r.slots_map()) != Some(want)
            || r.port_rules().iter().any(|(chain, _)| !current.chains.contains(chain))
    };
    let present = |r: &&&Rendered| current.maps.contains_key(&r.slots_map());
    mine.iter().filter(differs).count() + removed.iter().filter(present).count()
}

/// The graph's view of a service (what netsvc-dns serves by name).
fn graph_service(r: &Rendered) -> Service {
    Service {
        name: r.conf.name.clone(),
        vip: Some(r.conf.vip()),
        ports: r
            .conf
            .ports
            .iter()
            .map(|p| ServicePort {
                port: p.port(),
                target_port: Some(p.target()),
                protocol: p.protocol,
            })
            .collect(),
        selector: r.conf.select.clone(),
    }
}
