//! Fixtures of the cluster tests (docs/cluster.md): a 3-member etcd cluster, "servers" that are
//! network namespaces each running its own repo daemons, route server and Traefik, and an edge
//! Traefik configured by `renet proxy config --edge`, all on one machine.
//!
//! Network: a bridge `renet-ct-br` (198.18.72.1/24) in the root namespace; every other part
//! lives in a namespace of its own, joined to the bridge by a veth pair:
//!
//! | namespace | address | runs |
//! |---|---|---|
//! | `renet-ct-etcd` | 198.18.72.3 | etcd members, client ports 23791-23793, peer 23801-23803 |
//! | `renet-ct-edge` | 198.18.72.2 | the edge Traefik (`web` 80, `websecure` 443, `tcp-*`) |
//! | `renet-ct-a`, `-b`, `-c` | 198.18.72.11, .12, .13 | repo daemons, route server, Traefik |
//!
//! So every part keeps its well-known ports (80, 443, 5432, ...) without meeting anybody
//! else's, and clients (the test, in the root namespace) reach only addresses the test created.
//! Processes are started with `nsenter --net` (network namespace only: dockerd keeps the host's
//! cgroup and mount view). A repository's network ID may run on two servers at once (a move):
//! each server has its own socket and data folders.
//!
//! Cleanup: everything is undone on drop, also after a panic; [`Cluster::start`] first removes
//! whatever a killed earlier run left (its namespaces' processes, links, mounts). Runs are
//! serialized by a lock file.
//!
//! `RENET_CLUSTER_NET=<n>` moves all of it to 198.18.<n>.0/24, namespaces `renet-c<n>-*`, links
//! and folders `rc<n>-*` and its own lock file ([`net`]): a bench can run beside the tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// The route server tests' helpers that mean the same here: the binary, the checkout, polling,
// and plain HTTP/TCP clients.
#[path = "../route_server_support/mod.rs"]
pub mod route_server_support;
pub use route_server_support::{
    http_get, renet_bin, repo_root, tcp_exchange, traefik_bin, wait_for,
};

/// The third octet of the test network, 198.18.<net>.0/24: 72 unless `RENET_CLUSTER_NET` says
/// otherwise. Names, links, the lock file and temporary folders follow it, so a bench run on
/// another network (`RENET_CLUSTER_NET=76 cargo bench --bench cluster_edge`) neither meets nor
/// cleans up a test run on the default one.
pub fn net() -> u8 {
    match std::env::var("RENET_CLUSTER_NET") {
        Ok(v) => {
            let n: u8 = v
                .parse()
                .unwrap_or_else(|_| panic!("RENET_CLUSTER_NET={v}: a number 0-255"));
            n
        }
        Err(_) => 72,
    }
}

/// `default` on the default network, `default` with the network number otherwise.
fn per_net(default: &str, other: &str) -> String {
    match net() {
        72 => default.to_string(),
        n => format!("{other}{n}-"),
    }
}

pub fn lock_file() -> String {
    match net() {
        72 => "/tmp/renet-cluster-tests.lock".to_string(),
        n => format!("/tmp/renet-cluster-tests-{n}.lock"),
    }
}
/// Every namespace of these tests starts with this (`renet-ct-` on the default network).
pub fn prefix() -> String {
    per_net("renet-ct-", "renet-c")
}
/// Every veth link and temporary folder of these tests starts with this (`rct-`).
fn link_prefix() -> String {
    per_net("rct-", "rc")
}
pub fn bridge() -> String {
    format!("{}br", prefix())
}
/// Address `host` of the test network.
pub fn net_ip(host: u8) -> String {
    format!("198.18.{}.{host}", net())
}
pub fn bridge_ip() -> String {
    net_ip(1)
}
pub fn edge_ip() -> String {
    net_ip(2)
}
pub fn etcd_ip() -> String {
    net_ip(3)
}
/// Network IDs of these tests only (other suites use other blocks).
pub const NET_A: u32 = 4032;
pub const NET_B: u32 = 4096;
/// Ports of every server's and the edge's entrypoints (each in its own namespace).
pub const HTTP_PORT: u16 = 80;
pub const HTTPS_PORT: u16 = 443;
pub const TCP_PORTS: [u16; 2] = [5432, 6379];
pub const DYNAMIC_RANGE: [u16; 2] = [10000, 10001];
/// Traefik's API inside each namespace (loopback of that namespace).
pub const TRAEFIK_API: &str = "127.0.0.1:8080";
/// The route server's listen address inside each server namespace.
pub const ROUTE_SERVER: &str = "127.0.0.1:7111";
/// The lease TTL of the route servers.
pub const LEASE_TTL_SECONDS: u64 = 3;

/// Serializes the cluster tests across threads and processes (they share names and ports).
pub fn exclusive() -> std::fs::File {
    route_server_support::hold_lock(&lock_file())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tmpdir(what: &str) -> tempfile::TempDir {
    // Short paths: unix socket paths below a daemon's exec-root are limited to 108 bytes.
    tempfile::Builder::new()
        .prefix(&format!("{}{what}-", link_prefix()))
        .tempdir_in("/tmp")
        .unwrap()
}

/// SIGKILL to a pid, ignoring one that is gone.
fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

// ---------------------------------------------------------------------------------------------
// Leftovers of a killed run

/// Removes what an earlier run that was killed (no drop) left behind: the processes of our
/// namespaces, the namespaces, the bridge and veth links, mounts below our temporary folders.
pub fn remove_leftovers() {
    let list = ip(&["netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(&prefix()) {
            kill_namespace(name);
        }
    }
    let _ = ip(&["link", "del", &bridge()]);
    let links = ip(&["-o", "link", "show"]);
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        if let Some(name) = line.split(": ").nth(1) {
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with(&link_prefix()) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
    unmount_below(&format!("/tmp/{}", link_prefix()));
    // Their folders (only ours: the lock is held, so no other run of these tests is live).
    if let Ok(entries) = std::fs::read_dir("/tmp") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&link_prefix()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Kills every process of a namespace (dockerd, containerd, containers, route server,
/// Traefik, etcd) and deletes it.
fn kill_namespace(name: &str) {
    for _ in 0..20 {
        let pids = ip(&["netns", "pids", name]);
        let pids: Vec<i32> = String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            kill9(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ip(&["netns", "del", name]);
}

/// Lazily unmounts every mount point whose path starts with `prefix` (a killed dockerd's
/// overlays and netns bind mounts), deepest first.
fn unmount_below(prefix: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["--lazy", p]).output();
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/// A network namespace joined to the bridge with one address.
pub struct Netns {
    pub name: String,
    pub address: String,
    host_if: String,
}

impl Netns {
    /// `renet-ct-<short>` at `address`/24 on the bridge, with loopback up.
    pub fn create(short: &str, address: &str) -> Netns {
        let name = format!("{}{short}", prefix());
        let host_if = format!("{}{short}", link_prefix());
        let peer_if = format!("{host_if}-n");
        assert!(peer_if.len() <= 15, "interface name {peer_if} is too long");
        kill_namespace(&name);
        let _ = ip(&["link", "del", &host_if]);
        ip_ok(&["netns", "add", &name]);
        ip_ok(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip_ok(&["link", "set", &host_if, "master", &bridge()]);
        ip_ok(&["link", "set", &host_if, "up"]);
        ip_ok(&["link", "set", &peer_if, "netns", &name]);
        ip_ok(&["-n", &name, "link", "set", "lo", "up"]);
        ip_ok(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            &peer_if,
        ]);
        ip_ok(&["-n", &name, "link", "set", &peer_if, "up"]);
        Netns {
            name,
            address: address.to_string(),
            host_if,
        }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A command that runs `program` in this namespace (network only).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        c
    }

    /// HTTP GET from inside the namespace (its loopback services: route server, Traefik API).
    /// Starts `cmd` (a command of this namespace) logging to `log`, and waits until `url`
    /// answers inside the namespace; fails at once if the process exits meanwhile.
    pub fn spawn_answering(
        &self,
        cmd: Command,
        log: PathBuf,
        what: &str,
        url: &str,
        timeout: Duration,
    ) -> Proc {
        let mut proc = Proc::spawn(cmd, log, what);
        wait_for(what, timeout, || {
            proc.assert_alive();
            self.http_get(url).map(|_| ())
        });
        proc
    }

    pub fn http_get(&self, url: &str) -> Result<(u16, String), String> {
        let out = self
            .command("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                url,
            ])
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "{url} from {}: no answer: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            )),
            Ok(c) => Ok((c, body.to_string())),
        }
    }

    pub fn json(&self, url: &str) -> Result<serde_json::Value, String> {
        let (code, body) = self.http_get(url)?;
        if code != 200 && code != 503 {
            return Err(format!("{url}: {code}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("{url}: {e}: {body}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_namespace(&self.name);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// The bridge every namespace is joined to; removed on drop.
pub struct Bridge;

impl Bridge {
    pub fn create() -> Bridge {
        let br = bridge();
        let _ = ip(&["link", "del", &br]);
        ip_ok(&["link", "add", &br, "type", "bridge"]);
        ip_ok(&["addr", "add", &format!("{}/24", bridge_ip()), "dev", &br]);
        ip_ok(&["link", "set", &br, "up"]);
        Bridge
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &bridge()]);
    }
}

/// A child process that is killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub what: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: PathBuf, what: &str) -> Proc {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Proc {
            child: Some(child),
            log,
            what: what.to_string(),
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Panics with the log when the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("{} exited ({status}):\n{}", self.what, self.log_text());
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; reaped.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// etcd

/// Three etcd members in the `renet-ct-etcd` namespace, each with its own data folder.
pub struct Etcd {
    pub ns: Netns,
    dir: tempfile::TempDir,
    members: Vec<Option<Proc>>,
}

impl Etcd {
    pub const MEMBERS: usize = 3;

    pub fn start() -> Etcd {
        let ns = Netns::create("etcd", &etcd_ip());
        let mut e = Etcd {
            ns,
            dir: tmpdir("etcd"),
            members: (0..Self::MEMBERS).map(|_| None).collect(),
        };
        for i in 0..Self::MEMBERS {
            e.start_member(i);
        }
        e.wait_healthy(Duration::from_secs(30));
        e
    }

    fn member_name(i: usize) -> String {
        format!("m{i}")
    }

    pub fn client_url(i: usize) -> String {
        format!("http://{}:{}", etcd_ip(), 23791 + i)
    }

    fn peer_url(i: usize) -> String {
        format!("http://{}:{}", etcd_ip(), 23801 + i)
    }

    /// All client URLs, comma separated (`--cluster`).
    pub fn endpoints() -> String {
        (0..Self::MEMBERS)
            .map(Self::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (Re)starts member `i` on its data folder.
    pub fn start_member(&mut self, i: usize) {
        let cluster = (0..Self::MEMBERS)
            .map(|j| format!("{}={}", Self::member_name(j), Self::peer_url(j)))
            .collect::<Vec<_>>()
            .join(",");
        let data = self.dir.path().join(Self::member_name(i));
        let mut cmd = self.ns.command("etcd");
        cmd.args(["--name", &Self::member_name(i)])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &Self::client_url(i)])
            .args(["--advertise-client-urls", &Self::client_url(i)])
            .args(["--listen-peer-urls", &Self::peer_url(i)])
            .args(["--initial-advertise-peer-urls", &Self::peer_url(i)])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "renet-ct"])
            // Fast elections on one machine.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"]);
        let log = self
            .dir
            .path()
            .join(format!("{}.log", Self::member_name(i)));
        self.members[i] = Some(Proc::spawn(cmd, log, &format!("etcd member {i}")));
    }

    /// SIGKILL member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].take() {
            p.kill();
        }
    }

    /// SIGKILL every member.
    pub fn kill_all(&mut self) {
        for i in 0..Self::MEMBERS {
            self.kill_member(i);
        }
    }

    /// `etcdctl` against the running members.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let live: Vec<String> = (0..Self::MEMBERS)
            .filter(|i| self.members[*i].is_some())
            .map(Self::client_url)
            .collect();
        run(Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(args))
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn put(&self, key: &str, value: &str) {
        self.ctl_ok(&["put", key, value]);
    }

    /// The value of `key`, None when absent.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.ctl_ok(&["get", "--print-value-only", key]);
        (!out.is_empty()).then_some(out)
    }

    /// Every key below `prefix` with its value.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self.ctl_ok(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
            .collect()
    }

    pub fn del_prefix(&self, prefix: &str) {
        self.ctl_ok(&["del", "--prefix", prefix]);
    }

    /// Every running member answers `endpoint health`.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        let live: Vec<usize> = (0..Self::MEMBERS)
            .filter(|i| self.members[*i].is_some())
            .collect();
        for i in &live {
            self.members[*i].as_mut().unwrap().assert_alive();
        }
        wait_for("etcd members to be healthy", timeout, || {
            let eps: Vec<String> = live.iter().map(|i| Self::client_url(*i)).collect();
            let out = run(Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", eps.join(",")))
                .args(["--dial-timeout=1s", "--command-timeout=2s"])
                .args(["endpoint", "health"]));
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).to_string())
            }
        });
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", Self::member_name(i))),
        )
        .unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

// ---------------------------------------------------------------------------------------------
// Servers

/// A repo daemon of one server (its socket and data folders are the server's).
pub struct Daemon {
    pub network_id: u32,
    pub socket: PathBuf,
    ns_path: String,
    socket_dir: PathBuf,
    data_dir: PathBuf,
    running: bool,
}

impl Daemon {
    fn renet_daemon(&self, what: &str) -> Output {
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path))
            .arg("--")
            .arg(renet_bin())
            .args(["daemon", what, "--network-id", &self.network_id.to_string()])
            .arg("--socket-dir")
            .arg(&self.socket_dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--timeout", "60"]))
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        run(Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env_remove("DOCKER_CONTEXT"))
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} on {}: {}",
            self.socket.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Removes every container of this daemon.
    pub fn remove_all(&self) {
        let ids = self.docker(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&ids.stdout).to_string();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
    }

    fn release_netns(&self) {
        let ns = self
            .socket_dir
            .join(format!("exec-{}", self.network_id))
            .join("netns/default");
        if ns.exists() {
            let _ = Command::new("umount").arg("--lazy").arg(&ns).output();
        }
    }

    pub fn stop(&mut self) {
        if self.running {
            self.remove_all();
            let _ = self.renet_daemon("stop");
            self.running = false;
        }
        self.release_netns();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a repository serves in these tests: one container answering `marker` over HTTP on
/// the service IP of `slot`, port 8080 (routers on `web` and `websecure` for `host`), and on
/// `tcp_port` (forwarded from the `tcp-<port>` entrypoint, `rediacc.tcp_ports`).
#[derive(Debug, Clone)]
pub struct Site {
    pub host: String,
    pub marker: String,
    pub tcp_port: Option<u16>,
    /// Slot of the container's service IP (several sites of one repository: several slots).
    pub slot: u32,
}

impl Site {
    pub fn new(host: &str, marker: &str) -> Site {
        Site {
            host: host.to_string(),
            marker: marker.to_string(),
            tcp_port: None,
            slot: 0,
        }
    }
    pub fn tcp(mut self, port: u16) -> Site {
        self.tcp_port = Some(port);
        self
    }
    pub fn slot(mut self, slot: u32) -> Site {
        self.slot = slot;
        self
    }

    /// `docker run` arguments of the site as container (and service, router) `name` of
    /// network `n`: the labels `renet compose` writes, Traefik labels for the host.
    pub fn docker_run_args(&self, n: u32, name: &str) -> Vec<String> {
        let ip = renet::addresses::NetworkId::new(n)
            .unwrap()
            .slot_ip(self.slot)
            .unwrap()
            .to_string();
        let rule = format!("Host(`{}`)", self.host);
        let mut labels = vec![
            ("rediacc.service_name".to_string(), name.to_string()),
            ("rediacc.service_ip".to_string(), ip.clone()),
            ("rediacc.network_id".to_string(), n.to_string()),
            ("traefik.enable".to_string(), "true".to_string()),
            (format!("traefik.http.routers.{name}.rule"), rule.clone()),
            (
                format!("traefik.http.routers.{name}.entrypoints"),
                "web".into(),
            ),
            (format!("traefik.http.routers.{name}.service"), name.into()),
            (format!("traefik.http.routers.{name}s.rule"), rule),
            (
                format!("traefik.http.routers.{name}s.entrypoints"),
                "websecure".into(),
            ),
            (format!("traefik.http.routers.{name}s.tls"), "true".into()),
            (format!("traefik.http.routers.{name}s.service"), name.into()),
            (
                format!("traefik.http.services.{name}.loadbalancer.server.port"),
                "8080".into(),
            ),
        ];
        let mut serve = format!("mkdir -p /w && echo {} > /w/index.html && ", self.marker);
        if let Some(p) = self.tcp_port {
            labels.push(("rediacc.tcp_ports".to_string(), p.to_string()));
            serve.push_str(&format!("httpd -p {ip}:{p} -h /w && "));
        }
        serve.push_str(&format!("exec httpd -f -p {ip}:8080 -h /w"));
        route_server_support::docker_run_args(
            name,
            &labels,
            &[],
            &["sh".into(), "-c".into(), serve],
        )
    }
}

/// One "server": a namespace with its repo daemons, route server and Traefik.
pub struct Server {
    pub name: String,
    pub daemons: Vec<Daemon>,
    pub route_server: Option<Proc>,
    pub traefik: Option<Proc>,
    pub dir: tempfile::TempDir,
    // Last: the namespace goes after everything in it has been stopped.
    pub ns: Netns,
}

impl Server {
    /// A server `name` at `address`, with Traefik running (no route server yet).
    pub fn create(name: &str, address: &str) -> Server {
        let ns = Netns::create(name, address);
        let dir = tmpdir(name);
        for sub in ["s", "d", "state", "dynamic"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let mut s = Server {
            name: name.to_string(),
            daemons: Vec::new(),
            route_server: None,
            traefik: None,
            dir,
            ns,
        };
        s.write_settings();
        s.start_traefik();
        s
    }

    pub fn address(&self) -> &str {
        &self.ns.address
    }
    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("s")
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("d")
    }
    pub fn settings_path(&self) -> PathBuf {
        self.dir.path().join("renet.json")
    }
    fn dynamic_dir(&self) -> PathBuf {
        self.dir.path().join("dynamic")
    }

    /// The route server's settings: the same ports as the edge, routes pushed to Traefik's
    /// file provider.
    fn write_settings(&self) {
        let settings = serde_json::json!({
            "listen": ROUTE_SERVER,
            "socket_dir": self.socket_dir(),
            "state_dir": self.dir.path().join("state"),
            "public_ipv4": self.address(),
            "http_port": HTTP_PORT,
            "https_port": HTTPS_PORT,
            "dynamic_range": DYNAMIC_RANGE,
            "dynamic_file": self.dynamic_dir().join("routes.yaml"),
            "cert_resolver": "",
            "redeploy_grace_seconds": 0,
            "proxy": { "preset_tcp_ports": TCP_PORTS, "preset_udp_ports": [] },
        });
        std::fs::write(
            self.settings_path(),
            serde_json::to_string_pretty(&settings).unwrap(),
        )
        .unwrap();
    }

    /// The server's Traefik: `web`, `websecure` (TLS with Traefik's default certificate),
    /// `tcp-*` on the server's address, routes from the file provider.
    fn start_traefik(&mut self) {
        let a = self.address().to_string();
        let mut eps = format!(
            "  web:\n    address: \"{a}:{HTTP_PORT}\"\n  websecure:\n    address: \"{a}:{HTTPS_PORT}\"\n    http:\n      tls: {{}}\n  traefik:\n    address: \"{TRAEFIK_API}\"\n"
        );
        for p in TCP_PORTS
            .iter()
            .copied()
            .chain(DYNAMIC_RANGE[0]..=DYNAMIC_RANGE[1])
        {
            eps.push_str(&format!("  tcp-{p}:\n    address: \"{a}:{p}\"\n"));
        }
        let yaml = format!(
            "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\nlog:\n  level: INFO\nentryPoints:\n{eps}api:\n  insecure: true\n  dashboard: false\nping:\n  entryPoint: traefik\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    directory: \"{}\"\n    watch: true\n",
            self.dynamic_dir().display()
        );
        let config = self.dir.path().join("traefik.yml");
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = self.ns.command(&traefik_bin().display().to_string());
        cmd.arg(format!("--configFile={}", config.display()));
        let log = self.dir.path().join("traefik.log");
        self.traefik = Some(self.ns.spawn_answering(
            cmd,
            log,
            &format!("traefik of server {}", self.name),
            &format!("http://{TRAEFIK_API}/ping"),
            Duration::from_secs(30),
        ));
    }

    /// Starts the repo daemon of network `n` on this server and imports the test image.
    pub fn start_daemon(&mut self, n: u32) -> usize {
        assert!(
            [NET_A, NET_B].contains(&n),
            "cluster tests use networks {NET_A} and {NET_B} only"
        );
        let mut d = Daemon {
            network_id: n,
            socket: self.socket_dir().join(format!("docker-{n}.sock")),
            ns_path: self.ns.path(),
            socket_dir: self.socket_dir(),
            data_dir: self.data_dir(),
            running: false,
        };
        let out = d.renet_daemon("start");
        assert!(
            out.status.success(),
            "renet daemon start --network-id {n} on server {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        d.running = true;
        run_ok(
            Command::new("bash")
                .arg(repo_root().join("scripts/test-env.sh"))
                .arg("image")
                .arg(&d.socket),
        );
        self.daemons.push(d);
        self.daemons.len() - 1
    }

    pub fn daemon(&self, n: u32) -> &Daemon {
        self.daemons
            .iter()
            .find(|d| d.network_id == n && d.running)
            .unwrap_or_else(|| panic!("server {} runs no daemon {n}", self.name))
    }

    pub fn daemon_mut(&mut self, n: u32) -> &mut Daemon {
        let name = self.name.clone();
        self.daemons
            .iter_mut()
            .find(|d| d.network_id == n && d.running)
            .unwrap_or_else(|| panic!("server {name} runs no daemon {n}"))
    }

    /// Runs `site` as container `name` on the daemon of network `n`; returns its ID.
    pub fn run_site(&self, n: u32, name: &str, site: &Site) -> String {
        let args = site.docker_run_args(n, name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.daemon(n).docker_ok(&args)
    }

    /// Removes container `name` of network `n` (the repository goes down on this server).
    pub fn remove_site(&self, n: u32, name: &str) {
        self.daemon(n).docker_ok(&["rm", "-f", name]);
    }

    /// Starts the route server, in the cluster when `cluster` is Some(endpoints): the
    /// settings' `cluster` object gets the lease TTL, the flags the endpoints, name and address.
    pub fn start_route_server(&mut self, cluster: Option<&str>) {
        self.write_settings();
        if cluster.is_some() {
            let path = self.settings_path();
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            v["cluster"] = serde_json::json!({ "lease_ttl_seconds": LEASE_TTL_SECONDS });
            std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        }
        let mut cmd = self.ns.command(renet_bin());
        cmd.arg("route-server")
            .arg("--settings")
            .arg(self.settings_path())
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("RENET_LOG", "info,renet=debug");
        if let Some(endpoints) = cluster {
            cmd.args(["--cluster", endpoints])
                .args(["--cluster-name", &self.name])
                .args(["--cluster-address", self.address()]);
        }
        let log = self.dir.path().join("route-server.log");
        self.route_server = Some(self.ns.spawn_answering(
            cmd,
            log,
            &format!("route server of {}", self.name),
            &format!("http://{ROUTE_SERVER}/health"),
            Duration::from_secs(20),
        ));
    }

    /// `/health` of the route server.
    pub fn health(&self) -> Result<serde_json::Value, String> {
        self.ns.json(&format!("http://{ROUTE_SERVER}/health"))
    }

    /// SIGKILL the route server (a crash).
    pub fn kill_route_server(&mut self) {
        if let Some(mut p) = self.route_server.take() {
            p.kill();
        }
    }

    /// GET straight to this server's Traefik (`web`), with a Host header.
    pub fn http(&self, host: &str) -> Result<(u16, String), String> {
        http_get(&format!("{}:{HTTP_PORT}", self.address()), "/", Some(host))
    }

    pub fn route_server_log(&self) -> String {
        self.route_server
            .as_ref()
            .map(Proc::log_text)
            .unwrap_or_else(|| {
                std::fs::read_to_string(self.dir.path().join("route-server.log"))
                    .unwrap_or_default()
            })
    }

    pub fn traefik_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("traefik.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut p) = self.route_server.take() {
            p.stop();
        }
        for d in &mut self.daemons {
            d.stop();
        }
        if let Some(mut p) = self.traefik.take() {
            p.kill();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The edge

/// The edge Traefik in `renet-ct-edge`, configured by `renet proxy config --edge`.
pub struct Edge {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub ns: Netns,
}

impl Edge {
    pub fn start(endpoints: &str) -> Edge {
        let ns = Netns::create("edge", &edge_ip());
        let dir = tmpdir("edge");
        let tcp: Vec<String> = TCP_PORTS.iter().map(u16::to_string).collect();
        let out = run(Command::new(renet_bin())
            .args(["proxy", "config", "--edge", "--cluster", endpoints])
            .arg("--settings")
            .arg(dir.path().join("renet.json"))
            .arg("--out-dir")
            .arg(dir.path().join("traefik"))
            .arg("--unit-dir")
            .arg(dir.path().join("units"))
            .args(["--public-ipv4", &edge_ip()])
            .args(["--http-port", &HTTP_PORT.to_string()])
            .args(["--https-port", &HTTPS_PORT.to_string()])
            .args(["--preset-ports", &tcp.join(",")])
            .args([
                "--dynamic-range",
                &format!("{}-{}", DYNAMIC_RANGE[0], DYNAMIC_RANGE[1]),
            ])
            .args(["--api-address", TRAEFIK_API]));
        assert!(
            out.status.success(),
            "renet proxy config --edge: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("traefik/traefik-edge.yml");
        let mut cmd = ns.command(&traefik_bin().display().to_string());
        cmd.arg(format!("--configFile={}", config.display()));
        let proc = ns.spawn_answering(
            cmd,
            dir.path().join("traefik.log"),
            "the edge Traefik",
            &format!("http://{TRAEFIK_API}/ping"),
            Duration::from_secs(30),
        );
        Edge {
            proc,
            dir,
            config,
            ns,
        }
    }

    /// Traefik's `/api/rawdata` of the edge.
    pub fn rawdata(&self) -> Result<serde_json::Value, String> {
        self.ns.json(&format!("http://{TRAEFIK_API}/api/rawdata"))
    }

    /// Names of the edge's routers from etcd (`@etcd` dropped), HTTP and TCP.
    pub fn routers(&self) -> Result<(Vec<String>, Vec<String>), String> {
        let raw = self.rawdata()?;
        let names = |k: &str| -> Vec<String> {
            raw[k]
                .as_object()
                .map(|m| {
                    m.keys()
                        .filter_map(|n| n.strip_suffix("@etcd"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok((names("routers"), names("tcpRouters")))
    }

    /// HTTP GET through the edge's `web`.
    pub fn http(&self, host: &str) -> Result<(u16, String), String> {
        http_get(&format!("{}:{HTTP_PORT}", edge_ip()), "/", Some(host))
    }

    /// HTTPS GET through the edge's `websecure` (SNI `host`; the server's default
    /// certificate, so no verification).
    pub fn https(&self, host: &str) -> Result<(u16, String), String> {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--resolve")
            .arg(format!("{host}:{HTTPS_PORT}:{}", edge_ip()))
            .arg(format!("https://{host}:{HTTPS_PORT}/"))
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "https://{host} through the edge: no answer: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Ok(c) => Ok((c, body.to_string())),
        }
    }

    /// An HTTP/1.0 request over the edge's `tcp-<port>`, answered by busybox httpd behind it.
    pub fn tcp(&self, port: u16) -> Result<String, String> {
        tcp_exchange(
            &format!("{}:{port}", edge_ip()),
            "GET / HTTP/1.0\r\nHost: tcp\r\n\r\n",
        )
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

// ---------------------------------------------------------------------------------------------
// The whole cluster

/// The bridge, etcd and the edge; servers are added by the test. Dropped in reverse order of
/// creation: servers, edge, etcd, bridge.
pub struct Cluster {
    pub servers: Vec<Server>,
    pub edge: Edge,
    pub etcd: Etcd,
    _bridge: Bridge,
    _lock: std::fs::File,
}

impl Cluster {
    pub fn start() -> Cluster {
        let lock = exclusive();
        remove_leftovers();
        let bridge = Bridge::create();
        let etcd = Etcd::start();
        let edge = Edge::start(&Etcd::endpoints());
        Cluster {
            servers: Vec::new(),
            edge,
            etcd,
            _bridge: bridge,
            _lock: lock,
        }
    }

    /// Adds server `name` (`a` → 198.18.72.11, `b` → .12, `c` → .13) with Traefik running.
    pub fn add_server(&mut self, name: &str) -> usize {
        let i = self.servers.len();
        let address = net_ip(11 + i as u8);
        self.servers.push(Server::create(name, &address));
        i
    }

    /// A report of every log, for a failing assertion.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for srv in &self.servers {
            s.push_str(&format!(
                "--- route server {}:\n{}\n--- traefik {}:\n{}\n",
                srv.name,
                tail(&srv.route_server_log(), 40),
                srv.name,
                tail(&srv.traefik_log(), 20)
            ));
        }
        s.push_str(&format!("--- edge:\n{}\n", tail(&self.edge.log_text(), 30)));
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Servers first (their route servers talk to etcd), then the edge, then etcd.
        self.servers.clear();
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Writes, by hand, the etcd keys docs/cluster.md says a server writes to serve `host` (and
/// its TCP `port`): the server entry, its Traefik services, the server's HTTP and TCP (SNI
/// passthrough) routers with `host` as their one alternative, the port's TCP router. The
/// schema check of the tests.
pub fn write_served_keys(
    etcd: &Etcd,
    server: &str,
    address: &str,
    network_id: u32,
    host: &str,
    port: Option<u16>,
) {
    let t = "traefik";
    etcd.put(
        &format!("renet/servers/{server}"),
        &format!(
            r#"{{"address":"{address}","http_port":{HTTP_PORT},"https_port":{HTTPS_PORT},"name":"{server}"}}"#
        ),
    );
    etcd.put(
        &format!("{t}/http/services/renet-{server}/loadBalancer/servers/0/url"),
        &format!("http://{address}:{HTTP_PORT}"),
    );
    etcd.put(
        &format!("{t}/tcp/services/renet-{server}-https/loadBalancer/servers/0/address"),
        &format!("{address}:{HTTPS_PORT}"),
    );
    let serving = format!(r#"{{"network_id":{network_id},"server":"{server}"}}"#);
    etcd.put(
        &format!("renet/owners/host/{host}"),
        &network_id.to_string(),
    );
    etcd.put(&format!("renet/serving/host/{host}"), &serving);
    let r = format!("{t}/http/routers/renet-srv-{server}");
    etcd.put(&format!("{r}/rule"), &format!("Host(`{host}`)"));
    etcd.put(&format!("{r}/entryPoints/0"), "web");
    etcd.put(&format!("{r}/service"), &format!("renet-{server}"));
    let r = format!("{t}/tcp/routers/renet-srv-{server}");
    etcd.put(&format!("{r}/rule"), &format!("HostSNI(`{host}`)"));
    etcd.put(&format!("{r}/entryPoints/0"), "websecure");
    etcd.put(&format!("{r}/service"), &format!("renet-{server}-https"));
    etcd.put(&format!("{r}/tls/passthrough"), "true");
    if let Some(p) = port {
        etcd.put(&format!("renet/owners/tcp/{p}"), &network_id.to_string());
        etcd.put(&format!("renet/serving/tcp/{p}"), &serving);
        let svc = format!("renet-{server}-tcp-{p}");
        etcd.put(
            &format!("{t}/tcp/services/{svc}/loadBalancer/servers/0/address"),
            &format!("{address}:{p}"),
        );
        let r = format!("{t}/tcp/routers/renet-tcp-{p}");
        etcd.put(&format!("{r}/rule"), "HostSNI(`*`)");
        etcd.put(&format!("{r}/entryPoints/0"), &format!("tcp-{p}"));
        etcd.put(&format!("{r}/service"), &svc);
    }
}

/// The schema's promise (docs/cluster.md): a host is in server S's edge routers (HTTP and TCP
/// rules, hosts sorted) exactly when `renet/serving/host/<host>` names S.
pub fn assert_edge_rules_match_serving(etcd: &Etcd, servers: &[&str]) {
    let serving = etcd.get_prefix("renet/serving/host/");
    for s in servers {
        let expected: Vec<String> = serving
            .iter()
            .filter(|(_, v)| v.contains(&format!(r#""server":"{s}""#)))
            .map(|(k, _)| k.trim_start_matches("renet/serving/host/").to_string())
            .collect();
        for (proto, matcher) in [("http", "Host"), ("tcp", "HostSNI")] {
            let rule = etcd.get(&format!("traefik/{proto}/routers/renet-srv-{s}/rule"));
            let listed: Vec<String> = rule
                .iter()
                .flat_map(|r| r.split(" || "))
                .map(|alt| {
                    alt.strip_prefix(&format!("{matcher}(`"))
                        .and_then(|a| a.strip_suffix("`)"))
                        .unwrap_or_else(|| panic!("server {s}: unexpected {proto} rule {rule:?}"))
                        .to_string()
                })
                .collect();
            assert_eq!(listed, expected, "server {s}'s {proto} edge rule");
        }
    }
}
