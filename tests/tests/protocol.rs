//! Protocol conformance of the core main loop, for every spec version, run
//! against the test plugin as a real process (env + stdin in, stdout out).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use netsvc_core::cni::SUPPORTED_VERSIONS;
use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_netsvc-testplugin");

struct Sandbox {
    state: tempfile::TempDir,
    /// Stands in for a netns path: the test plugin only needs it to exist.
    netns: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let state = tempfile::tempdir().expect("tempdir");
        let netns = state.path().join("netns-x");
        std::fs::write(&netns, b"").expect("netns stand-in");
        Sandbox { state, netns }
    }

    fn record_count(&self) -> usize {
        std::fs::read_dir(self.state.path().join("testplugin")).map_or(0, |d| d.count())
    }
}

struct Reply {
    code: i32,
    stdout: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected failure, got {:?}", self.stdout);
        self.json()["code"].as_u64().expect("error code")
    }

    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, got {:?}", self.stdout);
        self
    }
}

fn call(sb: &Sandbox, env: &[(&str, &str)], stdin: &str) -> Reply {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .env("NETSVC_STATE_DIR", sb.state.path())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("wait plugin");
    Reply {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn attach_env<'a>(cmd: &'a str, id: &'a str, netns: Option<&'a Path>) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1"),
        ("CNI_PATH", "/nonexistent"),
    ];
    if let Some(ns) = netns {
        env.push(("CNI_NETNS", ns.to_str().expect("utf8 path")));
    }
    env
}

fn conf(version: &str, extra: Value) -> String {
    let mut c = json!({"cniVersion": version, "name": "conformance", "type": "netsvc-testplugin",
                       "test": {"mark": "marked.example"}, "runtimeAddedKey": {"kept": true}});
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c.to_string()
}

fn prev_result(version: &str) -> Value {
    let mut ip = json!({"address": "10.88.0.7/16", "gateway": "10.88.0.1", "interface": 1});
    if !version.starts_with('1') {
        ip["version"] = json!("4");
    }
    json!({"cniVersion": version,
           "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
                          {"name": "eth0", "mac": "aa:bb:cc:00:00:02", "sandbox": "/var/run/netns/x"}],
           "ips": [ip],
           "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
           "dns": {"nameservers": ["10.88.0.1"]}})
}

fn at_least(version: &str, min: &str) -> bool {
    let v = netsvc_core::cni::Version::parse(version).expect("version");
    v >= netsvc_core::cni::Version::parse(min).expect("version")
}

#[test]
fn version_echoes_config_version_and_lists_all() {
    let sb = Sandbox::new();
    for v in SUPPORTED_VERSIONS {
        let r = call(
            &sb,
            &[("CNI_COMMAND", "VERSION")],
            &json!({"cniVersion": v}).to_string(),
        );
        let j = r.ok().json();
        assert_eq!(j["cniVersion"], *v);
        assert_eq!(j["supportedVersions"], json!(SUPPORTED_VERSIONS));
    }
    // No stdin at all still answers, in the newest version.
    let j = call(&sb, &[("CNI_COMMAND", "VERSION")], "").ok().json();
    assert_eq!(j["cniVersion"], "1.1.0");
}

#[test]
fn add_without_prev_result_in_every_version() {
    for v in SUPPORTED_VERSIONS {
        let sb = Sandbox::new();
        let r = call(&sb, &attach_env("ADD", "c1", Some(&sb.netns)), &conf(v, json!({})));
        let j = r.ok().json();
        assert_eq!(j["cniVersion"], *v);
        assert_eq!(j["interfaces"][0]["name"], "eth0");
        assert_eq!(j["interfaces"][0]["sandbox"], sb.netns.to_str().unwrap());
        assert_eq!(j["dns"]["search"], json!(["marked.example"]));
        assert_eq!(sb.record_count(), 1, "{v}: ADD records the attachment");
    }
}

#[test]
fn add_with_prev_result_passes_it_through_in_every_version() {
    for v in SUPPORTED_VERSIONS {
        let sb = Sandbox::new();
        let prev = prev_result(v);
        let r = call(
            &sb,
            &attach_env("ADD", "c1", Some(&sb.netns)),
            &conf(v, json!({"prevResult": prev})),
        );
        let j = r.ok().json();
        assert_eq!(j["cniVersion"], *v);
        assert_eq!(j["interfaces"], prev["interfaces"], "{v}");
        assert_eq!(
            j["ips"], prev["ips"],
            "{v}: ips (with version before 1.0.0) pass intact"
        );
        assert_eq!(j["routes"], prev["routes"], "{v}");
        assert_eq!(j["dns"]["nameservers"], prev["dns"]["nameservers"], "{v}");
        assert_eq!(j["dns"]["search"], json!(["marked.example"]), "{v}");
    }
}

#[test]
fn del_twice_and_del_without_netns_or_prev_result() {
    for v in SUPPORTED_VERSIONS {
        let sb = Sandbox::new();
        call(&sb, &attach_env("ADD", "c1", Some(&sb.netns)), &conf(v, json!({}))).ok();
        let prev = json!({"prevResult": prev_result(v)});
        let del = |netns| call(&sb, &attach_env("DEL", "c1", netns), &conf(v, prev.clone()));
        let first = del(Some(&sb.netns));
        assert_eq!(first.ok().stdout, "", "{v}: DEL prints nothing");
        assert_eq!(sb.record_count(), 0, "{v}: DEL removed the record");
        del(Some(&sb.netns)).ok();
        // Netns gone and no prevResult: still a success.
        call(&sb, &attach_env("DEL", "c1", None), &conf(v, json!({}))).ok();
    }
}

#[test]
fn check_in_every_version() {
    for v in SUPPORTED_VERSIONS {
        let sb = Sandbox::new();
        call(&sb, &attach_env("ADD", "c1", Some(&sb.netns)), &conf(v, json!({}))).ok();
        let prev = json!({"prevResult": prev_result(v)});
        let check = || call(&sb, &attach_env("CHECK", "c1", Some(&sb.netns)), &conf(v, prev.clone()));
        if at_least(v, "0.4.0") {
            assert_eq!(check().ok().stdout, "");
            call(&sb, &attach_env("DEL", "c1", Some(&sb.netns)), &conf(v, prev.clone())).ok();
            assert_eq!(check().error_code(), 3, "{v}: CHECK fails once the attachment is gone");
        } else {
            assert_eq!(check().error_code(), 1, "{v}: CHECK does not exist before 0.4.0");
        }
    }
}

#[test]
fn gc_with_valid_attachments_in_every_version() {
    for v in SUPPORTED_VERSIONS {
        let sb = Sandbox::new();
        for id in ["keep", "stale"] {
            call(&sb, &attach_env("ADD", id, Some(&sb.netns)), &conf(v, json!({}))).ok();
        }
        let valid = json!([{"containerID": "keep", "ifname": "eth0"}]);
        let r = call(
            &sb,
            &[("CNI_COMMAND", "GC")],
            &conf(v, json!({"cni.dev/valid-attachments": valid})),
        );
        if at_least(v, "1.1.0") {
            assert_eq!(r.ok().stdout, "", "GC prints nothing on success");
            assert_eq!(sb.record_count(), 1, "GC removed only the stale attachment");
            let check = call(&sb, &attach_env("CHECK", "stale", Some(&sb.netns)), &conf(v, json!({})));
            assert_eq!(check.error_code(), 3);
            call(&sb, &attach_env("CHECK", "keep", Some(&sb.netns)), &conf(v, json!({}))).ok();
            // The older key works too.
            let old = json!({"cni.dev/attachments": []});
            call(&sb, &[("CNI_COMMAND", "GC")], &conf(v, old)).ok();
            assert_eq!(sb.record_count(), 0);
        } else {
            assert_eq!(r.error_code(), 1, "{v}: GC does not exist before 1.1.0");
            assert_eq!(sb.record_count(), 2, "{v}: a refused GC removes nothing");
        }
    }
}

#[test]
fn status_in_every_version() {
    for v in SUPPORTED_VERSIONS {
        let sb = Sandbox::new();
        let status = || call(&sb, &[("CNI_COMMAND", "STATUS")], &conf(v, json!({})));
        if at_least(v, "1.1.0") {
            status().ok();
            std::fs::create_dir_all(sb.state.path().join("testplugin")).unwrap();
            std::fs::write(sb.state.path().join("testplugin/unavailable"), b"").unwrap();
            assert_eq!(status().error_code(), 50);
        } else {
            assert_eq!(status().error_code(), 1, "{v}: STATUS does not exist before 1.1.0");
        }
    }
}

#[test]
fn invalid_env_is_code_4_naming_the_variable() {
    let sb = Sandbox::new();
    let c = conf("1.1.0", json!({}));
    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let env: Vec<_> = attach_env("ADD", "c1", Some(&sb.netns))
            .into_iter()
            .filter(|(k, _)| *k != var)
            .collect();
        let r = call(&sb, &env, &c);
        assert_eq!(r.error_code(), 4, "{var}");
        assert!(r.json()["msg"].as_str().unwrap().contains(var), "{var}: {}", r.stdout);
    }
    for (var, value) in [
        ("CNI_CONTAINERID", "/etc"),
        ("CNI_IFNAME", "much-too-long-name"),
        ("CNI_ARGS", "A=B=C"),
    ] {
        let mut env: Vec<_> = attach_env("ADD", "c1", Some(&sb.netns))
            .into_iter()
            .filter(|(k, _)| *k != var)
            .collect();
        env.push((var, value));
        let r = call(&sb, &env, &c);
        assert_eq!(r.error_code(), 4, "{var}={value}");
        assert!(r.json()["msg"].as_str().unwrap().contains(var), "{var}: {}", r.stdout);
    }
    assert_eq!(sb.record_count(), 0, "nothing was recorded by a refused call");
}

#[test]
fn bad_json_unsupported_version_and_unknown_key() {
    let sb = Sandbox::new();
    let env = attach_env("ADD", "c1", Some(&sb.netns));
    assert_eq!(call(&sb, &env, "{\"cniVersion\": \"1.1.0\", ").error_code(), 6);
    let old = call(&sb, &env, &conf("0.2.0", json!({})));
    assert_eq!(old.error_code(), 1);
    let future = call(&sb, &env, &conf("9.9.9", json!({})));
    assert_eq!(future.error_code(), 1);
    let typo = call(
        &sb,
        &env,
        &conf("1.1.0", json!({"test": {"mark": "m", "markk": "typo"}})),
    );
    assert_eq!(typo.error_code(), 7);
    let msg = typo.json()["msg"].as_str().unwrap().to_string();
    assert!(msg.contains("markk") && msg.contains("test"), "{msg}");
    assert_eq!(sb.record_count(), 0, "nothing was recorded by a refused call");
}

#[test]
fn a_panic_is_a_cni_error_not_a_backtrace() {
    let sb = Sandbox::new();
    let r = call(
        &sb,
        &attach_env("ADD", "c1", Some(&sb.netns)),
        &conf("1.0.0", json!({"test": {"panic": true}})),
    );
    assert_eq!(r.error_code(), 999);
    assert_eq!(
        r.stdout.lines().count(),
        1,
        "stdout holds only the error JSON: {:?}",
        r.stdout
    );
    let j = r.json();
    assert_eq!(j["cniVersion"], "1.0.0");
    assert!(j["details"].as_str().unwrap().contains("asked to panic"));
}
