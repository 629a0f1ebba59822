//! The resolver's data, as plain values: every network's names, addresses,
//! services and settings, and which networks each client address sees.
//! Built from a store snapshot; answering is a pure lookup (the daemon's
//! I/O stays apart, as aardvark-dns keeps its resolver).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use netsvc_core::graph::{Endpoint, Service};

use crate::config::Served;

/// One network as the daemon serves it.
#[derive(Debug, Clone)]
pub struct NetworkData {
    pub name: String,
    pub served: Served,
    /// The endpoints the DNS plugin holds.
    pub endpoints: Vec<Endpoint>,
    /// LB services (name → VIP and ports).
    pub services: Vec<Service>,
}

/// What a query gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// NOERROR with these answers.
    Answer(Vec<Record>),
    /// The name exists for this client, not with this type: NOERROR, no answers, the SOA.
    NoData(Record),
    /// No such name in a domain we serve: NXDOMAIN with the SOA.
    NxDomain(Record),
    /// Not ours: ask these upstreams.
    Forward(Vec<SocketAddr>),
}

type NetIdx = usize;

#[derive(Debug, Default)]
pub struct Zone {
    networks: Vec<NetworkData>,
    /// Lowercase FQDN → (network, address).
    addrs: HashMap<Name, Vec<(NetIdx, IpAddr)>>,
    /// Reverse name → (network, target).
    ptrs: HashMap<Name, Vec<(NetIdx, Name)>>,
    /// `_port._proto.service.domain.` → (network, port, target).
    srvs: HashMap<Name, Vec<(NetIdx, u16, Name)>>,
    /// Client address → the networks it sees.
    views: HashMap<IpAddr, BTreeSet<NetIdx>>,
    /// Every domain served, with a network using it (for the SOA).
    domains: Vec<(Name, NetIdx)>,
    /// Every listen address and the upstreams of the networks listening there.
    listeners: Vec<(SocketAddr, Vec<SocketAddr>)>,
    serial: u32,
    /// Turns the order of a shared name's addresses at every answer (round
    /// robin, as Docker's embedded DNS does), so clients that take the
    /// first spread over them.
    rotation: AtomicUsize,
}

/// The name server of `domain`: `ns.<domain>`.
fn name_server(domain: &Name) -> Name {
    Name::from_ascii("ns")
        .expect("a valid label")
        .append_domain(domain)
        .unwrap_or_else(|_| domain.clone())
}

fn fqdn(labels: &str) -> Option<Name> {
    let mut n = Name::from_str(labels).ok()?.to_lowercase();
    n.set_fqdn(true);
    Some(n)
}

fn addresses(ep: &Endpoint) -> Vec<IpAddr> {
    ep.ips.iter().map(|n| n.addr).collect()
}

impl Zone {
    /// Builds the zone; `serial` is the store revision it reflects.
    pub fn build(networks: Vec<NetworkData>, serial: u64) -> Zone {
        let mut z = Zone {
            serial: serial as u32,
            ..Default::default()
        };
        let mut containers: HashMap<&str, BTreeSet<NetIdx>> = HashMap::new();
        for (i, net) in networks.iter().enumerate() {
            let Some(domain) = fqdn(&net.served.domain) else {
                continue;
            };
            if !z.domains.iter().any(|(d, _)| *d == domain) {
                z.domains.push((domain.clone(), i));
            }
            for ep in &net.endpoints {
                containers.entry(ep.container_id.as_str()).or_default().insert(i);
                let ips = addresses(ep);
                for (k, name) in ep.names.iter().enumerate() {
                    for owner in [fqdn(&format!("{name}.{}", net.served.domain)), fqdn(name)]
                        .into_iter()
                        .flatten()
                    {
                        z.addrs.entry(owner).or_default().extend(ips.iter().map(|ip| (i, *ip)));
                    }
                    // The first name is the canonical one PTR answers.
                    if k == 0
                        && let Some(target) = fqdn(&format!("{name}.{}", net.served.domain))
                    {
                        for ip in &ips {
                            z.ptrs.entry(Name::from(*ip)).or_default().push((i, target.clone()));
                        }
                    }
                }
            }
            for svc in &net.services {
                let Some(vip) = svc.vip else {
                    continue;
                };
                let Some(target) = fqdn(&format!("{}.{}", svc.name, net.served.domain)) else {
                    continue;
                };
                z.addrs.entry(target.clone()).or_default().push((i, vip));
                for p in &svc.ports {
                    let srv = format!(
                        "_{}._{}.{}.{}",
                        p.port,
                        p.protocol.as_str(),
                        svc.name,
                        net.served.domain
                    );
                    if let Some(owner) = fqdn(&srv) {
                        z.srvs.entry(owner).or_default().push((i, p.port, target.clone()));
                    }
                }
            }
        }
        for net in &networks {
            for ep in &net.endpoints {
                let seen = &containers[ep.container_id.as_str()];
                for ip in addresses(ep) {
                    z.views.entry(ip).or_default().extend(seen.iter().copied());
                }
            }
        }
        for net in &networks {
            match z.listeners.iter_mut().find(|(l, _)| *l == net.served.listen) {
                Some((_, ups)) => {
                    for u in &net.served.upstreams {
                        if !ups.contains(u) {
                            ups.push(*u);
                        }
                    }
                }
                None => z.listeners.push((net.served.listen, net.served.upstreams.clone())),
            }
        }
        z.networks = networks;
        z
    }

    /// Every listen address the daemon must serve, with its upstreams.
    pub fn listeners(&self) -> &[(SocketAddr, Vec<SocketAddr>)] {
        &self.listeners
    }

    fn upstreams(&self, listen: SocketAddr) -> Vec<SocketAddr> {
        let found = self.listeners.iter().find(|(l, _)| *l == listen);
        found.map(|(_, u)| u.clone()).unwrap_or_default()
    }

    /// The network `name` as served, if it is.
    pub fn network(&self, name: &str) -> Option<&NetworkData> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    fn ttl(&self, net: NetIdx) -> u32 {
        self.networks[net].served.ttl
    }

    fn soa(&self, domain: &Name, net: NetIdx) -> Record {
        let ttl = self.ttl(net);
        let ns = name_server(domain);
        let mbox = Name::from_ascii("hostmaster")
            .unwrap()
            .append_domain(domain)
            .unwrap_or_else(|_| domain.clone());
        let soa = SOA::new(ns, mbox, self.serial, 3600, 600, 86400, ttl);
        Record::from_rdata(domain.clone(), ttl, RData::SOA(soa))
    }

    /// The answer for `qname`/`qtype` asked by `client` of the listener on `listen`.
    pub fn lookup(&self, client: IpAddr, listen: SocketAddr, qname: &Name, qtype: RecordType) -> Outcome {
        let empty = BTreeSet::new();
        self.lookup_in(self.views.get(&client).unwrap_or(&empty), listen, qname, qtype)
    }

    /// The answer as the node sees it: every network's names (`netsvc dns
    /// query`); a name no network serves is `Forward` (the node's own
    /// resolver answers those).
    pub fn lookup_as_node(&self, qname: &Name, qtype: RecordType) -> Outcome {
        let every: BTreeSet<NetIdx> = (0..self.networks.len()).collect();
        let listen = self
            .networks
            .first()
            .map_or(SocketAddr::from(([127, 0, 0, 1], 53)), |n| n.served.listen);
        self.lookup_in(&every, listen, qname, qtype)
    }

    fn lookup_in(&self, view: &BTreeSet<NetIdx>, listen: SocketAddr, qname: &Name, qtype: RecordType) -> Outcome {
        let name = {
            let mut n = qname.to_lowercase();
            n.set_fqdn(true);
            n
        };
        if let Some(outcome) = self.apex(&name, qtype, listen) {
            return outcome;
        }
        let visible = |net: &NetIdx| view.contains(net);

        let addrs: Vec<(NetIdx, IpAddr)> = self
            .addrs
            .get(&name)
            .into_iter()
            .flatten()
            .filter(|(n, _)| visible(n))
            .copied()
            .collect();
        let ptrs: Vec<&(NetIdx, Name)> = self
            .ptrs
            .get(&name)
            .into_iter()
            .flatten()
            .filter(|(n, _)| visible(n))
            .collect();
        let srvs: Vec<&(NetIdx, u16, Name)> = self
            .srvs
            .get(&name)
            .into_iter()
            .flatten()
            .filter(|(n, _, _)| visible(n))
            .collect();
        let exists = !addrs.is_empty() || !ptrs.is_empty() || !srvs.is_empty();

        if exists {
            let mut answers = Vec::new();
            let mut seen = BTreeSet::new();
            for (net, ip) in &addrs {
                if !seen.insert(*ip) {
                    continue;
                }
                let ttl = self.ttl(*net);
                match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                        answers.push(Record::from_rdata(name.clone(), ttl, RData::A(A(*v4))))
                    }
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                        answers.push(Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(*v6))))
                    }
                    _ => {}
                }
            }
            if answers.len() > 1 {
                let turn = self.rotation.fetch_add(1, Ordering::Relaxed) % answers.len();
                answers.rotate_left(turn);
            }
            if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                for (net, target) in &ptrs {
                    answers.push(Record::from_rdata(
                        name.clone(),
                        self.ttl(*net),
                        RData::PTR(PTR(target.clone())),
                    ));
                }
            }
            if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                for (net, port, target) in &srvs {
                    let srv = SRV::new(0, 100, *port, target.clone());
                    answers.push(Record::from_rdata(name.clone(), self.ttl(*net), RData::SRV(srv)));
                }
            }
            if !answers.is_empty() {
                return Outcome::Answer(answers);
            }
            return match self.domain_of(&name) {
                Some((d, net)) => Outcome::NoData(self.soa(d, *net)),
                // A bare name (`web.`) exists without a domain of its own.
                None => Outcome::NoData(self.soa(&self.domains[0].0, self.domains[0].1)),
            };
        }
        match self.domain_of(&name) {
            Some((d, net)) => Outcome::NxDomain(self.soa(d, *net)),
            None => Outcome::Forward(self.upstreams(listen)),
        }
    }

    /// A served domain's apex (its SOA and NS records) and its name
    /// server (`ns.<domain>`, this listener's address), as RFC 1035 asks of
    /// every zone; `None` for any other name. A container named `ns` keeps
    /// its own name: the zone's name server is then found by its NS record only.
    fn apex(&self, name: &Name, qtype: RecordType, listen: SocketAddr) -> Option<Outcome> {
        if let Some((domain, net)) = self.domains.iter().find(|(d, _)| d == name) {
            let ttl = self.ttl(*net);
            let mut answers = Vec::new();
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                answers.push(self.soa(domain, *net));
            }
            if matches!(qtype, RecordType::NS | RecordType::ANY) {
                answers.push(Record::from_rdata(
                    domain.clone(),
                    ttl,
                    RData::NS(NS(name_server(domain))),
                ));
            }
            return Some(if answers.is_empty() {
                Outcome::NoData(self.soa(domain, *net))
            } else {
                Outcome::Answer(answers)
            });
        }
        if self.addrs.contains_key(name) {
            return None;
        }
        let (domain, net) = self.domains.iter().find(|(d, _)| name_server(d) == *name)?;
        let ttl = self.ttl(*net);
        let answer = match (listen.ip(), qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Record::from_rdata(name.clone(), ttl, RData::A(A(v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6)))
            }
            _ => return Some(Outcome::NoData(self.soa(domain, *net))),
        };
        Some(Outcome::Answer(vec![answer]))
    }

    fn domain_of(&self, name: &Name) -> Option<&(Name, NetIdx)> {
        self.domains.iter().find(|(d, _)| d.zone_of(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netsvc_core::graph::{Protocol, ServicePort};

    fn ep(id: &str, names: &[&str], ips: &[&str]) -> Endpoint {
        Endpoint {
            container_id: id.into(),
            ifname: "eth0".into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn net(name: &str, domain: &str, endpoints: Vec<Endpoint>) -> NetworkData {
        NetworkData {
            name: name.into(),
            served: Served {
                domain: domain.into(),
                listen: "10.0.0.1:53".parse().unwrap(),
                upstreams: vec!["192.0.2.53:53".parse().unwrap()],
                ttl: 5,
            },
            endpoints,
            services: vec![],
        }
    }

    const L: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 53);

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn zone() -> Zone {
        let mut a = net(
            "a",
            "a.internal",
            vec![
                ep("c1", &["web", "www"], &["10.0.0.2/24", "fd00::2/64"]),
                ep("c2", &["db"], &["10.0.0.3/24"]),
                ep("both", &["both"], &["10.0.0.9/24"]),
            ],
        );
        a.services.push(Service {
            name: "api".into(),
            vip: Some("10.96.0.10".parse().unwrap()),
            ports: vec![ServicePort {
                port: 80,
                target_port: Some(8080),
                protocol: Protocol::Tcp,
            }],
            ..Default::default()
        });
        let b = net(
            "b",
            "b.internal",
            vec![
                ep("c3", &["only-b"], &["10.1.0.2/24"]),
                ep("both", &["both"], &["10.1.0.9/24"]),
            ],
        );
        Zone::build(vec![a, b], 42)
    }

    fn ips(o: Outcome) -> Vec<String> {
        match o {
            Outcome::Answer(rs) => rs.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("{other:?}"),
        }
    }

    /// RFC 1035: a zone's apex holds its SOA and NS records, and the name
    /// server they name resolves (to the listener asked).
    #[test]
    fn the_apex_has_its_soa_and_ns_and_the_name_server_resolves() {
        let z = zone();
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        let kinds = |o: Outcome| match o {
            Outcome::Answer(rs) => rs.iter().map(|r| r.record_type()).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kinds(z.lookup(c, L, &n("a.internal."), RecordType::SOA)),
            [RecordType::SOA]
        );
        assert_eq!(
            kinds(z.lookup(c, L, &n("A.Internal."), RecordType::NS)),
            [RecordType::NS]
        );
        assert_eq!(
            kinds(z.lookup(c, L, &n("a.internal."), RecordType::ANY)),
            [RecordType::SOA, RecordType::NS]
        );
        assert!(matches!(
            z.lookup(c, L, &n("a.internal."), RecordType::A),
            Outcome::NoData(_)
        ));
        assert_eq!(ips(z.lookup(c, L, &n("ns.a.internal."), RecordType::A)), ["10.0.0.1"]);
        assert!(matches!(
            z.lookup(c, L, &n("ns.a.internal."), RecordType::AAAA),
            Outcome::NoData(_)
        ));
        assert!(matches!(
            z.lookup(c, L, &n("nothing.a.internal."), RecordType::A),
            Outcome::NxDomain(_)
        ));
    }

    /// A name several containers share answers all their addresses, in an
    /// order that turns at every answer.
    #[test]
    fn a_shared_name_turns_its_addresses_round_robin() {
        let mut a = net(
            "a",
            "a.internal",
            (2..5)
                .map(|i| ep(&format!("c{i}"), &["api"], &[&format!("10.0.0.{i}/24")]))
                .collect(),
        );
        a.endpoints.push(ep("client", &["client"], &["10.0.0.9/24"]));
        let z = Zone::build(vec![a], 1);
        let c: IpAddr = "10.0.0.9".parse().unwrap();
        let firsts: BTreeSet<String> = (0..3)
            .map(|_| {
                let all = ips(z.lookup(c, L, &n("api.a.internal."), RecordType::A));
                assert_eq!(all.len(), 3, "{all:?}");
                all[0].clone()
            })
            .collect();
        assert_eq!(firsts.len(), 3, "each answer starts elsewhere: {firsts:?}");
    }

    /// The node sees every network's names, which no single client does.
    #[test]
    fn the_node_sees_every_networks_names() {
        let z = zone();
        assert_eq!(
            ips(z.lookup_as_node(&n("only-b.b.internal."), RecordType::A)),
            ["10.1.0.2"]
        );
        assert_eq!(
            ips(z.lookup_as_node(&n("web.a.internal."), RecordType::A)),
            ["10.0.0.2"]
        );
        let outsider: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(matches!(
            z.lookup(outsider, L, &n("web.a.internal."), RecordType::A),
            Outcome::NxDomain(_)
        ));
        assert!(matches!(
            z.lookup_as_node(&n("example.org."), RecordType::A),
            Outcome::Forward(_)
        ));
    }

    #[test]
    fn names_and_aliases_answer_in_their_network() {
        let z = zone();
        let c2: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(ips(z.lookup(c2, L, &n("web.a.internal."), RecordType::A)), ["10.0.0.2"]);
        assert_eq!(
            ips(z.lookup(c2, L, &n("WWW.a.internal"), RecordType::AAAA)),
            ["fd00::2"]
        );
        assert_eq!(ips(z.lookup(c2, L, &n("web."), RecordType::A)), ["10.0.0.2"]);
        assert_eq!(
            ips(z.lookup(c2, L, &n("2.0.0.10.in-addr.arpa."), RecordType::PTR)),
            ["web.a.internal."]
        );
        assert!(matches!(
            z.lookup(c2, L, &n("db.a.internal."), RecordType::AAAA),
            Outcome::NoData(_)
        ));
        assert!(matches!(
            z.lookup(c2, L, &n("nope.a.internal."), RecordType::A),
            Outcome::NxDomain(_)
        ));
    }

    #[test]
    fn views_follow_the_client_networks() {
        let z = zone();
        let only_b: IpAddr = "10.1.0.2".parse().unwrap();
        assert!(matches!(
            z.lookup(only_b, L, &n("web.a.internal."), RecordType::A),
            Outcome::NxDomain(_)
        ));
        // A container on both networks sees both, from either address.
        for ip in ["10.0.0.9", "10.1.0.9"] {
            let both: IpAddr = ip.parse().unwrap();
            assert_eq!(
                ips(z.lookup(both, L, &n("web.a.internal."), RecordType::A)),
                ["10.0.0.2"]
            );
            assert_eq!(
                ips(z.lookup(both, L, &n("only-b.b.internal."), RecordType::A)),
                ["10.1.0.2"]
            );
        }
        // Strangers see none of it.
        let stranger: IpAddr = "192.0.2.77".parse().unwrap();
        assert!(matches!(
            z.lookup(stranger, L, &n("web."), RecordType::A),
            Outcome::Forward(_)
        ));
    }

    #[test]
    fn services_resolve_to_their_vip_with_srv() {
        let z = zone();
        let c2: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(
            ips(z.lookup(c2, L, &n("api.a.internal."), RecordType::A)),
            ["10.96.0.10"]
        );
        assert_eq!(
            ips(z.lookup(c2, L, &n("_80._tcp.api.a.internal."), RecordType::SRV)),
            ["0 100 80 api.a.internal."]
        );
    }

    #[test]
    fn other_names_go_upstream() {
        let z = zone();
        let up: Vec<SocketAddr> = vec!["192.0.2.53:53".parse().unwrap()];
        let c2: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(
            z.lookup(c2, L, &n("example.org."), RecordType::A),
            Outcome::Forward(up.clone())
        );
        assert_eq!(z.listeners(), [(L, up)]);
    }
}
