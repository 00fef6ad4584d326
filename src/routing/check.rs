//! `renet check [DIR]`: decodes a repository's labels offline, with the route server's own
//! code, before anything is deployed.
//!
//! For every compose project of the repository (the root and first-level subfolders), compose
//! itself resolves the model (`docker compose config --format json`: interpolation, `.env`,
//! `extends`, anchors), each service becomes the container the route server would see (its
//! labels plus the `rediacc.*` identity `renet compose` injects), and `routing::build` runs on
//! them with the host's settings. Reported, each with the service and the reason:
//! - everything route building rejects, refuses or finds in conflict (unknown label fields,
//!   bad values, hosts without `Host(...)`, …);
//! - routers on entrypoints the proxy does not have;
//! - middleware references that name nothing the repository defines;
//! - rule arguments without backticks (Traefik's grammar needs quoted strings).
//!
//! Exits 1 when anything was found, 0 when the repository is clean. Nothing is written and no
//! daemon is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::addresses::{NetworkId, resolve_network_id, service_ip_vars};
use crate::host::settings::Settings;
use crate::routing::build::{self as routes, Container, Health, RouteSettings};

/// Compose file names docker compose looks for, in its order.
const COMPOSE_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The repository root [default: the current folder].
    pub dir: Option<PathBuf>,
    /// The repository's network ID (names of automatic routes) [default: $REDIACC_NETWORK_ID,
    /// else 2816].
    #[arg(long)]
    pub network_id: Option<NetworkId>,
    /// Settings file (entrypoints, base domain, ports) [default: /etc/rediacc/renet.json].
    #[arg(long, env = "RENET_SETTINGS", value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The compose service (or `-` for the repository as a whole).
    pub service: String,
    pub what: String,
    pub reason: String,
}

pub fn run(args: CheckArgs) -> Result<u8> {
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let root = cwd.join(args.dir.clone().unwrap_or_else(|| PathBuf::from(".")));
    let root = std::fs::canonicalize(&root)
        .with_context(|| format!("{}: cannot open the repository folder", root.display()))?;
    let network = resolve_network_id(
        args.network_id,
        std::env::var("REDIACC_NETWORK_ID").ok().as_deref(),
        std::env::var("DOCKER_HOST").ok().as_deref(),
    )?
    .unwrap_or(NetworkId::new(crate::addresses::FIRST_NETWORK_ID)?);
    let settings = Settings::load(&Settings::path(args.settings.as_deref()))?;
    let services = compose_services(&root, network)?;
    if services.is_empty() {
        bail!(
            "{}: no compose project at the root or in a first-level subfolder",
            root.display()
        );
    }
    let findings = check(&services, network, &settings);
    if args.json {
        let doc = json!({
            "repo_root": root.display().to_string(),
            "network_id": network.get(),
            "services": services.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            "findings": findings,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if findings.is_empty() {
        println!("{}: {} services, labels ok", root.display(), services.len());
    } else {
        for f in &findings {
            println!("{}: {}: {}", f.service, f.what, f.reason);
        }
        println!("{} problem(s) in {}", findings.len(), root.display());
    }
    Ok(if findings.is_empty() { 0 } else { 1 })
}

/// A compose service as compose resolved it.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub project: String,
    pub labels: BTreeMap<String, String>,
}

/// Every service of every compose project of the repository, from compose's own model.
fn compose_services(root: &Path, network: NetworkId) -> Result<Vec<Service>> {
    let mut folders = vec![root.to_path_buf()];
    let mut subs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("{}: cannot list", root.display()))?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    folders.extend(subs);
    let slots = crate::compose::slots::read(root)?;
    let mut env: Vec<(String, String)> = vec![("REDIACC_NETWORK_ID".into(), network.to_string())];
    let vars = service_ip_vars(slots.keys().map(String::as_str)).map_err(|e| anyhow::anyhow!(e))?;
    for (svc, var) in vars {
        env.push((var, network.slot_ip(slots[&svc])?.to_string()));
    }
    let program = crate::compose::invoke::find_compose()?;
    let mut out = Vec::new();
    for folder in folders {
        if !COMPOSE_FILES.iter().any(|f| folder.join(f).is_file()) {
            continue;
        }
        let output = Command::new(&program.program)
            .args(&program.prefix)
            .args(["config", "--format", "json"])
            .current_dir(&folder)
            .env_remove("DOCKER_HOST")
            .env_remove("COMPOSE_FILE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("cannot run docker compose")?;
        if !output.status.success() {
            bail!(
                "{}: docker compose config failed:\n{}",
                folder.display(),
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        let model: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{}: docker compose config: not JSON", folder.display()))?;
        let project = model["name"].as_str().unwrap_or("").to_string();
        for (name, svc) in model["services"].as_object().into_iter().flatten() {
            let labels = svc["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Service {
                name: name.clone(),
                project: project.clone(),
                labels,
            });
        }
    }
    Ok(out)
}

/// The container the route server would see for each service: its labels plus the identity
/// `renet compose` injects (slot IPs in order, as a fresh allocation would give).
fn containers(services: &[Service], network: NetworkId) -> Result<Vec<Container>> {
    let mut out = Vec::new();
    for (slot, s) in services.iter().enumerate() {
        let mut labels = s.labels.clone();
        labels.insert(routes::LABEL_SERVICE_NAME.into(), s.name.clone());
        labels.insert(
            routes::LABEL_SERVICE_IP.into(),
            network.slot_ip(slot as u32)?.to_string(),
        );
        labels.insert(routes::LABEL_NETWORK_ID.into(), network.to_string());
        labels.insert("com.docker.compose.service".into(), s.name.clone());
        labels.insert("com.docker.compose.project".into(), s.project.clone());
        out.push(Container {
            network_id: network,
            id: format!("check-{slot}"),
            name: format!("{}-{}-1", s.project, s.name),
            labels: std::sync::Arc::new(labels.into()),
            health: Health::None,
            created: 0,
        });
    }
    Ok(out)
}

/// Runs route building on the services and collects every problem.
pub fn check(services: &[Service], network: NetworkId, settings: &Settings) -> Vec<Finding> {
    let mut findings = Vec::new();
    for s in services {
        for (key, value) in &s.labels {
            if key.ends_with(".rule")
                && let Some(arg) = unquoted_argument(value)
            {
                findings.push(Finding {
                    service: s.name.clone(),
                    what: format!("label {key}"),
                    reason: format!(
                        "`{arg}` in `{value}` is not quoted: Traefik's rules take strings in \
                         backticks, e.g. Host(`example.com`)"
                    ),
                });
            }
        }
    }
    let containers = match containers(services, network) {
        Ok(c) => c,
        Err(e) => {
            findings.push(Finding {
                service: "-".into(),
                what: "repository".into(),
                reason: format!("{e:#}"),
            });
            return findings;
        }
    };
    let service_of = |v: &Value| -> String {
        let name = v["container"]
            .as_str()
            .map(str::to_string)
            .or_else(|| v["containers"][0].as_str().map(str::to_string))
            .unwrap_or_default();
        containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.labels.get(routes::LABEL_SERVICE_NAME).map(str::to_string))
            .unwrap_or_else(|| "-".into())
    };
    let route_settings = match RouteSettings::from_settings(settings) {
        Ok(s) => s,
        Err(e) => {
            findings.push(Finding {
                service: "-".into(),
                what: "settings".into(),
                reason: format!("{e:#}"),
            });
            return findings;
        }
    };
    let snapshot = routes::build(&containers, &route_settings, &Default::default());
    for (list, entries) in [
        ("rejected", &snapshot.rejected),
        ("refused", &snapshot.refused),
        ("conflict", &snapshot.conflicts),
    ] {
        for v in entries {
            findings.push(Finding {
                service: service_of(v),
                what: format!("{list} {}", v["kind"].as_str().unwrap_or("container")),
                reason: v["reason"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    let known: BTreeSet<String> = crate::host::proxy_config::entrypoint_names(settings)
        .into_iter()
        .collect();
    for proto in ["http", "tcp", "udp"] {
        for r in snapshot.routes_json[proto].as_array().into_iter().flatten() {
            for ep in r["entrypoints"].as_array().into_iter().flatten() {
                let ep = ep.as_str().unwrap_or("");
                if !known.contains(ep) {
                    findings.push(Finding {
                        service: service_of(r),
                        what: format!("{proto} router {}", r["name"].as_str().unwrap_or("")),
                        reason: format!(
                            "entrypoint `{ep}` does not exist in the proxy (it has {})",
                            known.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
        }
    }
    findings.extend(dangling_middlewares(&snapshot.routes_yaml, &containers));
    findings
        .sort_by(|a, b| (&a.service, &a.what, &a.reason).cmp(&(&b.service, &b.what, &b.reason)));
    findings.dedup();
    findings
}

/// Routers whose `middlewares` name a middleware the published configuration does not define.
fn dangling_middlewares(routes_yaml: &str, containers: &[Container]) -> Vec<Finding> {
    let Ok(doc) = serde_yaml::from_str::<Value>(routes_yaml) else {
        return Vec::new();
    };
    let defined: BTreeSet<String> = doc["http"]["middlewares"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, router) in doc["http"]["routers"].as_object().into_iter().flatten() {
        for m in router["middlewares"].as_array().into_iter().flatten() {
            let m = m.as_str().unwrap_or("");
            if !m.contains('@') && !defined.contains(m) {
                let service = containers
                    .iter()
                    .find(|c| {
                        name.contains(&c.name)
                            || name.starts_with(
                                c.labels.get(routes::LABEL_SERVICE_NAME).unwrap_or("\u{0}"),
                            )
                    })
                    .and_then(|c| c.labels.get(routes::LABEL_SERVICE_NAME).map(str::to_string))
                    .unwrap_or_else(|| "-".into());
                out.push(Finding {
                    service,
                    what: format!("http router {name}"),
                    reason: format!(
                        "middleware `{m}` is not defined by this repository (a \
                         traefik.http.middlewares.<name>.* label); Traefik would refuse the router"
                    ),
                });
            }
        }
    }
    out
}

/// The first matcher argument of `rule` that is not quoted (`Host(example.com)`), if any.
pub fn unquoted_argument(rule: &str) -> Option<String> {
    let bytes = rule.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'`' || b == b'"' => quote = Some(b),
            None if b == b'(' || b == b',' => {
                let after = rule[i + 1..].trim_start();
                let prev_is_word = rule[..i]
                    .trim_end()
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric());
                let first = after.chars().next();
                let opens_call = b == b',' || prev_is_word;
                if opens_call
                    && let Some(c) = first
                    && c != '`'
                    && c != '"'
                    && c != ')'
                    && c != '('
                    && c != '!'
                {
                    let arg: String = after
                        .chars()
                        .take_while(|c| *c != ')' && *c != ',')
                        .collect();
                    // `Host(a) && Path(b)`: a word followed by `(` is a nested call, not an arg.
                    if !after[arg.len()..].starts_with('(') {
                        return Some(arg.trim().to_string());
                    }
                }
            }
            None => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_arguments() {
        assert_eq!(unquoted_argument("Host(`a.com`)"), None);
        assert_eq!(unquoted_argument("Host(`a.com`) && PathPrefix(`/x`)"), None);
        assert_eq!(unquoted_argument("(Host(`a`) || Host(\"b\"))"), None);
        assert_eq!(unquoted_argument("!PathPrefix(`/admin`)"), None);
        assert_eq!(unquoted_argument("Host(a.com)").as_deref(), Some("a.com"));
        assert_eq!(
            unquoted_argument("Host(`a`, b.com)").as_deref(),
            Some("b.com")
        );
    }
}
