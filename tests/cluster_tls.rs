//! The cluster over an etcd that requires TLS, client certificates and a password, through the
//! real parts (docs/cluster.md "TLS and etcd users"): a throwaway CA and certificates made with
//! the `openssl` CLI, one etcd 3.4 member on https://127.0.74.1:24071 with `--client-cert-auth`
//! and etcd's role-based access (a `renet` user with read/write on `renet/` and `traefik/`, an
//! `edge` user that may only read `traefik`), the route server and `renet cluster
//! status|release` configured by the settings file's `cluster` object, and edge Traefiks
//! written by `renet proxy config --edge`.
//!
//! What an operator or an attacker sees: with the right files the route server claims its
//! host (and keeps its session when its etcd token expires) and the edge routes it; with a
//! wrong or no CA, no or an untrusted client certificate, a wrong password or an unknown user
//! nothing is written to etcd and `/health` and `cluster status` name the setting to check; an
//! edge with a wrong password routes nothing and the edge's user cannot write; a missing or
//! world-readable password file, or a world-readable client key, is refused before anything is
//! done.
//!
//! Resources: network ID 4352, loopback addresses 127.0.74.0/24 (etcd .1, the edge .2, the
//! cluster address of the route server .3, the edge's backend .4); ports besides etcd's are
//! picked free. The tests share etcd's ports, so they hold [`LOCK_FILE`].
//! Run: `cargo test --test cluster_tls` (root, after `scripts/test-env.sh install`).

#[path = "cluster_support/mod.rs"]
mod cluster_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cluster_support::route_server_support::traefik_bin;
use cluster_support::route_server_support::{
    Daemon, RouteServer, Sandbox, free_port_on, http_get, renet_bin, slot_ip, wait_for, web,
};
use cluster_support::{Proc, tail};
use serde_json::{Value, json};

const LOCK_FILE: &str = "/tmp/renet-cluster-tls-tests.lock";
const ETCD_IP: &str = "127.0.74.1";
const ETCD_URL: &str = "https://127.0.74.1:24071";
const ETCD_PEER_URL: &str = "http://127.0.74.1:24075";
/// Where a killed earlier run's etcd is found again (its pid), to stop it before starting.
const ETCD_PID_FILE: &str = "/tmp/renet-cluster-tls-etcd.pid";
const EDGE_IP: &str = "127.0.74.2";
const SERVER_ADDRESS: &str = "127.0.74.3";
const BACKEND_IP: &str = "127.0.74.4";
const NET: u32 = 4352;

const ROOT_PASSWORD: &str = "root-3b8e1c";
const RENET_PASSWORD: &str = "renet-9f2d47";
const EDGE_PASSWORD: &str = "edge-51c0aa";

fn exclusive() -> std::fs::File {
    cluster_support::route_server_support::hold_lock(LOCK_FILE)
}

fn tmpdir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rtls-{what}-"))
        .tempdir_in("/tmp")
        .unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` to its end, killing it after `timeout` (a command that should refuse to start
/// must not hang the test when it does start).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still ran after {timeout:?}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_mode(path: &Path, content: &str, mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A throwaway PKI made with the `openssl` CLI: the CA that signed etcd's certificate and the
/// client's, a second self-made CA (what a wrong `ca_file` or an attacker's client certificate
/// comes from), etcd's server certificate for 127.0.74.1 and client certificates.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: tmpdir("pki") };
        pki.ca("ca", "renet test etcd CA");
        pki.ca("rogue-ca", "renet test rogue CA");
        pki.issue(
            "ca",
            "server",
            "etcd",
            &format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\nsubjectAltName=IP:{ETCD_IP}\n"
            ),
            1,
        );
        let client = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                      extendedKeyUsage=clientAuth\n";
        pki.issue("ca", "client", "renet-client", client, 2);
        pki.issue("rogue-ca", "rogue-client", "renet-client", client, 1);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = run(Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args));
        assert!(
            out.status.success(),
            "openssl {args:?} (installed by scripts/test-env.sh): {}",
            text(&out.stderr)
        );
    }

    fn ca(&self, name: &str, cn: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    fn issue(&self, ca: &str, name: &str, cn: &str, extensions: &str, serial: u32) {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        std::fs::write(self.path(&format!("{name}.ext")), extensions).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
        // As an operator installs a client key: readable by the route server's group only.
        std::fs::set_permissions(
            self.path(&format!("{name}-key.pem")),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// etcd

/// One etcd member requiring TLS and client certificates, with role-based access enabled:
/// users `root`, `renet` (read/write `renet/` and `traefik/`) and `edge` (read `traefik`).
/// Killed on drop.
struct TlsEtcd<'a> {
    proc: Proc,
    pki: &'a Pki,
    /// Data and log; removed after the member is killed (fields drop after `drop`).
    _dir: tempfile::TempDir,
    auth: bool,
}

impl<'a> TlsEtcd<'a> {
    fn start(pki: &'a Pki) -> TlsEtcd<'a> {
        stop_leftover_etcd();
        let dir = tmpdir("etcd");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "tls", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", ETCD_URL])
            .args(["--advertise-client-urls", ETCD_URL])
            .args(["--listen-peer-urls", ETCD_PEER_URL])
            .args(["--initial-advertise-peer-urls", ETCD_PEER_URL])
            .args(["--initial-cluster", &format!("tls={ETCD_PEER_URL}")])
            .arg("--client-cert-auth")
            .arg(format!(
                "--trusted-ca-file={}",
                pki.path("ca.pem").display()
            ))
            .arg(format!("--cert-file={}", pki.path("server.pem").display()))
            .arg(format!(
                "--key-file={}",
                pki.path("server-key.pem").display()
            ))
            // etcd's auth tokens expire after 2 idle seconds instead of 300: the route
            // server's session must outlive its token.
            .args(["--auth-token-ttl", "2"])
            .args(["--log-level", "warn"]);
        let proc = Proc::spawn(cmd, dir.path().join("etcd.log"), "etcd");
        if let Some(pid) = proc.pid() {
            let _ = std::fs::write(ETCD_PID_FILE, pid.to_string());
        }
        let mut etcd = TlsEtcd {
            proc,
            pki,
            _dir: dir,
            auth: false,
        };
        let e = &mut etcd;
        wait_for("etcd over TLS", Duration::from_secs(20), || {
            e.proc.assert_alive();
            let out = e.ctl(&["endpoint", "health"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out.stderr))
            }
        });
        etcd.enable_auth();
        etcd
    }

    /// `etcdctl` with the client certificate, as root once access control is on.
    fn ctl(&self, args: &[&str]) -> Output {
        if self.auth {
            self.ctl_as("root", ROOT_PASSWORD, args)
        } else {
            run(self.ctl_command().args(args))
        }
    }

    /// `etcdctl` with the client certificate as `user`.
    fn ctl_as(&self, user: &str, password: &str, args: &[&str]) -> Output {
        run(self
            .ctl_command()
            .arg(format!("--user={user}:{password}"))
            .args(args))
    }

    fn ctl_command(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={ETCD_URL}"))
            .arg(format!("--cacert={}", self.pki.path("ca.pem").display()))
            .arg(format!("--cert={}", self.pki.path("client.pem").display()))
            .arg(format!(
                "--key={}",
                self.pki.path("client-key.pem").display()
            ))
            .args(["--dial-timeout=2s", "--command-timeout=5s"]);
        cmd
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    }

    /// The users and roles of docs/cluster.md: the route servers read and write `renet/` and
    /// `traefik/`, the edges only read Traefik's keys.
    fn enable_auth(&mut self) {
        let steps: &[&[&str]] = &[
            &[
                "user",
                "add",
                "root",
                &format!("--new-user-password={ROOT_PASSWORD}"),
            ],
            &["user", "grant-role", "root", "root"],
            &["role", "add", "renet"],
            &[
                "role",
                "grant-permission",
                "renet",
                "--prefix=true",
                "readwrite",
                "renet/",
            ],
            &[
                "role",
                "grant-permission",
                "renet",
                "--prefix=true",
                "readwrite",
                "traefik/",
            ],
            &[
                "user",
                "add",
                "renet",
                &format!("--new-user-password={RENET_PASSWORD}"),
            ],
            &["user", "grant-role", "renet", "renet"],
            &["role", "add", "edge"],
            // `traefik`, not `traefik/`: Traefik's etcd provider reads and watches the prefix
            // of its root key without the slash (with `traefik/` it gets "permission denied").
            &[
                "role",
                "grant-permission",
                "edge",
                "--prefix=true",
                "read",
                "traefik",
            ],
            &[
                "user",
                "add",
                "edge",
                &format!("--new-user-password={EDGE_PASSWORD}"),
            ],
            &["user", "grant-role", "edge", "edge"],
            &["auth", "enable"],
        ];
        for step in steps {
            self.ctl_ok(step);
        }
        self.auth = true;
    }

    fn put(&self, key: &str, value: &str) {
        self.ctl_ok(&["put", key, value]);
    }

    /// The lease `key` was written under (0: none).
    fn lease_of(&self, key: &str) -> i64 {
        let out = self.ctl_ok(&["get", key, "-w", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["kvs"][0]["lease"].as_i64().unwrap_or(0)
    }

    fn get(&self, key: &str) -> Option<String> {
        let out = self.ctl_ok(&["get", "--print-value-only", key]);
        (!out.is_empty()).then_some(out)
    }

    /// Every key in etcd (as root).
    fn keys(&self) -> Vec<String> {
        let out = self.ctl_ok(&["get", "--prefix", "--keys-only", ""]);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

impl Drop for TlsEtcd<'_> {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_file(ETCD_PID_FILE);
    }
}

/// A run that was killed (no drop) may have left its etcd on our ports: stop that one, found
/// by the pid it wrote, only when it still is an etcd on 127.0.74.1.
fn stop_leftover_etcd() {
    let Ok(pid) = std::fs::read_to_string(ETCD_PID_FILE) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = text(&cmdline);
    if cmdline.starts_with("etcd\0") && cmdline.contains(ETCD_URL) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(ETCD_PID_FILE);
}

// ---------------------------------------------------------------------------------------------
// The route server and `renet cluster status`

/// A settings file whose `cluster` object is `cluster`, with the endpoint, this server's name
/// and address and a short lease added.
fn write_settings(dir: &Path, name: &str, cluster: Value) -> PathBuf {
    let mut c = json!({
        "endpoints": [ETCD_URL],
        "name": name,
        "address": SERVER_ADDRESS,
        "lease_ttl_seconds": 2,
    });
    for (k, v) in cluster.as_object().unwrap() {
        c[k] = v.clone();
    }
    let path = dir.join(format!("{name}.json"));
    let settings = json!({ "redeploy_grace_seconds": 0, "cluster": c });
    std::fs::write(&path, serde_json::to_string_pretty(&settings).unwrap()).unwrap();
    path
}

/// The right `cluster` object: the CA, the client certificate, user `renet` and its password.
fn good_cluster(pki: &Pki, password_file: &Path) -> Value {
    json!({
        "ca_file": pki.path("ca.pem"),
        "cert_file": pki.path("client.pem"),
        "key_file": pki.path("client-key.pem"),
        "user": "renet",
        "password_file": password_file,
    })
}

/// `renet route-server` with `settings` (cluster from the file, no cluster flags), its own
/// state folder, watching the sandbox's daemons; waits until it answers.
fn start_route_server(sandbox: &Sandbox, settings: &Path) -> RouteServer {
    let stem = settings.file_stem().unwrap().to_string_lossy().to_string();
    let state = sandbox.scratch.path().join(format!("state-{stem}"));
    RouteServer::start_with(
        sandbox,
        cluster_support::route_server_support::free_port(),
        settings,
        &state,
        &["--data-dir", &sandbox.data.path().display().to_string()],
        "info,renet=debug",
    )
}

/// `renet cluster status [--json]` with `settings`.
fn cluster_status(settings: &Path, as_json: bool) -> Output {
    let mut cmd = Command::new(renet_bin());
    cmd.args(["cluster", "status", "--settings"]).arg(settings);
    if as_json {
        cmd.arg("--json");
    }
    run(&mut cmd)
}

/// The labels `renet compose` and a tenant write for one HTTP site on `host`.
fn site_labels(name: &str, host: &str) -> Vec<(String, String)> {
    [
        ("traefik.enable".to_string(), "true".to_string()),
        (
            format!("traefik.http.routers.{name}.rule"),
            format!("Host(`{host}`)"),
        ),
        (
            format!("traefik.http.routers.{name}.entrypoints"),
            "web".into(),
        ),
        (format!("traefik.http.routers.{name}.service"), name.into()),
        (
            format!("traefik.http.services.{name}.loadbalancer.server.port"),
            "8080".into(),
        ),
    ]
    .into()
}

/// Runs an HTTP site for `host` as container, service and router `name` in `slot`.
fn run_site(daemon: &Daemon, name: &str, slot: u32, host: &str) {
    let labels = site_labels(name, host);
    let labels: Vec<(&str, String)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    daemon.run_service(
        name,
        name,
        slot,
        &labels,
        &[],
        &web(slot_ip(NET, slot), 8080, name),
    );
}

/// A wrong way to reach etcd, and what the operator must read in the error.
struct BadAccess {
    name: &'static str,
    cluster: Value,
    /// Each must appear (case-insensitive) in `/health` `cluster.error` and in the stderr of
    /// `renet cluster status`.
    says: &'static [&'static str],
}

fn bad_accesses(pki: &Pki, password_file: &Path, wrong_password_file: &Path) -> Vec<BadAccess> {
    let good = good_cluster(pki, password_file);
    let with = |changes: Value| {
        let mut c = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    vec![
        BadAccess {
            name: "wrong-ca",
            cluster: with(json!({ "ca_file": pki.path("rogue-ca.pem") })),
            says: &["not signed by", "rogue-ca.pem"],
        },
        BadAccess {
            name: "no-ca",
            cluster: with(json!({ "ca_file": null })),
            says: &["cannot be verified", "set cluster.ca_file"],
        },
        BadAccess {
            name: "no-client-cert",
            cluster: with(json!({ "cert_file": null, "key_file": null })),
            says: &["requires a client certificate", "cluster.cert_file"],
        },
        BadAccess {
            name: "untrusted-client-cert",
            cluster: with(json!({
                "cert_file": pki.path("rogue-client.pem"),
                "key_file": pki.path("rogue-client-key.pem"),
            })),
            says: &["does not trust the client certificate", "rogue-client.pem"],
        },
        BadAccess {
            name: "wrong-password",
            cluster: with(json!({ "password_file": wrong_password_file })),
            says: &[
                "refused user `renet`",
                "cluster.password_file",
                "authentication failed",
            ],
        },
        BadAccess {
            name: "unknown-user",
            cluster: with(json!({ "user": "mallory" })),
            says: &["refused user `mallory`", "authentication failed"],
        },
    ]
}

/// `message` holds every fragment (case-insensitive) and reads as one line of text.
fn says_all(message: &str, fragments: &[&str]) -> bool {
    let m = message.trim().to_lowercase();
    fragments.iter().all(|f| m.contains(&f.to_lowercase())) && !m.contains("  ")
}

/// A route server configured with TLS files and a password in the settings file's `cluster`
/// object claims its repository's host in etcd, and `renet cluster status` (same settings)
/// lists it. Before that, every wrong way to reach the same etcd claims nothing, writes
/// nothing, and says why in `/health` and in `cluster status`.
#[test]
fn a_route_server_over_tls_with_a_password_claims_its_host_and_wrong_access_claims_nothing() {
    let _lock = exclusive();
    let pki = Pki::new();
    let etcd = TlsEtcd::start(&pki);
    let sandbox = Sandbox::new();
    let secrets = tmpdir("secrets");
    let password_file = secrets.path().join("etcd-password");
    write_mode(&password_file, &format!("{RENET_PASSWORD}\n"), 0o640);
    let wrong_password_file = secrets.path().join("wrong-password");
    write_mode(&wrong_password_file, "not-the-password\n", 0o640);

    let host = "tls.example.test";
    let daemon = Daemon::start(&sandbox, NET);
    run_site(&daemon, "site", 0, host);

    // Every wrong access at once: each route server waits for the repository's host and
    // cannot claim it.
    let bad = bad_accesses(&pki, &password_file, &wrong_password_file);
    let servers: Vec<(&BadAccess, PathBuf, RouteServer)> = bad
        .iter()
        .map(|b| {
            let settings = write_settings(sandbox.scratch.path(), b.name, b.cluster.clone());
            let rs = start_route_server(&sandbox, &settings);
            (b, settings, rs)
        })
        .collect();
    // Every refusal is checked before the test fails, so one run shows all the messages.
    let mut wrong = Vec::new();
    for (b, settings, rs) in &servers {
        let error = wait_for(
            &format!("{}: /health to show the etcd error", b.name),
            Duration::from_secs(15),
            || {
                let (code, v) = rs.health();
                let c = &v["cluster"];
                match c["error"].as_str() {
                    Some(e) if c["connected"] == false && code == 503 => Ok(e.to_string()),
                    _ => Err(format!("{code}: {c}")),
                }
            },
        );
        eprintln!("{}: /health cluster.error: {error}", b.name);
        if !says_all(&error, b.says) {
            wrong.push(format!(
                "{}: /health cluster.error should say {:?}: {error}",
                b.name, b.says
            ));
        }
        let (_, v) = rs.health();
        assert_eq!(v["status"], "degraded", "{}: {v}", b.name);
        let pending = v["cluster"]["pending"].to_string();
        assert!(
            pending.contains(host),
            "{}: the host waits: {pending}",
            b.name
        );

        let out = cluster_status(settings, true);
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{}: cluster status succeeded",
            b.name
        );
        assert!(out.stdout.is_empty(), "{}: {}", b.name, text(&out.stdout));
        if !says_all(&stderr, b.says) {
            wrong.push(format!(
                "{}: `renet cluster status` should say {:?}: {stderr}",
                b.name, b.says
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        etcd.keys(),
        Vec::<String>::new(),
        "nothing reaches etcd without the right access"
    );
    drop(servers);

    // The right access: the host is claimed cluster-wide and served by this server.
    let settings = write_settings(
        sandbox.scratch.path(),
        "tls-a",
        good_cluster(&pki, &password_file),
    );
    let rs = start_route_server(&sandbox, &settings);
    let owner_key = format!("renet/owners/host/{host}");
    wait_for("the host's claim in etcd", Duration::from_secs(15), || {
        etcd.get(&owner_key).ok_or_else(|| {
            format!(
                "{}\n--- etcd log:\n{}",
                rs.health().1["cluster"],
                tail(&etcd.log_text(), 10)
            )
        })
    });
    assert_eq!(etcd.get(&owner_key).as_deref(), Some("4352"));
    assert_eq!(
        etcd.get(&format!("renet/serving/host/{host}")).as_deref(),
        Some(r#"{"network_id":4352,"server":"tls-a"}"#)
    );
    // The server's edge router lists the host and sends it to the server's service.
    assert_eq!(
        etcd.get("traefik/http/routers/renet-srv-tls-a/service")
            .as_deref(),
        Some("renet-tls-a")
    );
    assert_eq!(
        etcd.get("traefik/http/routers/renet-srv-tls-a/rule")
            .as_deref(),
        Some(format!("Host(`{host}`)").as_str())
    );
    let (code, v) = rs.health();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["cluster"]["connected"], true);
    assert_eq!(
        v["cluster"]["serving"][0]["resource"],
        format!("host {host}")
    );

    let out = cluster_status(&settings, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["servers"]["tls-a"]["serving"],
        json!([{ "resource": format!("host {host}"), "network_id": 4352 }]),
        "{doc}"
    );
    assert_eq!(doc["servers"]["tls-a"]["address"], SERVER_ADDRESS);
    assert_eq!(doc["conflicts"], json!([]));

    // The etcd token expires while the server idles (`--auth-token-ttl 2`): a later claim
    // re-authenticates within the same session; the server keeps its lease (a new session
    // would have moved everything onto a new one) and never shows as disconnected.
    let server_key = "renet/servers/tls-a";
    let lease = etcd.lease_of(server_key);
    assert_ne!(lease, 0);
    std::thread::sleep(Duration::from_secs(4));
    let later = "later.tls.example.test";
    run_site(&daemon, "later", 1, later);
    wait_for("the later host's claim", Duration::from_secs(15), || {
        etcd.get(&format!("renet/owners/host/{later}"))
            .ok_or_else(|| format!("{}", rs.health().1["cluster"]))
    });
    assert_eq!(
        etcd.lease_of(server_key),
        lease,
        "the session outlived its token: {}",
        tail(&rs.log_text(), 20)
    );
    let log = rs.log_text();
    assert!(
        !log.contains("keeping what this server serves"),
        "the server lost etcd: {}",
        tail(&log, 20)
    );

    // The server stops (its lease is revoked, its serving keys go); the operator releases
    // the host with the same settings, as user `renet`.
    drop(rs);
    let out = run(Command::new(renet_bin())
        .args(["cluster", "release", "--settings"])
        .arg(&settings)
        .args(["host", host]));
    assert!(out.status.success(), "release: {}", text(&out.stderr));
    assert_eq!(etcd.get(&owner_key), None);
    assert_eq!(etcd.get(server_key), None, "the stopped server left");
}

/// The password file missing or readable by every user, or a client key every user may read,
/// is refused by the route server, `renet cluster status` and `renet proxy config --edge`
/// before they do anything, with the setting and file named and the way out.
#[test]
fn a_missing_or_world_readable_secret_file_is_refused_by_name() {
    let _lock = exclusive();
    let pki = Pki::new();
    let dir = tmpdir("pwfile");
    let password = dir.path().join("password");
    write_mode(&password, &format!("{RENET_PASSWORD}\n"), 0o640);
    let open_file = dir.path().join("open-password");
    write_mode(&open_file, &format!("{RENET_PASSWORD}\n"), 0o644);
    let missing = dir.path().join("no-such-password");
    let open_key = dir.path().join("open-client-key.pem");
    std::fs::copy(pki.path("client-key.pem"), &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut open_key_cluster = good_cluster(&pki, &password);
    open_key_cluster["key_file"] = json!(open_key);
    for (name, cluster, says) in [
        (
            "missing",
            good_cluster(&pki, &missing),
            vec!["cluster.password_file", "no-such-password", "no such file"],
        ),
        (
            "world-readable",
            good_cluster(&pki, &open_file),
            vec![
                "cluster.password_file",
                "open-password",
                "readable by every user",
                "chmod",
            ],
        ),
        (
            "world-readable-key",
            open_key_cluster,
            vec![
                "cluster.key_file",
                "open-client-key.pem",
                "readable by every user",
            ],
        ),
    ] {
        let settings = write_settings(dir.path(), name, cluster);
        // The route server: exits at once, nothing started.
        let listen = format!(
            "127.0.0.1:{}",
            cluster_support::route_server_support::free_port()
        );
        let out = run_bounded(
            Command::new(renet_bin())
                .arg("route-server")
                .arg("--settings")
                .arg(&settings)
                .args(["--listen", &listen])
                .arg("--state-dir")
                .arg(dir.path().join(format!("state-{name}")))
                .arg("--socket-dir")
                .arg(dir.path().join("no-sockets")),
            Duration::from_secs(10),
        );
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{name}: route server started");
        assert!(says_all(&stderr, &says), "{name}: route server: {stderr}");
        assert!(
            !dir.path().join(format!("state-{name}")).exists(),
            "{name}: nothing written"
        );
        // `renet cluster status`.
        let out = cluster_status(&settings, false);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{name}: cluster status succeeded");
        assert!(says_all(&stderr, &says), "{name}: cluster status: {stderr}");
        // The edge's configuration: nothing written.
        let out_dir = dir.path().join(format!("edge-{name}"));
        let out = run(Command::new(renet_bin())
            .args(["proxy", "config", "--edge", "--cluster", ETCD_URL])
            .arg("--settings")
            .arg(&settings)
            .arg("--out-dir")
            .arg(&out_dir)
            .arg("--unit-dir")
            .arg(&out_dir));
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{name}: proxy config --edge succeeded"
        );
        assert!(
            says_all(&stderr, &says),
            "{name}: proxy config --edge: {stderr}"
        );
        assert!(!out_dir.exists(), "{name}: the edge's files were written");
    }
}

/// An edge Traefik in the root namespace on 127.0.74.2 (free ports), configured by
/// `renet proxy config --edge` from a settings file whose `cluster` object is `cluster`.
struct Edge {
    proc: Proc,
    config: PathBuf,
    web: String,
}

impl Edge {
    fn start(dir: &Path, name: &str, cluster: Value) -> Edge {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let settings = dir.join("renet.json");
        std::fs::write(&settings, json!({ "cluster": cluster }).to_string()).unwrap();
        let [http, https, tcp, api] = [(); 4].map(|_| free_port_on(EDGE_IP));
        let out = run(Command::new(renet_bin())
            .args(["proxy", "config", "--edge", "--cluster", ETCD_URL])
            .arg("--settings")
            .arg(&settings)
            .arg("--out-dir")
            .arg(dir.join("traefik"))
            .arg("--unit-dir")
            .arg(dir.join("units"))
            .args(["--public-ipv4", EDGE_IP])
            .args(["--http-port", &http.to_string()])
            .args(["--https-port", &https.to_string()])
            .args(["--preset-ports", "none"])
            .args(["--dynamic-range", &format!("{tcp}-{tcp}")])
            .args(["--api-address", &format!("{EDGE_IP}:{api}")]));
        assert!(
            out.status.success(),
            "renet proxy config --edge ({name}): {}",
            text(&out.stderr)
        );
        let config = dir.join("traefik/traefik-edge.yml");
        let mut cmd = Command::new(traefik_bin());
        cmd.arg(format!("--configFile={}", config.display()));
        let mut proc = Proc::spawn(cmd, dir.join("traefik.log"), "an edge Traefik");
        let api_addr = format!("{EDGE_IP}:{api}");
        wait_for(
            &format!("the edge Traefik ({name})"),
            Duration::from_secs(30),
            || {
                proc.assert_alive();
                http_get(&api_addr, "/ping", None).map(|_| ())
            },
        );
        Edge {
            proc,
            config,
            web: format!("{EDGE_IP}:{http}"),
        }
    }

    fn get(&self, host: &str) -> Result<(u16, String), String> {
        http_get(&self.web, "/", Some(host))
    }
}

/// `renet proxy config --edge` with the CA, a client certificate, user `edge` (read-only on
/// Traefik's keys) and its password writes a `traefik-edge.yml` with which real Traefik reads
/// etcd over TLS: a router written by hand in the documented schema sends a request through
/// the edge to the backend it names. An edge with a wrong password routes nothing, and the
/// edge's credentials cannot write a route.
#[test]
fn the_edge_reads_etcd_over_tls_with_its_credentials_and_routes_to_the_backend() {
    let _lock = exclusive();
    let pki = Pki::new();
    let etcd = TlsEtcd::start(&pki);
    let dir = tmpdir("edge");
    let password_file = dir.path().join("edge-password");
    write_mode(&password_file, &format!("{EDGE_PASSWORD}\n"), 0o640);
    let wrong_password_file = dir.path().join("wrong-password");
    write_mode(&wrong_password_file, "not-the-password\n", 0o640);

    // The backend: busybox httpd on 127.0.74.4.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "edge-backend-over-tls\n").unwrap();
    let backend_port = free_port_on(BACKEND_IP);
    let mut httpd = Command::new("/bin/busybox");
    httpd
        .args([
            "httpd",
            "-f",
            "-p",
            &format!("{BACKEND_IP}:{backend_port}"),
            "-h",
        ])
        .arg(&www);
    let mut backend = Proc::spawn(httpd, dir.path().join("httpd.log"), "busybox httpd");

    let cluster = |password_file: &Path| {
        json!({
            "ca_file": pki.path("ca.pem"),
            "cert_file": pki.path("client.pem"),
            "key_file": pki.path("client-key.pem"),
            "user": "edge",
            "password_file": password_file,
        })
    };
    let mut edge = Edge::start(dir.path(), "good", cluster(&password_file));
    let mode = std::fs::metadata(&edge.config)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o600,
        "the file holding the etcd password is root's only"
    );
    let mut bad_edge = Edge::start(dir.path(), "bad", cluster(&wrong_password_file));

    // The documented keys of one server serving one host, written by hand (as root).
    let host = "edge-tls.example.test";
    etcd.put(
        "traefik/http/services/renet-tls-b/loadBalancer/servers/0/url",
        &format!("http://{BACKEND_IP}:{backend_port}"),
    );
    let r = "traefik/http/routers/renet-srv-tls-b";
    etcd.put(&format!("{r}/rule"), &format!("Host(`{host}`)"));
    etcd.put(&format!("{r}/entryPoints/0"), "web");
    etcd.put(&format!("{r}/service"), "renet-tls-b");

    wait_for(
        "the edge to route the host read from etcd over TLS",
        Duration::from_secs(20),
        || match edge.get(host) {
            Ok((200, body)) if body.contains("edge-backend-over-tls") => Ok(()),
            Ok((code, body)) => Err(format!(
                "{code}: {body}\n--- edge log:\n{}",
                tail(&edge.proc.log_text(), 15)
            )),
            Err(e) => Err(e),
        },
    );
    // Another host is not routed: the edge has exactly what etcd says.
    let (code, _) = edge.get("other.example.test").unwrap();
    assert_eq!(code, 404);

    // The edge with a wrong password: etcd refuses it, Traefik says so and routes nothing.
    wait_for(
        "the bad edge to log etcd's refusal",
        Duration::from_secs(15),
        || {
            let log = bad_edge.proc.log_text();
            if log.contains("authentication failed") {
                Ok(())
            } else {
                Err(tail(&log, 10))
            }
        },
    );
    let (code, _) = bad_edge.get(host).unwrap();
    assert_eq!(code, 404, "an edge etcd refused has no route");

    // Whoever holds an edge's configuration can read routes but not write one.
    let out = etcd.ctl_as(
        "edge",
        EDGE_PASSWORD,
        &["put", &format!("{r}/service"), "attacker"],
    );
    assert!(!out.status.success(), "the edge's user wrote a route");
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        etcd.get(&format!("{r}/service")).as_deref(),
        Some("renet-tls-b")
    );
    backend.assert_alive();
    edge.proc.assert_alive();
    bad_edge.proc.assert_alive();
}
