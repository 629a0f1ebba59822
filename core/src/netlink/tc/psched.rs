//! The packet scheduler clock: converting between bytes at a rate and the
//! "ticks" HTB and TBF store their buffers in, exactly as iproute2's
//! `tc_core.c` does (same truncations, so our numbers equal `tc`'s).
//!
//! `/proc/net/psched` holds four hex words: `t2us us2t clock_res hz`. On every
//! kernel since 2.6.x it reads `000003e8 00000040 000f4240 3b9aca00`: one tick
//! is 64 ns, i.e. 15.625 ticks per microsecond.

use super::Rate;
use crate::netlink::{NetlinkError, Result};

const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;

/// The tick conversion factors read from `/proc/net/psched`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psched {
    /// Ticks per microsecond.
    pub tick_in_usec: f64,
    /// The scheduler's HZ as iproute2's `get_hz()` reports it.
    pub hz: u32,
}

impl Default for Psched {
    /// The values every modern kernel reports.
    fn default() -> Self {
        Psched {
            tick_in_usec: 15.625,
            hz: 1_000_000_000,
        }
    }
}

impl Psched {
    /// Parse the contents of `/proc/net/psched`.
    pub fn parse(text: &str) -> Result<Psched> {
        let words: Vec<u32> = text
            .split_whitespace()
            .map(|w| u32::from_str_radix(w, 16))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| NetlinkError::invalid("/proc/net/psched", format!("{text:?}: {e}")))?;
        let [t2us, us2t, clock_res, hz_word] = words[..] else {
            return Err(NetlinkError::invalid(
                "/proc/net/psched",
                format!("{text:?}: expected 4 hex words"),
            ));
        };
        if us2t == 0 || t2us == 0 {
            return Err(NetlinkError::invalid(
                "/proc/net/psched",
                format!("{text:?}: zero factor"),
            ));
        }
        let t2us = if clock_res == 1_000_000_000 { us2t } else { t2us };
        let clock_factor = f64::from(clock_res) / TIME_UNITS_PER_SEC;
        let tick_in_usec = f64::from(t2us) / f64::from(us2t) * clock_factor;
        let hz = if clock_res == 1_000_000 && hz_word != 0 {
            hz_word
        } else {
            100
        };
        Ok(Psched { tick_in_usec, hz })
    }

    /// Read `/proc/net/psched` (the same in every namespace).
    pub fn from_proc() -> Result<Psched> {
        let text = std::fs::read_to_string("/proc/net/psched").map_err(|source| NetlinkError::Io {
            what: "read /proc/net/psched".into(),
            source,
        })?;
        Psched::parse(&text)
    }

    /// `tc_core_time2tick`: microseconds (truncated to an integer) to ticks.
    pub fn time2tick(&self, usec: u32) -> u32 {
        sat_u32(f64::from(usec) * self.tick_in_usec)
    }

    /// `tc_core_tick2time`: ticks to whole microseconds.
    pub fn tick2time(&self, ticks: u32) -> u32 {
        sat_u32(f64::from(ticks) / self.tick_in_usec)
    }

    /// `tc_calc_xmittime`: ticks needed to send `size` bytes at `rate`.
    pub fn xmittime(&self, rate: Rate, size: u32) -> u32 {
        let rate = rate.bytes_per_sec().max(1) as f64;
        self.time2tick(sat_u32(TIME_UNITS_PER_SEC * (f64::from(size) / rate)))
    }

    /// `tc_calc_xmitsize`: bytes sent in `ticks` at `rate` (how `tc` prints a
    /// burst back from the ticks the kernel reports).
    pub fn xmitsize(&self, rate: Rate, ticks: u32) -> u32 {
        sat_u32(rate.bytes_per_sec() as f64 * f64::from(self.tick2time(ticks)) / TIME_UNITS_PER_SEC)
    }

    /// `tc_calc_rtable` for an Ethernet link layer, `mpu` 0: the 256-slot rate
    /// table (transmit ticks per size cell) and the cell log it chose for `mtu`
    /// (0 means 2047). The rate is the 32-bit `tc_ratespec.rate`.
    pub fn rate_table(&self, rate32: u32, mtu: u32) -> (u8, [u32; 256]) {
        let mtu = if mtu == 0 { 2047 } else { mtu };
        let mut cell_log = 0u8;
        while (mtu >> cell_log) > 255 {
            cell_log += 1;
        }
        let mut table = [0u32; 256];
        let rate = Rate::from_bytes_per_sec(u64::from(rate32));
        for (i, slot) in table.iter_mut().enumerate() {
            let size = ((i as u32) + 1) << cell_log;
            *slot = self.xmittime(rate, size);
        }
        (cell_log, table)
    }
}

fn sat_u32(v: f64) -> u32 {
    if v.is_nan() || v <= 0.0 {
        0
    } else if v >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        v as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modern_kernel_values() {
        let p = Psched::parse("000003e8 00000040 000f4240 3b9aca00\n").unwrap();
        assert_eq!(p, Psched::default());
        assert!(Psched::parse("nonsense").is_err());
        assert!(Psched::parse("1 2 3").is_err());
    }

    #[test]
    fn xmittime_matches_iproute2() {
        let p = Psched::default();
        // 1 Mbit/s = 125000 B/s; 1600 bytes take 12800 us = 200000 ticks.
        let r = Rate::from_bits_per_sec(1_000_000);
        assert_eq!(p.xmittime(r, 1600), 200_000);
        assert_eq!(p.xmitsize(r, 200_000), 1600);
        // 10 kbit burst at 8 Mbit/s: 10240 us -> 160000 ticks.
        let r = Rate::from_bits_per_sec(8_000_000);
        assert_eq!(p.xmittime(r, 10240), 160_000);
    }

    #[test]
    fn rate_table_cell_log() {
        let p = Psched::default();
        let (cell_log, table) = p.rate_table(125_000, 1600);
        assert_eq!(cell_log, 3);
        // slot 0 covers 8 bytes: 64 us = 1000 ticks.
        assert_eq!(table[0], 1000);
        assert_eq!(table[255], p.xmittime(Rate::from_bytes_per_sec(125_000), 2048));
        assert_eq!(p.rate_table(125_000, 0).0, 3);
    }
}
