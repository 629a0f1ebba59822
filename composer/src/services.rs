//! The netsvc services this build knows, by plugin type.

use netsvc_core::cni::{CniError, NetConf, NetConfList};
use netsvc_core::reconcile::{Reconcile, Repair, Summary};
use serde_json::{Map, Value};

/// The reconcile hook of a netsvc plugin type (`None`: not one of ours).
pub fn reconciler(plugin_type: &str) -> Option<Box<dyn Reconcile>> {
    match plugin_type {
        netsvc_firewall::SERVICE => Some(Box::new(netsvc_firewall::Firewall)),
        netsvc_lb::SERVICE => Some(Box::new(netsvc_lb::Lb)),
        netsvc_qos::SERVICE => Some(Box::new(netsvc_qos::Qos)),
        _ => None,
    }
}

/// Every service's reconciler from the store alone (`netsvc repair`, the agent).
pub fn repairers() -> Vec<Box<dyn Repair>> {
    vec![
        Box::new(netsvc_firewall::Firewall),
        Box::new(netsvc_lb::Lb),
        Box::new(netsvc_qos::Qos),
        Box::new(netsvc_dns::Dns),
        Box::new(netsvc_vpn::Vpn),
    ]
}

/// Re-renders every netsvc service of `list` that has a reconcile hook, in
/// chain order: each plugin's index, type and outcome.
pub fn reconcile_all(list: &NetConfList) -> Vec<(usize, &str, Result<Summary, CniError>)> {
    (0..list.plugins.len())
        .filter_map(|i| {
            let service = reconciler(list.plugin_type(i))?;
            let raw = crate::runtime::plugin_conf(list, i, &list.cni_version, &Default::default(), None);
            let outcome = NetConf::from_value(&Value::Object(raw)).and_then(|conf| service.reconcile(&conf));
            Some((i, list.plugin_type(i), outcome))
        })
        .collect()
}

/// The plugin of a netsvc plugin type (`None`: not one of ours), for calls
/// the agent replays.
pub fn plugin(plugin_type: &str) -> Option<Box<dyn netsvc_core::cni::Plugin>> {
    match plugin_type {
        netsvc_firewall::SERVICE => Some(Box::new(netsvc_firewall::Firewall)),
        netsvc_lb::SERVICE => Some(Box::new(netsvc_lb::Lb)),
        netsvc_qos::SERVICE => Some(Box::new(netsvc_qos::Qos)),
        netsvc_dns::SERVICE => Some(Box::new(netsvc_dns::Dns)),
        netsvc_vpn::SERVICE => Some(Box::new(netsvc_vpn::Vpn)),
        _ => None,
    }
}

/// Checks service `i` of a spec with the service's own config type, so a
/// typo is caught before any container starts. Errors name `services[i]`.
pub fn validate_service(i: usize, service: &Map<String, Value>) -> Result<(), CniError> {
    let kind = service.get("type").and_then(Value::as_str).unwrap_or("");
    if !KNOWN.contains(&kind) {
        return Err(CniError::invalid_config(
            &format!("services[{i}].type"),
            format!("{kind:?} is not a netsvc service (known: {})", KNOWN.join(", ")),
        ));
    }
    check_service(service).map_err(|e| CniError {
        msg: e.msg.replacen("field ", &format!("field services[{i}]."), 1),
        ..e
    })
}

/// netsvc's plugin types.
pub const KNOWN: [&str; 5] = [
    netsvc_firewall::SERVICE,
    netsvc_lb::SERVICE,
    netsvc_dns::SERVICE,
    netsvc_qos::SERVICE,
    netsvc_vpn::SERVICE,
];

/// Checks a plugin's config with its service's own type; any other plugin
/// type passes (it is not ours to judge).
pub fn check_service(plugin: &Map<String, Value>) -> Result<(), CniError> {
    let v = Value::Object(plugin.clone());
    match plugin.get("type").and_then(Value::as_str).unwrap_or("") {
        netsvc_firewall::SERVICE => netsvc_firewall::config::FirewallConf::from_value(&v).map(drop),
        netsvc_lb::SERVICE => netsvc_lb::config::LbConf::from_value(&v).map(drop),
        netsvc_dns::SERVICE => netsvc_dns::config::DnsConf::from_value(&v).map(drop),
        netsvc_qos::SERVICE => netsvc_qos::config::QosConf::from_value(&v).map(drop),
        netsvc_vpn::SERVICE => netsvc_vpn::config::VpnConf::from_value(&v).map(drop),
        _ => Ok(()),
    }
}
