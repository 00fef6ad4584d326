//! Several servers behind one edge (docs/cluster.md): cluster-wide ownership of host names and
//! edge ports, decided by etcd transactions, and the Traefik keys an edge reads.
//!
//! - `settings`: the `cluster` settings object and its checks;
//! - `keys`: the etcd key schema (pure);
//! - `view`: the mirror of etcd this server keeps, and its verdict per resource (pure);
//! - `gate`: the route-building stage that serves a router only with its resources held;
//! - `agent`: the etcd connection — lease, watch, transactions;
//! - `command`: `renet cluster status|release`.

pub mod agent;
pub mod command;
pub mod gate;
pub mod keys;
pub mod settings;
pub mod view;
