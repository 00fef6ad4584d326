//! Redeploys on real parts (docs/performance.md, "Redeploys"): a client sends requests through
//! real Traefik in a loop while the routed container is recreated the way compose does it
//! (stop, remove, create, start on the same service IP), and gets no error; a container that
//! does not come back loses its route once the grace period is over. Traefik reads the route
//! server's dynamic file through its file provider (the push mechanism), with the retry
//! middleware `renet proxy config` puts on the entrypoints.

mod route_server_support;

use std::time::{Duration, Instant};

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

#[test]
fn a_recreated_container_loses_no_request_and_a_vanished_one_loses_its_route() {
    let _lock = exclusive();
    let sb = Sandbox::new();
    let d = Daemon::start(&sb, N);
    let dynamic = sb.scratch.path().join("dynamic");
    std::fs::create_dir_all(&dynamic).unwrap();
    std::fs::write(
        dynamic.join("renet-defaults.yaml"),
        "http:\n  middlewares:\n    renet-retry:\n      retry:\n        attempts: 12\n        initialInterval: \"100ms\"\n",
    )
    .unwrap();
    let routes_file = dynamic.join("routes.yaml");
    let rs_port = free_port();
    let rs = RouteServer::start_on(
        &sb,
        rs_port,
        &[
            "--redeploy-grace",
            "4",
            "--dynamic-file",
            routes_file.to_str().unwrap(),
        ],
    );
    let (web_port, api) = (free_port(), free_port());
    let static_yaml = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{web_port}\"\n    asDefault: true\n    http:\n      middlewares: [\"renet-retry@file\"]\n  traefik:\n    address: \"127.0.0.1:{api}\"\n\
         api:\n  insecure: true\n\
         providers:\n  providersThrottleDuration: \"0s\"\n  file:\n    directory: \"{}\"\n    watch: true\n\
         log:\n  level: INFO\n",
        dynamic.display()
    );
    let traefik = Traefik::start(sb.scratch.path(), api, &static_yaml);
    run_web(&d);
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
    run_web(&d);
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
        traefik.log_text()
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
        !std::fs::read_to_string(&routes_file)
            .unwrap()
            .contains("web-3968")
    );
    drop(rs);
}
