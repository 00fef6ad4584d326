//! Route building: the containers discovery sees → the Traefik v3 dynamic configuration the
//! route server publishes, plus what `/routes.json`, `/health` and `/ports` report.
//! Pure: no I/O, so every rule is tested directly (spec §6.2–§6.4, TRAEFIK-LABELS.md).
//!
//! INTERFACE CONTRACT (shared by discovery/route_server and this module; keep these names):
//! `Container`, `Health`, `RouteSettings`, `Snapshot`, `build`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::addresses::NetworkId;
use crate::routing::port_allocation::{self, PortLimits, PortSpec, PortTable, RequestKey};
use crate::routing::traefik_labels::{self, Section, Value};

/// Health as the daemon reports it; Traefik routes only containers without a healthcheck or
/// healthy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// A running container found on a repo daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// The network ID of the socket it was found on: its trusted identity.
    pub network_id: NetworkId,
    pub id: String,
    /// Container name without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub health: Health,
}

/// Everything route building needs from the settings (see `settings::Settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettings {
    pub base_domain: Option<String>,
    pub host_template: String,
    pub auto_routes: bool,
    pub entrypoints: Vec<String>,
    /// None → no `tls.certResolver` on automatic routes (still `tls: {}`).
    pub cert_resolver: Option<String>,
    pub tcp_entrypoint_ports: BTreeSet<u16>,
    pub udp_entrypoint_ports: BTreeSet<u16>,
    pub dynamic_range: (u16, u16),
}

impl RouteSettings {
    pub fn from_settings(s: &crate::host::settings::Settings) -> Self {
        RouteSettings {
            base_domain: s.base_domain.clone().filter(|d| !d.is_empty()),
            host_template: s.host_template.clone(),
            auto_routes: s.auto_routes,
            entrypoints: s.effective_entrypoints(),
            cert_resolver: Some(s.cert_resolver.clone()).filter(|r| !r.is_empty()),
            tcp_entrypoint_ports: s.tcp_entrypoint_ports(),
            udp_entrypoint_ports: s.udp_entrypoint_ports(),
            dynamic_range: (s.dynamic_range[0], s.dynamic_range[1]),
        }
    }
}

/// The result of one build: published as a whole and swapped atomically.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The `/routes.yaml` body: byte-deterministic, `{}` when empty.
    pub routes_yaml: String,
    /// The `/routes.json` body (already rendered, deterministic).
    pub routes_json: serde_json::Value,
    pub router_count: usize,
    pub service_count: usize,
    pub auto_routes_enabled: bool,
    /// Why automatic routes are off, when they are (e.g. no base domain).
    pub auto_routes_note: Option<String>,
    /// Containers that are not routed at all, with the reason (spoofing, bad labels, …).
    pub rejected: Vec<serde_json::Value>,
    /// Cross-repo conflicts (Host claims, ports) and label merge conflicts.
    pub conflicts: Vec<serde_json::Value>,
    /// The port allocations after this build (persist when changed).
    pub ports: PortTable,
}

/// Labels renet compose puts on every service (spec §4) and the route server reads.
pub const LABEL_SERVICE_NAME: &str = "rediacc.service_name";
pub const LABEL_SERVICE_IP: &str = "rediacc.service_ip";
pub const LABEL_NETWORK_ID: &str = "rediacc.network_id";
pub const LABEL_SERVICE_PORT: &str = "rediacc.service_port";
pub const LABEL_TCP_PORTS: &str = "rediacc.tcp_ports";
pub const LABEL_UDP_PORTS: &str = "rediacc.udp_ports";
const LABEL_COMPOSE_SERVICE: &str = "com.docker.compose.service";
const LABEL_COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// Suffix of automatic (tier 1) object names. It ends in a letter, so it can never equal a
/// label-defined name (those end in `-<network ID>`).
const AUTO_SUFFIX: &str = "auto";
/// Suffix of port-forward object names (`rediacc.tcp_ports` / `rediacc.udp_ports`).
const FORWARD_SUFFIX: &str = "fwd";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Http,
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Obj {
    Router,
    Service,
    Middleware,
}

impl Obj {
    fn as_str(self) -> &'static str {
        match self {
            Obj::Router => "router",
            Obj::Service => "service",
            Obj::Middleware => "middleware",
        }
    }
}

fn section_map(s: &mut Section, obj: Obj) -> &mut BTreeMap<String, Value> {
    match obj {
        Obj::Router => &mut s.routers,
        Obj::Service => &mut s.services,
        Obj::Middleware => &mut s.middlewares,
    }
}

/// Who defined a published object.
#[derive(Debug, Clone)]
struct Origin {
    network_id: NetworkId,
    containers: BTreeSet<String>,
    tier: u8,
}

/// What one container contributes, already namespaced.
#[derive(Debug, Clone)]
struct Fragment {
    network_id: NetworkId,
    container: String,
    /// Traefik merges containers in the order of `<default name>-<container ID>`.
    merge_key: String,
    tier: u8,
    http: Section,
    tcp: Section,
    udp: Section,
    /// `rediacc.tcp_ports` / `rediacc.udp_ports` entries: (protocol, spec).
    ports: Vec<(&'static str, PortSpec)>,
    /// The `rediacc.service_name` (the key of port allocations).
    service: String,
    service_ip: Ipv4Addr,
}

/// The published configuration while it is being assembled.
#[derive(Debug, Default)]
struct Published {
    http: Section,
    tcp: Section,
    udp: Section,
    origins: BTreeMap<(Proto, Obj, String), Origin>,
}

impl Published {
    fn section(&mut self, p: Proto) -> &mut Section {
        match p {
            Proto::Http => &mut self.http,
            Proto::Tcp => &mut self.tcp,
            Proto::Udp => &mut self.udp,
        }
    }

    fn section_ref(&self, p: Proto) -> &Section {
        match p {
            Proto::Http => &self.http,
            Proto::Tcp => &self.tcp,
            Proto::Udp => &self.udp,
        }
    }
}

/// Traefik's `provider.Normalize`: every run of characters other than letters and digits
/// becomes `-`, leading and trailing ones are dropped.
pub fn normalize(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Traefik's default name of a container: `<service>_<project>` for a compose container,
/// else its name; normalized.
pub fn default_name(c: &Container) -> String {
    match (
        c.labels.get(LABEL_COMPOSE_SERVICE),
        c.labels.get(LABEL_COMPOSE_PROJECT),
    ) {
        (Some(service), Some(project)) => normalize(&format!("{service}_{project}")),
        _ => normalize(&c.name),
    }
}

/// The namespaced name of a label-defined object of repo `n`: `<name>-<N>`.
pub fn namespaced(name: &str, n: NetworkId) -> String {
    format!("{name}-{n}")
}

/// Rewrites a reference made inside repo `n`: plain names and `x@docker` are the repo's own
/// objects; `@internal`, `@file` and other providers are kept; `@http` would name the route
/// server's namespace (other repositories' objects) and is refused.
pub fn namespaced_ref(reference: &str, n: NetworkId) -> Result<String, String> {
    match reference.rsplit_once('@') {
        None => Ok(namespaced(reference, n)),
        Some((base, "docker")) => Ok(namespaced(base, n)),
        Some((_, "http")) => Err(format!(
            "reference `{reference}` points into the route server's own namespace, where other \
             repositories' objects live; refer to this repository's objects by their plain name"
        )),
        Some(_) => Ok(reference.to_string()),
    }
}

fn label<'a>(c: &'a Container, key: &str) -> Option<&'a str> {
    c.labels.get(key).map(String::as_str)
}

/// Spec §6.1: the network ID is the socket's; the labels must agree with it.
fn trusted_service_ip(c: &Container) -> Result<Ipv4Addr, String> {
    if let Some(v) = label(c, LABEL_NETWORK_ID) {
        match v.trim().parse::<NetworkId>() {
            Ok(n) if n == c.network_id => {}
            _ => {
                return Err(format!(
                    "label {LABEL_NETWORK_ID}={v} disagrees with the daemon it runs on \
                     (network {})",
                    c.network_id
                ));
            }
        }
    }
    let Some(v) = label(c, LABEL_SERVICE_IP) else {
        return Err(format!(
            "label {LABEL_SERVICE_IP} is missing (start it with `renet compose`)"
        ));
    };
    let ip: Ipv4Addr = v
        .trim()
        .parse()
        .map_err(|_| format!("label {LABEL_SERVICE_IP}={v} is not an IPv4 address"))?;
    if !c.network_id.contains_service_ip(ip) {
        return Err(format!(
            "label {LABEL_SERVICE_IP}={v} is outside network {}'s service addresses ({})",
            c.network_id,
            c.network_id.block_cidr()
        ));
    }
    Ok(ip)
}

fn parse_port(v: &str) -> Option<u16> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u16>().ok().filter(|p| *p > 0)
}

/// Turns one container into its namespaced contribution. `Ok(None)`: nothing to route
/// (an internal service). `Err`: not routed, with the reason.
fn fragment(
    c: &Container,
    settings: &RouteSettings,
    notes: &mut Vec<serde_json::Value>,
) -> Result<Option<Fragment>, String> {
    let ip = trusted_service_ip(c)?;
    match c.health {
        Health::Starting | Health::Unhealthy => {
            return Err(format!(
                "health is {}: only healthy containers and containers without a healthcheck are \
                 routed",
                if c.health == Health::Starting {
                    "starting"
                } else {
                    "unhealthy"
                }
            ));
        }
        Health::None | Health::Healthy => {}
    }
    let n = c.network_id;
    let service = label(c, LABEL_SERVICE_NAME)
        .or_else(|| label(c, LABEL_COMPOSE_SERVICE))
        .unwrap_or(&c.name)
        .to_string();
    let enable = match c
        .labels
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("traefik.enable"))
    {
        None => false,
        Some((k, v)) => traefik_labels::parse_bool(v).ok_or_else(|| {
            format!("label `{k}`: invalid boolean `{v}` (use true/false, 1/0, t/f)")
        })?,
    };

    let mut ports = Vec::new();
    for (key, proto) in [(LABEL_TCP_PORTS, "tcp"), (LABEL_UDP_PORTS, "udp")] {
        if let Some(v) = label(c, key) {
            for spec in
                port_allocation::parse_port_list(v).map_err(|e| format!("label {key}: {e}"))?
            {
                ports.push((proto, spec));
            }
        }
    }

    let mut frag = Fragment {
        network_id: n,
        container: c.name.clone(),
        merge_key: format!("{}-{}", default_name(c), c.id),
        tier: if enable { 2 } else { 1 },
        http: Section::default(),
        tcp: Section::default(),
        udp: Section::default(),
        ports,
        service: service.clone(),
        service_ip: ip,
    };

    if enable {
        let cfg = traefik_labels::decode(&c.labels).map_err(|e| e.to_string())?;
        let (http, tcp, udp) = traefik_defaults(c, cfg, ip, notes)?;
        frag.http = namespace_section(http, n)?;
        frag.tcp = namespace_section(tcp, n)?;
        frag.udp = namespace_section(udp, n)?;
    } else if let Some(port) = label(c, LABEL_SERVICE_PORT) {
        let port = parse_port(port)
            .ok_or_else(|| format!("label {LABEL_SERVICE_PORT}={port} is not a port (1-65535)"))?;
        if let (true, Some(domain)) = (settings.auto_routes, settings.base_domain.as_deref()) {
            let host = settings
                .host_template
                .replace("{service}", &host_label(&service))
                .replace("{network_id}", &n.to_string())
                .replace("{base_domain}", domain);
            let name = format!("{}-{n}-{AUTO_SUFFIX}", normalize(&service));
            let mut tls = Value::empty_map();
            if let Some(resolver) = &settings.cert_resolver {
                tls.set("certResolver", Value::Str(resolver.clone()));
            }
            let mut router = Value::empty_map();
            router.set("rule", Value::Str(format!("Host(`{host}`)")));
            router.set(
                "entryPoints",
                Value::str_list(settings.entrypoints.iter().cloned()),
            );
            router.set("service", Value::Str(name.clone()));
            router.set("tls", tls);
            frag.http.routers.insert(name.clone(), router);
            frag.http
                .services
                .insert(name, server_service("url", format!("http://{ip}:{port}")));
        }
    }

    let empty =
        frag.http.is_empty() && frag.tcp.is_empty() && frag.udp.is_empty() && frag.ports.is_empty();
    Ok((!empty).then_some(frag))
}

/// A host-name-safe form of a service name for automatic routes: lower case, every character
/// outside `[a-z0-9-]` becomes `-` (`db.primary` → `db-primary`).
pub fn host_label(service: &str) -> String {
    service
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `{loadBalancer: {servers: [{<field>: <address>}]}}`
fn server_service(field: &str, address: String) -> Value {
    let mut server = Value::empty_map();
    server.set(field, Value::Str(address));
    let mut lb = Value::empty_map();
    lb.set("servers", Value::List(vec![server]));
    let mut svc = Value::empty_map();
    svc.set("loadBalancer", lb);
    svc
}

/// Traefik's Docker provider, per container (`pkg/provider/docker/config.go` and
/// `pkg/provider/configuration.go`): default service, servers, default router and rule,
/// router → service linking. Errors drop the container; dropped routers are noted.
fn traefik_defaults(
    c: &Container,
    mut cfg: traefik_labels::LabelConfig,
    ip: Ipv4Addr,
    notes: &mut Vec<serde_json::Value>,
) -> Result<(Section, Section, Section), String> {
    let name = default_name(c);
    let mut note = |proto: Proto, router: &str, reason: String| {
        notes.push(serde_json::json!({
            "kind": format!("{} router dropped", proto.as_str()),
            "network_id": c.network_id,
            "object": router,
            "containers": [c.name],
            "reason": reason,
        }));
    };

    let mut tcp_or_udp = false;
    for proto in [Proto::Tcp, Proto::Udp] {
        let section = if proto == Proto::Tcp {
            &mut cfg.tcp
        } else {
            &mut cfg.udp
        };
        if section.routers.is_empty() && section.services.is_empty() {
            continue;
        }
        tcp_or_udp = true;
        if section.services.is_empty() {
            let mut svc = Value::empty_map();
            svc.set("loadBalancer", Value::empty_map());
            section.services.insert(name.clone(), svc);
        }
        for (sname, svc) in section.services.iter_mut() {
            let p = proto.as_str();
            let Some(lb) = svc.get_mut("loadBalancer") else {
                return Err(format!(
                    "{p} service `{sname}`: load-balancer is not defined (set traefik.{p}.services.{sname}.loadbalancer.server.port)"
                ));
            };
            let port = take_server_field(lb, "port");
            let port = match port.as_deref() {
                None | Some("") => {
                    return Err(format!(
                        "{p} service `{sname}`: port is missing (set traefik.{p}.services.{sname}.loadbalancer.server.port; in host mode Docker reports no ports)"
                    ));
                }
                Some(v) => parse_port(v).ok_or_else(|| {
                    format!("{p} service `{sname}`: server port `{v}` is not a port (1-65535)")
                })?,
            };
            set_server_field(lb, "address", format!("{ip}:{port}"));
        }
        let services: Vec<String> = section.services.keys().cloned().collect();
        let mut dropped = Vec::new();
        for (rname, router) in section.routers.iter_mut() {
            if proto == Proto::Tcp && router.get_str("rule").unwrap_or("").is_empty() {
                dropped.push((
                    rname.clone(),
                    "a TCP router needs a rule (e.g. HostSNI(`*`))".to_string(),
                ));
                continue;
            }
            if let Err(reason) = link_default_service(router, &services) {
                dropped.push((rname.clone(), reason));
            }
        }
        for (rname, reason) in dropped {
            section.routers.remove(&rname);
            note(proto, &rname, reason);
        }
    }

    let http = &mut cfg.http;
    if tcp_or_udp && http.is_empty() {
        return Ok((cfg.http, cfg.tcp, cfg.udp));
    }
    if http.services.is_empty() {
        let mut svc = Value::empty_map();
        svc.set("loadBalancer", Value::empty_map());
        http.services.insert(name.clone(), svc);
    }
    for (sname, svc) in http.services.iter_mut() {
        let Some(lb) = svc.get_mut("loadBalancer") else {
            return Err(format!(
                "http service `{sname}`: load-balancer is not defined (set traefik.http.services.{sname}.loadbalancer.server.port)"
            ));
        };
        let port = take_server_field(lb, "port").filter(|p| !p.is_empty());
        let scheme = take_server_field(lb, "scheme").filter(|s| !s.is_empty());
        let url = lb
            .get("servers")
            .and_then(|s| match s {
                Value::List(items) => items.first(),
                _ => None,
            })
            .and_then(|s| s.get_str("url"))
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        if let Some(url) = url {
            if port.is_some() || scheme.is_some() {
                return Err(format!(
                    "http service `{sname}`: defining scheme or port is not allowed when URL is defined (traefik.http.services.{sname}.loadbalancer.server.url)"
                ));
            }
            if url_host(&url) != Some(ip.to_string()) {
                return Err(format!(
                    "http service `{sname}`: server url `{url}` must point at this container's service IP {ip}; use loadbalancer.server.port instead"
                ));
            }
            continue;
        }
        let Some(port) = port else {
            return Err(format!(
                "http service `{sname}`: port is missing (set traefik.http.services.{sname}.loadbalancer.server.port; in host mode Docker reports no ports)"
            ));
        };
        let port = parse_port(&port).ok_or_else(|| {
            format!("http service `{sname}`: server port `{port}` is not a port (1-65535)")
        })?;
        let scheme = scheme.unwrap_or_else(|| "http".to_string());
        set_server_field(lb, "url", format!("{scheme}://{ip}:{port}"));
    }
    if http.routers.is_empty() {
        if http.services.len() > 1 {
            note(
                Proto::Http,
                &name,
                "no router label and several services: Traefik makes no default router".into(),
            );
        } else {
            http.routers.insert(name.clone(), Value::empty_map());
        }
    }
    let services: Vec<String> = http.services.keys().cloned().collect();
    let mut dropped = Vec::new();
    for (rname, router) in http.routers.iter_mut() {
        if router.get_str("rule").unwrap_or("").is_empty() {
            router.set("rule", Value::Str(format!("Host(`{name}`)")));
        }
        if let Err(reason) = link_default_service(router, &services) {
            dropped.push((rname.clone(), reason));
        }
    }
    for (rname, reason) in dropped {
        http.routers.remove(&rname);
        note(Proto::Http, &rname, reason);
    }
    Ok((cfg.http, cfg.tcp, cfg.udp))
}

/// The host of a `scheme://host[:port][/...]` URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    Some(host.to_string())
}

/// Removes a label-only field from the first server, returning its value.
fn take_server_field(lb: &mut Value, field: &str) -> Option<String> {
    match lb.get_mut("servers") {
        Some(Value::List(items)) => items
            .first_mut()
            .and_then(|s| s.remove(field))
            .and_then(|v| v.as_str().map(str::to_string)),
        _ => None,
    }
}

/// Sets a field of the first server, creating it if needed.
fn set_server_field(lb: &mut Value, field: &str, value: String) {
    if !matches!(lb.get("servers"), Some(Value::List(items)) if !items.is_empty()) {
        lb.set("servers", Value::List(vec![Value::empty_map()]));
    }
    if let Some(Value::List(items)) = lb.get_mut("servers") {
        items[0].set(field, Value::Str(value));
    }
}

/// Namespaces every name of a container's section and rewrites the references inside it.
fn namespace_section(s: Section, n: NetworkId) -> Result<Section, String> {
    let check = |name: &str| -> Result<String, String> {
        if name.contains('@') {
            return Err(format!(
                "name `{name}` contains `@`, which Traefik reserves for provider qualifiers"
            ));
        }
        Ok(namespaced(name, n))
    };
    let rewrite_list = |v: &mut Value, field: &str| -> Result<(), String> {
        if let Some(Value::List(items)) = v.get_mut(field) {
            for item in items.iter_mut() {
                if let Value::Str(r) = item {
                    *r = namespaced_ref(r, n)?;
                }
            }
        }
        Ok(())
    };
    let rewrite_str = |v: &mut Value, field: &str| -> Result<(), String> {
        if let Some(Value::Str(r)) = v.get_mut(field)
            && !r.is_empty()
        {
            *r = namespaced_ref(r, n)?;
        }
        Ok(())
    };
    let mut out = Section::default();
    for (name, mut r) in s.routers {
        rewrite_str(&mut r, "service")?;
        rewrite_list(&mut r, "middlewares")?;
        out.routers.insert(check(&name)?, r);
    }
    for (name, mut svc) in s.services {
        rewrite_list(&mut svc, "middlewares")?;
        out.services.insert(check(&name)?, svc);
    }
    for (name, mut m) in s.middlewares {
        if let Some(chain) = m.get_mut("chain") {
            rewrite_list(chain, "middlewares")?;
        }
        if let Some(errors) = m.get_mut("errors") {
            rewrite_str(errors, "service")?;
        }
        out.middlewares.insert(check(&name)?, m);
    }
    Ok(out)
}

/// Traefik's service merge: load balancers equal in everything but their servers merge, the
/// servers de-duplicated by `url`/`address`. Defaults Traefik fills in are compared as set.
fn merge_service(existing: &mut Value, other: &Value, proto: Proto) -> bool {
    let (Some(a), Some(b)) = (existing.get("loadBalancer"), other.get("loadBalancer")) else {
        return *existing == *other;
    };
    let comparable = |lb: &Value| {
        let mut lb = lb.clone();
        lb.remove("servers");
        if proto == Proto::Http {
            for (k, v) in [
                ("passHostHeader", Value::Bool(true)),
                ("strategy", Value::Str("wrr".into())),
            ] {
                if lb.get(k).is_none() {
                    lb.set(k, v);
                }
            }
            if lb.get("responseForwarding").is_none() {
                let mut rf = Value::empty_map();
                rf.set("flushInterval", Value::Str("100ms".into()));
                lb.set("responseForwarding", rf);
            }
        }
        lb
    };
    if comparable(a) != comparable(b) {
        return false;
    }
    let key = if proto == Proto::Http {
        "url"
    } else {
        "address"
    };
    let new_servers = match b.get("servers") {
        Some(Value::List(items)) => items.clone(),
        _ => Vec::new(),
    };
    let lb = existing.get_mut("loadBalancer").expect("checked above");
    if !matches!(lb.get("servers"), Some(Value::List(_))) {
        lb.set("servers", Value::List(Vec::new()));
    }
    if let Some(Value::List(servers)) = lb.get_mut("servers") {
        for s in new_servers {
            if !servers.iter().any(|x| x.get(key) == s.get(key)) {
                servers.push(s);
            }
        }
    }
    true
}

/// Quoted arguments of every `matcher(...)` in a rule (`Host`, `HostSNI`, …).
fn matcher_args(rule: &str, matcher: &str) -> Vec<String> {
    let needle = format!("{matcher}(");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = rule[from..].find(&needle) {
        let start = from + pos;
        let args = start + needle.len();
        from = args;
        if rule[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric())
        {
            continue;
        }
        let mut quote = None;
        let mut cur = String::new();
        for (i, ch) in rule[args..].char_indices() {
            match quote {
                Some(q) if ch == q => {
                    out.push(std::mem::take(&mut cur));
                    quote = None;
                }
                Some(_) => cur.push(ch),
                None if ch == '`' || ch == '"' => quote = Some(ch),
                None if ch == ')' => {
                    from = args + i;
                    break;
                }
                None => {}
            }
        }
    }
    out
}

/// The host names an HTTP rule claims: `Host(...)` lower-cased, `HostRegexp(...)` as `~re`.
fn http_host_claims(rule: &str) -> Vec<String> {
    let mut hosts: Vec<String> = matcher_args(rule, "Host")
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    hosts.extend(
        matcher_args(rule, "HostRegexp")
            .into_iter()
            .map(|r| format!("~{r}")),
    );
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The SNI names a TCP rule claims; `*` when it matches any (HostSNI(`*`), HostSNIRegexp, or
/// no HostSNI at all).
fn tcp_sni_claims(rule: &str) -> Vec<String> {
    let mut hosts: Vec<String> = matcher_args(rule, "HostSNI")
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if hosts.is_empty() || !matcher_args(rule, "HostSNIRegexp").is_empty() {
        hosts.push("*".into());
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

fn entrypoint_port(ep: &str, proto: &str) -> Option<u16> {
    ep.strip_prefix(proto)?.strip_prefix('-')?.parse().ok()
}

/// Builds the snapshot. `previous_ports` is the persisted allocation table; allocations are
/// kept stable across builds and restarts.
pub fn build(
    containers: &[Container],
    settings: &RouteSettings,
    previous_ports: &PortTable,
) -> Snapshot {
    let mut rejected = Vec::new();
    let mut conflicts = Vec::new();

    // 1. Every container on its own, in a fixed order (input order must not matter).
    let mut sorted: Vec<&Container> = containers.iter().collect();
    sorted.sort_by(|a, b| (a.network_id, &a.name, &a.id).cmp(&(b.network_id, &b.name, &b.id)));
    let mut fragments = Vec::new();
    for c in sorted {
        let mut notes = Vec::new();
        match fragment(c, settings, &mut notes) {
            Ok(Some(f)) => {
                conflicts.extend(notes);
                fragments.push(f);
            }
            Ok(None) => conflicts.extend(notes),
            Err(reason) => rejected.push(serde_json::json!({
                "network_id": c.network_id,
                "container": c.name,
                "id": c.id,
                "reason": reason,
            })),
        }
    }

    // 2. Merge, in Traefik's order (`<default name>-<id>`; repos never share names).
    fragments.sort_by(|a, b| (a.network_id, &a.merge_key).cmp(&(b.network_id, &b.merge_key)));
    let mut published = Published::default();
    let mut to_delete: BTreeSet<(Proto, Obj, String)> = BTreeSet::new();
    for frag in &fragments {
        for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
            let src = match proto {
                Proto::Http => &frag.http,
                Proto::Tcp => &frag.tcp,
                Proto::Udp => &frag.udp,
            };
            for obj in [Obj::Router, Obj::Service, Obj::Middleware] {
                let objects = match obj {
                    Obj::Router => &src.routers,
                    Obj::Service => &src.services,
                    Obj::Middleware => &src.middlewares,
                };
                for (name, value) in objects {
                    add_object(
                        &mut published,
                        &mut to_delete,
                        (proto, obj, name.clone()),
                        value.clone(),
                        frag.network_id,
                        &frag.container,
                        frag.tier,
                    );
                }
            }
        }
    }
    for key in &to_delete {
        let (proto, obj, name) = key;
        section_map(published.section(*proto), *obj).remove(name);
        let origin = published.origins.get(key).cloned();
        conflicts.push(serde_json::json!({
            "kind": format!("{} {}", proto.as_str(), obj.as_str()),
            "network_id": origin.as_ref().map(|o| o.network_id.get()),
            "object": name,
            "containers": origin.map(|o| o.containers.into_iter().collect::<Vec<_>>()).unwrap_or_default(),
            "reason": "defined by several containers with different configurations: removed (Traefik's merge rule)",
        }));
    }

    // 3. Port forwards (`rediacc.tcp_ports` / `rediacc.udp_ports`).
    let mut limits = PortLimits {
        tcp_entrypoint_ports: settings.tcp_entrypoint_ports.clone(),
        udp_entrypoint_ports: settings.udp_entrypoint_ports.clone(),
        dynamic_range: settings.dynamic_range,
        used_by_labels: BTreeMap::new(),
    };
    for proto in [Proto::Tcp, Proto::Udp] {
        for (key, router) in &published.section_ref(proto).routers {
            let network = published.origins[&(proto, Obj::Router, key.clone())].network_id;
            for ep in router.get_list("entryPoints") {
                if let Some(p) = entrypoint_port(&ep, proto.as_str()) {
                    limits
                        .used_by_labels
                        .entry((proto.as_str().to_string(), p))
                        .or_default()
                        .insert(network.get());
                }
            }
        }
    }
    let mut requests: Vec<(RequestKey, &Fragment)> = Vec::new();
    for frag in &fragments {
        for (proto, spec) in &frag.ports {
            requests.push((
                RequestKey {
                    protocol: proto.to_string(),
                    network_id: frag.network_id.get(),
                    service: frag.service.clone(),
                    target: spec.target,
                    preferred: spec.published,
                },
                frag,
            ));
        }
    }
    let keys: Vec<RequestKey> = requests.iter().map(|(k, _)| k.clone()).collect();
    let allocation = port_allocation::allocate(previous_ports, &keys, &limits);
    let mut forward_routers: Vec<(Proto, String)> = Vec::new();
    let mut reported: BTreeSet<RequestKey> = BTreeSet::new();
    for (key, frag) in &requests {
        let describe = |reason: &str| {
            serde_json::json!({
                "kind": format!("{} port", key.protocol),
                "network_id": key.network_id,
                "service": key.service,
                "target": key.target,
                "preferred": key.preferred,
                "containers": [frag.container],
                "reason": reason,
            })
        };
        if reported.insert(key.clone()) {
            if let Some((_, why)) = allocation.refused.iter().find(|(k, _)| k == key) {
                conflicts.push(describe(why));
            }
            if let Some((_, why)) = allocation.moved.iter().find(|(k, _)| k == key) {
                conflicts.push(describe(why));
            }
        }
        let Some(&port) = allocation.granted.get(key) else {
            continue;
        };
        let proto = if key.protocol == "tcp" {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        let name = format!(
            "{}-{}-{}-{port}-{FORWARD_SUFFIX}",
            normalize(&frag.service),
            frag.network_id,
            key.protocol
        );
        let mut router = Value::empty_map();
        router.set(
            "entryPoints",
            Value::str_list([format!("{}-{port}", key.protocol)]),
        );
        if proto == Proto::Tcp {
            router.set("rule", Value::Str("HostSNI(`*`)".into()));
        }
        router.set("service", Value::Str(name.clone()));
        let service = server_service("address", format!("{}:{}", frag.service_ip, key.target));
        for (obj, value) in [(Obj::Router, router), (Obj::Service, service)] {
            add_object(
                &mut published,
                &mut to_delete,
                (proto, obj, name.clone()),
                value,
                frag.network_id,
                &frag.container,
                1,
            );
        }
        forward_routers.push((proto, name));
    }

    // 4. Cross-repo claims: the earlier claim (lowest network ID, then container, then
    // router name; port forwards first for TCP/UDP, since they hold an allocation) wins.
    let order = |published: &Published, proto: Proto, name: &String| {
        let o = &published.origins[&(proto, Obj::Router, name.clone())];
        (
            o.network_id,
            o.containers.iter().next().cloned().unwrap_or_default(),
            name.clone(),
        )
    };
    let mut drops: Vec<(Proto, String, serde_json::Value)> = Vec::new();
    // HTTP: Host names.
    let mut http_routers: Vec<String> = published.http.routers.keys().cloned().collect();
    http_routers.sort_by_key(|n| order(&published, Proto::Http, n));
    let mut host_owner: BTreeMap<String, (NetworkId, String)> = BTreeMap::new();
    for name in http_routers {
        let o = published.origins[&(Proto::Http, Obj::Router, name.clone())].clone();
        let rule = published.http.routers[&name]
            .get_str("rule")
            .unwrap_or("")
            .to_string();
        let hosts = http_host_claims(&rule);
        let base = |reason: String| {
            serde_json::json!({
                "kind": "http host",
                "network_id": o.network_id,
                "object": name,
                "containers": o.containers.iter().collect::<Vec<_>>(),
                "rule": rule,
                "reason": reason,
            })
        };
        if hosts.is_empty() {
            drops.push((Proto::Http, name.clone(), base(
                "the rule has no Host(...) matcher: it would capture other repositories' traffic, so it is not published".into(),
            )));
            continue;
        }
        if let Some((host, (holder, router))) = hosts.iter().find_map(|h| {
            host_owner
                .get(h)
                .filter(|(n, _)| *n != o.network_id)
                .map(|x| (h, x))
        }) {
            drops.push((Proto::Http, name.clone(), base(format!(
                "host `{host}` is already claimed by network {holder} (router `{router}`): only the earlier claim is served"
            ))));
            continue;
        }
        for h in hosts {
            host_owner.entry(h).or_insert((o.network_id, name.clone()));
        }
    }
    // TCP: (entrypoint, SNI) pairs; UDP: entrypoints. No entrypoint = all of them.
    for proto in [Proto::Tcp, Proto::Udp] {
        let mut names: Vec<String> = published
            .section_ref(proto)
            .routers
            .keys()
            .cloned()
            .collect();
        names.sort_by_key(|n| {
            let forward = forward_routers.contains(&(proto, n.clone()));
            (!forward, order(&published, proto, n))
        });
        let mut claims: Vec<(Option<String>, String, NetworkId, String)> = Vec::new();
        for name in names {
            let o = published.origins[&(proto, Obj::Router, name.clone())].clone();
            let router = &published.section_ref(proto).routers[&name];
            let eps: Vec<Option<String>> = match router.get_list("entryPoints") {
                v if v.is_empty() => vec![None],
                v => v.into_iter().map(Some).collect(),
            };
            let snis = if proto == Proto::Tcp {
                tcp_sni_claims(router.get_str("rule").unwrap_or(""))
            } else {
                vec!["*".to_string()]
            };
            let clash = claims.iter().find(|(ep, sni, n, _)| {
                *n != o.network_id
                    && eps.iter().any(|e| e.is_none() || ep.is_none() || e == ep)
                    && snis.iter().any(|s| s == sni || s == "*" || sni == "*")
            });
            if let Some((ep, sni, holder, router_name)) = clash {
                let what = match (proto, ep) {
                    (Proto::Tcp, Some(ep)) => format!("entrypoint `{ep}` with SNI `{sni}`"),
                    (Proto::Tcp, None) => format!("SNI `{sni}` on every entrypoint"),
                    (_, Some(ep)) => format!("entrypoint `{ep}`"),
                    (_, None) => "every entrypoint".to_string(),
                };
                drops.push((proto, name.clone(), serde_json::json!({
                    "kind": format!("{} entrypoint", proto.as_str()),
                    "network_id": o.network_id,
                    "object": name,
                    "containers": o.containers.iter().collect::<Vec<_>>(),
                    "reason": format!("{what} is already claimed by network {holder} (router `{router_name}`): only the earlier claim is served"),
                })));
                continue;
            }
            for ep in &eps {
                for sni in &snis {
                    claims.push((ep.clone(), sni.clone(), o.network_id, name.clone()));
                }
            }
        }
    }
    for (proto, name, report) in drops {
        published.section(proto).routers.remove(&name);
        conflicts.push(report);
    }

    // 5. Render.
    let mut doc = BTreeMap::new();
    let mut router_count = 0;
    let mut service_count = 0;
    let mut json = serde_json::Map::new();
    for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
        let s = published.section_ref(proto);
        router_count += s.routers.len();
        service_count += s.services.len();
        let mut m = BTreeMap::new();
        for (field, objects) in [
            ("middlewares", &s.middlewares),
            ("routers", &s.routers),
            ("services", &s.services),
        ] {
            if !objects.is_empty() {
                m.insert(field.to_string(), Value::Map(objects.clone()));
            }
        }
        if !m.is_empty() {
            doc.insert(proto.as_str().to_string(), Value::Map(m));
        }
        let mut list = Vec::new();
        for (name, router) in &s.routers {
            let o = &published.origins[&(proto, Obj::Router, name.clone())];
            let service = router.get_str("service").unwrap_or("").to_string();
            let backends: Vec<String> = s
                .services
                .get(&service)
                .and_then(|svc| svc.get("loadBalancer"))
                .map(|lb| {
                    let key = if proto == Proto::Http {
                        "url"
                    } else {
                        "address"
                    };
                    match lb.get("servers") {
                        Some(Value::List(items)) => items
                            .iter()
                            .filter_map(|s| s.get_str(key).map(str::to_string))
                            .collect(),
                        _ => Vec::new(),
                    }
                })
                .unwrap_or_default();
            let mut entry = serde_json::Map::new();
            entry.insert("name".into(), name.clone().into());
            if proto != Proto::Udp {
                entry.insert("rule".into(), router.get_str("rule").unwrap_or("").into());
            }
            entry.insert("entrypoints".into(), router.get_list("entryPoints").into());
            entry.insert("backends".into(), backends.into());
            entry.insert("network_id".into(), o.network_id.get().into());
            entry.insert("service".into(), service.into());
            entry.insert(
                "container".into(),
                o.containers
                    .iter()
                    .next()
                    .cloned()
                    .unwrap_or_default()
                    .into(),
            );
            entry.insert(
                "containers".into(),
                o.containers.iter().cloned().collect::<Vec<_>>().into(),
            );
            entry.insert("tier".into(), o.tier.into());
            list.push(serde_json::Value::Object(entry));
        }
        json.insert(proto.as_str().into(), serde_json::Value::Array(list));
    }
    let routes_yaml = if doc.is_empty() {
        "{}\n".to_string()
    } else {
        serde_yaml::to_string(&Value::Map(doc))
            .expect("a tree of maps, lists and scalars serializes")
    };

    let auto_routes_note = match (settings.auto_routes, settings.base_domain.is_some()) {
        (false, _) => Some(
            "automatic routes are turned off in the settings (auto_routes: false)".to_string(),
        ),
        (true, false) => Some(
            "no base domain is configured (base_domain): containers with rediacc.service_port get no automatic route".to_string(),
        ),
        (true, true) => None,
    };

    Snapshot {
        routes_yaml,
        routes_json: serde_json::Value::Object(json),
        router_count,
        service_count,
        auto_routes_enabled: auto_routes_note.is_none(),
        auto_routes_note,
        rejected,
        conflicts,
        ports: allocation.table,
    }
}

/// Adds one object to the published configuration with Traefik's merge rule: services merge
/// when only their servers differ; routers and middlewares must be equal; otherwise every copy
/// is removed at the end.
fn add_object(
    published: &mut Published,
    to_delete: &mut BTreeSet<(Proto, Obj, String)>,
    key: (Proto, Obj, String),
    value: Value,
    network_id: NetworkId,
    container: &str,
    tier: u8,
) {
    let (proto, obj, name) = key.clone();
    let origin = published.origins.entry(key.clone()).or_insert(Origin {
        network_id,
        containers: BTreeSet::new(),
        tier,
    });
    origin.containers.insert(container.to_string());
    let map = section_map(published.section(proto), obj);
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(existing) => {
            let merged = match obj {
                Obj::Service => merge_service(existing, &value, proto),
                _ => *existing == value,
            };
            if !merged {
                to_delete.insert(key);
            }
        }
    }
}

/// Traefik links a router without `service` to the container's only service; with several it
/// cannot choose, and the router is dropped.
fn link_default_service(router: &mut Value, services: &[String]) -> Result<(), String> {
    if !router.get_str("service").unwrap_or("").is_empty() {
        return Ok(());
    }
    match services {
        [only] => {
            router.set("service", Value::Str(only.clone()));
            Ok(())
        }
        _ => Err(format!(
            "no service given and the container has several ({}): it cannot be linked automatically",
            services.join(", ")
        )),
    }
}
