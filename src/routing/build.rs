//! Route building: the containers discovery sees → the Traefik v3 dynamic configuration the
//! route server publishes, plus what `/routes.json`, `/health` and `/ports` report.
//! Pure: no I/O, so every rule is tested directly (spec §6.2–§6.4, TRAEFIK-LABELS.md,
//! docs/labels.md).
//!
//! [`build`] is a chain of stages, each in its own module with its own tests:
//! 1. `fragment`: each container alone → its namespaced objects (or a rejection);
//! 2. `merge`: Traefik's merge rule over the fragments;
//! 3. `claims`: hosts (rule parsing + ownership) and ports (entrypoints + forwards) judged
//!    across repositories, refused routers removed with what only they used;
//! 4. `render`: the `/routes.yaml` body and the `/routes.json` listing.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde::Serialize;

use crate::addresses::NetworkId;
use crate::routing::cluster::gate::{self, GateOutcome};
use crate::routing::cluster::view::ClusterView;
use crate::routing::merge::{Obj, Proto, Published};
use crate::routing::ownership::{AutoHosts, HostPolicy, HostTable};
use crate::routing::port_allocation::PortTable;
use crate::routing::tenant_policy::TenantLimits;
use crate::routing::traefik_labels::Value;
use crate::routing::{claims, fragment, merge, render};

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
    /// Creation time (Unix seconds), set by the daemon: the age of the container's claims.
    pub created: i64,
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
    /// Ports of the dynamic range one repository may hold.
    pub dynamic_port_quota: usize,
    /// Most port entries one container may list.
    pub max_ports_per_container: usize,
    /// Operator grants of host names and suffixes.
    pub host_policy: HostPolicy,
    /// The hosts of automatic routes, which belong to their network.
    pub auto_hosts: Option<AutoHosts>,
    /// What labels may ask of the proxy.
    pub tenant: TenantLimits,
    /// In a cluster: most hosts and edge ports one network may hold (etcd keys are shared).
    pub cluster_resource_limit: usize,
}

impl RouteSettings {
    /// The route-building view of the settings file; an invalid `routing` section is an error
    /// naming the field.
    pub fn from_settings(s: &crate::host::settings::Settings) -> anyhow::Result<Self> {
        let r = &s.routing;
        let base_domain = s.base_domain.clone().filter(|d| !d.is_empty());
        let floor = crate::routing::traefik_labels::duration_nanos(&r.health_check_floor)
            .filter(|n| *n >= 0)
            .with_context(|| {
                format!(
                    "settings routing.health_check_floor: `{}` is not a duration (e.g. 1s, 500ms)",
                    r.health_check_floor
                )
            })?;
        let mut tenant = TenantLimits {
            allowed_references: r.allowed_references.iter().cloned().collect(),
            allowed_plugins: r.allowed_plugins.iter().cloned().collect(),
            allow_outbound_hostnames: r.allow_outbound_hostnames,
            health_check_floor_nanos: floor,
            tcp_ports: s.tcp_entrypoint_ports(),
            udp_ports: s.udp_entrypoint_ports(),
            ..TenantLimits::default()
        };
        tenant.http_entrypoints.extend(
            s.effective_entrypoints()
                .into_iter()
                .chain(r.http_entrypoints.iter().cloned()),
        );
        Ok(RouteSettings {
            host_policy: HostPolicy::from_grants(&r.host_grants, r.grants_only)
                .map_err(|e| anyhow::anyhow!("settings {e}"))?,
            auto_hosts: AutoHosts::new(&s.host_template, base_domain.as_deref(), s.auto_routes),
            tenant,
            dynamic_port_quota: r.dynamic_port_quota,
            max_ports_per_container: r.max_ports_per_container,
            base_domain: s.base_domain.clone().filter(|d| !d.is_empty()),
            host_template: s.host_template.clone(),
            auto_routes: s.auto_routes,
            entrypoints: s.effective_entrypoints(),
            cert_resolver: Some(s.cert_resolver.clone()).filter(|r| !r.is_empty()),
            tcp_entrypoint_ports: s.tcp_entrypoint_ports(),
            udp_entrypoint_ports: s.udp_entrypoint_ports(),
            dynamic_range: (s.dynamic_range[0], s.dynamic_range[1]),
            cluster_resource_limit: s.cluster.max_resources_per_network,
        })
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
    /// Routers refused by the multi-tenant rules (hosts, entrypoints), with the reason and,
    /// where known, the network that holds what they asked for (`owner`).
    pub refused: Vec<serde_json::Value>,
    /// Label merge conflicts, dropped routers and port forwards that moved or got nothing.
    pub conflicts: Vec<serde_json::Value>,
    /// The port allocations after this build (persist when changed).
    pub ports: PortTable,
    /// The host claims after this build (persist when changed).
    pub hosts: HostTable,
    /// In cluster mode: what the routers need from the cluster, and who waits for it.
    pub cluster: Option<GateOutcome>,
}

/// What a build starts from: the persisted claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub ports: PortTable,
    pub hosts: HostTable,
}

/// Labels renet compose puts on every service (spec §4) and the route server reads.
pub const LABEL_SERVICE_NAME: &str = "rediacc.service_name";
pub const LABEL_SERVICE_IP: &str = "rediacc.service_ip";
pub const LABEL_NETWORK_ID: &str = "rediacc.network_id";
pub const LABEL_SERVICE_PORT: &str = "rediacc.service_port";
pub const LABEL_TCP_PORTS: &str = "rediacc.tcp_ports";
pub const LABEL_UDP_PORTS: &str = "rediacc.udp_ports";
pub const LABEL_COMPOSE_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// Suffix of automatic (tier 1) object names. It ends in a letter, so it can never equal a
/// label-defined name (those end in `-<network ID>`).
pub const AUTO_SUFFIX: &str = "auto";
/// Suffix of port-forward object names (`rediacc.tcp_ports` / `rediacc.udp_ports`).
pub const FORWARD_SUFFIX: &str = "fwd";

/// Builds the snapshot from the containers and the persisted port table, with no recorded host
/// claims (tests and benchmarks; the route server uses [`build_with`]).
pub fn build(
    containers: &[Container],
    settings: &RouteSettings,
    previous_ports: &PortTable,
) -> Snapshot {
    build_with(
        containers,
        settings,
        &Claims {
            ports: previous_ports.clone(),
            hosts: HostTable::default(),
        },
    )
}

/// Builds the snapshot from scratch. `previous` holds the persisted claims; port allocations
/// and host claims are kept stable across builds and restarts.
pub fn build_with(
    containers: &[Container],
    settings: &RouteSettings,
    previous: &Claims,
) -> Snapshot {
    RouteBuilder::default().build(containers, settings, previous)
}

/// A route builder that remembers what it built: a rebuild decodes only the containers that
/// changed, parses only new rules and renders only changed objects; merging, judging claims
/// and assembling the output run over everything (they are linear and cheap next to the
/// rest). Its output always equals [`build_with`]'s for the same input (a property test
/// checks random change sequences). The caches hold only what the last build used.
#[derive(Debug, Default)]
pub struct RouteBuilder {
    settings: Option<RouteSettings>,
    fragments: std::collections::HashMap<FragmentKey, CachedFragment>,
    scopes: claims::ScopeCache,
    render: render::RenderCache,
    timings: StageTimes,
    /// In cluster mode, what this server knows of etcd: routers are served only with their
    /// cluster resources held (`cluster::gate`).
    cluster: Option<std::sync::Arc<ClusterView>>,
}

/// How long each stage of the last build took (benchmarks and debug logs).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub fragments: std::time::Duration,
    pub merge: std::time::Duration,
    pub claims: std::time::Duration,
    pub render: std::time::Duration,
}

/// Containers are told apart by daemon, ID and name: IDs are unique per daemon only.
type FragmentKey = (NetworkId, String, String);

fn fragment_key(c: &Container) -> FragmentKey {
    (c.network_id, c.id.clone(), c.name.clone())
}

/// A container's stage-1 outcome, kept with the container it was computed from.
#[derive(Debug)]
struct CachedFragment {
    container: Container,
    outcome: Result<Option<fragment::Fragment>, String>,
    notes: Vec<serde_json::Value>,
    used: bool,
}

impl RouteBuilder {
    /// Builds the snapshot of `containers`, reusing what did not change since the last build.
    pub fn build(
        &mut self,
        containers: &[Container],
        settings: &RouteSettings,
        previous: &Claims,
    ) -> Snapshot {
        if self.settings.as_ref() != Some(settings) {
            *self = RouteBuilder {
                settings: Some(settings.clone()),
                cluster: self.cluster.take(),
                ..RouteBuilder::default()
            };
        }
        let mut rejected = Vec::new();
        let mut refused = Vec::new();
        let mut conflicts = Vec::new();
        let t = std::time::Instant::now();
        self.refresh_fragments(containers, settings);
        let mut fragments =
            collect_fragments(&self.fragments, containers, &mut rejected, &mut conflicts);
        self.timings.fragments = t.elapsed();
        let t = std::time::Instant::now();
        let mut published = merge::merge(&mut fragments, &mut conflicts);
        self.timings.merge = t.elapsed();
        let t = std::time::Instant::now();
        let mut removed = Vec::new();
        let hosts = claims::judge_hosts(
            &mut published,
            settings,
            &previous.hosts,
            &mut self.scopes,
            &mut refused,
            &mut removed,
        );
        let ports = claims::judge_ports(
            &mut published,
            &fragments,
            settings,
            &previous.ports,
            &mut refused,
            &mut conflicts,
            &mut removed,
        );
        let cluster = self.cluster.as_deref().map(|view| {
            gate::gate(
                &mut published,
                view,
                settings.cluster_resource_limit,
                &mut self.scopes,
                &mut refused,
                &mut removed,
            )
        });
        claims::drop_orphans(&mut published, &removed);
        self.timings.claims = t.elapsed();
        let t = std::time::Instant::now();
        let (routes_yaml, routes_json, router_count, service_count) =
            render_published(&published, &mut self.render);
        self.timings.render = t.elapsed();
        let auto_routes_note = auto_routes_note(settings);
        Snapshot {
            routes_yaml,
            routes_json,
            router_count,
            service_count,
            auto_routes_enabled: auto_routes_note.is_none(),
            auto_routes_note,
            rejected,
            refused,
            conflicts,
            ports,
            hosts,
            cluster,
        }
    }

    /// Sets (or clears) the cluster view the next builds judge routers against.
    pub fn set_cluster_view(&mut self, view: Option<std::sync::Arc<ClusterView>>) {
        self.cluster = view;
    }

    /// How long each stage of the last build took.
    pub fn timings(&self) -> StageTimes {
        self.timings
    }

    /// Stage 1 for the containers that are new or changed; forgets the ones that are gone.
    fn refresh_fragments(&mut self, containers: &[Container], settings: &RouteSettings) {
        for c in containers {
            let key = fragment_key(c);
            match self.fragments.get_mut(&key) {
                Some(cached) if cached.container == *c => cached.used = true,
                _ => {
                    let mut notes = Vec::new();
                    let outcome = fragment::fragment(c, settings, &mut notes);
                    self.fragments.insert(
                        key,
                        CachedFragment {
                            container: c.clone(),
                            outcome,
                            notes,
                            used: true,
                        },
                    );
                }
            }
        }
        self.fragments.retain(|_, f| std::mem::take(&mut f.used));
    }
}

/// The fragments in a fixed order (input order must not matter), with the rejections and
/// notes of stage 1.
fn collect_fragments<'a>(
    cache: &'a std::collections::HashMap<FragmentKey, CachedFragment>,
    containers: &[Container],
    rejected: &mut Vec<serde_json::Value>,
    conflicts: &mut Vec<serde_json::Value>,
) -> Vec<&'a fragment::Fragment> {
    let mut sorted: Vec<&Container> = containers.iter().collect();
    sorted.sort_by(|a, b| (a.network_id, &a.name, &a.id).cmp(&(b.network_id, &b.name, &b.id)));
    let mut out = Vec::new();
    for c in sorted {
        let cached = &cache[&fragment_key(c)];
        conflicts.extend(cached.notes.iter().cloned());
        match &cached.outcome {
            Ok(Some(f)) => out.push(f),
            Ok(None) => {}
            Err(reason) => rejected.push(serde_json::json!({
                "network_id": c.network_id,
                "container": c.name,
                "id": c.id,
                "reason": reason,
            })),
        }
    }
    out
}

fn auto_routes_note(settings: &RouteSettings) -> Option<String> {
    match (settings.auto_routes, settings.base_domain.is_some()) {
        (false, _) => Some(
            "automatic routes are turned off in the settings (auto_routes: false)".to_string(),
        ),
        (true, false) => Some(
            "no base domain is configured (base_domain): containers with rediacc.service_port get no automatic route".to_string(),
        ),
        (true, true) => None,
    }
}

/// Stage 4: the YAML document, the JSON listing, and the counts.
fn render_published(
    published: &Published,
    cache: &mut render::RenderCache,
) -> (String, serde_json::Value, usize, usize) {
    let mut sections: render::Sections = Vec::new();
    let mut router_count = 0;
    let mut service_count = 0;
    let mut json = serde_json::Map::new();
    for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
        let s = published.section_ref(proto);
        router_count += s.routers.len();
        service_count += s.services.len();
        sections.push((
            proto.as_str(),
            vec![
                ("middlewares", &s.middlewares),
                ("routers", &s.routers),
                ("services", &s.services),
            ],
        ));
        let list = s
            .routers
            .iter()
            .map(|(name, router)| listing_entry(published, proto, name, router))
            .collect();
        json.insert(proto.as_str().into(), serde_json::Value::Array(list));
    }
    let routes_yaml = cache.to_yaml(&sections);
    (
        routes_yaml,
        serde_json::Value::Object(json),
        router_count,
        service_count,
    )
}

/// One router of `/routes.json`.
fn listing_entry(
    published: &Published,
    proto: Proto,
    name: &str,
    router: &Value,
) -> serde_json::Value {
    let s = published.section_ref(proto);
    let o = &published.origins[&(proto, Obj::Router, name.to_string())];
    let service = router.get_str("service").unwrap_or("").to_string();
    let key = if proto == Proto::Http {
        "url"
    } else {
        "address"
    };
    let backends: Vec<String> = s
        .services
        .get(&service)
        .and_then(|svc| svc.get("loadBalancer"))
        .map(|lb| match lb.get("servers") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|s| s.get_str(key).map(str::to_string))
                .collect(),
            _ => Vec::new(),
        })
        .unwrap_or_default();
    let mut entry = serde_json::Map::new();
    entry.insert("name".into(), name.into());
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
    serde_json::Value::Object(entry)
}
