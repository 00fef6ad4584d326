//! The route server: discovery of containers on every repo daemon, Traefik label decoding,
//! route building (per container, merged, judged across repositories, rendered), port
//! allocation, and the HTTP endpoints Traefik and operators read.

pub mod build;
pub mod check;
pub mod discovery;
pub mod http_api;
pub mod last_known;
pub mod metrics;
pub mod port_allocation;
pub mod routes_cli;
pub mod server;
pub mod traefik_labels;
