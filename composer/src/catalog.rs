//! What the composer knows of each plugin type: netsvc's own descriptors
//! (from each service's crate, so the composer and the plugin never
//! disagree), the reference plugins', and descriptors users add as JSON files
//! for third-party plugins (`--catalog DIR`, default [`DEFAULT_DIR`]).

use std::collections::BTreeMap;
use std::path::Path;

use netsvc_core::cni::config::decode_at;
use netsvc_core::cni::{CniError, Descriptor, Feature};

/// Where users' descriptors are read from unless told otherwise.
pub const DEFAULT_DIR: &str = "/etc/netsvc/catalog";

#[derive(Debug, Clone)]
pub struct Catalog {
    by_type: BTreeMap<String, Descriptor>,
}

/// A reference plugin's descriptor.
fn reference(plugin_type: &str, provides: &[Feature], requires: &[Feature], conflicts: &[&str]) -> Descriptor {
    Descriptor {
        plugin_type: plugin_type.into(),
        provides: provides.to_vec(),
        requires: requires.to_vec(),
        conflicts: conflicts.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    }
}

impl Catalog {
    /// netsvc's services and the reference plugins.
    pub fn builtin() -> Catalog {
        use Feature::*;
        let ours = crate::services::ALL.iter().map(|s| s.descriptor());
        let veth = [Interface, HostVeth, Ip, Routes];
        let link = [Interface, Ip, Routes];
        let references = [
            reference("bridge", &veth, &[], &[]),
            reference("ptp", &veth, &[], &[]),
            reference("macvlan", &link, &[], &[]),
            reference("ipvlan", &link, &[], &[]),
            reference("host-device", &link, &[], &[]),
            reference("vlan", &link, &[], &[]),
            reference("dummy", &link, &[], &[]),
            // IPAM plugins belong in an interface plugin's `ipam`; alone in a
            // chain they still hand out addresses.
            reference("host-local", &[Ip], &[], &[]),
            reference("static", &[Ip], &[], &[]),
            reference("dhcp", &[Ip], &[], &[]),
            reference("portmap", &[PortMapping], &[Interface, Ip], &[]),
            reference("bandwidth", &[Shaping], &[Interface, HostVeth], &[]),
            reference("firewall", &[Policy], &[Interface, Ip], &[]),
            reference("tuning", &[], &[Interface], &[]),
            reference("sbr", &[Routes], &[Interface, Ip], &[]),
            reference("vrf", &[], &[Interface], &[]),
            reference("loopback", &[], &[], &[]),
        ];
        let ours: Vec<Descriptor> = ours.collect();
        let mut by_type: BTreeMap<String, Descriptor> =
            references.into_iter().map(|d| (d.plugin_type.clone(), d)).collect();
        // A conflict is mutual: a reference plugin a service conflicts with
        // lists the service too (`bandwidth` the QoS).
        for d in &ours {
            for c in &d.conflicts {
                if let Some(other) = by_type.get_mut(c)
                    && !other.conflicts.contains(&d.plugin_type)
                {
                    other.conflicts.push(d.plugin_type.clone());
                }
            }
        }
        by_type.extend(ours.into_iter().map(|d| (d.plugin_type.clone(), d)));
        Catalog { by_type }
    }

    /// Adds the descriptors in `dir` (`*.json`, one descriptor each); they
    /// take precedence over the built-in ones. A missing folder adds nothing.
    pub fn with_dir(mut self, dir: &Path) -> Result<Catalog, CniError> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(self);
        };
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for path in files {
            let field = path.display().to_string();
            let text = std::fs::read(&path).map_err(|e| CniError::invalid_config(&field, e))?;
            let value: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| CniError::invalid_config(&field, e))?;
            let d: Descriptor = decode_at(&value, &field)?;
            self.by_type.insert(d.plugin_type.clone(), d);
        }
        Ok(self)
    }

    /// The descriptor of `plugin_type`; one that constrains nothing when the
    /// type is unknown (it keeps its place in the chain).
    pub fn get(&self, plugin_type: &str) -> Descriptor {
        self.by_type.get(plugin_type).cloned().unwrap_or_else(|| Descriptor {
            plugin_type: plugin_type.into(),
            ..Default::default()
        })
    }

    pub fn knows(&self, plugin_type: &str) -> bool {
        self.by_type.contains_key(plugin_type)
    }

    /// Every descriptor, by type.
    pub fn descriptors(&self) -> impl Iterator<Item = &Descriptor> {
        self.by_type.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_come_from_the_services_and_users_add_their_own() {
        let builtin = Catalog::builtin();
        assert_eq!(builtin.get("netsvc-qos"), netsvc_qos::DESCRIPTION.descriptor());
        assert_eq!(builtin.get("bandwidth").conflicts, ["netsvc-qos"]);
        assert!(builtin.knows("bridge") && builtin.knows("bandwidth") && !builtin.knows("acme"));
        assert!(builtin.get("acme").requires.is_empty());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("acme.json"),
            r#"{"type": "acme", "provides": ["policy"], "requires": ["interface"]}"#,
        )
        .unwrap();
        let with = builtin.with_dir(dir.path()).unwrap();
        assert_eq!(with.get("acme").provides, [Feature::Policy]);
        std::fs::write(dir.path().join("bad.json"), r#"{"type": "x", "provide": []}"#).unwrap();
        let e = Catalog::builtin().with_dir(dir.path()).unwrap_err();
        assert!(e.msg.contains("bad.json"), "{}", e.msg);
    }
}
