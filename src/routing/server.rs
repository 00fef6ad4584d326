//! `renet route-server` (spec §6): wires discovery, route building and the HTTP endpoints
//! together, and keeps the port allocations on disk.
//!
//! Flow: discovery tasks update the container set → the builder task (woken through a
//! `Notify`, so a burst of events costs one rebuild) calls `routes::build` off the async
//! workers, persists the port table when it changed, and swaps the published snapshot → the
//! HTTP handlers serve whatever snapshot is current. Serving starts once every daemon present
//! at startup has been listed (bounded by [`INITIAL_SYNC_TIMEOUT`]), so a restart never
//! publishes a half-empty configuration that Traefik would apply and then undo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::host::settings::Settings;
use crate::routing::build::{self as routes, Container, RouteSettings};
use crate::routing::discovery::{self, Discovery};
use crate::routing::http_api::{self, AppState, Published};
use crate::routing::last_known;
use crate::routing::port_allocation::PortTable;

/// Longest wait at startup for the first listing of every daemon before serving anyway.
pub const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// File name of the persisted port table in the state folder.
pub const PORTS_FILE: &str = "ports.json";

/// Options of `renet route-server`. Each flag overrides the same key of the settings file,
/// which `renet proxy config` reads too; so set shared keys (entrypoints, ports, domain) in the
/// file, and use flags for one-off runs and tests.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RouteServerArgs {
    /// Settings file shared with `renet proxy config` [default: /etc/rediacc/renet.json;
    /// a missing file means built-in defaults].
    #[arg(long, env = "RENET_SETTINGS", value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Address to serve on; must be a loopback address (Traefik polls it locally)
    /// [settings: listen; default 127.0.0.1:7111].
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// Folder watched for repo daemon sockets `docker-<N>.sock`
    /// [settings: socket_dir; default /var/run/rediacc].
    #[arg(long, value_name = "DIR")]
    pub socket_dir: Option<PathBuf>,
    /// Folder for persistent state (`ports.json`, the port allocations)
    /// [settings: state_dir; default /var/lib/rediacc/route-server].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Base domain of automatic routes; without one there are no automatic routes
    /// [settings: base_domain].
    #[arg(long, value_name = "DOMAIN")]
    pub base_domain: Option<String>,
    /// Host name of automatic routes, from `{service}`, `{network_id}`, `{base_domain}`
    /// [settings: host_template; default {service}-{network_id}.{base_domain}].
    #[arg(long, value_name = "TEMPLATE")]
    pub host_template: Option<String>,
    /// Automatic (tier 1) routes on or off [settings: auto_routes; default true].
    #[arg(long, value_name = "true|false")]
    pub auto_routes: Option<bool>,
    /// Entrypoints of automatic routes, comma separated [settings: entrypoints; default
    /// websecure, plus websecure-v6 when public_ipv6 is set].
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub entrypoints: Option<Vec<String>>,
    /// Cert resolver of automatic routes; an empty value means none
    /// [settings: cert_resolver; default letsencrypt].
    #[arg(long, value_name = "NAME")]
    pub cert_resolver: Option<String>,
    /// Extra TCP ports registered with the proxy (entrypoints `tcp-<port>`), comma separated;
    /// replaces the file's list [settings: tcp_ports].
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub tcp_ports: Option<Vec<u16>>,
    /// Extra UDP ports registered with the proxy (entrypoints `udp-<port>`), comma separated;
    /// replaces the file's list [settings: udp_ports].
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub udp_ports: Option<Vec<u16>>,
    /// The dynamic TCP port range, `FIRST-LAST` [settings: dynamic_range; default 10000-10010].
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_range)]
    pub dynamic_range: Option<(u16, u16)>,
    /// Folder of the repo daemons' data, where repositories are registered: a registered
    /// repository whose daemon is missing makes `/health` degraded [default /var/lib/rediacc].
    #[arg(long, env = "RENET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}`: expected FIRST-LAST, e.g. 10000-10010"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: `{a}` is not a port number"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: `{b}` is not a port number"))?;
    if a == 0 || a > b {
        return Err(format!("`{s}`: the first port must be 1..=LAST"));
    }
    Ok((a, b))
}

/// Everything the server needs, after flags were laid over the settings file.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub socket_dir: PathBuf,
    pub state_dir: PathBuf,
    pub data_dir: PathBuf,
    pub routes: RouteSettings,
}

impl Config {
    /// Loads the settings file and applies the flags.
    pub fn resolve(args: &RouteServerArgs) -> Result<Config> {
        let path = Settings::path(args.settings.as_deref());
        let mut s = Settings::load(&path)?;
        let a = args.clone();
        if let Some(v) = a.listen {
            s.listen = v;
        }
        if let Some(v) = a.socket_dir {
            s.socket_dir = v;
        }
        if let Some(v) = a.state_dir {
            s.state_dir = v;
        }
        if let Some(v) = a.base_domain {
            s.base_domain = Some(v);
        }
        if let Some(v) = a.host_template {
            s.host_template = v;
        }
        if let Some(v) = a.auto_routes {
            s.auto_routes = v;
        }
        if let Some(v) = a.entrypoints {
            s.entrypoints = v
                .into_iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
        }
        if let Some(v) = a.cert_resolver {
            s.cert_resolver = v;
        }
        if let Some(v) = a.tcp_ports {
            s.tcp_ports = v;
        }
        if let Some(v) = a.udp_ports {
            s.udp_ports = v;
        }
        if let Some((lo, hi)) = a.dynamic_range {
            s.dynamic_range = [lo, hi];
        }
        if s.dynamic_range[0] == 0 || s.dynamic_range[0] > s.dynamic_range[1] {
            bail!(
                "{}: dynamic_range {:?} must be [FIRST, LAST] with 1 <= FIRST <= LAST",
                path.display(),
                s.dynamic_range
            );
        }
        let listen = parse_listen(&s.listen)?;
        Ok(Config {
            listen,
            socket_dir: s.socket_dir.clone(),
            state_dir: s.state_dir.clone(),
            data_dir: a
                .data_dir
                .unwrap_or_else(|| crate::host::daemons::DEFAULT_DATA_DIR.into()),
            routes: RouteSettings::from_settings(&s),
        })
    }
}

/// Parses the listen address and refuses anything that is not loopback: the route server
/// shows every repo's internal addresses and has no authentication.
pub fn parse_listen(s: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = s.trim().parse().with_context(|| {
        format!("listen address `{s}`: expected IP:PORT, e.g. 127.0.0.1:7111 or [::1]:7111")
    })?;
    if !addr.ip().is_loopback() {
        bail!(
            "listen address `{s}` is not a loopback address: the route server exposes every \
             repository's internal addresses without authentication, so it only listens on \
             127.0.0.0/8 or ::1 (Traefik reaches it there)"
        );
    }
    Ok(addr)
}

pub fn run(args: RouteServerArgs) -> Result<u8> {
    let config = Config::resolve(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("route-server")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(config, shutdown_signal()))?;
    Ok(0)
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

/// Runs the route server until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "{}: cannot create the state folder",
            config.state_dir.display()
        )
    })?;
    let ports_path = config.state_dir.join(PORTS_FILE);
    let ports = load_ports(&ports_path)?;
    // Bind first: a busy or forbidden address is reported at once, not after discovery.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;

    let last_known_path = config.state_dir.join(last_known::FILE);
    let last_known = last_known::load(&last_known_path).unwrap_or_else(|e| {
        tracing::warn!("{e:#}; starting without last known containers");
        Vec::new()
    });
    let discovery = Discovery::with_last_known(last_known);
    let watcher = discovery::start(discovery.clone(), config.socket_dir.clone()).await;
    let started = Instant::now();
    if !discovery.wait_initial_sync(INITIAL_SYNC_TIMEOUT).await {
        tracing::warn!(
            "some daemons were not listed within {:?}; serving what is known",
            INITIAL_SYNC_TIMEOUT
        );
    }
    let first = build_snapshot(&discovery, &config.routes, &ports).await?;
    let container_count = first.1.len();
    let expected = crate::routing::http_api::Expected {
        data_dir: config.data_dir.clone(),
        socket_dir: config.socket_dir.clone(),
    };
    let state = AppState::with_expected(
        Published::new(first.0, 0),
        discovery.clone(),
        Some(expected),
    );
    // The saver writes the latest container set in the background: a slow disk never delays
    // the next rebuild, and a burst of changes costs one write of the newest set.
    let (saves, saved) = tokio::sync::watch::channel(Arc::new(first.1.clone()));
    let saver = tokio::spawn(saver_loop(saved, last_known_path.clone()));
    persist_if_changed(&state, &ports_path, &ports, &state.current().snapshot.ports).await;
    tracing::info!(
        "serving on http://{} ({} containers from {} daemons in {:?}; sockets in {}, state in {})",
        config.listen,
        container_count,
        discovery.daemons().len(),
        started.elapsed(),
        config.socket_dir.display(),
        config.state_dir.display()
    );

    let builder = tokio::spawn(builder_loop(
        state.clone(),
        first.1,
        config.routes.clone(),
        ports_path,
        saves,
    ));
    let result = axum::serve(listener, http_api::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed");
    builder.abort();
    saver.abort();
    // A last save on the way out, so a change just before a restart is not lost.
    let final_set = discovery.containers();
    let saved_at_exit =
        tokio::task::spawn_blocking(move || last_known::save(&last_known_path, &final_set)).await;
    if let Ok(Err(e)) = saved_at_exit {
        tracing::warn!("{e:#}");
    }
    watcher.abort();
    tracing::info!("stopped");
    result
}

/// Builds a snapshot from the current container set, off the async worker threads.
/// Returns the snapshot and the containers it was built from.
async fn build_snapshot(
    discovery: &Discovery,
    settings: &RouteSettings,
    ports: &PortTable,
) -> Result<(routes::Snapshot, Vec<Container>)> {
    let containers = discovery.containers();
    let (settings, ports) = (settings.clone(), ports.clone());
    tokio::task::spawn_blocking(move || {
        let snapshot = routes::build(&containers, &settings, &ports);
        (snapshot, containers)
    })
    .await
    .context("route building panicked")
}

/// Rebuilds on every change of the container set and publishes the result. `last_containers`
/// is what the published snapshot was built from, so a change that raced the first build is
/// not skipped.
async fn builder_loop(
    state: Arc<AppState>,
    mut last_containers: Vec<Container>,
    settings: RouteSettings,
    ports_path: PathBuf,
    saves: tokio::sync::watch::Sender<Arc<Vec<Container>>>,
) {
    let discovery = state.discovery.clone();
    let mut generation = 0u64;
    loop {
        discovery.changed().await;
        let containers = discovery.containers();
        if containers == last_containers {
            continue;
        }
        let started = Instant::now();
        let previous = state.current();
        let (ports, s) = (previous.snapshot.ports.clone(), settings.clone());
        let next_generation = generation + 1;
        // Building and rendering (YAML, sorted JSON) both run on the blocking pool: at
        // thousands of containers they take tens of milliseconds, which must not stall the
        // async workers that answer HTTP requests.
        let built = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let snapshot = routes::build(&containers, &s, &ports);
            let build_time = t.elapsed();
            (
                Published::new(snapshot, next_generation),
                build_time,
                containers,
            )
        })
        .await;
        let (published, build_time, containers) = match built {
            Ok(b) => b,
            Err(e) => {
                // A bug in route building must not stop the server; keep serving the last one
                // until the container set changes again.
                tracing::error!("route building panicked: {e}; keeping the previous snapshot");
                last_containers = discovery.containers();
                continue;
            }
        };
        persist_if_changed(
            &state,
            &ports_path,
            &previous.snapshot.ports,
            &published.snapshot.ports,
        )
        .await;
        generation = next_generation;
        let changed_yaml = published.routes_yaml != previous.routes_yaml;
        state.publish(published);
        discovery
            .histograms
            .rebuild_seconds
            .observe(started.elapsed().as_secs_f64());
        saves.send_replace(Arc::new(containers.clone()));
        tracing::debug!(
            "snapshot {generation}: {} containers, built in {:?} (routes::build {:?}){}",
            containers.len(),
            started.elapsed(),
            build_time,
            if changed_yaml { ", routes changed" } else { "" }
        );
        last_containers = containers;
    }
}

/// Saves the container set of each published snapshot (`last_known`), newest first: the
/// current value at start, then whenever it changes. A failure is logged only: the file is a
/// cache for the next start.
async fn saver_loop(mut saved: tokio::sync::watch::Receiver<Arc<Vec<Container>>>, path: PathBuf) {
    loop {
        let containers = saved.borrow_and_update().clone();
        let p = path.clone();
        match tokio::task::spawn_blocking(move || last_known::save(&p, &containers)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e:#}"),
            Err(e) => tracing::warn!("saving the last known containers panicked: {e}"),
        }
        if saved.changed().await.is_err() {
            return;
        }
    }
}

/// Writes the port table when it differs from the one on disk; failures are logged and shown
/// by `/health` (routes keep being served; allocations are retried at the next change).
async fn persist_if_changed(state: &AppState, path: &Path, old: &PortTable, new: &PortTable) {
    if old == new
        && state
            .state_error
            .lock()
            .map(|e| e.is_none())
            .unwrap_or(true)
    {
        return;
    }
    let (path, table) = (path.to_path_buf(), new.clone());
    let result = tokio::task::spawn_blocking(move || save_ports(&path, &table)).await;
    match result {
        Ok(Ok(())) => state.set_state_error(None),
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            state.set_state_error(Some(format!("{e:#}")));
        }
        Err(e) => state.set_state_error(Some(format!("saving ports panicked: {e}"))),
    }
}

/// Loads the persisted port table; a missing file is an empty table. A corrupt file is an
/// error: silently starting over would move every repo's published ports.
pub fn load_ports(path: &Path) -> Result<PortTable> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{}: corrupt port allocation table; fix it, or move it away to let every \
                 allocation be made afresh",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PortTable::default()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// Writes the port table atomically (`atomic_file`): a crash at any point leaves the old or
/// the new table, never a torn one.
pub fn save_ports(path: &Path, table: &PortTable) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(table)?;
    bytes.push(b'\n');
    crate::atomic_file::write(path, &bytes, None)
        .with_context(|| format!("{}: cannot save port allocations", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::port_allocation::PortAllocation;

    #[test]
    fn listen_must_be_loopback() {
        assert!(parse_listen("127.0.0.1:7111").is_ok());
        assert!(parse_listen("127.0.11.5:80").is_ok());
        assert!(parse_listen("[::1]:7111").is_ok());
        let e = parse_listen("0.0.0.0:7111").unwrap_err().to_string();
        assert!(e.contains("not a loopback"), "{e}");
        assert!(parse_listen("192.168.1.2:7111").is_err());
        let e = parse_listen("localhost").unwrap_err().to_string();
        assert!(e.contains("IP:PORT"), "{e}");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("10000-10010"), Ok((10000, 10010)));
        assert!(parse_range("10010-10000").is_err());
        assert!(parse_range("10000").is_err());
        assert!(parse_range("a-b").is_err());
    }

    #[test]
    fn flags_override_the_settings_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("renet.json");
        std::fs::write(
            &file,
            r#"{"base_domain": "file.example", "entrypoints": ["a"], "tcp_ports": [25]}"#,
        )
        .unwrap();
        let args = RouteServerArgs {
            settings: Some(file.clone()),
            entrypoints: Some(vec!["web".into(), " websecure ".into()]),
            auto_routes: Some(false),
            dynamic_range: Some((20000, 20002)),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.routes.base_domain.as_deref(), Some("file.example"));
        assert_eq!(c.routes.entrypoints, vec!["web", "websecure"]);
        assert!(!c.routes.auto_routes);
        assert_eq!(c.routes.dynamic_range, (20000, 20002));
        assert!(c.routes.tcp_entrypoint_ports.contains(&25));
        assert!(c.routes.tcp_entrypoint_ports.contains(&20001));

        let bad = RouteServerArgs {
            settings: Some(file),
            listen: Some("10.0.0.1:7111".into()),
            ..Default::default()
        };
        assert!(Config::resolve(&bad).is_err());
    }

    #[test]
    fn port_table_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PORTS_FILE);
        assert_eq!(load_ports(&path).unwrap(), PortTable::default());
        let table = PortTable {
            allocations: vec![PortAllocation {
                protocol: "tcp".into(),
                port: 10000,
                entrypoint: "tcp-10000".into(),
                network_id: 2816,
                service: "db".into(),
                target: 5432,
                preferred: 0,
            }],
        };
        save_ports(&path, &table).unwrap();
        assert_eq!(load_ports(&path).unwrap(), table);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
        std::fs::write(&path, "{not json").unwrap();
        let e = format!("{:#}", load_ports(&path).unwrap_err());
        assert!(e.contains("corrupt port allocation table"), "{e}");
    }
}
