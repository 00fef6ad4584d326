//! `renet proxy config` against a real Traefik v3: the generated static configuration must
//! start Traefik with exactly the expected entrypoints, on the given addresses only, and keep
//! the Cloudflare token out of everything but the 0600 env file. Bad input writes nothing.
//!
//! Only loopback addresses are used, on free high ports. The preconfigured entrypoints
//! (tcp-3306, …, udp-53) bind their fixed ports on 127.0.0.1, so tests that start Traefik take
//! a lock and never run two Traefiks at once.

mod route_server_support;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use route_server_support::{free_port_on_all, traefik_bin};

static TRAEFIK_LOCK: Mutex<()> = Mutex::new(());
const TOKEN: &str = "cf-Test_token-0123456789abcdef";

fn renet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_renet"))
}

fn has_ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// Kills Traefik's whole process group when the test ends, also on panic.
struct TraefikGuard {
    child: Child,
    log: PathBuf,
}

impl Drop for TraefikGuard {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl TraefikGuard {
    fn start(config: &Path, log: PathBuf) -> TraefikGuard {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(traefik_bin())
            .arg(format!("--configFile={}", config.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start traefik");
        TraefikGuard { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A minimal HTTP/1.0 GET on a loopback address.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// Waits for Traefik's API and returns `/api/entrypoints` as (name, address) pairs.
fn entrypoints(traefik: &mut TraefikGuard, api: SocketAddr) -> BTreeSet<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = traefik.child.try_wait().unwrap() {
            panic!("traefik exited ({status}):\n{}", traefik.log());
        }
        if let Ok((200, body)) = http_get(api, "/api/entrypoints") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            return v
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["address"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "traefik API did not answer on {api}:\n{}",
            traefik.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A temp folder with the paths the command writes.
struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Setup { _dir: dir, root }
    }
    fn settings(&self) -> PathBuf {
        self.root.join("etc/renet.json")
    }
    fn out_dir(&self) -> PathBuf {
        self.root.join("etc/traefik")
    }
    fn unit_dir(&self) -> PathBuf {
        self.root.join("units")
    }
    fn yml(&self) -> PathBuf {
        self.out_dir().join("traefik.yml")
    }
    fn env_file(&self) -> PathBuf {
        self.out_dir().join("traefik.env")
    }
    fn run(&self, args: &[&str]) -> Output {
        renet()
            .args(["proxy", "config", "--settings"])
            .arg(self.settings())
            .arg("--out-dir")
            .arg(self.out_dir())
            .arg("--unit-dir")
            .arg(self.unit_dir())
            .args(args)
            .env_remove("CF_DNS_API_TOKEN")
            .env_remove("RENET_SETTINGS")
            .output()
            .unwrap()
    }
    fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "renet proxy config {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Ports for one Traefik run, all free on the loopback addresses used.
struct Ports {
    http: u16,
    https: u16,
    api: u16,
    route_server: u16,
    tcp_extra: u16,
    udp_extra: u16,
    dynamic: u16,
}

impl Ports {
    fn pick(ips: &[&str]) -> Ports {
        // Every port is free on all the addresses, and no two of them are the same.
        let next = |udp| free_port_on_all(ips, udp);
        Ports {
            http: next(false),
            https: next(false),
            api: next(false),
            route_server: next(false),
            tcp_extra: next(false),
            udp_extra: next(true),
            dynamic: next(false),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--http-port".into(),
            self.http.to_string(),
            "--https-port".into(),
            self.https.to_string(),
            "--api-address".into(),
            format!("127.0.0.1:{}", self.api),
            "--route-server".into(),
            format!("127.0.0.1:{}", self.route_server),
            "--tcp-ports".into(),
            self.tcp_extra.to_string(),
            "--udp-ports".into(),
            self.udp_extra.to_string(),
            "--dynamic-range".into(),
            format!("{}-{}", self.dynamic, self.dynamic),
        ]
    }

    /// The entrypoints on IPv4 `v4`, IPv6 `v6`, with the API entrypoint.
    fn expected(&self, v4: &str, v6: Option<&str>) -> BTreeSet<(String, String)> {
        let mut e: BTreeSet<(String, String)> = [
            ("web".to_string(), format!("{v4}:{}", self.http)),
            ("websecure".to_string(), format!("{v4}:{}", self.https)),
            ("traefik".to_string(), format!("127.0.0.1:{}", self.api)),
            (
                format!("udp-{}", self.udp_extra),
                format!("{v4}:{}/udp", self.udp_extra),
            ),
            ("udp-53".to_string(), format!("{v4}:53/udp")),
        ]
        .into_iter()
        .collect();
        for p in [
            3306,
            5432,
            6379,
            27017,
            11211,
            5672,
            9092,
            self.tcp_extra,
            self.dynamic,
        ] {
            e.insert((format!("tcp-{p}"), format!("{v4}:{p}")));
        }
        if let Some(v6) = v6 {
            e.insert(("web-v6".into(), format!("[{v6}]:{}", self.http)));
            e.insert(("websecure-v6".into(), format!("[{v6}]:{}", self.https)));
        }
        e
    }
}

fn check_secrets(setup: &Setup) {
    let yml = std::fs::read_to_string(setup.yml()).unwrap();
    assert!(!yml.contains(TOKEN), "the token leaked into the YAML");
    assert!(!yml.contains("0.0.0.0") && !yml.contains("[::]"), "{yml}");
    let settings = std::fs::read_to_string(setup.settings()).unwrap();
    assert!(
        !settings.contains(TOKEN),
        "the token leaked into the settings"
    );
    let env = std::fs::read_to_string(setup.env_file()).unwrap();
    assert_eq!(env, format!("CF_DNS_API_TOKEN={TOKEN}\n"));
    let mode = std::fs::metadata(setup.env_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "env file mode {:o}", mode & 0o777);
    for unit in ["traefik.service", "renet-route-server.service"] {
        let body = std::fs::read_to_string(setup.unit_dir().join(unit)).unwrap();
        assert!(!body.contains(TOKEN), "the token leaked into {unit}");
        assert!(body.contains("Restart=always"), "{unit}: {body}");
    }
    let traefik_unit = std::fs::read_to_string(setup.unit_dir().join("traefik.service")).unwrap();
    assert!(
        traefik_unit.contains(&format!("EnvironmentFile={}", setup.env_file().display())),
        "{traefik_unit}"
    );
    assert!(traefik_unit.contains("After=network-online.target renet-route-server.service"));
}

#[test]
fn traefik_starts_with_exactly_the_ipv4_entrypoints() {
    let _lock = TRAEFIK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Setup::new();
    let ports = Ports::pick(&["127.0.0.1"]);
    let mut args: Vec<String> = vec![
        "--public-ipv4".into(),
        "127.0.0.1".into(),
        "--base-domain".into(),
        "example.com".into(),
        "--cert-email".into(),
        "admin@example.com".into(),
        "--cf-dns-token".into(),
        TOKEN.into(),
    ];
    args.extend(ports.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    setup.run_ok(&args);
    check_secrets(&setup);

    let yml = std::fs::read_to_string(setup.yml()).unwrap();
    // The routes are pushed through the file provider by default (no HTTP polling), and the
    // HTTPS entrypoint retries requests that find a redeployed backend's port closed.
    let dynamic = setup.yml().parent().unwrap().join("dynamic");
    assert!(
        yml.contains(&format!("directory: {}", dynamic.display())),
        "{yml}"
    );
    assert!(!yml.contains("/routes.yaml"), "{yml}");
    assert!(
        yml.contains("- renet-replay@file\n") && yml.contains("- renet-retry@file\n"),
        "{yml}"
    );
    let defaults = std::fs::read_to_string(dynamic.join("renet-defaults.yaml")).unwrap();
    assert!(defaults.contains("retry:"), "{defaults}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(setup.settings()).unwrap()).unwrap();
    assert_eq!(
        saved["dynamic_file"].as_str().unwrap(),
        dynamic.join("routes.yaml").display().to_string()
    );
    assert!(yml.contains("provider: cloudflare"));
    assert!(yml.contains("email: admin@example.com"));

    let mut traefik = TraefikGuard::start(&setup.yml(), setup.root.join("traefik.log"));
    let api: SocketAddr = format!("127.0.0.1:{}", ports.api).parse().unwrap();
    let got = entrypoints(&mut traefik, api);
    assert_eq!(got, ports.expected("127.0.0.1", None));
    assert!(
        got.iter()
            .all(|(_, a)| !a.contains("0.0.0.0") && !a.contains("[::]"))
    );

    // `web` redirects to `websecure`, on the websecure port.
    let web: SocketAddr = format!("127.0.0.1:{}", ports.http).parse().unwrap();
    let (code, _) = http_get(web, "/x").unwrap();
    assert_eq!(code, 301);
    let (code, _) = http_get(api, "/ping").unwrap();
    assert_eq!(code, 200);

    // The route server reads the same file: automatic routes go to `websecure` only.
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(setup.settings()).unwrap()).unwrap();
    assert_eq!(settings["public_ipv4"], "127.0.0.1");
    assert_eq!(settings["base_domain"], "example.com");
    assert!(settings.get("cf_dns_token").is_none());
}

#[test]
fn traefik_starts_with_the_ipv6_entrypoints_when_ipv6_is_set() {
    if !has_ipv6_loopback() {
        eprintln!("skipped: this machine has no ::1");
        return;
    }
    let _lock = TRAEFIK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Setup::new();
    let ports = Ports::pick(&["127.0.0.1", "::1"]);
    let mut args: Vec<String> = vec![
        "--public-ipv4".into(),
        "127.0.0.1".into(),
        "--public-ipv6".into(),
        "::1".into(),
        "--cf-dns-token".into(),
        TOKEN.into(),
    ];
    args.extend(ports.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    setup.run_ok(&args);
    check_secrets(&setup);

    let mut traefik = TraefikGuard::start(&setup.yml(), setup.root.join("traefik.log"));
    let api: SocketAddr = format!("127.0.0.1:{}", ports.api).parse().unwrap();
    let got = entrypoints(&mut traefik, api);
    assert_eq!(got, ports.expected("127.0.0.1", Some("::1")));
    let web6: SocketAddr = format!("[::1]:{}", ports.http).parse().unwrap();
    let (code, _) = http_get(web6, "/x").unwrap();
    assert_eq!(code, 301, "web-v6 redirects to HTTPS");
}

#[test]
fn output_is_deterministic_and_reruns_keep_settings_and_token() {
    let setup = Setup::new();
    setup.run_ok(&[
        "--public-ipv4",
        "203.0.113.50",
        "--public-ipv6",
        "2001:db8::1",
        "--base-domain",
        "example.com",
        "--cert-email",
        "admin@example.com",
        "--cf-dns-token",
        TOKEN,
        "--tcp-ports",
        "25,143,465,587,993",
        "--udp-ports",
        "53",
    ]);
    let files = |s: &Setup| {
        [
            s.yml(),
            s.env_file(),
            s.settings(),
            s.unit_dir().join("traefik.service"),
            s.unit_dir().join("renet-route-server.service"),
        ]
        .map(|p| std::fs::read(p).unwrap())
    };
    let first = files(&setup);
    // Without flags: the same bytes, the token kept.
    setup.run_ok(&[]);
    assert_eq!(files(&setup), first);
    let yml = String::from_utf8(first[0].clone()).unwrap();
    for ep in ["tcp-25:", "tcp-993:", "udp-53:", "web-v6:", "websecure-v6:"] {
        assert!(yml.contains(ep), "{ep} missing:\n{yml}");
    }
    assert!(yml.contains("address: 203.0.113.50:443"));
    assert!(yml.contains("'[2001:db8::1]:443'"));
    assert!(!yml.contains("api:"), "no API unless asked for");
    // Clearing IPv6 removes the v6 entrypoints.
    setup.run_ok(&["--public-ipv6", ""]);
    let yml = std::fs::read_to_string(setup.yml()).unwrap();
    assert!(!yml.contains("-v6"), "{yml}");
}

#[test]
fn bad_input_is_an_error_and_writes_nothing() {
    let cases: &[(&[&str], &str)] = &[
        (&["--public-ipv4", "203.0.113.500"], "public_ipv4"),
        (&["--public-ipv4", "0.0.0.0"], "public_ipv4"),
        (&["--public-ipv6", "2001:db8::zz"], "public_ipv6"),
        (&["--public-ipv6", "::"], "public_ipv6"),
        (&["--http-port", "0"], "--http-port"),
        (&["--tcp-ports", "25,0"], "--tcp-ports"),
        (&["--udp-ports", "65536"], "--udp-ports"),
        (&["--base-domain", "bad_domain.com"], "base_domain"),
        (&["--base-domain", "localhost"], "base_domain"),
        (&["--cert-email", "admin"], "cert_email"),
        (&["--cf-dns-token", "two words"], "--cf-dns-token"),
        (&["--api-address", "0.0.0.0:8080"], "traefik_api_address"),
        (&["--tcp-ports", "443"], "both listen"),
    ];
    for (args, what) in cases {
        // Fresh: nothing at all may appear.
        let setup = Setup::new();
        let out = setup.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains(what),
            "{args:?}: stderr should name {what}:\n{stderr}"
        );
        assert!(!setup.settings().exists(), "{args:?}: settings written");
        assert!(!setup.out_dir().exists(), "{args:?}: out dir written");
        assert!(!setup.unit_dir().exists(), "{args:?}: units written");

        // Existing configuration: left exactly as it was.
        setup.run_ok(&["--public-ipv4", "203.0.113.50", "--cf-dns-token", TOKEN]);
        let before =
            [setup.settings(), setup.yml(), setup.env_file()].map(|p| std::fs::read(p).unwrap());
        let out = setup.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let after =
            [setup.settings(), setup.yml(), setup.env_file()].map(|p| std::fs::read(p).unwrap());
        assert_eq!(before, after, "{args:?} changed files");
    }
}

/// The generated entrypoints' retry middlewares need Traefik 3.7 (`status`, `timeout`); an
/// older Traefik would reject renet's whole defaults file and break every HTTP router.
#[test]
fn a_traefik_older_than_3_7_is_refused_and_nothing_is_written() {
    let setup = Setup::new();
    let bin = tempfile::tempdir().unwrap();
    let old = bin.path().join("traefik");
    std::fs::write(&old, "#!/bin/sh\necho 'Version:      3.6.2'\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = setup.run(&["--traefik-bin", old.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Traefik 3.6.2") && stderr.contains("3.7 or later"),
        "{stderr}"
    );
    assert!(!setup.settings().exists() && !setup.out_dir().exists());
    // The real one (3.7 or later, installed by scripts/test-env.sh) is accepted.
    setup.run_ok(&["--traefik-bin", traefik_bin().to_str().unwrap()]);
}

#[test]
fn a_corrupt_settings_file_is_an_error_and_kept() {
    let setup = Setup::new();
    std::fs::create_dir_all(setup.settings().parent().unwrap()).unwrap();
    std::fs::write(
        setup.settings(),
        "{\"listen\": \"127.0.0.1:7111\", \"typo\": 1}",
    )
    .unwrap();
    let out = setup.run(&["--public-ipv4", "203.0.113.50"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("renet.json"), "{stderr}");
    assert!(!setup.out_dir().exists());
}
