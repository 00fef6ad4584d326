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
use crate::routing::build::{self as routes, Claims, Container, RouteSettings};
use crate::routing::claims_store::{ClaimsStore, Stamp};
use crate::routing::cluster::agent::{Agent, Wanted};
use crate::routing::cluster::settings::ClusterConfig;
use crate::routing::cluster::view::ClusterView;
use crate::routing::discovery::{self, Discovery};
use crate::routing::http_api::{self, AppState, Published};
use crate::routing::last_known;
use crate::routing::redeploy::Lingering;

/// Longest wait at startup for the first listing of every daemon before serving anyway.
pub const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// What the builder task owns besides the shared state.
struct Builder {
    settings: RouteSettings,
    store: ClaimsStore,
    lingering: Lingering,
    dynamic_file: Option<PathBuf>,
    /// Where each built container set goes to be saved as the last known one.
    saves: tokio::sync::watch::Sender<Arc<Vec<Container>>>,
    /// In a cluster: the agent's view (a change rebuilds) and where the wanted resources go.
    cluster: Option<ClusterLink>,
    /// The route builder that made the first snapshot: it keeps what it built, so the first
    /// change after the start costs only what it touched, not a second full build.
    routes: routes::RouteBuilder,
}

/// The builder's two channels to the cluster agent.
struct ClusterLink {
    view: tokio::sync::watch::Receiver<Arc<ClusterView>>,
    wanted: tokio::sync::watch::Sender<Wanted>,
}

impl ClusterLink {
    /// Hands the resources a build wants to the agent (only when they changed).
    fn send_wanted(&self, snapshot: &routes::Snapshot) {
        if let Some(outcome) = &snapshot.cluster {
            let next = Some(outcome.wanted.clone());
            self.wanted.send_if_modified(|w| {
                if *w == next {
                    false
                } else {
                    *w = next;
                    true
                }
            });
        }
    }
}

/// Replaces the dynamic configuration file atomically, so Traefik's file provider never reads
/// a half-written document.
///
/// The temp file is written in a hidden subfolder ([`DYNAMIC_STAGING_DIR`]), not beside the
/// file: Traefik's file provider rereads its folder on every event there and hands each
/// result to its throttle, so a temp file created beside `routes.yaml` made Traefik first
/// publish the *old* routes, and the new ones only when the throttle window
/// (`providersThrottleDuration`) had passed. Its watch does not reach into subfolders, so
/// the rename is the one event it sees. (When it rereads the folder it does walk into the
/// subfolder, where the temp file's name ends in `.tmp-<pid>`, which it skips.)
fn write_dynamic_file(path: &Path, body: &[u8]) -> Result<()> {
    let context = || format!("{}: cannot write the dynamic configuration", path.display());
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let staging = dir.unwrap_or(Path::new(".")).join(DYNAMIC_STAGING_DIR);
    std::fs::create_dir_all(&staging).with_context(context)?;
    crate::atomic_file::write_staged_in(path, &staging, body, Some(0o644)).with_context(context)
}

/// The subfolder of the dynamic file's folder that holds its temp files.
pub const DYNAMIC_STAGING_DIR: &str = ".renet-staging";

/// How often the builder looks for an operator's change of the claims files.
const CLAIMS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Seconds a container that went away keeps its routes while its replacement starts
    /// (a redeploy); 0 turns it off [settings: redeploy_grace_seconds; default 10].
    #[arg(long, value_name = "SECONDS")]
    pub redeploy_grace: Option<u64>,
    /// Also write the dynamic configuration to this file on every change (atomic replace), for
    /// Traefik's file provider: Traefik learns a change at once instead of at the next poll
    /// [settings: dynamic_file].
    #[arg(long, value_name = "FILE")]
    pub dynamic_file: Option<PathBuf>,
    /// Folder of the repo daemons' data, where repositories are registered: a registered
    /// repository whose daemon is missing makes `/health` degraded [default /var/lib/rediacc].
    #[arg(long, env = "RENET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Join a cluster: etcd endpoints, comma separated (docs/cluster.md)
    /// [settings: cluster.endpoints].
    #[arg(long, value_name = "URLS")]
    pub cluster: Option<String>,
    /// This server's name in the cluster [settings: cluster.name; default: the host name].
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// The IP address the edge reaches this server's Traefik on [settings: cluster.address].
    #[arg(long, value_name = "IP")]
    pub cluster_address: Option<String>,
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
    pub redeploy_grace: Duration,
    pub dynamic_file: Option<PathBuf>,
    /// In a cluster: how to reach etcd and who this server is.
    pub cluster: Option<ClusterConfig>,
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
        if let Some(v) = a.redeploy_grace {
            s.redeploy_grace_seconds = v;
        }
        if let Some(v) = a.dynamic_file {
            s.dynamic_file = Some(v);
        }
        if let Some(v) = a.cluster {
            s.cluster.endpoints = vec![v];
        }
        if let Some(v) = a.cluster_name {
            s.cluster.name = Some(v);
        }
        if let Some(v) = a.cluster_address {
            s.cluster.address = Some(v);
        }
        let cluster = s
            .cluster
            .resolve(s.http_port, s.https_port)
            .with_context(|| format!("{}: cluster", path.display()))?;
        let listen = parse_listen(&s.listen)?;
        Ok(Config {
            cluster,
            listen,
            socket_dir: s.socket_dir.clone(),
            state_dir: s.state_dir.clone(),
            data_dir: a
                .data_dir
                .unwrap_or_else(|| crate::host::daemons::DEFAULT_DATA_DIR.into()),
            routes: RouteSettings::from_settings(&s)?,
            redeploy_grace: Duration::from_secs(s.redeploy_grace_seconds),
            dynamic_file: s.dynamic_file.clone(),
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
    let store = ClaimsStore::new(&config.state_dir);
    let (claims, stamp) = store.load()?;
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
    let serving_file = config
        .state_dir
        .join(crate::routing::cluster::agent::SERVING_FILE);
    let agent = config
        .cluster
        .clone()
        .map(|c| Agent::start(c, Some(serving_file)));
    let cluster = agent.as_ref().map(|a| ClusterLink {
        view: a.view.clone(),
        wanted: a.wanted.clone(),
    });
    if let Some(link) = &cluster {
        // Like the daemons' first listing: a start should not publish everything as waiting
        // for etcd when etcd answers in milliseconds.
        let mut view = link.view.clone();
        let connected =
            tokio::time::timeout(INITIAL_SYNC_TIMEOUT, view.wait_for(|v| v.connected)).await;
        if !matches!(connected, Ok(Ok(_))) {
            tracing::warn!(
                "cluster: etcd did not answer within {:?}; serving what this server served \
                 before, claiming nothing new until it does",
                INITIAL_SYNC_TIMEOUT
            );
        }
    }
    let first_view = cluster.as_ref().map(|c| c.view.borrow().clone());
    let mut claims = claims;
    if let Some(v) = &first_view {
        v.overlay_hosts(&mut claims.hosts);
    }
    let first = build_snapshot(&discovery, &config.routes, &claims, first_view).await?;
    if let Some(link) = &cluster {
        link.send_wanted(&first.0);
    }
    let container_count = first.1.len();
    let first_claims = claims_of(&first.0);
    let first_published = Published::new(first.0, 0);
    if let Some(path) = &config.dynamic_file {
        // At startup a failure is fatal: a wrong path should be seen at once.
        write_dynamic_file(path, &first_published.routes_yaml)?;
    }
    let expected = crate::routing::http_api::Expected {
        data_dir: config.data_dir.clone(),
        socket_dir: config.socket_dir.clone(),
    };
    let state = AppState::with_expected(first_published, discovery.clone(), Some(expected));
    if let Some(link) = &cluster {
        state.set_cluster(link.view.clone());
    }
    // The saver writes the latest container set in the background: a slow disk never delays
    // the next rebuild, and a burst of changes costs one write of the newest set.
    let (saves, saved) = tokio::sync::watch::channel(Arc::new(first.1.clone()));
    let saver = tokio::spawn(saver_loop(saved, last_known_path.clone()));
    let stamp = persist(&state, &store, &claims, &first_claims, stamp)
        .await
        .unwrap_or_default();
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
        Builder {
            settings: config.routes.clone(),
            store,
            lingering: Lingering::new(config.redeploy_grace),
            dynamic_file: config.dynamic_file.clone(),
            saves,
            cluster,
            routes: first.2,
        },
        stamp,
    ));
    let result = axum::serve(listener, http_api::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed");
    builder.abort();
    saver.abort();
    if let Some(agent) = agent {
        agent.shutdown().await;
    }
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
/// Returns the snapshot, the containers it was built from, and the builder (for the next
/// builds).
async fn build_snapshot(
    discovery: &Discovery,
    settings: &RouteSettings,
    claims: &Claims,
    cluster: Option<Arc<ClusterView>>,
) -> Result<(routes::Snapshot, Vec<Container>, routes::RouteBuilder)> {
    let containers = discovery.containers();
    let (settings, claims) = (settings.clone(), claims.clone());
    tokio::task::spawn_blocking(move || {
        let mut builder = routes::RouteBuilder::default();
        builder.set_cluster_view(cluster);
        let snapshot = builder.build(&containers, &settings, &claims);
        (snapshot, containers, builder)
    })
    .await
    .context("route building panicked")
}

/// The claims a snapshot ends with: what the next build starts from.
fn claims_of(snapshot: &routes::Snapshot) -> Claims {
    let mut hosts = snapshot.hosts.clone();
    // The cluster's owners were laid over the table for the build; etcd keeps them.
    hosts
        .hosts
        .retain(|_, c| c.router != crate::routing::cluster::view::CLUSTER_OWNER);
    Claims {
        ports: snapshot.ports.clone(),
        hosts,
    }
}

/// Rebuilds on every change of the container set (and when an operator changed the claims
/// files) and publishes the result. `last_containers` is what the published snapshot was
/// built from, so a change that raced the first build is not skipped.
async fn builder_loop(
    state: Arc<AppState>,
    mut last_containers: Vec<Container>,
    builder: Builder,
    mut stamp: Stamp,
) {
    let Builder {
        settings,
        store,
        mut lingering,
        dynamic_file,
        saves,
        mut cluster,
        routes: first_builder,
    } = builder;
    let discovery = state.discovery.clone();
    let mut generation = 0u64;
    let mut claims = claims_of(&state.current().snapshot);
    let mut last_live = last_containers.clone();
    let mut route_builder = Some(first_builder);
    loop {
        let wake = lingering
            .next_expiry()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(CLAIMS_CHECK_INTERVAL)
            .min(CLAIMS_CHECK_INTERVAL);
        let (woken_by_discovery, cluster_changed) = tokio::select! {
            _ = discovery.changed() => (true, false),
            _ = cluster_view_changed(&mut cluster) => (false, true),
            _ = tokio::time::sleep(wake) => (false, false),
        };
        // A timer tick only matters when the claims files changed or a departed container's
        // grace period ended; otherwise the container set is not even read.
        let external_change = store.stamp() != stamp;
        let grace_ended = lingering.next_expiry().is_some_and(|t| t <= Instant::now());
        if !woken_by_discovery && !external_change && !grace_ended && !cluster_changed {
            continue;
        }
        let live = discovery.containers();
        let containers = lingering.effective(&last_live, &live, Instant::now());
        last_live = live;
        if external_change {
            match store.load() {
                Ok((loaded, new_stamp)) => {
                    tracing::info!(
                        "claims files changed on disk (an operator's release): reloading"
                    );
                    claims = loaded;
                    stamp = new_stamp;
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    state.set_state_error(Some(format!("{e:#}")));
                    stamp = store.stamp();
                }
            }
        }
        if containers == last_containers && !external_change && !cluster_changed {
            continue;
        }
        let started = Instant::now();
        let previous = state.current();
        let (start_claims, s) = (claims.clone(), settings.clone());
        let next_generation = generation + 1;
        // Building and rendering (YAML, sorted JSON) both run on the blocking pool: at
        // thousands of containers they take tens of milliseconds, which must not stall the
        // async workers that answer HTTP requests.
        // The builder moves to the blocking pool and back: it keeps what it built, so a
        // change costs only what it touched (`RouteBuilder`).
        let mut builder_now = route_builder.take().unwrap_or_default();
        let mut start_claims = start_claims;
        if let Some(link) = &cluster {
            let view = link.view.borrow().clone();
            view.overlay_hosts(&mut start_claims.hosts);
            builder_now.set_cluster_view(Some(view));
        }
        let built = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let snapshot = builder_now.build(&containers, &s, &start_claims);
            let build_time = t.elapsed();
            (
                Published::new(snapshot, next_generation),
                build_time,
                containers,
                builder_now,
            )
        })
        .await;
        let (published, build_time, containers) = match built {
            Ok((published, build_time, containers, b)) => {
                route_builder = Some(b);
                (published, build_time, containers)
            }
            Err(e) => {
                // A bug in route building must not stop the server; keep serving the last one
                // until the container set changes again (with a fresh builder).
                tracing::error!("route building panicked: {e}; keeping the previous snapshot");
                last_containers = last_live.clone();
                continue;
            }
        };
        if let Some(link) = &cluster {
            link.send_wanted(&published.snapshot);
        }
        let new_claims = claims_of(&published.snapshot);
        match persist(&state, &store, &claims, &new_claims, stamp.clone()).await {
            Some(new_stamp) => {
                stamp = new_stamp;
                claims = new_claims;
            }
            None => {
                // The files changed while building: publish nothing from stale claims; the
                // next round reloads them and builds again.
                last_containers = Vec::new();
                continue;
            }
        }
        generation = next_generation;
        let changed_yaml = published.routes_yaml != previous.routes_yaml;
        if changed_yaml && let Some(path) = &dynamic_file {
            let (path, body) = (path.clone(), published.routes_yaml.clone());
            let written =
                tokio::task::spawn_blocking(move || write_dynamic_file(&path, &body)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!("{e:#}");
                    state.set_state_error(Some(format!("{e:#}")));
                }
                Err(e) => tracing::error!("writing the dynamic file panicked: {e}"),
            }
        }
        state.publish(published);
        discovery
            .histograms
            .rebuild_seconds
            .observe(started.elapsed().as_secs_f64());
        saves.send_replace(Arc::new(last_live.clone()));
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

/// Resolves when the cluster agent published a new view; never without a cluster.
async fn cluster_view_changed(cluster: &mut Option<ClusterLink>) {
    match cluster {
        Some(link) => {
            if link.view.changed().await.is_err() {
                // The agent is gone (shutting down): stop listening to it.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The shortest time between two saves of the last known containers: a save serializes the
/// whole set (a megabyte at thousands of containers), and during a burst of changes saving
/// each one would take the CPU the rebuilds need. Shutdown saves the final set regardless.
const LAST_KNOWN_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Saves the container set of each published snapshot (`last_known`), newest first: the
/// current value at start, then whenever it changes, at most once per
/// [`LAST_KNOWN_SAVE_INTERVAL`]. A failure is logged only: the file is a cache for the next
/// start.
async fn saver_loop(mut saved: tokio::sync::watch::Receiver<Arc<Vec<Container>>>, path: PathBuf) {
    loop {
        let containers = saved.borrow_and_update().clone();
        let p = path.clone();
        match tokio::task::spawn_blocking(move || last_known::save(&p, &containers)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e:#}"),
            Err(e) => tracing::warn!("saving the last known containers panicked: {e}"),
        }
        tokio::time::sleep(LAST_KNOWN_SAVE_INTERVAL).await;
        if saved.changed().await.is_err() {
            return;
        }
    }
}

/// Writes the claims that changed. Returns the new stamp, or `None` when the files changed
/// under the server (an operator's release) and nothing was written. Write failures are logged
/// and shown by `/health` (routes keep being served; the write is retried at the next change).
async fn persist(
    state: &AppState,
    store: &ClaimsStore,
    old: &Claims,
    new: &Claims,
    stamp: Stamp,
) -> Option<Stamp> {
    let had_error = state
        .state_error
        .lock()
        .map(|e| e.is_some())
        .unwrap_or(false);
    if old == new && !had_error {
        return Some(stamp);
    }
    let (store2, old, new, expected) = (store.clone(), old.clone(), new.clone(), stamp.clone());
    let result = tokio::task::spawn_blocking(move || store2.save(&old, &new, &expected)).await;
    match result {
        Ok(Ok(Some(stamp))) => {
            state.set_state_error(None);
            Some(stamp)
        }
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            state.set_state_error(Some(format!("{e:#}")));
            Some(stamp)
        }
        Err(e) => {
            state.set_state_error(Some(format!("saving claims panicked: {e}")));
            Some(stamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
