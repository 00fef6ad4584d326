//! Repo daemons (spec §8): one isolated dockerd per repository, on
//! `<socket dir>/docker-<N>.sock`, with its own data-root and exec-root, no bridge and no
//! iptables (services use host networking on their loopback IPs).
//!
//! Each daemon's containers run in the cgroup `/renet/<N>`, which the firewall of
//! [`crate::host::isolation`] matches: `start` installs it, `stop` removes it, `status` shows it.
//!
//! Talks to each daemon with a tiny HTTP/1.0 client over its unix socket, so `status` and the
//! readiness wait need neither the docker CLI nor an async runtime.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::addresses::{NetworkId, network_id_from_socket, socket_file_name};
use crate::host::isolation::{self, IsolationStatus};
use crate::host::settings::{DEFAULT_SOCKET_DIR, Settings};

/// Where repo daemons keep their images, containers and volumes by default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rediacc";

#[derive(Debug, clap::Subcommand)]
pub enum DaemonCommand {
    /// Start the repo's dockerd (no-op when it already answers) and wait until it answers.
    Start(DaemonArgs),
    /// Stop the repo's dockerd. Its data (images, containers, volumes) stays in place.
    Stop(DaemonArgs),
    /// List every repo daemon: network ID, socket, pid, containers.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The repo's network ID (2816, 2880, …).
    #[arg(long, env = "REDIACC_NETWORK_ID")]
    pub network_id: NetworkId,
    #[command(flatten)]
    pub dirs: DaemonDirs,
    /// Seconds to wait for the daemon to answer (start) or exit (stop).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// (start) The repository root this network ID serves: recorded, or checked against the
    /// recorded one (an ID bound to another root is refused before dockerd starts).
    #[arg(long, value_name = "DIR")]
    pub repo_root: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DaemonDirs {
    /// Folder of the repo daemons' sockets.
    #[arg(long, env = "RENET_SOCKET_DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// Folder under which each daemon keeps `docker-<N>/` (data-root, log).
    #[arg(long, env = "RENET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Settings file (`isolation.allow`, Traefik's public entrypoints); default
    /// `RENET_SETTINGS`, else /etc/rediacc/renet.json.
    #[arg(long)]
    pub settings: Option<PathBuf>,
}

impl DaemonDirs {
    fn load_settings(&self) -> Result<Settings> {
        Settings::load(&Settings::path(self.settings.as_deref()))
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dirs: DaemonDirs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The files of one repo daemon.
#[derive(Debug, Clone)]
pub struct DaemonPaths {
    pub socket: PathBuf,
    pub pidfile: PathBuf,
    pub exec_root: PathBuf,
    pub data_root: PathBuf,
    pub log: PathBuf,
}

impl DaemonPaths {
    pub fn new(dirs: &DaemonDirs, id: NetworkId) -> Self {
        let base = dirs.data_dir.join(format!("docker-{id}"));
        DaemonPaths {
            socket: dirs.socket_dir.join(socket_file_name(id)),
            pidfile: dirs.socket_dir.join(format!("docker-{id}.pid")),
            exec_root: dirs.socket_dir.join(format!("exec-{id}")),
            data_root: base.join("data"),
            log: base.join("dockerd.log"),
        }
    }
}

pub fn run(cmd: DaemonCommand) -> Result<u8> {
    match cmd {
        DaemonCommand::Start(a) => {
            if let Some(root) = &a.repo_root {
                crate::host::repo_binding::bind(
                    &a.dirs.data_dir,
                    a.network_id,
                    root,
                    &a.dirs.socket_dir,
                )?;
            }
            let paths = DaemonPaths::new(&a.dirs, a.network_id);
            // Rules first: containers a restart policy brings back are covered from their
            // first packet.
            let settings = a.dirs.load_settings()?;
            let allowed = isolation::install(a.network_id, &settings)?;
            eprintln!(
                "renet: firewall of network {} installed (table inet {}, chains out_{}/in_{}); its containers may reach {}",
                a.network_id,
                isolation::TABLE,
                a.network_id,
                a.network_id,
                allowed
                    .iter()
                    .map(isolation::Destination::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            start(a.network_id, &paths, Duration::from_secs(a.timeout))?;
            Ok(0)
        }
        DaemonCommand::Stop(a) => {
            let paths = DaemonPaths::new(&a.dirs, a.network_id);
            stop(a.network_id, &paths, Duration::from_secs(a.timeout))?;
            isolation::remove(a.network_id)?;
            eprintln!("renet: firewall of network {} removed", a.network_id);
            Ok(0)
        }
        DaemonCommand::Status(a) => {
            let list = status(&a.dirs, &a.dirs.load_settings()?)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<8} {:<8} {:<10} {:<10} {:<40} REPOSITORY",
                    "NETWORK", "PID", "STATE", "CONTAINERS", "SOCKET"
                );
                for d in &list {
                    println!(
                        "{:<8} {:<8} {:<10} {:<10} {:<40} {}",
                        d.network_id,
                        d.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        d.state.as_str(),
                        d.containers
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into()),
                        d.socket,
                        d.repository.as_deref().unwrap_or("-")
                    );
                }
                for d in &list {
                    print_isolation(d.network_id, &d.isolation);
                }
            }
            Ok(0)
        }
    }
}

/// Starts the daemon unless it already answers, then waits for `/_ping`.
pub fn start(id: NetworkId, paths: &DaemonPaths, timeout: Duration) -> Result<()> {
    if ping(&paths.socket) {
        eprintln!(
            "renet: daemon {id} already running on {}",
            paths.socket.display()
        );
        if let Some(pid) = read_pid(&paths.pidfile)
            && !std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|arg| arg == b"--cgroup-parent")
        {
            eprintln!(
                "renet: warning: daemon {id} (pid {pid}) was started without its cgroup; the \
                 firewall does not cover its containers until `renet daemon stop` and `start`"
            );
        }
        return Ok(());
    }
    let dockerd = which::which("dockerd")
        .context("dockerd not found on PATH; install Docker (Debian: apt-get install docker.io)")?;
    for dir in [
        paths.socket.parent().unwrap(),
        &paths.data_root,
        &paths.exec_root,
    ] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    // A stale socket or pidfile from a daemon that was killed (machine restart, session end)
    // would make dockerd refuse to start. A pidfile naming a live dockerd that does not answer
    // is a real problem, reported rather than overridden.
    if let Some(pid) = read_pid(&paths.pidfile) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if alive(pid) && comm.trim() == "dockerd" {
            bail!(
                "dockerd for network {id} is running (pid {pid}, {}) but does not answer on {}: \
                 it hangs (stopped with SIGSTOP?) or its socket was deleted; stop it with \
                 `renet daemon stop --network-id {id}` or see {}",
                paths.pidfile.display(),
                paths.socket.display(),
                paths.log.display()
            );
        }
        let _ = std::fs::remove_file(&paths.pidfile);
    }
    if paths.socket.exists() {
        let _ = std::fs::remove_file(&paths.socket);
    }
    clear_stale_containerd(paths)?;
    rotate_log(&paths.log, DAEMON_LOG_MAX_BYTES);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .with_context(|| format!("{}: cannot open the daemon log", paths.log.display()))?;
    let mut cmd = Command::new(dockerd);
    cmd.arg("--host")
        .arg(format!("unix://{}", paths.socket.display()))
        .arg("--data-root")
        .arg(&paths.data_root)
        .arg("--exec-root")
        .arg(&paths.exec_root)
        .arg("--pidfile")
        .arg(&paths.pidfile)
        .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
        // Containers' logs are bounded: 3 files of 10 MB per container.
        .args(CONTAINER_LOG_OPTS)
        // cgroupfs everywhere: the same `/renet/<N>` layout on cgroup v1, hybrid and v2 hosts,
        // and a parent folder that no systemd garbage collection removes under the rules.
        .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
        .arg("--cgroup-parent")
        .arg(isolation::cgroup_parent(id))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Own session: the daemon must outlive this command and its terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start dockerd")?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ping(&paths.socket) {
            eprintln!(
                "renet: daemon {id} running on {} (pid {})",
                paths.socket.display(),
                child.id()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "dockerd for network {id} exited ({status}) before answering; see {}",
                paths.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "dockerd for network {id} did not answer on {} within {}s; see {}",
        paths.socket.display(),
        timeout.as_secs(),
        paths.log.display()
    )
}

/// Stops the daemon (SIGTERM, then SIGKILL after the timeout). Data stays in place.
pub fn stop(id: NetworkId, paths: &DaemonPaths, timeout: Duration) -> Result<()> {
    let Some(pid) = read_pid(&paths.pidfile).filter(|p| alive(*p)) else {
        eprintln!("renet: daemon {id} is not running");
        return Ok(());
    };
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(pid), Signal::SIGTERM).context("cannot signal dockerd")?;
    // A daemon stopped with SIGSTOP would only see the SIGTERM once continued.
    let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    release_leftover_mounts(paths);
    eprintln!(
        "renet: daemon {id} stopped (data kept in {})",
        paths.data_root.display()
    );
    Ok(())
}

/// After dockerd has exited: detaches the mounts it leaves behind. dockerd bind-mounts its
/// data-root onto itself and its exec-root's `netns/default`; a clean exit undoes one layer,
/// but a daemon that crashed and was started again stacks a second one, and these pile up (and
/// keep the folders from being removed). Only these exact mount points are touched, and only
/// once no dockerd of this network runs, so no container uses them.
fn release_leftover_mounts(paths: &DaemonPaths) {
    if read_pid(&paths.pidfile).is_some_and(alive) {
        return;
    }
    let targets: Vec<PathBuf> = [
        paths.data_root.clone(),
        paths.exec_root.join("netns/default"),
    ]
    .into_iter()
    .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
    .collect();
    // Each pass detaches the top layer of every target; stacked layers need several passes.
    for _ in 0..8 {
        let mounted = mount_points();
        let mut detached = false;
        for t in targets.iter().filter(|t| mounted.contains(t)) {
            match nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => {
                    tracing::debug!("detached the leftover mount {}", t.display());
                    detached = true;
                }
                Err(e) => tracing::warn!("{}: cannot detach a leftover mount: {e}", t.display()),
            }
        }
        if !detached {
            return;
        }
    }
}

/// Every mount point of this mount namespace (`/proc/self/mountinfo`, field 5, with the
/// kernel's octal escapes for space, tab, newline and backslash undone).
fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_from_what_was_seen() {
        assert_eq!(DaemonState::judge(true, true, true), DaemonState::Running);
        assert_eq!(DaemonState::judge(true, true, false), DaemonState::Hung);
        assert_eq!(
            DaemonState::judge(true, false, false),
            DaemonState::NoSocket
        );
        assert_eq!(DaemonState::judge(false, true, false), DaemonState::Stopped);
    }

    #[test]
    fn a_large_log_is_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dockerd.log");
        std::fs::write(&log, vec![b'x'; 100]).unwrap();
        rotate_log(&log, 1000);
        assert!(log.exists(), "small logs stay");
        rotate_log(&log, 10);
        assert!(!log.exists() && dir.path().join("dockerd.log.1").exists());
    }

    #[test]
    fn containerd_is_recognised_by_its_config_only() {
        // This test process is not containerd; a pid that does not exist is nothing.
        let me = std::process::id() as i32;
        assert!(!is_containerd_with_config(
            me,
            Path::new("/x/containerd.toml")
        ));
        assert!(!is_containerd_with_config(i32::MAX, Path::new("/x")));
    }
}

#[derive(Debug, Serialize)]
pub struct DaemonStatus {
    pub network_id: u32,
    pub socket: String,
    pub pid: Option<i32>,
    /// True when the daemon answered within [`STATUS_TIMEOUT`].
    pub running: bool,
    /// `running`, `hung` (live pid, no answer in time), `no-socket` (live pid, socket
    /// deleted), `stopped`.
    pub state: DaemonState,
    pub containers: Option<u64>,
    pub containers_running: Option<u64>,
    /// The repository root bound to this network ID (`repo_binding`), if any.
    pub repository: Option<String>,
    pub isolation: IsolationStatus,
}

/// What `daemon status` can tell about one daemon from its pidfile, socket and `/info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonState {
    Running,
    Hung,
    NoSocket,
    Stopped,
}

impl DaemonState {
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Running => "running",
            DaemonState::Hung => "hung",
            DaemonState::NoSocket => "no-socket",
            DaemonState::Stopped => "stopped",
        }
    }

    /// Judges a daemon from what was observed: a live pid without an answer is not "stopped".
    pub fn judge(pid_alive: bool, socket_exists: bool, answered: bool) -> DaemonState {
        match (answered, pid_alive, socket_exists) {
            (true, _, _) => DaemonState::Running,
            (false, true, true) => DaemonState::Hung,
            (false, true, false) => DaemonState::NoSocket,
            (false, false, _) => DaemonState::Stopped,
        }
    }
}

/// How long `daemon status` waits for each daemon's answer: a stopped (SIGSTOP) daemon
/// accepts connections but never answers, and must not hang the listing.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Every daemon that has a socket or a pidfile in the socket folder, by network ID.
pub fn status(dirs: &DaemonDirs, settings: &Settings) -> Result<Vec<DaemonStatus>> {
    let mut ids = std::collections::BTreeSet::new();
    let entries = match std::fs::read_dir(&dirs.socket_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}", dirs.socket_dir.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let as_sock = name
            .strip_suffix(".pid")
            .map(|s| format!("{s}.sock"))
            .unwrap_or(name);
        if let Some(id) = network_id_from_socket(&as_sock) {
            ids.insert(id);
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let p = DaemonPaths::new(dirs, id);
        let pid = read_pid(&p.pidfile).filter(|p| alive(*p));
        let info = http_get_json_within(&p.socket, "/info", STATUS_TIMEOUT).ok();
        let state = DaemonState::judge(pid.is_some(), p.socket.exists(), info.is_some());
        let mut iso = isolation::status(id, settings);
        if info.is_some() {
            for (name, pid) in container_pids(&p.socket) {
                let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok();
                let path = cgroup.as_deref().and_then(isolation::cgroup2_path);
                iso.warnings
                    .extend(isolation::judge_container_cgroup(id, &name, path));
            }
            iso.warnings.extend(isolation::listener_warnings(id));
        }
        out.push(DaemonStatus {
            network_id: id.get(),
            socket: p.socket.display().to_string(),
            pid,
            running: info.is_some(),
            state,
            containers: info.as_ref().and_then(|i| i["Containers"].as_u64()),
            containers_running: info.as_ref().and_then(|i| i["ContainersRunning"].as_u64()),
            repository: crate::host::repo_binding::read(&dirs.data_dir, id)
                .ok()
                .flatten()
                .map(|b| b.root.display().to_string()),
            isolation: iso,
        });
    }
    Ok(out)
}

/// containerd's files below a daemon's exec-root (dockerd starts its own containerd there).
fn containerd_dir(paths: &DaemonPaths) -> PathBuf {
    paths.exec_root.join("containerd")
}

/// Clears what a crashed dockerd leaves of its containerd. After `kill -9` of dockerd, its
/// containerd exits too, but its pidfile stays; the pid in it can be a zombie (a container's
/// PID 1 that does not reap) or a reused pid, and dockerd then believes containerd still runs,
/// waits for its socket and gives up after 15 s. Called only when our dockerd is not running
/// (its pidfile names no live dockerd), so no containerd here belongs to a live daemon:
/// - a live containerd started with *this* exec-root's config is an orphan: stopped
///   (SIGTERM, SIGKILL after [`ORPHAN_STOP_TIMEOUT`]); its containers' shims keep running and
///   the next containerd reconnects to them;
/// - any other process at that pid (reused) is left alone; only the pidfile goes;
/// - then the pidfile and containerd's sockets are removed.
pub fn clear_stale_containerd(paths: &DaemonPaths) -> Result<()> {
    let dir = containerd_dir(paths);
    let pidfile = dir.join("containerd.pid");
    if let Some(pid) = read_pid(&pidfile) {
        let config = dir.join("containerd.toml");
        if alive(pid) && is_containerd_with_config(pid, &config) {
            tracing::info!(
                "stopping the orphaned containerd {pid} of {}",
                dir.display()
            );
            stop_pid(pid, ORPHAN_STOP_TIMEOUT);
        }
    }
    for name in [
        "containerd.pid",
        "containerd.sock",
        "containerd.sock.ttrpc",
        "containerd-debug.sock",
    ] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!("removed stale {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("{}: cannot remove", path.display()));
            }
        }
    }
    Ok(())
}

/// How long an orphaned containerd gets to exit on SIGTERM.
const ORPHAN_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// True when `pid` runs containerd with exactly `--config <config>` (from `/proc/<pid>/cmdline`).
fn is_containerd_with_config(pid: i32, config: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let is_containerd = args
        .first()
        .and_then(|a| Path::new(std::str::from_utf8(a).ok()?).file_name())
        .is_some_and(|n| n == "containerd");
    let config = config.as_os_str().as_encoded_bytes();
    is_containerd
        && args
            .windows(2)
            .any(|w| w[0] == b"--config" && w[1] == config)
}

/// SIGTERM, then SIGKILL after `timeout`.
fn stop_pid(pid: i32, timeout: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// dockerd options that bound every container's log (`docker logs` keeps working).
pub const CONTAINER_LOG_OPTS: &[&str] = &[
    "--log-driver",
    "json-file",
    "--log-opt",
    "max-size=10m",
    "--log-opt",
    "max-file=3",
];

/// The daemon's own log is rotated at each start once it is larger than this.
pub const DAEMON_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Renames `log` to `log.1` (replacing an older one) when it is larger than `max`, so a
/// daemon's log is bounded to about twice `max` across restarts.
fn rotate_log(log: &Path, max: u64) {
    if std::fs::metadata(log).is_ok_and(|m| m.len() > max) {
        let mut old = log.as_os_str().to_owned();
        old.push(".1");
        if let Err(e) = std::fs::rename(log, &old) {
            tracing::warn!("{}: cannot rotate: {e}", log.display());
        }
    }
}

fn print_isolation(id: u32, iso: &IsolationStatus) {
    println!(
        "network {id}: firewall {} (cgroup {}); containers may reach: {}",
        iso.firewall,
        iso.cgroup,
        iso.allowed.join(", ")
    );
    for w in &iso.warnings {
        println!("warning: {w}");
    }
}

/// Name and main process of every running container of a daemon.
fn container_pids(socket: &Path) -> Vec<(String, i64)> {
    let Ok(list) = http_get_json(socket, "/containers/json") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in list.as_array().into_iter().flatten() {
        let Some(cid) = c["Id"].as_str() else {
            continue;
        };
        let name = c["Names"][0]
            .as_str()
            .unwrap_or(cid)
            .trim_start_matches('/')
            .to_string();
        if let Some(pid) = http_get_json(socket, &format!("/containers/{cid}/json"))
            .ok()
            .and_then(|i| i["State"]["Pid"].as_i64())
            .filter(|p| *p > 0)
        {
            out.push((name, pid));
        }
    }
    out
}

fn read_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(false)
}

/// True when the daemon on `socket` answers `/_ping`.
pub fn ping(socket: &Path) -> bool {
    http_get(socket, "/_ping")
        .map(|(code, _)| code == 200)
        .unwrap_or(false)
}

/// GET over a unix socket with HTTP/1.0 (the daemon closes the connection after the answer).
pub fn http_get(socket: &Path, path: &str) -> Result<(u16, Vec<u8>)> {
    http_get_within(socket, path, Duration::from_secs(5))
}

/// [`http_get`] with its own bound on each read and write.
pub fn http_get_within(socket: &Path, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("{}: cannot connect", socket.display()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP answer")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((code, buf[head_end + 4..].to_vec()))
}

pub fn http_get_json(socket: &Path, path: &str) -> Result<serde_json::Value> {
    http_get_json_within(socket, path, Duration::from_secs(5))
}

pub fn http_get_json_within(
    socket: &Path,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let (code, body) = http_get_within(socket, path, timeout)?;
    if code != 200 {
        bail!("{}: GET {path} answered {code}", socket.display());
    }
    Ok(serde_json::from_slice(&body)?)
}
