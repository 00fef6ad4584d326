//! The server around compose and routing: repo daemons, the Rediaccfile runner, Traefik's
//! static configuration and units, and the settings file they share.

pub mod daemons;
pub mod edge_config;
pub mod isolation;
pub mod proxy_config;
pub mod rediaccfile;
pub mod repo_binding;
pub mod settings;
