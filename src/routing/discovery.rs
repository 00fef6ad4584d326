//! Discovery for the route server (spec §6.1): which repo daemons exist (the `docker-<N>.sock`
//! files of the socket folder) and which labelled containers run on each of them.
//!
//! Design, and why:
//! - The socket folder is watched with inotify (create/delete/rename events trigger a rescan of
//!   the folder) plus a rescan every [`RESCAN_INTERVAL`] as a safety net: inotify cannot watch a
//!   folder that does not exist yet, and loses its watch when the folder is replaced. A rescan
//!   is one `readdir` of a small folder, so the net costs nothing.
//! - One task per daemon: connect, subscribe to the event stream *from a second before the
//!   listing* (`since`), list, then follow events. Docker replays the events of that second, so
//!   nothing that happens between listing and subscribing is lost; handling an event is
//!   idempotent (re-inspect the container, then keep or drop it), so replays are harmless.
//! - A container's network ID is the one of the socket it was found on, never its label: that
//!   is its trusted identity, and `routes::build` rejects containers whose labels disagree.
//! - State lives behind a `std::sync::Mutex` that is never held across an `.await`, so HTTP
//!   handlers reading `/health` never wait on Docker. Every change of the container set wakes
//!   the snapshot builder through a `Notify`, whose single stored permit coalesces bursts.
//! - A daemon that goes away while its socket stays (crash) keeps its last known containers
//!   (without live-restore they keep running under their shims until dockerd returns) and is
//!   reported as disconnected; it is re-listed on reconnect. A vanished socket (dockerd removes
//!   it on a clean stop) drops the daemon and its containers at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, EventMessage, HealthStatusEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::addresses::{NetworkId, network_id_from_socket};
use crate::routing::build::{Container, Health, LabelSet};

/// How often the socket folder is rescanned even without inotify events.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);
/// First and largest wait between reconnection attempts to a daemon.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Seconds bollard waits for a daemon's answer headers (not for the event stream body).
const REQUEST_TIMEOUT_SECS: u64 = 10;
/// How often a connected daemon is pinged, and how long it gets to answer. A daemon that is
/// stopped (SIGSTOP) or wedged keeps its socket and its idle event stream open, so without a
/// bounded ping it would look connected forever.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Container events that can change whether (or how) a container is routed. Exec and attach
/// events (a healthcheck runs an exec every interval) are filtered out by the daemon.
pub const EVENTS: &[&str] = &[
    "start",
    "restart",
    "die",
    "stop",
    "destroy",
    "kill",
    "pause",
    "unpause",
    "rename",
    "update",
    "health_status",
];

/// What `/health` shows about one repo daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonReport {
    pub network_id: NetworkId,
    pub socket: String,
    pub connected: bool,
    /// Labelled running containers currently known on this daemon.
    pub containers: usize,
    /// True while the containers are the last known ones of an earlier run of the route server
    /// (state folder), not yet confirmed by this daemon: it has not answered since the start.
    pub stale: bool,
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct DaemonState {
    socket: PathBuf,
    connected: bool,
    /// The first listing finished (or failed): startup waits for this, bounded.
    synced: bool,
    last_error: Option<String>,
    containers: BTreeMap<String, Container>,
    /// The containers came from the last-known file, not from this daemon (see `seed`).
    stale: bool,
}

/// The live view of every repo daemon. Shared between the discovery tasks (writers) and the
/// snapshot builder and HTTP handlers (readers).
#[derive(Debug, Default)]
pub struct Discovery {
    daemons: Mutex<BTreeMap<NetworkId, DaemonState>>,
    /// Last known containers per network from an earlier run (state folder), handed to a
    /// daemon when its socket is found, so a daemon that does not answer yet keeps its routes.
    seed: Mutex<BTreeMap<NetworkId, BTreeMap<String, Container>>>,
    changed: Notify,
    /// Bumped on every change of the container set; lets readers skip identical rebuilds.
    generation: std::sync::atomic::AtomicU64,
    /// Entries of the socket folder that are not used, with the reason (shown by `/health`).
    ignored_sockets: Mutex<Vec<IgnoredSocket>>,
    /// Rebuild and event-lag histograms for `/metrics`.
    pub histograms: crate::routing::metrics::Histograms,
    /// Daemons whose pidfile names a live dockerd but whose socket is gone (deleted by hand or
    /// by a cleanup job): nothing can reach them, yet they run; refreshed at every rescan.
    without_socket: Mutex<BTreeMap<NetworkId, i32>>,
}

impl Discovery {
    pub fn new() -> Arc<Self> {
        Arc::new(Discovery::default())
    }

    /// Entries of the socket folder ignored at the last scan.
    pub fn ignored_sockets(&self) -> Vec<IgnoredSocket> {
        self.ignored_sockets
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    fn set_ignored_sockets(&self, ignored: Vec<IgnoredSocket>) {
        if let Ok(mut v) = self.ignored_sockets.lock() {
            if *v != ignored {
                for i in &ignored {
                    tracing::warn!("socket folder: ignoring {}: {}", i.path, i.reason);
                }
            }
            *v = ignored;
        }
    }

    /// Discovery that starts from the last known containers of an earlier run: a daemon found
    /// in the socket folder serves these (marked stale) until it answers and is listed.
    pub fn with_last_known(containers: Vec<Container>) -> Arc<Self> {
        let d = Discovery::default();
        {
            let mut seed = d.seed.lock().unwrap_or_else(|p| p.into_inner());
            for c in containers {
                seed.entry(c.network_id)
                    .or_default()
                    .insert(c.id.clone(), c);
            }
        }
        Arc::new(d)
    }

    /// Every known container, sorted by network ID then name then ID, so that route building
    /// sees the same order for the same state (the output must be byte-deterministic).
    pub fn containers(&self) -> Vec<Container> {
        let daemons = self.lock();
        let mut out: Vec<Container> = daemons
            .values()
            .flat_map(|d| d.containers.values().cloned())
            .collect();
        out.sort_by(|a, b| (a.network_id, &a.name, &a.id).cmp(&(b.network_id, &b.name, &b.id)));
        out
    }

    /// The daemons as `/health` reports them, by network ID.
    pub fn daemons(&self) -> Vec<DaemonReport> {
        self.lock()
            .iter()
            .map(|(id, d)| DaemonReport {
                network_id: *id,
                socket: d.socket.display().to_string(),
                connected: d.connected,
                containers: d.containers.len(),
                stale: d.stale,
                last_error: d.last_error.clone(),
            })
            .collect()
    }

    /// Daemons that run without a socket (network ID, pid), by network ID.
    pub fn without_socket(&self) -> Vec<(NetworkId, i32)> {
        self.without_socket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, pid)| (*id, *pid))
            .collect()
    }

    /// The generation of the container set (changes whenever a container comes or goes).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the container set changed since the last call (a stored permit makes a
    /// burst of changes wake the waiter once).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// True when every daemon known now has finished its first listing (or failed it).
    pub fn all_synced(&self) -> bool {
        self.lock().values().all(|d| d.synced)
    }

    /// Waits (polling, startup only) until every daemon finished its first listing, or the
    /// deadline passes. Serving before that would publish a partial configuration, which
    /// Traefik would apply and then undo.
    pub async fn wait_initial_sync(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.all_synced() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NetworkId, DaemonState>> {
        // A panic in another task must not take the route server down with it: the map is
        // always left consistent (every mutation is a single insert/remove/assign).
        self.daemons.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.changed.notify_one();
    }

    fn add_daemon(&self, id: NetworkId, socket: PathBuf) {
        let seeded = self
            .seed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .unwrap_or_default();
        let stale = !seeded.is_empty();
        self.lock().insert(
            id,
            DaemonState {
                socket,
                connected: false,
                synced: false,
                last_error: None,
                containers: seeded,
                stale,
            },
        );
        if stale {
            self.bump();
        }
    }

    fn remove_daemon(&self, id: NetworkId) {
        let had = self
            .lock()
            .remove(&id)
            .is_some_and(|d| !d.containers.is_empty());
        if had {
            self.bump();
        }
    }

    fn with_daemon<R>(&self, id: NetworkId, f: impl FnOnce(&mut DaemonState) -> R) -> Option<R> {
        self.lock().get_mut(&id).map(f)
    }

    fn set_connected(&self, id: NetworkId, containers: BTreeMap<String, Container>) {
        let changed = self
            .with_daemon(id, |d| {
                d.connected = true;
                d.synced = true;
                d.stale = false;
                d.last_error = None;
                let changed = d.containers != containers;
                d.containers = containers;
                changed
            })
            .unwrap_or(false);
        if changed {
            self.bump();
        }
    }

    fn set_disconnected(&self, id: NetworkId, error: String) {
        self.with_daemon(id, |d| {
            d.connected = false;
            d.synced = true;
            d.last_error = Some(error);
        });
    }

    fn upsert(&self, id: NetworkId, c: Container) {
        let changed = self
            .with_daemon(id, |d| {
                if d.containers.get(&c.id) == Some(&c) {
                    false
                } else {
                    d.containers.insert(c.id.clone(), c);
                    true
                }
            })
            .unwrap_or(false);
        if changed {
            self.bump();
        }
    }

    fn remove(&self, id: NetworkId, container_id: &str) {
        let changed = self
            .with_daemon(id, |d| d.containers.remove(container_id).is_some())
            .unwrap_or(false);
        if changed {
            self.bump();
        }
    }
}

/// Starts watching `socket_dir`; returns once the folder has been scanned once (so that
/// [`Discovery::wait_initial_sync`] knows every daemon present at startup).
pub async fn start(discovery: Arc<Discovery>, socket_dir: PathBuf) -> JoinHandle<()> {
    let mut watcher = Watcher {
        discovery,
        dir: socket_dir,
        tasks: HashMap::new(),
    };
    watcher.rescan();
    tokio::spawn(async move { watcher.run().await })
}

struct Watcher {
    discovery: Arc<Discovery>,
    dir: PathBuf,
    tasks: HashMap<NetworkId, (PathBuf, JoinHandle<()>)>,
}

impl Drop for Watcher {
    /// Aborting the watcher (shutdown) must also end every daemon task.
    fn drop(&mut self) {
        for (_, (_, task)) in self.tasks.drain() {
            task.abort();
        }
    }
}

impl Watcher {
    async fn run(&mut self) {
        let mut inotify: Option<AsyncFd<InotifyFd>> = None;
        let mut tick = tokio::time::interval(RESCAN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if inotify.is_none() {
                inotify = watch_dir(&self.dir)
                    .map_err(|e| tracing::debug!("inotify on {}: {e:#}", self.dir.display()))
                    .ok();
                // Anything created before the watch existed is found by this rescan.
                self.rescan();
            }
            tokio::select! {
                _ = tick.tick() => {}
                ready = async {
                    match &inotify {
                        Some(fd) => fd.readable().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let mut lost = false;
                    if let Ok(mut guard) = ready {
                        match guard.get_inner().0.read_events() {
                            Ok(events) => {
                                use nix::sys::inotify::AddWatchFlags as F;
                                lost = events.iter().any(|e| {
                                    e.mask.intersects(F::IN_IGNORED | F::IN_DELETE_SELF | F::IN_MOVE_SELF)
                                });
                            }
                            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                            Err(e) => {
                                tracing::warn!("inotify read on {}: {e}", self.dir.display());
                                lost = true;
                            }
                        }
                    } else {
                        lost = true;
                    }
                    if lost {
                        inotify = None;
                    }
                }
            }
            self.rescan();
        }
    }

    /// Compares the folder with the running daemon tasks: starts new ones, ends vanished ones.
    fn rescan(&mut self) {
        let (found, ignored) = scan_sockets(&self.dir);
        self.discovery.set_ignored_sockets(ignored);
        let orphans = scan_live_pidfiles(&self.dir, &found);
        *self
            .discovery
            .without_socket
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = orphans;
        let vanished: Vec<NetworkId> = self
            .tasks
            .iter()
            .filter(|(id, (path, _))| found.get(id) != Some(path))
            .map(|(id, _)| *id)
            .collect();
        for id in vanished {
            if let Some((path, task)) = self.tasks.remove(&id) {
                task.abort();
                self.discovery.remove_daemon(id);
                tracing::info!(network_id = %id, "daemon socket {} vanished", path.display());
            }
        }
        for (id, path) in found {
            if self.tasks.contains_key(&id) {
                continue;
            }
            tracing::info!(network_id = %id, "daemon socket {} found", path.display());
            self.discovery.add_daemon(id, path.clone());
            let task = tokio::spawn(follow_daemon(self.discovery.clone(), id, path.clone()));
            self.tasks.insert(id, (path, task));
        }
    }
}

/// `docker-<N>.pid` files in `dir` without a `docker-<N>.sock`, whose pid is a live process
/// (a dockerd, when `/proc` lets us see its name).
pub fn scan_live_pidfiles(
    dir: &Path,
    sockets: &BTreeMap<NetworkId, PathBuf>,
) -> BTreeMap<NetworkId, i32> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pid"))
            .and_then(|n| network_id_from_socket(&format!("{n}.sock")))
        else {
            continue;
        };
        if sockets.contains_key(&id) {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if pid_is_live_dockerd(pid) {
            out.insert(id, pid);
        }
    }
    out
}

/// True when `pid` exists (EPERM counts: another user's process), is not a zombie, and is
/// named `dockerd` when its name can be read (a sandbox may hide other users' `/proc`).
fn pid_is_live_dockerd(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim() == "dockerd",
        Err(_) => true,
    }
}

/// The repo daemon sockets in `dir` (a missing folder holds none), and the entries that were
/// ignored with the reason. Only real unix sockets named `docker-<N>.sock` with `N` a valid
/// network ID in its canonical spelling count: a symlink or a zero-padded name would let
/// whoever plants it make one daemon's containers appear under another network ID.
pub fn scan_sockets(dir: &Path) -> (BTreeMap<NetworkId, PathBuf>, Vec<IgnoredSocket>) {
    use std::os::unix::fs::FileTypeExt;
    let mut out = BTreeMap::new();
    let mut ignored = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (out, ignored);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sock") {
            continue;
        }
        let mut ignore = |reason: &str| {
            ignored.push(IgnoredSocket {
                path: entry.path().display().to_string(),
                reason: reason.to_string(),
            })
        };
        let Some(id) = network_id_from_socket(&name) else {
            ignore(
                "not the name of a repo daemon socket: `docker-<N>.sock` with N a network ID \
                 (2816 + 64k) written without leading zeros",
            );
            continue;
        };
        // `DirEntry::file_type` does not follow symlinks.
        match entry.file_type() {
            Ok(t) if t.is_socket() => {
                out.insert(id, entry.path());
            }
            Ok(t) if t.is_symlink() => ignore("a symlink, not the daemon's own socket"),
            Ok(_) => ignore("not a unix socket"),
            Err(e) => ignore(&format!("cannot read its type: {e}")),
        }
    }
    ignored.sort_by(|a, b| a.path.cmp(&b.path));
    (out, ignored)
}

/// A file in the socket folder that looks like a daemon socket but is not used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredSocket {
    pub path: String,
    pub reason: String,
}

/// An inotify descriptor that tokio can poll.
struct InotifyFd(nix::sys::inotify::Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn watch_dir(dir: &Path) -> Result<AsyncFd<InotifyFd>> {
    use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
    let ino =
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).context("inotify_init")?;
    ino.add_watch(
        dir,
        F::IN_CREATE
            | F::IN_DELETE
            | F::IN_MOVED_TO
            | F::IN_MOVED_FROM
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF
            | F::IN_ONLYDIR,
    )
    .with_context(|| format!("{}: cannot watch", dir.display()))?;
    // SAFETY: `InotifyFd` owns the descriptor (nix's `Inotify` holds an `OwnedFd`) and always
    // returns that same descriptor; it is closed only when the `AsyncFd` drops it.
    unsafe { AsyncFd::register_with_interest(InotifyFd(ino), tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("registering inotify with tokio: {}", e.into_parts().1))
}

/// Follows one daemon forever: connect, list, follow events; reconnect with backoff.
async fn follow_daemon(discovery: Arc<Discovery>, id: NetworkId, socket: PathBuf) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let err = match session(&discovery, id, &socket).await {
            Ok(()) => anyhow!("event stream ended"),
            Err(e) => e,
        };
        let msg = format!("{err:#}");
        let was_connected = discovery.with_daemon(id, |d| d.connected).unwrap_or(false);
        if was_connected {
            tracing::warn!(network_id = %id, "daemon connection lost: {msg}");
        } else {
            tracing::debug!(network_id = %id, "daemon not reachable: {msg}");
        }
        discovery.set_disconnected(id, msg);
        // A connection that lived a while was healthy: start the backoff over.
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection to a daemon: returns when the connection ends.
async fn session(discovery: &Discovery, id: NetworkId, socket: &Path) -> Result<()> {
    let path = socket
        .to_str()
        .with_context(|| format!("{}: socket path is not UTF-8", socket.display()))?;
    let docker =
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("{path}: cannot connect"))?;
    // The repo daemons may be older than bollard's default API version (Debian's 20.10
    // speaks 1.41); negotiating also proves the daemon answers.
    let docker = tokio::time::timeout(PING_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| anyhow!("{path}: daemon does not answer within {PING_TIMEOUT:?}"))?
        .with_context(|| format!("{path}: daemon does not answer"))?;

    // Subscribe from one second before the listing, so that nothing is lost in between.
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(1));
    let filters: HashMap<String, Vec<String>> = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            EVENTS.iter().map(|e| e.to_string()).collect(),
        ),
    ]);
    let mut events = docker.events(Some(EventsOptions {
        since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
        until: None,
        filters: Some(filters),
    }));

    let listed_at = now_nanos();
    let listed = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await
        .with_context(|| format!("{path}: cannot list containers"))?;
    let mut containers = BTreeMap::new();
    for summary in listed {
        let labelled = summary
            .labels
            .as_ref()
            .is_some_and(|l| l.keys().any(|k| is_rediacc_label(k)));
        let Some(cid) = summary.id.filter(|_| labelled) else {
            continue;
        };
        if let Some(c) = inspect(&docker, id, &cid).await? {
            containers.insert(c.id.clone(), c);
        }
    }
    tracing::info!(network_id = %id, "daemon connected: {} labelled containers", containers.len());
    discovery.set_connected(id, containers);

    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                let event = event.with_context(|| format!("{path}: event stream"))?;
                observe_lag(discovery, &event, listed_at);
                handle_event(discovery, &docker, id, event).await?;
            }
            _ = ping.tick() => check_answers(&docker, path).await?,
        }
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Records how late an event arrives (its own timestamp to now). Events replayed from before
/// the listing are not lag, and are left out.
fn observe_lag(discovery: &Discovery, event: &EventMessage, listed_at: i64) {
    if let Some(t) = event.time_nano.filter(|t| *t >= listed_at) {
        let lag = (now_nanos() - t).max(0) as f64 / 1e9;
        discovery.histograms.event_lag_seconds.observe(lag);
    }
}

/// A bounded `/_ping`: an error when the daemon does not answer within [`PING_TIMEOUT`], so
/// that a hung daemon is reported disconnected (its last known containers stay routed).
async fn check_answers(docker: &Docker, path: &str) -> Result<()> {
    match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e).with_context(|| format!("{path}: ping failed")),
        Err(_) => Err(anyhow!(
            "{path}: daemon does not answer /_ping within {PING_TIMEOUT:?} (hung or stopped)"
        )),
    }
}

async fn handle_event(
    discovery: &Discovery,
    docker: &Docker,
    id: NetworkId,
    event: EventMessage,
) -> Result<()> {
    let Some(cid) = event.actor.and_then(|a| a.id) else {
        return Ok(());
    };
    let action = event.action.unwrap_or_default();
    tracing::debug!(network_id = %id, container = %cid, "event {action}");
    // Whatever the event says, the container's current state decides: events can arrive
    // replayed or out of date, the state cannot.
    match inspect(docker, id, &cid).await? {
        Some(c) => discovery.upsert(id, c),
        None => discovery.remove(id, &cid),
    }
    Ok(())
}

/// The container as route building sees it, or None when it is not routable at all (gone,
/// not running, paused, or without `rediacc.*` labels). Connection errors are errors.
async fn inspect(docker: &Docker, id: NetworkId, cid: &str) -> Result<Option<Container>> {
    match docker.inspect_container(cid, None).await {
        Ok(info) => Ok(to_container(id, info)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspecting container {cid}")),
    }
}

fn is_rediacc_label(key: &str) -> bool {
    key.starts_with("rediacc.")
}

/// Unix seconds of an RFC 3339 UTC time as dockerd writes it (`2026-11-21T18:22:33.1234Z`).
pub fn rfc3339_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Converts an inspect answer; None when the container should not be considered.
pub fn to_container(network_id: NetworkId, info: ContainerInspectResponse) -> Option<Container> {
    let state = info.state.as_ref()?;
    if state.running != Some(true) || state.paused == Some(true) {
        return None;
    }
    let labels: LabelSet = info
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default()
        .into_iter()
        .collect();
    if !labels.keys().any(is_rediacc_label) {
        return None;
    }
    let health = match state.health.as_ref().and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    let created = info
        .created
        .as_deref()
        .and_then(rfc3339_seconds)
        .unwrap_or(0);
    Some(Container {
        network_id,
        created,
        id: info.id?,
        name: info
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: std::sync::Arc::new(labels),
        health,
    })
}

/// The network IDs of the daemons known now (for logs and tests).
pub fn known_ids(discovery: &Discovery) -> BTreeSet<NetworkId> {
    discovery.lock().keys().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_seconds("2024-02-29T12:00:01.5Z"),
            Some(1_709_208_001)
        );
        assert_eq!(
            rfc3339_seconds("2026-11-21T18:22:33.123456789Z"),
            Some(1_795_285_353)
        );
        assert_eq!(rfc3339_seconds("yesterday"), None);
    }

    #[test]
    fn only_canonical_real_sockets_are_daemons() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let _real = std::os::unix::net::UnixListener::bind(d.join("docker-2816.sock")).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(d.join("docker-2881.sock")).unwrap();
        let _padded = std::os::unix::net::UnixListener::bind(d.join("docker-02880.sock")).unwrap();
        std::os::unix::fs::symlink(d.join("docker-2816.sock"), d.join("docker-2944.sock")).unwrap();
        std::fs::write(d.join("docker-3008.sock"), "").unwrap();
        std::fs::write(d.join("notes.txt"), "").unwrap();
        let (found, ignored) = scan_sockets(d);
        assert_eq!(
            found.keys().map(|n| n.get()).collect::<Vec<_>>(),
            vec![2816]
        );
        let reasons: Vec<(String, String)> = ignored
            .iter()
            .map(|i| {
                let name = Path::new(&i.path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (name, i.reason.clone())
            })
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].0 == "docker-02880.sock" && reasons[0].1.contains("leading zeros"));
        assert!(reasons[1].0 == "docker-2881.sock" && reasons[1].1.contains("network ID"));
        assert!(reasons[2].0 == "docker-2944.sock" && reasons[2].1.contains("symlink"));
        assert!(reasons[3].0 == "docker-3008.sock" && reasons[3].1.contains("not a unix socket"));
    }
}
