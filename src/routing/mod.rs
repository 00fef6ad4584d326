//! The route server: discovery of containers on every repo daemon, Traefik label decoding,
//! route building (per container, merged, judged across repositories, rendered), port
//! allocation, and the HTTP endpoints Traefik and operators read.
//!
//! Route building is a chain of stages (`build`): `fragment` (one container), `merge`
//! (Traefik's merge rule), `claims` (hosts and ports across repositories, with `rule`,
//! `ownership`, `port_allocation`, `tenant_policy`), `render` and `listing` (the bodies).

pub mod build;
pub mod check;
pub mod claims;
pub mod claims_command;
pub mod claims_store;
pub mod cluster;
pub mod compact_map;
pub mod discovery;
pub mod fragment;
pub mod http_api;
pub mod label_set;
pub mod last_known;
pub mod listing;
pub mod merge;
pub mod metrics;
pub mod ownership;
pub mod pieces;
pub mod port_allocation;
pub mod redeploy;
pub mod render;
pub mod routes_cli;
pub mod rule;
pub mod server;
pub mod tenancy;
pub mod tenant_policy;
pub mod traefik_labels;
