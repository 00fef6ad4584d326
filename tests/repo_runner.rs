//! `renet repo up|down|info` on the fixture repository `fixtures/rediaccfiles/repo` (see its
//! README): order, fail-fast rules, skipped functions and folders, the variables functions
//! see, the summary and the exit codes. Each test works on its own temp copy, and none needs
//! a Docker daemon (network 3136, whose socket does not exist).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/rediaccfiles/repo");

/// A temp copy of the fixture, at `<tmp>/myrepo`.
struct Repo {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("myrepo");
        copy_dir(Path::new(FIXTURE), &root);
        Repo { _tmp: tmp, root }
    }

    /// `renet repo <action> <root> --network-id 3136`, with `FAIL` set when given.
    fn run(&self, action: &str, fail: Option<&str>) -> Output {
        let mut cmd = self.command(action);
        cmd.arg("--network-id").arg("3136");
        if let Some(f) = fail {
            cmd.env("FAIL", f);
        }
        cmd.output().unwrap()
    }

    /// The command with a clean environment for network ID resolution.
    fn command(&self, action: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_renet"));
        cmd.args(["repo", action])
            .arg(&self.root)
            .arg("--socket-dir")
            .arg(self._tmp.path().join("sockets"))
            .env_remove("REDIACC_NETWORK_ID")
            .env_remove("DOCKER_HOST")
            .env_remove("FAIL")
            .env_remove("RENET_SOCKET_DIR")
            // Every test repository here uses network 3136: each gets its own registry of
            // repository roots (`renet repo` binds a network ID to one root).
            .env("RENET_DATA_DIR", self._tmp.path().join("data"));
        cmd
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("run.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn vars(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.root.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The summary line of one step, e.g. `up    alpha/Rediaccfile  ok`.
fn summary_line(out: &Output, function: &str, label: &str) -> String {
    let err = stderr(out);
    err.lines()
        .find(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(function) && words.next() == Some(label)
        })
        .unwrap_or_else(|| panic!("no summary line for {function} {label}:\n{err}"))
        .to_string()
}

#[test]
fn up_runs_every_prep_then_every_up_root_first_then_a_to_z() {
    let repo = Repo::new();
    let out = repo.run("up", None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        repo.log(),
        lines(&[
            "prep root",
            "prep alpha",
            "prep gamma",
            "up root",
            "up alpha",
            "up beta",
            "up gamma",
        ])
    );
    // beta has no `prep`: skipped and said so; the hidden folder and docs/ are not listed.
    assert!(summary_line(&out, "prep", "beta/rediaccfile").contains("skipped"));
    assert!(summary_line(&out, "up", "gamma/Rediaccfile").ends_with("ok"));
    let err = stderr(&out);
    assert!(!err.contains(".hidden") && !err.contains("docs"), "{err}");
    assert!(
        err.contains("7 ran, 1 skipped, 0 failed, 0 not run"),
        "{err}"
    );
}

#[test]
fn slots_are_given_for_every_project_before_anything_runs() {
    let repo = Repo::new();
    let out = repo.run("up", None);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.root.join(".rediacc.json")).unwrap())
            .unwrap();
    // Root first, then the subfolders A→Z, each in file order, override included.
    for (service, slot) in [
        ("web", 0),
        ("db", 1),
        ("api", 2),
        ("worker", 3),
        ("cache", 4),
    ] {
        assert_eq!(doc["services"][service]["slot"], slot, "{doc}");
    }
}

#[test]
fn functions_see_the_repo_variables() {
    let repo = Repo::new();
    let out = repo.run("up", None);
    assert!(out.status.success(), "{}", stderr(&out));
    let root = repo.root.canonicalize().unwrap();
    let root = root.display();
    let socket = repo
        ._tmp
        .path()
        .join("sockets/docker-3136.sock")
        .display()
        .to_string();
    // 3136 → block 127.0.12.64/26; slot n → .66 + n. Every service of the repo, also those of
    // other projects (`API_IP` in the root, `WEB_IP` in alpha).
    let expected_common = [
        "API_IP=127.0.12.68".to_string(),
        "CACHE_IP=127.0.12.70".to_string(),
        "DB_IP=127.0.12.67".to_string(),
        format!("DOCKER_HOST=unix://{socket}"),
        "REDIACC_NETWORK_ID=3136".to_string(),
        "REDIACC_REPOSITORY=myrepo".to_string(),
        format!("REDIACC_WORKING_DIR={root}"),
        "REPOSITORY_NAME=myrepo".to_string(),
        "REPOSITORY_NETWORK_ID=3136".to_string(),
        format!("REPOSITORY_PATH={root}"),
        "WEB_IP=127.0.12.66".to_string(),
        "WORKER_IP=127.0.12.69".to_string(),
    ];
    let mut want_root = vec![
        format!("PWD={root}"),
        format!("RENET={}", env!("CARGO_BIN_EXE_renet")),
    ];
    want_root.extend(expected_common.iter().cloned());
    assert_eq!(repo.vars("vars-root.env"), want_root);

    let mut want_alpha = vec![format!("PWD={root}/alpha")];
    want_alpha.extend(expected_common.iter().cloned());
    assert_eq!(repo.vars("vars-alpha.env"), want_alpha);
}

#[test]
fn docker_context_is_cleared_for_functions() {
    let repo = Repo::new();
    let out = repo
        .command("up")
        .arg("--network-id")
        .arg("3136")
        .env("DOCKER_CONTEXT", "elsewhere")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !repo
            .vars("vars-root.env")
            .iter()
            .any(|l| l.starts_with("DOCKER_CONTEXT"))
    );
}

#[test]
fn a_failed_prep_stops_everything() {
    let repo = Repo::new();
    let out = repo.run("up", Some("prep:alpha"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(repo.log(), lines(&["prep root", "prep alpha"]));
    assert!(summary_line(&out, "prep", "alpha/Rediaccfile").contains("FAILED (exit code 7)"));
    let not_run = summary_line(&out, "prep", "gamma/Rediaccfile");
    assert!(
        not_run.contains("not run") && not_run.contains("`prep` of alpha/Rediaccfile failed"),
        "{not_run}"
    );
    assert!(summary_line(&out, "up", "Rediaccfile").contains("not run"));
    assert!(stderr(&out).contains("1 failed"));
}

#[test]
fn a_failed_root_up_stops_everything() {
    let repo = Repo::new();
    let out = repo.run("up", Some("up:root"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        repo.log(),
        lines(&["prep root", "prep alpha", "prep gamma", "up root"])
    );
    assert!(summary_line(&out, "up", "Rediaccfile").contains("FAILED (exit code 7)"));
    for label in ["alpha/Rediaccfile", "beta/rediaccfile", "gamma/Rediaccfile"] {
        assert!(summary_line(&out, "up", label).contains("not run"));
    }
}

#[test]
fn a_failed_subfolder_up_is_reported_and_the_rest_run() {
    let repo = Repo::new();
    let out = repo.run("up", Some("up:alpha"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        repo.log(),
        lines(&[
            "prep root",
            "prep alpha",
            "prep gamma",
            "up root",
            "up alpha",
            "up beta",
            "up gamma",
        ])
    );
    assert!(summary_line(&out, "up", "alpha/Rediaccfile").contains("FAILED (exit code 7)"));
    assert!(summary_line(&out, "up", "beta/rediaccfile").ends_with("ok"));
    assert!(stderr(&out).contains("6 ran, 1 skipped, 1 failed, 0 not run"));
}

#[test]
fn down_runs_subfolders_z_to_a_then_the_root() {
    let repo = Repo::new();
    let out = repo.run("down", None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        repo.log(),
        lines(&["down gamma", "down beta", "down alpha", "down root"])
    );
    // down reads slots but never writes them.
    assert!(!repo.root.join(".rediacc.json").exists());
}

#[test]
fn down_tries_every_one_even_after_failures() {
    let repo = Repo::new();
    let out = repo.run("down", Some("down:beta"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        repo.log(),
        lines(&["down gamma", "down beta", "down alpha", "down root"])
    );
    assert!(summary_line(&out, "down", "beta/rediaccfile").contains("FAILED (exit code 7)"));
    assert!(summary_line(&out, "down", "Rediaccfile").ends_with("ok"));
}

#[test]
fn info_runs_in_up_order_and_skips_missing_functions() {
    let repo = Repo::new();
    let out = repo.run("info", None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(repo.log(), lines(&["info root", "info alpha"]));
    assert!(summary_line(&out, "info", "beta/rediaccfile").contains("skipped"));
    assert!(summary_line(&out, "info", "gamma/Rediaccfile").contains("skipped"));
}

#[test]
fn both_spellings_in_one_folder_is_an_error_and_nothing_runs() {
    let repo = Repo::new();
    std::fs::copy(
        repo.root.join("alpha/Rediaccfile"),
        repo.root.join("alpha/rediaccfile"),
    )
    .unwrap();
    let out = repo.run("up", None);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("alpha") && err.contains("both `Rediaccfile` and `rediaccfile`"),
        "{err}"
    );
    assert!(repo.log().is_empty());
    assert!(!repo.root.join(".rediacc.json").exists());
}

#[test]
fn a_syntax_error_is_refused_before_anything_runs() {
    let repo = Repo::new();
    std::fs::write(repo.root.join("gamma/Rediaccfile"), "up() {\n  echo (\n").unwrap();
    let out = repo.run("up", None);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("gamma/Rediaccfile: syntax error"), "{err}");
    assert!(repo.log().is_empty());
}

#[test]
fn a_bad_compose_file_is_refused_before_anything_runs() {
    let repo = Repo::new();
    std::fs::write(repo.root.join("beta/compose.yml"), "services: [\n").unwrap();
    let out = repo.run("up", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("beta"), "{}", stderr(&out));
    assert!(repo.log().is_empty());
}

#[test]
fn no_rediaccfile_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_renet"))
        .args(["repo", "up"])
        .arg(tmp.path())
        .args(["--network-id", "3136"])
        .env("RENET_DATA_DIR", tmp.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no Rediaccfile"), "{}", stderr(&out));
}

#[test]
fn network_id_from_the_environment_or_docker_host() {
    let repo = Repo::new();
    let out = repo
        .command("up")
        .env("REDIACC_NETWORK_ID", "2880")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        repo.vars("vars-root.env")
            .contains(&"WEB_IP=127.0.11.66".to_string())
    );

    let repo = Repo::new();
    let out = repo
        .command("up")
        .env("DOCKER_HOST", "unix:///var/run/rediacc/docker-2944.sock")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        repo.vars("vars-root.env")
            .contains(&"REDIACC_NETWORK_ID=2944".to_string())
    );

    let repo = Repo::new();
    let out = repo.command("up").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--network-id"), "{}", stderr(&out));
    assert!(repo.log().is_empty());

    let out = repo
        .command("up")
        .args(["--network-id", "2817"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid network ID"),
        "{}",
        stderr(&out)
    );
}

/// The whole path with a real repo daemon (network 2816 from `scripts/test-env.sh`): `up` runs
/// `renet compose` inside the function, the service answers on its IP, `down` removes it.
/// The test environment must be up (`scripts/test.sh` starts it). A hand-written slot and a free port keep it clear of
/// other tests on the same daemon.
#[test]
fn up_and_down_with_a_real_daemon() {
    let socket = Path::new("/var/run/rediacc/docker-2816.sock");
    assert!(
        renet::host::daemons::ping(socket),
        "no repo daemon on {}: run `bash scripts/test-env.sh up` first",
        socket.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let project = format!("opse2e{}", std::process::id());
    let root = tmp.path().join("e2erepo");
    std::fs::create_dir_all(root.join(&project)).unwrap();
    std::fs::write(
        root.join(".rediacc.json"),
        r#"{"services": {"web": {"slot": 57}}}"#,
    )
    .unwrap();
    let ip = "127.0.11.59";
    let port = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        root.join(&project).join("compose.yaml"),
        format!(
            "services:\n  web:\n    image: renet-test/busybox:latest\n    command: [\"httpd\", \"-f\", \"-p\", \"${{WEB_IP}}:{port}\", \"-h\", \"/www\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join(&project).join("Rediaccfile"),
        "up() { renet compose -- up -d; }\ndown() { renet compose -- down; }\n",
    )
    .unwrap();
    let run = |action: &str| {
        Command::new(env!("CARGO_BIN_EXE_renet"))
            .args(["repo", action])
            .arg(&root)
            .args(["--network-id", "2816", "--socket-dir", "/var/run/rediacc"])
            .env("RENET_DATA_DIR", tmp.path().join("data"))
            .env_remove("DOCKER_HOST")
            .env_remove("REDIACC_NETWORK_ID")
            .output()
            .unwrap()
    };
    struct Down<'a>(&'a dyn Fn(&str) -> Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)("down");
        }
    }
    let _down = Down(&run);

    let out = run("up");
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect((ip, port)) {
            write!(s, "GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.contains("200") {
                break buf;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing answers on {ip}:{port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(body.contains("hello from renet-test"), "{body}");

    let out = run("down");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::net::TcpStream::connect((ip, port)).is_err());
}
