//! Shared helpers of the integration tests: the renet binary, fixture copies, the repo
//! daemons started by `scripts/test-env.sh`, and running commands with clear failure output.
#![allow(dead_code)]

pub mod free_ports;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RENET: &str = env!("CARGO_BIN_EXE_renet");
pub const SOCKET_DIR: &str = "/var/run/rediacc";
pub const IMAGE: &str = "renet-test/busybox:latest";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies `fixtures/<rel>` into a fresh temp folder (hidden files included) and returns it.
pub fn fixture_copy(rel: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("fixtures").join(rel), dir.path());
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// `renet` with a clean environment for the variables renet reads.
pub fn renet(cwd: &Path) -> Command {
    let mut c = Command::new(RENET);
    c.current_dir(cwd);
    for v in [
        "REDIACC_NETWORK_ID",
        "REDIACC_WORKING_DIR",
        "DOCKER_HOST",
        "COMPOSE_FILE",
        "DOCKER_CONTEXT",
    ] {
        c.env_remove(v);
    }
    c.env(
        "RENET_RUNTIME_DIR",
        std::env::temp_dir().join("renet-test-overrides"),
    );
    // renet binds each network ID to one repository root (recorded in the data folder). The
    // shared test daemons serve many throwaway roots at once, so each working folder gets a
    // registry of its own; the binding itself is tested in tests/ops_right_target.rs.
    c.env("RENET_DATA_DIR", test_data_dir(cwd));
    c
}

/// `<tmp>/renet-test-data/<cwd with / replaced>`: one repository registry per working folder.
pub fn test_data_dir(cwd: &Path) -> PathBuf {
    let key: String = cwd
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join("renet-test-data").join(key)
}

pub fn docker(network: u32) -> Command {
    let mut c = Command::new("docker");
    c.env(
        "DOCKER_HOST",
        format!("unix://{SOCKET_DIR}/docker-{network}.sock"),
    );
    c.env_remove("DOCKER_CONTEXT");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs and insists on success, showing stdout/stderr otherwise.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and insists on failure; returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Panics with a hint when the test environment is not up (CI runs scripts/test-env.sh first).
pub fn require_daemon(network: u32) {
    let sock = format!("{SOCKET_DIR}/docker-{network}.sock");
    let out = docker(network)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    assert!(
        matches!(&out, Ok(o) if o.status.success()),
        "repo daemon {sock} is not answering: run `bash scripts/test-env.sh up` first"
    );
}
