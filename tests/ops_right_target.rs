//! "Right target, always" (issue "Operations", part 1), through the real binary and real
//! daemons:
//! - `renet repo up DIR --socket-dir X` with a decoy daemon of the same number in the folder
//!   the nested `renet compose` would otherwise fall back to: the services run on X's daemon;
//! - `renet compose` run by hand in a subfolder holding a Rediaccfile uses the root's slots
//!   and writes no second `.rediacc.json`;
//! - a second root claiming a used network ID is refused, naming both folders.
//!
//! Network 3520 only (in private socket folders); holds the ops tests' lock.

mod route_server_support;

use std::path::Path;
use std::process::Command;

use route_server_support::*;

/// `renet` in `cwd` with none of the variables renet reads inherited from the test runner,
/// and `data` as the data folder (where the repository binding is recorded).
fn renet(cwd: &Path, data: &Path) -> Command {
    let mut c = renet_in(cwd);
    c.env("RENET_DATA_DIR", data);
    c
}

/// A repository: the root runs `db`, the subfolder `api` (its own Rediaccfile) runs `api`.
fn write_repo(root: &Path) {
    std::fs::create_dir_all(root.join("api")).unwrap();
    std::fs::write(
        root.join("compose.yaml"),
        format!(
            "services:\n  db:\n    image: {IMAGE}\n    command: [sleep, '1000']\n    init: true\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("Rediaccfile"),
        "up() { renet compose -- up -d; }\ndown() { renet compose -- down; }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("api/compose.yaml"),
        format!(
            "services:\n  api:\n    image: {IMAGE}\n    command: [sleep, '1000']\n    init: true\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("api/Rediaccfile"),
        "up() { renet compose -- up -d; }\ndown() { renet compose -- down; }\n",
    )
    .unwrap();
}

#[test]
fn repo_up_runs_on_the_given_socket_folder_not_on_a_decoy() {
    let _lock = ops_lock();
    let real = Sandbox::new();
    let decoy = Sandbox::new();
    let d = Daemon::start(&real, 3520);
    let decoy_daemon = Daemon::start(&decoy, 3520);
    let repo = tempfile::tempdir().unwrap();
    write_repo(repo.path());

    // The decoy's folder is what a nested command would fall back to (the environment's
    // socket folder); `repo up` is told X explicitly.
    let out = renet(repo.path(), real.data.path())
        .env("RENET_SOCKET_DIR", decoy.sockets.path())
        .args(["repo", "up"])
        .arg(repo.path())
        .args(["--network-id", "3520", "--socket-dir"])
        .arg(real.sockets.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));

    let on_real = d.docker_ok(&[
        "ps",
        "--format",
        "{{.Label \"com.docker.compose.service\"}}",
    ]);
    let mut services: Vec<&str> = on_real.lines().collect();
    services.sort();
    assert_eq!(
        services,
        vec!["api", "db"],
        "both projects run on X's daemon"
    );
    let on_decoy = decoy_daemon.docker_ok(&["ps", "-aq"]);
    assert!(
        on_decoy.is_empty(),
        "nothing lands on the decoy: {on_decoy}"
    );

    let out = renet(repo.path(), real.data.path())
        .args(["repo", "down"])
        .arg(repo.path())
        .args(["--network-id", "3520", "--socket-dir"])
        .arg(real.sockets.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(d.docker_ok(&["ps", "-q"]).is_empty());
}

#[test]
fn a_subfolder_uses_the_roots_slots_and_another_root_is_refused() {
    let _lock = ops_lock();
    let data = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    write_repo(repo.path());
    let root = repo.path().canonicalize().unwrap();

    // At the root first: `renet compose` binds 3520 to it and gives `db` its slot (`config`
    // needs no daemon).
    let out = renet(repo.path(), data.path())
        .args(["compose", "--network-id", "3520", "--socket-dir"])
        .arg(sockets.path())
        .args(["--", "config", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let record = data.path().join("docker-3520/repository.json");
    let binding: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(binding["root"], root.display().to_string());

    // By hand, in the subfolder that holds its own Rediaccfile.
    let out = renet(&repo.path().join("api"), data.path())
        .args(["compose", "--network-id", "3520", "--socket-dir"])
        .arg(sockets.path())
        .args(["--", "config", "-q"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("using the root"), "{}", output_text(&out));
    assert!(
        !repo.path().join("api/.rediacc.json").exists(),
        "no second slot table in the subfolder"
    );
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.path().join(".rediacc.json")).unwrap())
            .unwrap();
    let (db, api) = (
        table["services"]["db"]["slot"].as_u64().unwrap(),
        table["services"]["api"]["slot"].as_u64().unwrap(),
    );
    assert_ne!(db, api, "api has its own slot, not postgres's");
    let ips = renet(&repo.path().join("api"), data.path())
        .args(["ips", "--json", "--network-id", "3520"])
        .output()
        .unwrap();
    let ips: serde_json::Value = serde_json::from_slice(&ips.stdout).unwrap();
    assert_eq!(ips["repo_root"], root.display().to_string(), "{ips:#}");

    // A second root claiming 3520.
    let other = tempfile::tempdir().unwrap();
    write_repo(other.path());
    let other_root = other.path().canonicalize().unwrap();
    for args in [
        vec!["compose", "--network-id", "3520", "--", "config", "-q"],
        vec!["ips", "--network-id", "3520"],
    ] {
        let out = renet(other.path(), data.path())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must be refused");
        assert!(
            err.contains(&root.display().to_string())
                && err.contains(&other_root.display().to_string())
                && err.contains("renet repo unbind"),
            "{args:?}: {err}"
        );
    }
    let out = renet(other.path(), data.path())
        .args(["daemon", "start", "--network-id", "3520", "--socket-dir"])
        .arg(sockets.path())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--repo-root")
        .arg(other.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "daemon start for another root is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("one network ID serves one repository"));
    assert!(
        !sockets.path().join("docker-3520.sock").exists(),
        "no daemon was started"
    );
    let out = renet(other.path(), data.path())
        .args(["repo", "up"])
        .arg(other.path())
        .args(["--network-id", "3520", "--socket-dir"])
        .arg(sockets.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !other.path().join(".rediacc.json").exists(),
        "nothing written"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("one network ID serves one repository"));
}
