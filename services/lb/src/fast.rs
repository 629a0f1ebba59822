//! The fast path of ADD and DEL: only the services that select the endpoint,
//! diffed from their records in the store; O(1) in the number of services
//! and backends elsewhere. `Ok(false)` sends the caller to the full path.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netsvc_core::cni::Result;
use netsvc_core::graph::{Endpoint, Tx};
use netsvc_core::nft::NftScript;

use crate::config::LbConf;
use crate::model::{self, Family, Rendered};
use crate::render::{self, HAIRPIN};
use crate::{SERVICE, kernel, service_record};

/// The endpoint joins the backends of every service that selects it.
pub fn add(tx: &mut Tx<'_>, conf: &LbConf, ep: &Endpoint) -> Result<bool> {
    change(tx, conf, ep, true)
}

/// The endpoint leaves the backends of every service that selected it, and
/// clients remembered for it (ClientIP affinity) are forgotten.
pub fn del(tx: &mut Tx<'_>, conf: &LbConf, ep: &Endpoint) -> Result<bool> {
    change(tx, conf, ep, false)
}

fn script(scripts: &mut BTreeMap<Family, NftScript>, f: Family) -> &mut NftScript {
    scripts.entry(f).or_insert_with(|| NftScript::new(&render::table(f)))
}

fn change(tx: &mut Tx<'_>, conf: &LbConf, ep: &Endpoint, joins: bool) -> Result<bool> {
    let mut scripts: BTreeMap<Family, NftScript> = BTreeMap::new();
    // Hairpin elements exist in the tables this network's services use.
    let families: std::collections::BTreeSet<Family> = conf.services.iter().map(|s| Family::of(s.vip())).collect();
    for &f in &families {
        let pairs = render::hairpin_elements(&model::addresses(ep, f));
        if joins {
            script(&mut scripts, f).add_elements(HAIRPIN, &pairs)?;
        } else {
            script(&mut scripts, f).delete_elements(HAIRPIN, &pairs)?;
        }
    }
    let mut updated = Vec::new();
    for svc in conf.services.iter().filter(|s| s.select.matches(ep)) {
        let Some(old) = tx.get_record::<Rendered>(SERVICE, &service_record(&svc.name))? else {
            return Ok(false);
        };
        let mine = model::addresses(ep, old.family());
        let mut backends = old.backends();
        for ip in &mine {
            if joins {
                backends.insert(*ip);
            } else {
                backends.remove(ip);
            }
        }
        if backends == old.backends() {
            continue;
        }
        let new = Rendered {
            slots: model::slot_table(svc, &old.slots, &backends),
            ..old.clone()
        };
        render::update_service(script(&mut scripts, old.family()), &old, &new)?;
        updated.push((old, new, mine));
    }
    for s in scripts.values() {
        if let Err(e) = s.apply() {
            tracing::info!(error = %e, "fast path refused; rendering the network in full");
            return Ok(false);
        }
    }
    for (old, new, mine) in &updated {
        tx.put_record(SERVICE, &service_record(&new.conf.name), new)?;
        if !joins && old.conf.affinity_timeout().is_some() {
            forget(new, mine);
        }
    }
    Ok(true)
}

/// Best effort, after the slots no longer name the backend (so no new client
/// can be remembered for it): a failure leaves entries that time out.
fn forget(r: &Rendered, gone: &[IpAddr]) {
    let run = || -> Result<()> {
        let clients = kernel::clients(r)?;
        let mut s = NftScript::new(&render::table(r.family()));
        render::forget_clients(&mut s, r, &clients, gone)?;
        s.apply()?;
        Ok(())
    };
    if let Err(e) = run() {
        tracing::warn!(service = %r.conf.name, error = %e.msg, "could not forget clients of a removed backend");
    }
}
