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
pub use crate::routing::label_set::LabelSet;
use crate::routing::merge::{Obj, Proto};
use crate::routing::ownership::{AutoHosts, HostPolicy, HostTable};
use crate::routing::port_allocation::PortTable;
use crate::routing::tenant_policy::TenantLimits;
use crate::routing::{claims, fragment, listing, merge, pieces, render};

/// Health as the daemon reports it; Traefik routes only containers without a healthcheck or
/// healthy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// A container's labels, shared: the route server copies its container set on every change
/// (discovery → redeploy grace → builder → last-known cache), and Docker never changes a
/// container's labels, so a copy shares them instead of cloning thousands of strings (at 5,000
/// containers the clones were most of a rebuild's time and its memory churn). A
/// [`LabelSet`] rather than a `BTreeMap`: a fifth of the size (docs/performance.md "(b'')").
pub type Labels = std::sync::Arc<LabelSet>;

/// A running container found on a repo daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// The network ID of the socket it was found on: its trusted identity.
    pub network_id: NetworkId,
    pub id: String,
    /// Container name without the leading `/`.
    pub name: String,
    pub labels: Labels,
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
    /// What host judgements need of the settings: the grants and the automatic-route hosts.
    pub fn host_rules(&self) -> crate::routing::ownership::HostRules<'_> {
        crate::routing::ownership::HostRules {
            policy: &self.host_policy,
            auto: self.auto_hosts.as_ref(),
        }
    }

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
    pub routes_json: listing::Listing,
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
/// and host claims are kept stable across builds and restarts. Each stage runs once over
/// everything: the reference that [`RouteBuilder`]'s incremental builds must equal.
pub fn build_with(
    containers: &[Container],
    settings: &RouteSettings,
    previous: &Claims,
) -> Snapshot {
    let mut report = Report::default();
    let mut sorted: Vec<&Container> = containers.iter().collect();
    sorted.sort_by(|a, b| container_order(a, b));
    let stage_one: Vec<StageOne> = sorted.iter().map(|c| StageOne::of(c, settings)).collect();
    let mut fragments = Vec::new();
    for (c, one) in sorted.iter().zip(&stage_one) {
        one.report(c.network_id, &c.name, &c.id, &mut report);
        if let Ok(Some(f)) = &one.outcome {
            fragments.push(f);
        }
    }
    let mut published = merge::merge(&mut fragments, &mut report.conflicts);
    let order = claims::AgeOrder::of(&published);
    let (claims, _) = judge_claims(
        &mut published,
        &order,
        &fragments,
        settings,
        Held {
            previous,
            cluster: None,
        },
        &mut claims::ScopeCache::default(),
        &mut report,
    );
    let rendered = render_published(&published);
    snapshot(settings, rendered, report, claims)
}

/// A route builder that remembers what it built, per repository: a rebuild decodes only the
/// containers that changed and merges only the repositories they belong to (names are
/// namespaced per repository, so the merge of everything is the union of the repositories'
/// merges, kept up to date by removing a changed repository's objects and adding its new
/// ones). Claims are judged across repositories on every build (the oldest claim wins, so one
/// change can move a verdict elsewhere) but parse only new rules; rendering renders only
/// changed objects and listing entries. Its output always equals [`build_with`]'s for the
/// same input (a property test checks random change sequences). The caches hold only what the
/// last build used.
#[derive(Debug, Default)]
pub struct RouteBuilder {
    settings: Option<RouteSettings>,
    repos: BTreeMap<NetworkId, RepoState>,
    /// The union of the repositories' merges (stage 2 over everything).
    merged: merge::Published,
    /// The rendered pieces of `merged`.
    pieces: pieces::Pieces,
    /// The routers of `merged` in the order stage 3 judges them.
    order: claims::AgeOrder,
    /// The key of the label hashes in [`Seen`].
    labels_key: std::hash::RandomState,
    scopes: claims::ScopeCache,
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

/// The order of the reports: by repository, then container name, then ID (input order must
/// not matter).
fn container_order(a: &Container, b: &Container) -> std::cmp::Ordering {
    (a.network_id, &a.name, &a.id).cmp(&(b.network_id, &b.name, &b.id))
}

/// A container's stage-1 outcome and notes.
#[derive(Debug)]
struct StageOne {
    outcome: Result<Option<fragment::Fragment>, String>,
    notes: Vec<serde_json::Value>,
}

impl StageOne {
    fn of(c: &Container, settings: &RouteSettings) -> StageOne {
        let mut notes = Vec::new();
        let outcome = fragment::fragment(c, settings, &mut notes);
        StageOne { outcome, notes }
    }

    /// Adds the rejection or notes of container `name` (`id`) of network `n` to the report.
    fn report(&self, n: NetworkId, name: &str, id: &str, report: &mut Report) {
        report.conflicts.extend(self.notes.iter().cloned());
        if let Err(reason) = &self.outcome {
            report.rejected.push(serde_json::json!({
                "network_id": n,
                "container": name,
                "id": id,
                "reason": reason,
            }));
        }
    }
}

/// What a build reports besides the configuration (`/health`).
#[derive(Debug, Default)]
struct Report {
    rejected: Vec<serde_json::Value>,
    refused: Vec<serde_json::Value>,
    conflicts: Vec<serde_json::Value>,
}

/// One repository as the builder last saw it.
#[derive(Debug, Default)]
struct RepoState {
    /// Its containers in report order, each with its stage-1 outcome.
    containers: Vec<(Seen, StageOne)>,
    /// Stage 2 over its containers alone.
    merged: merge::Published,
    merge_conflicts: Vec<merge::KeyedConflict>,
}

/// What the builder keeps of a container to tell whether it changed: its identity exactly,
/// its labels by a hash with a key chosen at random per builder (so no tenant can aim at a
/// collision; Docker never changes a container's labels anyway: a new label set is a new
/// container ID). A copy of every container would be the largest thing the builder holds.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Seen {
    id: String,
    name: String,
    health: Health,
    created: i64,
    labels: u64,
}

impl Seen {
    fn of(c: &Container, key: &std::hash::RandomState) -> Seen {
        Seen {
            id: c.id.clone(),
            name: c.name.clone(),
            health: c.health,
            created: c.created,
            labels: std::hash::BuildHasher::hash_one(key, &c.labels),
        }
    }

    fn is(&self, c: &Container, key: &std::hash::RandomState) -> bool {
        self.id == c.id
            && self.name == c.name
            && self.health == c.health
            && self.created == c.created
            && self.labels == std::hash::BuildHasher::hash_one(key, &c.labels)
    }
}

impl RepoState {
    fn has(&self, containers: &[&Container], key: &std::hash::RandomState) -> bool {
        self.containers.len() == containers.len()
            && self
                .containers
                .iter()
                .zip(containers)
                .all(|((seen, _), c)| seen.is(c, key))
    }

    /// Stage 1 for its new and changed containers (the others keep theirs), then stage 2.
    fn rebuild(
        &mut self,
        containers: &[&Container],
        settings: &RouteSettings,
        key: &std::hash::RandomState,
    ) {
        let old = std::mem::take(&mut self.containers);
        let mut previous: std::collections::HashMap<Seen, StageOne> = old.into_iter().collect();
        for c in containers {
            let seen = Seen::of(c, key);
            let one = previous
                .remove(&seen)
                .unwrap_or_else(|| StageOne::of(c, settings));
            self.containers.push((seen, one));
        }
        let mut fragments: Vec<&fragment::Fragment> = self
            .containers
            .iter()
            .filter_map(|(_, one)| one.outcome.as_ref().ok().and_then(Option::as_ref))
            .collect();
        (self.merged, self.merge_conflicts) = merge::merge_keyed(&mut fragments);
    }
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
        let t = std::time::Instant::now();
        let changed = self.refresh_repos(containers, settings);
        self.timings.fragments = t.elapsed();

        let t = std::time::Instant::now();
        for n in &changed {
            let repo = &self.repos[n];
            self.merged.add_part(&repo.merged);
            self.pieces.add_part(&repo.merged);
            self.order.add_part(&repo.merged);
        }
        let mut report = Report::default();
        let mut merge_conflicts: Vec<&merge::KeyedConflict> = Vec::new();
        let mut port_fragments: Vec<&fragment::Fragment> = Vec::new();
        for (n, repo) in &self.repos {
            for (seen, one) in &repo.containers {
                one.report(*n, &seen.name, &seen.id, &mut report);
                if let Ok(Some(f)) = &one.outcome
                    && !f.ports.is_empty()
                {
                    port_fragments.push(f);
                }
            }
            merge_conflicts.extend(&repo.merge_conflicts);
        }
        merge_conflicts.sort_by(|a, b| a.0.cmp(&b.0));
        report
            .conflicts
            .extend(merge_conflicts.into_iter().map(|(_, c)| c.clone()));
        // The order stage 2 leaves the fragments in (ties in port claims keep it).
        port_fragments
            .sort_by(|a, b| (a.network_id, &a.merge_key).cmp(&(b.network_id, &b.merge_key)));
        self.timings.merge = t.elapsed();

        let t = std::time::Instant::now();
        let (claims, undo) = judge_claims(
            &mut self.merged,
            &self.order,
            &port_fragments,
            settings,
            Held {
                previous,
                cluster: self.cluster.as_deref(),
            },
            &mut self.scopes,
            &mut report,
        );
        self.timings.claims = t.elapsed();

        let t = std::time::Instant::now();
        let taken_out = undo
            .removed_routers
            .iter()
            .map(|(p, n, _)| (*p, Obj::Router, n.clone()))
            .chain(undo.orphans.iter().map(|(p, o, n, _)| (*p, *o, n.clone())));
        let applied = self.pieces.apply(&self.merged, taken_out, &undo.forwards);
        let (yaml, json) = self.pieces.bodies();
        self.pieces.revert(applied);
        let rendered = Rendered {
            yaml,
            json,
            routers: [Proto::Http, Proto::Tcp, Proto::Udp]
                .iter()
                .map(|p| self.merged.section_ref(*p).routers.len())
                .sum(),
            services: [Proto::Http, Proto::Tcp, Proto::Udp]
                .iter()
                .map(|p| self.merged.section_ref(*p).services.len())
                .sum(),
        };
        undo.apply(&mut self.merged);
        self.timings.render = t.elapsed();
        snapshot(settings, rendered, report, claims)
    }

    /// Sets (or clears) the cluster view the next builds judge routers against.
    pub fn set_cluster_view(&mut self, view: Option<std::sync::Arc<ClusterView>>) {
        self.cluster = view;
    }

    /// How long each stage of the last build took.
    pub fn timings(&self) -> StageTimes {
        self.timings
    }

    /// Stages 1 and 2 for the repositories whose containers changed; forgets the repositories
    /// that are gone. Takes the changed repositories' objects out of the union (the caller adds
    /// their new ones) and returns them.
    fn refresh_repos(
        &mut self,
        containers: &[Container],
        settings: &RouteSettings,
    ) -> Vec<NetworkId> {
        let mut grouped: BTreeMap<NetworkId, Vec<&Container>> = BTreeMap::new();
        for c in containers {
            grouped.entry(c.network_id).or_default().push(c);
        }
        for list in grouped.values_mut() {
            list.sort_by(|a, b| container_order(a, b));
        }
        let gone: Vec<NetworkId> = self
            .repos
            .keys()
            .filter(|n| !grouped.contains_key(n))
            .copied()
            .collect();
        for n in gone {
            if let Some(repo) = self.repos.remove(&n) {
                self.merged.remove_part(&repo.merged);
                self.pieces.remove_part(&repo.merged);
                self.order.remove_part(&repo.merged);
            }
        }
        let mut changed = Vec::new();
        for (n, list) in &grouped {
            let repo = self.repos.entry(*n).or_default();
            if repo.has(list, &self.labels_key) {
                continue;
            }
            self.merged.remove_part(&repo.merged);
            self.pieces.remove_part(&repo.merged);
            self.order.remove_part(&repo.merged);
            repo.rebuild(list, settings, &self.labels_key);
            changed.push(*n);
        }
        changed
    }

    /// What the caches hold (tests: they forget what is gone): routers in age order,
    /// repositories, containers, rendered objects, listing entries, parsed rules.
    #[cfg(test)]
    fn cache_sizes(&self) -> [usize; 6] {
        let (objects, entries) = self.pieces.len();
        [
            self.order.len(),
            self.repos.len(),
            self.repos.values().map(|r| r.containers.len()).sum(),
            objects,
            entries,
            self.scopes.len(),
        ]
    }
}

/// The claims after a build.
struct ClaimsAfter {
    cluster: Option<GateOutcome>,
    ports: PortTable,
    hosts: HostTable,
}

/// What stage 3 changed in the published configuration, so that a builder can take its
/// union of merges back to what stage 2 made (instead of copying it for every build).
#[derive(Debug, Default)]
struct Undo {
    removed_routers: Vec<(Proto, String, merge::Shared)>,
    orphans: Vec<(Proto, Obj, String, merge::Shared)>,
    forwards: Vec<(Proto, String)>,
}

impl Undo {
    fn apply(self, published: &mut merge::Published) {
        for (proto, name) in self.forwards {
            for obj in [Obj::Router, Obj::Service] {
                merge::section_map(published.section(proto), obj).remove(&name);
                published.origins.remove(&(proto, obj, name.clone()));
            }
        }
        for (proto, obj, name, value) in self.orphans {
            merge::section_map(published.section(proto), obj).insert(name, value);
        }
        for (proto, name, value) in self.removed_routers {
            published.section(proto).routers.insert(name, value);
        }
    }
}

/// What is already held when stage 3 starts: the persisted claims, and in a cluster what etcd
/// says.
struct Held<'a> {
    previous: &'a Claims,
    cluster: Option<&'a ClusterView>,
}

/// Stage 3: hosts, then ports, then (in a cluster) the cluster's verdicts, then what refused
/// routers leave behind.
fn judge_claims(
    published: &mut merge::Published,
    order: &claims::AgeOrder,
    fragments: &[&fragment::Fragment],
    settings: &RouteSettings,
    held: Held<'_>,
    scopes: &mut claims::ScopeCache,
    report: &mut Report,
) -> (ClaimsAfter, Undo) {
    let Held { previous, cluster } = held;
    let mut undo = Undo::default();
    let hosts = claims::judge_hosts(
        published,
        order,
        settings,
        &previous.hosts,
        scopes,
        &mut report.refused,
        &mut undo.removed_routers,
    );
    let ports = claims::judge_ports(
        published,
        order,
        fragments,
        settings,
        &previous.ports,
        &mut report.refused,
        &mut report.conflicts,
        &mut undo.removed_routers,
        &mut undo.forwards,
    );
    let cluster = cluster.map(|view| {
        gate::gate(
            published,
            view,
            settings,
            scopes,
            &mut report.refused,
            &mut undo.removed_routers,
        )
    });
    undo.orphans = claims::drop_orphans(published, &undo.removed_routers);
    (
        ClaimsAfter {
            ports,
            hosts,
            cluster,
        },
        undo,
    )
}

fn snapshot(
    settings: &RouteSettings,
    rendered: Rendered,
    report: Report,
    claims: ClaimsAfter,
) -> Snapshot {
    let auto_routes_note = auto_routes_note(settings);
    Snapshot {
        routes_yaml: rendered.yaml,
        routes_json: rendered.json,
        router_count: rendered.routers,
        service_count: rendered.services,
        auto_routes_enabled: auto_routes_note.is_none(),
        auto_routes_note,
        rejected: report.rejected,
        refused: report.refused,
        conflicts: report.conflicts,
        ports: claims.ports,
        hosts: claims.hosts,
        cluster: claims.cluster,
    }
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

/// Stage 4's output.
struct Rendered {
    yaml: String,
    json: listing::Listing,
    routers: usize,
    services: usize,
}

/// Stage 4 of a full build: the YAML document, the JSON listing, and the counts.
fn render_published(published: &merge::Published) -> Rendered {
    let mut sections: render::Sections = Vec::new();
    let mut routers = 0;
    let mut services = 0;
    for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
        let s = published.section_ref(proto);
        routers += s.routers.len();
        services += s.services.len();
        sections.push((
            proto.as_str(),
            vec![
                ("middlewares", &s.middlewares),
                ("routers", &s.routers),
                ("services", &s.services),
            ],
        ));
    }
    Rendered {
        yaml: render::sections_to_yaml(&sections),
        json: listing::listing(published),
        routers,
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RouteSettings {
        let s = crate::host::settings::Settings {
            base_domain: Some("example.com".into()),
            ..Default::default()
        };
        RouteSettings::from_settings(&s).unwrap()
    }

    /// Container `name` of network `n` (slot `slot`) with `extra` labels.
    fn container(n: u32, name: &str, slot: u32, extra: &[(&str, &str)]) -> Container {
        let network_id = NetworkId::new(n).unwrap();
        let mut labels = BTreeMap::from([
            ("rediacc.service_name".to_string(), name.to_string()),
            (
                "rediacc.service_ip".to_string(),
                network_id.slot_ip(slot).unwrap().to_string(),
            ),
            ("rediacc.service_port".to_string(), "8080".to_string()),
        ]);
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        Container {
            network_id,
            id: format!("{name}-{n}-id"),
            name: name.to_string(),
            labels: std::sync::Arc::new(labels.into()),
            health: Health::None,
            created: i64::from(slot),
        }
    }

    /// A router whose host another repository may already hold, with a middleware only it
    /// uses (left behind as an orphan when the router is refused).
    fn claimant(n: u32, slot: u32) -> Container {
        container(
            n,
            "shop",
            slot,
            &[
                ("traefik.enable", "true"),
                ("traefik.http.routers.shop.rule", "Host(`shop.example.org`)"),
                ("traefik.http.routers.shop.middlewares", "hsts"),
                ("traefik.http.middlewares.hsts.headers.stsSeconds", "60"),
                ("traefik.http.services.shop.loadbalancer.server.port", "80"),
            ],
        )
    }

    fn assert_same(a: &Snapshot, b: &Snapshot) {
        assert_eq!(a.routes_yaml, b.routes_yaml);
        assert_eq!(a.routes_json, b.routes_json);
        assert_eq!(a.rejected, b.rejected);
        assert_eq!(a.refused, b.refused);
        assert_eq!(a.conflicts, b.conflicts);
        assert_eq!(a.ports, b.ports);
        assert_eq!(a.hosts, b.hosts);
    }

    /// The builder's union of merges is back to stage 2's after every build (stage 3's
    /// refusals, orphans and port forwards are taken back), and the caches hold exactly what
    /// the last build used.
    #[test]
    fn rebuilds_restore_the_union_and_forget_what_is_gone() {
        let st = settings();
        let mut builder = RouteBuilder::default();
        let mut claims = Claims::default();
        let rounds: Vec<Vec<Container>> = vec![
            vec![
                container(2816, "a", 0, &[]),
                claimant(2816, 1),
                claimant(2880, 2),
                container(2880, "db", 3, &[("rediacc.tcp_ports", "5432,0:6379")]),
            ],
            // The same again: everything reused.
            vec![
                container(2816, "a", 0, &[]),
                claimant(2816, 1),
                claimant(2880, 2),
                container(2880, "db", 3, &[("rediacc.tcp_ports", "5432,0:6379")]),
            ],
            // The holder of the host leaves: the claim stays with it, 2880 is still refused.
            vec![claimant(2880, 2), container(2944, "b", 0, &[])],
            vec![container(2944, "b", 0, &[])],
            vec![],
        ];
        for (round, containers) in rounds.iter().enumerate() {
            let incremental = builder.build(containers, &st, &claims);
            let full = build_with(containers, &st, &claims);
            assert_same(&incremental, &full);
            if round < 2 {
                // Stage 3 did take something out and add forwards.
                assert_eq!(full.refused.len(), 1, "{:?}", full.refused);
                assert!(full.routes_yaml.contains("-fwd"));
                assert!(!full.routes_yaml.contains("hsts-2880"));
                assert!(builder.merged.http.middlewares.contains_key("hsts-2880"));
            }
            let mut union = merge::Published::default();
            for repo in builder.repos.values() {
                union.add_part(&repo.merged);
            }
            for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
                assert_eq!(
                    builder.merged.section_ref(proto),
                    union.section_ref(proto),
                    "{containers:?}"
                );
            }
            assert_eq!(
                builder.merged.origins.keys().collect::<Vec<_>>(),
                union.origins.keys().collect::<Vec<_>>()
            );
            // The pieces are those of the union (stage 3 is applied to them for one build).
            let (routers, objects) = [Proto::Http, Proto::Tcp, Proto::Udp]
                .iter()
                .map(|p| builder.merged.section_ref(*p))
                .fold((0, 0), |(r, o), s| {
                    (
                        r + s.routers.len(),
                        o + s.routers.len() + s.services.len() + s.middlewares.len(),
                    )
                });
            let repos: BTreeSet<NetworkId> = containers.iter().map(|c| c.network_id).collect();
            let [aged, n_repos, n_containers, rendered, listed, by_router] = builder.cache_sizes();
            assert_eq!(aged, routers);
            assert_eq!(n_repos, repos.len());
            assert_eq!(n_containers, containers.len());
            assert_eq!(rendered, objects);
            assert_eq!(listed, routers);
            // Every router judged by its hosts has its parsed rule, no other.
            assert_eq!(
                by_router,
                builder.merged.http.routers.len() + builder.merged.tcp.routers.len()
            );
            claims = Claims {
                ports: full.ports,
                hosts: full.hosts,
            };
        }
        assert_eq!(builder.cache_sizes(), [0; 6]);
        assert_eq!(
            builder.build(&[], &st, &claims).routes_yaml,
            "{}\n",
            "nothing is left of the last repositories"
        );
    }

    /// A container of a small pool of shapes; `health` and `variant` change it without
    /// changing its ID (what the builder must still notice).
    fn pooled(n: u32, slot: u32, shape: u8, health: u8, variant: u8) -> Container {
        let port = (8080 + u32::from(variant % 2)).to_string();
        let mut c = match shape % 5 {
            0 => container(
                n,
                &format!("a{slot}"),
                slot,
                &[("rediacc.service_port", &port)],
            ),
            1 => claimant(n, slot),
            2 => container(
                n,
                &format!("w{slot}"),
                slot,
                &[
                    ("traefik.enable", "true"),
                    ("traefik.http.routers.r.rule", "Host(`w.example.org`)"),
                    ("traefik.http.services.r.loadbalancer.server.port", &port),
                ],
            ),
            3 => container(
                n,
                &format!("d{slot}"),
                slot,
                &[("rediacc.tcp_ports", "5432,0:6379")],
            ),
            _ => container(
                n,
                &format!("b{slot}"),
                slot,
                &[
                    ("traefik.enable", "true"),
                    ("traefik.http.routers.b.nosuch", "1"),
                ],
            ),
        };
        c.health = [Health::None, Health::Healthy, Health::Starting][usize::from(health % 3)];
        c.id = format!("{}-{shape}", c.id);
        c
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, .. Default::default() })]
        /// A long-lived builder equals a full build after every change, including changes the
        /// container ID does not show (health, labels), repositories appearing and leaving,
        /// and several containers claiming the same names.
        #[test]
        fn incremental_equals_full_with_silent_changes(
            changes in proptest::collection::vec(
                (0u32..4, 0u32..3, 0u8..4, 0u8..5, 0u8..3),
                1..30,
            )
        ) {
            let st = settings();
            // (network, slot) → (shape, health, variant)
            let mut live: BTreeMap<(u32, u32), (u8, u8, u8)> = BTreeMap::new();
            let mut builder = RouteBuilder::default();
            let mut claims = Claims::default();
            for (k, slot, action, shape, health) in changes {
                let n = 2816 + 64 * k;
                match (action, live.get_mut(&(n, slot))) {
                    // The same container (same ID) relabelled, or its health changed.
                    (0, Some(c)) => c.2 ^= 1,
                    (1, Some(c)) => c.1 = health,
                    (2, _) => {
                        live.remove(&(n, slot));
                    }
                    _ => {
                        live.insert((n, slot), (shape, health, 0));
                    }
                }
                let containers: Vec<Container> = live
                    .iter()
                    .map(|((n, slot), (shape, health, variant))| {
                        pooled(*n, *slot, *shape, *health, *variant)
                    })
                    .collect();
                let incremental = builder.build(&containers, &st, &claims);
                let full = build_with(&containers, &st, &claims);
                assert_same(&incremental, &full);
                claims = Claims { ports: full.ports, hosts: full.hosts };
            }
        }
    }
}
