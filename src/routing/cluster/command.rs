//! `renet cluster status|release`: the operator's view of the cluster — live servers, what
//! each serves, who owns what, and conflicts — and the one way to take a cluster-wide claim
//! back (docs/cluster.md). Reads etcd directly; needs no route server.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde_json::json;

use crate::host::settings::Settings;
use crate::routing::cluster::keys::{Resource, Schema};
use crate::routing::cluster::settings::{Connection, parse_endpoints};
use crate::routing::cluster::view::ClusterView;

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// List live servers, the hosts and ports each serves, owned resources nobody serves, and
    /// conflicts.
    Status {
        #[command(flatten)]
        place: EtcdPlace,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Release a cluster-wide claim: `host NAME`, `tcp PORT` or `udp PORT`. The resource goes
    /// to the next repository that asks once nobody serves it.
    Release {
        #[command(flatten)]
        place: EtcdPlace,
        #[arg(value_parser = ["host", "tcp", "udp"])]
        kind: String,
        /// A host name or a port number.
        what: String,
    },
}

/// Which etcd: the flag, else the settings file's `cluster` object.
#[derive(Debug, clap::Args)]
pub struct EtcdPlace {
    /// Settings file [default: /etc/rediacc/renet.json].
    #[arg(long, env = "RENET_SETTINGS", value_name = "FILE")]
    settings: Option<PathBuf>,
    /// etcd endpoints, comma separated [settings: cluster.endpoints].
    #[arg(long, value_name = "URLS")]
    cluster: Option<String>,
}

impl EtcdPlace {
    fn resolve(&self) -> Result<(Connection, Schema)> {
        let mut s = Settings::load(&Settings::path(self.settings.as_deref()))?.cluster;
        if let Some(c) = &self.cluster {
            s.endpoints = parse_endpoints(std::slice::from_ref(c))?;
        }
        let connection = s.connection()?.context(
            "no etcd endpoints: pass --cluster URLS or set cluster.endpoints in the settings file",
        )?;
        Ok((connection, Schema::new(&s.prefix, &s.traefik_root)))
    }
}

pub fn run(cmd: ClusterCommand) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        match cmd {
            ClusterCommand::Status { place, json } => status(place, json).await,
            ClusterCommand::Release { place, kind, what } => release(place, &kind, &what).await,
        }
    })
}

async fn read_view(connection: &Connection, schema: &Schema) -> Result<ClusterView> {
    let (mut client, _) = super::agent::connect(connection, &schema.own_prefix(), 0).await?;
    let listing = client
        .get(schema.own_prefix(), Some(GetOptions::new().with_prefix()))
        .await
        .context("etcd: cannot read the cluster state")?;
    let mut view = ClusterView::default();
    for kv in listing.kvs() {
        if let Ok(key) = kv.key_str() {
            view.apply(schema, key, Some((kv.value(), kv.lease())));
        }
    }
    view.connected = true;
    Ok(view)
}

/// The status document (also the `--json` output): deterministic, sorted.
pub fn status_document(view: &ClusterView) -> serde_json::Value {
    let mut servers = serde_json::Map::new();
    for (name, record) in &view.servers {
        let served: Vec<serde_json::Value> = view
            .serving
            .iter()
            .filter(|(_, e)| &e.serving.server == name)
            .map(|(r, e)| json!({"resource": r.to_string(), "network_id": e.serving.network_id}))
            .collect();
        servers.insert(
            name.clone(),
            json!({
                "address": record.address,
                "http_port": record.http_port,
                "https_port": record.https_port,
                "serving": served,
            }),
        );
    }
    let unserved: Vec<serde_json::Value> = view
        .owners
        .iter()
        .filter(|(r, _)| !view.serving.contains_key(*r))
        .map(|(r, (n, _))| json!({"resource": r.to_string(), "network_id": n}))
        .collect();
    json!({
        "servers": servers,
        "owned_not_served": unserved,
        "conflicts": conflicts(view),
    })
}

/// What an operator should look at: a resource served for a network that does not own it, a
/// resource served by a server that is not alive, a network served from several servers
/// (a move in progress, or one network ID given to two repositories).
fn conflicts(view: &ClusterView) -> Vec<String> {
    let mut out = Vec::new();
    let mut servers_of: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
    for (r, e) in &view.serving {
        let s = &e.serving;
        servers_of
            .entry(s.network_id)
            .or_default()
            .insert(&s.server);
        match view.owners.get(r) {
            Some((m, _)) if *m != s.network_id => out.push(format!(
                "{r} is served by `{}` for network {} but owned by network {m}",
                s.server, s.network_id
            )),
            None => out.push(format!(
                "{r} is served by `{}` for network {} but has no owner key",
                s.server, s.network_id
            )),
            _ => {}
        }
        if !view.servers.contains_key(&s.server) {
            out.push(format!(
                "{r} is served by `{}`, which is not a live server",
                s.server
            ));
        }
    }
    for (n, servers) in servers_of {
        if servers.len() > 1 {
            out.push(format!(
                "network {n} is served from several servers ({}): a move in progress, or one \
                 network ID given to two repositories",
                servers.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    out
}

async fn status(place: EtcdPlace, as_json: bool) -> Result<u8> {
    let (connection, schema) = place.resolve()?;
    let view = read_view(&connection, &schema).await?;
    let doc = status_document(&view);
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(0);
    }
    if view.servers.is_empty() {
        writeln!(out, "no live servers")?;
    }
    for (name, s) in doc["servers"].as_object().into_iter().flatten() {
        writeln!(
            out,
            "server {name} ({}, http {}, https {})",
            s["address"].as_str().unwrap_or(""),
            s["http_port"],
            s["https_port"]
        )?;
        for e in s["serving"].as_array().into_iter().flatten() {
            write_resource_line(&mut out, e)?;
        }
    }
    let unserved = doc["owned_not_served"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !unserved.is_empty() {
        writeln!(out, "owned, not served now:")?;
        for e in &unserved {
            write_resource_line(&mut out, e)?;
        }
    }
    let conflicts = doc["conflicts"].as_array().cloned().unwrap_or_default();
    if conflicts.is_empty() {
        writeln!(out, "no conflicts")?;
    } else {
        writeln!(out, "conflicts:")?;
        for c in conflicts {
            writeln!(out, "  {}", c.as_str().unwrap_or(""))?;
        }
    }
    Ok(0)
}

/// One resource of the status listing: `  <resource>  network <id>`.
fn write_resource_line(out: &mut impl Write, e: &serde_json::Value) -> std::io::Result<()> {
    writeln!(
        out,
        "  {}  network {}",
        e["resource"].as_str().unwrap_or(""),
        e["network_id"]
    )
}

async fn release(place: EtcdPlace, kind: &str, what: &str) -> Result<u8> {
    let (connection, schema) = place.resolve()?;
    let r = Resource::parse(kind, what).map_err(|e| anyhow::anyhow!("{kind} {what}: {e}"))?;
    let key = schema.owner(&r);
    let (mut client, _) = super::agent::connect(&connection, &key, 0).await?;
    let done = client
        .txn(
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Greater, 0)])
                .and_then([TxnOp::delete(key.clone(), None)]),
        )
        .await
        .with_context(|| format!("etcd: releasing {r}"))?;
    if !done.succeeded() {
        bail!("{r} is not claimed in the cluster (no key {key})");
    }
    println!("released {r}: the next repository to ask for it gets it once nobody serves it");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_servers_and_conflicts() {
        let schema = Schema::new("renet", "traefik");
        let mut v = ClusterView::default();
        let rec = br#"{"address":"198.18.72.11","http_port":80,"https_port":443,"name":"a"}"#;
        v.apply(&schema, "renet/servers/a", Some((rec, 1)));
        v.apply(&schema, "renet/owners/host/a.example", Some((b"4032", 0)));
        v.apply(
            &schema,
            "renet/serving/host/a.example",
            Some((br#"{"network_id":4032,"server":"a"}"#, 1)),
        );
        v.apply(&schema, "renet/owners/host/b.example", Some((b"4096", 0)));
        v.apply(
            &schema,
            "renet/serving/tcp/5432",
            Some((br#"{"network_id":4032,"server":"b"}"#, 2)),
        );
        let doc = status_document(&v);
        assert_eq!(
            doc["servers"]["a"]["serving"][0]["resource"],
            "host a.example"
        );
        assert_eq!(doc["owned_not_served"][0]["resource"], "host b.example");
        let c = doc["conflicts"].to_string();
        assert!(
            c.contains("tcp 5432 is served by `b` for network 4032 but has no owner key"),
            "{c}"
        );
        assert!(c.contains("not a live server"), "{c}");
        assert!(
            c.contains("network 4032 is served from several servers (a, b)"),
            "{c}"
        );
    }
}
