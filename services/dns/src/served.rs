//! What the resolver serves for one network, as objects a person reads
//! (`name web.shop.internal A 10.0.0.2`, `listener 10.0.0.1:53`), and the
//! differences between what the store wants and what the daemon says it
//! serves (pure: both sides are computed with [`names`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use netsvc_core::graph::Endpoint;
use netsvc_core::reconcile::{DiffKind, Difference};
use serde::{Deserialize, Serialize};

use crate::SERVICE;

/// The daemon's process, as a difference names it.
pub const DAEMON: &str = "process netsvc-dnsd";

/// The A and AAAA names a network's endpoints get: each name under the
/// network's domain, with each of the endpoint's addresses.
pub fn names(domain: &str, endpoints: &[Endpoint]) -> BTreeSet<String> {
    let domain = domain.trim_end_matches('.').to_lowercase();
    let mut out = BTreeSet::new();
    for ep in endpoints {
        let ips: Vec<IpAddr> = ep.ips.iter().map(|n| n.addr).collect();
        for name in &ep.names {
            let fqdn = format!("{}.{domain}", name.to_lowercase());
            for ip in &ips {
                let kind = if ip.is_ipv4() { "A" } else { "AAAA" };
                out.insert(format!("name {fqdn} {kind} {ip}"));
            }
        }
    }
    out
}

/// What the daemon serves for a network (its control socket's `served`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// The store revision the daemon serves.
    pub revision: u64,
    /// `None`: the daemon does not serve the network.
    pub network: Option<NetworkView>,
    /// Endpoints a DEL took out of the daemon that the store could not
    /// forget (a full disk): not served until the store drops them too.
    #[serde(default)]
    pub withdrawn: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkView {
    pub listen: SocketAddr,
    /// Whether its listen address is open.
    pub listening: bool,
    pub names: BTreeSet<String>,
}

/// What the store wants served for a network on this node.
pub struct Wanted {
    pub listen: SocketAddr,
    pub names: BTreeSet<String>,
}

/// The differences between `wanted` (`None`: the network is not served
/// here) and what the daemon answered (`Err`: it cannot be asked, `why`).
pub fn differences(network: &str, wanted: Option<&Wanted>, daemon: Result<&View, &str>) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut note = |kind, object: String| out.push(Difference::new(SERVICE, network, kind, object));
    let view = match daemon {
        Ok(view) => view,
        Err(_) if wanted.is_none() => return out,
        Err(why) => {
            note(DiffKind::Missing, format!("{DAEMON} ({why})"));
            return out;
        }
    };
    let none = BTreeSet::new();
    let served = view.network.as_ref();
    let want_names = wanted.map_or(&none, |w| &w.names);
    let have_names = served.map_or(&none, |n| &n.names);
    match (wanted, served) {
        (Some(w), Some(n)) if n.listen != w.listen => note(
            DiffKind::Differs,
            format!("listener {} of netsvc-dnsd (wants {})", n.listen, w.listen),
        ),
        (Some(w), Some(n)) if !n.listening => note(DiffKind::Missing, format!("listener {} of netsvc-dnsd", w.listen)),
        (Some(w), None) => note(DiffKind::Missing, format!("listener {} of netsvc-dnsd", w.listen)),
        (None, Some(n)) => note(DiffKind::Extra, format!("listener {} of netsvc-dnsd", n.listen)),
        _ => {}
    }
    for name in want_names.difference(have_names) {
        note(DiffKind::Missing, name.clone());
    }
    for name in have_names.difference(want_names) {
        note(DiffKind::Extra, name.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, names: &[&str], ips: &[&str]) -> Endpoint {
        Endpoint {
            container_id: id.into(),
            ifname: "eth0".into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    const L: &str = "10.0.0.1:53";

    fn kinds(d: Vec<Difference>) -> Vec<String> {
        d.into_iter().map(|d| d.what()).collect()
    }

    #[test]
    fn names_are_per_name_and_address() {
        let got = names(
            "Shop.internal.",
            &[ep("c1", &["web", "WWW"], &["10.0.0.2/24", "fd00::2/64"])],
        );
        let want: BTreeSet<String> = [
            "name web.shop.internal A 10.0.0.2",
            "name web.shop.internal AAAA fd00::2",
            "name www.shop.internal A 10.0.0.2",
            "name www.shop.internal AAAA fd00::2",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_daemon_serving_the_store_has_no_difference() {
        let n = names("d.internal", &[ep("c1", &["web"], &["10.0.0.2/24"])]);
        let view = View {
            revision: 7,
            network: Some(NetworkView {
                listen: L.parse().unwrap(),
                listening: true,
                names: n.clone(),
            }),
            withdrawn: Vec::new(),
        };
        let want = Wanted {
            listen: L.parse().unwrap(),
            names: n,
        };
        assert!(differences("n", Some(&want), Ok(&view)).is_empty());
    }

    #[test]
    fn a_stale_daemon_shows_what_it_lacks_and_what_it_keeps() {
        let view = View {
            revision: 7,
            network: Some(NetworkView {
                listen: L.parse().unwrap(),
                listening: false,
                names: names("d.internal", &[ep("old", &["victim"], &["10.0.0.50/24"])]),
            }),
            withdrawn: Vec::new(),
        };
        let want = Wanted {
            listen: L.parse().unwrap(),
            names: names("d.internal", &[ep("new", &["web"], &["10.0.0.50/24"])]),
        };
        assert_eq!(
            kinds(differences("n", Some(&want), Ok(&view))),
            [
                "missing listener 10.0.0.1:53 of netsvc-dnsd",
                "missing name web.d.internal A 10.0.0.50",
                "extra name victim.d.internal A 10.0.0.50",
            ]
        );
        assert_eq!(
            kinds(differences("n", None, Ok(&view))),
            [
                "extra listener 10.0.0.1:53 of netsvc-dnsd",
                "extra name victim.d.internal A 10.0.0.50"
            ]
        );
    }

    #[test]
    fn a_daemon_that_does_not_answer_matters_only_when_wanted() {
        let want = Wanted {
            listen: L.parse().unwrap(),
            names: BTreeSet::new(),
        };
        assert_eq!(
            kinds(differences("n", Some(&want), Err("no control socket"))),
            ["missing process netsvc-dnsd (no control socket)"]
        );
        assert!(differences("n", None, Err("no control socket")).is_empty());
    }
}
