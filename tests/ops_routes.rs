//! Deploy feedback (issue "Operations", part 2), through the real binary, a real repo daemon,
//! docker compose and the route server:
//! - `renet repo up` ends with the route summary: a refused Host rule and a moved port are
//!   shown at deploy time; `renet routes` shows the same, as text and JSON;
//! - without a route server, `repo up` says so;
//! - `renet check` decodes labels offline and exits non-zero on each kind of error.
//!
//! Network 3520 in a private socket folder; holds the ops tests' lock.

mod route_server_support;

use std::path::Path;
use std::process::Output;

use route_server_support::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A repository whose `site` has a router without a Host rule (refused: it would capture other
/// repositories' traffic) and whose `db` publishes 15432, a port without an entrypoint (moved
/// into the dynamic range).
fn write_repo(root: &Path) {
    std::fs::write(
        root.join("compose.yaml"),
        format!(
            "services:
  site:
    image: {IMAGE}
    command: [sleep, '1000']
    init: true
    labels:
      traefik.enable: 'true'
      traefik.http.routers.open.rule: PathPrefix(`/`)
      traefik.http.services.open.loadbalancer.server.port: '8080'
  web:
    image: {IMAGE}
    command: [sleep, '1000']
    init: true
    labels:
      rediacc.service_port: '8080'
  db:
    image: {IMAGE}
    command: [sleep, '1000']
    init: true
    ports: ['15432:5432']
"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("Rediaccfile"),
        "up() { renet compose -- up -d; }\ndown() { renet compose -- down; }\n",
    )
    .unwrap();
}

#[test]
fn repo_up_and_routes_show_a_refused_host_and_a_moved_port() {
    let _lock = ops_lock();
    let sandbox = Sandbox::new();
    let d = Daemon::start(&sandbox, 3520);
    let repo = tempfile::tempdir().unwrap();
    write_repo(repo.path());
    let data = sandbox.data.path();

    // No route server yet: `repo up` deploys and says the routes were not checked.
    let settings = sandbox.scratch.path().join("client.json");
    let rs_port = free_port();
    std::fs::write(&settings, format!(r#"{{"listen": "127.0.0.1:{rs_port}"}}"#)).unwrap();
    let up = |root: &Path| {
        renet_in(root)
            .args(["repo", "up"])
            .arg(root)
            .args(["--network-id", "3520", "--socket-dir"])
            .arg(sandbox.sockets.path())
            .arg("--data-dir")
            .arg(data)
            .arg("--settings")
            .arg(&settings)
            .output()
            .unwrap()
    };
    let out = up(repo.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("routes not checked") && stderr(&out).contains("not running"),
        "{}",
        stderr(&out)
    );

    let _rs = RouteServer::start_on(&sandbox, rs_port, &["--base-domain", "ops.test"]);
    let out = up(repo.path());
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    println!("{err}");
    assert!(err.contains("routes of network 3520"), "{err}");
    assert!(
        err.contains("web-3520.ops.test"),
        "the automatic route: {err}"
    );
    assert!(err.contains("MOVED: 15432 was asked for"), "{err}");
    assert!(
        err.contains("open-3520") && err.contains("not confined to a host name"),
        "{err}"
    );

    let out = renet_in(repo.path())
        .args(["routes", "--network-id", "3520", "--json", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "problems → exit 1: {}",
        stderr(&out)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let moved: Vec<_> = s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["moved"] == true)
        .collect();
    assert_eq!(moved.len(), 1, "{s:#}");
    assert_eq!(moved[0]["preferred"], 15432);
    assert_eq!(moved[0]["service"], "db");
    assert!(
        s["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["object"] == "open-3520"),
        "{s:#}"
    );
    assert!(
        s["http"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["network_id"] == 3520)
    );

    let _ = renet_in(repo.path())
        .args(["repo", "down"])
        .arg(repo.path())
        .args(["--network-id", "3520", "--socket-dir"])
        .arg(sandbox.sockets.path())
        .arg("--data-dir")
        .arg(data)
        .output();
    drop(d);
}

#[test]
fn check_reports_each_kind_of_label_error_offline() {
    let _lock = ops_lock();
    let repo = tempfile::tempdir().unwrap();
    let settings = repo.path().join("no-settings.json");
    std::fs::write(
        repo.path().join("compose.yaml"),
        format!(
            "services:
  typo:
    image: {IMAGE}
    labels:
      traefik.enable: 'true'
      traefik.http.services.s.loadbalancer.server.port: '80'
      traefik.http.routers.typo.rule: Host(`typo.example.com`)
      traefik.http.routers.typo.entrypoint: websecure
  unquoted:
    image: {IMAGE}
    labels:
      traefik.enable: 'true'
      traefik.http.services.s.loadbalancer.server.port: '80'
      traefik.http.routers.unquoted.rule: Host(unquoted.example.com)
  dangling:
    image: {IMAGE}
    labels:
      traefik.enable: 'true'
      traefik.http.services.s.loadbalancer.server.port: '80'
      traefik.http.routers.dangling.rule: Host(`dangling.example.com`)
      traefik.http.routers.dangling.middlewares: nowhere
  noentry:
    image: {IMAGE}
    labels:
      traefik.enable: 'true'
      traefik.http.services.s.loadbalancer.server.port: '80'
      traefik.http.routers.noentry.rule: Host(`noentry.example.com`)
      traefik.http.routers.noentry.entrypoints: websecure,nosuch
  good:
    image: {IMAGE}
    labels:
      traefik.enable: 'true'
      traefik.http.services.s.loadbalancer.server.port: '80'
      traefik.http.routers.good.rule: Host(`good.example.com`)
      traefik.http.routers.good.middlewares: hsts
      traefik.http.middlewares.hsts.headers.stsseconds: '31536000'
"
        ),
    )
    .unwrap();
    let out = renet_in(repo.path())
        .args(["check", "--json", "--network-id", "3520", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = doc["findings"].as_array().unwrap();
    let about = |service: &str, needle: &str| {
        findings
            .iter()
            .any(|f| f["service"] == service && f["reason"].as_str().unwrap().contains(needle))
    };
    assert!(about("typo", "unknown field `entrypoint`"), "{doc:#}");
    assert!(about("unquoted", "not quoted"), "{doc:#}");
    assert!(about("dangling", "middleware"), "{doc:#}");
    assert!(
        about("noentry", "`nosuch` is not an HTTP entrypoint"),
        "{doc:#}"
    );
    assert!(
        !findings.iter().any(|f| f["service"] == "good"),
        "a clean service has no finding: {doc:#}"
    );
    assert!(
        !repo.path().join(".rediacc.json").exists(),
        "check writes nothing"
    );

    // A clean repository: exit 0.
    let clean = tempfile::tempdir().unwrap();
    std::fs::write(
        clean.path().join("compose.yaml"),
        format!(
            "services:\n  web:\n    image: {IMAGE}\n    labels:\n      rediacc.service_port: '80'\n"
        ),
    )
    .unwrap();
    let out = renet_in(clean.path())
        .args(["check", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("labels ok"));
}
