//! HTB: the root qdisc (`tc_htb_glob`) and classes (`tc_htb_opt` plus rate
//! tables and 64-bit rates), encoded as the netlink attributes iproute2 sends.
//! Pure: struct in, `TCA_OPTIONS` children out.

use super::psched::Psched;
use super::{Rate, RawNla, ratespec};
use crate::netlink::{NetlinkError, Result};

pub const TCA_HTB_PARMS: u16 = 1;
pub const TCA_HTB_INIT: u16 = 2;
pub const TCA_HTB_CTAB: u16 = 3;
pub const TCA_HTB_RTAB: u16 = 4;
pub const TCA_HTB_DIRECT_QLEN: u16 = 5;
pub const TCA_HTB_RATE64: u16 = 6;
pub const TCA_HTB_CEIL64: u16 = 7;
/// `TC_HTB_PROTOVER`.
pub const HTB_VERSION: u32 = 3;
/// The MTU iproute2 assumes for HTB rate tables and default bursts.
pub const HTB_MTU: u32 = 1600;

/// An HTB root qdisc (`tc qdisc add … htb default D r2q R`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbQdisc {
    /// Minor id of the class unclassified traffic goes to (0: none, sent
    /// direct, unshaped).
    pub default_class: u16,
    /// Rate-to-quantum divisor for classes without an explicit quantum
    /// (iproute2's default is 10).
    pub r2q: u32,
    /// Packets queued in the direct queue (`direct_qlen`), if set.
    pub direct_qlen: Option<u32>,
}

impl Default for HtbQdisc {
    fn default() -> Self {
        HtbQdisc {
            default_class: 0,
            r2q: 10,
            direct_qlen: None,
        }
    }
}

impl HtbQdisc {
    /// `TCA_HTB_INIT` (`struct tc_htb_glob`: version, rate2quantum, defcls,
    /// debug, direct_pkts) and optionally `TCA_HTB_DIRECT_QLEN`.
    pub fn encode(&self) -> Result<Vec<RawNla>> {
        if self.r2q == 0 {
            return Err(NetlinkError::invalid("r2q", "must be at least 1"));
        }
        let mut glob = Vec::with_capacity(20);
        for word in [HTB_VERSION, self.r2q, u32::from(self.default_class), 0, 0] {
            glob.extend_from_slice(&word.to_ne_bytes());
        }
        let mut nlas = vec![RawNla::new(TCA_HTB_INIT, glob)];
        if let Some(q) = self.direct_qlen {
            nlas.push(RawNla::new(TCA_HTB_DIRECT_QLEN, q.to_ne_bytes().to_vec()));
        }
        Ok(nlas)
    }
}

/// An HTB class (`tc class add … htb rate R ceil C burst B cburst CB prio P
/// quantum Q`). Rates are bytes/s ([`Rate`]); bursts are bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClass {
    /// Guaranteed rate.
    pub rate: Rate,
    /// Maximum rate when borrowing from the parent; `None` = `rate`.
    pub ceil: Option<Rate>,
    /// Bytes that may be sent at full speed above `rate`; `None` = iproute2's
    /// default `rate / HZ + 1600`.
    pub burst: Option<u32>,
    /// Bytes that may be sent at full speed above `ceil`; `None` = default as
    /// for `burst`.
    pub cburst: Option<u32>,
    /// Priority 0 (highest) to 7.
    pub prio: u32,
    /// Bytes served per round; `None` = the kernel derives it from r2q.
    pub quantum: Option<u32>,
}

impl HtbClass {
    /// A class with rate = ceil = `rate` and default bursts.
    pub fn new(rate: Rate) -> HtbClass {
        HtbClass {
            rate,
            ceil: None,
            burst: None,
            cburst: None,
            prio: 0,
            quantum: None,
        }
    }

    /// The effective ceil.
    pub fn ceil(&self) -> Rate {
        self.ceil.unwrap_or(self.rate)
    }

    fn default_burst(rate: Rate, ps: &Psched) -> u32 {
        let per_tick = rate.bytes_per_sec() / u64::from(ps.hz.max(1));
        u32::try_from(per_tick).unwrap_or(u32::MAX).saturating_add(HTB_MTU)
    }

    /// The burst in bytes that will be encoded (explicit or default).
    pub fn effective_burst(&self, ps: &Psched) -> u32 {
        self.burst.unwrap_or_else(|| Self::default_burst(self.rate, ps))
    }

    /// The cburst in bytes that will be encoded (explicit or default).
    pub fn effective_cburst(&self, ps: &Psched) -> u32 {
        self.cburst.unwrap_or_else(|| Self::default_burst(self.ceil(), ps))
    }

    /// `TCA_HTB_RATE64`/`CEIL64` (only when a rate needs 64 bits, like
    /// iproute2), `TCA_HTB_PARMS` (`struct tc_htb_opt`), `TCA_HTB_RTAB`,
    /// `TCA_HTB_CTAB`.
    pub fn encode(&self, ps: &Psched) -> Result<Vec<RawNla>> {
        let rate = self.rate;
        let ceil = self.ceil();
        if rate.bytes_per_sec() == 0 {
            return Err(NetlinkError::invalid("rate", "must be greater than 0"));
        }
        if ceil < rate {
            return Err(NetlinkError::invalid(
                "ceil",
                format!(
                    "{} B/s is below rate {} B/s",
                    ceil.bytes_per_sec(),
                    rate.bytes_per_sec()
                ),
            ));
        }
        if self.prio > 7 {
            return Err(NetlinkError::invalid("prio", format!("{} is not in 0..=7", self.prio)));
        }
        let burst = self.effective_burst(ps);
        let cburst = self.effective_cburst(ps);
        if burst == 0 || cburst == 0 {
            return Err(NetlinkError::invalid("burst", "must be greater than 0"));
        }
        let rate32 = rate.saturating_u32();
        let ceil32 = ceil.saturating_u32();
        let (rcell, rtab) = ps.rate_table(rate32, HTB_MTU);
        let (ccell, ctab) = ps.rate_table(ceil32, HTB_MTU);

        let mut opt = Vec::with_capacity(44);
        opt.extend_from_slice(&ratespec(rcell, rate32));
        opt.extend_from_slice(&ratespec(ccell, ceil32));
        for word in [
            ps.xmittime(rate, burst),
            ps.xmittime(ceil, cburst),
            self.quantum.unwrap_or(0),
            0, // level: set by the kernel
            self.prio,
        ] {
            opt.extend_from_slice(&word.to_ne_bytes());
        }

        let mut nlas = Vec::new();
        if rate.bytes_per_sec() >= 1 << 32 {
            nlas.push(RawNla::new(TCA_HTB_RATE64, rate.bytes_per_sec().to_ne_bytes().to_vec()));
        }
        if ceil.bytes_per_sec() >= 1 << 32 {
            nlas.push(RawNla::new(TCA_HTB_CEIL64, ceil.bytes_per_sec().to_ne_bytes().to_vec()));
        }
        nlas.push(RawNla::new(TCA_HTB_PARMS, opt));
        nlas.push(RawNla::new(TCA_HTB_RTAB, table_bytes(&rtab)));
        nlas.push(RawNla::new(TCA_HTB_CTAB, table_bytes(&ctab)));
        Ok(nlas)
    }
}

fn table_bytes(t: &[u32; 256]) -> Vec<u8> {
    t.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(b: &[u8]) -> Vec<u32> {
        b.chunks(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn qdisc_glob_layout() {
        let q = HtbQdisc {
            default_class: 0x30,
            r2q: 10,
            direct_qlen: None,
        };
        let nlas = q.encode().unwrap();
        assert_eq!(nlas.len(), 1);
        assert_eq!(nlas[0].kind, TCA_HTB_INIT);
        assert_eq!(words(&nlas[0].value), vec![3, 10, 0x30, 0, 0]);
        let q = HtbQdisc {
            direct_qlen: Some(7),
            ..q
        };
        assert_eq!(
            q.encode().unwrap()[1],
            RawNla::new(TCA_HTB_DIRECT_QLEN, 7u32.to_ne_bytes().to_vec())
        );
        assert!(HtbQdisc { r2q: 0, ..q }.encode().is_err());
    }

    #[test]
    fn class_opt_layout() {
        // tc class add … htb rate 1mbit ceil 2mbit burst 1600 cburst 3200 prio 2
        let ps = Psched::default();
        let c = HtbClass {
            rate: Rate::from_bits_per_sec(1_000_000),
            ceil: Some(Rate::from_bits_per_sec(2_000_000)),
            burst: Some(1600),
            cburst: Some(3200),
            prio: 2,
            quantum: None,
        };
        let nlas = c.encode(&ps).unwrap();
        let kinds: Vec<u16> = nlas.iter().map(|n| n.kind).collect();
        assert_eq!(kinds, vec![TCA_HTB_PARMS, TCA_HTB_RTAB, TCA_HTB_CTAB]);
        let opt = &nlas[0].value;
        assert_eq!(opt.len(), 44);
        // tc_ratespec: cell_log 3, linklayer 1 (ethernet), overhead 0,
        // cell_align -1, mpu 0, rate 125000.
        assert_eq!(&opt[0..4], &[3, 1, 0, 0]);
        assert_eq!(&opt[4..6], &(-1i16).to_ne_bytes());
        assert_eq!(&opt[6..8], &[0, 0]);
        assert_eq!(words(&opt[8..12]), vec![125_000]);
        assert_eq!(words(&opt[20..24]), vec![250_000]);
        // buffer 1600 B @125000 B/s = 12800 us = 200000 ticks; cbuffer same.
        assert_eq!(words(&opt[24..44]), vec![200_000, 200_000, 0, 0, 2]);
        assert_eq!(nlas[1].value.len(), 1024);
        assert_eq!(words(&nlas[1].value)[0], 1000);
    }

    #[test]
    fn class_64bit_rates_and_defaults() {
        let ps = Psched::default();
        let big = Rate::from_bytes_per_sec(5_000_000_000);
        let c = HtbClass::new(big);
        let nlas = c.encode(&ps).unwrap();
        let kinds: Vec<u16> = nlas.iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            vec![
                TCA_HTB_RATE64,
                TCA_HTB_CEIL64,
                TCA_HTB_PARMS,
                TCA_HTB_RTAB,
                TCA_HTB_CTAB
            ]
        );
        assert_eq!(nlas[0].value, 5_000_000_000u64.to_ne_bytes().to_vec());
        assert_eq!(words(&nlas[2].value[8..12]), vec![u32::MAX]);
        // default burst = rate / HZ + mtu
        assert_eq!(c.effective_burst(&ps), 5 + 1600);
    }

    #[test]
    fn class_rejects_bad_values() {
        let ps = Psched::default();
        let r = Rate::from_bytes_per_sec(1000);
        assert!(HtbClass::new(Rate::from_bytes_per_sec(0)).encode(&ps).is_err());
        assert!(
            HtbClass {
                ceil: Some(Rate::from_bytes_per_sec(10)),
                ..HtbClass::new(r)
            }
            .encode(&ps)
            .is_err()
        );
        assert!(
            HtbClass {
                prio: 8,
                ..HtbClass::new(r)
            }
            .encode(&ps)
            .is_err()
        );
    }
}
