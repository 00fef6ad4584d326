//! The `renet` command line: parses arguments and hands each subcommand to the module that
//! owns it. Each module defines its own clap arguments, so this file stays a table of contents.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use renet::compose::command as compose_command;
use renet::host::{daemons, proxy_config, rediaccfile};
use renet::routing::claims_command;
use renet::routing::server as route_server;

#[derive(Parser)]
#[command(
    name = "renet",
    version,
    about = "Stable loopback IPs for a repository's docker compose services, and a Traefik route server for them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run docker compose for a repo: stable loopback IPs, rediacc labels, host networking.
    Compose(compose_command::ComposeArgs),
    /// Print each service of a repo with its slot and IP.
    Ips(compose_command::IpsArgs),
    /// Serve Traefik v3 dynamic configuration built from the repo daemons' containers.
    RouteServer(route_server::RouteServerArgs),
    /// List and release host claims and port allocations of the route server.
    #[command(subcommand)]
    Claims(claims_command::ClaimsCommand),
    /// Traefik static configuration and systemd units.
    #[command(subcommand)]
    Proxy(proxy_config::ProxyCommand),
    /// Start, stop and list repo daemons (one isolated dockerd per repo).
    #[command(subcommand)]
    Daemon(daemons::DaemonCommand),
    /// Run a repository's Rediaccfiles (`prep`, `up`, `down`, `info`).
    #[command(subcommand)]
    Repo(rediaccfile::RepoCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Compose(args) => compose_command::run(args),
        Command::Ips(args) => compose_command::run_ips(args),
        Command::RouteServer(args) => route_server::run(args),
        Command::Proxy(cmd) => proxy_config::run(cmd),
        Command::Claims(cmd) => claims_command::run(cmd),
        Command::Daemon(cmd) => daemons::run(cmd),
        Command::Repo(cmd) => rediaccfile::run(cmd),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("renet: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr so that stdout stays what the command prints (compose output, JSON).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RENET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
