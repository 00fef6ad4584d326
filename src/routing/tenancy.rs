//! The operator's multi-tenant settings for route building: the `routing` object of the
//! settings file (docs/labels.md, "Multi-tenant rules"). Each knob widens an allow-list or
//! sets a bound; the defaults are the strict ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `routing` in the settings file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct TenancySettings {
    /// Host names and suffixes granted to network IDs:
    /// `{"2816": ["shop.example.com", "*.shop.example.com"]}`. A granted name belongs to its
    /// grantee; a suffix grant is what lets a repository use `HostRegexp` there.
    pub host_grants: BTreeMap<String, Vec<String>>,
    /// Serve only granted names (and automatic-route hosts): first claims are off.
    pub grants_only: bool,
    /// Other providers' objects tenants may reference, exactly as written
    /// (`secure-headers@file`); also `tls.options` and `serversTransport` names.
    pub allowed_references: Vec<String>,
    /// Plugin names tenants may configure in middlewares.
    pub allowed_plugins: Vec<String>,
    /// Let forwardAuth / redis addresses be DNS names (they could resolve anywhere).
    pub allow_outbound_hostnames: bool,
    /// Lowest health-check interval/timeout and circuit-breaker check period, e.g. `1s`.
    pub health_check_floor: String,
    /// Extra entrypoints HTTP routers may name, besides web, websecure, web-v6, websecure-v6
    /// and the automatic routes' entrypoints.
    pub http_entrypoints: Vec<String>,
    /// Ports of the dynamic TCP range one repository may hold.
    pub dynamic_port_quota: usize,
    /// Most `rediacc.tcp_ports` + `rediacc.udp_ports` entries one container may list.
    pub max_ports_per_container: usize,
}

impl Default for TenancySettings {
    fn default() -> Self {
        TenancySettings {
            host_grants: BTreeMap::new(),
            grants_only: false,
            allowed_references: Vec::new(),
            allowed_plugins: Vec::new(),
            allow_outbound_hostnames: false,
            health_check_floor: "1s".into(),
            http_entrypoints: Vec::new(),
            dynamic_port_quota: 4,
            max_ports_per_container: 64,
        }
    }
}
