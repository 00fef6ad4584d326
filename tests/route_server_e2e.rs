//! End to end: real repo daemons (networks 2944 and 3008), real containers, `renet
//! route-server`, and real Traefik v3 polling `/routes.yaml`. Checks that requests reach the
//! right container in the right repo (automatic and label routes, TCP forwards), that stopped
//! containers and stopped daemons lose their routes and come back without a route-server
//! restart, and that a route-server restart serves the same bytes and port allocations.

mod route_server_support;

use std::collections::BTreeMap;
use std::time::Duration;

use route_server_support::*;

const LONG: Duration = Duration::from_secs(30);

/// Entry point name → the loopback port Traefik listens on for it in this test.
struct Entrypoints(BTreeMap<String, u16>);

impl Entrypoints {
    fn new(names: &[String]) -> Self {
        Entrypoints(names.iter().map(|n| (n.clone(), free_port())).collect())
    }
    fn port(&self, name: &str) -> u16 {
        self.0[name]
    }
    fn yaml(&self) -> String {
        self.0
            .iter()
            .map(|(n, p)| format!("  {n}:\n    address: \"127.0.0.1:{p}\"\n"))
            .collect()
    }
}

fn get_via(port: u16, host: &str) -> Result<(u16, String), String> {
    http_get(&format!("127.0.0.1:{port}"), "/", Some(host))
}

/// Waits until Traefik answers `host` on `port` (plain HTTP) with 200 and `marker`.
fn expect_http(port: u16, host: &str, marker: &str) {
    wait_for(&format!("http://{host} → {marker}"), LONG, || {
        let (code, body) = get_via(port, host)?;
        if code == 200 && body.contains(marker) {
            Ok(())
        } else {
            Err(format!("{code} {body:?}"))
        }
    });
}

fn expect_https(port: u16, host: &str, marker: &str) {
    wait_for(&format!("https://{host} → {marker}"), LONG, || {
        let (code, body) = https_get(host, port, "/")?;
        if code == 200 && body.contains(marker) {
            Ok(())
        } else {
            Err(format!("{code} {body:?}"))
        }
    });
}

fn expect_https_gone(port: u16, host: &str) {
    wait_for(&format!("https://{host} → 404"), LONG, || {
        let (code, body) = https_get(host, port, "/")?;
        if code == 404 {
            Ok(())
        } else {
            Err(format!("{code} {body:?}"))
        }
    });
}

fn wait_yaml(rs: &RouteServer, what: &str, f: impl Fn(&str) -> bool) -> String {
    wait_for(what, LONG, || {
        let y = rs.get("/routes.yaml")?;
        if f(&y) { Ok(y) } else { Err(y) }
    })
}

#[test]
fn traefik_follows_containers_daemons_and_restarts() {
    let _lock = exclusive();
    let sb = Sandbox::new();
    let d1 = Daemon::start(&sb, 2944);
    let mut d2 = Daemon::start(&sb, 3008);
    let keep = ["--restart", "unless-stopped"];
    let port_label = |p: u16| ("rediacc.service_port", p.to_string());

    // Same service name `svc` in both repos: automatic routes svc-2944 / svc-3008.
    d1.run_service(
        "svc",
        "svc",
        0,
        &[port_label(8080)],
        &[],
        &web(slot_ip(2944, 0), 8080, "from-svc-2944"),
    );
    d2.run_service(
        "svc",
        "svc",
        0,
        &[port_label(8080)],
        &keep,
        &web(slot_ip(3008, 0), 8080, "from-svc-3008"),
    );
    // A label (tier 2) route in 3008.
    d2.run_service(
        "web",
        "web",
        1,
        &[
            ("traefik.enable", "true".into()),
            (
                "traefik.http.routers.web.rule",
                "Host(`label.test.example`)".into(),
            ),
            ("traefik.http.routers.web.entrypoints", "web".into()),
            (
                "traefik.http.services.web.loadbalancer.server.port",
                "8081".into(),
            ),
        ],
        &keep,
        &web(slot_ip(3008, 1), 8081, "from-web-3008"),
    );
    // Both repos publish 5432: one gets tcp-5432, the other a port of the dynamic range.
    d1.run_service(
        "db",
        "db",
        1,
        &[("rediacc.tcp_ports", "5432:7000".into())],
        &[],
        &web(slot_ip(2944, 1), 7000, "from-db-2944"),
    );
    d2.run_service(
        "db",
        "db",
        2,
        &[("rediacc.tcp_ports", "5432:7000".into())],
        &keep,
        &web(slot_ip(3008, 2), 7000, "from-db-3008"),
    );

    let rs_port = free_port();
    let flags = [
        "--base-domain",
        "test.example",
        "--entrypoints",
        "websecure",
        "--cert-resolver",
        "",
        "--dynamic-range",
        "10000-10010",
    ];
    let mut rs = RouteServer::start_on(&sb, rs_port, &flags);

    let mut names: Vec<String> = ["web", "websecure", "tcp-5432"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend((10000..=10010).map(|p| format!("tcp-{p}")));
    let eps = Entrypoints::new(&names);
    let api = free_port();
    let traefik_yaml = format!(
        "entryPoints:\n{}  traefik:\n    address: \"127.0.0.1:{api}\"\n\
         api:\n  insecure: true\n\
         providers:\n  http:\n    endpoint: \"http://127.0.0.1:{rs_port}/routes.yaml\"\n    pollInterval: \"1s\"\n\
         log:\n  level: INFO\n",
        eps.yaml()
    );
    let traefik = Traefik::start(sb.scratch.path(), api, &traefik_yaml);
    let (web_port, tls_port) = (eps.port("web"), eps.port("websecure"));

    let yaml = wait_yaml(&rs, "every route in /routes.yaml", |y| {
        y.contains("svc-2944.test.example")
            && y.contains("svc-3008.test.example")
            && y.contains("label.test.example")
            && y.matches("tcp-").count() >= 2
    });
    println!("/routes.yaml:\n{yaml}");

    // HTTP: the right container in the right repo.
    expect_https(tls_port, "svc-2944.test.example", "from-svc-2944");
    expect_https(tls_port, "svc-3008.test.example", "from-svc-3008");
    expect_http(web_port, "label.test.example", "from-web-3008");

    // TCP: each allocation forwards to its own repo's listener.
    let ports = rs.json("/ports");
    let tcp = ports["tcp"].as_array().expect("/ports tcp list").clone();
    assert_eq!(tcp.len(), 2, "two TCP allocations expected: {ports:#}");
    let held: BTreeMap<u64, u64> = tcp
        .iter()
        .map(|a| {
            (
                a["port"].as_u64().unwrap(),
                a["network_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        held.contains_key(&5432),
        "5432 is held by one repo: {ports:#}"
    );
    assert!(
        held.keys().any(|p| (10000..=10010).contains(p)),
        "the other repo got a dynamic port: {ports:#}"
    );
    for a in &tcp {
        let ep = a["entrypoint"].as_str().unwrap();
        let net = a["network_id"].as_u64().unwrap();
        assert_eq!(a["target"], 7000, "{a}");
        let addr = format!("127.0.0.1:{}", eps.port(ep));
        wait_for(&format!("TCP {ep} → db-{net}"), LONG, || {
            let answer = tcp_exchange(&addr, "GET / HTTP/1.0\r\n\r\n")?;
            if answer.contains(&format!("from-db-{net}")) {
                Ok(())
            } else {
                Err(answer)
            }
        });
    }

    // A stopped container's route disappears; the other repo's same-named service stays.
    d1.docker_ok(&["stop", "-t", "1", "svc"]);
    wait_yaml(&rs, "svc-2944 gone from /routes.yaml", |y| {
        !y.contains("svc-2944.test.example") && y.contains("svc-3008.test.example")
    });
    expect_https_gone(tls_port, "svc-2944.test.example");
    expect_https(tls_port, "svc-3008.test.example", "from-svc-3008");

    // A daemon stopped and started again is followed, without restarting the route server.
    d2.down();
    wait_yaml(&rs, "3008's routes gone", |y| {
        !y.contains("svc-3008") && !y.contains("label.test.example")
    });
    wait_for("3008 dropped from /health", LONG, || {
        let h = rs.json("/health");
        let ids: Vec<u64> = h["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["network_id"].as_u64().unwrap())
            .collect();
        if ids == [2944] {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
    expect_https_gone(tls_port, "svc-3008.test.example");
    d2.up();
    wait_yaml(&rs, "3008's routes back", |y| {
        y.contains("svc-3008.test.example")
            && y.contains("label.test.example")
            && y.matches("tcp-").count() >= 2
    });
    expect_http(web_port, "label.test.example", "from-web-3008");
    expect_https(tls_port, "svc-3008.test.example", "from-svc-3008");
    assert!(
        rs.child.try_wait().unwrap().is_none(),
        "the route server kept running"
    );
    let h = rs.json("/health");
    assert_eq!(h["status"], "ok", "{h:#}");

    // A restart serves the same bytes and the same allocations from its first answer on.
    let yaml_before = rs.get("/routes.yaml").unwrap();
    let ports_before = rs.get("/ports").unwrap();
    let json_before = rs.get("/routes.json").unwrap();
    let status = rs.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(
        sb.state.path().join("ports.json").exists(),
        "ports.json persisted"
    );
    drop(rs);
    let rs = RouteServer::start_on(&sb, rs_port, &flags);
    assert_eq!(rs.get("/routes.yaml").unwrap(), yaml_before);
    assert_eq!(rs.get("/ports").unwrap(), ports_before);
    assert_eq!(rs.get("/routes.json").unwrap(), json_before);
    expect_http(web_port, "label.test.example", "from-web-3008");
    drop(traefik);
}
