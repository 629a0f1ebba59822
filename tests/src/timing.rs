//! What the benchmarks share: running a plugin binary as a runtime would,
//! and summing up samples.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One whole-process call of the plugin `binary` with the CNI environment
/// `env` and `stdin` (it inherits the calling thread's namespace); panics
/// with the plugin's answer when it fails.
pub fn run_plugin<K, V>(binary: &Path, env: impl IntoIterator<Item = (K, V)>, stdin: &[u8])
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    plugin_output(Command::new(binary).envs(env), stdin);
}

/// Runs the plugin call `cmd` (binary, environment, namespace set) with
/// `stdin`; what it printed, or a panic with its answer when it failed.
pub fn plugin_output(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let out = crate::process::with_stdin(cmd, stdin).unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{:?}: {} {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The sample at quantile `q` (0.5 the median, 0.9 the 90th percentile),
/// by nearest rank once sorted; the default (zero) when there are none.
/// Every figure of the tests, benches and report is taken this one way.
pub fn quantile<T: Copy + Default + PartialOrd>(samples: &mut [T], q: f64) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match samples.len() {
        0 => T::default(),
        n => samples[((n - 1) as f64 * q).round() as usize],
    }
}

/// The median of `samples` (zero when there are none).
pub fn median<T: Copy + Default + PartialOrd>(samples: &mut [T]) -> T {
    quantile(samples, 0.5)
}

/// A duration in milliseconds, two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Whole-process ADD+DEL samples of one plugin, for criterion's `iter_custom`.
#[derive(Debug, Default)]
pub struct AddDel {
    adds: Vec<Duration>,
    dels: Vec<Duration>,
    pairs: Vec<Duration>,
}

impl AddDel {
    /// Times `iters` rounds of `add` then `del`; `between` runs after each
    /// round, untimed. The total of the timed parts.
    pub fn run(
        &mut self,
        iters: u64,
        mut add: impl FnMut(),
        mut del: impl FnMut(),
        mut between: impl FnMut(),
    ) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = std::time::Instant::now();
            add();
            let a = t.elapsed();
            del();
            let d = t.elapsed();
            between();
            self.adds.push(a);
            self.dels.push(d - a);
            self.pairs.push(d);
            total += d;
        }
        total
    }

    /// The median of ADD+DEL, or `None` before any sample.
    pub fn median(&mut self) -> Option<Duration> {
        (!self.pairs.is_empty()).then(|| median(&mut self.pairs))
    }

    /// `whole process ADD+DEL NAME: median … (n=…; ADD median …, DEL median …)`.
    pub fn summary(&mut self, name: &str) -> String {
        format!(
            "whole process ADD+DEL {name}: median {} (n={}; ADD median {}, DEL median {})",
            ms(median(&mut self.pairs)),
            self.pairs.len(),
            ms(median(&mut self.adds)),
            ms(median(&mut self.dels))
        )
    }
}

/// The directory `bench/run` collects figures in: each bench that finds it
/// set writes `<dir>/<section>.json` for the report.
pub const BENCH_OUT_ENV: &str = "NETSVC_BENCH_OUT";

/// Writes `figures` as `$NETSVC_BENCH_OUT/<section>.json`, when set.
pub fn record(section: &str, figures: &serde_json::Value) {
    let Some(dir) = std::env::var_os(BENCH_OUT_ENV) else {
        return;
    };
    let path = Path::new(&dir).join(format!("{section}.json"));
    let text = serde_json::to_string_pretty(figures).expect("figures are JSON");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A duration as milliseconds, for figures.
pub fn as_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
