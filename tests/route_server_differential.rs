//! Differential test: one real Traefik v3 with BOTH its own Docker provider (pointed at the
//! test daemon of network 3072) and the HTTP provider (pointed at `renet route-server`). The
//! same labelled containers are seen by both; Traefik's `/api/rawdata` must then show the same
//! routers, rules, entrypoints, middlewares and services from both providers, modulo:
//! - the provider suffix (`@docker` / `@http`),
//! - the route server's per-repo namespacing (`<name>-3072`),
//! - the server address (Traefik's Docker provider uses 127.0.0.1 for host-mode containers;
//!   the route server uses the container's service IP).
//!
//! On a mismatch the test prints every differing object from both sides, side by side.

mod route_server_support;

use std::collections::BTreeMap;
use std::time::Duration;

use route_server_support::*;
use serde_json::Value;

const NET: u32 = 3072;

/// The rawdata sections compared, and which keys of their objects name other objects.
const SECTIONS: &[&str] = &[
    "routers",
    "middlewares",
    "services",
    "tcpRouters",
    "tcpMiddlewares",
    "tcpServices",
    "udpRouters",
    "udpServices",
];

/// `name@docker` / `name-3072@http` / `name` → `name`.
fn denamespace(name: &str) -> String {
    let base = name.rsplit_once('@').map(|(b, _)| b).unwrap_or(name);
    base.strip_suffix(&format!("-{NET}"))
        .unwrap_or(base)
        .to_string()
}

/// Rewrites one rawdata object into the provider-neutral form that is compared.
fn normalize(v: &Value) -> Value {
    let mut v = v.clone();
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    // Provider bookkeeping and live probe results are not configuration.
    for k in ["provider", "serverStatus", "err"] {
        obj.remove(k);
    }
    if let Some(Value::String(s)) = obj.get_mut("service") {
        *s = denamespace(s);
    }
    for key in ["middlewares", "usedBy"] {
        if let Some(Value::Array(list)) = obj.get_mut(key) {
            let mut names: Vec<String> = list
                .iter()
                .map(|m| denamespace(m.as_str().unwrap_or_default()))
                .collect();
            if key == "usedBy" {
                names.sort();
            }
            *list = names.into_iter().map(Value::String).collect();
        }
    }
    if let Some(Value::Object(chain)) = obj.get_mut("chain")
        && let Some(Value::Array(list)) = chain.get_mut("middlewares")
    {
        for m in list.iter_mut() {
            *m = Value::String(denamespace(m.as_str().unwrap_or_default()));
        }
    }
    if let Some(Value::Object(lb)) = obj.get_mut("loadBalancer")
        && let Some(Value::Array(servers)) = lb.get_mut("servers")
    {
        for s in servers.iter_mut() {
            if let Some(Value::String(url)) = s.get_mut("url") {
                *url = mask_host(url);
            }
            if let Some(Value::String(addr)) = s.get_mut("address") {
                *addr = mask_host(addr);
            }
        }
    }
    v
}

/// `http://127.0.11.194:3000` → `http://<server>:3000`; `127.0.0.1:25` → `<server>:25`.
fn mask_host(s: &str) -> String {
    let (scheme, rest) = s.split_once("://").map_or(("", s), |(a, b)| (a, b));
    let port = rest.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}<server>:{port}")
}

/// One provider's objects: (section, neutral name) → neutral object.
fn provider_view(raw: &Value, provider: &str) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for section in SECTIONS {
        let Some(objs) = raw[section].as_object() else {
            continue;
        };
        for (name, v) in objs {
            if name.ends_with(&format!("@{provider}")) {
                out.insert((section.to_string(), denamespace(name)), normalize(v));
            }
        }
    }
    out
}

/// Every difference between the two providers' views, readable.
fn differences(raw: &Value) -> Vec<String> {
    let docker = provider_view(raw, "docker");
    let http = provider_view(raw, "http");
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<_> = docker.keys().chain(http.keys()).collect();
    for key in keys {
        let (section, name) = key;
        match (docker.get(key), http.get(key)) {
            (Some(d), Some(h)) if d == h => {}
            (Some(d), Some(h)) => out.push(format!(
                "{section} `{name}` differs:\n  docker: {d}\n  http:   {h}"
            )),
            (Some(d), None) => {
                out.push(format!("{section} `{name}` only from Docker provider: {d}"))
            }
            (None, Some(h)) => out.push(format!("{section} `{name}` only from route server: {h}")),
            (None, None) => unreachable!(),
        }
    }
    out
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[test]
fn route_server_matches_traefiks_docker_provider() {
    let _lock = exclusive();
    let sb = Sandbox::new();
    let d = Daemon::start(&sb, NET);
    let sleep = ["sleep".to_string(), "3600".to_string()];

    // EXAMPLES.md §1: web app with HSTS.
    d.run_service(
        "webapp",
        "webapp",
        0,
        &labels(&[
            ("traefik.enable", "true"),
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
        ]),
        &[],
        &sleep,
    );
    // EXAMPLES.md §5: HSTS + buffering in order, and the same as a chain middleware referred
    // to with an explicit `@docker`.
    d.run_service(
        "myapp",
        "myapp",
        1,
        &labels(&[
            ("traefik.enable", "true"),
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
                "traefik.http.middlewares.myapp-chain.chain.middlewares",
                "myapp-hsts,myapp-buffering",
            ),
            (
                "traefik.http.routers.myapp.rule",
                "Host(`myapp.example.com`)",
            ),
            ("traefik.http.routers.myapp.entrypoints", "websecure"),
            ("traefik.http.routers.myapp.tls", "true"),
            (
                "traefik.http.routers.myapp.middlewares",
                "myapp-hsts,myapp-buffering",
            ),
            (
                "traefik.http.routers.myapp-chained.rule",
                "Host(`chained.example.com`) && PathPrefix(`/upload`)",
            ),
            ("traefik.http.routers.myapp-chained.entrypoints", "web"),
            (
                "traefik.http.routers.myapp-chained.middlewares",
                "myapp-chain@docker",
            ),
            (
                "traefik.http.services.myapp.loadbalancer.server.port",
                "3001",
            ),
        ]),
        &[],
        &sleep,
    );
    // EXAMPLES.md §4: TCP forwarding and TLS passthrough.
    d.run_service(
        "mail",
        "mail-server",
        2,
        &labels(&[
            ("traefik.enable", "true"),
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
        ]),
        &[],
        &sleep,
    );
    // A container with two services, each with its own router.
    d.run_service(
        "twosvc",
        "twosvc",
        3,
        &labels(&[
            ("traefik.enable", "true"),
            ("traefik.http.services.api.loadbalancer.server.port", "8080"),
            (
                "traefik.http.services.admin.loadbalancer.server.port",
                "9090",
            ),
            (
                "traefik.http.services.admin.loadbalancer.server.scheme",
                "https",
            ),
            ("traefik.http.routers.api.rule", "Host(`api.example.com`)"),
            ("traefik.http.routers.api.service", "api"),
            ("traefik.http.routers.api.entrypoints", "web"),
            (
                "traefik.http.routers.admin.rule",
                "Host(`admin.example.com`)",
            ),
            ("traefik.http.routers.admin.service", "admin"),
            ("traefik.http.routers.admin.entrypoints", "web"),
        ]),
        &[],
        &sleep,
    );
    // Defaults: a compose container with only a port; router name and rule come from
    // `<service>_<project>`.
    d.run_service(
        "proj-plain-1",
        "plain",
        4,
        &labels(&[
            ("traefik.enable", "true"),
            ("com.docker.compose.service", "plain"),
            ("com.docker.compose.project", "proj"),
            (
                "traefik.http.services.plain-proj.loadbalancer.server.port",
                "8000",
            ),
        ]),
        &[],
        &sleep,
    );

    let rs = RouteServer::start(&sb, &["--tcp-ports", "25,993", "--auto-routes", "false"]);
    let api = free_port();
    let mut eps = String::new();
    for ep in ["web", "websecure", "websecure-v6", "tcp-25", "tcp-993"] {
        eps.push_str(&format!(
            "  {ep}:\n    address: \"127.0.0.1:{}\"\n",
            free_port()
        ));
    }
    let traefik_yaml = format!(
        "entryPoints:\n{eps}  traefik:\n    address: \"127.0.0.1:{api}\"\n\
         api:\n  insecure: true\n\
         providers:\n\
         \x20 docker:\n    endpoint: \"unix://{}\"\n    exposedByDefault: false\n\
         \x20 http:\n    endpoint: \"http://127.0.0.1:{}/routes.yaml\"\n    pollInterval: \"1s\"\n\
         log:\n  level: INFO\n",
        d.socket.display(),
        rs.port
    );
    let traefik = Traefik::start(sb.scratch.path(), api, &traefik_yaml);

    let expected_routers = [
        ("routers", "webapp"),
        ("routers", "myapp"),
        ("routers", "myapp-chained"),
        ("routers", "api"),
        ("routers", "admin"),
        ("routers", "plain-proj"),
        ("tcpRouters", "mail-smtp"),
        ("tcpRouters", "mail-imaps"),
    ];
    let outcome = wait_for_result(Duration::from_secs(30), || {
        let raw = traefik.rawdata()?;
        let (docker, http) = (provider_view(&raw, "docker"), provider_view(&raw, "http"));
        for (section, name) in expected_routers {
            let key = (section.to_string(), name.to_string());
            if !docker.contains_key(&key) || !http.contains_key(&key) {
                return Err(format!(
                    "{section} `{name}` not yet from both providers (docker: {}, http: {})",
                    docker.contains_key(&key),
                    http.contains_key(&key)
                ));
            }
        }
        let diffs = differences(&raw);
        if diffs.is_empty() {
            for ((section, name), v) in &docker {
                println!("agreed {section} `{name}`: {v}");
            }
            Ok(docker.len())
        } else {
            Err(diffs.join("\n"))
        }
    });
    match outcome {
        Ok(n) => println!("both providers agree on {n} objects"),
        Err(report) => panic!(
            "Traefik's Docker provider and the route server disagree:\n{report}\n\n\
             /routes.yaml:\n{}\n/health:\n{}",
            rs.get("/routes.yaml").unwrap_or_default(),
            rs.get("/health").unwrap_or_default()
        ),
    }
    let health = rs.json("/health");
    assert_eq!(health["rejected"], serde_json::json!([]), "{health:#}");
    assert_eq!(health["conflicts"], serde_json::json!([]), "{health:#}");
    drop(traefik);
}

/// Like `wait_for`, but hands back the last error instead of panicking, so the caller can
/// add context to the report.
fn wait_for_result<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let err = match f() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if std::time::Instant::now() > deadline {
            return Err(err);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
