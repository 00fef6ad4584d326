//! The override file renet adds after the user's compose files (spec §4, step 4): host
//! networking, the `rediacc.*` labels, `SERVICE_IP`/`REDIACC_NETWORK_ID`, `extra_hosts` for
//! every service of the repo, and `ports:` turned into `rediacc.tcp_ports`/`udp_ports`.
//!
//! An override (rather than a rewritten copy of the user's files) leaves anchors, `extends`,
//! profiles, `env_file`, `.env`, relative paths, `x-` fields and `$$` to docker compose itself,
//! so they behave exactly as without renet. `!reset` (compose ≥ 2.24) removes `networks:` and
//! `ports:`, which docker rejects or ignores in host mode. Pure: no I/O.

use std::collections::BTreeMap;

use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

use crate::addresses::NetworkId;
use crate::compose::model::Project;
use crate::compose::slots::SlotTable;

pub const LABEL_SERVICE_NAME: &str = "rediacc.service_name";
pub const LABEL_SERVICE_IP: &str = "rediacc.service_ip";
pub const LABEL_NETWORK_ID: &str = "rediacc.network_id";
pub const LABEL_TCP_PORTS: &str = "rediacc.tcp_ports";
pub const LABEL_UDP_PORTS: &str = "rediacc.udp_ports";

/// The generated override and what the user should hear about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub override_yaml: String,
    pub warnings: Vec<String>,
}

/// A published port: `published == None` means "any port from the dynamic range".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// Builds the override for every service of `project`. `slots` must hold every service of the
/// repo (allocation happened first). `interp` interpolates strings as compose would.
pub fn rewrite(
    project: &Project,
    network: NetworkId,
    slots: &SlotTable,
    interp: &dyn Fn(&str) -> String,
) -> Result<Rewrite, String> {
    let mut warnings = Vec::new();
    let mut extra_hosts: Vec<Value> = Vec::new();
    for (name, slot) in slots {
        let ip = network.slot_ip(*slot).map_err(|e| e.to_string())?;
        extra_hosts.push(Value::String(format!("{name}={ip}")));
    }
    let mut services = Mapping::new();
    for name in &project.service_names {
        let view = &project.services[name];
        let s = &view.settings;
        let slot = slots
            .get(name)
            .ok_or_else(|| format!("service `{name}` has no slot"))?;
        let ip = network
            .slot_ip(*slot)
            .map_err(|e| e.to_string())?
            .to_string();
        let file = view.file.display();

        let mut out = Mapping::new();
        if let Some(mode) = s.get("network_mode").and_then(Value::as_str)
            && interp(mode) != "host"
        {
            warnings.push(format!(
                    "{file}: service `{name}`: `network_mode: {mode}` replaced by `host` (renet services run on the host network with their own IP)"
                ));
        }
        out.insert("network_mode".into(), "host".into());
        if s.contains_key("networks") {
            out.insert("networks".into(), reset(Value::Null));
        }

        let mut labels = BTreeMap::new();
        let user_labels = label_map(s.get("labels"));
        for (key, value) in [
            (LABEL_SERVICE_NAME, name.clone()),
            (LABEL_SERVICE_IP, ip.clone()),
            (LABEL_NETWORK_ID, network.to_string()),
        ] {
            if let Some(user) = user_labels.get(key)
                && *user != value
            {
                warnings.push(format!(
                    "{file}: service `{name}`: label `{key}={user}` overwritten with `{value}`"
                ));
            }
            labels.insert(key.to_string(), value);
        }
        if let Some(ports) = s.get("ports") {
            let specs = parse_ports(ports, interp)
                .map_err(|e| format!("{file}: service `{name}`: `ports`: {e}"))?;
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
                for p in specs.iter().filter(|p| p.udp == udp) {
                    let v = p.label_value();
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
                if !values.is_empty() {
                    labels.insert(key.to_string(), values.join(","));
                }
            }
            out.insert("ports".into(), reset(Value::Sequence(Vec::new())));
        }
        out.insert(
            "labels".into(),
            Value::Mapping(
                labels
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        );
        let mut env = Mapping::new();
        env.insert("SERVICE_IP".into(), ip.clone().into());
        env.insert("REDIACC_NETWORK_ID".into(), network.to_string().into());
        out.insert("environment".into(), Value::Mapping(env));
        out.insert("extra_hosts".into(), Value::Sequence(extra_hosts.clone()));
        services.insert(name.clone().into(), Value::Mapping(out));
    }
    let mut doc = Mapping::new();
    doc.insert("services".into(), Value::Mapping(services));
    let body = serde_yaml::to_string(&Value::Mapping(doc)).map_err(|e| e.to_string())?;
    Ok(Rewrite {
        override_yaml: format!(
            "# Generated by renet compose for network {network}: do not edit (it is rewritten on every run).\n{body}"
        ),
        warnings,
    })
}

fn reset(v: Value) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: Tag::new("reset"),
        value: v,
    }))
}

/// Labels in list (`k=v`) or mapping form.
fn label_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                if let Some(k) = k.as_str() {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => String::new(),
                    };
                    out.insert(k.to_string(), v);
                }
            }
        }
        Some(Value::Sequence(list)) => {
            for item in list.iter().filter_map(Value::as_str) {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                out.insert(k.to_string(), v.to_string());
            }
        }
        _ => {}
    }
    out
}

/// Parses compose `ports:` (short and long syntax, ranges, `/udp`, host IPs).
pub fn parse_ports(v: &Value, interp: &dyn Fn(&str) -> String) -> Result<Vec<PortSpec>, String> {
    let Value::Sequence(list) = v else {
        return Err("must be a list".into());
    };
    let mut out = Vec::new();
    for item in list {
        match item {
            Value::String(s) => out.extend(parse_short_port(&interp(s))?),
            Value::Number(n) => out.extend(parse_short_port(&n.to_string())?),
            Value::Mapping(m) => {
                let text = |k: &str| -> Option<String> {
                    match m.get(k)? {
                        Value::String(s) => Some(interp(s)),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }
                };
                let target = text("target").ok_or("a long-syntax port needs `target`")?;
                let udp = text("protocol").is_some_and(|p| p.eq_ignore_ascii_case("udp"));
                let published = text("published").filter(|p| !p.is_empty());
                let targets = range(&target)?;
                let published = match published {
                    None => vec![None; targets.len()],
                    Some(p) => expand_published(&range(&p)?, targets.len())?,
                };
                for (t, p) in targets.into_iter().zip(published) {
                    out.push(PortSpec {
                        udp,
                        published: p,
                        target: t,
                    });
                }
            }
            other => return Err(format!("invalid entry {other:?}")),
        }
    }
    Ok(out)
}

/// `[HOST_IP:][PUBLISHED[-RANGE]:]TARGET[-RANGE][/PROTOCOL]`; the host IP does not matter in
/// host mode.
fn parse_short_port(spec: &str) -> Result<Vec<PortSpec>, String> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, p),
        None => (spec, "tcp"),
    };
    let udp = match proto.to_ascii_lowercase().as_str() {
        "tcp" => false,
        "udp" => true,
        other => {
            return Err(format!(
                "`{spec}`: protocol `{other}` is not supported (tcp or udp)"
            ));
        }
    };
    // Strip a bracketed IPv6 host IP, then split the rest.
    let body = match body.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .map(|(_, r)| r)
            .ok_or(format!("`{spec}`: invalid host IP"))?,
        None => body,
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [t] => (None, *t),
        [p, t] => (Some(*p), *t),
        [_ip, p, t] => (Some(*p), *t),
        _ => return Err(format!("`{spec}`: invalid port mapping")),
    };
    let targets = range(target).map_err(|e| format!("`{spec}`: {e}"))?;
    let published = match published.filter(|p| !p.is_empty()) {
        None => vec![None; targets.len()],
        Some(p) => expand_published(
            &range(p).map_err(|e| format!("`{spec}`: {e}"))?,
            targets.len(),
        )
        .map_err(|e| format!("`{spec}`: {e}"))?,
    };
    Ok(targets
        .into_iter()
        .zip(published)
        .map(|(target, published)| PortSpec {
            udp,
            published,
            target,
        })
        .collect())
}

fn expand_published(published: &[u16], n: usize) -> Result<Vec<Option<u16>>, String> {
    if published.len() == n {
        Ok(published.iter().map(|p| Some(*p)).collect())
    } else {
        Err("published and target port ranges differ in length".into())
    }
}

fn range(s: &str) -> Result<Vec<u16>, String> {
    let port = |x: &str| -> Result<u16, String> {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{x}` is not a port (1-65535)"))
    };
    match s.split_once('-') {
        None => Ok(vec![port(s)?]),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("`{s}` is an empty range"));
            }
            Ok((a..=b).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::model::ComposeFile;
    use std::path::Path;

    fn project(text: &str) -> Project {
        let f = ComposeFile::parse(Path::new("/r/compose.yml"), text.to_string()).unwrap();
        Project::from_files(vec![f]).unwrap()
    }

    fn ports(list: &str) -> Vec<String> {
        let v: Value = serde_yaml::from_str(list).unwrap();
        parse_ports(&v, &|s| s.replace("${P}", "8443"))
            .unwrap()
            .iter()
            .map(|p| format!("{}{}", if p.udp { "u" } else { "t" }, p.label_value()))
            .collect()
    }

    #[test]
    fn port_syntaxes() {
        assert_eq!(
            ports(
                r#"["8080:80", "80", "53:53/udp", "127.0.0.1:9000:9001", "[::1]:5000:5001/tcp"]"#
            ),
            ["t8080:80", "t0:80", "u53:53", "t9000:9001", "t5000:5001"]
        );
        assert_eq!(
            ports(r#"["7000-7001:8000-8001", "${P}:443", 25]"#),
            ["t7000:8000", "t7001:8001", "t8443:443", "t0:25"]
        );
        assert_eq!(
            ports("[{target: 80, published: '8080'}, {target: 53, protocol: udp}]"),
            ["t8080:80", "u0:53"]
        );
        let v: Value = serde_yaml::from_str(r#"["x:80"]"#).unwrap();
        assert!(parse_ports(&v, &|s| s.to_string()).is_err());
        let v: Value = serde_yaml::from_str(r#"["80/sctp"]"#).unwrap();
        assert!(
            parse_ports(&v, &|s| s.to_string())
                .unwrap_err()
                .contains("sctp")
        );
    }

    #[test]
    fn override_content_and_warnings() {
        let p = project(
            "services:\n  web:\n    image: x\n    network_mode: bridge\n    networks: [front]\n    ports: ['8080:80', '53:53/udp']\n    labels: [rediacc.service_ip=1.2.3.4, rediacc.tcp_ports=25]\n  db:\n    image: y\n",
        );
        let mut slots = SlotTable::new();
        slots.insert("web".into(), 0);
        slots.insert("db".into(), 1);
        slots.insert("elsewhere".into(), 2);
        let r = rewrite(&p, NetworkId::new(2816).unwrap(), &slots, &|s| {
            s.to_string()
        })
        .unwrap();
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("network_mode: bridge"));
        assert!(r.warnings[1].contains("rediacc.service_ip=1.2.3.4"));
        let doc: Value = serde_yaml::from_str(&r.override_yaml).unwrap();
        let web = &doc["services"]["web"];
        assert_eq!(web["network_mode"], "host");
        assert_eq!(web["labels"]["rediacc.service_ip"], "127.0.11.2");
        assert_eq!(web["labels"]["rediacc.network_id"], "2816");
        assert_eq!(web["labels"]["rediacc.tcp_ports"], "25,8080:80");
        assert_eq!(web["labels"]["rediacc.udp_ports"], "53:53");
        assert_eq!(web["environment"]["SERVICE_IP"], "127.0.11.2");
        assert_eq!(
            doc["services"]["db"]["environment"]["SERVICE_IP"],
            "127.0.11.3"
        );
        assert!(
            r.override_yaml.contains("ports: !reset []"),
            "{}",
            r.override_yaml
        );
        assert!(
            r.override_yaml.contains("networks: !reset"),
            "{}",
            r.override_yaml
        );
        let hosts = doc["services"]["db"]["extra_hosts"].as_sequence().unwrap();
        assert!(hosts.contains(&Value::from("elsewhere=127.0.11.4")));
        assert!(doc["services"]["db"].get("ports").is_none());
    }
}
