//! Whole-process cost of a plugin on the core: fork+exec of the no-op plugin
//! answering a typical 1.1.0 ADD (env, stdin, stdout, exit). The reference
//! plugins' own figure for the same call is printed beside it when Debian's
//! `/usr/lib/cni/tuning` (a no-op-ish meta plugin) is installed.

use std::io::Write;
use std::process::{Command, Stdio};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn add_stdin(plugin_type: &str, version: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "cniVersion": version, "name": "bench", "type": plugin_type,
        "prevResult": {"cniVersion": version,
            "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/proc/self/ns/net"}],
            "ips": [{"address": "10.89.0.5/24", "gateway": "10.89.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.89.0.1"}]}
    }))
    .expect("json")
}

fn run(binary: &str, command: &str, stdin: &[u8]) {
    let mut child = Command::new(binary)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "bench")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{binary}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn bench(c: &mut Criterion) {
    // The floor: what spawning any process costs on this machine.
    c.bench_function("exec_true", |b| b.iter(|| run("/bin/true", "VERSION", b"")));
    let noop = env!("CARGO_BIN_EXE_netsvc-noop");
    let stdin = add_stdin("netsvc-noop", "1.1.0");
    c.bench_function("exec_noop_add_1.1.0", |b| b.iter(|| run(noop, "ADD", &stdin)));
    c.bench_function("exec_noop_version", |b| {
        b.iter(|| run(noop, "VERSION", b"{\"cniVersion\":\"1.1.0\"}"))
    });
    // The same VERSION call on a Debian reference plugin, measured in this run.
    let reference = "/usr/lib/cni/tuning";
    if std::path::Path::new(reference).exists() {
        c.bench_function("exec_reference_tuning_version", |b| {
            b.iter(|| run(reference, "VERSION", b"{\"cniVersion\":\"1.0.0\"}"))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
