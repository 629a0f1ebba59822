//! `report.md` and its charts, from the figures `bench/run` collected in
//! `<dir>/raw/`: `machine.json`, `exec.json`, `qos.json` (this crate's) and
//! `firewall.json`, `lb.json`, `dns.json`, `vpn.json` (the benches' and
//! scripts' own, written when `NETSVC_BENCH_OUT` is set). A section whose
//! figures are missing says so.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::exec::{ExecReport, Timed};
use crate::plots::{self, Bar, Curve};
use crate::qos::Accuracy;

/// The targets.
const ADD_TARGET_MS: f64 = 5.0;
const CHAIN_RATIO_TARGET: f64 = 0.25;

fn read<T: DeserializeOwned>(raw: &Path, section: &str) -> Result<Option<T>> {
    let path = raw.join(format!("{section}.json"));
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("parse {}", path.display()))
}

fn mark(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

pub fn write(dir: &Path) -> Result<()> {
    plots::init()?;
    let raw = dir.join("raw");
    let mut md = String::from("# netsvc benchmark report\n\n");
    match read::<Value>(&raw, "machine")? {
        Some(m) => writeln!(
            md,
            "Taken {} on {} ({} cores, {} memory, kernel {}, {}), commit {}, by `bench/run`.\n",
            m["date"].as_str().unwrap_or("?"),
            m["cpu"].as_str().unwrap_or("?"),
            m["cores"],
            m["memory"].as_str().unwrap_or("?"),
            m["kernel"].as_str().unwrap_or("?"),
            m["os"].as_str().unwrap_or("?"),
            m["commit"].as_str().unwrap_or("?")
        )?,
        None => md.push_str("The machine was not recorded.\n\n"),
    }
    let exec: Option<ExecReport> = read(&raw, "exec")?;
    targets(&mut md, exec.as_ref());
    whole_process(&mut md, dir, exec.as_ref())?;
    scale(&mut md, dir, read(&raw, "firewall")?, read(&raw, "lb")?)?;
    dns(&mut md, dir, read(&raw, "dns")?)?;
    qos(&mut md, dir, read(&raw, "qos")?)?;
    vpn(&mut md, dir, read(&raw, "vpn")?)?;
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

fn targets(md: &mut String, exec: Option<&ExecReport>) {
    md.push_str("## Targets\n\n");
    let Some(exec) = exec else {
        md.push_str("Not measured in this run.\n\n");
        return;
    };
    md.push_str("| target | figure | |\n|---|---|---|\n");
    for p in exec.plugins.iter().filter(|p| p.netsvc) {
        let _ = writeln!(
            md,
            "| {} ADD median ≤ {ADD_TARGET_MS} ms, whole process | {:.2} ms | {} |",
            p.name,
            p.add.median_ms,
            mark(p.add.median_ms <= ADD_TARGET_MS)
        );
    }
    if let Some(ratio) = exec.chain_ratio() {
        let _ = writeln!(
            md,
            "| firewall + lb + qos + dns ADD+DEL ≤ {:.0}% of the reference meta chain's | {:.1}% | {} |",
            CHAIN_RATIO_TARGET * 100.0,
            ratio * 100.0,
            mark(ratio <= CHAIN_RATIO_TARGET)
        );
    }
    md.push('\n');
}

fn timed_rows(md: &mut String, rows: &[Timed]) {
    md.push_str("| | ADD median | ADD p90 | DEL median | DEL p90 | ADD+DEL median |\n|---|---|---|---|---|---|\n");
    for t in rows {
        let _ = writeln!(
            md,
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            t.name, t.add.median_ms, t.add.p90_ms, t.del.median_ms, t.del.p90_ms, t.total.median_ms
        );
    }
    md.push('\n');
}

fn whole_process(md: &mut String, dir: &Path, exec: Option<&ExecReport>) -> Result<()> {
    md.push_str("## Whole-process ADD and DEL\n\n");
    let Some(exec) = exec else {
        md.push_str("Not measured in this run.\n\n");
        return Ok(());
    };
    let _ = writeln!(
        md,
        "Each plugin binary as a runtime runs it (fork, exec, stdin, stdout), after the same real \
         bridge ADD on the same node, with a resident container holding the same plugins; {} rounds \
         after 3 of warm-up. State dirs (netsvc's store, host-local's leases) are on a tmpfs, as \
         the default `/run/netsvc` is. netsvc's services, then the reference plugins:\n",
        exec.rounds
    );
    timed_rows(md, &exec.plugins);
    let bars: Vec<Bar> = exec
        .plugins
        .iter()
        .map(|p| Bar {
            label: p.name.clone(),
            value: p.add.median_ms,
            ours: p.netsvc,
        })
        .collect();
    plots::bars(
        &dir.join("exec-plugins.png"),
        "ADD median per plugin, whole process",
        "ms",
        &bars,
    )?;
    md.push_str("![ADD median per plugin](exec-plugins.png)\n\nWhole chains, ADD in order then DEL in reverse:\n\n");
    timed_rows(md, &exec.chains);
    if let Some(ratio) = exec.chain_ratio() {
        let _ = writeln!(
            md,
            "netsvc's chain over the reference chain (ADD+DEL medians): **{ratio:.3}**.\n"
        );
    }
    let bars: Vec<Bar> = exec
        .chains
        .iter()
        .map(|c| Bar {
            label: c.name.replace("netsvc-", ""),
            value: c.total.median_ms,
            ours: c.netsvc,
        })
        .collect();
    plots::bars(
        &dir.join("exec-chains.png"),
        "Chain ADD+DEL median, whole process",
        "ms",
        &bars,
    )?;
    md.push_str("![Chain ADD+DEL median](exec-chains.png)\n\n");
    Ok(())
}

/// `(x, y)` points of `key_x`, `key_y` in an array of objects.
fn points(list: &Value, key_x: &str, key_y: &str) -> Vec<(f64, f64)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p[key_x].as_f64()?, p[key_y].as_f64()?)))
        .collect()
}

fn scale(md: &mut String, dir: &Path, firewall: Option<Value>, lb: Option<Value>) -> Result<()> {
    md.push_str("## The LB and the firewall as they grow\n\n");
    let mut curves = Vec::new();
    if let Some(fw) = &firewall {
        md.push_str("In-process ADD of one endpoint into a firewall network of N endpoints (8 sets each):\n\n| endpoints | ADD median | DEL median |\n|---|---|---|\n");
        for p in fw["scale"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {} | {:.2} ms | {:.2} ms |",
                p["endpoints"],
                p["add_median_ms"].as_f64().unwrap_or(0.0),
                p["del_median_ms"].as_f64().unwrap_or(0.0)
            );
        }
        let w = &fw["wholeProcess"];
        if let (Some(o), Some(r)) = (w["netsvc_ms"].as_f64(), w["reference_ms"].as_f64()) {
            let _ = writeln!(
                md,
                "\nWhole-process ADD+DEL, netsvc-firewall {o:.2} ms against the reference firewall (iptables) {r:.2} ms: ratio {:.2}.",
                o / r
            );
        }
        md.push('\n');
        curves.push(Curve {
            name: "netsvc-firewall: ADD, endpoints in the network".into(),
            points: points(&fw["scale"], "endpoints", "add_median_ms"),
        });
    } else {
        md.push_str("Firewall: not measured in this run.\n\n");
    }
    if let Some(lb) = &lb {
        md.push_str("In-process ADD of one backend with N backends across 1,000 services:\n\n| backends | ADD median | DEL median |\n|---|---|---|\n");
        for p in lb["scale"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {} | {:.2} ms | {:.2} ms |",
                p["backends"],
                p["add_median_ms"].as_f64().unwrap_or(0.0),
                p["del_median_ms"].as_f64().unwrap_or(0.0)
            );
        }
        md.push_str("\nTCP connect and echo through a VIP as the services grow:\n\n| services | median | p90 |\n|---|---|---|\n");
        for p in lb["connect"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {} | {:.0} µs | {:.0} µs |",
                p["services"],
                p["median_us"].as_f64().unwrap_or(0.0),
                p["p90_us"].as_f64().unwrap_or(0.0)
            );
        }
        md.push('\n');
        curves.push(Curve {
            name: "netsvc-lb: ADD, backends in the network".into(),
            points: points(&lb["scale"], "backends", "add_median_ms"),
        });
    } else {
        md.push_str("LB: not measured in this run.\n\n");
    }
    curves.retain(|c| !c.points.is_empty());
    if !curves.is_empty() {
        plots::curves(
            &dir.join("scale.png"),
            "ADD as the network grows (in process)",
            "endpoints / backends",
            "ADD median, ms",
            &curves,
        )?;
        md.push_str("![ADD as the network grows](scale.png)\n\n");
    }
    Ok(())
}

fn dns(md: &mut String, dir: &Path, dns: Option<Value>) -> Result<()> {
    md.push_str("## DNS: netsvc-dnsd against dnsmasq and aardvark-dns\n\n");
    let Some(dns) = dns else {
        md.push_str("Not measured in this run.\n\n");
        return Ok(());
    };
    let _ = writeln!(
        md,
        "{} names, dnsperf from one container of the network, {} s per run, median of {} interleaved rounds.\n\n\
         | server | QPS | mean latency | CPU per answer | lost |\n|---|---|---|---|---|",
        dns["names"], dns["seconds"], dns["rounds"]
    );
    let rows = dns["throughput"].as_array().cloned().unwrap_or_default();
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.3} ms | {:.1} µs | {:.2}% |",
            r["server"].as_str().unwrap_or("?"),
            r["qps"].as_f64().unwrap_or(0.0),
            r["meanLatencyMs"].as_f64().unwrap_or(0.0),
            r["cpuUsPerQuery"].as_f64().unwrap_or(0.0),
            r["lostPercent"].as_f64().unwrap_or(0.0)
        );
    }
    let qps = |name: &str| {
        rows.iter()
            .find(|r| r["server"] == name)
            .and_then(|r| r["qps"].as_f64())
    };
    if let Some(ours) = qps("netsvc-dnsd") {
        for other in ["dnsmasq", "aardvark-dns"] {
            if let Some(theirs) = qps(other).filter(|q| *q > 0.0) {
                let _ = write!(md, "\nQPS ratio netsvc-dnsd / {other}: {:.2}.", ours / theirs);
            }
        }
        md.push('\n');
    }
    let latency = dns["latency"].as_array().cloned().unwrap_or_default();
    if !latency.is_empty() {
        let _ = writeln!(
            md,
            "\nAt a fixed {} queries per second:\n\n| server | mean | p50 | p99 |\n|---|---|---|---|",
            dns["rate"]
        );
        for r in &latency {
            let f = |k: &str| r[k].as_f64().map_or("n/a".to_string(), |v| format!("{v:.3} ms"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                r["server"].as_str().unwrap_or("?"),
                f("meanLatencyMs"),
                f("p50Ms"),
                f("p99Ms")
            );
        }
    }
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            label: r["server"].as_str().unwrap_or("?").to_string(),
            value: r["qps"].as_f64().unwrap_or(0.0),
            ours: r["server"] == "netsvc-dnsd",
        })
        .collect();
    plots::bars(
        &dir.join("dns-qps.png"),
        "DNS queries per second (dnsperf)",
        "QPS",
        &bars,
    )?;
    md.push_str("\n![DNS QPS](dns-qps.png)\n\n");
    Ok(())
}

fn qos(md: &mut String, dir: &Path, qos: Option<Vec<Accuracy>>) -> Result<()> {
    md.push_str("## QoS accuracy\n\n");
    let Some(rows) = qos else {
        md.push_str("Not measured in this run.\n\n");
        return Ok(());
    };
    md.push_str(
        "iperf3 (TCP) between a container and its node; the wire rate is what the shaping device's root \
         qdisc sent, against the rate set (same rate and burst for both plugins).\n\n\
         | plugin | rate | direction | wire | error | goodput |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} Mbit/s | {} | {:.3} Mbit/s | {:+.2}% | {:.3} Mbit/s |",
            r.plugin,
            r.rate_mbit,
            r.direction,
            r.wire / 1e6,
            r.error_percent(),
            r.goodput / 1e6
        );
    }
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            label: format!(
                "{} {} {}",
                if r.plugin == "netsvc-qos" { "qos" } else { "bw" },
                r.rate_mbit,
                if r.direction == "to container" { "in" } else { "out" }
            ),
            value: r.error_percent().abs(),
            ours: r.plugin == "netsvc-qos",
        })
        .collect();
    plots::bars(
        &dir.join("qos-accuracy.png"),
        "Wire rate off the rate set",
        "|error| %",
        &bars,
    )?;
    md.push_str("\n![QoS accuracy](qos-accuracy.png)\n\n");
    Ok(())
}

fn vpn(md: &mut String, dir: &Path, vpn: Option<Value>) -> Result<()> {
    md.push_str("## VPN throughput\n\n");
    let (Some(ours), Some(hand)) = (
        vpn.as_ref().and_then(|v| v["netsvcMbit"].as_f64()),
        vpn.as_ref().and_then(|v| v["handMbit"].as_f64()),
    ) else {
        md.push_str("Not measured in this run.\n\n");
        return Ok(());
    };
    let v = vpn.as_ref().expect("checked above");
    let _ = writeln!(
        md,
        "iperf3 from a container to a remote site through a tunnel netsvc-vpn made and through one made by \
         hand (wireguard-go, `wg`, `ip`), alternating, median of {} runs of {} s: netsvc-vpn {ours:.1} Mbit/s, \
         by hand {hand:.1} Mbit/s, ratio **{:.3}**.\n",
        v["rounds"],
        v["seconds"],
        ours / hand
    );
    let bars = [
        Bar {
            label: "netsvc-vpn".into(),
            value: ours,
            ours: true,
        },
        Bar {
            label: "by hand".into(),
            value: hand,
            ours: false,
        },
    ];
    plots::bars(
        &dir.join("vpn.png"),
        "Tunnel throughput (wireguard-go)",
        "Mbit/s",
        &bars,
    )?;
    md.push_str("![VPN throughput](vpn.png)\n\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use serde_json::json;

    fn timed(name: &str, netsvc: bool, add: f64, del: f64) -> Timed {
        let s = |ms: f64| Stats {
            median_ms: ms,
            p90_ms: ms * 1.2,
            n: 30,
        };
        Timed {
            name: name.into(),
            netsvc,
            add: s(add),
            del: s(del),
            total: s(add + del),
        }
    }

    #[test]
    fn a_report_says_which_targets_are_met_and_draws_its_charts() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::create_dir_all(&raw).unwrap();
        let exec = ExecReport {
            rounds: 30,
            plugins: vec![
                timed("netsvc-firewall", true, 4.0, 12.0),
                timed("netsvc-qos", true, 7.5, 20.0),
                timed("bandwidth", false, 9.0, 25.0),
            ],
            chains: vec![
                timed("netsvc chain", true, 20.0, 30.0),
                timed("reference chain", false, 100.0, 150.0),
            ],
        };
        let put = |name: &str, v: Value| std::fs::write(raw.join(name), v.to_string()).unwrap();
        put("exec.json", serde_json::to_value(&exec).unwrap());
        put(
            "vpn.json",
            json!({"netsvcMbit": 300.0, "handMbit": 290.0, "rounds": 5, "seconds": 5}),
        );
        put(
            "firewall.json",
            json!({"scale": [{"endpoints": 10, "add_median_ms": 4.0, "del_median_ms": 14.0},
                             {"endpoints": 10000, "add_median_ms": 4.4, "del_median_ms": 15.0}],
                   "wholeProcess": {"netsvc_ms": 16.0, "reference_ms": 80.0}}),
        );
        put(
            "machine.json",
            json!({"date": "2026-11-29T13:00Z", "cpu": "Test CPU", "cores": 2, "memory": "24 GiB",
                   "kernel": "6.18", "os": "Debian GNU/Linux 12", "commit": "abc1234"}),
        );

        super::write(dir.path()).unwrap();

        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("Test CPU (2 cores"), "{md}");
        assert!(
            md.contains("| netsvc-firewall ADD median ≤ 5 ms, whole process | 4.00 ms | met |"),
            "{md}"
        );
        assert!(
            md.contains("| netsvc-qos ADD median ≤ 5 ms, whole process | 7.50 ms | **not met** |"),
            "{md}"
        );
        assert!(md.contains("| 20.0% | met |"), "the chain ratio 50/250: {md}");
        assert!(md.contains("ratio **1.034**"), "{md}");
        assert!(
            md.contains("DNS: netsvc-dnsd against dnsmasq and aardvark-dns\n\nNot measured"),
            "{md}"
        );
        for chart in ["exec-plugins.png", "exec-chains.png", "scale.png", "vpn.png"] {
            let png = std::fs::read(dir.path().join(chart)).unwrap();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000, "{chart}");
        }
        assert!(!dir.path().join("dns-qps.png").exists());
    }
}
