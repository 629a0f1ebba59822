//! What one shaped device gets, worked out from a checked config (pure): an
//! HTB tree and the u32 filters that sort packets into it.
//!
//! ```text
//! 1: htb default <default leaf, or 1:2 when only some subnets are shaped>
//! ├── 1:1  the direction's rate (rate = ceil), its burst
//! │   ├── 1:10, 1:11, …  one leaf per class (rate, ceil ≤ the direction's, priority)
//! │   └── 1:f  the implicit default leaf, when no class is the default
//! └── 1:2  unlimited: traffic an unshaped subnet takes
//! ```
//! With no classes there is one leaf, 1:10, at the direction's rate.
//!
//! Each leaf holds a TBF that does not shape (ten times the leaf's ceil) but cuts
//! GSO packets into frames and bounds the queue. HTB sends a packet whole:
//! a 64 KB GSO packet at 1 Mbit/s leaves at line rate and then silences the
//! lane for half a second; cut into frames, the lane is smooth and exact.

use netsvc_core::cni::{CniError, IpNet};
use netsvc_core::netlink::tc::{HtbClass, HtbQdisc, Psched, Rate, Tbf, TbfLimit, U32Match, handle};

use crate::config::{Class, Criterion, Direction, Prefix, QosSettings, Scope};

/// The HTB qdisc's major number on every shaped device (`1:`).
pub const MAJOR: u16 = 1;
const PARENT: u16 = 1;
const UNLIMITED: u16 = 2;
const IMPLICIT_DEFAULT: u16 = 0xf;
const FIRST_LEAF: u16 = 0x10;
/// Most classes a config may have (leaf ids 1:10 to 1:4f).
pub const MAX_CLASSES: usize = 64;
/// The rate of the unlimited class: beyond any veth this shapes.
const UNLIMITED_BITS: u64 = 100_000_000_000;
/// HTB's rate tables and iproute2's defaults assume this frame size.
const FRAME: u64 = 1600;
/// The largest GSO packet: the leaf TBF's queue holds a few at any rate.
const GSO_MAX: u64 = 65_536;
/// How long a lane's queue may take to drain at its ceil (beyond the GSO floor).
const QUEUE_MS: u64 = 100;
/// HTB warns unless a quantum is within these bytes.
const QUANTUM: (u64, u64) = (FRAME, 200_000);

/// Which way the shaped traffic goes, which decides where its far end is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Shaped on the host veth's egress: the far end is the source.
    ToContainer,
    /// Shaped on the ifb: the far end is the destination.
    FromContainer,
}

impl Side {
    /// The match on a packet's far end being in `p`.
    fn remote(self, p: Prefix) -> U32Match {
        match self {
            Side::ToContainer => U32Match::Src(p.0, p.1),
            Side::FromContainer => U32Match::Dst(p.0, p.1),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedClass {
    pub parent: u32,
    pub id: u32,
    pub name: String,
    pub htb: HtbClass,
    /// The leaves' TBF: cuts GSO packets into frames, bounds the queue.
    pub leaf: Option<Tbf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFilter {
    /// Lower runs first.
    pub prio: u16,
    pub matches: Vec<U32Match>,
    pub class: u32,
}

/// One device's tree.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub qdisc: HtbQdisc,
    pub classes: Vec<PlannedClass>,
    pub filters: Vec<PlannedFilter>,
}

/// The default burst for `rate_bits`: 4 ms at the rate, at least two full
/// frames. The reference plugin makes users pick one, and they pick large
/// ones (a huge first burst) or, at low rates, ones under a frame (stalls).
/// HTB lends no tokens beyond the burst: 4 ms keeps the first burst
/// invisible, lets a lane catch up after a timer that fired up to 4 ms late
/// on a busy machine (with 1 ms, 100 Mbit/s lanes lost 1–2% under load), and
/// never holds a frame back for tokens the bucket cannot gather.
pub fn default_burst(rate_bits: u64) -> u64 {
    (rate_bits / 8 / 250).max(2 * FRAME)
}

/// Checks what the kernel would refuse or what cannot work: classes
/// without a rate to share, bursts HTB cannot hold (its buffer is a 32-bit
/// count of 64 ns ticks). Class rates adding up to more than the direction's
/// rate are allowed (the issue's own example does): [`device`] scales them
/// down to fit.
pub fn check(qos: &QosSettings) -> Result<(), CniError> {
    if qos.classes.len() > MAX_CLASSES {
        return Err(CniError::invalid_config(
            "classes",
            format!("{} classes, at most {MAX_CLASSES}", qos.classes.len()),
        ));
    }
    if !qos.classes.is_empty() && qos.ingress.is_none() && qos.egress.is_none() {
        return Err(CniError::invalid_config(
            "classes",
            "classes share a rate: set ingressRate or egressRate (or the bandwidth capability)",
        ));
    }
    for (which, d) in [("ingress", qos.ingress), ("egress", qos.egress)] {
        let Some(d) = d else { continue };
        let field = format!("{which}Burst");
        if let Some(burst) = d.burst {
            burst_fits(&field, d.rate, burst)?;
        }
    }
    Ok(())
}

fn burst_fits(field: &str, rate_bits: u64, burst: u64) -> Result<(), CniError> {
    let ps = Psched::default();
    let usec = burst as f64 * 8.0 / rate_bits as f64 * 1e6;
    let ticks = usec * ps.tick_in_usec;
    if burst > u64::from(u32::MAX) || ticks >= f64::from(u32::MAX) {
        return Err(CniError::invalid_config(
            field,
            format!(
                "{burst} bytes take {:.0} s at {rate_bits} bit/s: HTB holds at most {:.0} s",
                usec / 1e6,
                f64::from(u32::MAX) / ps.tick_in_usec / 1e6
            ),
        ));
    }
    if usec < 1.0 {
        return Err(CniError::invalid_config(
            field,
            format!("{burst} bytes last under 1 µs at {rate_bits} bit/s"),
        ));
    }
    Ok(())
}

fn class(rate_bits: u64, ceil_bits: u64, burst: Option<u64>, prio: u8) -> HtbClass {
    let rate = Rate::from_bits_per_sec(rate_bits);
    let ceil = Rate::from_bits_per_sec(ceil_bits.max(rate_bits));
    let bytes = |b: u64| u32::try_from(b).unwrap_or(u32::MAX);
    HtbClass {
        rate,
        ceil: Some(ceil),
        burst: Some(bytes(burst.unwrap_or_else(|| default_burst(rate_bits)))),
        cburst: Some(bytes(burst.unwrap_or_else(|| default_burst(ceil_bits)))),
        prio: u32::from(prio),
        quantum: Some(bytes((rate.bytes_per_sec() / 10).clamp(QUANTUM.0, QUANTUM.1))),
    }
}

/// A leaf's TBF for a lane of ceil `ceil_bits` on a link of `frame`-byte
/// frames: ten times the ceil (HTB shapes, not it: at twice the ceil its
/// small bucket still held HTB back now and then); a bucket of 1 ms at the
/// ceil, at least two frames and under a GSO packet (larger packets are cut
/// into frames); a queue of 100 ms at the ceil, at least three GSO packets
/// (a cut packet must fit whole, or its tail is dropped).
pub fn leaf_tbf(ceil_bits: u64, frame: u64) -> Tbf {
    let ceil = ceil_bits / 8;
    let bytes = |b: u64| u32::try_from(b).unwrap_or(u32::MAX);
    Tbf {
        rate: Rate::from_bytes_per_sec(ceil.saturating_mul(10)),
        burst: bytes((ceil / 1000).clamp(2 * frame, GSO_MAX - 1)),
        limit: TbfLimit::Bytes(bytes((ceil * QUEUE_MS / 1000).max(3 * GSO_MAX))),
    }
}

/// The tree for one direction of `qos` shaped at `d`, on a link whose
/// frames are `frame` bytes (MTU + Ethernet header).
pub fn device(qos: &QosSettings, d: Direction, side: Side, frame: u64) -> DevicePlan {
    let id = |minor: u16| handle(MAJOR, minor);
    let root = handle(MAJOR, 0);
    let mut classes = vec![PlannedClass {
        parent: root,
        id: id(PARENT),
        name: "rate".into(),
        htb: class(d.rate, d.rate, d.burst, 0),
        leaf: None,
    }];
    let direction_burst = d.burst.unwrap_or_else(|| default_burst(d.rate));
    // What no class takes shares what the classes leave (at least 1%).
    let guaranteed: u64 = qos.classes.iter().map(|c| c.rate.min(d.rate)).sum();
    let has_default = qos.classes.iter().any(|c| c.default);
    let rest_rate = d.rate.saturating_sub(guaranteed).max(d.rate / 100).max(8);
    let total = guaranteed
        + if has_default || qos.classes.is_empty() {
            0
        } else {
            rest_rate
        };
    // HTB lets a lane send up to its own rate whatever its parent has left,
    // so guarantees adding up to more than the direction's rate would break
    // the cap: they are scaled down to fit, in proportion.
    let fit = |rate: u64| {
        let rate = rate.min(d.rate);
        match total > d.rate {
            true => ((u128::from(rate) * u128::from(d.rate) / u128::from(total)) as u64).max(8),
            false => rate,
        }
    };
    let mut leaf = |minor: u16, c: &Class| {
        let ceil = c.ceil.unwrap_or(d.rate).min(d.rate);
        classes.push(PlannedClass {
            parent: id(PARENT),
            id: id(minor),
            name: c.name.clone(),
            // The direction's burst: a lane held back by a late timer
            // catches up within it (a lane's own 1 ms is too little under load).
            htb: class(fit(c.rate), ceil, Some(direction_burst), c.priority),
            leaf: Some(leaf_tbf(ceil, frame)),
        });
    };
    let all = Class {
        name: "all".into(),
        rate: d.rate,
        ceil: None,
        priority: 0,
        criteria: Vec::new(),
        default: true,
    };
    let mut default_leaf = None;
    for (i, c) in qos.classes.iter().enumerate() {
        let minor = FIRST_LEAF + i as u16;
        leaf(minor, c);
        if c.default {
            default_leaf = Some(minor);
        }
    }
    let default_leaf = match (default_leaf, qos.classes.is_empty()) {
        (Some(minor), _) => minor,
        (None, true) => {
            leaf(FIRST_LEAF, &all);
            FIRST_LEAF
        }
        (None, false) => {
            let rest = Class {
                name: "default".into(),
                rate: rest_rate,
                priority: 7,
                ..all
            };
            leaf(IMPLICIT_DEFAULT, &rest);
            IMPLICIT_DEFAULT
        }
    };
    let mut filters = Vec::new();
    let lanes: Vec<(u32, &Class)> = qos
        .classes
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.criteria.is_empty())
        .map(|(i, c)| (id(FIRST_LEAF + i as u16), c))
        .collect();
    let qdisc_default = match &qos.scope {
        Scope::All | Scope::AllBut(_) => {
            if let Scope::AllBut(unshaped) = &qos.scope {
                for p in unshaped {
                    filters.push(PlannedFilter {
                        prio: 1,
                        matches: vec![side.remote(*p)],
                        class: id(UNLIMITED),
                    });
                }
            }
            for (class, c) in &lanes {
                for matches in class_matches(c, None, side) {
                    filters.push(PlannedFilter {
                        prio: 2,
                        matches,
                        class: *class,
                    });
                }
            }
            default_leaf
        }
        Scope::Only(shaped) => {
            for p in shaped {
                for (class, c) in &lanes {
                    for matches in class_matches(c, Some(*p), side) {
                        filters.push(PlannedFilter {
                            prio: 2,
                            matches,
                            class: *class,
                        });
                    }
                }
                filters.push(PlannedFilter {
                    prio: 3,
                    matches: vec![side.remote(*p)],
                    class: id(default_leaf),
                });
            }
            UNLIMITED
        }
    };
    classes.push(PlannedClass {
        parent: root,
        id: id(UNLIMITED),
        name: "unlimited".into(),
        htb: class(UNLIMITED_BITS, UNLIMITED_BITS, None, 0),
        leaf: None,
    });
    DevicePlan {
        qdisc: HtbQdisc {
            default_class: qdisc_default,
            ..HtbQdisc::default()
        },
        classes,
        filters,
    }
}

/// The u32 matches (one filter each) that take packets into class `c`; with
/// `within`, only packets whose far end is in that subnet too.
fn class_matches(c: &Class, within: Option<Prefix>, side: Side) -> Vec<Vec<U32Match>> {
    let mut out = Vec::new();
    for criterion in &c.criteria {
        let mut base = Vec::new();
        match *criterion {
            Criterion::Remote(p) => match within {
                None => base.push(side.remote(p)),
                Some(w) => match narrower(p, w) {
                    Some(n) => base.push(side.remote(n)),
                    None => continue, // disjoint: never both
                },
            },
            Criterion::Dscp(d) => base.push(U32Match::Dscp(d)),
            Criterion::Port { .. } => {}
        }
        if let (Some(w), false) = (within, matches!(criterion, Criterion::Remote(_))) {
            base.push(side.remote(w));
        }
        match *criterion {
            // The port at either end: a server's replies leave from it, a
            // client's requests go to it.
            Criterion::Port { protocol, port } => {
                for at in [U32Match::Dport(port), U32Match::Sport(port)] {
                    let mut m = base.clone();
                    m.extend([U32Match::Protocol(protocol), at]);
                    out.push(m);
                }
            }
            _ => out.push(base),
        }
    }
    out
}

/// The smaller of two prefixes when one holds the other; `None` when disjoint.
fn narrower(a: Prefix, b: Prefix) -> Option<Prefix> {
    let (wide, narrow) = if a.1 <= b.1 { (a, b) } else { (b, a) };
    let wide = IpNet::new(wide.0.into(), wide.1).ok()?;
    wide.contains(narrow.0.into()).then_some(narrow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QosConf;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn qos(v: serde_json::Value) -> QosSettings {
        QosConf::from_value(&v).unwrap()
    }

    fn ids(p: &DevicePlan) -> Vec<(u32, u32, &str)> {
        p.classes.iter().map(|c| (c.parent, c.id, c.name.as_str())).collect()
    }

    #[test]
    fn no_classes_is_one_leaf_at_the_rate() {
        let q = qos(json!({"egressRate": "10mbit"}));
        let p = device(&q, q.egress.unwrap(), Side::FromContainer, 1514);
        assert_eq!(
            ids(&p),
            [
                (0x1_0000, 0x1_0001, "rate"),
                (0x1_0001, 0x1_0010, "all"),
                (0x1_0000, 0x1_0002, "unlimited")
            ]
        );
        assert_eq!(p.qdisc.default_class, 0x10);
        assert!(p.filters.is_empty());
        let rate = &p.classes[0].htb;
        assert_eq!(rate.rate.bits_per_sec(), 10_000_000);
        assert_eq!(rate.burst, Some(5000), "4 ms at 10 Mbit/s");
        assert_eq!(rate.quantum, Some(125_000));
    }

    #[test]
    fn classes_filters_and_the_unshaped_subnets() {
        let q = qos(json!({"egressRate": "20mbit", "ingressRate": "20mbit",
            "classes": [{"name": "interactive", "rate": "10mbit", "ceil": "30mbit", "priority": 0,
                         "match": {"ports": [{"protocol": "tcp", "port": 22}], "dscp": 46}},
                        {"name": "bulk", "rate": "1mbit", "priority": 7, "default": true}],
            "unshapedSubnets": ["10.0.0.0/8"]}));
        let p = device(&q, q.egress.unwrap(), Side::FromContainer, 1514);
        assert_eq!(p.qdisc.default_class, 0x11, "bulk is the default");
        let interactive = &p.classes[1].htb;
        assert_eq!(
            interactive.ceil.unwrap().bits_per_sec(),
            20_000_000,
            "ceil capped at the rate"
        );
        assert_eq!(p.filters[0].matches, [U32Match::Dst(Ipv4Addr::new(10, 0, 0, 0), 8)]);
        assert_eq!(p.filters[0].class, 0x1_0002);
        let to_interactive: Vec<_> = p.filters.iter().filter(|f| f.class == 0x1_0010).collect();
        assert_eq!(to_interactive.len(), 3, "dport 22, sport 22, dscp 46");
        assert!(to_interactive[0].matches.contains(&U32Match::Dport(22)));
        assert!(to_interactive[1].matches.contains(&U32Match::Sport(22)));
        let back = device(&q, q.ingress.unwrap(), Side::ToContainer, 1514);
        assert_eq!(back.filters[0].matches, [U32Match::Src(Ipv4Addr::new(10, 0, 0, 0), 8)]);
    }

    #[test]
    fn only_shaped_subnets_default_to_unlimited() {
        let q = qos(json!({"egressRate": "5mbit", "shapedSubnets": ["192.0.2.0/24"],
            "classes": [{"name": "lan", "rate": "1mbit", "match": {"cidr": "192.0.2.128/25"}},
                        {"name": "far", "rate": "1mbit", "match": {"cidr": "198.51.100.0/24"}}]}));
        let p = device(&q, q.egress.unwrap(), Side::FromContainer, 1514);
        assert_eq!(p.qdisc.default_class, 2);
        assert!(p.classes.iter().any(|c| c.id == 0x1_000f), "an implicit default leaf");
        let lan: Vec<_> = p.filters.iter().filter(|f| f.class == 0x1_0010).collect();
        assert_eq!(lan[0].matches, [U32Match::Dst(Ipv4Addr::new(192, 0, 2, 128), 25)]);
        assert!(
            p.filters.iter().all(|f| f.class != 0x1_0011),
            "a class outside the shaped subnets never matches"
        );
        assert_eq!(p.filters.last().unwrap().class, 0x1_000f);
    }

    #[test]
    fn leaf_tbfs_cut_gso_packets_at_every_rate_below_half_a_gigabit() {
        let slow = leaf_tbf(1_000_000, 1514);
        assert_eq!((slow.rate.bits_per_sec(), slow.burst), (10_000_000, 3028));
        assert_eq!(slow.limit, TbfLimit::Bytes(196_608));
        let fast = leaf_tbf(100_000_000, 1514);
        assert_eq!((fast.burst, fast.limit), (12_500, TbfLimit::Bytes(1_250_000)));
        assert_eq!(leaf_tbf(10_000_000_000, 9014).burst, 65_535);
    }

    #[test]
    fn guarantees_over_the_rate_are_scaled_to_fit() {
        // The issue's example: 10 + 1 Mbit/s of guarantees under a 10 Mbit/s ingress.
        let q = qos(json!({"ingressRate": "10mbit",
            "classes": [{"name": "interactive", "rate": "10mbit", "match": {"ports": [{"port": 22}]}},
                        {"name": "bulk", "rate": "1mbit", "default": true}]}));
        let p = device(&q, q.ingress.unwrap(), Side::ToContainer, 1514);
        let rates: Vec<u64> = p.classes[1..3].iter().map(|c| c.htb.rate.bits_per_sec()).collect();
        assert_eq!(rates, [9_090_904, 909_088]);
        assert!(rates.iter().sum::<u64>() <= 10_000_000);
    }

    #[test]
    fn default_bursts() {
        assert_eq!(
            default_burst(1_000_000),
            3200,
            "two frames: 4 ms at 1 Mbit/s is 500 bytes"
        );
        assert_eq!(default_burst(100_000_000), 50_000);
        assert_eq!(default_burst(10_000_000_000), 5_000_000);
    }
}
