//! Kernel-enforced isolation between repositories (spec §9), on real repo daemons, real nft
//! rules, the real route server and Traefik: what a container of one repository can and cannot
//! reach, what a client in another network namespace can reach, and the rules' lifecycle.
//!
//! Resources: networks 3328, 3392, 3456 only; network namespaces `renet-iso-*`, veth pairs
//! `riso*`, addresses from 198.18.64.0/24. Everything is removed by drop guards, also when an
//! assertion fails. The tests hold [`LOCK_FILE`] for their whole run, so two runs never share
//! the networks.

mod route_server_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use renet::addresses::NetworkId;
use renet::host::isolation;
use route_server_support::{
    IMAGE, RouteServer, Sandbox, Traefik, free_port, http_get, renet_bin, repo_root, slot_ip,
    wait_for, web,
};

const LOCK_FILE: &str = "/tmp/renet-isolation-tests.lock";
const NETWORKS: [u32; 3] = [3328, 3392, 3456];
/// A loopback address standing in for the host's DNS resolver (given to renet through
/// `isolation.resolv_conf`).
const RESOLVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 153);

fn exclusive() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .expect("open the test lock file");
    f.lock().expect("lock the test lock file");
    f
}

// ---------------------------------------------------------------------------------------------
// Repo daemons with their firewall

/// A repo daemon started with `renet daemon start` in the sandbox, with `settings`; stopped
/// with its containers on drop, and its table removed even if `daemon stop` fails.
struct RepoDaemon {
    n: u32,
    socket_dir: PathBuf,
    data_dir: PathBuf,
    settings: PathBuf,
    running: bool,
}

impl RepoDaemon {
    fn start(sb: &Sandbox, n: u32, settings: &Path) -> RepoDaemon {
        assert!(NETWORKS.contains(&n), "isolation tests use {NETWORKS:?}");
        let mut d = RepoDaemon {
            n,
            socket_dir: sb.sockets.path().to_path_buf(),
            data_dir: sb.data.path().to_path_buf(),
            settings: settings.to_path_buf(),
            running: false,
        };
        d.up();
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/test-env.sh"))
            .arg("image")
            .arg(d.socket())
            .output()
            .expect("run scripts/test-env.sh image");
        assert!(
            out.status.success(),
            "building the test image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    }

    fn socket(&self) -> PathBuf {
        self.socket_dir.join(format!("docker-{}.sock", self.n))
    }

    fn renet(&self, args: &[&str]) -> Output {
        Command::new(renet_bin())
            .arg("daemon")
            .args(args)
            .arg("--socket-dir")
            .arg(&self.socket_dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--settings")
            .arg(&self.settings)
            .output()
            .expect("run renet daemon")
    }

    fn renet_ok(&self, args: &[&str]) -> String {
        let out = self.renet(args);
        assert!(
            out.status.success(),
            "renet daemon {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn up(&mut self) {
        self.renet_ok(&["start", "--network-id", &self.n.to_string()]);
        self.running = true;
    }

    fn down(&mut self) {
        self.renet_ok(&["stop", "--network-id", &self.n.to_string()]);
        self.running = false;
        self.release_netns();
    }

    /// `renet daemon status --json`, this network's entry.
    fn status(&self) -> serde_json::Value {
        let text = self.renet_ok(&["status", "--json"]);
        let all: serde_json::Value = serde_json::from_str(&text).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|d| d["network_id"] == self.n)
            .cloned()
            .unwrap_or_else(|| panic!("network {} missing from status: {text}", self.n))
    }

    fn release_netns(&self) {
        let ns = self
            .socket_dir
            .join(format!("exec-{}", self.n))
            .join("netns/default");
        if ns.exists() {
            let _ = Command::new("umount").arg("--lazy").arg(&ns).output();
        }
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env_remove("DOCKER_CONTEXT")
            .output()
            .expect("run docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A container with host networking and the labels `renet compose` gives `service` in
    /// slot 0, plus `labels`, running `cmd`.
    fn run(&self, name: &str, labels: &[(&str, String)], cmd: &[String]) -> String {
        let mut args: Vec<String> = ["run", "-d", "--network", "host", "--name", name]
            .map(String::from)
            .to_vec();
        let ip = slot_ip(self.n, 0).to_string();
        let mut all = vec![
            ("rediacc.service_name", "web".to_string()),
            ("rediacc.service_ip", ip),
            ("rediacc.network_id", self.n.to_string()),
        ];
        all.extend(labels.iter().cloned());
        for (k, v) in all {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.push(IMAGE.into());
        args.extend(cmd.iter().cloned());
        self.docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs `sh -c script` inside `container`; Ok(stdout) on exit 0, else Err(stdout+stderr).
    fn exec(&self, container: &str, script: &str) -> Result<String, String> {
        let out = self.docker(&["exec", container, "sh", "-c", script]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(text)
        }
    }
}

impl Drop for RepoDaemon {
    fn drop(&mut self) {
        if self.running {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
            let _ = self.renet(&["stop", "--network-id", &self.n.to_string()]);
        }
        // Whatever happened above, no rule of this test may outlive it.
        let _ = isolation::remove(NetworkId::new(self.n).unwrap());
        self.release_netns();
    }
}

/// Network n's chains in the shared table (`nft list chain inet renet out_<n>` and `in_<n>`),
/// None when it has none. Counters are blanked so two listings of the same rules compare equal.
fn rules(n: u32) -> Option<String> {
    let mut text = String::new();
    for chain in [format!("out_{n}"), format!("in_{n}")] {
        let out = Command::new("nft")
            .args(["list", "chain", "inet", isolation::TABLE, &chain])
            .output()
            .expect("run nft (scripts/test-env.sh installs nftables)");
        if !out.status.success() {
            return None;
        }
        text += &String::from_utf8_lossy(&out.stdout);
    }
    Some(blank_counters(&text))
}

/// The shared table's listing (empty when there is none).
fn whole_table() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", isolation::TABLE])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when the table sends packets of network n's cgroup to its chains.
fn dispatched(n: u32) -> bool {
    let text = whole_table();
    text.contains(&format!("renet/{n}\" : jump out_{n}"))
        && text.contains(&format!("renet/{n}\" : jump in_{n}"))
}

fn blank_counters(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        out.push(words[i]);
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            i += 5; // counter packets N bytes M
        } else {
            i += 1;
        }
    }
    out.join(" ")
}

fn write_settings(sb: &Sandbox, json: serde_json::Value) -> PathBuf {
    let path = sb.scratch.path().join("renet.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Host listeners standing in for host services

/// A TCP listener answering `marker\n` to every connection, until dropped.
struct HostTcp {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl HostTcp {
    fn start(addr: &str, marker: &str) -> HostTcp {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, m) = (stop.clone(), format!("{marker}\n"));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(m.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HostTcp {
            addr: addr.to_string(),
            stop,
        }
    }
}

impl Drop for HostTcp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads what a TCP service sends, from the host (outside any repository cgroup).
fn host_read(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.trim().to_string()
}

/// Datagrams received on a UDP socket within `wait`.
fn udp_received(sock: &UdpSocket, wait: Duration) -> usize {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut n = 0;
    let mut buf = [0u8; 1500];
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    n
}

// ---------------------------------------------------------------------------------------------
// A network namespace standing in for another host

/// Network namespace `renet-iso-<k>` joined to the host by the veth pair `riso<k>h`/`riso<k>n`:
/// the host side is 198.18.64.(4k+1), the namespace 198.18.64.(4k+2). Removed on drop.
struct OtherHost {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    servers: Vec<std::process::Child>,
    www: tempfile::TempDir,
}

impl OtherHost {
    fn create(k: u8) -> OtherHost {
        let name = format!("renet-iso-{k}");
        let host_if = format!("riso{k}h");
        let ns_if = format!("riso{k}n");
        let host_ip = Ipv4Addr::new(198, 18, 64, 4 * k + 1);
        let ns_ip = Ipv4Addr::new(198, 18, 64, 4 * k + 2);
        // Leftovers of a killed run would make `ip netns add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let h = OtherHost {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip,
            ns_ip,
            servers: Vec::new(),
            www: tempfile::tempdir().unwrap(),
        };
        for cmd in [
            format!("netns add {name}"),
            format!("link add {host_if} type veth peer name {ns_if}"),
            format!("link set {ns_if} netns {name}"),
            format!("addr add {host_ip}/30 dev {host_if}"),
            format!("link set {host_if} up"),
            format!("-n {name} addr add {ns_ip}/30 dev {ns_if}"),
            format!("-n {name} link set {ns_if} up"),
            format!("-n {name} link set lo up"),
        ] {
            let out = Command::new("ip")
                .args(cmd.split(' '))
                .output()
                .expect("run ip (iproute2)");
            assert!(
                out.status.success(),
                "ip {cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        h
    }

    /// curl from inside the namespace; Ok((code, body)) or Err(curl's complaint).
    fn curl(&self, url: &str, host: Option<&str>) -> Result<(u16, String), String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, "curl", "-s", "--max-time", "3"])
            .args(["-o", "-", "-w", "\n%{http_code}"]);
        if let Some(h) = host {
            cmd.args(["-H", &format!("Host: {h}")]);
        }
        let out = cmd.arg(url).output().expect("run curl in the namespace");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse::<u16>() {
            Ok(c) if c != 0 && out.status.success() => Ok((c, body.trim().to_string())),
            _ => Err(format!(
                "curl {url}: exit {:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
}

impl OtherHost {
    /// busybox httpd inside the namespace on its own address, serving `marker` (a server on
    /// the internet, as far as the repository can tell).
    fn serve(&mut self, port: u16, marker: &str) {
        std::fs::write(self.www.path().join("index.html"), format!("{marker}\n")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, "/bin/busybox", "httpd", "-f"])
            .arg("-p")
            .arg(format!("{}:{port}", self.ns_ip))
            .arg("-h")
            .arg(self.www.path())
            .spawn()
            .expect("start busybox httpd in the namespace");
        self.servers.push(child);
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn a_container_reaches_its_own_services_the_resolver_and_allowed_host_services_only() {
    let _lock = exclusive();
    let sb = Sandbox::new();
    let allowed_port = free_port();
    let resolv = sb.scratch.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {RESOLVER}\n")).unwrap();
    let settings = write_settings(
        &sb,
        serde_json::json!({"isolation": {
            "allow": [format!("127.0.0.1:{allowed_port}/tcp")],
            "resolv_conf": resolv,
        }}),
    );
    let a = RepoDaemon::start(&sb, 3328, &settings);
    let b = RepoDaemon::start(&sb, 3392, &settings);
    let (a_ip, b_ip) = (slot_ip(3328, 0), slot_ip(3392, 0));
    a.run("a-web", &[], &web(a_ip, 8080, "repo-a"));
    b.run("b-web", &[], &web(b_ip, 8080, "repo-b"));

    // The route server and Traefik's API, real, on loopback ports, as in production.
    let rs = RouteServer::start(&sb, &[]);
    let api = free_port();
    let traefik = Traefik::start(
        sb.scratch.path(),
        api,
        &format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:{}\"\n  traefik:\n    address: \
             \"127.0.0.1:{api}\"\napi:\n  insecure: true\nproviders:\n  http:\n    endpoint: \
             \"http://127.0.0.1:{}/routes.yaml\"\n",
            free_port(),
            rs.port
        ),
    );
    let allowed = HostTcp::start(&format!("127.0.0.1:{allowed_port}"), "allowed-host-service");
    let resolver_tcp = HostTcp::start(&format!("{RESOLVER}:53"), "resolver-tcp");
    let resolver_udp = UdpSocket::bind((RESOLVER, 53)).expect("bind the resolver stand-in");
    let b_udp = UdpSocket::bind((b_ip, 53)).expect("bind a UDP service of B");

    // Controls: everything below is up and answers a client outside the repositories.
    wait_for("B's service", Duration::from_secs(10), || {
        http_get(&format!("{b_ip}:8080"), "/", None).map(|(_, body)| body)
    });
    assert_eq!(
        http_get(&format!("{b_ip}:8080"), "/", None)
            .unwrap()
            .1
            .trim(),
        "repo-b"
    );
    assert!(rs.get("/routes.json").is_ok());
    assert!(traefik.rawdata().is_ok());
    assert_eq!(host_read(&allowed.addr), "allowed-host-service");

    let wget = |url: String| a.exec("a-web", &format!("timeout 5 wget -qO- {url}"));
    // Its own services.
    wait_for(
        "A's own service from inside A",
        Duration::from_secs(10),
        || wget(format!("http://{a_ip}:8080/")),
    );
    assert_eq!(wget(format!("http://{a_ip}:8080/")).unwrap(), "repo-a");
    // Not another repository, the route server, or Traefik's API: refused at once.
    for url in [
        format!("http://{b_ip}:8080/"),
        format!("http://127.0.0.1:{}/routes.json", rs.port),
        format!("http://127.0.0.1:{api}/api/rawdata"),
    ] {
        let err = wget(url.clone()).expect_err(&format!("A reached {url}"));
        assert!(err.contains("refused"), "{url}: {err}");
    }
    // The allowed host service and the resolver (TCP and UDP).
    assert_eq!(
        a.exec("a-web", &format!("nc 127.0.0.1 {allowed_port} </dev/null"))
            .unwrap(),
        "allowed-host-service"
    );
    assert_eq!(
        a.exec("a-web", &format!("nc {RESOLVER} 53 </dev/null"))
            .unwrap(),
        "resolver-tcp"
    );
    let _ = a.exec(
        "a-web",
        &format!("timeout 2 nslookup example.test {RESOLVER}"),
    );
    assert!(
        udp_received(&resolver_udp, Duration::from_secs(3)) > 0,
        "A's DNS query never reached the resolver"
    );
    let _ = a.exec("a-web", &format!("timeout 2 nslookup example.test {b_ip}"));
    assert_eq!(
        udp_received(&b_udp, Duration::from_secs(2)),
        0,
        "A's datagram reached B's UDP service"
    );
    // B is walled off the same way, and A's service is still reachable from the host.
    let err = b
        .exec("b-web", &format!("timeout 5 wget -qO- http://{a_ip}:8080/"))
        .expect_err("B reached A");
    assert!(err.contains("refused"), "{err}");
    assert_eq!(
        http_get(&format!("{a_ip}:8080"), "/", None)
            .unwrap()
            .1
            .trim(),
        "repo-a"
    );
    drop(resolver_tcp);

    // Stopping A's daemon removes A's rules only: B stays walled off.
    let mut a = a;
    a.down();
    assert!(!dispatched(3328) && dispatched(3392));
    let err = b
        .exec(
            "b-web",
            &format!(
                "timeout 5 wget -qO- http://127.0.0.1:{}/routes.json",
                rs.port
            ),
        )
        .expect_err("B reached the route server");
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn outside_clients_reach_a_repository_only_through_traefik() {
    let _lock = exclusive();
    let sb = Sandbox::new();
    let settings = write_settings(&sb, serde_json::json!({}));
    let mut other = OtherHost::create(0);
    let a = RepoDaemon::start(&sb, 3456, &settings);
    let port = free_port();
    // A careless service: every address of the host, 0.0.0.0.
    a.run(
        "a-wild",
        &[
            ("traefik.enable", "true".into()),
            (
                "traefik.http.routers.app.rule",
                "Host(`app.iso.test`)".into(),
            ),
            ("traefik.http.routers.app.entrypoints", "web".into()),
            (
                "traefik.http.services.app.loadbalancer.server.port",
                port.to_string(),
            ),
        ],
        &web(Ipv4Addr::UNSPECIFIED, port, "repo-a-wild"),
    );
    let rs = RouteServer::start(&sb, &[]);
    let (api, entry) = (free_port(), free_port());
    // Traefik's entrypoint on the host's "public" address, the host side of the veth pair.
    let _traefik = Traefik::start(
        sb.scratch.path(),
        api,
        &format!(
            "entryPoints:\n  web:\n    address: \"{}:{entry}\"\n  traefik:\n    address: \
             \"127.0.0.1:{api}\"\napi:\n  insecure: true\nproviders:\n  http:\n    endpoint: \
             \"http://127.0.0.1:{}/routes.yaml\"\n    pollInterval: \"1s\"\n",
            other.host_ip, rs.port
        ),
    );

    // The service answers on every address, seen from the host itself.
    wait_for("the service on 0.0.0.0", Duration::from_secs(10), || {
        http_get(&format!("{}:{port}", other.host_ip), "/", None).map(|(_, b)| b)
    });
    // Through Traefik, from the other host: the service's page.
    let through_traefik =
        wait_for(
            "the route through Traefik",
            Duration::from_secs(20),
            || match other.curl(
                &format!("http://{}:{entry}/", other.host_ip),
                Some("app.iso.test"),
            ) {
                Ok((200, body)) => Ok(body),
                other => Err(format!("{other:?}")),
            },
        );
    assert_eq!(through_traefik, "repo-a-wild");
    // Directly, from the other host: nothing answers.
    let direct = other.curl(&format!("http://{}:{port}/", other.host_ip), None);
    assert!(direct.is_err(), "reached the service directly: {direct:?}");

    // Connections the container opens to other hosts (downloads, APIs) are untouched.
    let remote_port = free_port();
    other.serve(remote_port, "remote-server");
    let url = format!("http://{}:{remote_port}/", other.ns_ip);
    let got = wait_for(
        "a remote server from inside A",
        Duration::from_secs(10),
        || a.exec("a-wild", &format!("timeout 5 wget -qO- {url}")),
    );
    assert_eq!(got, "remote-server");

    // And `renet daemon status` tells the operator.
    let warnings = a.status()["isolation"]["warnings"].to_string();
    assert!(
        warnings.contains(&format!("listens on 0.0.0.0:{port}/tcp")),
        "{warnings}"
    );
}

#[test]
fn rules_are_installed_by_start_removed_by_stop_and_restored_by_start() {
    let _lock = exclusive();
    let sb = Sandbox::new();
    let settings = write_settings(&sb, serde_json::json!({}));
    let port = free_port();
    let host_service = HostTcp::start(&format!("127.0.0.1:{port}"), "host-service");

    let mut a = RepoDaemon::start(&sb, 3392, &settings);
    let installed = rules(3392).expect("no rules after daemon start");
    assert!(
        installed.contains("ip daddr 127.0.13.64/26 accept"),
        "{installed}"
    );
    assert!(
        dispatched(3392),
        "the table does not dispatch network 3392's cgroup"
    );
    let st = a.status();
    assert_eq!(st["isolation"]["firewall"], "installed", "{st}");
    assert!(
        st["isolation"]["allowed"][0]
            .as_str()
            .unwrap()
            .starts_with("127.0.13.64/26"),
        "{st}"
    );

    // Idempotent: a second start while running replaces the rules with the same ones, once.
    a.up();
    assert_eq!(rules(3392).as_deref(), Some(installed.as_str()));
    let table = whole_table();
    assert_eq!(table.matches("jump out_3392").count(), 1, "{table}");
    assert_eq!(table.matches("vmap @repo_output").count(), 1, "{table}");

    let blocked = |a: &RepoDaemon| {
        a.run("probe", &[], &["sleep".into(), "60".into()]);
        let r = a.exec("probe", &format!("nc 127.0.0.1 {port} </dev/null"));
        a.docker_ok(&["rm", "-f", "probe"]);
        r
    };
    assert_refused(blocked(&a));

    a.down();
    assert_eq!(rules(3392), None, "the rules outlived daemon stop");
    assert!(!dispatched(3392));

    // After a reboot the rules are gone while nothing runs; start brings both back.
    a.up();
    assert_eq!(rules(3392).as_deref(), Some(installed.as_str()));
    assert!(dispatched(3392));
    assert_refused(blocked(&a));
    assert_eq!(host_read(&host_service.addr), "host-service");

    // Rules gone under a running daemon (an operator's `nft flush ruleset`): status says so,
    // and start (the daemon already answers) restores them.
    isolation::remove(NetworkId::new(3392).unwrap()).unwrap();
    assert_eq!(a.status()["isolation"]["firewall"], "missing");
    a.up();
    assert_eq!(a.status()["isolation"]["firewall"], "installed");
    assert_refused(blocked(&a));
}

/// A connection from a container that the firewall refused (not one that failed otherwise).
fn assert_refused(r: Result<String, String>) {
    match r {
        Ok(out) => panic!("a container reached a host service: {out}"),
        Err(e) => assert!(e.contains("Connection refused"), "{e}"),
    }
}

#[test]
fn a_bad_allow_entry_is_refused_before_anything_starts() {
    let _lock = exclusive();
    let sb = Sandbox::new();
    let settings = write_settings(
        &sb,
        serde_json::json!({"isolation": {"allow": ["127.0.0.0/8"]}}),
    );
    let out = Command::new(renet_bin())
        .args(["daemon", "start", "--network-id", "3456"])
        .arg("--socket-dir")
        .arg(sb.sockets.path())
        .arg("--data-dir")
        .arg(sb.data.path())
        .arg("--settings")
        .arg(&settings)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("isolation.allow") && err.contains("\"127.0.0.0/8\""),
        "{err}"
    );
    assert_eq!(rules(3456), None, "rules were installed");
    assert!(
        !sb.sockets.path().join("docker-3456.sock").exists(),
        "the daemon started"
    );
}
