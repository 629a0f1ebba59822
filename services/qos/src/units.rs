//! Rates and sizes as users write them: a JSON number is bits/s or bits (the
//! reference `bandwidth` plugin's unit), a string carries a unit as tc(8)
//! writes it (`20mbit`, `256kb`). A string without a unit is refused: tc
//! reads a bare number as bytes, the reference plugin as bits.

use netsvc_core::cni::CniError;
use serde::{Deserialize, Serialize};

/// A rate or a size field: a number, or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Amount {
    Bits(u64),
    Text(String),
}

/// Rate units: bits per second (SI and IEC), or bytes per second (`…bps`,
/// as tc's `KBps`; case does not matter, like tc).
const RATE_UNITS: &[(&str, f64)] = &[
    ("bit", 1.0),
    ("kbit", 1e3),
    ("mbit", 1e6),
    ("gbit", 1e9),
    ("tbit", 1e12),
    ("kibit", 1024.0),
    ("mibit", 1048576.0),
    ("gibit", 1073741824.0),
    ("bps", 8.0),
    ("kbps", 8e3),
    ("mbps", 8e6),
    ("gbps", 8e9),
];

/// Size units in bytes, as tc's `get_size`: `kb`/`k` are KiB, `kbit` is
/// 1024 bits.
const SIZE_UNITS: &[(&str, f64)] = &[
    ("b", 1.0),
    ("k", 1024.0),
    ("kb", 1024.0),
    ("m", 1048576.0),
    ("mb", 1048576.0),
    ("g", 1073741824.0),
    ("gb", 1073741824.0),
    ("bit", 0.125),
    ("kbit", 128.0),
    ("mbit", 131072.0),
    ("gbit", 134217728.0),
];

/// `text` as number × unit from `units`; `None` when it is not one.
fn scaled(text: &str, units: &[(&str, f64)]) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    if unit.is_empty() {
        return Err(format!("{text:?} has no unit"));
    }
    let scale = units
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|(_, scale)| *scale)
        .ok_or_else(|| format!("{unit:?} in {text:?} is not a known unit"))?;
    Ok(value * scale)
}

fn names(units: &[(&str, f64)]) -> String {
    units.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// A rate in bits per second; `field` names it in errors.
pub fn rate_bits(field: &str, amount: &Amount) -> Result<u64, CniError> {
    let bits = match amount {
        Amount::Bits(b) => *b,
        Amount::Text(t) => scaled(t, RATE_UNITS)
            .map_err(|why| CniError::invalid_config(field, format!("{why} (rate units: {})", names(RATE_UNITS))))?
            .round() as u64,
    };
    if bits < 8 {
        return Err(CniError::invalid_config(field, format!("{amount:?} is below 8 bit/s")));
    }
    Ok(bits)
}

/// A size in bytes (a number is bits, rounded up to whole bytes); `field` names it.
pub fn size_bytes(field: &str, amount: &Amount) -> Result<u64, CniError> {
    let bytes = match amount {
        Amount::Bits(b) => b.div_ceil(8),
        Amount::Text(t) => scaled(t, SIZE_UNITS)
            .map_err(|why| CniError::invalid_config(field, format!("{why} (size units: {})", names(SIZE_UNITS))))?
            .ceil() as u64,
    };
    if bytes == 0 {
        return Err(CniError::invalid_config(field, "must be more than 0"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Amount {
        Amount::Text(s.into())
    }

    #[test]
    fn rates_in_bits_and_units() {
        assert_eq!(rate_bits("r", &Amount::Bits(10_000_000)).unwrap(), 10_000_000);
        assert_eq!(rate_bits("r", &text("20mbit")).unwrap(), 20_000_000);
        assert_eq!(rate_bits("r", &text("1.5Gbit")).unwrap(), 1_500_000_000);
        assert_eq!(rate_bits("r", &text("100kbit")).unwrap(), 100_000);
        assert_eq!(rate_bits("r", &text("1kibit")).unwrap(), 1024);
        assert_eq!(rate_bits("r", &text("1MBps")).unwrap(), 8_000_000);
    }

    #[test]
    fn sizes_as_tc_reads_them() {
        assert_eq!(size_bytes("b", &Amount::Bits(1_000_000)).unwrap(), 125_000);
        assert_eq!(size_bytes("b", &Amount::Bits(9)).unwrap(), 2);
        assert_eq!(size_bytes("b", &text("256kb")).unwrap(), 262_144);
        assert_eq!(size_bytes("b", &text("1mb")).unwrap(), 1_048_576);
        assert_eq!(size_bytes("b", &text("1500b")).unwrap(), 1500);
        assert_eq!(size_bytes("b", &text("8kbit")).unwrap(), 1024);
    }

    #[test]
    fn bad_amounts_name_the_field() {
        for (amount, why) in [
            (text("20mbps!"), "not a known unit"),
            (text("20 furlongs"), "not a known unit"),
            (text("fast"), "does not start with a number"),
            (text("1000"), "has no unit"),
            (Amount::Bits(0), "below 8 bit/s"),
        ] {
            let e = rate_bits("egressRate", &amount).unwrap_err();
            assert_eq!(e.code().as_u32(), 7);
            assert!(
                e.msg.contains("egressRate") && e.msg.contains(why),
                "{amount:?}: {}",
                e.msg
            );
        }
        let e = size_bytes("egressBurst", &text("12parsecs")).unwrap_err();
        assert!(
            e.msg.contains("egressBurst") && e.msg.contains("size units"),
            "{}",
            e.msg
        );
        assert!(size_bytes("egressBurst", &Amount::Bits(0)).is_err());
    }
}
