//! The infrastructure settings file shared by `renet route-server` and `renet proxy config`,
//! so the two always agree on which entrypoints exist (spec §6.4, §7).
//!
//! Stored as JSON at `/etc/rediacc/renet.json` (override with `--settings` or
//! `RENET_SETTINGS`). Missing file → defaults. Unknown keys are an error: a typo in a
//! settings file should not silently change nothing. The Cloudflare token is never stored
//! here; `renet proxy config` writes it to a 0600 environment file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const DEFAULT_SETTINGS_PATH: &str = "/etc/rediacc/renet.json";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7111";
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/rediacc";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rediacc/route-server";
pub const DEFAULT_HOST_TEMPLATE: &str = "{service}-{network_id}.{base_domain}";

/// TCP ports that always have an entrypoint `tcp-<port>` (spec §6.4).
pub const PRECONFIGURED_TCP_PORTS: &[u16] = &[3306, 5432, 6379, 27017, 11211, 5672, 9092];
/// UDP ports that always have an entrypoint `udp-<port>`.
pub const PRECONFIGURED_UDP_PORTS: &[u16] = &[53];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Settings {
    /// Route server listen address (must be loopback).
    pub listen: String,
    /// Folder holding the repo daemons' `docker-<N>.sock`.
    pub socket_dir: PathBuf,
    /// Folder for the route server's persistent state (port allocations).
    pub state_dir: PathBuf,
    /// Base domain for automatic routes; none → no automatic routes.
    pub base_domain: Option<String>,
    /// Host name template of automatic routes: `{service}`, `{network_id}`, `{base_domain}`.
    pub host_template: String,
    /// Tier 1 automatic routes on/off.
    pub auto_routes: bool,
    /// Entrypoints of automatic routes. Empty → `websecure` (+ `websecure-v6` with IPv6).
    pub entrypoints: Vec<String>,
    /// Cert resolver of automatic routes; empty string → none.
    pub cert_resolver: String,
    /// Extra TCP ports registered with the proxy (entrypoints `tcp-<port>`).
    pub tcp_ports: Vec<u16>,
    /// Extra UDP ports registered with the proxy (entrypoints `udp-<port>`).
    pub udp_ports: Vec<u16>,
    /// First and last port of the dynamic TCP range.
    pub dynamic_range: [u16; 2],
    /// Public addresses Traefik binds (none → loopback, for a test machine).
    pub public_ipv4: Option<String>,
    pub public_ipv6: Option<String>,
    /// ACME account e-mail of the `letsencrypt` resolver.
    pub cert_email: Option<String>,
    /// Ports of Traefik's `web` and `websecure` entrypoints (80/443 in production).
    pub http_port: u16,
    pub https_port: u16,
    /// Where `renet proxy config` writes Traefik's static configuration and env file.
    pub traefik_dir: PathBuf,
    /// Loopback address of Traefik's API and ping entrypoint (`traefik`); none → no API.
    /// Only loopback: the API has no authentication.
    pub traefik_api_address: Option<String>,
    /// Multi-tenant rules of route building: host grants, allow-lists, bounds.
    pub routing: crate::routing::tenancy::TenancySettings,
    /// Seconds a departed container keeps its routes while a replacement starts (redeploys).
    pub redeploy_grace_seconds: u64,
    /// File the route server also writes the dynamic configuration to (atomically, on every
    /// change), for Traefik's file provider to pick up at once; none → HTTP polling only.
    pub dynamic_file: Option<PathBuf>,
    /// What `renet proxy config` remembers: unit folder, binaries, preset ports, access log,
    /// Traefik metrics (`proxy_config::ProxySettings`).
    pub proxy: crate::host::proxy_config::ProxySettings,
    /// What repositories' containers may reach besides their own block (docs/operations.md).
    pub isolation: crate::host::isolation::IsolationSettings,
    /// What `renet compose` lets repositories use beyond its allow-list (spec §5).
    pub compose: crate::compose::vetting::ComposeSettings,
    /// Several servers behind one edge: etcd endpoints, this server's name and address
    /// (docs/cluster.md); no endpoints → one server.
    pub cluster: crate::routing::cluster::settings::ClusterSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: DEFAULT_LISTEN.into(),
            socket_dir: DEFAULT_SOCKET_DIR.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            base_domain: None,
            host_template: DEFAULT_HOST_TEMPLATE.into(),
            auto_routes: true,
            entrypoints: Vec::new(),
            cert_resolver: "letsencrypt".into(),
            tcp_ports: Vec::new(),
            udp_ports: Vec::new(),
            dynamic_range: [10000, 10010],
            public_ipv4: None,
            public_ipv6: None,
            cert_email: None,
            http_port: 80,
            https_port: 443,
            traefik_dir: "/etc/rediacc/traefik".into(),
            traefik_api_address: None,
            routing: Default::default(),
            redeploy_grace_seconds: 10,
            dynamic_file: None,
            proxy: Default::default(),
            isolation: Default::default(),
            compose: Default::default(),
            cluster: Default::default(),
        }
    }
}

impl Settings {
    /// Loads the file, or the defaults when it does not exist.
    pub fn load(path: &Path) -> Result<Settings> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: invalid settings file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    }

    /// The settings path: explicit, else `RENET_SETTINGS`, else the default.
    pub fn path(explicit: Option<&Path>) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("RENET_SETTINGS").map(PathBuf::from))
            .unwrap_or_else(|| DEFAULT_SETTINGS_PATH.into())
    }

    /// Entrypoints of automatic routes, defaulted by whether IPv6 is configured.
    pub fn effective_entrypoints(&self) -> Vec<String> {
        if !self.entrypoints.is_empty() {
            return self.entrypoints.clone();
        }
        let mut eps = vec!["websecure".to_string()];
        if self.public_ipv6.is_some() {
            eps.push("websecure-v6".to_string());
        }
        eps
    }

    /// Every TCP port with an entrypoint: preset (`proxy.preset_tcp_ports`, else the
    /// preconfigured ones), registered, and the dynamic range.
    pub fn tcp_entrypoint_ports(&self) -> std::collections::BTreeSet<u16> {
        let presets = self.proxy.preset_tcp_ports.as_deref();
        let mut ports: std::collections::BTreeSet<u16> = presets
            .unwrap_or(PRECONFIGURED_TCP_PORTS)
            .iter()
            .copied()
            .collect();
        ports.extend(self.tcp_ports.iter().copied());
        ports.extend(self.dynamic_range[0]..=self.dynamic_range[1]);
        ports
    }

    /// Every UDP port with an entrypoint: preconfigured and registered.
    pub fn udp_entrypoint_ports(&self) -> std::collections::BTreeSet<u16> {
        let presets = self.proxy.preset_udp_ports.as_deref();
        let mut ports: std::collections::BTreeSet<u16> = presets
            .unwrap_or(PRECONFIGURED_UDP_PORTS)
            .iter()
            .copied()
            .collect();
        ports.extend(self.udp_ports.iter().copied());
        ports
    }
}
