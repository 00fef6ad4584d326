//! Faults an operator meets (issue "Operations", part 7) and the monitoring that shows them,
//! against real repo daemons, the real route server and its real endpoints:
//! - `kill -9` of a repo daemon, then `renet daemon start` at once: it answers;
//! - a hung daemon (SIGSTOP): `/health` degraded (503) within seconds, while another
//!   repository keeps updating; `renet daemon status` says `hung`;
//! - a route-server restart while a daemon does not answer keeps that repository's routes,
//!   marked stale;
//! - a registered repository whose daemon is missing is degraded; `/metrics` is valid
//!   Prometheus text; a debug log never shows a container's password.
//!
//! Networks 3520, 3584 and 3648 only (this suite's loopback blocks), in private socket folders;
//! the tests hold the ops suites' lock (`route_server_support::ops_lock`) so that two of them never bind the same service IPs.

mod route_server_support;

use std::process::Command;
use std::time::Duration;

use route_server_support::*;

const A: u32 = 3520;
const B: u32 = 3584;
const LONG: Duration = Duration::from_secs(30);

/// A web service on daemon `d` in `slot`, with an automatic route (`rediacc.service_port`).
fn web_service(d: &Daemon, name: &str, slot: u32, marker: &str) -> String {
    let ip = slot_ip(d.network_id, slot);
    d.run_service(
        name,
        name,
        slot,
        &[("rediacc.service_port", "8080".to_string())],
        &[],
        &web(ip, 8080, marker),
    )
}

fn routes_contain(rs: &RouteServer, needle: &str) -> Result<(), String> {
    let yaml = rs.get("/routes.yaml")?;
    if yaml.contains(needle) {
        Ok(())
    } else {
        Err(format!("`{needle}` not in /routes.yaml:\n{yaml}"))
    }
}

fn pid_of(d: &Daemon, sandbox: &Sandbox) -> i32 {
    let pidfile = sandbox
        .sockets
        .path()
        .join(format!("docker-{}.pid", d.network_id));
    std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

fn renet_daemon(sandbox: &Sandbox, args: &[&str]) -> std::process::Output {
    Command::new(renet_bin())
        .arg("daemon")
        .args(args)
        .arg("--socket-dir")
        .arg(sandbox.sockets.path())
        .arg("--data-dir")
        .arg(sandbox.data.path())
        .output()
        .unwrap()
}

#[test]
fn daemon_start_right_after_kill_9_answers() {
    let _lock = ops_lock();
    let sandbox = Sandbox::new();
    let mut d = Daemon::start(&sandbox, A);
    // A container whose process ends on SIGTERM (`--init`), so the restart does not wait for
    // docker's 10 s kill timeout of a previous run's containers.
    let ip = slot_ip(A, 0);
    d.run_service(
        "crash-web",
        "crash-web",
        0,
        &[],
        &["--init"],
        &web(ip, 8080, "before-crash"),
    );
    let pid = pid_of(&d, &sandbox);
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    wait_for("dockerd to die", LONG, || {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Err("still there".into())
        } else {
            Ok(())
        }
    });
    let containerd_pidfile = sandbox
        .sockets
        .path()
        .join(format!("exec-{A}/containerd/containerd.pid"));
    assert!(
        containerd_pidfile.exists(),
        "the crash leaves containerd's pidfile (the situation this test is about)"
    );
    let started = std::time::Instant::now();
    let out = renet_daemon(
        &sandbox,
        &["start", "--network-id", "3520", "--timeout", "30"],
    );
    assert!(
        out.status.success(),
        "daemon start after kill -9 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("daemon start after kill -9 took {:?}", started.elapsed());
    let version = d.docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    assert!(!version.is_empty());
    d.up(); // already running: a no-op that keeps the drop guard in charge

    // A clean stop after the crash and restart leaves none of dockerd's mounts behind (the
    // crashed instance's data-root bind mount would otherwise stay stacked forever).
    d.docker_ok(&["rm", "-f", "crash-web"]);
    d.down();
    let data_root = sandbox
        .data
        .path()
        .join(format!("docker-{A}/data"))
        .canonicalize()
        .unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(data_root.to_str().unwrap()))
        .collect();
    assert!(left.is_empty(), "leftover mounts: {left:#?}");
}

#[test]
fn a_hung_daemon_is_degraded_and_the_others_keep_updating() {
    let _lock = ops_lock();
    let sandbox = Sandbox::new();
    let a = Daemon::start(&sandbox, A);
    let b = Daemon::start(&sandbox, B);
    web_service(&a, "hang-a", 0, "a");
    let rs = RouteServer::start(&sandbox, &["--base-domain", "ops.test"]);
    wait_for("a's route", LONG, || {
        routes_contain(&rs, "hang-a-3520.ops.test")
    });
    let (code, h) = rs.health();
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h:#}");

    let pid = pid_of(&a, &sandbox);
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let stopped_at = std::time::Instant::now();
    let resume = scopeguard(pid);
    let h = wait_for(
        "/health degraded after SIGSTOP",
        Duration::from_secs(10),
        || {
            let (code, h) = rs.health();
            if code == 503 && h["status"] == "degraded" {
                Ok(h)
            } else {
                Err(format!("{code} {h}"))
            }
        },
    );
    println!("SIGSTOP → /health degraded in {:?}", stopped_at.elapsed());
    let da = h["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["network_id"] == A)
        .unwrap()
        .clone();
    assert_eq!(da["connected"], false, "{da:#}");
    assert!(
        da["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("does not answer"),
        "{da:#}"
    );
    // The hung repository keeps its routes; the other one keeps updating.
    routes_contain(&rs, "hang-a-3520.ops.test").unwrap();
    web_service(&b, "live-b", 0, "b");
    wait_for("b's new route while a hangs", LONG, || {
        routes_contain(&rs, "live-b-3584.ops.test")
    });
    // `renet daemon status` does not call a live, silent daemon "stopped".
    let out = renet_daemon(&sandbox, &["status", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["network_id"] == A)
        .unwrap();
    assert_eq!(st["state"], "hung", "{list:#}");

    drop(resume);
    wait_for("/health ok after SIGCONT", LONG, || {
        let (code, h) = rs.health();
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {h}"))
        }
    });
}

/// Sends SIGCONT on drop, so a failed assertion never leaves a stopped daemon behind.
struct Resume(i32);
impl Drop for Resume {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}
fn scopeguard(pid: i32) -> Resume {
    Resume(pid)
}

#[test]
fn a_restart_while_a_daemon_is_down_keeps_its_routes_as_stale() {
    let _lock = ops_lock();
    let sandbox = Sandbox::new();
    let mut a = Daemon::start(&sandbox, A);
    web_service(&a, "keep-a", 0, "kept");
    let mut rs = RouteServer::start(&sandbox, &["--base-domain", "ops.test"]);
    wait_for("a's route", LONG, || {
        routes_contain(&rs, "keep-a-3520.ops.test")
    });
    rs.stop();

    // The daemon crashes: its socket stays, it answers nothing, its container still runs.
    let pid = pid_of(&a, &sandbox);
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    let ip = slot_ip(A, 0);
    let (code, body) = http_get(&format!("{ip}:8080"), "/", None).expect("container still runs");
    assert_eq!((code, body.trim()), (200, "kept"));

    let rs = RouteServer::start(&sandbox, &["--base-domain", "ops.test"]);
    routes_contain(&rs, "keep-a-3520.ops.test").unwrap();
    routes_contain(&rs, &format!("http://{ip}:8080")).unwrap();
    let (code, h) = rs.health();
    assert_eq!(code, 503, "{h:#}");
    let da = &h["daemons"][0];
    assert_eq!(
        (da["state"].as_str(), da["stale"].as_bool()),
        (Some("stale"), Some(true)),
        "{h:#}"
    );

    // The daemon comes back: the routes are confirmed, no longer stale.
    let out = renet_daemon(&sandbox, &["start", "--network-id", "3520"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.up();
    wait_for("/health ok once the daemon answers", LONG, || {
        let (code, h) = rs.health();
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {h}"))
        }
    });
}

#[test]
fn a_registered_repository_without_its_daemon_is_degraded() {
    let _lock = ops_lock();
    let sandbox = Sandbox::new();
    let registry = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    // Register the repository for network 3648 in this sandbox's socket folder, the way
    // `renet repo up` does (its daemon is never started).
    renet::host::repo_binding::bind(
        registry.path(),
        net(3648),
        repo.path(),
        sandbox.sockets.path(),
    )
    .unwrap();
    let data = registry.path().to_str().unwrap().to_string();
    let rs = RouteServer::start(&sandbox, &["--data-dir", &data]);
    let (code, h) = rs.health();
    assert_eq!(code, 503, "{h:#}");
    let d = &h["daemons"][0];
    assert_eq!(
        (d["network_id"].as_u64(), d["state"].as_str()),
        (Some(3648), Some("missing")),
        "{h:#}"
    );
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("renet daemon start --network-id 3648")
    );
    let metrics = rs.get("/metrics").unwrap();
    assert!(metrics.contains("renet_missing_daemons 1"), "{metrics}");

    // Released: nothing is expected any more, and no daemon runs: ok.
    renet::host::repo_binding::unbind(registry.path(), net(3648)).unwrap();
    let (code, h) = rs.health();
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h:#}");
}

#[test]
fn metrics_parse_as_prometheus_text_and_debug_logs_hide_secrets() {
    let _lock = ops_lock();
    let sandbox = Sandbox::new();
    let a = Daemon::start(&sandbox, A);
    let ip = slot_ip(A, 1);
    a.run_service(
        "secret-web",
        "secret-web",
        1,
        &[
            ("rediacc.service_port", "8080".to_string()),
            (
                "traefik.http.middlewares.auth.basicauth.users",
                "admin:$apr1$hashhashhash".to_string(),
            ),
        ],
        &[
            "-e",
            "DB_PASSWORD=hunter2-do-not-log",
            "-e",
            "API_TOKEN=tok-do-not-log",
        ],
        &web(ip, 8080, "s"),
    );
    let rs = RouteServer::start_logged(
        &sandbox,
        free_port(),
        &["--base-domain", "ops.test"],
        "debug",
    );
    wait_for("the route", LONG, || {
        routes_contain(&rs, "secret-web-3520.ops.test")
    });

    let text = rs.get("/metrics").unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    let value = |name: &str, network: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name && network.is_none_or(|n| s.labels.get("network_id") == Some(n))
            })
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    assert!(matches!(value("renet_routers", None), prometheus_parse::Value::Gauge(v) if v >= 1.0));
    assert!(matches!(
        value("renet_daemon_connected", Some("3520")),
        prometheus_parse::Value::Gauge(v) if v == 1.0
    ));
    assert!(matches!(
        value("renet_daemon_containers", Some("3520")),
        prometheus_parse::Value::Gauge(v) if v == 1.0
    ));
    let rebuilds = scrape
        .samples
        .iter()
        .any(|s| s.metric.starts_with("renet_rebuild_duration_seconds"));
    assert!(rebuilds, "rebuild histogram missing:\n{text}");

    let log = rs.log_text();
    assert!(
        log.contains("DEBUG"),
        "the route server logged at debug level:\n{log}"
    );
    assert!(
        log.contains("DB_PASSWORD=[redacted]"),
        "the inspect answer with the environment is logged, redacted"
    );
    for secret in ["hunter2-do-not-log", "tok-do-not-log", "hashhashhash"] {
        assert!(
            !log.contains(secret),
            "`{secret}` leaked into the debug log"
        );
    }
}

#[test]
fn a_daemon_whose_socket_was_deleted_is_degraded_not_stopped() {
    let _lock = ops_lock();
    let sandbox = Sandbox::new();
    let mut a = Daemon::start(&sandbox, A);
    let rs = RouteServer::start(&sandbox, &[]);
    let (code, _) = rs.health();
    assert_eq!(code, 200);
    std::fs::remove_file(sandbox.socket(A)).unwrap();

    let h = wait_for("/health degraded without the socket", LONG, || {
        let (code, h) = rs.health();
        let state = h["daemons"][0]["state"].clone();
        if code == 503 && state == "no-socket" {
            Ok(h)
        } else {
            Err(format!("{code} {h}"))
        }
    });
    assert!(
        h["daemons"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("renet daemon stop --network-id 3520"),
        "{h:#}"
    );
    let out = renet_daemon(&sandbox, &["status", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["state"], "no-socket", "{list:#}");
    assert!(list[0]["pid"].is_number(), "{list:#}");

    // The way out: stop (by pidfile) and start again.
    a.down();
    a.up();
    wait_for("/health ok again", LONG, || {
        let (code, h) = rs.health();
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {h}"))
        }
    });
}
