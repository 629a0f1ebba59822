//! The main loop's in-process cost: parse env and a typical 1.1.0 ADD config
//! with a prevResult, dispatch to the no-op plugin (which passes the result on), print.

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use netsvc_core::runtime::dispatch;
use netsvc_tests::noop::Noop;
use serde_json::json;

fn typical_add() -> (HashMap<String, String>, Vec<u8>) {
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "f3a1c9e0b2d44e5f8a7b6c5d4e3f2a1b"),
        ("CNI_NETNS", "/var/run/netns/cni-1234"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web-0;NETSVC_LABELS=tier:web"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let conf = json!({
        "cniVersion": "1.1.0", "name": "web", "type": "netsvc-firewall",
        "capabilities": {"aliases": true},
        "runtimeConfig": {"aliases": {"web": ["web", "frontend"]}},
        "defaultIngress": "deny",
        "policies": [{"name": "api", "select": {"names": ["api"]}, "ingress": [{"from": [{"names": ["web"]}]}]}],
        "prevResult": {
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "ns-web", "mac": "aa:bb:cc:00:00:01"},
                           {"name": "veth1234", "mac": "aa:bb:cc:00:00:02"},
                           {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/var/run/netns/cni-1234"}],
            "ips": [{"address": "10.89.0.5/24", "gateway": "10.89.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.89.0.1"}],
            "dns": {"nameservers": ["10.89.0.1"], "search": ["web.internal"]}
        }
    });
    (env, serde_json::to_vec(&conf).expect("json"))
}

fn bench(c: &mut Criterion) {
    let (env, stdin) = typical_add();
    c.bench_function("main_loop_add_1.1.0", |b| {
        b.iter(|| {
            let out = dispatch(&Noop, |k| env.get(k).cloned(), &stdin);
            assert_eq!(out.exit_code, 0);
            out
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
