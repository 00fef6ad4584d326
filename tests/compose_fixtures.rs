//! Fixture tests: for every project under `fixtures/compose/`, `renet compose -- config`
//! through the real docker compose v2 shows host networking, the `rediacc.*` labels, the
//! environment, the repository's hosts file at `/etc/hosts` and `NET_RAW` dropped — and otherwise exactly the model plain
//! `docker compose config` gives for the same files and variables.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

const NETWORK: u32 = 2816;

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("fixtures/compose"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

fn compose_config(name: &str) -> (Value, Value, BTreeMap<String, String>) {
    let dir = fixture_copy(&format!("compose/{name}"));
    let args: Vec<String> = std::fs::read_to_string(dir.path().join("args"))
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut cmd = renet(dir.path());
    cmd.args(["compose", "--network-id", &NETWORK.to_string(), "--"])
        .args(&args)
        .args(["config", "--format", "json"]);
    let with_renet: Value = serde_json::from_str(&ok(&mut cmd)).unwrap();

    let ips: Value = serde_json::from_str(&ok(renet(dir.path()).args([
        "ips",
        "--json",
        "--network-id",
        &NETWORK.to_string(),
    ])))
    .unwrap();
    let mut vars = BTreeMap::new();
    let mut by_service = BTreeMap::new();
    for s in ips["services"].as_array().unwrap() {
        vars.insert(
            s["variable"].as_str().unwrap().to_string(),
            s["ip"].as_str().unwrap().to_string(),
        );
        by_service.insert(
            s["service"].as_str().unwrap().to_string(),
            s["ip"].as_str().unwrap().to_string(),
        );
    }
    let mut plain = docker(NETWORK);
    plain
        .current_dir(dir.path())
        .arg("compose")
        .args(&args)
        .args(["config", "--format", "json"]);
    for (k, v) in &vars {
        plain.env(k, v);
    }
    plain.env_remove("COMPOSE_FILE");
    let without: Value = serde_json::from_str(&ok(&mut plain)).unwrap();
    (with_renet, without, by_service)
}

fn check_fixture(name: &str) {
    let (mut with_renet, mut without, ips) = compose_config(name);
    let services = with_renet["services"].as_object_mut().unwrap();
    assert!(!services.is_empty(), "{name}: no services");
    for (svc, model) in services.iter_mut() {
        let m = model.as_object_mut().unwrap();
        let ip = &ips[svc];
        assert_eq!(
            m.remove("network_mode"),
            Some("host".into()),
            "{name}/{svc}: network_mode"
        );
        assert!(
            m.get("networks").is_none(),
            "{name}/{svc}: networks must be removed"
        );
        assert!(
            m.get("ports").is_none(),
            "{name}/{svc}: ports must be removed"
        );
        let labels = m
            .get_mut("labels")
            .and_then(Value::as_object_mut)
            .expect("labels");
        assert_eq!(
            labels.remove("rediacc.service_name"),
            Some(svc.as_str().into()),
            "{name}/{svc}"
        );
        assert_eq!(
            labels.remove("rediacc.service_ip"),
            Some(ip.as_str().into()),
            "{name}/{svc}"
        );
        assert_eq!(
            labels.remove("rediacc.network_id"),
            Some(NETWORK.to_string().into()),
            "{name}/{svc}"
        );
        labels.remove("rediacc.tcp_ports");
        labels.remove("rediacc.udp_ports");
        if labels.is_empty() {
            m.remove("labels");
        }
        let env = m
            .get_mut("environment")
            .and_then(Value::as_object_mut)
            .expect("environment");
        assert_eq!(
            env.remove("SERVICE_IP"),
            Some(ip.as_str().into()),
            "{name}/{svc}"
        );
        assert_eq!(
            env.remove("REDIACC_NETWORK_ID"),
            Some(NETWORK.to_string().into()),
            "{name}/{svc}"
        );
        if env.is_empty() {
            m.remove("environment");
        }
        // The repository's hosts file, read-only at /etc/hosts, names every service.
        let vols = m
            .get_mut("volumes")
            .and_then(Value::as_array_mut)
            .expect("volumes");
        let at = vols
            .iter()
            .position(|v| v["target"] == "/etc/hosts")
            .unwrap_or_else(|| panic!("{name}/{svc}: no /etc/hosts mount"));
        let mount = vols.remove(at);
        assert_eq!(mount["read_only"], true, "{name}/{svc}: {mount}");
        let text = std::fs::read_to_string(mount["source"].as_str().unwrap()).unwrap();
        for (s, ip) in &ips {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{ip}\t"))
                        && l.split_whitespace().any(|w| w == s)),
                "{name}/{svc}: {s} missing from the hosts file:\n{text}"
            );
        }
        if vols.is_empty() {
            m.remove("volumes");
        }
        let drops = m
            .get_mut("cap_drop")
            .and_then(Value::as_array_mut)
            .expect("cap_drop");
        assert!(
            drops.iter().any(|c| c == "NET_RAW" || c == "ALL"),
            "{name}/{svc}: NET_RAW kept"
        );
        drops.retain(|c| c != "NET_RAW");
        if drops.is_empty() {
            m.remove("cap_drop");
        }
    }
    // Plain compose: drop what renet replaces by design.
    if let Some(services) = without["services"].as_object_mut() {
        for model in services.values_mut() {
            let m = model.as_object_mut().unwrap();
            for k in [
                "network_mode",
                "networks",
                "ports",
                "extra_hosts",
                "links",
                "external_links",
                "mac_address",
            ] {
                m.remove(k);
            }
            if let Some(labels) = m.get_mut("labels").and_then(Value::as_object_mut) {
                for k in [
                    "rediacc.service_name",
                    "rediacc.service_ip",
                    "rediacc.network_id",
                    "rediacc.tcp_ports",
                    "rediacc.udp_ports",
                ] {
                    labels.remove(k);
                }
                if labels.is_empty() {
                    m.remove("labels");
                }
            }
        }
    }
    for doc in [&mut with_renet, &mut without] {
        doc.as_object_mut().unwrap().remove("networks");
    }
    assert_eq!(
        serde_json::to_string_pretty(&sorted(&with_renet)).unwrap(),
        serde_json::to_string_pretty(&sorted(&without)).unwrap(),
        "{name}: renet's model differs from plain docker compose beyond what renet injects"
    );
}

/// The same value with every object's keys in sorted order (compose's key order is not part of
/// the model).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let b: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(b.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn check_expectations(name: &str) {
    let path = root()
        .join("fixtures/compose")
        .join(name)
        .join("expect.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let expect: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    let (with_renet, _, _) = compose_config(name);
    for (pointer, want) in expect {
        let mut cur = &with_renet;
        let mut found = true;
        for seg in pointer.split('/') {
            let next = match cur {
                Value::Object(m) => m.get(seg),
                Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => {
                    found = false;
                    break;
                }
            }
        }
        let got = if found { cur.clone() } else { Value::Null };
        let got = match (&want, got) {
            (Value::Array(_), Value::Array(mut a)) => {
                a.sort_by_key(|v| v.to_string());
                Value::Array(a)
            }
            (_, g) => g,
        };
        assert_eq!(got, want, "{name}: {pointer}");
    }
}

#[test]
fn every_fixture_matches_plain_compose_plus_injections() {
    require_daemon(NETWORK);
    let names = fixture_names();
    assert!(names.len() >= 12, "fixture corpus is missing: {names:?}");
    for name in names {
        check_fixture(&name);
        check_expectations(&name);
    }
}
