//! The fast path of ADD and DEL: only the services that select the endpoint,
//! diffed from their records in the store; O(1) in the number of services
//! and backends elsewhere. The new records are staged in the call's
//! transaction and the kernel change is returned, to apply once they are
//! committed; `Ok(None)` sends the caller to the full path.
//!
//! What changes is written over nf_tables netlink ([`Batch`]), one
//! transaction per family: the endpoint's hairpin elements, the slots that
//! differ, the port chains' rules when the backend count is in them, and
//! the frontends' place in the reject set when backends come or go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netsvc_core::cni::Result;
use netsvc_core::graph::{Endpoint, Tx};
use netsvc_core::nft::{Batch, ElementOp, NftError};

use crate::config::LbConf;
use crate::model::{self, Family, Rendered};
use crate::render::{self, EMPTY, HAIRPIN};
use crate::{SERVICE, kernel, service_record};

/// What the fast path programs once its records are committed: one batch
/// per family, then the clients remembered for removed backends forgotten.
pub struct FastPlan {
    batches: BTreeMap<Family, Batch>,
    forget: Vec<(Rendered, Vec<IpAddr>)>,
}

impl FastPlan {
    /// Applies the batches; an error sends the caller to the full path.
    pub fn apply(self) -> std::result::Result<(), NftError> {
        for b in self.batches.values() {
            b.apply()?;
        }
        for (r, gone) in &self.forget {
            forget(r, gone);
        }
        Ok(())
    }
}

/// The endpoint joins the backends of every service that selects it.
pub fn add(tx: &mut Tx<'_>, conf: &LbConf, ep: &Endpoint) -> Result<Option<FastPlan>> {
    change(tx, conf, ep, ElementOp::Add)
}

/// The endpoint leaves the backends of every service that selected it, and
/// clients remembered for it (ClientIP affinity) are forgotten.
pub fn del(tx: &mut Tx<'_>, conf: &LbConf, ep: &Endpoint) -> Result<Option<FastPlan>> {
    change(tx, conf, ep, ElementOp::Delete)
}

fn batch(batches: &mut BTreeMap<Family, Batch>, f: Family) -> &mut Batch {
    batches.entry(f).or_insert_with(|| Batch::new(&render::table(f)))
}

fn change(tx: &mut Tx<'_>, conf: &LbConf, ep: &Endpoint, op: ElementOp) -> Result<Option<FastPlan>> {
    let mut batches: BTreeMap<Family, Batch> = BTreeMap::new();
    // Hairpin elements exist in the tables this network's services use; a
    // removal is idempotent (a DEL may repeat one that ran).
    let hairpin_op = if op == ElementOp::Add { op } else { ElementOp::Destroy };
    let families: BTreeSet<Family> = conf.services.iter().map(|s| Family::of(s.vip())).collect();
    for &f in &families {
        for key in model::hairpin_keys(&model::addresses(ep, f)) {
            batch(&mut batches, f).element(hairpin_op, HAIRPIN, key, None)?;
        }
    }
    let mut updated = Vec::new();
    for svc in conf.services.iter().filter(|s| s.select.matches(ep)) {
        let Some(old) = tx.get_record::<Rendered>(SERVICE, &service_record(&svc.name))? else {
            return Ok(None);
        };
        let mine = model::addresses(ep, old.family());
        let mut backends = old.backends();
        for ip in &mine {
            match op {
                ElementOp::Add => backends.insert(*ip),
                ElementOp::Delete | ElementOp::Destroy => backends.remove(ip),
            };
        }
        if backends == old.backends() {
            continue;
        }
        let new = Rendered {
            slots: model::slot_table(svc, &old.slots, &backends),
            ..old.clone()
        };
        update_service(batch(&mut batches, old.family()), &old, &new)?;
        updated.push((old, new, mine));
    }
    let mut forget = Vec::new();
    for (old, new, mine) in updated {
        tx.put_record(SERVICE, &service_record(&new.conf.name), &new)?;
        if op != ElementOp::Add && old.conf.affinity_timeout().is_some() {
            forget.push((new, mine));
        }
    }
    Ok(Some(FastPlan { batches, forget }))
}

/// From `old` to `new` of the same service (same prefix): the slot elements
/// that differ, the port chains when their rules differ, and the frontends'
/// place in the reject set when backends come or go.
fn update_service(b: &mut Batch, old: &Rendered, new: &Rendered) -> std::result::Result<(), NftError> {
    let have: BTreeMap<usize, IpAddr> = old.slots.iter().copied().enumerate().collect();
    let want: BTreeMap<usize, IpAddr> = new.slots.iter().copied().enumerate().collect();
    let (stale, fresh) = model::slot_changes(&have, &want);
    for i in stale {
        let (slot, backend) = model::slot_element(i, have[&i]);
        b.element(ElementOp::Delete, &new.slots_map(), slot, Some(backend))?;
    }
    for (i, a) in fresh {
        let (slot, backend) = model::slot_element(i, a);
        b.element(ElementOp::Add, &new.slots_map(), slot, Some(backend))?;
    }
    // Growing, the new rules go in front of the old ones, which they shadow
    // (`dnat` ends the chain): ADD deletes nothing, and deletions cost a
    // kernel RCU grace period when the socket closes. Anything else (DEL,
    // or the first backend) rewrites the chain, which drops shadowed rules.
    let grows = !old.slots.is_empty() && new.slots.len() > old.slots.len();
    for ((chain, before), (_, after)) in old.port_rules().iter().zip(new.port_rules()) {
        if *before == after {
            continue;
        }
        if grows {
            for rule in after.iter().rev() {
                b.insert_rule(chain, rule.netlink())?;
            }
        } else {
            b.flush_chain(chain)?;
            for rule in &after {
                b.add_rule(chain, rule.netlink())?;
            }
        }
    }
    if old.slots.is_empty() != new.slots.is_empty() {
        let op = if new.slots.is_empty() {
            ElementOp::Add
        } else {
            ElementOp::Delete
        };
        for (key, _) in new.frontends() {
            b.element(op, EMPTY, key, None)?;
        }
    }
    Ok(())
}

/// Best effort, after the slots no longer name the backend (so no new client
/// can be remembered for it): a failure leaves entries that time out.
fn forget(r: &Rendered, gone: &[IpAddr]) {
    let run = || -> Result<()> {
        let clients = kernel::clients(r)?;
        let mut b = Batch::new(&render::table(r.family()));
        render::forget_clients(&mut b, r, &clients, gone)?;
        b.apply()?;
        Ok(())
    };
    if let Err(e) = run() {
        tracing::warn!(service = %r.conf.name, error = %e.msg, "could not forget clients of a removed backend");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_rendered as rendered;
    use serde_json::json;

    fn text(old: &Rendered, new: &Rendered) -> String {
        let mut b = Batch::new(&render::table(Family::V4));
        update_service(&mut b, old, new).unwrap();
        b.text()
    }

    #[test]
    fn adding_a_backend_touches_one_slot_and_the_rules_naming_the_count() {
        insta::assert_snapshot!(text(
            &rendered(json!({}), &["10.0.0.2"]),
            &rendered(json!({}), &["10.0.0.2", "10.0.0.3"]),
        ));
    }

    #[test]
    fn the_last_backend_leaving_empties_the_chains_and_rejects() {
        insta::assert_snapshot!(text(&rendered(json!({}), &["10.0.0.2"]), &rendered(json!({}), &[])));
    }

    #[test]
    fn maglev_changes_only_moved_slots() {
        let conf = rendered(json!({"algorithm": "maglev"}), &[]).conf;
        let ten: BTreeSet<IpAddr> = (2..12).map(|i| format!("10.0.0.{i}").parse().unwrap()).collect();
        let mut nine = ten.clone();
        nine.remove(&"10.0.0.5".parse().unwrap());
        let old = Rendered {
            conf: conf.clone(),
            slots: model::slot_table(&conf, &[], &ten),
            ..rendered(json!({}), &[])
        };
        let new = Rendered {
            slots: model::slot_table(&conf, &old.slots, &nine),
            ..old.clone()
        };
        let moved = old.slots.iter().zip(&new.slots).filter(|(a, b)| a != b).count();
        assert!(moved <= 8191 * 15 / 100, "{moved} slots moved");
        // Slot deletes, then slot adds (in requests of at most 512), both of
        // exactly the moved slots; the rules stay.
        let text = text(&old, &new);
        let lines: Vec<&str> = text.lines().collect();
        let deletes = lines.iter().take_while(|l| l.starts_with("delete element")).count();
        assert!(
            deletes > 0 && lines[deletes..].iter().all(|l| l.starts_with("add element")),
            "{text}"
        );
        let count = |ls: &[&str]| ls.iter().map(|l| l.matches(" : ").count()).sum::<usize>();
        assert_eq!(count(&lines[..deletes]), moved);
        assert_eq!(count(&lines[deletes..]), moved);
    }
}
