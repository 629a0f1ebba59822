//! Samples summed up the same way in every section.

use std::time::Duration;

use netsvc_tests::timing::quantile;
use serde::{Deserialize, Serialize};

/// Median and 90th percentile of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stats {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Stats {
            median_ms: quantile(&mut ms, 0.5),
            p90_ms: quantile(&mut ms, 0.9),
            n: ms.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_of_ten() {
        let samples: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let s = Stats::of(&samples);
        assert_eq!((s.median_ms, s.p90_ms, s.n), (6.0, 9.0, 10));
    }
}
