//! Route building: the containers discovery sees → the Traefik v3 dynamic configuration the
//! route server publishes, plus what `/routes.json`, `/health` and `/ports` report.
//! Pure: no I/O, so every rule is tested directly (spec §6.2–§6.4, TRAEFIK-LABELS.md).
//!
//! INTERFACE CONTRACT (shared by discovery/route_server and this module; keep these names):
//! `Container`, `Health`, `RouteSettings`, `Snapshot`, `build`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::addresses::NetworkId;
use crate::port_allocation::PortTable;

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
    pub fn from_settings(s: &crate::settings::Settings) -> Self {
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

/// Builds the snapshot. `previous_ports` is the persisted allocation table; allocations are
/// kept stable across builds and restarts.
pub fn build(
    containers: &[Container],
    settings: &RouteSettings,
    previous_ports: &PortTable,
) -> Snapshot {
    let _ = (containers, settings);
    Snapshot {
        routes_yaml: "{}\n".into(),
        routes_json: serde_json::json!({"http": [], "tcp": [], "udp": []}),
        ports: previous_ports.clone(),
        ..Default::default()
    }
}
