//! The `renet` command line: parses arguments and hands each subcommand to the module that
//! owns it. Each module defines its own clap arguments, so this file stays a table of contents
//! (plus the conventions every command shares: logging, closed pipes, version, completions).

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use renet::compose::command as compose_command;
use renet::host::{daemons, proxy_config, rediaccfile};
use renet::logging::{self, LogFormat};
use renet::routing::claims_command;
use renet::routing::server as route_server;

/// mimalloc instead of glibc's malloc: a route server rebuild allocates and frees many small
/// strings on the threads of the blocking pool, where glibc's malloc (its per-thread arenas,
/// chunk merging) took half of a rebuild's time at 5,000 containers; with mimalloc one change
/// is served in about half the time (docs/performance.md, "Route server").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` in the `mi_option_e` enum of the mimalloc it bundles
/// (`c_src/mimalloc/v3/include/mimalloc.h` of libmimalloc-sys 0.1.49, pinned exactly in
/// Cargo.toml because the crate does not name this option itself).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The route server's allocator settings, for a long-lived process whose memory should follow
/// what it holds (docs/performance.md "(b'')"):
/// - freed memory goes back to the system at once instead of after mimalloc's default delay
///   (1 s, longer for arenas): a rebuild frees a few megabytes, and with changes arriving
///   faster than the delay that memory was never returned (RSS at the first snapshot of 5,000
///   containers: 115 MiB with the delay, 59 MiB without; rebuild times unchanged);
/// - no transparent huge pages: mimalloc asks for them (`MADV_HUGEPAGE`) on its arenas, and a
///   2 MiB page is resident whole as soon as one byte of it is used, so a sparsely used heap
///   counted several times its size (5,000 containers: 50 MiB of the 108 MiB were huge pages;
///   400 containers: 58 MiB → 31 MiB without them). The kernel flag covers memory mapped
///   before `main` too, which mimalloc's own option, read once at its start, would not.
fn tune_allocator_for_route_server() {
    // SAFETY: sets one integer option of the allocator; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        // Only memory is at stake, never correctness: say so and go on.
        tracing::warn!("cannot turn transparent huge pages off (prctl): {e}");
    }
}

#[derive(Parser)]
#[command(
    name = "renet",
    version,
    about = "Stable loopback IPs for a repository's docker compose services, and a Traefik route server for them"
)]
struct Cli {
    /// Log lines as text or JSON (one object per line). Logs go to stderr; `RENET_LOG` sets
    /// the level (`debug`, `renet=debug,bollard=info`); `NO_COLOR` turns colours off.
    #[arg(long, global = true, env = "RENET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    RouteServer(Box<route_server::RouteServerArgs>),
    /// List and release host claims and port allocations of the route server.
    #[command(subcommand)]
    Claims(claims_command::ClaimsCommand),
    /// Several servers behind one edge: list the cluster in etcd, release cluster-wide claims.
    #[command(subcommand)]
    Cluster(renet::routing::cluster::command::ClusterCommand),
    /// Traefik static configuration and systemd units.
    #[command(subcommand)]
    Proxy(proxy_config::ProxyCommand),
    /// Start, stop and list repo daemons (one isolated dockerd per repo).
    #[command(subcommand)]
    Daemon(daemons::DaemonCommand),
    /// Run a repository's Rediaccfiles (`prep`, `up`, `down`, `info`).
    #[command(subcommand)]
    Repo(rediaccfile::RepoCommand),
    /// Show a repository's routes, ports and every refusal or conflict, from the route server.
    Routes(renet::routing::routes_cli::RoutesArgs),
    /// Decode a repository's labels offline with the route server's code; non-zero on errors.
    Check(renet::routing::check::CheckArgs),
    /// Print renet's version.
    Version(VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print renet's man page (roff), or write one page per command into a folder.
    Man(ManArgs),
}

#[derive(clap::Args)]
struct VersionArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
struct ManArgs {
    /// Write `renet.1` and `renet-<command>.1` for every command into this folder instead of
    /// printing `renet.1`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return parse_error(err),
    };
    // A closed pipe (`renet ips | head -0`) ends the command quietly, as for any Unix tool,
    // instead of a panic in `println!`. The route server keeps Rust's default (SIGPIPE
    // ignored): a client that goes away must never kill it.
    // Nor may a closed connection kill `renet cluster`: etcd closes the TLS connection when it
    // refuses the client certificate, and the write into it must be an error to report.
    if !matches!(cli.command, Command::RouteServer(_) | Command::Cluster(_)) {
        restore_sigpipe();
    }
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Compose(args) => compose_command::run(args),
        Command::Ips(args) => compose_command::run_ips(args),
        Command::RouteServer(args) => {
            tune_allocator_for_route_server();
            route_server::run(*args)
        }
        Command::Proxy(cmd) => proxy_config::run(cmd),
        Command::Claims(cmd) => claims_command::run(cmd),
        Command::Cluster(cmd) => renet::routing::cluster::command::run(cmd),
        Command::Daemon(cmd) => daemons::run(cmd),
        Command::Repo(cmd) => rediaccfile::run(cmd),
        Command::Routes(args) => renet::routing::routes_cli::run(args),
        Command::Check(args) => renet::routing::check::run(args),
        Command::Version(args) => print_version(args.json),
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "renet",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Man(args) => man(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("renet: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// clap's message, plus the way out when `renet compose` was given compose's arguments
/// without the `--` in front of them.
fn parse_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = err.print();
    if !matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let Some(hint) = missing_separator_hint(&args) {
            eprintln!("\nhint: {hint}");
        }
    }
    ExitCode::from(match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        _ => 2,
    })
}

/// `renet compose up -d` → a hint to write `renet compose -- up -d`.
fn missing_separator_hint(args: &[String]) -> Option<String> {
    let pos = args.iter().position(|a| a == "compose")?;
    if args.iter().any(|a| a == "--") {
        return None;
    }
    // renet's own flags stay before `--`; everything else is compose's.
    const WITH_VALUE: &[&str] = &["--network-id", "--repo-root", "--socket-dir", "--data-dir"];
    const SWITCHES: &[&str] = &["--unsafe", "--dry-run"];
    let mut rest: Vec<&str> = Vec::new();
    let mut words = args[pos + 1..].iter().map(String::as_str);
    while let Some(a) = words.next() {
        let flag = a.split('=').next().unwrap_or(a);
        if WITH_VALUE.contains(&flag) {
            if !a.contains('=') {
                words.next();
            }
        } else if !SWITCHES.contains(&a) {
            rest.push(a);
        }
    }
    Some(format!(
        "docker compose's arguments go after `--`: renet compose [FLAGS] -- {}",
        if rest.is_empty() {
            "up -d".to_string()
        } else {
            rest.join(" ")
        }
    ))
}

fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: setting the default disposition installs no handler code.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

fn print_version(json: bool) -> anyhow::Result<u8> {
    let version = env!("CARGO_PKG_VERSION");
    if json {
        println!(
            "{}",
            serde_json::json!({ "name": "renet", "version": version })
        );
    } else {
        println!("renet {version}");
    }
    Ok(0)
}

fn man(args: ManArgs) -> anyhow::Result<u8> {
    use anyhow::Context;
    let cmd = Cli::command();
    match args.out_dir {
        None => {
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("cannot write the man page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("{}: cannot write the man pages", dir.display()))?;
            eprintln!("renet: man pages written to {}", dir.display());
        }
    }
    Ok(0)
}
