//! Stage 1 of route building: one container → its namespaced contribution (a
//! [`Fragment`]), following Traefik v3's Docker provider per container
//! (`pkg/provider/docker/config.go`): trusted identity, tier 1 automatic route or tier 2
//! labels with Traefik's defaulting, names namespaced per repository, then the tenant policy
//! (`tenant_policy`). A container that fails any of it contributes nothing and is reported.

use std::net::Ipv4Addr;

use crate::addresses::NetworkId;
use crate::routing::build::{
    AUTO_SUFFIX, Container, Health, LABEL_COMPOSE_PROJECT, LABEL_COMPOSE_SERVICE, LABEL_NETWORK_ID,
    LABEL_SERVICE_IP, LABEL_SERVICE_NAME, LABEL_SERVICE_PORT, LABEL_TCP_PORTS, LABEL_UDP_PORTS,
    RouteSettings,
};
use crate::routing::merge::{Proto, SharedSection};
use crate::routing::port_allocation::{self, PortSpec};
use crate::routing::tenant_policy;
use crate::routing::traefik_labels::{self, Section, Value};

/// What one container contributes, already namespaced.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub network_id: NetworkId,
    pub container: String,
    /// Traefik merges containers in the order of `<default name>-<container ID>`.
    pub merge_key: String,
    pub tier: u8,
    /// The container's creation time (Unix seconds): the age of its claims.
    pub created: i64,
    pub http: SharedSection,
    pub tcp: SharedSection,
    pub udp: SharedSection,
    /// `rediacc.tcp_ports` / `rediacc.udp_ports` entries: (protocol, spec).
    pub ports: Vec<(&'static str, PortSpec)>,
    /// The `rediacc.service_name` (the key of port allocations).
    pub service: String,
    pub service_ip: Ipv4Addr,
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
    c.labels.get(key)
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
pub fn fragment(
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
            // Bounded before parsing: one container must not make every rebuild slow.
            let max = settings.max_ports_per_container;
            if ports.len() + v.split(',').count() > max {
                return Err(format!(
                    "labels {LABEL_TCP_PORTS} + {LABEL_UDP_PORTS} list more than {max} ports \
                     (the operator's bound, routing.max_ports_per_container); publish fewer ports"
                ));
            }
            for spec in
                port_allocation::parse_port_list(v).map_err(|e| format!("label {key}: {e}"))?
            {
                ports.push((proto, spec));
            }
        }
    }

    let (mut http, mut tcp, mut udp) = (Section::default(), Section::default(), Section::default());
    if enable {
        let cfg = traefik_labels::decode(&c.labels).map_err(|e| e.to_string())?;
        let (h, t, u) = traefik_defaults(c, cfg, ip, notes)?;
        http = namespace_section(h, n)?;
        tcp = namespace_section(t, n)?;
        udp = namespace_section(u, n)?;
        tenant_policy::check(n, &http, &tcp, &udp, &settings.tenant)?;
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
            http.routers.insert(name.clone(), router);
            http.services
                .insert(name, server_service("url", format!("http://{ip}:{port}")));
        }
    }

    let empty = http.is_empty() && tcp.is_empty() && udp.is_empty() && ports.is_empty();
    Ok((!empty).then(|| Fragment {
        network_id: n,
        container: c.name.clone(),
        merge_key: format!("{}-{}", default_name(c), c.id),
        created: c.created,
        tier: if enable { 2 } else { 1 },
        http: SharedSection::from(http),
        tcp: SharedSection::from(tcp),
        udp: SharedSection::from(udp),
        ports,
        service: service.clone(),
        service_ip: ip,
    }))
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
pub fn server_service(field: &str, address: String) -> Value {
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
            let url_scheme = url.split_once("://").map_or("", |(s, _)| s);
            tenant_policy::check_scheme(
                &format!("http service `{sname}`: loadbalancer.server.url"),
                url_scheme,
            )?;
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
        tenant_policy::check_scheme(
            &format!("http service `{sname}`: loadbalancer.server.scheme"),
            &scheme,
        )?;
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
    // No user info, escapes or backslashes: parsers disagree on those.
    if authority.contains(['@', '\\', '%']) {
        return None;
    }
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
