//! The netsvc services this build knows, by plugin type.

use netsvc_core::reconcile::Reconcile;

/// The reconcile hook of a netsvc plugin type (`None`: not one of ours).
pub fn reconciler(plugin_type: &str) -> Option<Box<dyn Reconcile>> {
    match plugin_type {
        netsvc_firewall::SERVICE => Some(Box::new(netsvc_firewall::Firewall)),
        _ => None,
    }
}
