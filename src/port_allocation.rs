//! TCP/UDP port allocation for `rediacc.tcp_ports` / `rediacc.udp_ports` and `traefik.tcp`
//! forwards (spec §6.4). Pure: the table is persisted by the route server.
//!
//! INTERFACE CONTRACT: `PortTable` (serde, persisted as JSON in the state folder).

use serde::{Deserialize, Serialize};

/// One allocation: a public port (its entrypoint) held by one repo's service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortAllocation {
    /// "tcp" or "udp"
    pub protocol: String,
    pub port: u16,
    pub entrypoint: String,
    pub network_id: u32,
    pub service: String,
    pub target: u16,
}

/// The persisted allocation table, sorted for deterministic output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortTable {
    pub allocations: Vec<PortAllocation>,
}
