//! `renet compose` as a user runs it: vetting refusals, bad input, concurrent and killed runs,
//! and end to end against the real repo daemon.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn write(dir: &Path, name: &str, text: &str) {
    if let Some(parent) = dir.join(name).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(dir.join(name), text).unwrap();
}

fn compose(dir: &Path, extra: &[&str], compose_args: &[&str]) -> std::process::Command {
    let mut c = renet(dir);
    c.arg("compose")
        .args(["--network-id", "2816"])
        .args(extra)
        .arg("--")
        .args(compose_args);
    c
}

#[test]
fn vetting_refuses_before_anything_runs_and_unsafe_lets_through() {
    require_daemon(2816);
    let cases = [
        ("privileged: true", "`privileged: true`"),
        ("pid: host", "`pid: host`"),
        ("ipc: host", "`ipc: host`"),
        ("userns_mode: host", "`userns_mode: host`"),
        ("cap_add: [SYS_ADMIN]", "`cap_add: SYS_ADMIN`"),
        ("cap_add: [NET_ADMIN]", "`cap_add: NET_ADMIN`"),
        ("volumes: ['/etc:/host-etc']", "bind mount of `/etc`"),
        ("devices: [/dev/null]", "`devices`"),
        ("security_opt: [seccomp=unconfined]", "seccomp=unconfined"),
    ];
    for (setting, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let project = format!("vet{}", std::process::id());
        write(
            dir.path(),
            "compose.yaml",
            &format!(
                "services:\n  app:\n    image: {IMAGE}\n    command: [sleep, '60']\n    {setting}\n"
            ),
        );
        let err = fails(&mut compose(dir.path(), &[], &["-p", &project, "up", "-d"]));
        assert!(err.contains(expected), "{setting}: {err}");
        assert!(
            err.contains("compose.yaml:5: service `app`"),
            "{setting}: {err}"
        );
        assert!(err.contains("--unsafe"), "{setting}: {err}");
        assert!(
            !dir.path().join(".rediacc.json").exists(),
            "{setting}: slots written"
        );
        let ps = ok(docker(2816).args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ]));
        assert!(ps.trim().is_empty(), "{setting}: a container was created");
        // --unsafe lets it through (config touches no daemon).
        let out = ok(&mut compose(dir.path(), &["--unsafe"], &["config"]));
        assert!(out.contains("network_mode: host"), "{setting}: {out}");
    }
}

#[test]
fn other_repos_secrets_refused_even_with_unsafe() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        &format!(
            "services:\n  app:\n    image: {IMAGE}\n    env_file: /run/rediacc/secrets/2880/env\n"
        ),
    );
    let err = fails(&mut compose(dir.path(), &["--unsafe"], &["config"]));
    assert!(
        err.contains("secrets of network 2880") && err.contains("even with --unsafe"),
        "{err}"
    );
    // Nor renet's sockets, whatever the spelling.
    for src in [
        "/var/run/docker.sock",
        "/var/run/rediacc/docker-2880.sock",
        "/var/run/../run/rediacc",
        "/var/run",
    ] {
        write(
            dir.path(),
            "compose.yaml",
            &format!("services:\n  app:\n    image: {IMAGE}\n    volumes: ['{src}:/x']\n"),
        );
        let err = fails(&mut compose(dir.path(), &["--unsafe"], &["config"]));
        assert!(err.contains("even with --unsafe"), "{src}: {err}");
        assert!(!dir.path().join(".rediacc.json").exists());
    }
    // The repo's own secrets folder is fine.
    write(
        dir.path(),
        "compose.yaml",
        &format!(
            "services:\n  app:\n    image: {IMAGE}\n    volumes: ['/run/rediacc/secrets/2816:/run/secrets:ro']\n"
        ),
    );
    ok(&mut compose(dir.path(), &["--dry-run"], &["config"]));
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    // Malformed YAML.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        "services:\n  web:\n    image: [unclosed\n",
    );
    let err = fails(&mut compose(dir.path(), &["--dry-run"], &["up"]));
    assert!(
        err.contains("compose.yaml") && err.contains("yaml: line 2"),
        "{err}"
    );
    assert!(!dir.path().join(".rediacc.json").exists());

    // Missing compose file, given or default.
    let err = fails(&mut compose(
        dir.path(),
        &["--dry-run"],
        &["-f", "nope.yml", "up"],
    ));
    assert!(
        err.contains("nope.yml") && err.contains("not found"),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = fails(&mut compose(empty.path(), &["--dry-run"], &["up"]));
    assert!(err.contains("no compose file found"), "{err}");

    // Invalid network IDs, from each source.
    write(
        dir.path(),
        "compose.yaml",
        &format!("services:\n  web:\n    image: {IMAGE}\n"),
    );
    for bad in ["2817", "abc", "100"] {
        let err = fails(renet(dir.path()).args([
            "compose",
            "--network-id",
            bad,
            "--dry-run",
            "--",
            "up",
        ]));
        assert!(
            err.contains("invalid network ID") && err.contains(bad),
            "{err}"
        );
    }
    let err = fails(renet(dir.path()).env("REDIACC_NETWORK_ID", "2900").args([
        "compose",
        "--dry-run",
        "--",
        "up",
    ]));
    assert!(
        err.contains("REDIACC_NETWORK_ID") && err.contains("2900"),
        "{err}"
    );
    let err = fails(renet(dir.path()).args(["compose", "--dry-run", "--", "up"]));
    assert!(
        err.contains("no network ID") && err.contains("--network-id"),
        "{err}"
    );
    assert!(!dir.path().join(".rediacc.json").exists());

    // A 62nd service.
    let mut text = String::from("services:\n");
    for i in 0..62 {
        text.push_str(&format!("  s{i}:\n    image: {IMAGE}\n"));
    }
    write(dir.path(), "compose.yaml", &text);
    let err = fails(&mut compose(dir.path(), &["--dry-run"], &["up"]));
    assert!(
        err.contains("at most 61 services") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!dir.path().join(".rediacc.json").exists());

    // A corrupt .rediacc.json is kept as it is.
    write(
        dir.path(),
        "compose.yaml",
        &format!("services:\n  web:\n    image: {IMAGE}\n"),
    );
    write(dir.path(), ".rediacc.json", "{\"services\": {\"web\": ");
    let err = fails(&mut compose(dir.path(), &["--dry-run"], &["up"]));
    assert!(
        err.contains(".rediacc.json") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".rediacc.json")).unwrap(),
        "{\"services\": {\"web\": "
    );

    // Colliding variable names.
    write(
        dir.path(),
        "compose.yaml",
        &format!(
            "services:\n  db-primary:\n    image: {IMAGE}\n  db.primary:\n    image: {IMAGE}\n"
        ),
    );
    std::fs::remove_file(dir.path().join(".rediacc.json")).unwrap();
    let err = fails(&mut compose(dir.path(), &["--dry-run"], &["up"]));
    assert!(err.contains("DB_PRIMARY_IP"), "{err}");
    assert!(!dir.path().join(".rediacc.json").exists());
}

#[test]
fn docker_host_of_another_network_is_refused() {
    let dir = fixture_copy("compose/e2e-httpd");
    let err = fails(
        renet(dir.path())
            .env("DOCKER_HOST", "unix:///var/run/rediacc/docker-2880.sock")
            .args(["compose", "--network-id", "2816", "--", "up", "-d"]),
    );
    assert!(
        err.contains("network 2880") && err.contains("another repo"),
        "{err}"
    );
    // DOCKER_HOST alone gives the network ID.
    let out = ok(renet(dir.path())
        .env("DOCKER_HOST", "unix:///var/run/rediacc/docker-2880.sock")
        .args(["compose", "--dry-run", "--", "config"]));
    assert!(out.contains("\"rediacc.network_id\": \"2880\""), "{out}");
    assert!(out.contains("127.0.11.66"), "{out}");
}

/// Many `renet compose --dry-run` processes at once against one repo, each for its own compose
/// project in a subfolder: no slot is handed out twice and the file is always readable.
#[test]
fn concurrent_runs_never_share_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Rediaccfile", "up() { :; }\n");
    let projects = 12;
    for p in 0..projects {
        let mut text = String::from("services:\n");
        for s in 0..5 {
            text.push_str(&format!("  p{p}-s{s}:\n    image: {IMAGE}\n"));
        }
        write(dir.path(), &format!("proj{p}/compose.yaml"), &text);
    }
    let children: Vec<_> = (0..projects)
        .map(|p| {
            compose(
                &dir.path().join(format!("proj{p}")),
                &["--dry-run"],
                &["up", "-d"],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(".rediacc.json")).unwrap())
            .unwrap();
    let services = doc["services"].as_object().unwrap();
    assert_eq!(services.len(), projects * 5);
    let mut slots: Vec<u64> = services
        .values()
        .map(|s| s["slot"].as_u64().unwrap())
        .collect();
    slots.sort();
    assert_eq!(
        slots,
        (0..(projects * 5) as u64).collect::<Vec<_>>(),
        "slots must be unique and dense"
    );
}

/// A process killed at any moment leaves the old or the new file, never a torn one.
#[test]
fn killed_runs_leave_old_or_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut previous: usize = 0;
    for i in 0..40u64 {
        // Each round adds one service; kill after a varying delay.
        let mut text = String::from("services:\n");
        for s in 0..=i.min(59) {
            text.push_str(&format!("  s{s}:\n    image: {IMAGE}\n"));
        }
        write(dir.path(), "compose.yaml", &text);
        let mut child = compose(dir.path(), &["--dry-run"], &["up"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros((i * 397) % 4000));
        let _ = child.kill();
        let _ = child.wait();
        let path = dir.path().join(".rediacc.json");
        if !path.exists() {
            assert_eq!(previous, 0, "round {i}: file vanished");
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("round {i}: torn file ({e}): {text:?}"));
        let n = doc["services"].as_object().unwrap().len();
        assert!(
            n == previous || n == (i as usize + 1).min(60),
            "round {i}: {n} services, before {previous}"
        );
        previous = n;
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    // A killed writer may leave its temp file; it is never mistaken for the real one.
    assert!(
        leftovers
            .iter()
            .all(|n| n.starts_with(".rediacc.json.tmp-")),
        "{leftovers:?}"
    );
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn http_get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

#[test]
fn up_and_down_on_the_real_repo_daemon() {
    require_daemon(2816);
    require_daemon(2880);
    let dir = fixture_copy("compose/e2e-httpd");
    let project = format!("e2e{}", std::process::id());
    /// Takes the project down even when an assertion fails half-way.
    struct Down<'a>(&'a Path, &'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = compose(self.0, &[], &["-p", self.1, "down", "-t", "1"]).output();
        }
    }
    let _down = Down(dir.path(), &project);
    ok(&mut compose(dir.path(), &[], &["-p", &project, "up", "-d"]));
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = ok(docker(2816).args(["ps", "-q", "--filter", &filter]));
    assert_eq!(
        ids.lines().count(),
        1,
        "one running container on the repo daemon"
    );
    let other = ok(docker(2880).args(["ps", "-aq", "--filter", &filter]));
    assert!(other.trim().is_empty(), "nothing on another daemon");
    let labels =
        ok(docker(2816).args(["inspect", "--format", "{{json .Config.Labels}}", ids.trim()]));
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["rediacc.service_name"], "web");
    assert_eq!(labels["rediacc.service_ip"], "127.0.11.2");
    assert_eq!(labels["rediacc.network_id"], "2816");
    let mode = ok(docker(2816).args([
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}}",
        ids.trim(),
    ]));
    assert_eq!(mode.trim(), "host");
    let env = ok(docker(2816).args(["inspect", "--format", "{{json .Config.Env}}", ids.trim()]));
    assert!(
        env.contains("SERVICE_IP=127.0.11.2") && env.contains("REDIACC_NETWORK_ID=2816"),
        "{env}"
    );
    let hosts = ok(docker(2816).args(["exec", ids.trim(), "cat", "/etc/hosts"]));
    assert!(
        hosts.contains("127.0.11.2") && hosts.contains("web"),
        "{hosts}"
    );
    let mut answer = None;
    wait_for("httpd on 127.0.11.2:8080", Duration::from_secs(15), || {
        answer = http_get("127.0.11.2:8080");
        answer.is_some()
    });
    let answer = answer.unwrap();
    assert!(
        answer.contains("200 OK") && answer.contains("hello from renet-test"),
        "{answer}"
    );

    ok(&mut compose(dir.path(), &[], &["-p", &project, "down"]));
    let left = ok(docker(2816).args(["ps", "-aq", "--filter", &filter]));
    assert!(left.trim().is_empty(), "down removes the container");
    assert!(
        http_get("127.0.11.2:8080").is_none(),
        "nothing answers after down"
    );
}

#[test]
fn exit_status_of_compose_is_passed_through() {
    let dir = fixture_copy("compose/e2e-httpd");
    let out = run(&mut compose(dir.path(), &[], &["no-such-subcommand"]));
    assert!(!out.status.success());
    let plain = run(docker(2816)
        .current_dir(dir.path())
        .args(["compose", "no-such-subcommand"]));
    assert_eq!(
        out.status.code(),
        plain.status.code(),
        "same exit status as plain compose"
    );
}

/// `renet compose -- config` hands the vetted model to a compose it started ahead of time
/// (through a pipe): what it prints must be exactly what compose prints for the model file
/// renet writes, in every format, on the first run (new slots: the ordinary path) and later
/// ones; compose's own errors and exit status come through; a refused project prints nothing.
#[test]
fn config_prints_what_compose_prints_for_the_vetted_model() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    let project = dir.path().join("p");
    write(
        &project,
        "compose.yaml",
        &format!(
            "name: cfg{pid}\nservices:\n  web:\n    image: {IMAGE}\n    command: [httpd, -f, -p, '${{WEB_IP}}:8080']\n    environment:\n      PEER: ${{DB_IP}}\n      TEXT: a$$b\n    ports: ['8080:80']\n  db:\n    image: {IMAGE}\n    command: [sleep, '60']\n",
            pid = std::process::id()
        ),
    );
    let config = |args: &[&str]| {
        let mut c = compose(&project, &[], args);
        c.env("RENET_RUNTIME_DIR", &runtime);
        c
    };
    let first = ok(&mut config(&["config"]));
    let model = std::fs::read_dir(&runtime)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".compose.json"))
        .expect("the model file");
    let plain = |args: &[&str]| {
        ok(std::process::Command::new("docker")
            .arg("compose")
            .arg("--project-directory")
            .arg(&project)
            .arg("-f")
            .arg(&model)
            .args(args)
            .env("WEB_IP", "127.0.11.2")
            .env("DB_IP", "127.0.11.3"))
    };
    assert_eq!(first, plain(&["config"]));
    assert!(first.contains("network_mode: host"), "{first}");
    for args in [
        &["config"][..],
        &["config", "--format", "json"],
        &["config", "--images"],
        &["config", "--volumes"],
        &["config", "--hash", "*"],
    ] {
        assert_eq!(ok(&mut config(args)), plain(args), "{args:?}");
    }
    let quiet = run(&mut config(&["config", "-q"]));
    assert!(quiet.status.success() && quiet.stdout.is_empty());

    let bad = run(&mut config(&["config", "--no-such-flag"]));
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown flag: --no-such-flag"),
        "{bad:?}"
    );

    write(
        &project,
        "compose.yaml",
        &format!("services:\n  web:\n    image: {IMAGE}\n    privileged: true\n"),
    );
    let refused = run(&mut config(&["config"]));
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`privileged: true`"));
}
