//! Route building (spec §6.2–§6.4, TRAEFIK-LABELS.md, EXAMPLES.md): containers in, Traefik
//! dynamic configuration out. Every published document is parsed back to check its structure.

use std::collections::BTreeMap;

use renet::addresses::NetworkId;
use renet::routing::build::{Container, Health, RouteSettings, Snapshot, build};
use renet::routing::port_allocation::{PortAllocation, PortTable};
use serde_yaml::Value as Y;

fn nid(n: u32) -> NetworkId {
    NetworkId::new(n).unwrap()
}

/// Changes a container's labels (Docker never does: this makes the container another one).
fn edit_labels(c: &mut Container, edit: impl FnOnce(&mut BTreeMap<String, String>)) {
    let mut labels = c.labels.to_map();
    edit(&mut labels);
    c.labels = std::sync::Arc::new(labels.into());
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
        labels: std::sync::Arc::new(labels.into()),
        health: Health::None,
        created: 0,
    }
}

fn settings() -> RouteSettings {
    let s = renet::host::settings::Settings {
        base_domain: Some("example.com".into()),
        public_ipv6: Some("2001:db8::1".into()),
        tcp_ports: vec![25, 993],
        ..Default::default()
    };
    RouteSettings::from_settings(&s).unwrap()
}

fn run(containers: &[Container]) -> Snapshot {
    build(containers, &settings(), &PortTable::default())
}

/// The test settings with the operator's `routing` section changed by `f`.
fn settings_with(f: impl FnOnce(&mut renet::routing::tenancy::TenancySettings)) -> RouteSettings {
    let mut s = renet::host::settings::Settings {
        base_domain: Some("example.com".into()),
        public_ipv6: Some("2001:db8::1".into()),
        tcp_ports: vec![25, 993],
        ..Default::default()
    };
    f(&mut s.routing);
    RouteSettings::from_settings(&s).unwrap()
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
    let snap = run(std::slice::from_ref(&app));
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
    let d = doc(&build(
        std::slice::from_ref(&app),
        &st,
        &PortTable::default(),
    ));
    assert_eq!(
        at(&d, &["http", "routers", "myapp-2816-auto", "tls"]),
        &Y::Mapping(Default::default())
    );

    // Custom host template.
    let mut st = settings();
    st.host_template = "{service}.r{network_id}.{base_domain}".into();
    let d = doc(&build(
        std::slice::from_ref(&app),
        &st,
        &PortTable::default(),
    ));
    assert_eq!(
        s(at(&d, &["http", "routers", "myapp-2816-auto", "rule"])),
        "Host(`myapp.r2816.example.com`)"
    );

    // No base domain / turned off: nothing, and the note says why.
    let mut st = settings();
    st.base_domain = None;
    let snap = build(std::slice::from_ref(&app), &st, &PortTable::default());
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
    // `auth@file` is an operator's object: refused unless allow-listed.
    let refused = run(std::slice::from_ref(&app));
    assert_eq!(refused.routes_yaml, "{}\n");
    assert!(rejected_reasons(&refused)[0].contains("auth@file"));
    let allowing = settings_with(|r| r.allowed_references = vec!["auth@file".into()]);
    let d = doc(&build(&[app], &allowing, &PortTable::default()));
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
        "allow-listed references to other providers are kept"
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

// ----- TRAEFIK-LABELS.md defaulting rules ----------------------------------------------------

/// One row: labels of one container (network 2816, slot 0, compose service `web`, project
/// `proj2816`), and the expected routers (name → (rule, service)) and services (name → url).
struct Row {
    what: &'static str,
    labels: &'static [(&'static str, &'static str)],
    routers: &'static [(&'static str, &'static str, &'static str)],
    services: &'static [(&'static str, &'static str)],
}

#[test]
fn traefik_http_defaults_table() {
    let rows = [
        Row {
            what: "default service, router and rule from <service>_<project>",
            labels: &[("traefik.http.services.x.loadbalancer.server.port", "80")],
            routers: &[("web-proj2816-2816", "Host(`web-proj2816`)", "x-2816")],
            services: &[("x-2816", "http://127.0.11.2:80")],
        },
        Row {
            what: "router without rule gets the default rule and the only service",
            labels: &[
                ("traefik.http.routers.r.entrypoints", "websecure"),
                ("traefik.http.services.s.loadbalancer.server.port", "8080"),
            ],
            routers: &[("r-2816", "Host(`web-proj2816`)", "s-2816")],
            services: &[("s-2816", "http://127.0.11.2:8080")],
        },
        Row {
            what: "no service label: one service named with the default name",
            labels: &[
                ("traefik.http.routers.r.rule", "Host(`a.example.com`)"),
                (
                    "traefik.http.services.web-proj2816.loadbalancer.server.port",
                    "81",
                ),
            ],
            routers: &[("r-2816", "Host(`a.example.com`)", "web-proj2816-2816")],
            services: &[("web-proj2816-2816", "http://127.0.11.2:81")],
        },
        Row {
            what: "two services and no router: no default router",
            labels: &[
                ("traefik.http.services.a.loadbalancer.server.port", "80"),
                ("traefik.http.services.b.loadbalancer.server.port", "81"),
            ],
            routers: &[],
            services: &[
                ("a-2816", "http://127.0.11.2:80"),
                ("b-2816", "http://127.0.11.2:81"),
            ],
        },
        Row {
            what: "two services: the router without service is dropped, the linked one stays",
            labels: &[
                ("traefik.http.routers.lost.rule", "Host(`l.example.com`)"),
                ("traefik.http.routers.ok.rule", "Host(`o.example.com`)"),
                ("traefik.http.routers.ok.service", "b"),
                ("traefik.http.services.a.loadbalancer.server.port", "80"),
                ("traefik.http.services.b.loadbalancer.server.port", "81"),
            ],
            routers: &[("ok-2816", "Host(`o.example.com`)", "b-2816")],
            services: &[
                ("a-2816", "http://127.0.11.2:80"),
                ("b-2816", "http://127.0.11.2:81"),
            ],
        },
        Row {
            what: "a router naming an undefined service keeps that (namespaced) name",
            labels: &[
                ("traefik.http.routers.r.rule", "Host(`u.example.com`)"),
                ("traefik.http.routers.r.service", "elsewhere"),
                ("traefik.http.services.s.loadbalancer.server.port", "80"),
            ],
            routers: &[("r-2816", "Host(`u.example.com`)", "elsewhere-2816")],
            services: &[("s-2816", "http://127.0.11.2:80")],
        },
        Row {
            what: "scheme label builds the url",
            labels: &[
                ("traefik.http.routers.r.rule", "Host(`h.example.com`)"),
                ("traefik.http.services.s.loadbalancer.server.port", "8443"),
                (
                    "traefik.http.services.s.loadbalancer.server.scheme",
                    "https",
                ),
            ],
            routers: &[("r-2816", "Host(`h.example.com`)", "s-2816")],
            services: &[("s-2816", "https://127.0.11.2:8443")],
        },
        Row {
            what: "case-insensitive keys and names; canonical output",
            labels: &[
                ("traefik.HTTP.Routers.Web.Rule", "Host(`c.example.com`)"),
                ("traefik.http.routers.web.SERVICE", "Svc"),
                ("traefik.http.services.svc.LoadBalancer.Server.Port", "82"),
            ],
            routers: &[("Web-2816", "Host(`c.example.com`)", "Svc-2816")],
            services: &[("svc-2816", "http://127.0.11.2:82")],
        },
        Row {
            what: "a TCP router and an HTTP middleware: HTTP part is built too",
            labels: &[
                ("traefik.tcp.routers.t.rule", "HostSNI(`*`)"),
                ("traefik.tcp.routers.t.entrypoints", "tcp-5432"),
                ("traefik.tcp.services.t.loadbalancer.server.port", "5432"),
                ("traefik.http.middlewares.m.headers.frameDeny", "true"),
                ("traefik.http.services.h.loadbalancer.server.port", "80"),
            ],
            routers: &[("web-proj2816-2816", "Host(`web-proj2816`)", "h-2816")],
            services: &[("h-2816", "http://127.0.11.2:80")],
        },
    ];
    for row in rows {
        let mut labels = vec![ENABLE];
        labels.extend_from_slice(row.labels);
        let snap = run(&[container(2816, "web", 0, &labels)]);
        assert!(
            snap.rejected.is_empty(),
            "{}: {:?}",
            row.what,
            snap.rejected
        );
        let d = doc(&snap);
        let routers = at(&d, &["http", "routers"]);
        let want: Vec<String> = row.routers.iter().map(|r| r.0.to_string()).collect();
        assert_eq!(keys(routers), want, "{}", row.what);
        for (name, rule, service) in row.routers {
            assert_eq!(s(at(routers, &[name, "rule"])), *rule, "{}", row.what);
            assert_eq!(s(at(routers, &[name, "service"])), *service, "{}", row.what);
        }
        let services = at(&d, &["http", "services"]);
        let want: Vec<String> = row.services.iter().map(|r| r.0.to_string()).collect();
        assert_eq!(keys(services), want, "{}", row.what);
        for (name, url) in row.services {
            let server = at(services, &[name, "loadBalancer", "servers", "0"]);
            assert_eq!(s(at(server, &["url"])), *url, "{}", row.what);
            assert_eq!(
                keys(server),
                vec!["url"],
                "{}: label-only fields removed",
                row.what
            );
        }
    }
}

#[test]
fn default_name_without_compose_labels_is_the_normalized_container_name() {
    let mut c = container(
        2816,
        "web",
        0,
        &[
            ENABLE,
            ("traefik.http.services.s.loadbalancer.server.port", "80"),
        ],
    );
    edit_labels(&mut c, |l| {
        l.remove("com.docker.compose.project");
    });
    c.name = "my_odd..name_".into();
    let d = doc(&run(&[c]));
    assert_eq!(
        s(at(&d, &["http", "routers", "my-odd-name-2816", "rule"])),
        "Host(`my-odd-name`)"
    );
}

#[test]
fn tcp_and_udp_rules() {
    // TCP router without rule is dropped; the service stays; no HTTP part.
    let c = container(
        2816,
        "db",
        0,
        &[
            ENABLE,
            ("traefik.tcp.routers.norule.entrypoints", "tcp-5432"),
            ("traefik.tcp.services.pg.loadbalancer.server.port", "5432"),
        ],
    );
    let snap = run(&[c]);
    let d = doc(&snap);
    assert_eq!(at(&d, &["tcp", "routers"]), &Y::Null);
    assert_eq!(
        s(at(
            &d,
            &[
                "tcp",
                "services",
                "pg-2816",
                "loadBalancer",
                "servers",
                "0",
                "address"
            ]
        )),
        "127.0.11.2:5432"
    );
    assert_eq!(at(&d, &["http"]), &Y::Null);
    assert!(
        snap.conflicts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("needs a rule")
    );

    // TCP router without service gets the default service (default name), UDP likewise.
    let c = container(
        2816,
        "dns",
        1,
        &[
            ENABLE,
            ("traefik.tcp.routers.t.rule", "HostSNI(`*`)"),
            ("traefik.tcp.routers.t.entrypoints", "tcp-10005"),
            (
                "traefik.tcp.services.dns-proj2816.loadbalancer.server.port",
                "53",
            ),
            ("traefik.udp.routers.u.entrypoints", "udp-53"),
            (
                "traefik.udp.services.dns-proj2816.loadbalancer.server.port",
                "53",
            ),
        ],
    );
    let d = doc(&run(&[c]));
    assert_eq!(
        s(at(&d, &["tcp", "routers", "t-2816", "service"])),
        "dns-proj2816-2816"
    );
    assert_eq!(
        s(at(&d, &["udp", "routers", "u-2816", "service"])),
        "dns-proj2816-2816"
    );
    assert_eq!(
        s(at(
            &d,
            &[
                "udp",
                "services",
                "dns-proj2816-2816",
                "loadBalancer",
                "servers",
                "0",
                "address"
            ]
        )),
        "127.0.11.3:53"
    );
    assert_eq!(at(&d, &["http"]), &Y::Null);

    // A TCP router without port anywhere: the container is dropped.
    let c = container(
        2816,
        "x",
        2,
        &[ENABLE, ("traefik.tcp.routers.t.rule", "HostSNI(`*`)")],
    );
    let snap = run(&[c]);
    assert_eq!(snap.routes_yaml, "{}\n");
    assert!(rejected_reasons(&snap)[0].contains("port is missing"));
}

/// Each row: extra labels that make Traefik refuse the container, and a word the reason
/// must contain. A healthy neighbour must be unaffected.
#[test]
fn bad_labels_drop_only_that_container() {
    let rows: &[(&[(&str, &str)], &str)] = &[
        (
            &[("traefik.http.routers.r.rul", "Host(`x`)")],
            "traefik.http.routers.r.rul",
        ),
        (
            &[
                ("traefik.http.routers.r.tls", "true"),
                ("traefik.http.routers.r.priority", "high"),
            ],
            "invalid integer",
        ),
        (
            &[("traefik.http.middlewares.m.headers.stsPreload", "yes")],
            "invalid boolean",
        ),
        (
            &[("traefik.http.middlewares.m.retry.initialInterval", "soon")],
            "invalid duration",
        ),
        (
            &[
                (
                    "traefik.http.services.s.loadbalancer.server.url",
                    "http://127.0.11.2:80",
                ),
                ("traefik.http.services.s.loadbalancer.server.port", "80"),
            ],
            "not allowed when URL is defined",
        ),
        (
            &[(
                "traefik.http.services.s.loadbalancer.server.url",
                "http://10.0.0.1:80",
            )],
            "must point at",
        ),
        (
            &[("traefik.http.routers.r.rule", "Host(`x.example.com`)")],
            "port is missing",
        ),
        (
            &[("traefik.http.services.s.loadbalancer.server.port", "http")],
            "not a port",
        ),
        (
            &[
                ("traefik.http.routers.r.service", "other-2880@http"),
                ("traefik.http.services.s.loadbalancer.server.port", "80"),
            ],
            "namespace",
        ),
        (
            &[(
                "traefik.tls.stores.default.defaultgeneratedcert.resolver",
                "le",
            )],
            "server-wide",
        ),
        (&[("traefik.enable", "yes")], "invalid boolean"),
    ];
    let good = container(
        2880,
        "good",
        0,
        &[
            ENABLE,
            ("traefik.http.routers.g.rule", "Host(`good.example.com`)"),
            ("traefik.http.services.g.loadbalancer.server.port", "80"),
        ],
    );
    let alone = run(std::slice::from_ref(&good));
    for (labels, want) in rows {
        let mut all = vec![
            ENABLE,
            ("traefik.http.routers.r.rule", "Host(`bad.example.com`)"),
        ];
        if labels
            .iter()
            .any(|(k, _)| *k == "traefik.http.routers.r.rule")
        {
            all.retain(|(k, _)| *k != "traefik.http.routers.r.rule");
        }
        all.extend_from_slice(labels);
        let bad = container(2816, "bad", 0, &all);
        let snap = run(&[bad, good.clone()]);
        assert_eq!(snap.rejected.len(), 1, "{labels:?}: {:?}", snap.rejected);
        let reason = &rejected_reasons(&snap)[0];
        assert!(reason.contains(want), "{labels:?}: {reason}");
        assert_eq!(snap.rejected[0]["container"], "proj2816-bad-1");
        assert_eq!(
            snap.routes_yaml, alone.routes_yaml,
            "{labels:?}: neighbour affected"
        );
    }
}

#[test]
fn comma_lists_booleans_and_tls_true() {
    let c = container(
        2816,
        "web",
        0,
        &[
            ENABLE,
            ("traefik.http.routers.r.rule", "Host(`l.example.com`)"),
            (
                "traefik.http.routers.r.entrypoints",
                " websecure , websecure-v6,web ",
            ),
            ("traefik.http.routers.r.tls", "true"),
            ("traefik.http.routers.off.rule", "Host(`off.example.com`)"),
            ("traefik.http.routers.off.tls", "false"),
            ("traefik.http.routers.off.tls.certresolver", "le"),
            ("traefik.http.services.s.loadbalancer.server.port", "80"),
            ("traefik.http.services.s.loadbalancer.passHostHeader", "F"),
            ("traefik.http.services.s.loadbalancer.sticky.cookie", "true"),
            (
                "traefik.http.middlewares.m.headers.customRequestHeaders.X-Foo",
                "bar",
            ),
            (
                "traefik.http.middlewares.m.headers.accessControlAllowMethods",
                "GET,OPTIONS, PUT",
            ),
        ],
    );
    let d = doc(&run(&[c]));
    let eps: Vec<&str> = at(&d, &["http", "routers", "r-2816", "entryPoints"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(eps, vec!["websecure", "websecure-v6", "web"]);
    assert_eq!(
        at(&d, &["http", "routers", "r-2816", "tls"]),
        &Y::Mapping(Default::default())
    );
    assert_eq!(at(&d, &["http", "routers", "off-2816", "tls"]), &Y::Null);
    let lb = at(&d, &["http", "services", "s-2816", "loadBalancer"]);
    assert_eq!(at(lb, &["passHostHeader"]).as_bool(), Some(false));
    assert_eq!(
        at(lb, &["sticky", "cookie"]),
        &Y::Mapping(Default::default())
    );
    let h = at(&d, &["http", "middlewares", "m-2816", "headers"]);
    assert_eq!(s(at(h, &["customRequestHeaders", "X-Foo"])), "bar");
    assert_eq!(s(at(h, &["accessControlAllowMethods", "2"])), "PUT");
}

// ----- merging across containers of one repo ------------------------------------------------

fn replica(n: u32, slot: u32, id: &str, extra: &[(&'static str, &'static str)]) -> Container {
    let mut labels = vec![
        ENABLE,
        ("traefik.http.routers.api.rule", "Host(`api.example.com`)"),
        ("traefik.http.services.api.loadbalancer.server.port", "80"),
    ];
    labels.extend_from_slice(extra);
    let mut c = container(n, &format!("api{slot}"), slot, &labels);
    c.id = id.into();
    c.name = format!("proj{n}-api-{id}");
    c
}

#[test]
fn equal_services_merge_servers_in_stable_order() {
    let a = replica(2816, 0, "aaa", &[]);
    let b = replica(2816, 1, "bbb", &[]);
    let b_again = replica(2816, 1, "ccc", &[]);
    let snap = run(&[b_again, b, a]);
    assert!(snap.conflicts.is_empty(), "{:?}", snap.conflicts);
    let d = doc(&snap);
    let servers = at(
        &d,
        &["http", "services", "api-2816", "loadBalancer", "servers"],
    )
    .as_sequence()
    .unwrap();
    let urls: Vec<&str> = servers.iter().map(|x| s(at(x, &["url"]))).collect();
    assert_eq!(
        urls,
        vec!["http://127.0.11.2:80", "http://127.0.11.3:80"],
        "deduplicated, merge order"
    );
    assert_eq!(
        snap.routes_json["http"][0]["containers"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn conflicting_services_are_removed_routers_stay() {
    let a = replica(2816, 0, "aaa", &[]);
    let b = replica(
        2816,
        1,
        "bbb",
        &[(
            "traefik.http.services.api.loadbalancer.passHostHeader",
            "false",
        )],
    );
    let snap = run(&[a, b]);
    let d = doc(&snap);
    assert_eq!(at(&d, &["http", "services"]), &Y::Null);
    assert_eq!(
        s(at(&d, &["http", "routers", "api-2816", "service"])),
        "api-2816"
    );
    assert_eq!(snap.conflicts[0]["kind"], "http service");
    assert_eq!(snap.conflicts[0]["object"], "api-2816");

    // Explicitly setting Traefik's default is not a difference.
    let a = replica(2816, 0, "aaa", &[]);
    let b = replica(
        2816,
        1,
        "bbb",
        &[(
            "traefik.http.services.api.loadbalancer.passHostHeader",
            "true",
        )],
    );
    assert!(run(&[a, b]).conflicts.is_empty());
}

#[test]
fn conflicting_routers_and_middlewares_are_removed_everywhere() {
    let a = replica(
        2816,
        0,
        "aaa",
        &[("traefik.http.middlewares.m.headers.frameDeny", "true")],
    );
    let b = replica(
        2816,
        1,
        "bbb",
        &[
            ("traefik.http.routers.api.priority", "5"),
            ("traefik.http.middlewares.m.headers.frameDeny", "false"),
        ],
    );
    let snap = run(&[a, b]);
    let d = doc(&snap);
    assert_eq!(at(&d, &["http", "routers"]), &Y::Null);
    assert_eq!(at(&d, &["http", "middlewares"]), &Y::Null);
    assert_eq!(keys(at(&d, &["http", "services"])), vec!["api-2816"]);
    let kinds: Vec<&str> = snap
        .conflicts
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["http router", "http middleware"]);
}

// ----- trust, namespacing, cross-repo conflicts ----------------------------------------------

#[test]
fn spoofed_identity_is_never_routed() {
    let auto = [("rediacc.service_port", "80")];
    let mut wrong_net = container(2816, "a", 0, &auto);
    edit_labels(&mut wrong_net, |l| {
        l.insert("rediacc.network_id".into(), "2880".into());
    });
    let mut foreign_ip = container(2816, "b", 0, &auto);
    edit_labels(&mut foreign_ip, |l| {
        l.insert("rediacc.service_ip".into(), "127.0.11.66".into());
    });
    let mut reserved_ip = container(2816, "c", 0, &auto);
    edit_labels(&mut reserved_ip, |l| {
        l.insert("rediacc.service_ip".into(), "127.0.11.1".into());
    });
    let mut no_ip = container(2816, "d", 0, &auto);
    edit_labels(&mut no_ip, |l| {
        l.remove("rediacc.service_ip");
    });
    let mut junk_ip = container(2816, "e", 0, &auto);
    edit_labels(&mut junk_ip, |l| {
        l.insert("rediacc.service_ip".into(), "localhost".into());
    });
    let mut starting = container(2816, "f", 0, &auto);
    starting.health = Health::Starting;
    let mut unhealthy = container(2816, "g", 0, &auto);
    unhealthy.health = Health::Unhealthy;
    let mut healthy = container(2816, "h", 3, &auto);
    healthy.health = Health::Healthy;
    let snap = run(&[
        wrong_net,
        foreign_ip,
        reserved_ip,
        no_ip,
        junk_ip,
        starting,
        unhealthy,
        healthy,
    ]);
    let reasons = rejected_reasons(&snap);
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    for (i, want) in [
        "disagrees",
        "outside",
        "outside",
        "missing",
        "not an IPv4",
        "starting",
        "unhealthy",
    ]
    .iter()
    .enumerate()
    {
        assert!(reasons[i].contains(want), "{i}: {}", reasons[i]);
    }
    assert_eq!(
        keys(at(&doc(&snap), &["http", "routers"])),
        vec!["h-2816-auto"]
    );
}

#[test]
fn repos_cannot_merge_or_take_over_each_others_objects() {
    let labels = [
        ENABLE,
        (
            "traefik.http.routers.web.rule",
            "Host(`same-name.example.com`)",
        ),
        ("traefik.http.services.web.loadbalancer.server.port", "80"),
        ("traefik.http.middlewares.auth.basicauth.users", "u:p"),
        ("traefik.http.routers.web.middlewares", "auth@docker"),
    ];
    let mut other = labels.to_vec();
    other[1] = ("traefik.http.routers.web.rule", "Host(`other.example.com`)");
    other[4] = ("traefik.http.routers.web.middlewares", "auth");
    let a = container(2816, "web", 0, &labels);
    let b = container(2880, "web", 0, &other);
    let snap = run(&[a, b]);
    assert!(snap.conflicts.is_empty(), "{:?}", snap.conflicts);
    let d = doc(&snap);
    assert_eq!(
        keys(at(&d, &["http", "routers"])),
        vec!["web-2816", "web-2880"]
    );
    assert_eq!(
        s(at(&d, &["http", "routers", "web-2816", "middlewares", "0"])),
        "auth-2816"
    );
    assert_eq!(
        s(at(&d, &["http", "routers", "web-2880", "middlewares", "0"])),
        "auth-2880"
    );
    let backend = |n: &str| {
        s(at(
            &d,
            &["http", "services", n, "loadBalancer", "servers", "0", "url"],
        ))
        .to_string()
    };
    assert_eq!(backend("web-2816"), "http://127.0.11.2:80");
    assert_eq!(backend("web-2880"), "http://127.0.11.66:80");
    // A label name that looks like another repo's namespaced name still gets its own suffix.
    let sneaky = container(
        2880,
        "x",
        1,
        &[
            ENABLE,
            ("traefik.http.routers.r.rule", "Host(`s.example.com`)"),
            ("traefik.http.routers.r.service", "web-2816"),
            ("traefik.http.services.s.loadbalancer.server.port", "80"),
        ],
    );
    let d = doc(&run(&[sneaky]));
    assert_eq!(
        s(at(&d, &["http", "routers", "r-2880", "service"])),
        "web-2816-2880"
    );
}

#[test]
fn host_conflicts_serve_the_earlier_claim() {
    let claim = |n: u32, host: &'static str| {
        container(
            n,
            "site",
            0,
            &[
                ENABLE,
                ("traefik.http.routers.site.rule", host),
                ("traefik.http.services.site.loadbalancer.server.port", "80"),
            ],
        )
    };
    let first = claim(2880, "Host(`shop.example.com`)");
    let second = claim(6336, "Host(`SHOP.example.com`) && PathPrefix(`/admin`)");
    // Another container of the claiming repo may use the same host (Traefik's own rules).
    let same_repo = {
        let mut c = claim(2880, "");
        edit_labels(&mut c, |l| {
            l.remove("traefik.http.routers.site.rule");
            l.insert(
                "traefik.http.routers.api.rule".into(),
                "Host(`shop.example.com`) && PathPrefix(`/api`)".into(),
            );
            l.insert("traefik.http.routers.api.service".into(), "site".into());
        });
        c.name = "proj2880-zz-1".into();
        c
    };
    for order in [
        vec![first.clone(), second.clone(), same_repo.clone()],
        vec![second.clone(), same_repo.clone(), first.clone()],
    ] {
        let snap = run(&order);
        let d = doc(&snap);
        assert_eq!(
            keys(at(&d, &["http", "routers"])),
            vec!["api-2880", "site-2880"]
        );
        assert!(snap.conflicts.is_empty(), "{:?}", snap.conflicts);
        assert_eq!(snap.refused.len(), 1, "{:?}", snap.refused);
        assert_eq!(snap.refused[0]["kind"], "http router");
        assert_eq!(snap.refused[0]["network_id"], 6336);
        assert_eq!(snap.refused[0]["owner"], 2880);
        assert!(
            snap.refused[0]["reason"]
                .as_str()
                .unwrap()
                .contains("held by network 2880")
        );
        // The first claim is recorded.
        assert_eq!(snap.hosts.hosts["shop.example.com"].network_id, 2880);
    }
    // The oldest container claims first, whatever its network ID; once recorded, the claim
    // holds even when an older container of another repository shows up later.
    let mut older = second.clone();
    older.created = -10;
    let snap = run(&[first.clone(), older.clone()]);
    assert_eq!(snap.hosts.hosts["shop.example.com"].network_id, 6336);
    let later = renet::routing::build::build_with(
        &[first.clone(), older],
        &settings(),
        &renet::routing::build::Claims {
            ports: PortTable::default(),
            hosts: run(std::slice::from_ref(&first)).hosts,
        },
    );
    assert_eq!(later.hosts.hosts["shop.example.com"].network_id, 2880);
    assert_eq!(later.refused[0]["network_id"], 6336);
    // Tier 1 and tier 2 claim hosts alike; a rule without Host() is not published.
    let auto = container(2816, "shop", 0, &[("rediacc.service_port", "80")]);
    let squatter = claim(2880, "Host(`shop-2816.example.com`)");
    let catch_all = claim(6336, "PathPrefix(`/`)");
    let snap = run(&[squatter, auto, catch_all]);
    assert_eq!(
        keys(at(&doc(&snap), &["http", "routers"])),
        vec!["shop-2816-auto"]
    );
    assert_eq!(snap.refused.len(), 2, "{:?}", snap.refused);
    // Nothing of a refused router is left behind: no service of 2880 or 6336.
    assert_eq!(
        keys(at(&doc(&snap), &["http", "services"])),
        vec!["shop-2816-auto"]
    );
}

#[test]
fn tcp_entrypoint_conflicts_across_repos() {
    let smtp = |n: u32| {
        container(
            n,
            "mail",
            0,
            &[
                ENABLE,
                ("traefik.tcp.routers.smtp.rule", "HostSNI(`*`)"),
                ("traefik.tcp.routers.smtp.entrypoints", "tcp-25"),
                ("traefik.tcp.services.smtp.loadbalancer.server.port", "25"),
            ],
        )
    };
    let snap = run(&[smtp(2880), smtp(2816)]);
    let d = doc(&snap);
    assert_eq!(keys(at(&d, &["tcp", "routers"])), vec!["smtp-2816"]);
    assert_eq!(snap.refused[0]["network_id"], 2880);
    assert_eq!(snap.refused[0]["owner"], 2816);
    // A port forward holds its port against another repo's label router.
    let fwd = container(2880, "pg", 1, &[("rediacc.tcp_ports", "5432")]);
    let label_pg = container(
        2816,
        "pg",
        1,
        &[
            ENABLE,
            ("traefik.tcp.routers.pg.rule", "HostSNI(`*`)"),
            ("traefik.tcp.routers.pg.entrypoints", "tcp-5432"),
            ("traefik.tcp.services.pg.loadbalancer.server.port", "5432"),
        ],
    );
    let previous = PortTable {
        allocations: vec![PortAllocation {
            protocol: "tcp".into(),
            port: 5432,
            entrypoint: "tcp-5432".into(),
            network_id: 2880,
            service: "pg".into(),
            target: 5432,
            preferred: 5432,
        }],
    };
    let snap = build(&[fwd.clone(), label_pg.clone()], &settings(), &previous);
    assert_eq!(
        keys(at(&doc(&snap), &["tcp", "routers"])),
        vec!["pg-2880-tcp-5432-fwd"]
    );
    // Without a previous allocation, the label router's port is not given to another repo.
    let snap = build(&[fwd, label_pg], &settings(), &PortTable::default());
    assert_eq!(
        keys(at(&doc(&snap), &["tcp", "routers"])),
        vec!["pg-2816", "pg-2880-tcp-10000-fwd"]
    );
}

// ----- port allocation -----------------------------------------------------------------------

#[test]
fn port_allocations_are_stable_and_held_while_away() {
    let a = container(2816, "db", 0, &[("rediacc.tcp_ports", "5432")]);
    let b = container(2880, "db", 0, &[("rediacc.tcp_ports", "5432")]);
    let first = run(std::slice::from_ref(&a));
    assert_eq!(first.ports.allocations[0].port, 5432);
    // b comes later: 5432 is held, b gets a dynamic port, reported.
    let second = build(&[b.clone(), a.clone()], &settings(), &first.ports);
    let port_of = |t: &PortTable, n: u32| {
        t.allocations
            .iter()
            .find(|x| x.network_id == n)
            .unwrap()
            .port
    };
    assert_eq!(port_of(&second.ports, 2816), 5432);
    assert_eq!(port_of(&second.ports, 2880), 10000);
    assert!(
        second.conflicts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("held by network 2816")
    );
    // a stops: its allocation is kept, b keeps its dynamic port (stability).
    let third = build(std::slice::from_ref(&b), &settings(), &second.ports);
    assert_eq!(third.ports, second.ports);
    assert_eq!(
        keys(at(&doc(&third), &["tcp", "routers"])),
        vec!["db-2880-tcp-10000-fwd"]
    );
    // Restart with the same state: identical.
    let again = build(&[a, b], &settings(), &third.ports);
    assert_eq!(again.ports, second.ports);
    assert_eq!(again.routes_yaml, second.routes_yaml);
}

#[test]
fn dynamic_range_exhaustion_is_reported_and_stale_ports_are_reused() {
    let mut st = settings();
    st.dynamic_range = (10000, 10001);
    st.tcp_entrypoint_ports = [10000, 10001].into_iter().collect();
    let cs: Vec<Container> = (0..3)
        .map(|i| container(2816, &format!("s{i}"), i, &[("rediacc.tcp_ports", "0:80")]))
        .collect();
    let snap = build(&cs, &st, &PortTable::default());
    assert_eq!(snap.ports.allocations.len(), 2);
    let full: Vec<_> = snap
        .conflicts
        .iter()
        .filter(|c| c["reason"].as_str().unwrap().contains("is full"))
        .collect();
    assert_eq!(full.len(), 1);
    assert_eq!(full[0]["service"], "s2");
    // s0 goes away: its stale port is reused for s2 only because the range is full.
    let snap2 = build(&cs[1..], &st, &snap.ports);
    let s2 = snap2
        .ports
        .allocations
        .iter()
        .find(|a| a.service == "s2")
        .unwrap();
    assert_eq!(s2.port, 10000);
    assert!(snap2.conflicts.is_empty());
}

// ----- determinism and the empty document ----------------------------------------------------

#[test]
fn output_is_byte_deterministic_in_any_container_order() {
    let cs = vec![
        container(
            2816,
            "web",
            0,
            &[
                ("rediacc.service_port", "80"),
                ("rediacc.tcp_ports", "0:22"),
            ],
        ),
        replica(2880, 0, "r1", &[]),
        replica(2880, 1, "r2", &[]),
        container(6336, "dns", 1, &[("rediacc.udp_ports", "53")]),
        container(
            2944,
            "mail",
            0,
            &[
                ENABLE,
                ("traefik.tcp.routers.m.rule", "HostSNI(`*`)"),
                ("traefik.tcp.routers.m.entrypoints", "tcp-25"),
                ("traefik.tcp.services.m.loadbalancer.server.port", "25"),
            ],
        ),
    ];
    let base = run(&cs);
    assert!(base.router_count >= 5, "{}", base.routes_yaml);
    let mut perm = cs.clone();
    for i in 0..cs.len() {
        perm.rotate_left(1);
        if i % 2 == 1 {
            perm.reverse();
        }
        let other = run(&perm);
        assert_eq!(other.routes_yaml, base.routes_yaml);
        assert_eq!(other.routes_json.to_string(), base.routes_json.to_string());
        assert_eq!(other.ports, base.ports);
    }
}

#[test]
fn empty_document_is_braces() {
    let snap = run(&[]);
    assert_eq!(snap.routes_yaml, "{}\n");
    assert_eq!(snap.router_count, 0);
    assert_eq!(
        snap.routes_json,
        serde_json::json!({"http": [], "tcp": [], "udp": []})
    );
    // An internal-only container also yields nothing.
    assert_eq!(
        run(&[container(2816, "postgres", 0, &[])]).routes_yaml,
        "{}\n"
    );
}

// ----- incremental building ------------------------------------------------------------------

/// A container from a small pool of shapes: tier 1, tier 2 with hosts that collide across
/// repositories, TCP forwards, a hostile rule, a bad label.
fn shaped(n: u32, slot: u32, shape: u8, generation: u8) -> Container {
    let port = (8080 + u32::from(generation % 3)).to_string();
    let host = format!("Host(`h{}.example.com`)", shape % 3);
    let mut c = match shape % 6 {
        0 => container(
            n,
            &format!("a{slot}"),
            slot,
            &[("rediacc.service_port", &port)],
        ),
        1 | 2 => container(
            n,
            &format!("w{slot}"),
            slot,
            &[
                ENABLE,
                ("traefik.http.routers.r.rule", &host),
                ("traefik.http.services.r.loadbalancer.server.port", &port),
            ],
        ),
        3 => container(
            n,
            &format!("d{slot}"),
            slot,
            &[("rediacc.tcp_ports", "5432,0:6379")],
        ),
        4 => container(
            n,
            &format!("x{slot}"),
            slot,
            &[
                ENABLE,
                (
                    "traefik.http.routers.x.rule",
                    "Host(`x.example.com`) || PathPrefix(`/`)",
                ),
                ("traefik.http.services.x.loadbalancer.server.port", &port),
            ],
        ),
        _ => container(
            n,
            &format!("b{slot}"),
            slot,
            &[ENABLE, ("traefik.http.routers.b.nosuch", "1")],
        ),
    };
    c.id = format!("{}-{slot}-{generation}", c.id);
    c.created = i64::from(generation) * 10 + i64::from(slot);
    c
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, .. Default::default() })]
    /// A long-lived builder fed random changes (start, stop, redeploy with other labels) gives
    /// exactly what a fresh full build gives, claims carried along as the route server does.
    #[test]
    fn incremental_rebuilds_equal_full_builds(
        changes in proptest::collection::vec((0u32..3, 0u32..4, 0u8..6, proptest::bool::ANY), 1..25)
    ) {
        use renet::routing::build::{Claims, RouteBuilder, build_with};
        let st = settings();
        let mut live: BTreeMap<(u32, u32), Container> = BTreeMap::new();
        let mut builder = RouteBuilder::default();
        let mut claims = Claims::default();
        for (step, (k, slot, shape, up)) in changes.into_iter().enumerate() {
            let n = 2816 + 64 * k;
            if up {
                live.insert((n, slot), shaped(n, slot, shape, step as u8));
            } else {
                live.remove(&(n, slot));
            }
            let containers: Vec<Container> = live.values().cloned().collect();
            let incremental = builder.build(&containers, &st, &claims);
            let full = build_with(&containers, &st, &claims);
            proptest::prop_assert_eq!(&incremental.routes_yaml, &full.routes_yaml);
            proptest::prop_assert_eq!(&incremental.routes_json, &full.routes_json);
            proptest::prop_assert_eq!(&incremental.rejected, &full.rejected);
            proptest::prop_assert_eq!(&incremental.refused, &full.refused);
            proptest::prop_assert_eq!(&incremental.conflicts, &full.conflicts);
            proptest::prop_assert_eq!(&incremental.ports, &full.ports);
            proptest::prop_assert_eq!(&incremental.hosts, &full.hosts);
            claims = Claims { ports: full.ports, hosts: full.hosts };
        }
    }
}
