//! Traffic through real Traefik (`cargo bench --bench traefik`; prints figures, asserts
//! nothing). The numbers go into docs/performance.md, section "Through Traefik".
//!
//! Both parts set Traefik up the way `renet proxy config` does today: the bench runs
//! `renet proxy config` into a scratch folder, starts the route server with the settings file
//! it wrote (so the route server pushes `routes.yaml` into Traefik's file provider folder) and
//! Traefik with the generated static configuration, changed only where a test machine must:
//! no ACME resolver (no internet) and no TLS on `websecure` (the bench speaks plain HTTP).
//!
//! - `start`: container start → first 200 through Traefik, renet's mechanism against
//!   Traefik's own Docker provider (a second Traefik, Traefik's defaults) watching the same
//!   repo daemon (network 4160), on the same containers in the same run. Each start is a new
//!   container (a new host name), started with `docker start`; both Traefiks are polled at
//!   once from the moment `docker start` is issued. Starts are spaced past the throttles.
//! - `redeploy`: requests failed while `renet compose -- up -d --force-recreate` recreates a
//!   routed web service (network 4224) under a steady load of requests through renet's
//!   Traefik, by status; once with busybox httpd as PID 1 (no SIGTERM handler) and once with
//!   `init: true`.
//!
//! `TRAEFIK_BENCH=start` or `redeploy` runs one part; `TRAEFIK_STARTS` (default 24) and
//! `TRAEFIK_RECREATES` (default 3) set the counts; `TRAEFIK_BENCH_DEBUG=FILE` keeps both
//! Traefiks' logs of the start part (the Docker provider's at debug level) in FILE and
//! FILE.renet.

#[path = "../tests/route_server_support/mod.rs"]
mod route_server_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use route_server_support::*;
use serde_json::{Value, json};

/// Network of the start part and of the redeploy part.
const START_NET: u32 = 4160;
const REDEPLOY_NET: u32 = 4224;
/// Traefik's default `providersThrottleDuration` (the Docker provider's Traefik keeps it).
const TRAEFIK_DEFAULT_THROTTLE: Duration = Duration::from_secs(2);

fn main() {
    let part = std::env::var("TRAEFIK_BENCH").unwrap_or_else(|_| "start,redeploy".into());
    println!("# traefik benchmark");
    if part.contains("start") {
        start_to_first_200(env_count("TRAEFIK_STARTS", 24));
    }
    if part.contains("redeploy") {
        redeploy_under_load(env_count("TRAEFIK_RECREATES", 3));
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// statistics

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn stats(name: &str, v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    println!(
        "{name}: n={} median={:.1?} p90={:.1?} max={:.1?} min={:.1?}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        v[v.len() - 1],
        v[0]
    );
    percentile(&v, 0.5)
}

// ---------------------------------------------------------------------------------------------
// Traefik as `renet proxy config` sets it up

/// The route server and Traefik, configured by `renet proxy config`.
struct RenetProxy {
    _route_server: RouteServer,
    route_server_log: PathBuf,
    traefik: Traefik,
    /// The plain-HTTP `websecure` entrypoint.
    port: u16,
    /// The static configuration as generated (before the test-machine changes).
    generated: Value,
    /// The routes file the route server writes into the file provider's folder.
    routes_file: PathBuf,
}

fn renet_proxy(sb: &Sandbox) -> RenetProxy {
    let dir = sb.scratch.path();
    let settings = dir.join("renet.json");
    let out_dir = dir.join("traefik");
    let (http, https, api, rs_port, range) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let traefik_bin = traefik_bin();
    let out = Command::new(renet_bin())
        .args(["proxy", "config", "--settings"])
        .arg(&settings)
        .arg("--out-dir")
        .arg(&out_dir)
        .arg("--unit-dir")
        .arg(dir.join("units"))
        .arg("--socket-dir")
        .arg(sb.sockets.path())
        .arg("--state-dir")
        .arg(sb.state.path())
        .arg("--data-dir")
        .arg(sb.data.path())
        .args(["--preset-ports", "none"])
        .args(["--http-port", &http.to_string()])
        .args(["--https-port", &https.to_string()])
        .args(["--dynamic-range", &format!("{range}-{range}")])
        .args(["--route-server", &format!("127.0.0.1:{rs_port}")])
        .args(["--api-address", &format!("127.0.0.1:{api}")])
        .arg("--renet-bin")
        .arg(renet_bin())
        .arg("--traefik-bin")
        .arg(&traefik_bin)
        .env_remove("CF_DNS_API_TOKEN")
        .output()
        .expect("run renet proxy config");
    assert!(
        out.status.success(),
        "renet proxy config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated: Value = serde_yaml::from_str(
        &std::fs::read_to_string(out_dir.join("traefik.yml")).expect("read traefik.yml"),
    )
    .expect("traefik.yml is YAML");
    let routes_file = out_dir.join("dynamic/routes.yaml");

    // The route server as its unit runs it: `--settings <file> --data-dir <dir>`.
    let log = dir.join("route-server.log");
    let logf = std::fs::File::create(&log).unwrap();
    let child = Command::new(renet_bin())
        .arg("route-server")
        .arg("--settings")
        .arg(&settings)
        .arg("--data-dir")
        .arg(sb.data.path())
        .env("RENET_LOG", "info")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("start renet route-server");
    let route_server = RouteServer {
        child,
        port: rs_port,
        log,
    };
    wait_for("the route server", Duration::from_secs(20), || {
        route_server.get("/health").map(|_| ())
    });
    wait_for("routes.yaml written", Duration::from_secs(20), || {
        routes_file
            .exists()
            .then_some(())
            .ok_or_else(|| "missing".to_string())
    });

    let traefik = Traefik::start(dir, api, &yaml(&for_test_machine(generated.clone())));
    RenetProxy {
        route_server_log: route_server.log.clone(),
        _route_server: route_server,
        traefik,
        port: https,
        generated,
        routes_file,
    }
}

/// The generated static configuration without the ACME resolver and without TLS on
/// `websecure`; nothing else changes (providers, throttle, entrypoint middlewares).
fn for_test_machine(mut doc: Value) -> Value {
    let m = doc.as_object_mut().expect("a mapping");
    m.remove("certificatesResolvers");
    if let Some(http) = m
        .get_mut("entryPoints")
        .and_then(|e| e.get_mut("websecure"))
        .and_then(|w| w.get_mut("http"))
        .and_then(Value::as_object_mut)
    {
        http.remove("tls");
    }
    doc
}

fn yaml(v: &Value) -> String {
    serde_yaml::to_string(v).expect("YAML")
}

/// A second Traefik with its own Docker provider on `socket`: the entrypoint settings of the
/// generated `websecure` (without renet's retry middleware, which lives in renet's file
/// provider), and Traefik's defaults otherwise (`providersThrottleDuration` 2 s).
fn provider_traefik(dir: &Path, generated: &Value, socket: &Path) -> (Traefik, u16) {
    let (port, api) = (free_port(), free_port());
    let mut websecure = generated["entryPoints"]["websecure"].clone();
    websecure["address"] = json!(format!("127.0.0.1:{port}"));
    if let Some(http) = websecure.get_mut("http").and_then(Value::as_object_mut) {
        http.remove("tls");
        http.remove("middlewares");
    }
    // `TRAEFIK_BENCH_DEBUG=FILE`: the provider's Traefik logs at debug level, copied to FILE.
    let log = match std::env::var("TRAEFIK_BENCH_DEBUG") {
        Ok(_) => json!({ "level": "DEBUG", "noColor": true }),
        Err(_) => generated["log"].clone(),
    };
    let doc = json!({
        "global": generated["global"],
        "log": log,
        "entryPoints": {
            "websecure": websecure,
            "traefik": { "address": format!("127.0.0.1:{api}") },
        },
        "providers": {
            "docker": {
                "endpoint": format!("unix://{}", socket.display()),
                "exposedByDefault": false,
            },
        },
        "api": { "insecure": true, "dashboard": false },
    });
    (Traefik::start(dir, api, &yaml(&doc)), port)
}

// ---------------------------------------------------------------------------------------------
// HTTP through Traefik

/// One HTTP/1.0 GET through Traefik at `port` for `host`: the status, or None when the
/// connection failed.
fn status_of(port: u16, host: &str, timeout: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_nodelay(true).ok()?;
    write!(
        s,
        "GET / HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `port` for `host` every `pause` until a 200, from `t0`; the elapsed time.
fn first_200(port: u16, host: &str, t0: Instant, timeout: Duration, pause: Duration) -> Duration {
    loop {
        if status_of(port, host, Duration::from_secs(5)) == Some(200) {
            return t0.elapsed();
        }
        if t0.elapsed() > timeout {
            return timeout;
        }
        std::thread::sleep(pause);
    }
}

// ---------------------------------------------------------------------------------------------
// start → first 200

fn start_to_first_200(starts: usize) {
    println!("\n## start → first 200 through Traefik (network {START_NET}, {starts} starts)");
    let sb = Sandbox::new();
    let d = Daemon::start(&sb, START_NET);
    let renet = renet_proxy(&sb);
    let (provider, provider_port) =
        provider_traefik(sb.scratch.path(), &renet.generated, &d.socket);
    println!(
        "renet: file provider on {}, providersThrottleDuration {} (as generated)",
        renet.routes_file.parent().unwrap().display(),
        renet.generated["providers"]["providersThrottleDuration"]
    );
    println!("provider: Traefik's Docker provider, providersThrottleDuration 2s (its default)");

    // One container per start (plus a warm-up), created up front so that only `docker start`
    // is timed: slot i, host s<i>.start.example, httpd on the service IP (renet's backend)
    // and on 127.0.0.1 (the Docker provider's backend for a host-network container).
    let total = starts + 1;
    for i in 0..total {
        let port = 41100 + i as u16;
        let ip = slot_ip(START_NET, i as u32);
        let host = format!("s{i}.start.example");
        let cmd = format!(
            "mkdir -p /w && echo s{i} > /w/index.html && httpd -p {ip}:{port} -h /w && exec httpd -f -p 127.0.0.1:{port} -h /w"
        );
        let mut args: Vec<String> = vec![
            "create".into(),
            "--network".into(),
            "host".into(),
            "--name".into(),
            format!("s{i}"),
        ];
        for (k, v) in [
            ("rediacc.service_name", format!("s{i}")),
            ("rediacc.service_ip", ip.to_string()),
            ("rediacc.network_id", START_NET.to_string()),
            ("traefik.enable", "true".into()),
            (
                &format!("traefik.http.routers.s{i}.rule"),
                format!("Host(`{host}`)"),
            ),
            (
                &format!("traefik.http.services.s{i}.loadbalancer.server.port"),
                port.to_string(),
            ),
        ] {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.extend([IMAGE.into(), "sh".into(), "-c".into(), cmd]);
        d.docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    let timeout = Duration::from_secs(30);
    let pause = Duration::from_millis(1);
    let (mut renet_t, mut provider_t, mut file_t, mut cli_t, mut backend_t) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..total {
        let host = format!("s{i}.start.example");
        let t0 = Instant::now();
        let (rp, pp) = (renet.port, provider_port);
        let h1 = host.clone();
        let renet_poll = std::thread::spawn(move || first_200(rp, &h1, t0, timeout, pause));
        let h2 = host.clone();
        let provider_poll = std::thread::spawn(move || first_200(pp, &h2, t0, timeout, pause));
        let backend = format!("{}:{}", slot_ip(START_NET, i as u32), 41100 + i);
        let backend_poll = std::thread::spawn(move || {
            loop {
                if TcpStream::connect(&backend).is_ok() {
                    return t0.elapsed();
                }
                if t0.elapsed() > timeout {
                    return timeout;
                }
                std::thread::sleep(pause);
            }
        });
        let routes_file = renet.routes_file.clone();
        let file_poll = std::thread::spawn(move || {
            let needle = format!("s{i}.start.example");
            loop {
                if std::fs::read_to_string(&routes_file).is_ok_and(|t| t.contains(&needle)) {
                    return t0.elapsed();
                }
                if t0.elapsed() > timeout {
                    return timeout;
                }
                std::thread::sleep(pause);
            }
        });
        d.docker_ok(&["start", &format!("s{i}")]);
        let cli = t0.elapsed();
        let (r, p, f, b) = (
            renet_poll.join().unwrap(),
            provider_poll.join().unwrap(),
            file_poll.join().unwrap(),
            backend_poll.join().unwrap(),
        );
        if i > 0 {
            println!(
                "start {i:>2}: docker start returned {cli:>8.1?}, backend listens {b:>8.1?}, routes.yaml {f:>8.1?}, renet 200 {r:>8.1?}, provider 200 {p:>8.1?}"
            );
            renet_t.push(r);
            provider_t.push(p);
            file_t.push(f);
            cli_t.push(cli);
            backend_t.push(b);
        }
        // Past both throttles before the next start.
        std::thread::sleep(TRAEFIK_DEFAULT_THROTTLE + Duration::from_millis(500));
    }
    println!("(times from issuing `docker start`)");
    stats("docker start returned          ", &cli_t);
    let b = stats("backend listens (no proxy)     ", &backend_t);
    stats("route in routes.yaml (file)    ", &file_t);
    let r = stats("renet: first 200 through Traefik", &renet_t);
    let p = stats("Docker provider: first 200     ", &provider_t);
    println!(
        "ratio renet / Docker provider (median): {:.2} (target ≤ 0.5)",
        r.as_secs_f64() / p.as_secs_f64()
    );
    // What each proxy path adds after the backend listens, start by start.
    let added = |v: &[Duration]| -> Vec<Duration> {
        v.iter()
            .zip(&backend_t)
            .map(|(t, b)| t.saturating_sub(*b))
            .collect()
    };
    let ra = stats("renet: 200 after the backend listens", &added(&renet_t));
    let pa = stats(
        "provider: 200 after the backend listens",
        &added(&provider_t),
    );
    println!(
        "backend listens at {:.0}% of the provider's median; ratio of the added times (median): {:.2}",
        100.0 * b.as_secs_f64() / p.as_secs_f64(),
        ra.as_secs_f64() / pa.as_secs_f64().max(1e-9)
    );
    // Traefik's Docker provider resolves `host.docker.internal` and
    // `host.containers.internal` for every host-network container on every rebuild (its
    // address for such a container); a resolver that drops a burst of queries costs it a 5 s
    // timeout per change. The starts where that happened, and the others on their own:
    let stalled: Vec<bool> = provider_t
        .iter()
        .map(|p| *p >= Duration::from_millis(4500))
        .collect();
    let pick = |v: &[Duration], want: bool| -> Vec<Duration> {
        v.iter()
            .zip(&stalled)
            .filter(|(_, s)| **s == want)
            .map(|(t, _)| *t)
            .collect()
    };
    let n_stalled = stalled.iter().filter(|s| **s).count();
    println!("starts where the provider waited ≥ 4.5 s (a DNS timeout): {n_stalled}");
    if n_stalled > 0 && n_stalled < stalled.len() {
        println!("the other starts only:");
        let r = stats("  renet: first 200               ", &pick(&renet_t, false));
        let p = stats(
            "  Docker provider: first 200     ",
            &pick(&provider_t, false),
        );
        stats(
            "  backend listens                ",
            &pick(&backend_t, false),
        );
        println!(
            "  ratio renet / Docker provider (median): {:.2}",
            r.as_secs_f64() / p.as_secs_f64()
        );
    }
    if let Ok(file) = std::env::var("TRAEFIK_BENCH_DEBUG") {
        let _ = std::fs::copy(&provider.log, &file);
        let _ = std::fs::copy(&renet.traefik.log, format!("{file}.renet"));
    }
    if renet_t.contains(&timeout) || provider_t.contains(&timeout) {
        println!(
            "some starts timed out; logs:\n{}\n{}",
            renet.traefik.log_text(),
            provider.log_text()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// redeploy under load

fn redeploy_under_load(recreates: usize) {
    println!(
        "\n## requests during `renet compose -- up -d --force-recreate` (network {REDEPLOY_NET}, {recreates} recreates)"
    );
    let sb = Sandbox::new();
    let _d = Daemon::start(&sb, REDEPLOY_NET);
    let renet = renet_proxy(&sb);
    let project = sb.scratch.path().join("repo");
    std::fs::create_dir_all(&project).unwrap();
    let host = "web.redeploy.example";
    let compose = |args: &[&str]| {
        let out = Command::new(renet_bin())
            .current_dir(&project)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("REDIACC_NETWORK_ID")
            .env_remove("REDIACC_WORKING_DIR")
            .env("RENET_RUNTIME_DIR", sb.scratch.path().join("runtime"))
            .env("RENET_DATA_DIR", sb.scratch.path().join("compose-data"))
            .args(["compose", "--network-id", &REDEPLOY_NET.to_string()])
            .arg("--socket-dir")
            .arg(sb.sockets.path())
            .arg("--")
            .args(args)
            .output()
            .expect("run renet compose");
        assert!(
            out.status.success(),
            "renet compose -- {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (what, init) in [
        (
            "busybox httpd as PID 1 (no SIGTERM handler: killed at the end of stop_grace_period, 2 s)",
            false,
        ),
        ("with `init: true` (SIGTERM ends httpd at once)", true),
    ] {
        println!("### {what}");
        std::fs::write(
            project.join("compose.yaml"),
            format!(
                "services:\n  web:\n    image: {IMAGE}\n    stop_grace_period: 2s\n{init}    command: [\"sh\", \"-c\", \"mkdir -p /w && echo hello-web > /w/index.html && exec httpd -f -p $${{SERVICE_IP}}:8080 -h /w\"]\n    labels:\n      traefik.enable: \"true\"\n      traefik.http.routers.web.rule: Host(`{host}`)\n      traefik.http.services.web.loadbalancer.server.port: \"8080\"\n",
                init = if init { "    init: true\n" } else { "" }
            ),
        )
        .unwrap();
        compose(&["up", "-d"]);
        let port = renet.port;
        wait_for(
            "the route through Traefik",
            Duration::from_secs(30),
            || match status_of(port, host, Duration::from_secs(5)) {
                Some(200) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );

        // Steady load: 4 clients, each one request at a time with a 10 ms pause.
        let running = Arc::new(AtomicBool::new(true));
        let load_start = Instant::now();
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let running = running.clone();
                std::thread::spawn(move || {
                    // (status, latency, sent at since the load started)
                    let mut results: Vec<(Option<u16>, Duration, Duration)> = Vec::new();
                    while running.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let status = status_of(port, host, Duration::from_secs(30));
                        results.push((status, t.elapsed(), t - load_start));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    results
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let mut took = Vec::new();
        for _ in 0..recreates {
            let t = Instant::now();
            compose(&["up", "-d", "--force-recreate"]);
            took.push(t.elapsed());
            println!(
                "recreate from {:.2?} to {:.2?} after the load started",
                t - load_start,
                load_start.elapsed()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        running.store(false, Ordering::Relaxed);
        let results: Vec<(Option<u16>, Duration, Duration)> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        for (s, latency, at) in results.iter().filter(|(s, _, _)| *s != Some(200)) {
            println!("failed: {s:?} sent at {at:.2?}, answered after {latency:.2?}");
        }
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for (s, _, _) in &results {
            let key = s.map_or("connection error".to_string(), |c| c.to_string());
            *by_status.entry(key).or_default() += 1;
        }
        let failed = results.iter().filter(|(s, _, _)| *s != Some(200)).count();
        stats("`up -d --force-recreate` took", &took);
        let latencies: Vec<Duration> = results.iter().map(|(_, t, _)| *t).collect();
        stats("request latency during the run", &latencies);
        println!(
            "requests sent: {}, failed: {failed} (target 0); by status: {by_status:?}",
            results.len()
        );
        if failed > 0 {
            println!("Traefik log:\n{}", renet.traefik.log_text());
            println!(
                "route server log:\n{}",
                std::fs::read_to_string(&renet.route_server_log).unwrap_or_default()
            );
        }
    }
}
