//! The netsvc services this build knows: one list, [`ALL`], of the value
//! each service crate exports about itself. Everything per-service in the
//! composer (catalog, validation, schemas, reconcile, repair, status, the
//! agent) iterates over it; adding a service is one line here.

use netsvc_core::cni::{CniError, NetConf, NetConfList};
use netsvc_core::node::NodeName;
use netsvc_core::reconcile::{Reconcile, Repair, Summary};
use netsvc_core::service::Service;
use serde_json::{Map, Value};

/// Every netsvc service, in the order the composer reports them.
pub static ALL: [&Service; 5] = [
    &netsvc_firewall::DESCRIPTION,
    &netsvc_lb::DESCRIPTION,
    &netsvc_dns::DESCRIPTION,
    &netsvc_qos::DESCRIPTION,
    &netsvc_vpn::DESCRIPTION,
];

/// The service of a plugin type (`None`: not one of ours).
pub fn get(plugin_type: &str) -> Option<&'static Service> {
    ALL.iter().copied().find(|s| s.name == plugin_type)
}

/// netsvc's plugin types.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|s| s.name)
}

/// The reconcile hook of a netsvc plugin type (`None`: not one of ours, or
/// one without a hook).
pub fn reconciler(plugin_type: &str) -> Option<&'static dyn Reconcile> {
    get(plugin_type)?.reconcile.map(|r| r as &dyn Reconcile)
}

/// Every service's reconciler from the store alone (`netsvc repair`, the agent).
pub fn repairers() -> impl Iterator<Item = &'static dyn Repair> {
    ALL.iter().map(|s| s.repair as &dyn Repair)
}

/// Re-renders every netsvc service of `list` that has a reconcile hook, in
/// chain order, on `node`: each plugin's index, type and outcome.
pub fn reconcile_all<'l>(list: &'l NetConfList, node: &NodeName) -> Vec<(usize, &'l str, Result<Summary, CniError>)> {
    (0..list.plugins.len())
        .filter_map(|i| {
            let service = reconciler(list.plugin_type(i))?;
            let raw = crate::runtime::plugin_conf(list, i, &list.cni_version, &Default::default(), None);
            let outcome = NetConf::from_value(&Value::Object(raw)).and_then(|conf| service.reconcile(&conf, node));
            Some((i, list.plugin_type(i), outcome))
        })
        .collect()
}

/// The plugin of a netsvc plugin type (`None`: not one of ours), for calls
/// the agent replays.
pub fn plugin(plugin_type: &str) -> Option<&'static dyn netsvc_core::cni::Plugin> {
    get(plugin_type).map(|s| s.plugin as &dyn netsvc_core::cni::Plugin)
}

/// Checks service `i` of a spec with the service's own config type, so a
/// typo is caught before any container starts. Errors name `services[i]`.
pub fn validate_service(i: usize, service: &Map<String, Value>) -> Result<(), CniError> {
    let kind = service.get("type").and_then(Value::as_str).unwrap_or("");
    if get(kind).is_none() {
        return Err(CniError::invalid_config(
            &format!("services[{i}].type"),
            format!(
                "{kind:?} is not a netsvc service (known: {})",
                names().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    check_service(service).map_err(|e| CniError {
        msg: e.msg.replacen("field ", &format!("field services[{i}]."), 1),
        ..e
    })
}

/// Checks a plugin's config with its service's own type; any other plugin
/// type passes (it is not ours to judge).
pub fn check_service(plugin: &Map<String, Value>) -> Result<(), CniError> {
    match get(plugin.get("type").and_then(Value::as_str).unwrap_or("")) {
        Some(service) => (service.validate)(&Value::Object(plugin.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_is_listed_once_under_its_plugins_type() {
        let mut names: Vec<&str> = names().collect();
        for s in ALL {
            assert_eq!(s.descriptor().plugin_type, s.name);
            assert_eq!(s.repair.plugin_type(), s.name);
            if let Some(r) = s.reconcile {
                assert_eq!(r.plugin_type(), s.name);
            }
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
