//! The route server against a real repo daemon (network 3072), without Traefik: sockets that
//! appear after startup are picked up, spoofing containers (another network's ID, a service IP
//! outside the block) are never routed and are listed in `/health`, healthchecks decide, and the
//! endpoints answer with the promised types and deterministic bytes.

mod route_server_support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use route_server_support::*;

const LONG: Duration = Duration::from_secs(30);

fn head_and_body(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (h, b) = buf.split_once("\r\n\r\n").unwrap();
    (h.to_ascii_lowercase(), b.to_string())
}

#[test]
fn spoofers_are_rejected_and_new_daemons_are_found() {
    let _lock = exclusive();
    let sb = Sandbox::new();

    // Started on an empty socket folder: empty but valid answers.
    let rs = RouteServer::start(&sb, &["--base-domain", "test.example"]);
    let (head, body) = head_and_body(rs.port, "/routes.yaml");
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(head.contains("content-type: text/yaml"), "{head}");
    assert_eq!(body, "{}\n");
    let h = rs.json("/health");
    assert_eq!(h["daemons"], serde_json::json!([]), "{h:#}");
    assert_eq!(h["auto_routes"]["enabled"], true, "{h:#}");
    let (head, _) = head_and_body(rs.port, "/nope");
    assert!(head.starts_with("http/1.0 404"), "{head}");

    // A daemon started afterwards is picked up without a restart.
    let d = Daemon::start(&sb, 3072);
    wait_for("daemon 3072 in /health", LONG, || {
        let h = rs.json("/health");
        let d = &h["daemons"][0];
        if d["network_id"] == 3072 && d["connected"] == true {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });

    let port = |p: u16| ("rediacc.service_port", p.to_string());
    // Honest container.
    d.run_service(
        "good",
        "good",
        0,
        &[port(8080)],
        &[],
        &web(slot_ip(3072, 0), 8080, "good"),
    );
    // Claims network 2944 (and one of its IPs) while running on 3072's daemon.
    d.run_labelled(
        "spoof-net",
        &[
            ("rediacc.service_name", "spoofnet".into()),
            ("rediacc.service_ip", slot_ip(2944, 5).to_string()),
            ("rediacc.network_id", "2944".into()),
            port(8080),
        ],
        &[],
        &["sleep".into(), "3600".into()],
    );
    // Right network ID, but a service IP of another block.
    d.run_labelled(
        "spoof-ip",
        &[
            ("rediacc.service_name", "spoofip".into()),
            ("rediacc.service_ip", slot_ip(2944, 6).to_string()),
            ("rediacc.network_id", "3072".into()),
            port(8080),
        ],
        &[],
        &["sleep".into(), "3600".into()],
    );
    // Healthchecks: an unhealthy container is never routed, a healthy one is.
    let health_opts = |cmd: &'static str| {
        vec![
            "--health-cmd",
            cmd,
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ]
    };
    d.run_service(
        "sick",
        "sick",
        1,
        &[port(8080)],
        &health_opts("false"),
        &web(slot_ip(3072, 1), 8080, "sick"),
    );
    d.run_service(
        "fine",
        "fine",
        2,
        &[port(8080)],
        &health_opts("true"),
        &web(slot_ip(3072, 2), 8080, "fine"),
    );

    let yaml = wait_for("good and fine routed", LONG, || {
        let y = rs.get("/routes.yaml")?;
        if y.contains("good-3072.test.example") && y.contains("fine-3072.test.example") {
            Ok(y)
        } else {
            Err(y)
        }
    });
    for absent in ["spoofnet", "spoofip", "sick", &slot_ip(2944, 5).to_string()] {
        assert!(
            !yaml.contains(absent),
            "`{absent}` must not be routed:\n{yaml}"
        );
    }
    let health = wait_for("both spoofers listed in /health", LONG, || {
        let h = rs.json("/health");
        let text = h["rejected"].to_string();
        if text.contains("spoof-net") && text.contains("spoof-ip") {
            Ok(h)
        } else {
            Err(h.to_string())
        }
    });
    println!("/health:\n{health:#}");
    for r in health["rejected"].as_array().unwrap() {
        let t = r.to_string();
        if t.contains("spoof-") {
            assert!(
                t.contains("3072"),
                "the reason names the trusted network: {t}"
            );
        }
    }
    assert_eq!(health["daemons"][0]["containers"], 5, "{health:#}");
    assert_eq!(health["status"], "ok", "{health:#}");
    let text = health["rejected"].to_string();
    assert!(!text.contains("\"good\""), "{text}");

    // The unhealthy container stays out for good (a few more builds happen meanwhile).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!rs.get("/routes.yaml").unwrap().contains("sick-3072"));

    // Deterministic bodies, and JSON everywhere else.
    for path in ["/routes.yaml", "/routes.json", "/ports"] {
        assert_eq!(rs.get(path).unwrap(), rs.get(path).unwrap(), "{path}");
    }
    let (head, _) = head_and_body(rs.port, "/routes.json");
    assert!(head.contains("content-type: application/json"), "{head}");
    let routes = rs.json("/routes.json");
    assert!(routes.to_string().contains("good"), "{routes:#}");
    assert!(rs.json("/ports")["tcp"].is_array());
}

#[test]
fn non_loopback_listen_addresses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for addr in [
        "0.0.0.0:7111",
        "192.0.2.1:7111",
        "[::]:7111",
        "localhost:7111",
    ] {
        let out = Command::new(renet_bin())
            .args(["route-server", "--listen", addr])
            .arg("--settings")
            .arg(dir.path().join("none.json"))
            .arg("--state-dir")
            .arg(dir.path())
            .arg("--socket-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{addr} must be refused");
        assert!(err.contains(addr), "the error names the address: {err}");
    }
}

#[test]
fn a_corrupt_port_table_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ports.json"), "{oops").unwrap();
    let out = Command::new(renet_bin())
        .args([
            "route-server",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--settings")
        .arg(dir.path().join("none.json"))
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--socket-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ports.json") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn help_documents_every_option() {
    let out = Command::new(renet_bin())
        .args(["route-server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--settings",
        "--listen",
        "--socket-dir",
        "--state-dir",
        "--base-domain",
        "--host-template",
        "--auto-routes",
        "--entrypoints",
        "--cert-resolver",
        "--tcp-ports",
        "--udp-ports",
        "--dynamic-range",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}
