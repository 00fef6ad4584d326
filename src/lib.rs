//! renet: stable loopback IPs for docker compose repositories (`renet compose`), and a route
//! server that turns container labels into Traefik v3 dynamic configuration.
//!
//! The tree shows the three parts:
//! - [`compose`]: `renet compose` — compose files, compose's resolved model, vetting, the final
//!   model and the hosts file, handing over to docker compose;
//! - [`routing`]: the route server — discovery on the repo daemons, Traefik label decoding,
//!   route building, port allocation, the HTTP endpoints;
//! - [`host`]: the server around them — repo daemons, Rediaccfiles, Traefik's static
//!   configuration, the settings file.
//!
//! The pure parts (addresses, compose rewriting, label → route translation) do no I/O, so they
//! are tested directly; the I/O sits in the modules named after what they talk to (docker
//! compose, dockerd, the socket folder, HTTP).

pub mod addresses;
pub mod atomic_file;
pub mod compose;
pub mod host;
pub mod logging;
pub mod routing;
