//! The adversarial corpus of the multi-tenant rules (docs/labels.md, "Multi-tenant rules"), on
//! real parts: three repo daemons (victim 3712, attacker 3776, granted tenant 3840), real
//! containers started with `docker run` (a tenant can bypass `renet compose`), `renet
//! route-server`, and real Traefik v3 polling `/routes.yaml`.
//!
//! For every class of attack the attacker's router or container is refused with a reason in
//! `/health`, the victim keeps answering through Traefik, and the attacker's backend never
//! answers the victim's traffic. Then the restart cases: the victim goes down, the attacker
//! asks again, the route server restarts — ownership and ports stay with the victim.

mod route_server_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use route_server_support::*;

const LONG: Duration = Duration::from_secs(40);
const VICTIM: u32 = 3712;
const ATTACKER: u32 = 3776;
const GRANTED: u32 = 3840;

struct Proxy {
    ports: BTreeMap<String, u16>,
}

impl Proxy {
    fn port(&self, name: &str) -> u16 {
        self.ports[name]
    }

    /// Traefik's static configuration: `web` and `websecure` are the default entrypoints (as
    /// `renet proxy config` writes them), plus the API entrypoint and the TCP ports.
    fn static_yaml(&self, rs_port: u16) -> String {
        let mut eps = String::new();
        for (name, port) in &self.ports {
            eps.push_str(&format!("  {name}:\n    address: \"127.0.0.1:{port}\"\n"));
            if name == "web" || name == "websecure" {
                eps.push_str("    asDefault: true\n");
            }
        }
        format!(
            "entryPoints:\n{eps}\
             api:\n  insecure: true\n\
             providers:\n  http:\n    endpoint: \"http://127.0.0.1:{rs_port}/routes.yaml\"\n    pollInterval: \"1s\"\n\
             log:\n  level: INFO\n"
        )
    }
}

fn get_via(port: u16, host: &str) -> Result<(u16, String), String> {
    http_get(&format!("127.0.0.1:{port}"), "/", Some(host))
}

/// Waits until `host` on `port` answers 200 with `marker`; fails if the attacker ever answers.
fn expect_http(port: u16, host: &str, marker: &str) {
    wait_for(&format!("http://{host} → {marker}"), LONG, || {
        let (code, body) = get_via(port, host)?;
        assert!(
            !body.contains("attacker") || marker.contains("attacker"),
            "the attacker answered http://{host}: {body}"
        );
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
        assert!(
            !body.contains("attacker"),
            "the attacker answered https://{host}: {body}"
        );
        if code == 200 && body.contains(marker) {
            Ok(())
        } else {
            Err(format!("{code} {body:?}"))
        }
    });
}

fn expect_tcp(port: u16, marker: &str) {
    wait_for(&format!("tcp {port} → {marker}"), LONG, || {
        let answer = tcp_exchange(&format!("127.0.0.1:{port}"), "GET / HTTP/1.0\r\n\r\n")?;
        assert!(
            !answer.contains("attacker"),
            "the attacker answered tcp {port}: {answer}"
        );
        if answer.contains(marker) {
            Ok(())
        } else {
            Err(answer)
        }
    });
}

/// Every entry of `/health`'s `refused` and `rejected` lists of network `n`, as
/// `(object or container, reason)`.
fn refusals(rs: &RouteServer, n: u32) -> Vec<(String, String)> {
    let h = rs.json("/health");
    let mut out = Vec::new();
    for list in ["refused", "rejected"] {
        for e in h[list].as_array().cloned().unwrap_or_default() {
            if e["network_id"] == n {
                let what = e["object"]
                    .as_str()
                    .or(e["container"].as_str())
                    .unwrap_or("")
                    .to_string();
                out.push((what, e["reason"].as_str().unwrap_or("").to_string()));
            }
        }
    }
    out
}

/// Waits until `/health` refuses `what` (a router or container name) with a reason containing
/// `why`; returns the reason.
fn expect_refused(rs: &RouteServer, n: u32, what: &str, why: &str) -> String {
    wait_for(&format!("{what} refused ({why})"), LONG, || {
        let all = refusals(rs, n);
        all.iter()
            .find(|(w, r)| w == what && r.contains(why))
            .map(|(_, r)| r.clone())
            .ok_or_else(|| format!("{all:#?}"))
    })
}

/// Docker labels as `run_service` takes them.
type Labels<'a> = Vec<(&'a str, String)>;

fn labels<'a>(pairs: &[(&'a str, &str)]) -> Labels<'a> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Creates and starts a sleeping container through the Docker API (what compose does): the
/// docker CLI cannot pass a label of half a megabyte.
fn create_by_api(d: &Daemon, name: &str, slot: u32, extra: &[(&str, String)]) {
    let n = d.network_id;
    let mut labels = serde_json::Map::new();
    labels.insert("rediacc.service_name".into(), name.into());
    labels.insert(
        "rediacc.service_ip".into(),
        slot_ip(n, slot).to_string().into(),
    );
    labels.insert("rediacc.network_id".into(), n.to_string().into());
    for (k, v) in extra {
        labels.insert(k.to_string(), v.clone().into());
    }
    let body = serde_json::json!({
        "Image": IMAGE,
        "Cmd": ["sleep", "3600"],
        "Labels": labels,
        "HostConfig": {"NetworkMode": "host"},
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("create.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let sock = d.socket.display().to_string();
    for (path, data) in [
        (
            format!("/containers/create?name={name}"),
            format!("@{}", file.display()),
        ),
        (format!("/containers/{name}/start"), String::new()),
    ] {
        let out = Command::new("curl")
            .args([
                "-sf",
                "--unix-socket",
                &sock,
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", &data])
            .arg(format!("http://localhost{path}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "POST {path}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn sleeper() -> Vec<String> {
    vec!["sleep".into(), "3600".into()]
}

#[test]
fn hostile_labels_are_refused_and_every_other_tenant_keeps_being_served() {
    let _lock = exclusive();
    let sb = Sandbox::new();
    let victim = Daemon::start(&sb, VICTIM);
    let attacker = Daemon::start(&sb, ATTACKER);
    let granted = Daemon::start(&sb, GRANTED);
    let keep = ["--restart", "unless-stopped"];
    let vip = |slot| slot_ip(VICTIM, slot);
    let aip = |slot| slot_ip(ATTACKER, slot);

    // The operator grants *.shop2.test.example to the third tenant (the settings file the
    // test route server reads).
    std::fs::write(
        sb.scratch.path().join("no-settings.json"),
        format!(r#"{{"routing": {{"host_grants": {{"{GRANTED}": ["*.shop2.test.example"]}}}}}}"#),
    )
    .unwrap();
    let rs_port = free_port();
    let flags = [
        "--base-domain",
        "test.example",
        "--entrypoints",
        "websecure",
        "--cert-resolver",
        "",
        "--dynamic-range",
        "10000-10007",
        "--redeploy-grace",
        "2",
    ];
    let mut rs = RouteServer::start_on(&sb, rs_port, &flags);
    let mut names = vec![
        "web".to_string(),
        "websecure".into(),
        "traefik".into(),
        "tcp-5432".into(),
    ];
    names.extend((10000..=10007).map(|p| format!("tcp-{p}")));
    let proxy = Proxy {
        ports: names.into_iter().map(|n| (n, free_port())).collect(),
    };
    let traefik = Traefik::start(
        sb.scratch.path(),
        proxy.port("traefik"),
        &proxy.static_yaml(rs_port),
    );
    let (http, tls) = (proxy.port("web"), proxy.port("websecure"));

    // ----- the victim: a label route, an automatic route, a TCP forward -----------------------
    victim.run_service(
        "v-shop",
        "shop",
        0,
        &labels(&[
            ("traefik.enable", "true"),
            (
                "traefik.http.routers.shop.rule",
                "Host(`shop.test.example`)",
            ),
            (
                "traefik.http.services.shop.loadbalancer.server.port",
                "8080",
            ),
        ]),
        &keep,
        &web(vip(0), 8080, "victim-shop"),
    );
    victim.run_service(
        "v-app",
        "app",
        1,
        &labels(&[("rediacc.service_port", "8081")]),
        &keep,
        &web(vip(1), 8081, "victim-app"),
    );
    victim.run_service(
        "v-db",
        "db",
        2,
        &labels(&[("rediacc.tcp_ports", "5432")]),
        &keep,
        &web(vip(2), 5432, "victim-db"),
    );
    expect_http(http, "shop.test.example", "victim-shop");
    expect_https(tls, "app-3712.test.example", "victim-app");
    expect_tcp(proxy.port("tcp-5432"), "victim-db");

    // ----- the attacker ------------------------------------------------------------------------
    // One container, one router per host-name trick; all point at the attacker's web server.
    let tricks: &[(&str, &str, &str)] = &[
        ("dot", "Host(`shop.test.example.`)", "held by network 3712"),
        ("upper", "HOST(`shop.test.example`)", "held by network 3712"),
        ("lower", "host(`shop.test.example`)", "held by network 3712"),
        (
            "comment",
            "Host /* x */ (`shop.test.example`)",
            "held by network 3712",
        ),
        (
            "escape",
            "Host(\"sh\\x6fp.test.example\")",
            "held by network 3712",
        ),
        (
            "case",
            "Host(`SHOP.TEST.EXAMPLE`) && PathPrefix(`/`)",
            "held by network 3712",
        ),
        (
            "orpath",
            "Host(`evil.test.example`) || PathPrefix(`/`)",
            "branch",
        ),
        (
            "orip",
            "Host(`evil.test.example`) || ClientIP(`0.0.0.0/0`)",
            "branch",
        ),
        ("not", "!Host(`evil.test.example`)", "not confined"),
        ("regexall", "HostRegexp(`.*`)", ""),
        (
            "regexsub",
            "HostRegexp(`^[a-z]+\\.test\\.example$`)",
            "grant",
        ),
        (
            "regexexact",
            "HostRegexp(`^shop\\.test\\.example$`)",
            "3712",
        ),
        (
            "auto",
            "Host(`app-3712.test.example`)",
            "automatic-route host of network 3712",
        ),
        (
            "granted",
            "Host(`x.shop2.test.example`)",
            "granted to network 3840",
        ),
    ];
    let mut hostile: Vec<(String, String)> = vec![
        ("traefik.enable", "true".to_string()),
        (
            "traefik.http.services.evil.loadbalancer.server.port",
            "8080".into(),
        ),
        (
            "traefik.http.routers.ok.rule",
            "Host(`evil.test.example`)".into(),
        ),
        ("traefik.http.routers.ok.service", "evil".into()),
        // v2 syntax is parsed as v2.
        ("traefik.http.routers.v2header.rulesyntax", "v2".into()),
        (
            "traefik.http.routers.v2header.rule",
            "HostHeader(`shop.test.example`)".into(),
        ),
        ("traefik.http.routers.v2header.service", "evil".into()),
        ("traefik.http.routers.v2regex.rulesyntax", "v2".into()),
        (
            "traefik.http.routers.v2regex.rule",
            "HostRegexp(`{sub:[a-z]+}.test.example`)".into(),
        ),
        ("traefik.http.routers.v2regex.service", "evil".into()),
        // Certificates for names it does not own.
        (
            "traefik.http.routers.certs.rule",
            "Host(`evil2.test.example`)".into(),
        ),
        (
            "traefik.http.routers.certs.tls.domains[0].main",
            "*.test.example".into(),
        ),
        ("traefik.http.routers.certs.service", "evil".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (name, rule, _) in tricks {
        let k = |f: &str| format!("traefik.http.routers.{name}.{f}");
        hostile.push((k("rule"), rule.to_string()));
        hostile.push((k("service"), "evil".into()));
    }
    let hostile: Vec<(&str, String)> = hostile
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    attacker.run_service(
        "a-hosts",
        "hosts",
        0,
        &hostile,
        &keep,
        &web(aip(0), 8080, "attacker"),
    );

    // Containers whose labels break the tenant policy: each is dropped whole.
    let evil_rule = |n: &str| format!("Host(`{n}.evil.test.example`)");
    let (fwd_victim, fwd_own) = (
        format!("http://{}:8080/", vip(0)),
        format!("http://{}:8080/", aip(2)),
    );
    let (redis_victim, scheme_victim) = (
        format!("{}:5432", vip(2)),
        format!("http://{}:8080/#", vip(0)),
    );
    let policy: Vec<(&str, Labels, &str)> = vec![
        (
            "a-api",
            labels(&[("traefik.http.routers.r.service", "api@internal")]),
            "api@internal",
        ),
        (
            "a-dash",
            labels(&[
                ("traefik.http.routers.r.middlewares", "c"),
                (
                    "traefik.http.middlewares.c.chain.middlewares",
                    "dashboard@internal",
                ),
            ]),
            "dashboard@internal",
        ),
        (
            "a-shadow",
            labels(&[
                ("traefik.http.routers.r.middlewares", "m"),
                (
                    "traefik.http.middlewares.m.basicauth.usersfile",
                    "/etc/shadow",
                ),
            ]),
            "usersFile",
        ),
        (
            "a-fwd",
            labels(&[
                ("traefik.http.routers.r.middlewares", "m"),
                (
                    "traefik.http.middlewares.m.forwardauth.address",
                    &fwd_victim,
                ),
            ]),
            "outside this repository's service IPs",
        ),
        (
            "a-key",
            labels(&[
                ("traefik.http.routers.r.middlewares", "m"),
                ("traefik.http.middlewares.m.forwardauth.address", &fwd_own),
                (
                    "traefik.http.middlewares.m.forwardauth.tls.key",
                    "/etc/ssl/private/renet.key",
                ),
            ]),
            "forwardAuth.tls.key",
        ),
        (
            "a-redis",
            labels(&[
                ("traefik.http.routers.r.middlewares", "m"),
                ("traefik.http.middlewares.m.ratelimit.average", "10"),
                (
                    "traefik.http.middlewares.m.ratelimit.redis.endpoints",
                    &redis_victim,
                ),
            ]),
            "rateLimit.redis.endpoints",
        ),
        (
            "a-scheme",
            labels(&[(
                "traefik.http.services.s.loadbalancer.server.scheme",
                &scheme_victim,
            )]),
            "scheme",
        ),
        (
            "a-flood",
            labels(&[(
                "traefik.http.services.s.loadbalancer.healthcheck.interval",
                "2µs",
            )]),
            "below the floor",
        ),
        (
            "a-plugin",
            labels(&[
                ("traefik.http.routers.r.middlewares", "m"),
                ("traefik.http.middlewares.m.plugin.evil.target", "x"),
            ]),
            "plugin `evil`",
        ),
    ];
    for (i, (name, extra, _)) in policy.iter().enumerate() {
        let mut l = labels(&[
            ("traefik.enable", "true"),
            ("traefik.http.services.s.loadbalancer.server.port", "8080"),
        ]);
        l.push(("traefik.http.routers.r.rule", evil_rule(name)));
        l.extend(extra.iter().cloned());
        attacker.run_service(name, &format!("p{i}"), 3, &l, &[], &sleeper());
    }
    // TCP routers on HTTP entrypoints, the API entrypoint, every entrypoint, a held port.
    let tcp_cases: &[(&str, Option<&str>, &str)] = &[
        (
            "a-tcp-websecure",
            Some("websecure"),
            "not a tcp-<port> entrypoint",
        ),
        ("a-tcp-web", Some("web"), "not a tcp-<port> entrypoint"),
        ("a-tcp-api", Some("traefik"), "not a tcp-<port> entrypoint"),
        ("a-tcp-all", None, "every entrypoint"),
        ("a-tcp-5432", Some("tcp-5432"), "held by network 3712"),
    ];
    for (i, (name, ep, _)) in tcp_cases.iter().enumerate() {
        let mut l = labels(&[
            ("traefik.enable", "true"),
            ("traefik.tcp.routers.t.rule", "HostSNI(`*`)"),
            ("traefik.tcp.services.t.loadbalancer.server.port", "8080"),
        ]);
        if let Some(ep) = ep {
            l.push(("traefik.tcp.routers.t.entrypoints", ep.to_string()));
        }
        attacker.run_service(name, &format!("t{i}"), 4, &l, &[], &sleeper());
    }
    // Another repository's host as a TCP SNI name, on a port of the attacker's own.
    attacker.run_service(
        "a-sni",
        "sni",
        9,
        &labels(&[
            ("traefik.enable", "true"),
            (
                "traefik.tcp.routers.sni.rule",
                "HostSNI(`SHOP.test.example.`)",
            ),
            ("traefik.tcp.routers.sni.entrypoints", "tcp-3306"),
            ("traefik.tcp.routers.sni.tls.passthrough", "true"),
            ("traefik.tcp.services.sni.loadbalancer.server.port", "8080"),
        ]),
        &[],
        &sleeper(),
    );
    // Aliases of the victim's daemon planted in the socket folder.
    let padded = sb.sockets.path().join("docker-03712.sock");
    let alias = sb.sockets.path().join("docker-3904.sock");
    std::os::unix::fs::symlink(&victim.socket, &padded).unwrap();
    std::os::unix::fs::symlink(&victim.socket, &alias).unwrap();
    // Ports: the victim's 5432 (moves to the dynamic range), more dynamic ports than the quota,
    // and 65535 port requests in one label (refused at the bound, without slowing anyone).
    attacker.run_service(
        "a-ports",
        "ports",
        5,
        &labels(&[("rediacc.tcp_ports", "5432,0:81,0:82,0:83,0:84,0:85")]),
        &keep,
        &sleeper(),
    );
    let flood: String = (1..=65535)
        .map(|p| format!("0:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    create_by_api(&attacker, "a-allports", 6, &[("rediacc.tcp_ports", flood)]);
    // Values YAML would misread if they were written plain: Traefik must get them as written.
    attacker.run_service(
        "a-render",
        "render",
        7,
        &labels(&[
            ("traefik.enable", "true"),
            (
                "traefik.http.routers.render.rule",
                "Host(`render.test.example`)",
            ),
            ("traefik.http.routers.render.middlewares", "h"),
            (
                "traefik.http.middlewares.h.headers.customresponseheaders.X-Merge",
                "<<",
            ),
            (
                "traefik.http.middlewares.h.headers.customresponseheaders.X-Date",
                "2024-01-01",
            ),
            (
                "traefik.http.middlewares.h.headers.customresponseheaders.X-Num",
                "1_000",
            ),
            (
                "traefik.http.middlewares.h.headers.customresponseheaders.X-Hex",
                "0x_1f",
            ),
            (
                "traefik.http.middlewares.h.headers.customresponseheaders.X-Yes",
                "yes",
            ),
            (
                "traefik.http.services.render.loadbalancer.server.port",
                "8080",
            ),
        ]),
        &keep,
        &web(aip(7), 8080, "attacker-render"),
    );
    // The granted tenant's HostRegexp inside its grant is served.
    granted.run_service(
        "g-shop",
        "shop",
        0,
        &labels(&[
            ("traefik.enable", "true"),
            (
                "traefik.http.routers.shop.rule",
                "HostRegexp(`^[a-z]+\\.shop2\\.test\\.example$`)",
            ),
            (
                "traefik.http.services.shop.loadbalancer.server.port",
                "8080",
            ),
        ]),
        &keep,
        &web(slot_ip(GRANTED, 0), 8080, "granted-shop"),
    );

    // ----- every attack refused with its reason ------------------------------------------------
    for (name, _, why) in tricks {
        expect_refused(&rs, ATTACKER, &format!("{name}-{ATTACKER}"), why);
    }
    expect_refused(&rs, ATTACKER, "v2header-3776", "held by network 3712");
    expect_refused(&rs, ATTACKER, "v2regex-3776", "");
    expect_refused(&rs, ATTACKER, "certs-3776", "*.test.example");
    for (name, _, why) in &policy {
        expect_refused(&rs, ATTACKER, name, why);
    }
    for (name, _, why) in tcp_cases {
        let what = if *name == "a-tcp-5432" {
            "t-3776"
        } else {
            name
        };
        expect_refused(&rs, ATTACKER, what, why);
    }
    expect_refused(&rs, ATTACKER, "a-allports", "more than 64 ports");
    expect_refused(&rs, ATTACKER, "sni-3776", "held by network 3712");
    wait_for("both socket aliases ignored", LONG, || {
        let h = rs.json("/health");
        let ignored = h["ignored_sockets"].to_string();
        let daemons = h["daemons"].to_string();
        if ignored.contains("docker-03712.sock")
            && ignored.contains("docker-3904.sock")
            && !daemons.contains("3904")
        {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
    let listing = rs.json("/routes.json").to_string();
    assert!(!listing.contains("\"network_id\":3904"), "{listing}");
    let ports = rs.json("/ports");
    let tcp: Vec<&serde_json::Value> = ports["tcp"].as_array().unwrap().iter().collect();
    let held = |n: u32| tcp.iter().filter(|a| a["network_id"] == n).count();
    assert!(
        tcp.iter()
            .any(|a| a["port"] == 5432 && a["network_id"] == VICTIM),
        "5432 stays the victim's: {ports}"
    );
    assert_eq!(
        held(ATTACKER),
        4,
        "the attacker holds its quota and no more: {ports}"
    );
    let health = rs.json("/health");
    let conflicts = health["conflicts"].to_string();
    assert!(conflicts.contains("quota"), "{conflicts}");
    assert!(conflicts.contains("held by network 3712"), "{conflicts}");

    // ----- everyone else is still served, the attacker's legitimate routes too ----------------
    expect_http(http, "shop.test.example", "victim-shop");
    expect_https(tls, "app-3712.test.example", "victim-app");
    expect_tcp(proxy.port("tcp-5432"), "victim-db");
    expect_http(http, "evil.test.example", "attacker");
    expect_http(http, "a.shop2.test.example", "granted-shop");
    // An unknown host is not caught by anyone.
    let (code, _) = get_via(http, "nobody.test.example").unwrap();
    assert_eq!(code, 404);
    // The API entrypoint still serves the API.
    assert!(traefik.rawdata().is_ok());
    // The rendered values reached Traefik as written.
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Host: render.test.example",
        ])
        .arg(format!("http://127.0.0.1:{http}/"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    for (h, v) in [
        ("x-merge", "<<"),
        ("x-date", "2024-01-01"),
        ("x-num", "1_000"),
        ("x-hex", "0x_1f"),
        ("x-yes", "yes"),
    ] {
        assert!(headers.contains(&format!("{h}: {v}")), "{h}: {headers}");
    }
    // Traefik applied the whole document: no configuration error in its log.
    let log = traefik.log_text();
    assert!(!log.contains("cannot unmarshal"), "{log}");
    // The victim gets a dynamic port although the attacker asked for more than its share.
    victim.run_service(
        "v-extra",
        "extra",
        3,
        &labels(&[("rediacc.tcp_ports", "0:9000")]),
        &keep,
        &web(vip(3), 9000, "victim-extra"),
    );
    let extra_port = wait_for("the victim's dynamic port", LONG, || {
        let p = rs.json("/ports");
        p["tcp"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["network_id"] == VICTIM && a["service"] == "extra")
            .and_then(|a| a["port"].as_u64())
            .ok_or_else(|| p.to_string())
    });
    expect_tcp(proxy.port(&format!("tcp-{extra_port}")), "victim-extra");

    // ----- restarts: ownership and ports persist ----------------------------------------------
    victim.docker_ok(&["stop", "-t", "1", "v-shop", "v-db"]);
    wait_for("the victim's shop route gone", LONG, || {
        let y = rs.get("/routes.yaml")?;
        if y.contains("shop-3712") {
            Err(y)
        } else {
            Ok(())
        }
    });
    attacker.run_service(
        "a-late",
        "late",
        8,
        &labels(&[
            ("traefik.enable", "true"),
            (
                "traefik.http.routers.late.rule",
                "Host(`shop.test.example`)",
            ),
            (
                "traefik.http.services.late.loadbalancer.server.port",
                "8080",
            ),
            ("rediacc.tcp_ports", "5432"),
        ]),
        &keep,
        &web(aip(8), 8080, "attacker-late"),
    );
    expect_refused(&rs, ATTACKER, "late-3776", "held by network 3712");
    let p = rs.json("/ports");
    let holder_5432 = p["tcp"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["port"] == 5432)
        .map(|a| a["network_id"].clone());
    assert_eq!(
        holder_5432,
        Some(VICTIM.into()),
        "5432 waits for its owner: {p}"
    );
    let (code, body) = get_via(http, "shop.test.example").unwrap();
    assert_ne!(
        code, 200,
        "nobody serves the victim's host while it is down: {body}"
    );
    let yaml_before = rs.get("/routes.yaml").unwrap();
    let ports_before = rs.json("/ports");
    rs.stop();
    drop(rs);
    let rs = RouteServer::start_on(&sb, rs_port, &flags);
    expect_refused(&rs, ATTACKER, "late-3776", "held by network 3712");
    assert_eq!(
        rs.json("/ports"),
        ports_before,
        "allocations survive a restart"
    );
    assert_eq!(rs.get("/routes.yaml").unwrap(), yaml_before);
    victim.docker_ok(&["start", "v-shop", "v-db"]);
    expect_http(http, "shop.test.example", "victim-shop");
    expect_tcp(proxy.port("tcp-5432"), "victim-db");

    // The operator releases the host: the next claim gets it (here the waiting attacker, whose
    // oldest router asking for the name wins).
    victim.docker_ok(&["stop", "-t", "1", "v-shop"]);
    wait_for("the victim's shop route gone again", LONG, || {
        let y = rs.get("/routes.yaml")?;
        if y.contains("shop-3712") {
            Err(y)
        } else {
            Ok(())
        }
    });
    let out = Command::new(renet_bin())
        .args(["claims", "release", "host", "Shop.Test.Example."])
        .arg("--state-dir")
        .arg(sb.state.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("held by network 3712"));
    expect_http(http, "shop.test.example", "attacker");
    let out = Command::new(renet_bin())
        .args(["claims", "list", "--json"])
        .arg("--state-dir")
        .arg(sb.state.path())
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list["hosts"]["shop.test.example"]["network_id"], ATTACKER,
        "{list}"
    );
}
