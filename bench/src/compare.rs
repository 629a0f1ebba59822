//! Two builds' whole-process ADD and DEL, measured interleaved in one run
//! (before, after, after, before, …: a slow minute of the machine weighs on
//! both alike); each build's figure is the median of its measurements'
//! medians, beside their range.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use netsvc_tests::timing::median;
use serde::Serialize;

use crate::exec::{netsvc_plugins_in, time_plugin};

/// One plugin's figures under both builds (milliseconds).
#[derive(Debug, Default, Serialize)]
pub struct Pair {
    pub add_before: Vec<f64>,
    pub add_after: Vec<f64>,
    pub del_before: Vec<f64>,
    pub del_after: Vec<f64>,
}

pub type Comparison = BTreeMap<&'static str, Pair>;

pub fn run(before: &Path, after: &Path, rounds: usize, repeat: usize) -> Result<Comparison> {
    let only = super::exec::only();
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let mut out = Comparison::new();
    for i in 0..repeat {
        let order = if i % 2 == 0 { [before, after] } else { [after, before] };
        for dir in order {
            for (name, binary, conf) in netsvc_plugins_in(dir).into_iter().filter(|(n, ..)| wanted(n)) {
                eprintln!("  {name} from {} ({}/{repeat})", dir.display(), i + 1);
                let t = time_plugin(name, binary, conf, rounds)?;
                let pair = out.entry(name).or_default();
                if dir == before {
                    pair.add_before.push(t.add.median_ms);
                    pair.del_before.push(t.del.median_ms);
                } else {
                    pair.add_after.push(t.add.median_ms);
                    pair.del_after.push(t.del.median_ms);
                }
            }
        }
    }
    Ok(out)
}

/// A Markdown table: each plugin's ADD and DEL, before and after.
pub fn table(c: &Comparison) -> String {
    let fig = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        format!("{:.2} ({lo:.2}–{hi:.2})", median(&mut v.to_vec()))
    };
    let delta = |a: &[f64], b: &[f64]| median(&mut b.to_vec()) - median(&mut a.to_vec());
    let mut t = String::from(
        "| plugin | ADD before, ms | ADD after, ms | Δ | DEL before, ms | DEL after, ms | Δ |\n|---|---|---|---|---|---|---|\n",
    );
    for (name, p) in c {
        t.push_str(&format!(
            "| {name} | {} | {} | {:+.2} | {} | {} | {:+.2} |\n",
            fig(&p.add_before),
            fig(&p.add_after),
            delta(&p.add_before, &p.add_after),
            fig(&p.del_before),
            fig(&p.del_after),
            delta(&p.del_before, &p.del_after),
        ));
    }
    t
}
