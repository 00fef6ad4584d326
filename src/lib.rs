//! renet: stable loopback IPs for docker compose repositories (`renet compose`), and a route
//! server that turns container labels into Traefik v3 dynamic configuration.
//!
//! The pure parts (addresses, compose rewriting, label → route translation) do no I/O, so they
//! are tested directly; the I/O sits in the modules named after what they talk to (docker
//! compose, dockerd, the socket folder, HTTP).

// --- repositories and `renet compose` ---
pub mod addresses;
pub mod atomic_file;
pub mod compose_command;
pub mod compose_files;
pub mod compose_invoke;
pub mod compose_model;
pub mod compose_rewrite;
pub mod interpolation;
pub mod slots;
pub mod vetting;

// --- route server ---
pub mod discovery;
pub mod http_api;
pub mod port_allocation;
pub mod route_server;
pub mod routes;
pub mod traefik_labels;

// --- operating a server ---
pub mod daemons;
pub mod proxy_config;
pub mod rediaccfile;
pub mod settings;
