//! CLI conventions (issue "Operations", part 4), through the real binary and real bash:
//! closed pipes end commands quietly (100 runs each), bash loads the generated completion and
//! completes subcommands, the man page renders, `version` and `--version` agree, a missing
//! `--` gets a hint, `--log-format json` writes JSON lines, `NO_COLOR` turns colours off on a
//! terminal.

use std::process::{Command, Stdio};

const RENET: &str = env!("CARGO_BIN_EXE_renet");

fn bash(script: &str) -> std::process::Output {
    Command::new("bash")
        .args(["-c", script])
        .env("RENET", RENET)
        .env_remove("REDIACC_NETWORK_ID")
        .env_remove("DOCKER_HOST")
        .env(
            "RENET_DATA_DIR",
            std::env::temp_dir().join("renet-ops-cli-data"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn closed_pipes_end_every_listing_quietly() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join(".rediacc.json"),
        r#"{"services": {"a": {"slot": 0}, "b": {"slot": 1}}}"#,
    )
    .unwrap();
    let script = format!(
        r#"cd '{}'
for i in $(seq 100); do
  "$RENET" ips --network-id 2816 | head -0
  "$RENET" ips --json --network-id 2816 | true
  "$RENET" completions bash | head -c 10 >/dev/null
  "$RENET" man | head -0
  "$RENET" version | head -0
done 2>errors.txt
cat errors.txt"#,
        repo.path().display()
    );
    let out = bash(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.trim().is_empty(),
        "nothing on stderr in 500 runs (no panic, no broken pipe message):\n{stdout}"
    );
}

#[test]
fn bash_loads_the_completion_and_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("renet.bash");
    let out = Command::new(RENET)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&file, &out.stdout).unwrap();
    let script = format!(
        r#"set -e
source '{}'
complete -p renet
COMP_WORDS=(renet ro)
COMP_CWORD=1
COMP_LINE='renet ro'
COMP_POINT=${{#COMP_LINE}}
_renet renet ro renet
printf '%s\n' "${{COMPREPLY[@]}}""#,
        file.display()
    );
    let out = bash(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("complete ") && stdout.contains("-F _renet renet"),
        "{stdout}"
    );
    let words: Vec<&str> = stdout.lines().skip(1).collect();
    assert!(
        words.contains(&"routes"),
        "`renet ro<TAB>` offers routes: {words:?}"
    );
    assert!(words.contains(&"route-server"), "{words:?}");
    assert!(!words.contains(&"compose"), "{words:?}");
}

#[test]
fn man_page_version_and_the_missing_separator_hint() {
    let out = Command::new(RENET).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH renet"),
        "{page}"
    );
    assert!(page.contains("completions") && page.contains("routes"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(RENET)
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("renet-compose.1").is_file());

    let v1 = Command::new(RENET).arg("version").output().unwrap();
    let v2 = Command::new(RENET).arg("--version").output().unwrap();
    assert_eq!(v1.stdout, v2.stdout);
    assert_eq!(
        String::from_utf8_lossy(&v1.stdout).trim(),
        format!("renet {}", env!("CARGO_PKG_VERSION"))
    );

    let out = Command::new(RENET)
        .args(["compose", "--network-id", "2816", "up", "-d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "hint: docker compose's arguments go after `--`: renet compose [FLAGS] -- up -d"
        ),
        "{err}"
    );
}

#[test]
fn json_logs_and_no_color() {
    // `renet route-server` logs at info on start; a bad listen address ends it at once.
    let sockets = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(RENET)
        .args([
            "--log-format",
            "json",
            "route-server",
            "--settings",
            "/nonexistent.json",
        ])
        .args(["--listen", "127.0.0.1:0", "--socket-dir"])
        .arg(sockets.path())
        .arg("--state-dir")
        .arg(state.path())
        .env("RENET_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_else(|| panic!("no log line"));
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["level"], "INFO", "{v}");
    assert!(v["fields"]["message"].is_string(), "{v}");

    // On a terminal (script(1) gives one), logs are coloured unless NO_COLOR is set.
    let run = |no_color: bool| {
        let cmd = format!(
            "timeout 2 {RENET} route-server --settings /nonexistent.json --listen 127.0.0.1:0 \
             --socket-dir {} --state-dir {} 2>&1; true",
            sockets.path().display(),
            state.path().display()
        );
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]).env("RENET_LOG", "info");
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        String::from_utf8_lossy(&c.output().expect("script (util-linux)").stdout).to_string()
    };
    let coloured = run(false);
    assert!(
        coloured.contains("serving on") && coloured.contains('\u{1b}'),
        "a terminal gets colours: {coloured:?}"
    );
    let plain = run(true);
    assert!(plain.contains("serving on"), "{plain:?}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
}
