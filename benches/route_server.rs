//! Route server benchmark (`cargo bench --bench route_server`; prints figures, asserts
//! nothing). The numbers go into docs/performance.md, section "Route server".
//!
//! (a) discovery latency on a real repo daemon (network 2944): `docker start` returning →
//!     the route is in `/routes.yaml`, and `docker kill` returning → it is gone;
//! (b) scale: 200 synthetic daemons × 25 containers (a small Docker API served by this bench on
//!     200 unix sockets: `/_ping`, `/version`, `/containers/json`, `/containers/{id}/json`,
//!     `/events`): cold start to a full snapshot, RSS, rebuild time (in-process `routes::build`
//!     and as logged by the server), and event → published latency at that size;
//! (c) `/routes.yaml` throughput and latency with `wrk` (a second process), for the small
//!     snapshot of (a) and the 5000-route snapshot of (b).
//!
//! Bounded: about two minutes. `RS_BENCH=a`, `b` or `c` runs one part (c needs a or b).

#[path = "../tests/route_server_support/mod.rs"]
mod route_server_support;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use renet::addresses::NetworkId;
use renet::routing::build::{Container, Health, RouteSettings};
use route_server_support::*;
use serde_json::json;
use tokio::sync::broadcast;

const DISCOVERY_ITERATIONS: usize = 40;
/// The scale part's size: 200 daemons × 25 containers, and 500 toggles (each is two changes,
/// `die` then `start`: the 1,000 changes of issue 10's memory target). `RS_DAEMONS`,
/// `RS_PER_DAEMON` and `RS_TOGGLES` change them, to see which part of the route server's
/// memory grows with daemons and which with containers.
const DAEMONS: u32 = 200;
const PER_DAEMON: u32 = 25;
const TOGGLES: usize = 500;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn daemon_count() -> u32 {
    knob("RS_DAEMONS", DAEMONS)
}

fn per_daemon() -> u32 {
    knob("RS_PER_DAEMON", PER_DAEMON)
}

fn toggles() -> usize {
    knob("RS_TOGGLES", TOGGLES)
}
const WRK_SECONDS: u32 = 8;
const MS: Duration = Duration::from_millis(1);

fn main() {
    let part = std::env::var("RS_BENCH").unwrap_or_else(|_| "abc".into());
    let _lock = exclusive();
    println!("# route server benchmark");
    if part.contains('a') {
        discovery_latency(part.contains('c'));
    }
    if part.contains('b') {
        scale(part.contains('c'));
    }
}

// ---------------------------------------------------------------------------------------------
// statistics

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name}: n={} median={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        v.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        v[v.len() - 1]
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The route server's resident memory split (anonymous: heap and stacks; file: the mapped
/// binary and libraries) and its thread count, from `/proc/<pid>/status`.
fn memory_breakdown(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "RssAnon {}, RssFile {}, threads {}",
        field("RssAnon:"),
        field("RssFile:"),
        field("Threads:")
    )
}

/// Polls without sleeping (a bare loop over loopback HTTP) until `f` holds; the bench wants
/// sub-millisecond resolution on a small snapshot.
fn spin_until(timeout: Duration, f: impl FnMut() -> bool) -> bool {
    poll_until(timeout, Duration::ZERO, f)
}

/// Polls every `pause` until `f` holds. At 5000 routes a bare loop would take a core from the
/// server being measured (2 cores here), so the scale part pauses 1 ms between polls.
fn poll_until(timeout: Duration, pause: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    false
}

fn wrk(label: &str, url: &str) {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            &format!("-d{WRK_SECONDS}s"),
            "--latency",
            url,
        ])
        .output();
    let Ok(out) = out else {
        println!("{label}: wrk not found (scripts/test-env.sh install)");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let pick = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.trim().to_string())
            .unwrap_or_default()
    };
    println!(
        "{label}: {} | latency {} | {} | {}",
        pick("Requests/sec:"),
        pick("50%"),
        pick("99%"),
        pick("Transfer/sec:")
    );
}

// ---------------------------------------------------------------------------------------------
// (a) discovery latency on a real daemon

fn discovery_latency(with_wrk: bool) {
    let sb = Sandbox::new();
    let d = Daemon::start(&sb, 2944);
    let rs = RouteServer::start(
        &sb,
        &[
            "--base-domain",
            "bench.example",
            "--entrypoints",
            "websecure",
        ],
    );
    let ip = slot_ip(2944, 0).to_string();
    d.docker_ok(&[
        "create",
        "--network",
        "host",
        "--name",
        "lat",
        "--label",
        "rediacc.service_name=lat",
        "--label",
        &format!("rediacc.service_ip={ip}"),
        "--label",
        "rediacc.network_id=2944",
        "--label",
        "rediacc.service_port=8080",
        IMAGE,
        "sleep",
        "3600",
    ]);
    let host = "lat-2944.bench.example";
    let addr = format!("127.0.0.1:{}", rs.port);
    let has_route = || {
        http_get(&addr, "/routes.yaml", None)
            .map(|(_, b)| b.contains(host))
            .unwrap_or(false)
    };
    let (mut after_return, mut from_issue, mut removal) = (vec![], vec![], vec![]);
    for _ in 0..DISCOVERY_ITERATIONS {
        let issued = Instant::now();
        d.docker_ok(&["start", "lat"]);
        let returned = Instant::now();
        assert!(
            spin_until(Duration::from_secs(10), has_route),
            "route never appeared"
        );
        after_return.push(returned.elapsed());
        from_issue.push(issued.elapsed());
        d.docker_ok(&["kill", "lat"]);
        let returned = Instant::now();
        assert!(
            spin_until(Duration::from_secs(10), || !has_route()),
            "route never went away"
        );
        removal.push(returned.elapsed());
    }
    println!("## (a) discovery latency, real dockerd 20.10, busybox container");
    stats(
        "docker start returned → route in /routes.yaml",
        after_return,
    );
    stats("docker start issued → route in /routes.yaml", from_issue);
    stats("docker kill returned → route gone", removal);
    if with_wrk {
        d.docker_ok(&["start", "lat"]);
        assert!(
            spin_until(Duration::from_secs(10), has_route),
            "route never appeared"
        );
        let body = rs.get("/routes.yaml").unwrap();
        println!("## (c) wrk, small snapshot (1 route, {} bytes)", body.len());
        wrk("GET /routes.yaml", &rs.url("/routes.yaml"));
    }
}

// ---------------------------------------------------------------------------------------------
// (b) scale, with a synthetic Docker API

struct FakeDaemon {
    id: NetworkId,
    containers: Vec<(String, String, BTreeMap<String, String>)>,
    stopped: Mutex<HashSet<String>>,
    events: broadcast::Sender<String>,
}

fn container_id(n: NetworkId, j: u32) -> String {
    format!("{:064x}", (n.get() as u64) << 16 | j as u64)
}

/// Container `j` of daemon `n`: tier 1 (auto route), every fifth one tier 2 with a label route
/// and an HSTS middleware.
fn fake_labels(n: NetworkId, j: u32) -> BTreeMap<String, String> {
    let s = format!("s{j}");
    let mut l = BTreeMap::from([
        ("rediacc.service_name".to_string(), s.clone()),
        (
            "rediacc.service_ip".to_string(),
            n.slot_ip(j).unwrap().to_string(),
        ),
        ("rediacc.network_id".to_string(), n.to_string()),
        ("rediacc.service_port".to_string(), "8080".to_string()),
    ]);
    if j.is_multiple_of(5) {
        for (k, v) in [
            ("traefik.enable".to_string(), "true".to_string()),
            (
                format!("traefik.http.routers.{s}.rule"),
                format!("Host(`{s}-{n}.t2.example`)"),
            ),
            (
                format!("traefik.http.routers.{s}.middlewares"),
                format!("{s}-hsts"),
            ),
            (
                format!("traefik.http.middlewares.{s}-hsts.headers.stsSeconds"),
                "15768000".to_string(),
            ),
            (
                format!("traefik.http.services.{s}.loadbalancer.server.port"),
                "8080".to_string(),
            ),
        ] {
            l.insert(k, v);
        }
    }
    l
}

fn fake_daemon(n: NetworkId) -> FakeDaemon {
    FakeDaemon {
        id: n,
        containers: (0..per_daemon())
            .map(|j| (container_id(n, j), format!("c{j}"), fake_labels(n, j)))
            .collect(),
        stopped: Mutex::new(HashSet::new()),
        events: broadcast::channel(64).0,
    }
}

async fn fake_api(State(d): State<Arc<FakeDaemon>>, uri: Uri) -> Response {
    // bollard prefixes every path with the API version: `/v1.41/containers/json`.
    let path = uri.path();
    let path = match path.strip_prefix("/v") {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or(path),
        None => path,
    };
    let json_ok = |v: serde_json::Value| {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    match path {
        "/_ping" => "OK".into_response(),
        "/version" => {
            json_ok(json!({"ApiVersion": "1.41", "MinAPIVersion": "1.12", "Version": "20.10.24"}))
        }
        "/containers/json" => {
            let stopped = d.stopped.lock().unwrap().clone();
            let list: Vec<_> = d
                .containers
                .iter()
                .filter(|(id, _, _)| !stopped.contains(id))
                .map(|(id, name, labels)| {
                    json!({"Id": id, "Names": [format!("/{name}")], "Labels": labels, "State": "running"})
                })
                .collect();
            json_ok(json!(list))
        }
        "/events" => {
            let rx = d.events.subscribe();
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                match rx.recv().await {
                    Ok(line) => Some((Ok::<_, std::io::Error>(format!("{line}\n")), rx)),
                    Err(_) => None,
                }
            });
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        p if p.starts_with("/containers/") && p.ends_with("/json") => {
            let id = &p["/containers/".len()..p.len() - "/json".len()];
            let running = !d.stopped.lock().unwrap().contains(id);
            match d.containers.iter().find(|(cid, _, _)| cid == id) {
                Some((cid, name, labels)) => json_ok(json!({
                    "Id": cid,
                    "Name": format!("/{name}"),
                    "Config": {"Labels": labels},
                    "State": {"Running": running, "Paused": false, "Status": if running {"running"} else {"exited"}},
                })),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"message": format!("No such container: {id}")}).to_string(),
                )
                    .into_response(),
            }
        }
        other => (
            StatusCode::NOT_FOUND,
            format!("{other}: not faked (net {})", d.id),
        )
            .into_response(),
    }
}

fn scale(with_wrk: bool) {
    let sb = Sandbox::new();
    let ids: Vec<NetworkId> = (0..daemon_count())
        .map(|k| NetworkId::new(2816 + 64 * k).unwrap())
        .collect();
    let daemons: Vec<Arc<FakeDaemon>> = ids.iter().map(|n| Arc::new(fake_daemon(*n))).collect();

    // In-process build time for the same 5000 containers.
    let containers: Vec<Container> = daemons
        .iter()
        .flat_map(|d| {
            d.containers.iter().map(|(id, name, labels)| Container {
                network_id: d.id,
                id: id.clone(),
                name: name.clone(),
                labels: std::sync::Arc::new(labels.clone().into()),
                health: Health::None,
                created: 0,
            })
        })
        .collect();
    let mut settings = renet::host::settings::Settings {
        base_domain: Some("bench.example".into()),
        ..Default::default()
    };
    settings.entrypoints = vec!["websecure".into()];
    let rsettings = RouteSettings::from_settings(&settings).expect("valid settings");
    let mut builds = Vec::new();
    let mut ports = renet::routing::port_allocation::PortTable::default();
    for _ in 0..10 {
        let t = Instant::now();
        let snap = renet::routing::build::build(&containers, &rsettings, &ports);
        builds.push(t.elapsed());
        ports = snap.ports;
    }
    println!(
        "## (b) {} daemons × {} containers ({} containers, {} tier 2)",
        daemon_count(),
        per_daemon(),
        containers.len(),
        containers.len() / 5
    );
    stats("routes::build in process", builds);

    // The synthetic daemons, served from this process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for d in &daemons {
        let path = sb.socket(d.id.get());
        let d = d.clone();
        rt.spawn(async move {
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            let app = axum::Router::new().fallback(fake_api).with_state(d);
            axum::serve(listener, app).await.unwrap();
        });
    }
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let mut rs = RouteServer::start_logged(
        &sb,
        free_port(),
        &[
            "--base-domain",
            "bench.example",
            "--entrypoints",
            "websecure",
            // A container that dies keeps its routes for the redeploy grace period; without
            // it, `die` measures the rebuild that removes the route.
            "--redeploy-grace",
            "0",
        ],
        "warn,renet::routing::server=debug",
    );
    let addr = format!("127.0.0.1:{}", rs.port);
    let routers = || -> u64 {
        http_get(&addr, "/health", None)
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|h| h["routers"].as_u64())
            .unwrap_or(0)
    };
    let full = (daemon_count() * per_daemon()) as u64;
    assert!(
        poll_until(Duration::from_secs(60), MS, || routers() == full),
        "never reached {full} routers; log:\n{}",
        rs.log_text()
    );
    println!(
        "cold start → full snapshot ({full} routers) served: {:.2?}",
        started.elapsed()
    );
    let body = rs.get("/routes.yaml").unwrap();
    println!(
        "route server RSS with the full snapshot: {} MiB ({}); /routes.yaml is {} KiB",
        rss_kib(rs.child.id()) / 1024,
        memory_breakdown(rs.child.id()),
        body.len() / 1024
    );

    let (mut down, mut up) = (vec![], vec![]);
    for i in 0..toggles() {
        let d = &daemons[(i * 7) % daemons.len()];
        let (id, _, _) = &d.containers[1 + i % (per_daemon() as usize - 1).max(1)];
        let event = |action: &str| {
            json!({"Type": "container", "Action": action, "Actor": {"ID": id, "Attributes": {}},
                   "scope": "local", "time": 0, "timeNano": 0})
            .to_string()
        };
        d.stopped.lock().unwrap().insert(id.clone());
        let t = Instant::now();
        d.events.send(event("die")).unwrap();
        assert!(poll_until(Duration::from_secs(10), MS, || routers() == full - 1));
        down.push(t.elapsed());
        d.stopped.lock().unwrap().remove(id);
        let t = Instant::now();
        d.events.send(event("start")).unwrap();
        assert!(poll_until(Duration::from_secs(10), MS, || routers() == full));
        up.push(t.elapsed());
        if (i + 1) % 100 == 0 {
            println!(
                "route server RSS after {} changes: {} MiB",
                (i + 1) * 2,
                rss_kib(rs.child.id()) / 1024
            );
        }
    }
    println!(
        "route server after the changes: {}",
        memory_breakdown(rs.child.id())
    );
    // `RS_HOLD=<seconds>`: time to look at the server (`/proc/<pid>/smaps`, a profiler)
    // before it is stopped.
    let hold = knob("RS_HOLD", 0u64);
    if hold > 0 {
        println!(
            "holding the route server (pid {}) for {hold} s",
            rs.child.id()
        );
        std::thread::sleep(Duration::from_secs(hold));
    }
    stats("event (die) → route gone from the served snapshot", down);
    stats("event (start) → route in the served snapshot", up);
    let log = rs.log_text();
    for (marker, label) in [
        (
            "built in ",
            "rebuild as logged by the server (build + render + publish)",
        ),
        ("(routes::build ", "  of which routes::build"),
    ] {
        let logged: Vec<Duration> = log
            .lines()
            .filter_map(|l| l.split(marker).nth(1))
            .filter_map(|d| {
                let end = d
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == 'µ'))
                    .unwrap_or(d.len());
                parse_debug_duration(&d[..end])
            })
            .collect();
        if !logged.is_empty() {
            stats(label, logged);
        }
    }
    if with_wrk {
        println!(
            "## (c) wrk, large snapshot ({full} routers, {} KiB)",
            body.len() / 1024
        );
        wrk("GET /routes.yaml", &rs.url("/routes.yaml"));
        wrk("GET /health", &rs.url("/health"));
    }
    rs.stop();
    // `RS_LOG_TAIL=<lines>`: the end of the server's log, e.g. mimalloc's statistics at exit
    // (`MIMALLOC_SHOW_STATS=1`).
    let tail = knob("RS_LOG_TAIL", 0usize);
    if tail > 0 {
        let log = rs.log_text();
        let lines: Vec<&str> = log.lines().collect();
        println!("{}", lines[lines.len().saturating_sub(tail)..].join("\n"));
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// Parses Rust's `Debug` rendering of a `Duration` (`12.3ms`, `850.1µs`, `1.2s`).
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "µs" | "us" => v / 1e6,
        "ns" => v / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}
