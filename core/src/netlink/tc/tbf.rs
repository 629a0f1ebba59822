//! TBF (token bucket filter), as the CNI bandwidth plugin uses it:
//! `tc qdisc add … tbf rate R burst B (limit L | latency T)`. Pure encoder.

use std::time::Duration;

use super::psched::Psched;
use super::{Rate, RawNla, ratespec};
use crate::netlink::{NetlinkError, Result};

pub const TCA_TBF_PARMS: u16 = 1;
pub const TCA_TBF_RTAB: u16 = 2;
pub const TCA_TBF_PTAB: u16 = 3;
pub const TCA_TBF_RATE64: u16 = 4;
pub const TCA_TBF_PRATE64: u16 = 5;
pub const TCA_TBF_BURST: u16 = 6;

/// How much may wait in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TbfLimit {
    /// At most this many bytes queued.
    Bytes(u32),
    /// At most this long a wait: limit = rate × latency + burst (iproute2).
    Latency(Duration),
}

/// A TBF qdisc. `rate` is bytes/s, `burst` is the bucket size in bytes (must
/// hold at least one MTU-sized packet to pass traffic). No peak rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    pub rate: Rate,
    pub burst: u32,
    pub limit: TbfLimit,
}

impl Tbf {
    /// The queue limit in bytes that will be encoded.
    pub fn limit_bytes(&self) -> u32 {
        match self.limit {
            TbfLimit::Bytes(b) => b,
            TbfLimit::Latency(lat) => {
                let usec = lat.as_micros() as f64;
                let lim = self.rate.bytes_per_sec() as f64 * usec / 1_000_000.0 + f64::from(self.burst);
                if lim >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    lim as u32
                }
            }
        }
    }

    /// `TCA_TBF_PARMS` (`struct tc_tbf_qopt`: rate, peakrate, limit, buffer
    /// in ticks, mtu), `TCA_TBF_BURST` (bytes), `TCA_TBF_RATE64` when the
    /// rate needs 64 bits, and `TCA_TBF_RTAB` — in iproute2's order.
    pub fn encode(&self, ps: &Psched) -> Result<Vec<RawNla>> {
        if self.rate.bytes_per_sec() == 0 {
            return Err(NetlinkError::invalid("rate", "must be greater than 0"));
        }
        if self.burst == 0 {
            return Err(NetlinkError::invalid("burst", "must be greater than 0"));
        }
        let limit = self.limit_bytes();
        if limit == 0 {
            return Err(NetlinkError::invalid("limit", "must be greater than 0"));
        }
        let rate32 = self.rate.saturating_u32();
        let (cell_log, rtab) = ps.rate_table(rate32, 0);
        let mut opt = Vec::with_capacity(36);
        opt.extend_from_slice(&ratespec(cell_log, rate32));
        opt.extend_from_slice(&[0u8; 12]); // no peak rate
        for word in [limit, ps.xmittime(self.rate, self.burst), 0] {
            opt.extend_from_slice(&word.to_ne_bytes());
        }
        let mut nlas = vec![
            RawNla::new(TCA_TBF_PARMS, opt),
            RawNla::new(TCA_TBF_BURST, self.burst.to_ne_bytes().to_vec()),
        ];
        if self.rate.bytes_per_sec() >= 1 << 32 {
            nlas.push(RawNla::new(
                TCA_TBF_RATE64,
                self.rate.bytes_per_sec().to_ne_bytes().to_vec(),
            ));
        }
        nlas.push(RawNla::new(
            TCA_TBF_RTAB,
            rtab.iter().flat_map(|w| w.to_ne_bytes()).collect(),
        ));
        Ok(nlas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_layout() {
        // tc qdisc add … tbf rate 8mbit burst 10kb latency 25ms
        let ps = Psched::default();
        let t = Tbf {
            rate: Rate::from_bits_per_sec(8_000_000),
            burst: 10 * 1024,
            limit: TbfLimit::Latency(Duration::from_millis(25)),
        };
        // 1_000_000 B/s * 0.025 s + 10240
        assert_eq!(t.limit_bytes(), 35_240);
        let nlas = t.encode(&ps).unwrap();
        let kinds: Vec<u16> = nlas.iter().map(|n| n.kind).collect();
        assert_eq!(kinds, vec![TCA_TBF_PARMS, TCA_TBF_BURST, TCA_TBF_RTAB]);
        let opt = &nlas[0].value;
        assert_eq!(opt.len(), 36);
        assert_eq!(&opt[0..2], &[3, 1]);
        assert_eq!(&opt[8..12], &1_000_000u32.to_ne_bytes());
        assert_eq!(&opt[12..24], &[0u8; 12]);
        assert_eq!(&opt[24..28], &35_240u32.to_ne_bytes());
        // 10240 B at 1e6 B/s = 10240 us = 160000 ticks
        assert_eq!(&opt[28..32], &160_000u32.to_ne_bytes());
        assert_eq!(&opt[32..36], &0u32.to_ne_bytes());
        assert_eq!(nlas[1].value, 10_240u32.to_ne_bytes().to_vec());
        assert_eq!(nlas[2].value.len(), 1024);
    }

    #[test]
    fn tbf_rejects_zero() {
        let ps = Psched::default();
        let t = Tbf {
            rate: Rate::from_bytes_per_sec(0),
            burst: 1,
            limit: TbfLimit::Bytes(1),
        };
        assert!(t.encode(&ps).is_err());
        let t = Tbf {
            rate: Rate::from_bytes_per_sec(1),
            burst: 0,
            ..t
        };
        assert!(t.encode(&ps).is_err());
        let t = Tbf {
            burst: 1,
            limit: TbfLimit::Bytes(0),
            ..t
        };
        assert!(t.encode(&ps).is_err());
        let t = Tbf {
            rate: Rate::from_bytes_per_sec(5_000_000_000),
            burst: 1,
            limit: TbfLimit::Bytes(1),
        };
        assert_eq!(t.encode(&ps).unwrap()[2].kind, TCA_TBF_RATE64);
    }
}
