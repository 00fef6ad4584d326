//! Shared fixtures of the route server tests: repo daemons started in a private socket folder,
//! containers run with the plain docker CLI, the route server and Traefik as child processes,
//! and a tiny HTTP client. Everything started here is stopped by a drop guard, also when an
//! assertion fails.
//!
//! Isolation: these tests only use network IDs 2944, 3008, 3072, 3712, 3776 and 3840 (the other IDs' loopback
//! blocks belong to other test suites on the same machine), and hold an exclusive lock on
//! [`LOCK_FILE`] for their whole run, so two runs never bind the same service IPs.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use renet::addresses::NetworkId;

#[path = "../common/free_ports.rs"]
mod free_ports;
#[allow(unused_imports)] // not every test binary uses both
pub use free_ports::{free_port_on, free_port_on_all};

pub const IMAGE: &str = "renet-test/busybox:latest";
pub const LOCK_FILE: &str = "/tmp/renet-route-server-tests.lock";

pub fn renet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_renet")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lock the "Operations" suites (`tests/ops_*.rs`) share: they use the same networks
/// (3520, 3584, 3648) and Traefik address.
pub const OPS_LOCK: &str = "/tmp/renet-ops-tests.lock";

/// Holds an exclusive lock on the file `path` (created if missing) until the returned file is
/// dropped: serializes tests that share networks or addresses, across threads and test binaries.
pub fn hold_lock(path: &str) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open the test lock file {path}: {e}"));
    f.lock()
        .unwrap_or_else(|e| panic!("lock the test lock file {path}: {e}"));
    f
}

/// Serializes the route server tests across threads and processes.
pub fn exclusive() -> std::fs::File {
    hold_lock(LOCK_FILE)
}

/// Serializes the "Operations" suites.
pub fn ops_lock() -> std::fs::File {
    hold_lock(OPS_LOCK)
}

/// `renet` in `cwd` with none of the variables renet reads inherited from the test runner, and
/// its runtime folder (compose overrides) in the shared temporary one.
pub fn renet_in(cwd: &Path) -> Command {
    let mut c = Command::new(renet_bin());
    c.current_dir(cwd);
    for v in [
        "REDIACC_NETWORK_ID",
        "REDIACC_WORKING_DIR",
        "DOCKER_HOST",
        "COMPOSE_FILE",
        "DOCKER_CONTEXT",
        "RENET_SOCKET_DIR",
        "RENET_SETTINGS",
    ] {
        c.env_remove(v);
    }
    c.env(
        "RENET_RUNTIME_DIR",
        std::env::temp_dir().join("renet-test-overrides"),
    );
    c
}

/// A command's stdout and stderr, labelled, for failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The real Traefik binary: the first `traefik` on PATH that is an ELF file (a pyenv shim
/// would put a wrapper process between the test and Traefik, and SIGKILL would miss Traefik).
pub fn traefik_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("traefik");
        let Ok(mut f) = std::fs::File::open(&candidate) else {
            continue;
        };
        let mut magic = [0u8; 4];
        if f.read_exact(&mut magic).is_ok() && &magic == b"\x7fELF" {
            return candidate;
        }
    }
    panic!("traefik (v3) not found on PATH; run scripts/test-env.sh install");
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// Polls `f` until it returns Some, or panics with `what` and the last observation.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn net(n: u32) -> NetworkId {
    NetworkId::new(n).unwrap()
}

pub fn slot_ip(n: u32, slot: u32) -> Ipv4Addr {
    net(n).slot_ip(slot).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Repo daemons

/// A private socket folder and data folder for the daemons of one test.
pub struct Sandbox {
    pub sockets: tempfile::TempDir,
    pub data: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub scratch: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        // Short paths: unix socket paths (also containerd's, below the exec-root) are limited
        // to 108 bytes.
        let mk = |p: &str| {
            tempfile::Builder::new()
                .prefix(p)
                .tempdir_in("/tmp")
                .unwrap()
        };
        Sandbox {
            sockets: mk("rs-sock"),
            data: mk("rs-data"),
            state: mk("rs-state"),
            scratch: mk("rs-tmp"),
        }
    }

    pub fn socket(&self, n: u32) -> PathBuf {
        self.sockets.path().join(format!("docker-{n}.sock"))
    }
}

/// A repo daemon started with `renet daemon start`; stopped (with its containers) on drop.
pub struct Daemon {
    pub network_id: u32,
    pub socket: PathBuf,
    socket_dir: PathBuf,
    data_dir: PathBuf,
    running: bool,
}

impl Daemon {
    /// Starts the daemon and imports the busybox test image into it.
    pub fn start(sandbox: &Sandbox, n: u32) -> Daemon {
        assert!(
            [
                2944, 3008, 3072, 3520, 3584, 3648, 3712, 3776, 3840, 3968, 4160, 4224, 4288, 4352
            ]
            .contains(&n),
            "route server tests use networks 2944, 3008, 3072 (ops tests: 3520, 3584, 3648; \
             tenant isolation corpus: 3712, 3776, 3840; redeploys: 3968; the traefik bench: \
             4160, 4224, 4288; etcd over TLS: 4352) only"
        );
        let mut d = Daemon {
            network_id: n,
            socket: sandbox.socket(n),
            socket_dir: sandbox.sockets.path().to_path_buf(),
            data_dir: sandbox.data.path().to_path_buf(),
            running: false,
        };
        d.up();
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/test-env.sh"))
            .arg("image")
            .arg(&d.socket)
            .output()
            .expect("run scripts/test-env.sh image");
        assert!(
            out.status.success(),
            "building the test image on {}: {}",
            d.socket.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        d
    }

    /// `renet daemon start` (again, after [`Daemon::down`]).
    pub fn up(&mut self) {
        self.daemon_cmd("start");
        self.running = true;
    }

    /// `renet daemon stop`: the daemon exits, its containers stop, its socket disappears.
    pub fn down(&mut self) {
        self.daemon_cmd("stop");
        self.running = false;
        self.release_netns();
    }

    /// dockerd leaves its `netns/default` bind mount in the exec-root when it stops, which
    /// would keep the temporary socket folder from being removed.
    fn release_netns(&self) {
        let ns = self
            .socket_dir
            .join(format!("exec-{}", self.network_id))
            .join("netns/default");
        if ns.exists() {
            let _ = Command::new("umount").arg("--lazy").arg(&ns).output();
        }
    }

    fn daemon_cmd(&self, what: &str) {
        let out = Command::new(renet_bin())
            .args(["daemon", what, "--network-id", &self.network_id.to_string()])
            .arg("--socket-dir")
            .arg(&self.socket_dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--timeout", "60"])
            .output()
            .expect("run renet daemon");
        assert!(
            out.status.success(),
            "renet daemon {what} --network-id {}: {}",
            self.network_id,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env_remove("DOCKER_CONTEXT")
            .output()
            .expect("run docker")
    }

    /// Runs the docker CLI and returns its trimmed stdout; panics with stderr on failure.
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

    /// `docker run -d --network host` with the rediacc labels `renet compose` would inject for
    /// `service` in `slot`, plus `extra` labels; returns the container ID.
    pub fn run_service(
        &self,
        name: &str,
        service: &str,
        slot: u32,
        extra: &[(&str, String)],
        opts: &[&str],
        cmd: &[String],
    ) -> String {
        let ip = slot_ip(self.network_id, slot).to_string();
        let mut labels = vec![
            ("rediacc.service_name", service.to_string()),
            ("rediacc.service_ip", ip),
            ("rediacc.network_id", self.network_id.to_string()),
        ];
        labels.extend(extra.iter().cloned());
        self.run_labelled(name, &labels, opts, cmd)
    }

    /// `docker run -d --network host` with exactly these labels, extra `docker run` options
    /// `opts`, and the image's command `cmd`.
    pub fn run_labelled(
        &self,
        name: &str,
        labels: &[(&str, String)],
        opts: &[&str],
        cmd: &[String],
    ) -> String {
        let args = docker_run_args(name, labels, opts, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.docker_ok(&args)
    }
}

/// The arguments of `docker run -d --network host --name NAME` with these labels, extra
/// `docker run` options `opts`, the test image and its command `cmd`.
pub fn docker_run_args<K: std::fmt::Display, V: std::fmt::Display>(
    name: &str,
    labels: &[(K, V)],
    opts: &[&str],
    cmd: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--network".into(),
        "host".into(),
        "--name".into(),
        name.into(),
    ];
    for (k, v) in labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(opts.iter().map(|s| s.to_string()));
    args.push(IMAGE.into());
    args.extend(cmd.iter().cloned());
    args
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running {
            // Containers first, so that no listener outlives the test on a shared IP.
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
            let _ = Command::new(renet_bin())
                .args([
                    "daemon",
                    "stop",
                    "--network-id",
                    &self.network_id.to_string(),
                ])
                .arg("--socket-dir")
                .arg(&self.socket_dir)
                .arg("--data-dir")
                .arg(&self.data_dir)
                .output();
        }
        self.release_netns();
    }
}

/// A web server on ip:port whose page is `marker` (so a test can tell which container
/// answered): busybox httpd in the foreground.
pub fn web(ip: Ipv4Addr, port: u16, marker: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /w && echo {marker} > /w/index.html && exec httpd -f -p {ip}:{port} -h /w"
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The route server

/// `renet route-server` as a child process; SIGTERM (then SIGKILL) on drop.
pub struct RouteServer {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl RouteServer {
    /// Starts the route server on a free loopback port with the sandbox's folders and `extra`
    /// flags, and waits until it answers.
    pub fn start(sandbox: &Sandbox, extra: &[&str]) -> RouteServer {
        Self::start_on(sandbox, free_port(), extra)
    }

    pub fn start_on(sandbox: &Sandbox, port: u16, extra: &[&str]) -> RouteServer {
        Self::start_logged(sandbox, port, extra, "info")
    }

    /// Like [`RouteServer::start_on`], with `RENET_LOG` set to `filter`.
    pub fn start_logged(sandbox: &Sandbox, port: u16, extra: &[&str], filter: &str) -> RouteServer {
        Self::start_with(
            sandbox,
            port,
            &sandbox.scratch.path().join("no-settings.json"),
            sandbox.state.path(),
            extra,
            filter,
        )
    }

    /// `renet route-server` on `port` with the settings file `settings` and the state folder
    /// `state`, watching the sandbox's daemons, logging at `filter`; waits until it answers.
    pub fn start_with(
        sandbox: &Sandbox,
        port: u16,
        settings: &Path,
        state: &Path,
        extra: &[&str],
        filter: &str,
    ) -> RouteServer {
        let log = sandbox
            .scratch
            .path()
            .join(format!("route-server-{port}-{}.log", unique()));
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(renet_bin())
            .arg("route-server")
            .arg("--settings")
            .arg(settings)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--socket-dir")
            .arg(sandbox.sockets.path())
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .env("RENET_LOG", filter)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start renet route-server");
        let mut rs = RouteServer { child, port, log };
        wait_for(
            "the route server to answer",
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = rs.child.try_wait() {
                    panic!("route server exited early ({status}):\n{}", rs.log_text());
                }
                rs.get("/health").map(|_| ())
            },
        );
        rs
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET `path`; Err when not reachable or not 200 (for `/health`, also 503: degraded is
    /// an answer too; see [`RouteServer::health`] for the status code).
    pub fn get(&self, path: &str) -> Result<String, String> {
        let (code, body) = http_get(&format!("127.0.0.1:{}", self.port), path, None)?;
        if code != 200 && !(code == 503 && path == "/health") {
            return Err(format!("GET {path}: {code}: {body}"));
        }
        Ok(body)
    }

    /// `/health`: its HTTP status code and its document.
    pub fn health(&self) -> (u16, serde_json::Value) {
        let (code, body) = http_get(&format!("127.0.0.1:{}", self.port), "/health", None)
            .unwrap_or_else(|e| panic!("{e}"));
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health: {e}: {body}"));
        (code, v)
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let body = self.get(path).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RouteServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

// ---------------------------------------------------------------------------------------------
// Traefik

/// Real Traefik v3 with a static configuration written by the test; killed on drop.
pub struct Traefik {
    pub child: Child,
    pub api_port: u16,
    pub log: PathBuf,
}

impl Traefik {
    /// Starts Traefik with `static_yaml` (the test fills in ports) and waits for its API.
    pub fn start(dir: &Path, api_port: u16, static_yaml: &str) -> Traefik {
        let id = unique();
        let config = dir.join(format!("traefik-{id}.yaml"));
        std::fs::write(&config, static_yaml).unwrap();
        let log = dir.join(format!("traefik-{id}.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("traefik")
            .arg(format!("--configFile={}", config.display()))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start traefik (is it on PATH? run scripts/test-env.sh up)");
        let mut t = Traefik {
            child,
            api_port,
            log,
        };
        wait_for("Traefik's API", Duration::from_secs(30), || {
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!("traefik exited early ({status}):\n{}", t.log_text());
            }
            t.rawdata().map(|_| ())
        });
        t
    }

    pub fn rawdata(&self) -> Result<serde_json::Value, String> {
        let (code, body) = http_get(
            &format!("127.0.0.1:{}", self.api_port),
            "/api/rawdata",
            None,
        )?;
        if code != 200 {
            return Err(format!("/api/rawdata: {code}"));
        }
        serde_json::from_str(&body).map_err(|e| e.to_string())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Connects within 2 s: an address in a test's network namespace that went away must fail
/// the attempt, not hang it.
fn connect(addr: &str) -> Result<TcpStream, String> {
    use std::net::ToSocketAddrs;
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    TcpStream::connect_timeout(&sock, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))
}

/// A minimal HTTP/1.0 GET (the server closes the connection after the answer), with an
/// optional Host header. Returns status and body.
pub fn http_get(addr: &str, path: &str, host: Option<&str>) -> Result<(u16, String), String> {
    http_request(addr, "GET", path, host)
}

/// An HTTP/1.0 request without a body: `(status, body)`.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    host: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let host = host.unwrap_or(addr);
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path}: malformed answer {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: bad status line {head:?}"))?;
    Ok((code, body.to_string()))
}

/// HTTPS GET through curl (`-k`: Traefik's default certificate), resolving `host` to 127.0.0.1.
pub fn https_get(host: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().map_err(|_| format!("curl: {text:?}"))?;
    if code == 0 {
        return Err(format!(
            "curl could not connect: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((code, body.to_string()))
}

/// Sends raw `request` bytes over TCP to `addr` and reads until the peer closes. The TCP tests
/// talk plain HTTP/1.0 through Traefik's TCP router to busybox httpd: the busybox here has no
/// `nc -s`, and httpd binds the service IP exactly.
pub fn tcp_exchange(addr: &str, request: &str) -> Result<String, String> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("{addr}: reading the answer: {e}"))?;
    Ok(String::from_utf8_lossy(&buf).to_string())
}
