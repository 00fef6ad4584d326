//! Vetting through the real docker compose (spec §5): every refused setting is refused
//! whichever way it reaches compose's model — written out, or through `.env`,
//! `COMPOSE_ENV_FILES`, `--env-file`, `extends`, YAML anchors or `--project-directory` — and
//! nothing is written or run. `--unsafe` lets through what it should, never what belongs to
//! renet or another repository.
//!
//! `config` and refused runs touch no daemon: network 3264 has none.

mod common;

use std::path::Path;

use common::*;

const NETWORK: u32 = 3264;

/// A refused setting: service lines (4-space indent) and top-level lines using `${V}`.
struct Case {
    service: &'static str,
    top: &'static str,
    value: &'static str,
    expected: &'static str,
    /// Refused even with `--unsafe`.
    always: bool,
}

const CASES: &[Case] = &[
    Case {
        service: "    volumes: ['${V}:/x']\n",
        top: "",
        value: "/etc",
        expected: "bind mount of `/etc`",
        always: false,
    },
    Case {
        service: "    volumes: ['${V}:/x']\n",
        top: "",
        value: "/var/run",
        expected: "bind mount of `/var/run`",
        always: true,
    },
    Case {
        service: "    volumes: ['${V}:/x']\n",
        top: "",
        value: "/var/lib",
        expected: "bind mount of `/var/lib`",
        always: true,
    },
    Case {
        service: "    volumes: ['${V}:/x']\n",
        top: "",
        value: "/var/lib/rediacc/docker-2880",
        expected: "the data of network 2880",
        always: true,
    },
    Case {
        service: "    volumes: ['${V}:/x']\n",
        top: "",
        value: "/run/containerd/containerd.sock",
        expected: "containerd",
        always: true,
    },
    Case {
        service: "    volumes: ['${V}:/x']\n",
        top: "",
        value: "/run/renet",
        expected: "/run/renet",
        always: true,
    },
    Case {
        service: "    volumes: ['${V}:/x:ro']\n",
        top: "",
        value: "/var/run/rediacc/secrets",
        expected: "/var/run/rediacc/secrets",
        always: true,
    },
    Case {
        service: "    cap_add: ['${V}']\n",
        top: "",
        value: "NET_ADMIN",
        expected: "`cap_add: NET_ADMIN`",
        always: false,
    },
    Case {
        service: "    cap_add: ['${V}']\n",
        top: "",
        value: "SYS_MODULE",
        expected: "`cap_add: SYS_MODULE`",
        always: false,
    },
    Case {
        service: "    cap_add: ['${V}']\n",
        top: "",
        value: "DAC_READ_SEARCH",
        expected: "`cap_add: DAC_READ_SEARCH`",
        always: false,
    },
    Case {
        service: "    devices: ['${V}:/dev/xda']\n",
        top: "",
        value: "/dev/sda",
        expected: "`devices`",
        always: false,
    },
    Case {
        service: "    device_cgroup_rules: ['${V}']\n",
        top: "",
        value: "b *:* rwm",
        expected: "`device_cgroup_rules`",
        always: false,
    },
    Case {
        service: "    security_opt: ['${V}']\n",
        top: "",
        value: "seccomp=unconfined",
        expected: "seccomp=unconfined",
        always: false,
    },
    Case {
        service: "    privileged: ${V}\n",
        top: "",
        value: "true",
        expected: "`privileged: true`",
        always: false,
    },
    Case {
        service: "    pid: ${V}\n",
        top: "",
        value: "host",
        expected: "`pid: host`",
        always: false,
    },
    Case {
        service: "    volumes: ['vol:/x']\n",
        top: "volumes:\n  vol:\n    driver_opts: {type: none, o: bind, device: '${V}'}\n",
        value: "/etc",
        expected: "a bind of `/etc` through `driver_opts`",
        always: false,
    },
    Case {
        service: "    secrets: [s]\n",
        top: "secrets:\n  s:\n    file: '${V}'\n",
        value: "/etc/shadow",
        expected: "file `/etc/shadow`",
        always: false,
    },
    Case {
        service: "    configs: [c]\n",
        top: "configs:\n  c:\n    file: '${V}'\n",
        value: "/etc/passwd",
        expected: "file `/etc/passwd`",
        always: false,
    },
    Case {
        service: "    build: {context: '${V}'}\n",
        top: "",
        value: "/",
        expected: "`build.context` `/`",
        always: true,
    },
];

/// How the value reaches compose.
#[derive(Debug, Clone, Copy)]
enum Route {
    Literal,
    DotEnv,
    ComposeEnvFiles,
    EnvFileFlag,
    Extends,
    Anchor,
    ProjectDirectory,
}

const ROUTES: &[Route] = &[
    Route::Literal,
    Route::DotEnv,
    Route::ComposeEnvFiles,
    Route::EnvFileFlag,
    Route::Extends,
    Route::Anchor,
    Route::ProjectDirectory,
];

struct Setup {
    repo: tempfile::TempDir,
    runtime: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn setup(case: &Case, route: Route) -> Setup {
    let repo = tempfile::tempdir().unwrap();
    let literal = |s: &str| s.replace("${V}", case.value);
    let head = format!("services:\n  a:\n    image: {IMAGE}\n");
    let write = |rel: &str, text: &str| {
        let p = repo.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let mut args = Vec::new();
    let mut env = Vec::new();
    let with_var = format!("{head}{}{}", case.service, case.top);
    match route {
        Route::Literal => write(
            "compose.yml",
            &format!("{head}{}{}", literal(case.service), literal(case.top)),
        ),
        Route::DotEnv => {
            write("compose.yml", &with_var);
            write(".env", &format!("V={}\n", case.value));
        }
        Route::ComposeEnvFiles => {
            write("compose.yml", &with_var);
            write("vars.env", &format!("V={}\n", case.value));
            env.push(("COMPOSE_ENV_FILES".into(), "vars.env".into()));
        }
        Route::EnvFileFlag => {
            write("compose.yml", &with_var);
            write("conf/vars.env", &format!("V={}\n", case.value));
            args.extend(["--env-file".to_string(), "conf/vars.env".into()]);
        }
        Route::Extends => {
            write(
                "common/base.yml",
                &format!(
                    "services:\n  base:\n    image: {IMAGE}\n{}",
                    literal(case.service)
                ),
            );
            write(
                "compose.yml",
                &format!(
                    "services:\n  a:\n    extends: {{file: common/base.yml, service: base}}\n{}",
                    literal(case.top)
                ),
            );
        }
        Route::Anchor => {
            let body: String = literal(case.service)
                .lines()
                .map(|l| format!("  {}\n", l.trim_start()))
                .collect();
            write(
                "compose.yml",
                &format!(
                    "x-bad: &bad\n{body}services:\n  a:\n    <<: *bad\n    image: {IMAGE}\n{}",
                    literal(case.top)
                ),
            );
        }
        Route::ProjectDirectory => {
            write("compose.yml", &with_var);
            write("app/.env", &format!("V={}\n", case.value));
            args.extend([
                "-f".to_string(),
                "compose.yml".into(),
                "--project-directory".into(),
                "app".into(),
            ]);
        }
    }
    Setup {
        repo,
        runtime: tempfile::tempdir().unwrap(),
        args,
        env,
    }
}

fn run_renet(s: &Setup, flags: &[&str], sub: &[&str]) -> std::process::Output {
    let mut cmd = renet(s.repo.path());
    cmd.env("RENET_RUNTIME_DIR", s.runtime.path())
        .env_remove("COMPOSE_ENV_FILES")
        .args(["compose", "--network-id", &NETWORK.to_string()])
        .args(flags)
        .arg("--")
        .args(&s.args)
        .args(sub);
    for (k, v) in &s.env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

fn assert_nothing_written(s: &Setup, what: &str) {
    assert!(
        !s.repo.path().join(".rediacc.json").exists(),
        "{what}: .rediacc.json written"
    );
    assert!(
        is_empty_dir(s.runtime.path()),
        "{what}: runtime files written (compose could have run)"
    );
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn every_refused_setting_through_every_route() {
    for case in CASES {
        for &route in ROUTES {
            let what = format!("{} via {route:?}", case.expected);
            let s = setup(case, route);
            let out = run_renet(&s, &[], &["up", "-d"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what}: accepted\n{err}");
            assert!(err.contains(case.expected), "{what}: {err}");
            assert!(err.contains("service `"), "{what}: {err}");
            assert!(
                err.contains("--unsafe") && err.contains("nothing was run"),
                "{what}: {err}"
            );
            assert!(
                !err.contains("Cannot connect") && !err.contains("docker daemon"),
                "{what}: compose ran: {err}"
            );
            assert_nothing_written(&s, &what);
        }
    }
}

#[test]
fn unsafe_lets_through_what_it_should_and_nothing_of_renet_or_other_repos() {
    for case in CASES {
        for route in [Route::Literal, Route::DotEnv] {
            let what = format!("{} via {route:?} with --unsafe", case.expected);
            let s = setup(case, route);
            let out = run_renet(&s, &["--unsafe"], &["config"]);
            let err = String::from_utf8_lossy(&out.stderr);
            if case.always {
                assert!(!out.status.success(), "{what}: accepted");
                assert!(
                    err.contains(case.expected) && err.contains("even with --unsafe"),
                    "{what}: {err}"
                );
                assert_nothing_written(&s, &what);
            } else {
                assert!(out.status.success(), "{what}: {err}");
            }
        }
    }
}

#[test]
fn env_file_and_extends_from_outside_the_repository() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("base.yml"),
        format!("services:\n  b:\n    image: {IMAGE}\n    environment: {{PASSWORD: theirs}}\n"),
    )
    .unwrap();
    let o = outside.path().display();
    for (service, expected) in [
        (
            "    env_file: /etc/hostname\n".to_string(),
            "`env_file` `/etc/hostname`",
        ),
        (
            "    env_file: [{path: /etc/shadow, required: false}]\n".into(),
            "`/etc/shadow`",
        ),
        ("    env_file: ${EF:-/etc/hostname}\n".into(), "a variable"),
        ("    label_file: /etc/hostname\n".into(), "`/etc/hostname`"),
        (
            format!("    extends: {{file: {o}/base.yml, service: b}}\n"),
            "`extends` file",
        ),
        (
            "    extends: {file: '${X:-x}.yml', service: b}\n".into(),
            "a variable",
        ),
    ] {
        let repo = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        std::fs::write(
            repo.path().join("compose.yml"),
            format!("services:\n  a:\n    image: {IMAGE}\n{service}"),
        )
        .unwrap();
        std::fs::write(
            repo.path().join("x.yml"),
            format!("services:\n  b:\n    image: {IMAGE}\n"),
        )
        .unwrap();
        let err = fails(
            renet(repo.path())
                .env("RENET_RUNTIME_DIR", runtime.path())
                .args([
                    "compose",
                    "--network-id",
                    &NETWORK.to_string(),
                    "--",
                    "config",
                ]),
        );
        assert!(err.contains(expected), "{service}: {err}");
        assert!(!repo.path().join(".rediacc.json").exists());
        assert!(is_empty_dir(runtime.path()));
    }
    // `include` of a file outside.
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("compose.yml"),
        format!("include: ['{o}/base.yml']\nservices:\n  a:\n    image: {IMAGE}\n"),
    )
    .unwrap();
    let err = fails(
        renet(repo.path())
            .env("RENET_RUNTIME_DIR", outside.path().join("rt"))
            .args([
                "compose",
                "--network-id",
                &NETWORK.to_string(),
                "--",
                "config",
            ]),
    );
    assert!(err.contains("`include` file"), "{err}");
}

#[test]
fn allowed_settings_and_operator_settings() {
    let repo = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("data")).unwrap();
    std::fs::write(repo.path().join("app.env"), "A=1\n").unwrap();
    let text = format!(
        "services:\n  a:\n    image: {IMAGE}\n    env_file: app.env\n    cap_add: [CHOWN]\n    volumes:\n      - ./data:/data\n      - /etc/localtime:/etc/localtime:ro\n      - /var/run/rediacc/secrets/{NETWORK}:/run/secrets:ro\n      - named:/n\n      - {}:/shared\nvolumes:\n  named: {{}}\n",
        shared.path().display()
    );
    std::fs::write(repo.path().join("compose.yml"), &text).unwrap();
    let compose = |settings: Option<&Path>| {
        let mut c = renet(repo.path());
        c.env("RENET_RUNTIME_DIR", runtime.path()).args([
            "compose",
            "--network-id",
            &NETWORK.to_string(),
            "--",
            "config",
        ]);
        match settings {
            Some(s) => c.env("RENET_SETTINGS", s),
            None => c.env("RENET_SETTINGS", "/nonexistent/renet.json"),
        };
        c
    };
    // The shared folder is outside the repository...
    let err = fails(&mut compose(None));
    assert!(err.contains("compose.allowed_paths"), "{err}");
    // ...until the operator lists it.
    let settings = shared.path().join("renet.json");
    std::fs::write(
        &settings,
        format!(
            "{{\"compose\": {{\"allowed_paths\": [\"{}\"], \"allowed_capabilities\": [\"SYS_PTRACE\"]}}}}",
            shared.path().display()
        ),
    )
    .unwrap();
    let out = ok(&mut compose(Some(&settings)));
    assert!(out.contains("/etc/localtime"), "{out}");
    // An unknown settings key is an error, not silently ignored.
    std::fs::write(&settings, "{\"compose\": {\"allowed_pathz\": []}}").unwrap();
    let err = fails(&mut compose(Some(&settings)));
    assert!(err.contains("allowed_pathz"), "{err}");
}
