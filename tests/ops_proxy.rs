//! Units and static configuration (issue "Operations", part 5), with the real tools:
//! - the generated units pass `systemd-analyze verify`, and the route server's scores ≤ 5 in
//!   `systemd-analyze security --offline=true`;
//! - `renet proxy config` remembers the unit folder and binaries (a later token rotation
//!   rewrites the same units);
//! - real Traefik starts with the static configuration without a warning, with the preset
//!   ports switched off, and with a busy preset port that is not chosen;
//! - web/websecure are Traefik's default entrypoints: a label router without entrypoints is
//!   served on websecure, never on a `tcp-*` entrypoint.
//!
//! Traefik binds 127.0.13.193 (the reserved gateway address of network 3520's block, this
//! suite's) on free high ports; the tests hold the ops tests' lock.

mod route_server_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use route_server_support::*;

const BIND: &str = "127.0.13.193";
const TOKEN: &str = "cf-ops-token-0123456789";

/// `renet proxy config --settings DIR/renet.json` with `args`; panics on failure.
fn proxy_config(dir: &Path, args: &[&str]) {
    let out = Command::new(renet_bin())
        .args(["proxy", "config", "--settings"])
        .arg(dir.join("renet.json"))
        .args(args)
        .env_remove("CF_DNS_API_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

/// A static configuration for Traefik on BIND with free ports; returns the API port.
fn loopback_config(dir: &Path, extra: &[&str]) -> u16 {
    let api = free_port_on("127.0.0.1");
    let (http, https) = (free_port_on(BIND), free_port_on(BIND));
    let (api_s, http_s, https_s) = (
        format!("127.0.0.1:{api}"),
        http.to_string(),
        https.to_string(),
    );
    let out_dir = dir.join("traefik");
    let mut args = vec![
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--public-ipv4",
        BIND,
        "--http-port",
        &http_s,
        "--https-port",
        &https_s,
        "--api-address",
        &api_s,
        "--dynamic-range",
        "10600-10602",
    ];
    let units = dir.join("units");
    args.extend(["--unit-dir", units.to_str().unwrap()]);
    args.extend(extra);
    proxy_config(dir, &args);
    api
}

fn static_yaml(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("traefik/traefik.yml")).unwrap()
}

fn entrypoint_names(t: &Traefik) -> Vec<String> {
    let (code, body) = http_get(
        &format!("127.0.0.1:{}", t.api_port),
        "/api/entrypoints",
        None,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Lines of Traefik's log at WRN level or above.
fn warnings(t: &Traefik) -> Vec<String> {
    t.log_text()
        .lines()
        .filter(|l| [" WRN ", " ERR ", " FTL "].iter().any(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

#[test]
fn units_pass_systemd_analyze_and_the_route_server_is_hardened() {
    let _lock = ops_lock();
    let dir = tempfile::tempdir().unwrap();
    let traefik = traefik_bin();
    loopback_config(
        dir.path(),
        &[
            "--renet-bin",
            renet_bin(),
            "--traefik-bin",
            traefik.to_str().unwrap(),
            "--access-log",
            "/var/log/traefik-renet-test/access.log",
        ],
    );
    let units = dir.path().join("units");
    let traefik_unit = std::fs::read_to_string(units.join("traefik.service")).unwrap();
    assert!(
        traefik_unit.contains("-/var/log/traefik-renet-test"),
        "the access log's folder is writable: {traefik_unit}"
    );
    for unit in [
        "renet-route-server.service",
        "traefik.service",
        "renet-daemon@.service",
    ] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(units.join(unit))
            .output()
            .expect("systemd-analyze (package systemd; scripts/test-env.sh installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {}",
            output_text(&out)
        );
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(units.join("renet-route-server.service"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for").nth(1))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{}", output_text(&out)));
    println!("route server exposure level: {score}");
    assert!(score <= 5.0, "route server unit scores {score}:\n{report}");
}

#[test]
fn proxy_config_remembers_every_flag() {
    let _lock = ops_lock();
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let sockets = dir.path().join("sockets");
    proxy_config(
        dir.path(),
        &[
            "--out-dir",
            dir.path().join("traefik").to_str().unwrap(),
            "--unit-dir",
            units.to_str().unwrap(),
            "--renet-bin",
            "/opt/renet/bin/renet",
            "--traefik-bin",
            "/opt/traefik/traefik",
            "--socket-dir",
            sockets.to_str().unwrap(),
            "--state-dir",
            "/var/lib/rediacc/rs-test",
            "--preset-ports",
            "5432,53/udp",
        ],
    );
    let first_rs = std::fs::read_to_string(units.join("renet-route-server.service")).unwrap();
    // A token rotation later, with no other flag.
    let out = Command::new(renet_bin())
        .args(["proxy", "config", "--settings"])
        .arg(dir.path().join("renet.json"))
        .env("CF_DNS_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let rs = std::fs::read_to_string(units.join("renet-route-server.service")).unwrap();
    assert_eq!(rs, first_rs, "the same unit, same binary, same folders");
    assert!(
        rs.contains("ExecStart=/opt/renet/bin/renet route-server"),
        "{rs}"
    );
    assert!(rs.contains("StateDirectory=rediacc/rs-test"), "{rs}");
    let t = std::fs::read_to_string(units.join("traefik.service")).unwrap();
    assert!(
        t.contains("ExecStart=/opt/traefik/traefik --configFile="),
        "{t}"
    );
    let d = std::fs::read_to_string(units.join("renet-daemon@.service")).unwrap();
    assert!(
        d.contains(&format!("--socket-dir {}", sockets.display())),
        "{d}"
    );
    let yaml = static_yaml(dir.path());
    assert!(
        yaml.contains("tcp-5432:") && yaml.contains("udp-53:"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("tcp-3306:"),
        "only the chosen presets: {yaml}"
    );
    let env = std::fs::read_to_string(dir.path().join("traefik/traefik.env")).unwrap();
    assert!(env.contains(TOKEN));
}

#[test]
fn traefik_starts_without_warnings_with_presets_off_and_beside_a_busy_port() {
    let _lock = ops_lock();
    // A route server (no daemons) for Traefik's HTTP provider: a missing one is an error line.
    let sandbox = Sandbox::new();
    let rs_port = free_port();
    let _rs = RouteServer::start_on(&sandbox, rs_port, &[]);
    let rs_addr = format!("127.0.0.1:{rs_port}");
    // 1. Default presets, access log and metrics on: no warning at all.
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port_on("127.0.0.1"));
    let access = dir.path().join("access.log");
    let api = loopback_config(
        dir.path(),
        &[
            "--route-server",
            &rs_addr,
            "--traefik-metrics",
            &metrics,
            "--access-log",
            access.to_str().unwrap(),
        ],
    );
    let yaml = static_yaml(dir.path());
    assert!(yaml.contains("noColor: true"), "{yaml}");
    let t = Traefik::start(dir.path(), api, &yaml);
    let names = entrypoint_names(&t);
    assert!(names.contains(&"tcp-5432".to_string()), "{names:?}");
    assert!(names.contains(&"metrics".to_string()), "{names:?}");
    let (code, body) = http_get(&metrics, "/metrics", None).unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("traefik_"), "Traefik's own metrics");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(warnings(&t), Vec::<String>::new(), "{}", t.log_text());
    assert!(
        !t.log_text().contains("\u{1b}["),
        "no colour codes in the log file"
    );
    drop(t);

    // 2. Presets off: only web, websecure, the dynamic range and the API.
    let dir = tempfile::tempdir().unwrap();
    let api = loopback_config(
        dir.path(),
        &["--route-server", &rs_addr, "--preset-ports", "none"],
    );
    let t = Traefik::start(dir.path(), api, &static_yaml(dir.path()));
    let names = entrypoint_names(&t);
    assert_eq!(
        names,
        vec![
            "tcp-10600",
            "tcp-10601",
            "tcp-10602",
            "traefik",
            "web",
            "websecure"
        ],
        "{names:?}"
    );
    assert_eq!(warnings(&t), Vec::<String>::new());
    drop(t);

    // 3. Port 5432 is busy on the address; choosing the other presets lets Traefik start.
    let _busy = TcpListener::bind((BIND, 5432)).expect("5432 on 127.0.13.193 is free");
    let dir = tempfile::tempdir().unwrap();
    let api = loopback_config(
        dir.path(),
        &[
            "--route-server",
            &rs_addr,
            "--preset-ports",
            "3306,6379,53/udp",
        ],
    );
    let t = Traefik::start(dir.path(), api, &static_yaml(dir.path()));
    let names = entrypoint_names(&t);
    assert!(
        names.contains(&"tcp-3306".to_string())
            && names.contains(&"udp-53".to_string())
            && !names.contains(&"tcp-5432".to_string()),
        "{names:?}"
    );
    assert_eq!(warnings(&t), Vec::<String>::new(), "{}", t.log_text());
}

#[test]
fn a_router_without_entrypoints_is_served_only_on_the_default_entrypoints() {
    let _lock = ops_lock();
    let sandbox = Sandbox::new();
    let d = Daemon::start(&sandbox, 3520);
    let ip = slot_ip(3520, 2);
    d.run_service(
        "nodefault",
        "nodefault",
        2,
        &[
            ("traefik.enable", "true".to_string()),
            (
                "traefik.http.routers.site.rule",
                "Host(`nodefault.ops.test`)".to_string(),
            ),
            (
                "traefik.http.services.site.loadbalancer.server.port",
                "8080".to_string(),
            ),
        ],
        &[],
        &web(ip, 8080, "served-by-nodefault"),
    );
    let rs_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let api = loopback_config(
        dir.path(),
        &[
            "--route-server",
            &format!("127.0.0.1:{rs_port}"),
            "--preset-ports",
            "5432",
        ],
    );
    let yaml = static_yaml(dir.path());
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("renet.json")).unwrap())
            .unwrap();
    let https = settings["https_port"].as_u64().unwrap() as u16;
    // `renet proxy config` set up the push: the route server writes the routes file that
    // Traefik's file provider watches.
    let dynamic = settings["dynamic_file"].as_str().unwrap().to_string();
    let _rs = RouteServer::start_on(&sandbox, rs_port, &["--dynamic-file", &dynamic]);
    let t = Traefik::start(dir.path(), api, &yaml);

    // Served on websecure…
    let (code, body) = wait_for("the router on websecure", Duration::from_secs(30), || {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--resolve")
            .arg(format!("nodefault.ops.test:{https}:{BIND}"))
            .arg(format!("https://nodefault.ops.test:{https}/"))
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse::<u16>() {
            Ok(200) => Ok((200, body.to_string())),
            other => Err(format!("{other:?}: {text}")),
        }
    });
    assert_eq!(code, 200);
    assert!(body.contains("served-by-nodefault"));
    // …never on the tcp-5432 entrypoint, whatever the Host header says.
    let (code, body) = http_get(&format!("{BIND}:5432"), "/", Some("nodefault.ops.test"))
        .unwrap_or((0, String::new()));
    assert!(
        code != 200 && !body.contains("served-by-nodefault"),
        "an HTTP router without entrypoints answered on tcp-5432 ({code}): {body}\n{}",
        t.log_text()
    );
}
