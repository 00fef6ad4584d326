//! The route server's HTTP endpoints (spec §6.5): `/routes.yaml` for Traefik's HTTP provider,
//! and `/routes.json`, `/health`, `/ports`, `/metrics` for operators and monitoring.
//!
//! `/health` answers 503 when degraded (a daemon not answering, hung, serving stale routes, a
//! registered repository without a daemon, the state folder not writable), so an HTTP check
//! (systemd, a load balancer, Prometheus' blackbox) sees it without parsing the body.
//!
//! Every handler reads the current published snapshot (an `Arc` cloned under a read lock held
//! for nanoseconds) and the discovery state (a mutex never held across an `.await`), so no
//! request ever waits on Docker. Bodies that depend only on the snapshot are rendered once per
//! snapshot, when it is published, not per request. Every JSON body has its object keys sorted,
//! so the same state always gives the same bytes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::routing::build::Snapshot;
use crate::routing::discovery::Discovery;
use crate::routing::port_allocation::PortTable;

/// A snapshot together with its pre-rendered bodies.
#[derive(Debug, Clone)]
pub struct Published {
    /// The snapshot, its `routes_yaml` moved into [`Published::routes_yaml`].
    pub snapshot: Snapshot,
    pub routes_yaml: Bytes,
    pub routes_json: Bytes,
    pub ports_json: Bytes,
    /// How many snapshots were published before this one (0 = the startup snapshot).
    pub generation: u64,
}

impl Published {
    /// The YAML moves from the snapshot into the served body (`snapshot.routes_yaml` is left
    /// empty): at thousands of routes it is more than a megabyte, and a second copy lived as
    /// long as the snapshot.
    pub fn new(mut snapshot: Snapshot, generation: u64) -> Self {
        // Traefik needs a valid document on every poll: an empty body would not be one.
        let yaml = std::mem::take(&mut snapshot.routes_yaml);
        let yaml = if yaml.trim().is_empty() {
            "{}\n".to_string()
        } else {
            yaml
        };
        Published {
            routes_yaml: Bytes::from(yaml),
            routes_json: Bytes::from_owner(SharedText(Arc::clone(snapshot.routes_json.text()))),
            ports_json: canonical_json(&ports_value(&snapshot.ports)),
            snapshot,
            generation,
        }
    }
}

/// Text shared with the snapshot, served without a copy.
struct SharedText(Arc<String>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    published: RwLock<Arc<Published>>,
    pub discovery: Arc<Discovery>,
    /// The last failure to persist the port table, shown by `/health` until a write works.
    pub state_error: Mutex<Option<String>>,
    /// Where the registered repositories are recorded; None → nothing is expected.
    pub expected: Option<Expected>,
    /// In cluster mode, the agent's view of etcd (`/health` `cluster`).
    pub cluster: Mutex<Option<ClusterWatch>>,
}

/// The cluster agent's published view.
pub type ClusterWatch =
    tokio::sync::watch::Receiver<Arc<crate::routing::cluster::view::ClusterView>>;

/// The repositories this route server should see: those bound (`repo_binding`) to a daemon in
/// its socket folder. Read at each `/health` and `/metrics` request (a readdir of small
/// files), so a repository registered or released later is seen without a restart.
#[derive(Debug, Clone)]
pub struct Expected {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
}

impl Expected {
    pub fn list(&self) -> Vec<crate::host::repo_binding::Binding> {
        let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let ours = abs(&self.socket_dir);
        crate::host::repo_binding::list(&self.data_dir)
            .into_iter()
            .filter(|b| abs(&b.socket_dir) == ours)
            .collect()
    }
}

impl AppState {
    pub fn new(initial: Published, discovery: Arc<Discovery>) -> Arc<Self> {
        Self::with_expected(initial, discovery, None)
    }

    pub fn with_expected(
        initial: Published,
        discovery: Arc<Discovery>,
        expected: Option<Expected>,
    ) -> Arc<Self> {
        Arc::new(AppState {
            published: RwLock::new(Arc::new(initial)),
            discovery,
            state_error: Mutex::new(None),
            expected,
            cluster: Mutex::new(None),
        })
    }

    /// Shows the cluster agent's view in `/health` from now on.
    pub fn set_cluster(&self, view: ClusterWatch) {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }

    /// The snapshot being served now.
    pub fn current(&self) -> Arc<Published> {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a new snapshot; requests in flight keep the one they started with.
    pub fn publish(&self, p: Published) {
        *self.published.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(p);
    }

    pub fn set_state_error(&self, err: Option<String>) {
        *self.state_error.lock().unwrap_or_else(|p| p.into_inner()) = err;
    }
}

/// The endpoints, ready for `axum::serve`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/routes.yaml", get(routes_yaml))
        .route("/routes.json", get(routes_json))
        .route("/health", get(health))
        .route("/ports", get(ports))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn routes_yaml(State(s): State<Arc<AppState>>) -> Response {
    body("text/yaml; charset=utf-8", s.current().routes_yaml.clone())
}

async fn routes_json(State(s): State<Arc<AppState>>) -> Response {
    body("application/json", s.current().routes_json.clone())
}

async fn ports(State(s): State<Arc<AppState>>) -> Response {
    body("application/json", s.current().ports_json.clone())
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    let v = health_value(&s);
    let code = if v["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = body("application/json", canonical_json(&v));
    *r.status_mut() = code;
    r
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let v = health_value(&s);
    let len = |k: &str| v[k].as_array().map_or(0, Vec::len);
    let counts = crate::routing::metrics::Counts {
        routers: v["routers"].as_u64().unwrap_or(0) as usize,
        services: v["services"].as_u64().unwrap_or(0) as usize,
        conflicts: len("conflicts"),
        rejected: len("rejected"),
        refused: len("refused"),
        missing: v["daemons"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|d| d["state"] == "missing").count()),
        degraded: v["status"] != "ok",
    };
    let text =
        crate::routing::metrics::render(&counts, &s.discovery.daemons(), &s.discovery.histograms);
    body(
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        Bytes::from(text),
    )
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found; endpoints: /routes.yaml /routes.json /health /ports /metrics\n",
    )
        .into_response()
}

fn body(content_type: &'static str, bytes: Bytes) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            // Every answer reflects the live state; a cache in between would hide changes.
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response()
}

/// The `/health` document: the snapshot's counts and findings plus each daemon's live state.
/// `status` is `ok` when every daemon is connected and confirmed (not stale), every registered
/// repository has its daemon, and the state folder is writable; else `degraded` (routes are
/// still served from what is known). Each daemon has a `state`: `connected`, `disconnected`
/// (not answering, hung), `stale` (not answering since this server started: its last known
/// containers are served), or `missing` (a registered repository without a daemon socket).
pub fn health_value(s: &AppState) -> Value {
    let p = s.current();
    let snap = &p.snapshot;
    let reports = s.discovery.daemons();
    let state_error = s
        .state_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let expected = s.expected.as_ref().map(Expected::list).unwrap_or_default();
    let daemons = daemon_entries(&reports, &s.discovery.without_socket(), &expected);
    let cluster = cluster_value(s, snap);
    let healthy = daemons.iter().all(|d| d["state"] == "connected")
        && cluster.as_ref().is_none_or(|c| c["connected"] == true);
    let status = if healthy && state_error.is_none() {
        "ok"
    } else {
        "degraded"
    };
    let expected: Vec<Value> = expected
        .iter()
        .map(|b| json!({"network_id": b.network_id, "root": b.root.display().to_string()}))
        .collect();
    let mut v = json!({
        "status": status,
        "expected": expected,
        "routers": snap.router_count,
        "services": snap.service_count,
        "auto_routes": {
            "enabled": snap.auto_routes_enabled,
            "note": snap.auto_routes_note,
        },
        "daemons": daemons,
        "ignored_sockets": s.discovery.ignored_sockets(),
        "rejected": snap.rejected,
        "refused": snap.refused,
        "conflicts": snap.conflicts,
        "state_error": state_error,
        "snapshot_generation": p.generation,
    });
    if let Some(c) = cluster {
        v["cluster"] = c;
    }
    v
}

/// `/health` `cluster`: whether etcd is reachable, what this server serves at the edge, and
/// the routers waiting for a cluster claim. A server that lost etcd keeps serving what it held
/// and says so here (and `status` turns `degraded`).
fn cluster_value(s: &AppState, snap: &Snapshot) -> Option<Value> {
    let view = s
        .cluster
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()?
        .borrow()
        .clone();
    let serving: Vec<Value> = view
        .served_here()
        .map(|(r, e)| json!({"resource": r.to_string(), "network_id": e.serving.network_id}))
        .collect();
    let pending = snap
        .cluster
        .as_ref()
        .map(|c| c.pending.clone())
        .unwrap_or_default();
    Some(json!({
        "server": view.server,
        "connected": view.connected,
        "error": view.error,
        "servers": view.servers.keys().collect::<Vec<_>>(),
        "serving": serving,
        "pending": pending,
    }))
}

/// Each known daemon with its `state`, then those that run without a socket (`no-socket`), then
/// every expected one that has no socket (`missing`), by network ID.
fn daemon_entries(
    reports: &[crate::routing::discovery::DaemonReport],
    without_socket: &[(crate::addresses::NetworkId, i32)],
    expected: &[crate::host::repo_binding::Binding],
) -> Vec<Value> {
    let mut out: Vec<(u32, Value)> = reports
        .iter()
        .map(|d| {
            let state = match (d.connected, d.stale) {
                (true, _) => "connected",
                (false, true) => "stale",
                (false, false) => "disconnected",
            };
            let mut v = serde_json::to_value(d).expect("a report always serializes");
            v["state"] = json!(state);
            (d.network_id.get(), v)
        })
        .collect();
    for (id, pid) in without_socket {
        out.push((
            id.get(),
            json!({
                "network_id": id.get(),
                "socket": null,
                "connected": false,
                "containers": 0,
                "stale": false,
                "state": "no-socket",
                "last_error": format!(
                    "dockerd of network {id} runs (pid {pid}) but its socket is gone: nothing \
                     can reach it; `renet daemon stop --network-id {id}`, then `start`"
                ),
            }),
        ));
    }
    for b in expected {
        if reports.iter().any(|d| d.network_id.get() == b.network_id)
            || without_socket
                .iter()
                .any(|(id, _)| id.get() == b.network_id)
        {
            continue;
        }
        let socket = b
            .socket_dir
            .join(format!("docker-{}.sock", b.network_id))
            .display()
            .to_string();
        out.push((
            b.network_id,
            json!({
                "network_id": b.network_id,
                "socket": socket,
                "connected": false,
                "containers": 0,
                "stale": false,
                "state": "missing",
                "last_error": format!(
                    "the repository {} is registered for network {} but its daemon socket is \
                     missing; start it with `renet daemon start --network-id {}`, or release \
                     the repository with `renet repo unbind --network-id {}`",
                    b.root.display(), b.network_id, b.network_id, b.network_id
                ),
            }),
        ));
    }
    out.sort_by_key(|(id, _)| *id);
    out.into_iter().map(|(_, v)| v).collect()
}

/// `/ports`: the allocations split by protocol, each list sorted by port.
pub fn ports_value(table: &PortTable) -> Value {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut allocations = table.allocations.clone();
    allocations.sort_by(|a, b| {
        (a.port, a.network_id, &a.service).cmp(&(b.port, b.network_id, &b.service))
    });
    for a in allocations {
        let v = json!({
            "port": a.port,
            "entrypoint": a.entrypoint,
            "network_id": a.network_id,
            "service": a.service,
            "target": a.target,
            // The published port asked for; null when the service left it to the range.
            "preferred": (a.preferred != 0).then_some(a.preferred),
        });
        if a.protocol == "udp" {
            udp.push(v);
        } else {
            tcp.push(v);
        }
    }
    json!({ "tcp": tcp, "udp": udp })
}

/// Pretty JSON with every object's keys sorted, and a final newline.
pub fn canonical_json(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec_pretty(&sorted(v)).expect("a JSON value always serializes");
    out.push(b'\n');
    Bytes::from(out)
}

/// A copy of `v` whose objects have sorted keys (serde_json keeps insertion order here, since
/// the crate enables `preserve_order`).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let v = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": null}});
        let s = String::from_utf8(canonical_json(&v).to_vec()).unwrap();
        let a = s.find("\"a\"").unwrap();
        let b = s.find("\"b\"").unwrap();
        assert!(a < b, "{s}");
        assert!(s.find("\"c\"").unwrap() < s.find("\"z\"").unwrap(), "{s}");
        assert!(s.find("\"x\"").unwrap() < s.find("\"y\"").unwrap(), "{s}");
        assert!(s.ends_with("}\n"));
    }

    #[test]
    fn empty_snapshot_serves_an_empty_document() {
        let p = Published::new(Snapshot::default(), 0);
        assert_eq!(&p.routes_yaml[..], b"{}\n");
        assert_eq!(
            &p.ports_json[..],
            b"{\n  \"tcp\": [],\n  \"udp\": []\n}\n" as &[u8]
        );
    }

    #[test]
    fn ports_are_split_by_protocol_and_sorted() {
        use crate::routing::port_allocation::PortAllocation;
        let alloc = |protocol: &str, port| PortAllocation {
            protocol: protocol.into(),
            port,
            entrypoint: format!("{protocol}-{port}"),
            network_id: 2816,
            service: "s".into(),
            target: 1,
            preferred: 0,
        };
        let t = PortTable {
            allocations: vec![alloc("tcp", 10001), alloc("udp", 53), alloc("tcp", 5432)],
        };
        let v = ports_value(&t);
        assert_eq!(v["tcp"][0]["port"], 5432);
        assert_eq!(v["tcp"][1]["port"], 10001);
        assert_eq!(v["udp"][0]["entrypoint"], "udp-53");
    }
}
