//! Host-mode fidelity on a real repo daemon (spec §4): `renet compose -- up -d` brings up the
//! `host-fidelity` fixture (links, external_links, mac_address, network aliases,
//! container_name, `network_mode: service:x`, every port form and `.env` form), every name
//! resolves inside the containers through the repository's hosts file, that file is kept
//! current by later runs, and `NET_RAW` is gone (ping fails) unless `--unsafe`.
//!
//! The daemon (network 3200) runs in a private socket folder, started by `renet daemon start`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const NETWORK: u32 = 3200;

/// A repo daemon in a private socket folder; stopped with its containers on drop.
struct PrivateDaemon {
    sockets: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl PrivateDaemon {
    fn start() -> PrivateDaemon {
        let mk = |p: &str| {
            tempfile::Builder::new()
                .prefix(p)
                .tempdir_in("/tmp")
                .unwrap()
        };
        let d = PrivateDaemon {
            sockets: mk("cv-sock"),
            data: mk("cv-data"),
        };
        d.daemon("start");
        let out = Command::new("bash")
            .arg(root().join("scripts/test-env.sh"))
            .arg("image")
            .arg(d.socket())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    }

    fn socket(&self) -> PathBuf {
        self.sockets.path().join(format!("docker-{NETWORK}.sock"))
    }

    fn daemon(&self, what: &str) {
        let out = Command::new(RENET)
            .args(["daemon", what, "--network-id", &NETWORK.to_string()])
            .arg("--socket-dir")
            .arg(self.sockets.path())
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["--timeout", "60"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "renet daemon {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env_remove("DOCKER_CONTEXT");
        c
    }

    fn exec(&self, container: &str, script: &str) -> (bool, String) {
        let out = run(self.docker().args(["exec", container, "sh", "-c", script]));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        if let Ok(out) = self.docker().args(["ps", "-aq"]).output() {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.docker().args(["rm", "-f"]).args(ids).output();
            }
        }
        let _ = Command::new(RENET)
            .args(["daemon", "stop", "--network-id", &NETWORK.to_string()])
            .arg("--socket-dir")
            .arg(self.sockets.path())
            .arg("--data-dir")
            .arg(self.data.path())
            .output();
        let ns = self
            .sockets
            .path()
            .join(format!("exec-{NETWORK}"))
            .join("netns/default");
        if ns.exists() {
            let _ = Command::new("umount").arg("--lazy").arg(&ns).output();
        }
    }
}

fn compose(
    d: &PrivateDaemon,
    dir: &Path,
    runtime: &Path,
    flags: &[&str],
    args: &[&str],
) -> Command {
    let mut c = renet(dir);
    c.env("RENET_RUNTIME_DIR", runtime)
        .args([
            "compose",
            "--network-id",
            &NETWORK.to_string(),
            "--socket-dir",
        ])
        .arg(d.sockets.path())
        .args(flags)
        .arg("--")
        .args(args);
    c
}

/// An HTTP exchange from inside `container` to `name:8080` (busybox `nc` resolves the name
/// through /etc/hosts).
fn http_from(d: &PrivateDaemon, container: &str, name: &str) -> String {
    let (_, out) = d.exec(
        container,
        &format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {name} 8080"),
    );
    out
}

#[test]
fn fixture_comes_up_in_host_mode_and_every_name_resolves() {
    let d = PrivateDaemon::start();
    let dir = fixture_copy("compose/host-fidelity");
    let runtime = tempfile::tempdir().unwrap();
    let project = "fidelity";
    let out = run(&mut compose(
        &d,
        dir.path(),
        runtime.path(),
        &[],
        &["-p", project, "up", "-d"],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "up failed: {err}");
    for warning in [
        "`links` removed",
        "`external_links` removed",
        "`mac_address` removed",
    ] {
        assert!(err.contains(warning), "{warning}: {err}");
    }
    let client = format!("{project}-client-1");
    let side = format!("{project}-side-1");
    for c in ["fidelity-web", &client, &side] {
        let state = ok(d.docker().args([
            "inspect",
            "--format",
            "{{.State.Running}} {{.HostConfig.NetworkMode}}",
            c,
        ]));
        assert_eq!(state.trim(), "true host", "{c}");
    }

    // Every name of the web service answers from the client: service name, container_name,
    // network aliases, link alias, external link alias.
    let mut answered = false;
    for _ in 0..50 {
        if http_from(&d, &client, "127.0.12.130").contains("HTTP/1.") {
            answered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(answered, "httpd of web never answered on its IP");
    for name in [
        "web",
        "fidelity-web",
        "www",
        "www.fidelity",
        "weblink",
        "legacy-web",
    ] {
        let reply = http_from(&d, &client, name);
        assert!(reply.contains("HTTP/1."), "`{name}` from client: {reply}");
    }
    // ...and from `side`, which shares nothing but the host network now.
    let reply = http_from(&d, &side, "www");
    assert!(reply.contains("HTTP/1."), "`www` from side: {reply}");
    let (_, hosts) = d.exec(&client, "cat /etc/hosts");
    assert!(hosts.contains("127.0.0.9\text.example"), "{hosts}");
    assert!(hosts.contains("127.0.12.132\tside"), "{hosts}");
    let (_, mount) = d.exec(&side, "grep ' /etc/hosts ' /proc/mounts");
    assert!(mount.contains(" ro,") || mount.contains(" ro "), "{mount}");

    // The labels carry every port form (compose's normalised model).
    let labels = ok(d.docker().args([
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        "fidelity-web",
    ]));
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(
        labels["rediacc.tcp_ports"],
        "8000:80,8080:80,9100:9100,9101:9101,0:3000,8443:443"
    );
    assert_eq!(labels["rediacc.udp_ports"], "5353:53");

    // NET_RAW is dropped: no raw sockets in the host's network namespace.
    let (ok_ping, text) = d.exec(&client, "ping -c 1 -W 1 \"$SERVICE_IP\"");
    assert!(
        !ok_ping && text.contains("permission denied"),
        "ping: {text}"
    );

    // A later run keeps the hosts file current, also for containers it does not recreate.
    let compose_file = dir.path().join("compose.yaml");
    let mut text = std::fs::read_to_string(&compose_file).unwrap();
    text = text.replace(
        "networks:\n  front: {}\n",
        "  late:\n    image: renet-test/busybox:latest\n    command: [\"sleep\", \"3600\"]\n    container_name: late-one\nnetworks:\n  front: {}\n",
    );
    std::fs::write(&compose_file, text).unwrap();
    ok(&mut compose(
        &d,
        dir.path(),
        runtime.path(),
        &[],
        &["-p", project, "up", "-d", "late"],
    ));
    let (_, hosts) = d.exec(&side, "cat /etc/hosts");
    assert!(hosts.contains("127.0.12.133\tlate late-one"), "{hosts}");

    // --unsafe keeps NET_RAW.
    ok(&mut compose(
        &d,
        dir.path(),
        runtime.path(),
        &["--unsafe"],
        &["-p", project, "up", "-d", "--force-recreate", "client"],
    ));
    // (Its own service IP: the isolation firewall refuses loopback addresses outside the
    // repository's block, ICMP included.)
    let (ok_ping, text) = d.exec(&client, "ping -c 1 -W 1 \"$SERVICE_IP\"");
    assert!(ok_ping, "ping with --unsafe: {text}");

    ok(&mut compose(
        &d,
        dir.path(),
        runtime.path(),
        &[],
        &["-p", project, "down", "-t", "0"],
    ));
    let left = ok(d.docker().args(["ps", "-aq"]));
    assert!(left.trim().is_empty(), "down leaves {left}");
}
