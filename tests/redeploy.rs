//! Redeploys on real parts (docs/performance.md, "Redeploys"): clients send requests through
//! real Traefik in a loop while the routed container is recreated the way compose does it
//! (stop, remove, create, start on the same service IP), and get no error — also when every
//! request takes a while and the service ignores its stop signal, so that `docker stop` kills
//! it with requests in hand (the idempotent ones are replayed, the others get 502); a container
//! that does not come back loses its route once the grace period is over. Traefik reads the
//! route server's dynamic file through its file provider (the push mechanism), with the retry
//! middlewares `renet proxy config` puts on the entrypoints.

mod route_server_support;

use std::time::{Duration, Instant};

use renet::host::proxy_config;
use route_server_support::*;

const N: u32 = 3968;

fn run_web(d: &Daemon) {
    d.run_service(
        "web",
        "web",
        0,
        &[
            ("traefik.enable", "true".into()),
            (
                "traefik.http.routers.web.rule",
                "Host(`web.test.example`)".into(),
            ),
            (
                "traefik.http.services.web.loadbalancer.server.port",
                "8080".into(),
            ),
        ],
        &[],
        &web(slot_ip(N, 0), 8080, "hello-web"),
    );
}

/// A web service whose `/cgi-bin/slow` answers after `delay` (busybox httpd runs it as CGI);
/// httpd is PID 1 without a handler for SIGTERM, so it ignores the stop signal until the
/// SIGKILL, as many real services do.
fn slow_web(ip: std::net::Ipv4Addr, port: u16, marker: &str, delay: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /w/cgi-bin && printf '#!/bin/sh\\nsleep {delay}\\necho Content-Type: text/plain\\necho\\necho {marker}\\n' > /w/cgi-bin/slow && chmod +x /w/cgi-bin/slow && exec httpd -f -p {ip}:{port} -h /w"
        ),
    ]
}

/// Traefik as `renet proxy config` sets it up for pushed routes: the file provider on the
/// route server's dynamic folder, its throttle, and the retry middlewares on the entrypoint.
fn traefik_on_dynamic_folder(
    sb: &Sandbox,
    dynamic: &std::path::Path,
    throttle: &str,
) -> (Traefik, u16) {
    std::fs::write(
        dynamic.join(proxy_config::DEFAULTS_FILE),
        proxy_config::defaults_dynamic_yaml(),
    )
    .unwrap();
    let (web_port, api) = (free_port(), free_port());
    let middlewares = serde_json::to_string(&proxy_config::RETRY_MIDDLEWARES).unwrap();
    let static_yaml = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{web_port}\"\n    asDefault: true\n    http:\n      middlewares: {middlewares}\n  traefik:\n    address: \"127.0.0.1:{api}\"\n\
         api:\n  insecure: true\n\
         providers:\n  providersThrottleDuration: \"{throttle}\"\n  file:\n    directory: \"{}\"\n    watch: true\n\
         log:\n  level: INFO\n",
        dynamic.display()
    );
    (
        Traefik::start(sb.scratch.path(), api, &static_yaml),
        web_port,
    )
}

/// One repo daemon, the route server writing its dynamic file, and Traefik reading that folder;
/// fields drop in order (Traefik first, the lock last).
struct PushLab {
    traefik: Traefik,
    rs: RouteServer,
    d: Daemon,
    routes_file: std::path::PathBuf,
    web_port: u16,
    _sb: Sandbox,
    _lock: std::fs::File,
}

fn push_lab(route_server_flags: &[&str], throttle: &str) -> PushLab {
    let lock = exclusive();
    let sb = Sandbox::new();
    let d = Daemon::start(&sb, N);
    let dynamic = sb.scratch.path().join("dynamic");
    std::fs::create_dir_all(&dynamic).unwrap();
    let routes_file = dynamic.join(proxy_config::ROUTES_FILE);
    let mut flags = route_server_flags.to_vec();
    flags.extend(["--dynamic-file", routes_file.to_str().unwrap()]);
    let rs = RouteServer::start(&sb, &flags);
    let (traefik, web_port) = traefik_on_dynamic_folder(&sb, &dynamic, throttle);
    PushLab {
        traefik,
        rs,
        d,
        routes_file,
        web_port,
        _sb: sb,
        _lock: lock,
    }
}

/// The case the grace period and the retries of closed ports alone cannot cover: every request
/// takes 300 ms, the service ignores SIGTERM, and `docker stop` (the container's own stop
/// timeout, as compose sets it from `stop_grace_period`) kills it while clients keep requests
/// in flight. The GETs it held at the SIGKILL are answered 502 by Traefik and replayed by
/// `renet-replay` once the replacement answers; the POSTs it held are not replayed (they may
/// have acted): their clients see the 502, and nothing else fails.
#[test]
fn a_slow_service_killed_by_docker_stop_loses_no_idempotent_request_when_recreated() {
    let lab = push_lab(&[], "500ms");
    let (d, web_port) = (&lab.d, lab.web_port);
    let ip = slot_ip(N, 1);
    let run = || {
        d.run_service(
            "slow",
            "slow",
            1,
            &[
                ("traefik.enable", "true".into()),
                (
                    "traefik.http.routers.slow.rule",
                    "Host(`slow.test.example`)".into(),
                ),
                (
                    "traefik.http.services.slow.loadbalancer.server.port",
                    "8080".into(),
                ),
            ],
            &["--stop-timeout", "3"],
            &slow_web(ip, 8080, "slow-web", "0.3"),
        )
    };
    run();
    let send = move |method: &str| {
        http_request(
            &format!("127.0.0.1:{web_port}"),
            method,
            "/cgi-bin/slow",
            Some("slow.test.example"),
        )
    };
    wait_for(
        "the slow route through Traefik",
        Duration::from_secs(30),
        || match send("GET") {
            Ok((200, body)) if body.contains("slow-web") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // Four clients send GETs back to back, three send POSTs.
    let clients: Vec<_> = ["GET", "GET", "GET", "GET", "POST", "POST", "POST"]
        .into_iter()
        .map(|method| {
            std::thread::spawn(move || {
                let mut results = Vec::new();
                let until = Instant::now() + Duration::from_secs(9);
                while Instant::now() < until {
                    let sent = Instant::now();
                    let r = send(method);
                    results.push((method, sent, sent.elapsed(), r));
                }
                results
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let stop_started = Instant::now();
    d.docker_ok(&["stop", "slow"]);
    let stopped_after = stop_started.elapsed();
    d.docker_ok(&["rm", "slow"]);
    run();
    let results: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let failed = |method: &str| -> Vec<String> {
        results
            .iter()
            .filter(|(m, _, _, r)| {
                *m == method && !matches!(r, Ok((200, body)) if body.contains("slow-web"))
            })
            .map(|(_, sent, took, r)| {
                format!(
                    "{r:?} sent {:?} after the stop began, answered in {took:?}",
                    sent.saturating_duration_since(stop_started)
                )
            })
            .collect()
    };
    let (gets_failed, posts_failed) = (failed("GET"), failed("POST"));
    println!(
        "{} slow requests during the recreate (stop took {stopped_after:?}); failed: {} GET, {} \
         POST",
        results.len(),
        gets_failed.len(),
        posts_failed.len()
    );
    assert!(
        stopped_after >= Duration::from_millis(2900),
        "httpd ignores SIGTERM, so docker stop waits the stop timeout: {stopped_after:?}"
    );
    assert!(
        results.len() > 100,
        "the clients kept sending: {}",
        results.len()
    );
    assert!(
        gets_failed.is_empty(),
        "failed GETs: {gets_failed:?}\n{}\n{}",
        lab.traefik.log_text(),
        lab.rs.log_text()
    );
    // The POSTs in hand at the SIGKILL: not replayed, so their clients see Traefik's 502.
    assert!(
        !posts_failed.is_empty() && posts_failed.iter().all(|f| f.starts_with("Ok((502,")),
        "POSTs the killed process held are answered 502, not sent twice: {posts_failed:?}"
    );
    d.docker_ok(&["rm", "-f", "slow"]);
}

#[test]
fn a_recreated_container_loses_no_request_and_a_vanished_one_loses_its_route() {
    let lab = push_lab(&["--redeploy-grace", "4"], "0s");
    let (d, web_port, routes_file) = (&lab.d, lab.web_port, &lab.routes_file);
    run_web(d);
    let get = || {
        http_get(
            &format!("127.0.0.1:{web_port}"),
            "/",
            Some("web.test.example"),
        )
    };
    wait_for(
        "the route through Traefik",
        Duration::from_secs(30),
        || match get() {
            Ok((200, body)) if body.contains("hello-web") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // Recreate under a steady stream of requests.
    let client = std::thread::spawn(move || {
        let mut results = Vec::new();
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            results.push(http_get(
                &format!("127.0.0.1:{web_port}"),
                "/",
                Some("web.test.example"),
            ));
            std::thread::sleep(Duration::from_millis(20));
        }
        results
    });
    std::thread::sleep(Duration::from_millis(500));
    d.docker_ok(&["stop", "-t", "2", "web"]);
    d.docker_ok(&["rm", "web"]);
    std::thread::sleep(Duration::from_millis(300));
    run_web(d);
    let results = client.join().unwrap();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !matches!(r, Ok((200, body)) if body.contains("hello-web")))
        .map(|r| format!("{r:?}"))
        .collect();
    println!(
        "{} requests during the recreate, {} failed",
        results.len(),
        failed.len()
    );
    assert!(
        results.len() > 50,
        "the client kept sending: {}",
        results.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests: {failed:?}\n{}",
        lab.traefik.log_text()
    );

    // Gone for good: the route goes once the grace period is over.
    d.docker_ok(&["rm", "-f", "web"]);
    let routed_for = Instant::now();
    wait_for("the route gone", Duration::from_secs(30), || match get() {
        Ok((404, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert!(
        routed_for.elapsed() >= Duration::from_secs(3),
        "the route stayed for the grace period"
    );
    assert!(
        !std::fs::read_to_string(routes_file)
            .unwrap()
            .contains("web-3968")
    );
}
