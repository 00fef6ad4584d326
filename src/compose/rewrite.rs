//! From compose's resolved model to the model renet hands back to compose (spec §4, step 4):
//! host networking, the `rediacc.*` labels, `SERVICE_IP`/`REDIACC_NETWORK_ID`, `ports:`
//! turned into `rediacc.tcp_ports`/`udp_ports`, the repository's hosts file mounted at
//! `/etc/hosts`, and `NET_RAW` dropped (spec §5).
//!
//! Settings host networking cannot have are removed with a warning: `networks`, `links`,
//! `external_links`, `mac_address`; the names they gave (service names, `container_name`,
//! network and link aliases) are kept resolving through the hosts file (`hosts.rs`).
//! `network_mode: service:x` already became `depends_on: x` in compose's model, so the start
//! order survives. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::addresses::NetworkId;
use crate::compose::resolved::services;
use crate::compose::slots::SlotTable;
use crate::compose::vetting::DROPPED_NETWORK_CAPS;

pub const LABEL_SERVICE_NAME: &str = "rediacc.service_name";
pub const LABEL_SERVICE_IP: &str = "rediacc.service_ip";
pub const LABEL_NETWORK_ID: &str = "rediacc.network_id";
pub const LABEL_TCP_PORTS: &str = "rediacc.tcp_ports";
pub const LABEL_UDP_PORTS: &str = "rediacc.udp_ports";

/// More published ports than this in one service is refused (a range like `1-65535` is a
/// mistake, and each port becomes a proxy entrypoint).
pub const MAX_PORTS_PER_SERVICE: usize = 1000;

/// The final model, the names each service IP answers to, and what the user should hear.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    pub model: Value,
    /// Extra names (container names, aliases, link aliases) per service of this project.
    pub aliases: BTreeMap<String, BTreeSet<String>>,
    /// A service's own `extra_hosts` (they join its hosts file).
    pub extra_hosts: BTreeMap<String, Vec<(String, String)>>,
    pub warnings: Vec<String>,
}

/// A published port: `published == None` means "any port from the dynamic range".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub udp: bool,
    pub published: Option<u16>,
    pub target: u16,
}

impl PortSpec {
    /// The label form: `PUBLISHED:TARGET`, or `0:TARGET` for "no published port".
    pub fn label_value(&self) -> String {
        format!("{}:{}", self.published.unwrap_or(0), self.target)
    }
}

/// Where each service finds its hosts file: the repository's, or its own when it has
/// `extra_hosts`.
pub trait HostsFiles {
    fn hosts_file(&self, service: &str, has_extra_hosts: bool) -> std::path::PathBuf;
}

/// Builds the final model. `slots` must hold every service of the repo (allocation happened
/// first, in memory). `unsafe_ok` keeps `NET_RAW`.
pub fn rewrite(
    model: &Value,
    network: NetworkId,
    slots: &SlotTable,
    unsafe_ok: bool,
    hosts: &dyn HostsFiles,
) -> Result<Rewrite, String> {
    let mut out = model.clone();
    let mut warnings = Vec::new();
    let mut aliases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut extra_hosts = BTreeMap::new();
    let names: Vec<String> = services(model).map(|(k, _)| k.clone()).collect();
    let container_names: BTreeMap<String, String> = services(model)
        .filter_map(|(k, s)| {
            let c = s.get("container_name")?.as_str()?;
            Some((c.to_string(), k.clone()))
        })
        .collect();
    let Some(svcs) = out.get_mut("services").and_then(Value::as_object_mut) else {
        return Ok(Rewrite {
            model: out,
            aliases,
            extra_hosts,
            warnings,
        });
    };
    for name in &names {
        let svc = svcs
            .get_mut(name)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("service `{name}`: not a mapping"))?;
        let slot = slots
            .get(name)
            .ok_or_else(|| format!("service `{name}` has no slot"))?;
        let ip = network
            .slot_ip(*slot)
            .map_err(|e| e.to_string())?
            .to_string();
        let mut notes: Vec<String> = Vec::new();
        let mut warn = |w: String| notes.push(w);

        if let Some(mode) = svc.get("network_mode").and_then(Value::as_str)
            && mode != "host"
        {
            warn(format!(
                "`network_mode: {mode}` replaced by `host` (renet services run on the host network with their own IP)"
            ));
        }
        svc.insert("network_mode".into(), "host".into());
        let mine = aliases.entry(name.clone()).or_default();
        if let Some(Value::Object(nets)) = svc.remove("networks") {
            for net in nets.values() {
                for a in net
                    .get("aliases")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(a) = a.as_str() {
                        mine.insert(a.to_string());
                    }
                }
            }
        }
        if let Some(c) = svc.get("container_name").and_then(Value::as_str) {
            mine.insert(c.to_string());
        }
        for key in ["links", "external_links"] {
            if let Some(Value::Array(links)) = svc.remove(key) {
                warn(format!(
                    "`{key}` removed (host networking cannot have links); their names resolve through the repository's hosts file"
                ));
                for link in links.iter().filter_map(Value::as_str) {
                    let (target, alias) = link.split_once(':').unwrap_or((link, link));
                    let owner = if names.iter().any(|n| n == target) {
                        Some(target.to_string())
                    } else {
                        container_names.get(target).cloned()
                    };
                    match owner {
                        Some(o) => {
                            aliases.entry(o).or_default().insert(alias.to_string());
                        }
                        None => warn(format!(
                            "link target `{target}` is not a service of this project; `{alias}` does not resolve"
                        )),
                    }
                }
            }
        }
        if svc.remove("mac_address").is_some() {
            warn("`mac_address` removed (host networking has no MAC address of its own)".into());
        }

        let user_labels = label_map(svc.get("labels"));
        let mut labels: Map<String, Value> = svc
            .remove("labels")
            .and_then(|l| l.as_object().cloned())
            .unwrap_or_default();
        for (key, value) in [
            (LABEL_SERVICE_NAME, name.clone()),
            (LABEL_SERVICE_IP, ip.clone()),
            (LABEL_NETWORK_ID, network.to_string()),
        ] {
            if let Some(user) = user_labels.get(key)
                && *user != value
            {
                warn(format!("label `{key}={user}` overwritten with `{value}`"));
            }
            labels.insert(key.into(), value.into());
        }
        if let Some(ports) = svc.remove("ports") {
            let specs =
                parse_ports(&ports).map_err(|e| format!("service `{name}`: `ports`: {e}"))?;
            for (udp, key) in [(false, LABEL_TCP_PORTS), (true, LABEL_UDP_PORTS)] {
                let mut values: Vec<String> = user_labels
                    .get(key)
                    .map(|v| {
                        v.split(',')
                            .map(|x| x.trim().to_string())
                            .filter(|x| !x.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                let mut seen: HashSet<String> = values.iter().cloned().collect();
                for p in specs.iter().filter(|p| p.udp == udp) {
                    let v = p.label_value();
                    if seen.insert(v.clone()) {
                        values.push(v);
                    }
                }
                if !values.is_empty() {
                    labels.insert(key.into(), values.join(",").into());
                }
            }
        }
        svc.insert("labels".into(), Value::Object(labels));

        let env = svc
            .entry("environment")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(env) = env {
            env.insert("SERVICE_IP".into(), ip.clone().into());
            env.insert("REDIACC_NETWORK_ID".into(), network.to_string().into());
        }

        let own_hosts = parse_extra_hosts(svc.remove("extra_hosts").as_ref());
        let file = hosts.hosts_file(name, !own_hosts.is_empty());
        if !own_hosts.is_empty() {
            extra_hosts.insert(name.clone(), own_hosts);
        }
        mount_hosts_file(svc, &file, &mut warn);

        if !unsafe_ok {
            let drops = svc
                .entry("cap_drop")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(drops) = drops {
                for cap in DROPPED_NETWORK_CAPS {
                    let present = drops.iter().filter_map(Value::as_str).any(|d| {
                        let d = crate::compose::vetting::normalise_capability(d);
                        d == *cap || d == "ALL"
                    });
                    if !present {
                        drops.push((*cap).into());
                    }
                }
            }
        }
        warnings.extend(notes.into_iter().map(|w| format!("service `{name}`: {w}")));
    }
    Ok(Rewrite {
        model: out,
        aliases,
        extra_hosts,
        warnings,
    })
}

/// Mounts the hosts file read-only at `/etc/hosts`, replacing a user mount there.
fn mount_hosts_file(svc: &mut Map<String, Value>, file: &Path, warn: &mut dyn FnMut(String)) {
    let vols = svc
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(vols) = vols {
        let before = vols.len();
        vols.retain(|v| v.get("target").and_then(Value::as_str) != Some("/etc/hosts"));
        if vols.len() != before {
            warn("its mount at `/etc/hosts` replaced by the repository's hosts file".into());
        }
        vols.push(json!({
            "type": "bind",
            "source": file.display().to_string(),
            "target": "/etc/hosts",
            "read_only": true,
        }));
    }
}

/// `extra_hosts` in compose's normalised form (`{"name": ["ip", ...]}` or `["name=ip"]`).
fn parse_extra_hosts(v: Option<&Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match v {
        Some(Value::Object(m)) => {
            for (host, ips) in m {
                match ips {
                    Value::Array(list) => {
                        for ip in list.iter().filter_map(Value::as_str) {
                            out.push((host.clone(), ip.to_string()));
                        }
                    }
                    Value::String(ip) => out.push((host.clone(), ip.clone())),
                    _ => {}
                }
            }
        }
        Some(Value::Array(list)) => {
            for e in list.iter().filter_map(Value::as_str) {
                if let Some((h, ip)) = e.split_once(['=', ':']) {
                    out.push((h.to_string(), ip.to_string()));
                }
            }
        }
        _ => {}
    }
    out
}

/// Labels as compose normalises them (a mapping); values as text.
fn label_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(m)) = v {
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            out.insert(k.clone(), v);
        }
    }
    out
}

/// compose's normalised `ports:` (objects with `target`, `published`, `protocol`, `host_ip`;
/// compose already expanded `A-B:C-D` ranges) → published ports. A published range for one
/// target (`8000-8001:80`) means "one of these"; renet takes the first. Linear time; more than
/// `MAX_PORTS_PER_SERVICE` entries is an error.
pub fn parse_ports(v: &Value) -> Result<Vec<PortSpec>, String> {
    let Value::Array(list) = v else {
        return Err("must be a list".into());
    };
    if list.len() > MAX_PORTS_PER_SERVICE {
        return Err(format!(
            "{} ports published; at most {MAX_PORTS_PER_SERVICE} per service (each one becomes a proxy entrypoint): publish the ports you need",
            list.len()
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let Value::Object(m) = item else {
            return Err(format!("invalid entry {item}"));
        };
        let target = number(m.get("target"))
            .ok_or_else(|| format!("an entry without a valid `target`: {item}"))?;
        let udp = match m.get("protocol").and_then(Value::as_str).unwrap_or("tcp") {
            p if p.eq_ignore_ascii_case("tcp") => false,
            p if p.eq_ignore_ascii_case("udp") => true,
            other => {
                return Err(format!(
                    "protocol `{other}` of target {target} is not supported (tcp or udp)"
                ));
            }
        };
        let published = match m.get("published") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                let first = s.split('-').next().unwrap_or(s);
                Some(port(first).ok_or_else(|| format!("`{s}` is not a port (1-65535)"))?)
            }
            Some(Value::Number(n)) => {
                Some(port(&n.to_string()).ok_or_else(|| format!("`{n}` is not a port (1-65535)"))?)
            }
            Some(other) => return Err(format!("invalid published port {other}")),
        };
        out.push(PortSpec {
            udp,
            published,
            target,
        });
    }
    Ok(out)
}

fn number(v: Option<&Value>) -> Option<u16> {
    match v? {
        Value::Number(n) => port(&n.to_string()),
        Value::String(s) => port(s),
        _ => None,
    }
}

fn port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Files;
    impl HostsFiles for Files {
        fn hosts_file(&self, service: &str, own: bool) -> PathBuf {
            if own {
                PathBuf::from(format!("/run/renet/hosts-{service}"))
            } else {
                PathBuf::from("/run/renet/hosts")
            }
        }
    }

    fn ports(list: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(list).unwrap();
        parse_ports(&v)
            .unwrap()
            .iter()
            .map(|p| format!("{}{}", if p.udp { "u" } else { "t" }, p.label_value()))
            .collect()
    }

    #[test]
    fn port_forms_of_the_normalised_model() {
        assert_eq!(
            ports(
                r#"[{"target":80,"published":"8000-8001","protocol":"tcp"},
                    {"target":80,"published":"8080","host_ip":"::1","protocol":"tcp"},
                    {"target":53,"published":"53","protocol":"udp"},
                    {"target":25},{"target":443,"published":8443}]"#
            ),
            ["t8000:80", "t8080:80", "u53:53", "t0:25", "t8443:443"]
        );
        for bad in [
            r#"[{"target":80,"protocol":"sctp"}]"#,
            r#"[{"target":0}]"#,
            r#"[{"target":80,"published":"x"}]"#,
            r#"["80"]"#,
        ] {
            let v: Value = serde_json::from_str(bad).unwrap();
            assert!(parse_ports(&v).is_err(), "{bad}");
        }
        let many = Value::Array((1..=1001).map(|t| json!({"target": t})).collect());
        assert!(parse_ports(&many).unwrap_err().contains("at most 1000"));
    }

    #[test]
    fn final_model_and_warnings() {
        let model: Value = serde_json::from_str(
            r#"{"name":"p","services":{
                "web":{"image":"x","network_mode":"bridge","container_name":"webby",
                       "networks":{"front":{"aliases":["www"]}},"links":["db:database"],
                       "mac_address":"02:42:ac:11:00:02",
                       "ports":[{"target":80,"published":"8080","protocol":"tcp"},{"target":53,"published":"53","protocol":"udp"}],
                       "labels":{"rediacc.service_ip":"1.2.3.4","rediacc.tcp_ports":"25"}},
                "db":{"image":"y","extra_hosts":{"ext":["127.0.0.9"]},"cap_drop":["ALL"],
                      "volumes":[{"type":"bind","source":"/r/h","target":"/etc/hosts"}]}}}"#,
        )
        .unwrap();
        let mut slots = SlotTable::new();
        slots.insert("web".into(), 0);
        slots.insert("db".into(), 1);
        let r = rewrite(&model, NetworkId::new(2816).unwrap(), &slots, false, &Files).unwrap();
        let w = r.warnings.join("\n");
        for expected in [
            "network_mode: bridge",
            "rediacc.service_ip=1.2.3.4",
            "`links` removed",
            "`mac_address` removed",
            "`/etc/hosts` replaced",
        ] {
            assert!(w.contains(expected), "{expected}: {w}");
        }
        let web = &r.model["services"]["web"];
        assert_eq!(web["network_mode"], "host");
        assert!(web.get("networks").is_none() && web.get("ports").is_none());
        assert!(web.get("links").is_none() && web.get("mac_address").is_none());
        assert_eq!(web["labels"]["rediacc.service_ip"], "127.0.11.2");
        assert_eq!(web["labels"]["rediacc.tcp_ports"], "25,8080:80");
        assert_eq!(web["labels"]["rediacc.udp_ports"], "53:53");
        assert_eq!(web["environment"]["SERVICE_IP"], "127.0.11.2");
        assert_eq!(web["cap_drop"], json!(["NET_RAW"]));
        assert_eq!(web["volumes"][0]["source"], "/run/renet/hosts");
        assert_eq!(web["volumes"][0]["read_only"], true);
        let db = &r.model["services"]["db"];
        assert_eq!(db["cap_drop"], json!(["ALL"]));
        assert_eq!(
            db["volumes"],
            json!([{"type":"bind","source":"/run/renet/hosts-db","target":"/etc/hosts","read_only":true}])
        );
        assert!(db.get("extra_hosts").is_none());
        assert_eq!(
            r.extra_hosts["db"],
            [("ext".to_string(), "127.0.0.9".to_string())]
        );
        let names: Vec<&String> = r.aliases["web"].iter().collect();
        assert_eq!(names, ["webby", "www"]);
        assert!(r.aliases["db"].contains("database"));
        // --unsafe keeps NET_RAW.
        let r = rewrite(&model, NetworkId::new(2816).unwrap(), &slots, true, &Files).unwrap();
        assert!(r.model["services"]["web"].get("cap_drop").is_none());
    }
}
