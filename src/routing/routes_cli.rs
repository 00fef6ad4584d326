//! `renet routes`: what the route server made of a repository — its HTTP routes (host → service
//! → backend), its TCP/UDP ports (and whether a published port moved into the dynamic range),
//! and every refusal, rejection or conflict that names the repository, with the reason.
//! `renet repo up` ends with the same summary, so a dropped Host rule or a moved port is seen
//! at deploy time, not later in `curl /health`.
//!
//! Read from the running route server (`/routes.json`, `/ports`, `/health`) over loopback HTTP:
//! the summary is what Traefik is really being told. The problem lists are taken generically:
//! every entry of `rejected`, `conflicts` and `refused` (and any later list of objects) whose
//! `network_id` is the repository's, and in a cluster the routers waiting for a cluster claim
//! (`cluster.pending`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::addresses::{NetworkId, resolve_network_id};
use crate::host::settings::Settings;

/// Lists in `/health` that hold problems (objects with a `network_id`).
pub const PROBLEM_LISTS: &[&str] = &["refused", "rejected", "conflicts"];
/// How long one request to the route server may take.
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, clap::Args)]
pub struct RoutesArgs {
    /// The repository's network ID [default: $REDIACC_NETWORK_ID, else the N of
    /// DOCKER_HOST=unix://…/docker-<N>.sock; without one, every repository].
    #[arg(long)]
    pub network_id: Option<NetworkId>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The route server's address [default: the settings file's `listen`, 127.0.0.1:7111].
    #[arg(long, value_name = "IP:PORT")]
    pub route_server: Option<String>,
    /// Settings file (for the route server's address).
    #[arg(long, env = "RENET_SETTINGS", value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

pub fn run(args: RoutesArgs) -> Result<u8> {
    let network = resolve_network_id(
        args.network_id,
        std::env::var("REDIACC_NETWORK_ID").ok().as_deref(),
        std::env::var("DOCKER_HOST").ok().as_deref(),
    )?;
    let addr = route_server_address(args.route_server.as_deref(), args.settings.as_deref())?;
    let summary = match fetch(&addr, network) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("renet: {e:#}");
            return Ok(3);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render_text(&summary));
    }
    Ok(if has_problems(&summary) { 1 } else { 0 })
}

/// The route server's address: the flag, else the settings file's `listen`.
pub fn route_server_address(
    flag: Option<&str>,
    settings: Option<&std::path::Path>,
) -> Result<SocketAddr> {
    let text = match flag {
        Some(a) => a.to_string(),
        None => Settings::load(&Settings::path(settings))?.listen,
    };
    crate::routing::server::parse_listen(&text)
}

/// Reads the three endpoints and keeps what concerns `network` (everything without one).
pub fn fetch(addr: &SocketAddr, network: Option<NetworkId>) -> Result<Value> {
    let get = |path: &str| -> Result<Value> {
        let (code, body) = http_get(addr, path).with_context(|| {
            format!(
                "the route server at {addr} is not running or does not answer ({path}); \
                 start it (systemctl start renet-route-server) to see routes"
            )
        })?;
        if code != 200 && !(code == 503 && path == "/health") {
            bail!("route server at {addr}: GET {path} answered {code}");
        }
        serde_json::from_str(&body).with_context(|| format!("{addr}{path}: not JSON"))
    };
    let routes = get("/routes.json")?;
    let ports = get("/ports")?;
    let health = get("/health")?;
    Ok(summarize(addr, network, &routes, &ports, &health))
}

fn ours(v: &Value, network: Option<NetworkId>) -> bool {
    network.is_none_or(|n| v["network_id"].as_u64() == Some(u64::from(n.get())))
}

/// The summary document (deterministic: lists keep the route server's sorted order).
pub fn summarize(
    addr: &SocketAddr,
    network: Option<NetworkId>,
    routes: &Value,
    ports: &Value,
    health: &Value,
) -> Value {
    let pick = |list: &Value| -> Vec<Value> {
        list.as_array()
            .map(|a| a.iter().filter(|v| ours(v, network)).cloned().collect())
            .unwrap_or_default()
    };
    let mut port_list = Vec::new();
    for proto in ["tcp", "udp"] {
        for p in pick(&ports[proto]) {
            let moved = p["preferred"]
                .as_u64()
                .is_some_and(|want| Some(want) != p["port"].as_u64());
            let mut p = p.clone();
            p["protocol"] = json!(proto);
            p["moved"] = json!(moved);
            port_list.push(p);
        }
    }
    let mut problems = Vec::new();
    let mut lists: Vec<&str> = PROBLEM_LISTS.to_vec();
    if let Some(obj) = health.as_object() {
        for (k, v) in obj {
            let is_object_list = v
                .as_array()
                .is_some_and(|a| a.iter().all(|e| e.get("network_id").is_some()) && !a.is_empty());
            if is_object_list && !lists.contains(&k.as_str()) && k != "daemons" && k != "expected" {
                lists.push(k);
            }
        }
    }
    for list in lists {
        for p in pick(&health[list]) {
            let mut p = p.clone();
            p["list"] = json!(list);
            problems.push(p);
        }
    }
    // In a cluster: routers withheld until etcd gives this server their hosts or ports.
    for p in pick(&health["cluster"]["pending"]) {
        let mut p = p.clone();
        p["list"] = json!("cluster.pending");
        problems.push(p);
    }
    let daemon = health["daemons"].as_array().and_then(|a| {
        network.and_then(|n| {
            a.iter()
                .find(|d| d["network_id"].as_u64() == Some(u64::from(n.get())))
                .cloned()
        })
    });
    json!({
        "route_server": addr.to_string(),
        "route_server_status": health["status"],
        "network_id": network.map(|n| n.get()),
        "daemon": daemon,
        "http": pick(&routes["http"]),
        "tcp": pick(&routes["tcp"]),
        "udp": pick(&routes["udp"]),
        "ports": port_list,
        "problems": problems,
    })
}

/// True when something of the repository was refused, rejected, in conflict, or moved.
pub fn has_problems(summary: &Value) -> bool {
    summary["problems"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

fn list_text(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The human summary.
pub fn render_text(s: &Value) -> String {
    let mut out = String::new();
    let who = match s["network_id"].as_u64() {
        Some(n) => format!("network {n}"),
        None => "every network".to_string(),
    };
    out.push_str(&format!(
        "routes of {who} (route server {}: {})\n",
        s["route_server"].as_str().unwrap_or(""),
        s["route_server_status"].as_str().unwrap_or("?")
    ));
    if let Some(d) = s["daemon"].as_object() {
        if d.get("state").and_then(Value::as_str) != Some("connected") {
            out.push_str(&format!(
                "  daemon: {} ({})\n",
                d.get("state").and_then(Value::as_str).unwrap_or("?"),
                d.get("last_error").and_then(Value::as_str).unwrap_or("")
            ));
        }
    } else if s["network_id"].is_u64() {
        out.push_str("  daemon: not seen by the route server\n");
    }
    let routers = |proto: &str, out: &mut String| {
        for r in s[proto].as_array().into_iter().flatten() {
            let rule = r["rule"].as_str().unwrap_or("");
            out.push_str(&format!(
                "  {proto:<4} {}{} -> {} -> {} [{}]\n",
                r["name"].as_str().unwrap_or(""),
                if rule.is_empty() {
                    String::new()
                } else {
                    format!(" {rule}")
                },
                r["service"].as_str().unwrap_or(""),
                list_text(&r["backends"]),
                list_text(&r["entrypoints"]),
            ));
        }
    };
    let n_routes: usize = ["http", "tcp", "udp"]
        .iter()
        .map(|p| s[p].as_array().map_or(0, Vec::len))
        .sum();
    if n_routes == 0 {
        out.push_str("  no routes\n");
    }
    for proto in ["http", "tcp", "udp"] {
        routers(proto, &mut out);
    }
    for p in s["ports"].as_array().into_iter().flatten() {
        let moved = if p["moved"] == true {
            format!(
                " (MOVED: {} was asked for)",
                p["preferred"].as_u64().unwrap_or(0)
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  port {}/{} -> {}:{}{moved}\n",
            p["port"],
            p["protocol"].as_str().unwrap_or(""),
            p["service"].as_str().unwrap_or(""),
            p["target"],
        ));
    }
    for p in s["problems"].as_array().into_iter().flatten() {
        let what = p["object"]
            .as_str()
            .or(p["container"].as_str())
            .or(p["service"].as_str())
            .unwrap_or("");
        out.push_str(&format!(
            "  {} {} `{what}`: {}\n",
            p["list"].as_str().unwrap_or("").to_uppercase(),
            p["kind"].as_str().unwrap_or("container"),
            p["reason"].as_str().unwrap_or("")
        ));
    }
    out
}

/// A GET over loopback HTTP/1.0 with bounded connect, read and write.
fn http_get(addr: &SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(addr, TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routers_waiting_for_the_cluster_are_problems_of_their_repository() {
        let addr: SocketAddr = "127.0.0.1:7111".parse().unwrap();
        let health = json!({"status": "ok", "cluster": {"pending": [
            {"kind": "http router", "network_id": 2816, "object": "r", "reason": "moving"},
            {"kind": "http router", "network_id": 2880, "object": "x", "reason": "moving"}
        ]}});
        let n = NetworkId::new(2816).unwrap();
        let s = summarize(&addr, Some(n), &json!({}), &json!({}), &health);
        assert_eq!(s["problems"].as_array().unwrap().len(), 1);
        assert_eq!(s["problems"][0]["list"], "cluster.pending");
        assert!(has_problems(&s));
    }

    #[test]
    fn keeps_the_repositorys_entries_and_flags_moved_ports() {
        let addr: SocketAddr = "127.0.0.1:7111".parse().unwrap();
        let routes = json!({"http": [
            {"name": "a", "network_id": 2816, "rule": "Host(`a.x`)", "service": "web",
             "backends": ["http://127.0.11.2:80"], "entrypoints": ["websecure"]},
            {"name": "b", "network_id": 2880}
        ], "tcp": [], "udp": []});
        let ports = json!({"tcp": [
            {"port": 10000, "preferred": 5432, "network_id": 2816, "service": "db", "target": 5432},
            {"port": 6379, "preferred": 6379, "network_id": 2816, "service": "cache", "target": 6379}
        ], "udp": []});
        let health = json!({"status": "degraded", "daemons": [],
            "rejected": [{"network_id": 2880, "reason": "x"}],
            "refused": [{"kind": "http router", "network_id": 2816, "object": "r", "reason": "host owned"}],
            "conflicts": []});
        let n = NetworkId::new(2816).unwrap();
        let s = summarize(&addr, Some(n), &routes, &ports, &health);
        assert_eq!(s["http"].as_array().unwrap().len(), 1);
        assert_eq!(s["ports"][0]["moved"], true);
        assert_eq!(s["ports"][1]["moved"], false);
        assert_eq!(s["problems"].as_array().unwrap().len(), 1);
        assert_eq!(s["problems"][0]["list"], "refused");
        let text = render_text(&s);
        assert!(text.contains("MOVED: 5432"), "{text}");
        assert!(
            text.contains("REFUSED http router `r`: host owned"),
            "{text}"
        );
        assert!(has_problems(&s));
    }
}
