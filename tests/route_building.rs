//! Route building (spec §6.2–§6.4, TRAEFIK-LABELS.md, EXAMPLES.md): containers in, Traefik
//! dynamic configuration out. Every published document is parsed back to check its structure.

use std::collections::BTreeMap;

use renet::addresses::NetworkId;
use renet::port_allocation::{PortAllocation, PortTable};
use renet::routes::{Container, Health, RouteSettings, Snapshot, build};
use serde_yaml::Value as Y;

fn nid(n: u32) -> NetworkId {
    NetworkId::new(n).unwrap()
}

/// A container of network `n`, slot `slot`, as `renet compose` labels it, plus `extra` labels.
fn container(n: u32, service: &str, slot: u32, extra: &[(&str, &str)]) -> Container {
    let id = nid(n);
    let mut labels = BTreeMap::new();
    labels.insert("rediacc.service_name".to_string(), service.to_string());
    labels.insert(
        "rediacc.service_ip".to_string(),
        id.slot_ip(slot).unwrap().to_string(),
    );
    labels.insert("rediacc.network_id".to_string(), n.to_string());
    labels.insert(
        "com.docker.compose.service".to_string(),
        service.to_string(),
    );
    labels.insert("com.docker.compose.project".to_string(), format!("proj{n}"));
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string());
    }
    Container {
        network_id: id,
        id: format!("{service}{n}id"),
        name: format!("proj{n}-{service}-1"),
        labels,
        health: Health::None,
    }
}

fn settings() -> RouteSettings {
    let s = renet::settings::Settings {
        base_domain: Some("example.com".into()),
        public_ipv6: Some("2001:db8::1".into()),
        tcp_ports: vec![25, 993],
        ..Default::default()
    };
    RouteSettings::from_settings(&s)
}

fn run(containers: &[Container]) -> Snapshot {
    build(containers, &settings(), &PortTable::default())
}

fn doc(s: &Snapshot) -> Y {
    serde_yaml::from_str(&s.routes_yaml).unwrap()
}

/// `doc[path...]`, Null when absent.
fn at<'a>(v: &'a Y, path: &[&str]) -> &'a Y {
    let mut cur = v;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => cur.get(i).unwrap_or(&Y::Null),
            Err(_) => cur.get(*p).unwrap_or(&Y::Null),
        };
    }
    cur
}

fn s(v: &Y) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn keys(v: &Y) -> Vec<String> {
    v.as_mapping()
        .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn rejected_reasons(s: &Snapshot) -> Vec<String> {
    s.rejected
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect()
}

const ENABLE: (&str, &str) = ("traefik.enable", "true");

// ----- EXAMPLES.md -------------------------------------------------------------------------

#[test]
fn example_webapp_with_hsts() {
    let webapp = container(
        2816,
        "webapp",
        0,
        &[
            ENABLE,
            (
                "traefik.http.routers.webapp.rule",
                "Host(`app.example.com`)",
            ),
            (
                "traefik.http.routers.webapp.entrypoints",
                "websecure,websecure-v6",
            ),
            (
                "traefik.http.routers.webapp.tls.certresolver",
                "letsencrypt",
            ),
            (
                "traefik.http.services.webapp.loadbalancer.server.port",
                "3000",
            ),
            (
                "traefik.http.middlewares.webapp-hsts.headers.stsSeconds",
                "15768000",
            ),
            (
                "traefik.http.middlewares.webapp-hsts.headers.stsIncludeSubdomains",
                "true",
            ),
            ("traefik.http.routers.webapp.middlewares", "webapp-hsts"),
        ],
    );
    let postgres = container(2816, "postgres", 1, &[]);
    let snap = run(&[webapp, postgres]);
    assert!(snap.rejected.is_empty(), "{:?}", snap.rejected);
    let d = doc(&snap);
    let r = at(&d, &["http", "routers", "webapp-2816"]);
    assert_eq!(s(at(r, &["rule"])), "Host(`app.example.com`)");
    assert_eq!(s(at(r, &["entryPoints", "1"])), "websecure-v6");
    assert_eq!(s(at(r, &["tls", "certResolver"])), "letsencrypt");
    assert_eq!(s(at(r, &["service"])), "webapp-2816");
    assert_eq!(s(at(r, &["middlewares", "0"])), "webapp-hsts-2816");
    assert_eq!(
        s(at(
            &d,
            &[
                "http",
                "services",
                "webapp-2816",
                "loadBalancer",
                "servers",
                "0",
                "url"
            ]
        )),
        "http://127.0.11.2:3000"
    );
    let hsts = at(&d, &["http", "middlewares", "webapp-hsts-2816", "headers"]);
    assert_eq!(at(hsts, &["stsSeconds"]).as_i64(), Some(15768000));
    assert_eq!(at(hsts, &["stsIncludeSubdomains"]).as_bool(), Some(true));
    // The database has no route at all.
    assert_eq!(keys(at(&d, &["http", "routers"])), vec!["webapp-2816"]);
    assert_eq!(snap.router_count, 1);
    assert_eq!(snap.service_count, 1);
    let json = &snap.routes_json["http"][0];
    assert_eq!(json["name"], "webapp-2816");
    assert_eq!(json["backends"][0], "http://127.0.11.2:3000");
    assert_eq!(json["network_id"], 2816);
    assert_eq!(json["tier"], 2);
    assert_eq!(json["container"], "proj2816-webapp-1");
}

#[test]
fn example_automatic_route() {
    let app = container(2816, "myapp", 0, &[("rediacc.service_port", "8080")]);
    let snap = run(&[app.clone()]);
    let d = doc(&snap);
    let r = at(&d, &["http", "routers", "myapp-2816-auto"]);
    assert_eq!(s(at(r, &["rule"])), "Host(`myapp-2816.example.com`)");
    assert_eq!(s(at(r, &["entryPoints", "0"])), "websecure");
    assert_eq!(s(at(r, &["entryPoints", "1"])), "websecure-v6");
    assert_eq!(s(at(r, &["tls", "certResolver"])), "letsencrypt");
    assert_eq!(
        s(at(
            &d,
            &[
                "http",
                "services",
                "myapp-2816-auto",
                "loadBalancer",
                "servers",
                "0",
                "url"
            ]
        )),
        "http://127.0.11.2:8080"
    );
    assert!(snap.auto_routes_enabled);
    assert_eq!(snap.routes_json["http"][0]["tier"], 1);

    // No cert resolver: still TLS.
    let mut st = settings();
    st.cert_resolver = None;
    let d = doc(&build(&[app.clone()], &st, &PortTable::default()));
    assert_eq!(
        at(&d, &["http", "routers", "myapp-2816-auto", "tls"]),
        &Y::Mapping(Default::default())
    );

    // Custom host template.
    let mut st = settings();
    st.host_template = "{service}.r{network_id}.{base_domain}".into();
    let d = doc(&build(&[app.clone()], &st, &PortTable::default()));
    assert_eq!(
        s(at(&d, &["http", "routers", "myapp-2816-auto", "rule"])),
        "Host(`myapp.r2816.example.com`)"
    );

    // No base domain / turned off: nothing, and the note says why.
    let mut st = settings();
    st.base_domain = None;
    let snap = build(&[app.clone()], &st, &PortTable::default());
    assert_eq!(snap.routes_yaml, "{}\n");
    assert!(!snap.auto_routes_enabled);
    assert!(snap.auto_routes_note.unwrap().contains("base domain"));
    let mut st = settings();
    st.auto_routes = false;
    let snap = build(&[app], &st, &PortTable::default());
    assert_eq!(snap.routes_yaml, "{}\n");
    assert!(snap.auto_routes_note.unwrap().contains("off"));
}

#[test]
fn example_mail_server_tcp() {
    let mail = container(
        2816,
        "mail-server",
        0,
        &[
            ENABLE,
            ("traefik.tcp.routers.mail-smtp.entrypoints", "tcp-25"),
            ("traefik.tcp.routers.mail-smtp.rule", "HostSNI(`*`)"),
            ("traefik.tcp.routers.mail-smtp.service", "mail-smtp"),
            (
                "traefik.tcp.services.mail-smtp.loadbalancer.server.port",
                "25",
            ),
            ("traefik.tcp.routers.mail-imaps.entrypoints", "tcp-993"),
            (
                "traefik.tcp.routers.mail-imaps.rule",
                "HostSNI(`mail.example.com`)",
            ),
            ("traefik.tcp.routers.mail-imaps.tls.passthrough", "true"),
            ("traefik.tcp.routers.mail-imaps.service", "mail-imaps"),
            (
                "traefik.tcp.services.mail-imaps.loadbalancer.server.port",
                "993",
            ),
        ],
    );
    let snap = run(&[mail]);
    assert!(
        snap.rejected.is_empty() && snap.conflicts.is_empty(),
        "{snap:?}"
    );
    let d = doc(&snap);
    assert_eq!(
        at(&d, &["http"]),
        &Y::Null,
        "TCP-only container gets no HTTP part"
    );
    let smtp = at(&d, &["tcp", "routers", "mail-smtp-2816"]);
    assert_eq!(s(at(smtp, &["rule"])), "HostSNI(`*`)");
    assert_eq!(s(at(smtp, &["entryPoints", "0"])), "tcp-25");
    assert_eq!(s(at(smtp, &["service"])), "mail-smtp-2816");
    let imaps = at(&d, &["tcp", "routers", "mail-imaps-2816"]);
    assert_eq!(at(imaps, &["tls", "passthrough"]).as_bool(), Some(true));
    assert_eq!(
        s(at(
            &d,
            &[
                "tcp",
                "services",
                "mail-imaps-2816",
                "loadBalancer",
                "servers",
                "0",
                "address"
            ]
        )),
        "127.0.11.2:993"
    );
    assert_eq!(snap.routes_json["tcp"].as_array().unwrap().len(), 2);
}

#[test]
fn example_chained_middlewares_and_buffering() {
    let app = container(
        2880,
        "myapp",
        0,
        &[
            ENABLE,
            (
                "traefik.http.routers.myapp.rule",
                "Host(`myapp.example.com`)",
            ),
            ("traefik.http.services.myapp.loadbalancer.server.port", "80"),
            (
                "traefik.http.middlewares.myapp-hsts.headers.stsSeconds",
                "15768000",
            ),
            (
                "traefik.http.middlewares.myapp-hsts.headers.stsIncludeSubdomains",
                "true",
            ),
            (
                "traefik.http.middlewares.myapp-hsts.headers.stsPreload",
                "true",
            ),
            (
                "traefik.http.middlewares.myapp-buffering.buffering.maxRequestBodyBytes",
                "536870912",
            ),
            (
                "traefik.http.middlewares.both.chain.middlewares",
                "myapp-hsts, myapp-buffering@docker, auth@file",
            ),
            (
                "traefik.http.routers.myapp.middlewares",
                "myapp-hsts,myapp-buffering",
            ),
        ],
    );
    let d = doc(&run(&[app]));
    let r = at(&d, &["http", "routers", "myapp-2880", "middlewares"]);
    assert_eq!(s(at(r, &["0"])), "myapp-hsts-2880");
    assert_eq!(s(at(r, &["1"])), "myapp-buffering-2880");
    assert_eq!(
        at(
            &d,
            &[
                "http",
                "middlewares",
                "myapp-buffering-2880",
                "buffering",
                "maxRequestBodyBytes"
            ]
        )
        .as_i64(),
        Some(536870912)
    );
    let chain = at(
        &d,
        &["http", "middlewares", "both-2880", "chain", "middlewares"],
    );
    assert_eq!(s(at(chain, &["0"])), "myapp-hsts-2880");
    assert_eq!(s(at(chain, &["1"])), "myapp-buffering-2880");
    assert_eq!(
        s(at(chain, &["2"])),
        "auth@file",
        "references to other providers are kept"
    );
    assert_eq!(
        at(
            &d,
            &[
                "http",
                "middlewares",
                "myapp-hsts-2880",
                "headers",
                "stsPreload"
            ]
        )
        .as_bool(),
        Some(true)
    );
}

#[test]
fn example_swarm_style_published_ports() {
    let web = container(2816, "web", 0, &[("rediacc.tcp_ports", "8080:80, 5432")]);
    let dns = container(2816, "dns", 1, &[("rediacc.udp_ports", "53:53")]);
    let dynamic = container(2816, "api", 2, &[("rediacc.tcp_ports", "0:80")]);
    let mut st = settings();
    st.tcp_entrypoint_ports.insert(8080);
    let snap = build(&[web, dns, dynamic], &st, &PortTable::default());
    assert!(snap.conflicts.is_empty(), "{:?}", snap.conflicts);
    let d = doc(&snap);
    let r = at(&d, &["tcp", "routers", "web-2816-tcp-8080-fwd"]);
    assert_eq!(s(at(r, &["entryPoints", "0"])), "tcp-8080");
    assert_eq!(s(at(r, &["rule"])), "HostSNI(`*`)");
    assert_eq!(
        s(at(
            &d,
            &[
                "tcp",
                "services",
                "web-2816-tcp-8080-fwd",
                "loadBalancer",
                "servers",
                "0",
                "address"
            ]
        )),
        "127.0.11.2:80"
    );
    assert_eq!(
        s(at(
            &d,
            &[
                "tcp",
                "services",
                "web-2816-tcp-5432-fwd",
                "loadBalancer",
                "servers",
                "0",
                "address"
            ]
        )),
        "127.0.11.2:5432"
    );
    let u = at(&d, &["udp", "routers", "dns-2816-udp-53-fwd"]);
    assert_eq!(s(at(u, &["entryPoints", "0"])), "udp-53");
    assert_eq!(at(u, &["rule"]), &Y::Null, "UDP routers have no rule");
    assert_eq!(
        s(at(
            &d,
            &[
                "udp",
                "services",
                "dns-2816-udp-53-fwd",
                "loadBalancer",
                "servers",
                "0",
                "address"
            ]
        )),
        "127.0.11.3:53"
    );
    // `0:80` → the first port of the dynamic range.
    assert_eq!(
        s(at(
            &d,
            &[
                "tcp",
                "routers",
                "api-2816-tcp-10000-fwd",
                "entryPoints",
                "0"
            ]
        )),
        "tcp-10000"
    );
    let table: Vec<(String, u16, u32, String, u16)> = snap
        .ports
        .allocations
        .iter()
        .map(|a| {
            (
                a.protocol.clone(),
                a.port,
                a.network_id,
                a.service.clone(),
                a.target,
            )
        })
        .collect();
    assert_eq!(
        table,
        vec![
            ("tcp".into(), 5432, 2816, "web".into(), 5432),
            ("tcp".into(), 8080, 2816, "web".into(), 80),
            ("tcp".into(), 10000, 2816, "api".into(), 80),
            ("udp".into(), 53, 2816, "dns".into(), 53),
        ]
    );
    assert!(
        snap.ports
            .allocations
            .iter()
            .all(|a| a.entrypoint == format!("{}-{}", a.protocol, a.port))
    );
}

#[test]
fn unregistered_published_port_falls_back_to_the_dynamic_range() {
    let web = container(2816, "web", 0, &[("rediacc.tcp_ports", "8080:80")]);
    let snap = run(&[web]);
    assert_eq!(snap.ports.allocations[0].port, 10000);
    assert_eq!(snap.ports.allocations[0].preferred, 8080);
    assert!(
        snap.conflicts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no entrypoint `tcp-8080`")
    );
    // UDP has no dynamic range: reported, not forwarded.
    let dns = container(2816, "dns", 0, &[("rediacc.udp_ports", "5353:53")]);
    let snap = run(&[dns]);
    assert!(snap.ports.allocations.is_empty());
    assert_eq!(snap.routes_yaml, "{}\n");
    assert!(
        snap.conflicts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("UDP has no dynamic range")
    );
}
