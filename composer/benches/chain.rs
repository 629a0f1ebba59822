//! Validate + compose of a 50-plugin chain (target: under 5 ms together).
//!
//! `cargo bench -p netsvc-composer --bench chain`

use criterion::{Criterion, criterion_group, criterion_main};
use netsvc_composer::catalog::Catalog;
use netsvc_composer::spec::Spec;
use netsvc_composer::validate::validate;

/// A spec with 49 services (the five kinds, in turn, with real configs):
/// 50 plugins with the bridge.
fn spec() -> String {
    let mut s = String::from("name: big\nsubnets: [10.89.0.0/24]\nservices:\n");
    for i in 0..49 {
        let service = match i % 5 {
            0 => "  - {type: netsvc-firewall, defaultIngress: deny, policies: [{name: web, select: {labels: {tier: web}}, ingress: [{ports: [{protocol: tcp, port: 80}]}]}]}\n".to_string(),
            1 => format!("  - {{type: netsvc-lb, services: [{{name: api{i}, vip: 10.96.0.{i}, ports: [{{port: 80, targetPort: 8080}}], select: {{labels: {{app: api}}}}}}]}}\n"),
            2 => "  - {type: netsvc-dns, domain: big.internal}\n".to_string(),
            3 => "  - {type: netsvc-qos, egressRate: 10mbit, classes: [{name: ssh, rate: 1mbit, match: {ports: [{port: 22}]}}]}\n".to_string(),
            _ => "  - {type: netsvc-vpn, address: 10.200.0.2/32, peers: [{publicKey: aWIDcXV8wOt0aUZx9zx+lM3vBcDgCJwj7RJ68TB26hA=, allowedIPs: [10.50.0.0/16]}]}\n".to_string(),
        };
        s.push_str(&service);
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = spec();
    let catalog = Catalog::builtin();
    let list = Spec::parse(&text).unwrap().to_conflist_with(&catalog).unwrap();
    assert_eq!(list.plugins.len(), 50);
    let raw = serde_json::to_value(&list).unwrap();
    c.bench_function("compose 50 plugins (parse, check each service, order)", |b| {
        b.iter(|| Spec::parse(&text).unwrap().to_conflist_with(&catalog).unwrap())
    });
    c.bench_function("validate 50 plugins", |b| b.iter(|| validate(&raw, &catalog)));
    c.bench_function("compose + validate 50 plugins", |b| {
        b.iter(|| {
            let list = Spec::parse(&text).unwrap().to_conflist_with(&catalog).unwrap();
            validate(&serde_json::to_value(&list).unwrap(), &catalog)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
