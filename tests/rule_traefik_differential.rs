//! `routing::rule` against the real Traefik v3: one Traefik with a file provider holding many
//! routers, read back through its API and probed with requests.
//! - Grammar and matcher table: every matcher, in every spelling Traefik registers and in
//!   spellings it does not, with 0 to 3 arguments, in HTTP/TCP and v3/v2: renet's parser
//!   accepts exactly what Traefik builds a router from. Odd layouts (comments, escapes, line
//!   breaks): whatever renet accepts, Traefik parses too.
//! - Host semantics: for rules renet confines, every Host header Traefik routes to the router
//!   lies in the scopes `host_scopes` returned, and the exact hosts really are routed; for the
//!   attacks renet refuses, Traefik really routes a foreign host to them. The same for TCP
//!   routers and the SNI of TLS handshakes (curl; passthrough to counting backends).

mod route_server_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use renet::routing::rule::{self, HostScope, Protocol, Syntax};
use route_server_support::*;
use serde_json::{Value, json};

/// A router under test.
struct Case {
    name: String,
    protocol: Protocol,
    syntax: Syntax,
    rule: String,
}

/// One Traefik serving `cases` (HTTP routers on `web`, TCP routers on `tcp`).
struct Lab {
    _dir: tempfile::TempDir,
    traefik: Traefik,
    web_port: u16,
}

impl Lab {
    fn start(cases: &[Case], http_rule: impl Fn(&Case) -> String) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let (web_port, tcp_port, api_port) = (free_port(), free_port(), free_port());
        let dynamic = dir.path().join("dynamic.yaml");
        let mut http_routers = serde_json::Map::new();
        let mut tcp_routers = serde_json::Map::new();
        for case in cases {
            let syntax = match case.syntax {
                Syntax::V3 => "v3",
                Syntax::V2 => "v2",
            };
            match case.protocol {
                Protocol::Http => http_routers.insert(
                    case.name.clone(),
                    json!({"rule": http_rule(case), "ruleSyntax": syntax, "entryPoints": ["web"],
                           "service": "noop@internal", "middlewares": ["marker"]}),
                ),
                Protocol::Tcp => tcp_routers.insert(
                    case.name.clone(),
                    json!({"rule": case.rule, "ruleSyntax": syntax, "entryPoints": ["tcp"],
                           "service": "sink", "tls": {"passthrough": true}}),
                ),
            };
        }
        // YAML is a superset of JSON, and JSON escapes keep every rule byte exact.
        let mut config = json!({
            "http": {
                "routers": http_routers,
                "middlewares": {"marker": {"redirectRegex": {
                    "regex": ".*", "replacement": "http://matched.invalid/"}}},
            },
        });
        // Traefik refuses an empty `routers` map.
        if !tcp_routers.is_empty() {
            config["tcp"] = json!({
                "routers": tcp_routers,
                "services": {"sink": {"loadBalancer": {"servers": [{"address": "127.0.0.1:9"}]}}},
            });
        }
        std::fs::write(&dynamic, config.to_string()).unwrap();
        let static_yaml = format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:{web_port}\"\n  tcp:\n    address: \
             \"127.0.0.1:{tcp_port}\"\n  traefik:\n    address: \"127.0.0.1:{api_port}\"\n\
             api:\n  insecure: true\nproviders:\n  file:\n    filename: \"{}\"\nlog:\n  level: \
             ERROR\n",
            dynamic.display()
        );
        let traefik = Traefik::start(dir.path(), api_port, &static_yaml);
        let lab = Lab {
            _dir: dir,
            traefik,
            web_port,
        };
        let expected = cases.len();
        wait_for(
            "Traefik to load the routers",
            Duration::from_secs(30),
            || {
                let loaded = lab.routers(Protocol::Http).len() + lab.routers(Protocol::Tcp).len();
                (loaded >= expected).then_some(()).ok_or_else(|| {
                    format!(
                        "{loaded} of {expected} routers loaded; Traefik's log:\n{}",
                        lab.traefik.log_text()
                    )
                })
            },
        );
        lab
    }

    /// The file provider's routers of one protocol, by name (without `@file`).
    fn routers(&self, protocol: Protocol) -> Vec<(String, Value)> {
        let section = match protocol {
            Protocol::Http => "routers",
            Protocol::Tcp => "tcpRouters",
        };
        let raw = self.traefik.rawdata().unwrap_or(Value::Null);
        raw[section]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, router)| {
                Some((name.strip_suffix("@file")?.to_string(), router.clone()))
            })
            .collect()
    }

    /// Traefik's verdict on every router: its errors, or None when it built the router.
    fn verdicts(&self) -> BTreeMap<String, Option<String>> {
        [Protocol::Http, Protocol::Tcp]
            .into_iter()
            .flat_map(|p| self.routers(p))
            .map(|(name, router)| {
                let errors: Vec<String> = router["error"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e.as_str().unwrap_or_default().to_string())
                    .collect();
                (name, (!errors.is_empty()).then(|| errors.join("; ")))
            })
            .collect()
    }

    /// Whether Traefik routes a request for `host` on `path` to one of the routers.
    fn routes(&self, host: &str, path: &str) -> bool {
        let (code, body) = http_get(&format!("127.0.0.1:{}", self.web_port), path, Some(host))
            .unwrap_or_else(|e| panic!("GET {path} for {host}: {e}"));
        match code {
            302 => true,
            // 400: Go's server refuses the Host header before any router sees it.
            404 | 400 => false,
            other => panic!("GET {path} for {host}: unexpected {other}: {body}"),
        }
    }
}

/// A value Traefik accepts for one argument of `matcher`.
fn valid_arg(matcher: &str) -> &'static str {
    match matcher {
        "Host" | "HostHeader" | "HostSNI" => "a.example.com",
        "HostRegexp" | "HostSNIRegexp" => "a.example.com",
        "Method" => "GET",
        "ClientIP" => "127.0.0.1",
        "Path" | "PathPrefix" | "PathRegexp" => "/x",
        "Query" => "a=b",
        "ALPN" => "h2",
        _ => "X-A",
    }
}

const HTTP_NAMES: &[&str] = &[
    "ClientIP",
    "Method",
    "Host",
    "HostHeader",
    "HostRegexp",
    "Path",
    "PathRegexp",
    "PathPrefix",
    "Header",
    "HeaderRegexp",
    "Headers",
    "HeadersRegexp",
    "Query",
    "QueryRegexp",
];
const TCP_NAMES: &[&str] = &["ALPN", "ClientIP", "HostSNI", "HostSNIRegexp"];

/// Spellings to try: Traefik's four, and casings it does not register.
fn spellings(name: &str) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let title = format!("{}{}", &lower[..1].to_ascii_uppercase(), &lower[1..]);
    let mut swapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    if swapped == name.to_ascii_uppercase() {
        swapped = format!("{}{}", &lower[..lower.len() - 1], &name[name.len() - 1..]);
    }
    let camel_lower = format!("{}{}", &lower[..1], &name[1..]);
    let set: BTreeSet<String> = [
        name.to_string(),
        lower,
        name.to_ascii_uppercase(),
        title,
        swapped,
        camel_lower,
    ]
    .into();
    set.into_iter().collect()
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Tcp => "tcp",
    }
}

#[test]
fn matcher_spellings_and_arities_agree_with_traefik() {
    let mut cases = Vec::new();
    for (protocol, names) in [(Protocol::Http, HTTP_NAMES), (Protocol::Tcp, TCP_NAMES)] {
        for syntax in [Syntax::V3, Syntax::V2] {
            for name in names {
                for spelling in spellings(name) {
                    for count in 0..=3 {
                        let args = vec![format!("`{}`", valid_arg(name)); count].join(", ");
                        cases.push(Case {
                            name: format!("m{}", cases.len()),
                            protocol,
                            syntax,
                            rule: format!("{spelling}({args})"),
                        });
                    }
                }
            }
        }
    }
    let lab = Lab::start(&cases, |c| c.rule.clone());
    let verdicts = lab.verdicts();
    let mut disagreements = Vec::new();
    for case in &cases {
        let ours = rule::parse(&case.rule, case.protocol, case.syntax);
        let theirs = verdicts[&case.name].clone();
        if ours.is_ok() != theirs.is_none() {
            disagreements.push(format!(
                "{} {:?} `{}`: renet {:?}, Traefik {:?}",
                protocol_name(case.protocol),
                case.syntax,
                case.rule,
                ours.map(|_| "accepts").map_err(|e| e.to_string()),
                theirs.unwrap_or_else(|| "accepts".into())
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} rules judged differently:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}

/// Layouts renet accepts must parse the same in Traefik (host semantics are checked below).
const LAYOUTS: &[&str] = &[
    "Host(`a.example.com`) ||\n Path(`/x`)",
    "Host (`a.example.com`)",
    "Host/* c */(`a.example.com`) // end",
    "Host(\n`a.example.com`,\n)",
    "!\n!Host(`a.example.com`)",
    "( ( Host(`a.example.com`) ) )",
    "Host(\"\\x61.example.com\")",
    "Host(\"\\141.\\u0065xample.\\U00000063om\")",
    "Host(`a.example.com`) && !(Path(`/a`) || Path(`/b`)) && Method(`GET`)",
    "Path(\"/\\u00e9\")",
    "Path(`/a\r`)",
    "Host(`a.example.com`)\n\n",
    "Host(`a.example.com`) /* a\nb */",
];

/// What renet refuses in grammar while Traefik accepts (refusing more is safe).
const STRICTER_THAN_TRAEFIK: &[&str] =
    &["Host(`a.example.com`...)", "\u{feff}Host(`a.example.com`)"];

/// What both refuse.
const BOTH_REFUSE: &[&str] = &[
    "Host(`a.example.com`)\n|| Path(`/x`)",
    "Host\n(`a.example.com`)",
    "Host(`a.example.com`\n)",
    "Host(`a.example.com`) /* a\nb */ || Path(`/x`)",
    "Host(`a.example.com`);",
    "Host(`a.example.com`) Path(`/x`)",
    "Host('a')",
    "Host(1)",
    "Host(\"\\q\")",
    "Host(\"\\xff\")",
    "Host(`a.example.com`) & Path(`/x`)",
    "Host(`a.example.com`) == Path(`/x`)",
    "Host.x(`a.example.com`)",
    "Host(`a`)(`b`)",
    "(Host)(`a.example.com`)",
    "Host(``)",
    "Host(Path(`/x`))",
];

#[test]
fn rule_layouts_agree_with_traefik() {
    let mut cases = Vec::new();
    for (group, rules) in [
        ("layout", LAYOUTS),
        ("stricter", STRICTER_THAN_TRAEFIK),
        ("both", BOTH_REFUSE),
    ] {
        for rule in rules {
            cases.push((
                group,
                Case {
                    name: format!("l{}", cases.len()),
                    protocol: Protocol::Http,
                    syntax: Syntax::V3,
                    rule: rule.to_string(),
                },
            ));
        }
    }
    let plain: Vec<Case> = cases
        .iter()
        .map(|(_, c)| Case {
            name: c.name.clone(),
            protocol: c.protocol,
            syntax: c.syntax,
            rule: c.rule.clone(),
        })
        .collect();
    let lab = Lab::start(&plain, |c| c.rule.clone());
    let verdicts = lab.verdicts();
    for (group, case) in &cases {
        let ours = rule::parse(&case.rule, Protocol::Http, Syntax::V3);
        let theirs = &verdicts[&case.name];
        let expected = match *group {
            "layout" => (true, true),
            "stricter" => (false, true),
            _ => (false, false),
        };
        assert_eq!(
            (ours.is_ok(), theirs.is_none()),
            expected,
            "{:?}: renet {ours:?}, Traefik {theirs:?}",
            case.rule
        );
    }
}

/// Host rules renet confines, in both syntaxes.
const CONFINED: &[(Syntax, &str)] = &[
    (Syntax::V3, "Host(`example.com`)"),
    (Syntax::V3, "host(`Example.COM.`)"),
    (Syntax::V3, "HOST(\"\\x65xample.com\")"),
    (Syntax::V3, "Host(`*.example.com`)"),
    (Syntax::V3, r"Hostregexp(`^[a-z]+\.example\.com$`)"),
    (Syntax::V3, r"HostRegexp(`\.example\.com$`)"),
    (Syntax::V3, r"HostRegexp(`(?i)^(?:www\.)?Example\.com$`)"),
    (
        Syntax::V3,
        r"HostRegexp(`^[a-z]+\.a\.example$|^[0-9]+\.b\.example$`)",
    ),
    (Syntax::V3, r"HostRegexp(`^(a|b)\.example\.com\.?$`)"),
    (Syntax::V3, r"HostRegexp(`^(?:[a-z]+\.)?example\.com$`)"),
    (Syntax::V3, r"HostRegexp(`(?:^|\.)example\.com$`)"),
    (Syntax::V3, "!Path(`/nope`) && Host(`example.com`)"),
    (Syntax::V3, "Host(`a.example.com`) || Host(`b.example.com`)"),
    (Syntax::V3, "!(!Host(`a.example.com`) || Method(`POST`))"),
    (Syntax::V2, "Host(`example.com`, `www.example.com`)"),
    (Syntax::V2, "HostHeader(`Example.com.`)"),
    (Syntax::V2, "HostRegexp(`{sub:[a-z]+}.example.com`)"),
    (Syntax::V2, "HostRegexp(`{sub}.example.com`, `example.com`)"),
];

/// Rules renet refuses, and a host outside any name they spell that Traefik routes to them.
const ATTACKS: &[(Syntax, &str, &str)] = &[
    (
        Syntax::V3,
        "Host(`a.example.com`) || PathPrefix(`/`)",
        "victim.org",
    ),
    (
        Syntax::V3,
        "Host(`a.example.com`) || !Host(`b.example.com`)",
        "victim.org",
    ),
    (
        Syntax::V3,
        "Host(`a.example.com`) || ClientIP(`127.0.0.1`)",
        "victim.org",
    ),
    (
        Syntax::V3,
        r"HostRegexp(`[a-z]+\.example\.com`)",
        "a.example.com.victim.org",
    ),
    (
        Syntax::V3,
        r"HostRegexp(`^[a-z]*example\.com$`)",
        "victimexample.com",
    ),
    (Syntax::V3, "HostRegexp(`.*`)", "victim.org"),
    (Syntax::V3, "Host(`*`)", "victim.org"),
    (Syntax::V2, "HostRegexp(`{sub:.*}`)", "victim.org"),
    (
        Syntax::V2,
        "HostRegexp(`{sub:[a-z]+}example.com`)",
        "victimexample.com",
    ),
];

const PROBES: &[&str] = &[
    "example.com",
    "Example.COM",
    "example.com.",
    "example.com:8080",
    "www.example.com",
    "a.example.com",
    "b.example.com",
    "A.Example.Com.",
    "x.y.example.com",
    "x.a.example",
    "1.b.example",
    "x.b.example",
    ".example.com",
    "evilexample.com",
    "example.com.evil.org",
    "a.example.com.evil.org",
    "victim.org",
    "example.org",
    "com",
];

/// Whether `host` (a Host header) lies in `scopes`: port dropped, lower case, no trailing dots.
fn in_scopes(host: &str, scopes: &BTreeSet<HostScope>) -> bool {
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let host = host.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    scopes.iter().any(|scope| match scope {
        HostScope::Any => true,
        HostScope::Exact(name) => host == name,
        HostScope::Suffix(domain) => host.ends_with(&format!(".{domain}")),
    })
}

#[test]
fn traefik_routes_only_hosts_inside_the_scopes() {
    let mut cases = Vec::new();
    let mut scopes = Vec::new();
    for (syntax, rule) in CONFINED {
        let expr = rule::parse(rule, Protocol::Http, *syntax).unwrap_or_else(|e| panic!("{e}"));
        let s = rule::host_scopes(&expr, Protocol::Http).unwrap_or_else(|e| panic!("{e}"));
        scopes.push(s);
        cases.push(Case {
            name: format!("c{}", cases.len()),
            protocol: Protocol::Http,
            syntax: *syntax,
            rule: rule.to_string(),
        });
    }
    for (syntax, rule, _) in ATTACKS {
        let refused = rule::parse(rule, Protocol::Http, *syntax)
            .map_err(|e| e.to_string())
            .and_then(|expr| rule::host_scopes(&expr, Protocol::Http));
        assert!(refused.is_err(), "{rule} must be refused, got {refused:?}");
        cases.push(Case {
            name: format!("c{}", cases.len()),
            protocol: Protocol::Http,
            syntax: *syntax,
            rule: rule.to_string(),
        });
    }
    // The path selects one router; the host part keeps the rule's meaning.
    let lab = Lab::start(&cases, |c| {
        format!("({}) && PathPrefix(`/{}/`)", c.rule, c.name)
    });
    let verdicts = lab.verdicts();
    for case in &cases {
        assert_eq!(verdicts[&case.name], None, "{}", case.rule);
    }
    for (case, scopes) in cases.iter().zip(&scopes) {
        let path = format!("/{}/", case.name);
        for host in PROBES {
            if lab.routes(host, &path) {
                assert!(
                    in_scopes(host, scopes),
                    "Traefik routes {host} to `{}`, outside {scopes:?}",
                    case.rule
                );
            }
        }
        for scope in scopes {
            if let HostScope::Exact(name) = scope {
                assert!(
                    lab.routes(name, &path),
                    "`{}` should route {name}",
                    case.rule
                );
            }
        }
    }
    for (case, (_, rule, foreign)) in cases[CONFINED.len()..].iter().zip(ATTACKS) {
        assert!(
            lab.routes(foreign, &format!("/{}/", case.name)),
            "Traefik does not route {foreign} to `{rule}`: the refusal has no attack behind it"
        );
    }
}

/// Pieces of rules, valid on their own, joined at random into mostly broken and some valid
/// rules.
const FRAGMENTS: &[&str] = &[
    "Host(`a.example.com`)",
    "host(\"\\x62.example.com\")",
    "HOST(`*.example.com`)",
    r"HostRegexp(`^[a-z]+\.example\.com$`)",
    r"Hostregexp(`\.example\.com$`)",
    "HostRegexp(`example`)",
    "PathPrefix(`/`)",
    "Method(`GET`)",
    "Method(`POST`)",
    "Host",
    "(`a.example.com`)",
    "(",
    ")",
    " && ",
    " || ",
    "&&",
    "||",
    "!",
    " ",
    "\n",
    "\t",
    "/* c */",
    "/* a\nb */",
    "// c\n",
    ",",
    "`x`",
];

/// A deterministic xorshift generator (no shared state with other tests).
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn random_rules_agree_with_traefik() {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    let mut seen = BTreeSet::new();
    while accepted.len() < 150 || refused.len() < 150 {
        let len = 1 + rng.below(9);
        let text: String = (0..len)
            .map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())])
            .collect();
        if !seen.insert(text.clone()) {
            continue;
        }
        // The path selects the router; judged as Traefik gets it, wrapping included.
        let name = format!("x{}", seen.len());
        let rule = format!("({text}) && PathPrefix(`/{name}/`)");
        let ok = rule::parse(&rule, Protocol::Http, Syntax::V3).is_ok();
        let bucket = if ok { &mut accepted } else { &mut refused };
        if bucket.len() < 150 {
            bucket.push(Case {
                name,
                protocol: Protocol::Http,
                syntax: Syntax::V3,
                rule,
            });
        }
    }
    let cases: Vec<Case> = accepted.into_iter().chain(refused).collect();
    let lab = Lab::start(&cases, |c| c.rule.clone());
    let verdicts = lab.verdicts();
    let mut stricter = Vec::new();
    for case in &cases {
        let ours = rule::parse(&case.rule, Protocol::Http, Syntax::V3);
        let theirs = &verdicts[&case.name];
        match (&ours, theirs) {
            (Ok(_), Some(error)) => panic!("renet accepts {:?}, Traefik: {error}", case.rule),
            (Err(e), None) => stricter.push(format!("{:?}: {e}", case.rule)),
            _ => {}
        }
        let Ok(expr) = ours else { continue };
        let Ok(scopes) = rule::host_scopes(&expr, Protocol::Http) else {
            continue;
        };
        for host in PROBES {
            if lab.routes(host, &format!("/{}/", case.name)) {
                assert!(
                    in_scopes(host, &scopes),
                    "Traefik routes {host} to {:?}, outside {scopes:?}",
                    case.rule
                );
            }
        }
    }
    assert!(
        stricter.is_empty(),
        "renet refuses rules Traefik builds:\n{}",
        stricter.join("\n")
    );
}

/// TCP rules renet confines.
const CONFINED_TCP: &[(Syntax, &str)] = &[
    (Syntax::V3, "HostSNI(`example.com`)"),
    (Syntax::V3, "hostsni(`Example.COM.`)"),
    (Syntax::V3, "HostSNI(`*.example.com`)"),
    (Syntax::V3, r"HostSNIRegexp(`^[a-z]+\.example\.com$`)"),
    (
        Syntax::V3,
        "HostSNI(`example.com`) && !ClientIP(`10.0.0.0/8`)",
    ),
    (Syntax::V3, "HostSNI(`*`)"),
    (Syntax::V2, "HostSNI(`example.com`, `www.example.com`)"),
    (Syntax::V2, "HostSNIRegexp(`{sub:[a-z]+}.example.com`)"),
];

/// TCP rules renet refuses, and a foreign SNI Traefik routes to them.
const ATTACKS_TCP: &[(Syntax, &str, &str)] = &[
    (
        Syntax::V3,
        "HostSNI(`a.example.com`) || ClientIP(`127.0.0.1`)",
        "victim.org",
    ),
    (
        Syntax::V3,
        r"HostSNIRegexp(`[a-z]+\.example\.com`)",
        "a.example.com.victim.org",
    ),
    (
        Syntax::V3,
        r"HostSNIRegexp(`^[a-z]*example\.com$`)",
        "victimexample.com",
    ),
];

const SNI_PROBES: &[&str] = &[
    "example.com",
    "www.example.com",
    "a.example.com",
    "x.y.example.com",
    "evilexample.com",
    "a.example.com.evil.org",
    "a.example.com.victim.org",
    "victimexample.com",
    "victim.org",
];

/// A backend that counts and drops the connections Traefik forwards to it.
struct Backend {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend {
    fn start() -> Backend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        Backend { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Starts a TLS handshake with `sni` on `port` (curl; it fails, nobody answers TLS).
fn hello(sni: &str, port: u16) {
    let _ = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "3", "-o", "/dev/null", "--resolve"])
        .arg(format!("{sni}:{port}:127.0.0.1"))
        .arg(format!("https://{sni}:{port}/"))
        .output()
        .expect("run curl");
}

#[test]
fn traefik_routes_only_sni_names_inside_the_scopes() {
    let mut rules: Vec<(Syntax, &str, Option<BTreeSet<HostScope>>)> = Vec::new();
    for (syntax, text) in CONFINED_TCP {
        let expr = rule::parse(text, Protocol::Tcp, *syntax).unwrap_or_else(|e| panic!("{e}"));
        let scopes = rule::host_scopes(&expr, Protocol::Tcp).unwrap_or_else(|e| panic!("{e}"));
        rules.push((*syntax, text, Some(scopes)));
    }
    for (syntax, text, _) in ATTACKS_TCP {
        let verdict = rule::parse(text, Protocol::Tcp, *syntax)
            .map_err(|e| e.to_string())
            .and_then(|expr| rule::host_scopes(&expr, Protocol::Tcp));
        assert!(verdict.is_err(), "{text} must be refused, got {verdict:?}");
        rules.push((*syntax, text, None));
    }
    // One entrypoint and one backend per rule, so that rules never compete.
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let entry_ports: Vec<u16> = rules.iter().map(|_| free_port()).collect();
    let backends: Vec<Backend> = rules.iter().map(|_| Backend::start()).collect();
    let mut routers = serde_json::Map::new();
    let mut services = serde_json::Map::new();
    let mut entrypoints = String::new();
    for (i, (syntax, text, _)) in rules.iter().enumerate() {
        let syntax = if *syntax == Syntax::V2 { "v2" } else { "v3" };
        routers.insert(
            format!("t{i}"),
            json!({"rule": text, "ruleSyntax": syntax, "entryPoints": [format!("tcp{i}")],
                   "service": format!("b{i}"), "tls": {"passthrough": true}}),
        );
        services.insert(
            format!("b{i}"),
            json!({"loadBalancer": {"servers": [
                {"address": format!("127.0.0.1:{}", backends[i].port)}]}}),
        );
        entrypoints.push_str(&format!(
            "  tcp{i}:\n    address: \"127.0.0.1:{}\"\n",
            entry_ports[i]
        ));
    }
    let dynamic = dir.path().join("dynamic.yaml");
    std::fs::write(
        &dynamic,
        json!({"tcp": {"routers": routers, "services": services}}).to_string(),
    )
    .unwrap();
    let static_yaml = format!(
        "entryPoints:\n{entrypoints}  traefik:\n    address: \"127.0.0.1:{api_port}\"\napi:\n  \
         insecure: true\nproviders:\n  file:\n    filename: \"{}\"\nlog:\n  level: ERROR\n",
        dynamic.display()
    );
    let traefik = Traefik::start(dir.path(), api_port, &static_yaml);
    wait_for(
        "Traefik to load the TCP routers",
        Duration::from_secs(30),
        || {
            let raw = traefik.rawdata()?;
            let loaded = raw["tcpRouters"].as_object().map_or(0, |r| r.len());
            let healthy = raw["tcpRouters"]
                .as_object()
                .into_iter()
                .flatten()
                .all(|(_, r)| r["error"].is_null());
            (loaded == rules.len() && healthy)
                .then_some(())
                .ok_or(format!("{loaded} routers loaded: {}", raw["tcpRouters"]))
        },
    );
    for (i, (_, text, scopes)) in rules.iter().enumerate() {
        let mut routed = Vec::new();
        for sni in SNI_PROBES {
            let before = backends[i].hits();
            hello(sni, entry_ports[i]);
            if backends[i].hits() > before {
                routed.push(*sni);
            }
        }
        match scopes {
            Some(scopes) => {
                for sni in &routed {
                    assert!(
                        in_scopes(sni, scopes),
                        "Traefik routes SNI {sni} to `{text}`, outside {scopes:?}"
                    );
                }
                for scope in scopes {
                    if let HostScope::Exact(name) = scope {
                        assert!(
                            routed.contains(&name.as_str()),
                            "`{text}` should route {name}"
                        );
                    }
                }
            }
            None => {
                let (_, _, foreign) = ATTACKS_TCP.iter().find(|(_, t, _)| t == text).unwrap();
                assert!(
                    routed.contains(foreign),
                    "Traefik does not route SNI {foreign} to `{text}` (routed: {routed:?})"
                );
            }
        }
    }
}
