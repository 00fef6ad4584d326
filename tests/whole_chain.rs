//! The whole chain as a user runs it (spec §7, §8): repo daemon → `renet repo up` on the
//! bundled example → route server → Traefik with the static configuration from
//! `renet proxy config` → an HTTPS request with the example's host name answered by the
//! example (HSTS middleware included); `renet repo down` → the route is gone.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Kills a background process (route server, Traefik) when the test ends, even on failure.
struct Background(Child);
impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `renet repo down` on the copy when the test ends, even on failure.
struct RepoDown<'a>(&'a Path);
impl Drop for RepoDown<'_> {
    fn drop(&mut self) {
        let _ = renet(self.0)
            .args(["repo", "down"])
            .arg(self.0)
            .args(["--network-id", "2816"])
            .output();
    }
}

fn free_port() -> u16 {
    common::free_ports::free_port_on("127.0.0.1")
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "3"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn example_reaches_the_internet_side_of_traefik_and_goes_away_on_down() {
    require_daemon(2816);
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("example");
    copy_dir(&root().join("rediaccfile"), &repo);
    let _ = std::fs::remove_file(repo.join(".rediacc.json"));
    let _ = std::fs::remove_dir_all(repo.join("data"));

    // 1. Deploy the example with its Rediaccfile (prep builds the image, up runs renet compose).
    ok(renet(&repo).args(["daemon", "start", "--network-id", "2816"]));
    let _down = RepoDown(&repo);
    ok(renet(&repo)
        .args(["repo", "up"])
        .arg(&repo)
        .args(["--network-id", "2816"]));
    let ips = ok(renet(&repo).args(["ips", "--json", "--network-id", "2816"]));
    let ips: serde_json::Value = serde_json::from_str(&ips).unwrap();
    let webapp_ip = ips["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "webapp")
        .expect("webapp has a slot")["ip"]
        .as_str()
        .unwrap()
        .to_string();

    // 2. Static configuration for loopback and free high ports.
    let (http, https, api, rs) = (free_port(), free_port(), free_port(), free_port());
    let settings = tmp.path().join("renet.json");
    let traefik_dir = tmp.path().join("traefik");
    ok(renet(&repo)
        .args(["proxy", "config", "--settings"])
        .arg(&settings)
        .arg("--out-dir")
        .arg(&traefik_dir)
        .arg("--unit-dir")
        .arg(tmp.path().join("units"))
        .args(["--base-domain", "example.test"])
        .args([
            "--http-port",
            &http.to_string(),
            "--https-port",
            &https.to_string(),
        ])
        .args(["--api-address", &format!("127.0.0.1:{api}")])
        .args(["--route-server", &format!("127.0.0.1:{rs}")])
        // Keep the TCP entrypoints of this Traefik away from the other tests' ports.
        .args(["--dynamic-range", "10500-10502"]));
    let yaml = std::fs::read_to_string(traefik_dir.join("traefik.yml")).unwrap();
    assert!(
        !yaml.contains("0.0.0.0") && !yaml.contains("[::]"),
        "{yaml}"
    );

    // 3. The route server and Traefik, as the systemd units would run them.
    let _route_server = Background(
        Command::new(RENET)
            .args(["route-server", "--settings"])
            .arg(&settings)
            .arg("--state-dir")
            .arg(tmp.path().join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _traefik = Background(
        Command::new("traefik")
            .arg(format!(
                "--configFile={}",
                traefik_dir.join("traefik.yml").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The route server publishes the label route with the webapp's service IP.
    let routes_url = format!("http://127.0.0.1:{rs}/routes.yaml");
    wait_until("the example's route in /routes.yaml", 30, || {
        curl(&[&routes_url]).filter(|y| y.contains("app.example.com") && y.contains(&webapp_ip))
    });

    // 4. HTTPS through Traefik with the example's host name.
    let resolve = format!("app.example.com:{https}:127.0.0.1");
    let url = format!("https://app.example.com:{https}/");
    let page = wait_until("the example through Traefik", 40, || {
        curl(&["-k", "-i", "--resolve", &resolve, &url]).filter(|p| p.contains("200"))
    });
    assert!(
        page.contains("Hello from the renet example webapp"),
        "{page}"
    );
    assert!(
        page.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=15768000; includesubdomains"),
        "HSTS middleware: {page}"
    );
    // The web app reaches its internal backend by ${BACKEND_IP}.
    let backend = curl(&[
        "-k",
        "--resolve",
        &resolve,
        &format!("{url}cgi-bin/backend"),
    ])
    .unwrap();
    assert!(
        backend.contains("backend of repository example (network 2816)"),
        "{backend}"
    );
    // Plain HTTP is redirected to HTTPS by the `web` entrypoint.
    let redirect = curl(&[
        "-i",
        "-H",
        "Host: app.example.com",
        &format!("http://127.0.0.1:{http}/"),
    ])
    .unwrap();
    assert!(redirect.starts_with("HTTP/1.1 30"), "{redirect}");

    // 5. `renet repo down` → the route is gone from the route server and from Traefik.
    ok(renet(&repo)
        .args(["repo", "down"])
        .arg(&repo)
        .args(["--network-id", "2816"]));
    wait_until("the route to leave /routes.yaml", 30, || {
        curl(&[&routes_url]).filter(|y| !y.contains("app.example.com"))
    });
    wait_until("Traefik to drop the route", 30, || {
        let code = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "3",
                "--resolve",
                &resolve,
                &url,
            ])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&code.stdout) == "404").then_some(())
    });
}
