//! What the kernel holds of the VPN the store wants on a network, read as
//! differences (`netsvc repair`): each tunnel's device in its container
//! (ours, up, with its peers), each mesh device of this node (its key, the
//! other nodes as peers, routes to their pod subnets, its keeper), a dead
//! ADD's tunnel device, and devices of ours no record holds. Pure: the
//! kernel is read into [`Seen`] by the repair.

use std::collections::{BTreeMap, BTreeSet};

use netsvc_core::cni::IpNet;

use netsvc_core::reconcile::{DiffKind, Difference};

use crate::SERVICE;
use crate::cleanup::Ours;
use crate::mesh::MeshNode;
use crate::tunnel::TunnelRecord;

/// A tunnel's device as found in its container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelSeen {
    /// It is there (ours, under its interface name or any other).
    pub present: bool,
    pub up: bool,
    /// The public keys of its peers (`None`: the device could not be read).
    pub peers: Option<BTreeSet<String>>,
}

/// A mesh device of this node as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshSeen {
    pub present: bool,
    pub public_key: Option<String>,
    pub peers: BTreeSet<String>,
    /// The destinations routed through it.
    pub routes: BTreeSet<String>,
    pub keeper: bool,
}

/// The kernel, by device name.
#[derive(Debug, Default)]
pub struct Seen {
    pub tunnels: BTreeMap<String, TunnelSeen>,
    pub mesh: BTreeMap<String, MeshSeen>,
    pub ours: Ours,
}

/// Another node of the mesh, as the store publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherNode {
    pub name: String,
    pub public_key: String,
    pub subnets: Vec<IpNet>,
}

/// A mesh device of this node and what the store says it should hold.
pub struct MeshWanted<'a> {
    pub node: &'a MeshNode,
    /// The key the node published (`None`: not published yet).
    pub published: Option<String>,
    pub others: Vec<OtherNode>,
}

/// What the store wants on a network, on this node.
pub struct Wanted<'a> {
    pub tunnels: Vec<&'a TunnelRecord>,
    /// Tunnels a dead ADD made, rolled back: their devices must go.
    pub rolled_back: Vec<&'a TunnelRecord>,
    pub mesh: Vec<MeshWanted<'a>>,
    /// Every device a record of any network holds.
    pub held: BTreeSet<String>,
}

/// How a tunnel's device is named: its interface, its node name, its container.
pub fn tunnel_object(r: &TunnelRecord) -> String {
    format!("link {} ({}) in {}", r.interface, r.device, r.netns)
}

pub fn differences(network: &str, wanted: &Wanted<'_>, seen: &Seen) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut note = |kind, object: String| out.push(Difference::new(SERVICE, network, kind, object));
    let nothing = TunnelSeen::default();
    for r in &wanted.tunnels {
        let t = seen.tunnels.get(&r.device).unwrap_or(&nothing);
        if !t.present {
            note(DiffKind::Missing, tunnel_object(r));
            continue;
        }
        if !t.up {
            note(DiffKind::Differs, format!("{} (down)", tunnel_object(r)));
        }
        if let Some(have) = &t.peers {
            let want: BTreeSet<String> = r.peers.iter().map(|p| p.public_key.to_string()).collect();
            for key in want.difference(have) {
                note(DiffKind::Missing, format!("peer {key} of {}", r.device));
            }
            for key in have.difference(&want) {
                note(DiffKind::Extra, format!("peer {key} of {}", r.device));
            }
        }
    }
    for r in &wanted.rolled_back {
        if seen.tunnels.get(&r.device).is_some_and(|t| t.present) {
            note(DiffKind::Extra, tunnel_object(r));
        }
    }
    let none = MeshSeen::default();
    for m in &wanted.mesh {
        let device = &m.node.device;
        let s = seen.mesh.get(device).unwrap_or(&none);
        if !s.present {
            note(DiffKind::Missing, format!("link {device}"));
            continue;
        }
        if let Some(published) = &m.published
            && s.public_key.as_ref() != Some(published)
        {
            let holds = s.public_key.as_deref().unwrap_or("none");
            note(
                DiffKind::Differs,
                format!("key of {device} (holds {holds}, published {published})"),
            );
        }
        for o in &m.others {
            if !s.peers.contains(&o.public_key) {
                note(
                    DiffKind::Missing,
                    format!("peer {} ({}) of {device}", o.public_key, o.name),
                );
            }
            for subnet in o.subnets.iter().filter(|n| !s.routes.contains(&n.to_string())) {
                note(DiffKind::Missing, format!("route {subnet} dev {device}"));
            }
        }
        let known: BTreeSet<&String> = m.others.iter().map(|o| &o.public_key).collect();
        for key in s.peers.iter().filter(|k| !known.contains(k)) {
            note(DiffKind::Extra, format!("peer {key} of {device}"));
        }
        if !s.keeper {
            note(DiffKind::Missing, format!("process keeper of {device}"));
        }
    }
    for name in seen.ours.userspace.iter().filter(|n| !wanted.held.contains(*n)) {
        note(DiffKind::Extra, format!("process wireguard-go {name}"));
    }
    for name in seen.ours.links.iter() {
        if !wanted.held.contains(name) && !seen.ours.userspace.contains(name) {
            note(DiffKind::Extra, format!("link {name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerConf;
    use crate::device::Backend;
    use crate::keys::PrivateKey;

    fn tunnel(device: &str, peers: &[&str]) -> TunnelRecord {
        TunnelRecord {
            device: device.into(),
            interface: "wg0".into(),
            netns: "/run/netns/c".into(),
            backend: Backend::Userspace,
            public_key: PrivateKey::from_bytes([1; 32]).public(),
            address: "10.200.0.2/32".parse().unwrap(),
            routes: vec![],
            mtu: 1420,
            peers: peers
                .iter()
                .map(|k| PeerConf {
                    public_key: k.parse().unwrap(),
                    endpoint: None,
                    allowed_ips: vec!["10.50.0.0/16".parse().unwrap()],
                    persistent_keepalive: None,
                })
                .collect(),
        }
    }

    fn key(b: u8) -> String {
        PrivateKey::from_bytes([b; 32]).public().to_string()
    }

    fn node(device: &str) -> MeshNode {
        MeshNode {
            node: "a".into(),
            device: device.into(),
            backend: Backend::Userspace,
            listen_port: 51871,
            mtu: 1420,
            persistent_keepalive: 25,
        }
    }

    fn objects(d: Vec<Difference>) -> Vec<String> {
        d.into_iter().map(|d| d.what()).collect()
    }

    fn wanted<'a>(tunnels: Vec<&'a TunnelRecord>, mesh: Vec<MeshWanted<'a>>) -> Wanted<'a> {
        let mut held: BTreeSet<String> = tunnels.iter().map(|t| t.device.clone()).collect();
        held.extend(mesh.iter().map(|m| m.node.device.clone()));
        Wanted {
            tunnels,
            rolled_back: Vec::new(),
            mesh,
            held,
        }
    }

    #[test]
    fn a_tunnel_as_made_has_no_difference_and_a_lost_one_is_named() {
        let t = tunnel("nsv0123456789ab", &[&key(2)]);
        let mut seen = Seen::default();
        seen.tunnels.insert(
            t.device.clone(),
            TunnelSeen {
                present: true,
                up: true,
                peers: Some([key(2)].into()),
            },
        );
        assert!(differences("n", &wanted(vec![&t], vec![]), &seen).is_empty());
        seen.tunnels.get_mut(&t.device).unwrap().peers = Some([key(3)].into());
        seen.tunnels.get_mut(&t.device).unwrap().up = false;
        assert_eq!(
            objects(differences("n", &wanted(vec![&t], vec![]), &seen)),
            [
                "differs link wg0 (nsv0123456789ab) in /run/netns/c (down)".to_string(),
                format!("missing peer {} of nsv0123456789ab", key(2)),
                format!("extra peer {} of nsv0123456789ab", key(3)),
            ]
        );
        seen.tunnels.clear();
        assert_eq!(
            objects(differences("n", &wanted(vec![&t], vec![]), &seen)),
            ["missing link wg0 (nsv0123456789ab) in /run/netns/c"]
        );
    }

    #[test]
    fn a_mesh_device_holds_the_published_key_every_other_node_and_its_routes() {
        let me = node("nsm0123456789ab");
        let other = OtherNode {
            name: "b".into(),
            public_key: key(5),
            subnets: vec!["10.89.2.0/24".parse().unwrap()],
        };
        let m = || MeshWanted {
            node: &me,
            published: Some(key(4)),
            others: vec![other.clone()],
        };
        let mut seen = Seen::default();
        seen.mesh.insert(
            me.device.clone(),
            MeshSeen {
                present: true,
                public_key: Some(key(4)),
                peers: [key(5)].into(),
                routes: ["10.89.2.0/24".to_string()].into(),
                keeper: true,
            },
        );
        assert!(differences("n", &wanted(vec![], vec![m()]), &seen).is_empty());
        let s = seen.mesh.get_mut(&me.device).unwrap();
        s.peers = [key(6)].into();
        s.routes.clear();
        s.keeper = false;
        assert_eq!(
            objects(differences("n", &wanted(vec![], vec![m()]), &seen)),
            [
                format!("missing peer {} (b) of nsm0123456789ab", key(5)),
                "missing route 10.89.2.0/24 dev nsm0123456789ab".to_string(),
                format!("extra peer {} of nsm0123456789ab", key(6)),
                "missing process keeper of nsm0123456789ab".to_string(),
            ]
        );
        seen.mesh.clear();
        assert_eq!(
            objects(differences("n", &wanted(vec![], vec![m()]), &seen)),
            ["missing link nsm0123456789ab"]
        );
    }

    #[test]
    fn a_dead_adds_tunnel_and_devices_nobody_holds_are_extra() {
        let dead = tunnel("nsv00000000000a", &[]);
        let mut seen = Seen::default();
        seen.tunnels.insert(
            dead.device.clone(),
            TunnelSeen {
                present: true,
                ..Default::default()
            },
        );
        seen.ours.userspace.insert("nsv00000000000a".into());
        seen.ours.links.insert("nsm00000000000b".into());
        let mut w = wanted(vec![], vec![]);
        w.rolled_back.push(&dead);
        assert_eq!(
            objects(differences("n", &w, &seen)),
            [
                "extra link wg0 (nsv00000000000a) in /run/netns/c",
                "extra process wireguard-go nsv00000000000a",
                "extra link nsm00000000000b",
            ]
        );
    }
}
