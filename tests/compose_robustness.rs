//! Robustness of `renet compose` against hostile input.
//!
//! - A seeded fuzz loop (stable Rust, no extra tooling) over the argument splitter, the reader
//!   of the user's compose files, the port parser, vetting and the rewrite: no input may panic,
//!   and each stays linear (the loop is bounded by `RENET_FUZZ_ITERATIONS`, default 3000, and
//!   reproducible with `RENET_FUZZ_SEED`).
//! - The inputs that once crashed or stalled renet, through the real binary and the real
//!   docker compose: each is refused with a clear error and nothing is written (no
//!   `.rediacc.json`, no model file, so compose never runs).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use renet::addresses::NetworkId;
use renet::compose::files::ComposeArgs;
use renet::compose::model::{SourceFile, referenced_files};
use renet::compose::rewrite::{HostsFiles, parse_ports, rewrite};
use renet::compose::slots::SlotTable;
use renet::compose::vetting::{ComposeSettings, VetContext, vet, vet_references};
use serde_json::{Value, json};

/// No daemon runs for this network: these runs must never reach one.
const NETWORK: u32 = 3264;

/// splitmix64: a tiny seeded generator, so a failure is reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const PIECES: &[&str] = &[
    "-",
    "--",
    "-f",
    "--file",
    "=",
    "é",
    "ß",
    "💥",
    "-p",
    "--env-file",
    "--profile",
    "x",
    ".yml",
    "up",
    "-d",
    "config",
    "--project-directory",
    "\u{0}",
    " ",
    ":",
    "$",
    "{",
    "}",
    "\n",
    "-é",
    "--é=",
    "-fé",
];

fn random_text(rng: &mut Rng, pieces: &[&str], max: usize) -> String {
    (0..rng.below(max)).map(|_| *rng.pick(pieces)).collect()
}

const YAML_PIECES: &[&str] = &[
    "services:\n",
    "  a:\n",
    "  é:\n",
    "    image: x\n",
    "    extends: {file: ../x.yml, service: a}\n",
    "    extends: {file: '${X}', service: b}\n",
    "include: [a.yml, {path: [b.yml]}]\n",
    "x-a: &a {image: y}\n",
    "    <<: *a\n",
    "    <<: *nope\n",
    "---\n",
    "[\n",
    "]\n",
    "{\n",
    "'\n",
    "\"\n",
    "  - ",
    ": ",
    "&x ",
    "*x ",
    "!reset ",
    "!!binary ",
    "\t",
    "é",
    "${NMé}",
    "#",
];

fn random_json(rng: &mut Rng, depth: usize) -> Value {
    let strings = [
        "",
        "host",
        "/etc",
        "/var/run/rediacc/secrets/2880",
        "..",
        "NET_ADMIN",
        "é",
        "1-65535",
        "8000-8001",
        "bind",
        "udp",
        "sctp",
        "-1",
        "65536",
        "${X}",
        "$$",
        "/",
    ];
    let keys = [
        "target",
        "published",
        "protocol",
        "host_ip",
        "source",
        "type",
        "read_only",
        "volumes",
        "cap_add",
        "ports",
        "privileged",
        "driver_opts",
        "o",
        "device",
        "file",
        "links",
        "networks",
        "aliases",
        "labels",
        "extra_hosts",
        "container_name",
        "build",
        "context",
        "security_opt",
        "env_file",
        "mac_address",
        "network_mode",
        "environment",
        "cap_drop",
    ];
    match if depth == 0 {
        rng.below(4)
    } else {
        rng.below(7)
    } {
        0 => Value::Null,
        1 => json!(rng.below(70000) as i64 - 10),
        2 => json!(*rng.pick(&strings)),
        3 => json!(rng.below(2) == 0),
        4 | 5 => Value::Object(
            (0..rng.below(5))
                .map(|_| (rng.pick(&keys).to_string(), random_json(rng, depth - 1)))
                .collect(),
        ),
        _ => Value::Array(
            (0..rng.below(5))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
    }
}

struct NoFiles;
impl HostsFiles for NoFiles {
    fn hosts_file(&self, service: &str, _: bool) -> PathBuf {
        PathBuf::from("/run/renet/compose/hosts").join(service)
    }
}

#[test]
fn fuzz_splitter_reader_ports_vetting_rewrite() {
    let seed: u64 = std::env::var("RENET_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C0DE);
    let iterations: usize = std::env::var("RENET_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    eprintln!(
        "fuzz seed {seed}, {iterations} iterations (RENET_FUZZ_SEED / RENET_FUZZ_ITERATIONS)"
    );
    let mut rng = Rng(seed);
    let repo = tempfile::tempdir().unwrap();
    let network = NetworkId::new(2816).unwrap();
    let settings = ComposeSettings::default();
    for i in 0..iterations {
        // Argument splitter.
        let args: Vec<String> = (0..rng.below(6))
            .map(|_| random_text(&mut rng, PIECES, 4))
            .collect();
        if let Ok(a) = ComposeArgs::parse(&args) {
            let _ = (a.final_global(), a.config_global(&[]));
            assert!(a.rest.len() <= args.len(), "iteration {i}: {args:?}");
        }

        // Reader of the user's files (every YAML document, anchors, extends/include).
        let text = random_text(&mut rng, YAML_PIECES, 12);
        let src = SourceFile::parse(&repo.path().join("compose.yml"), text.clone());
        let _ = src.service_names();
        let _ = src.line_of("a", "image");

        // Port parser: Ok means one label entry per port entry.
        let ports = random_json(&mut rng, 2);
        if let Ok(specs) = parse_ports(&ports) {
            assert_eq!(specs.len(), ports.as_array().map_or(0, Vec::len), "{ports}");
        }

        // Vetting and rewrite of an arbitrary model.
        let model = json!({"name": "p", "services": {"a": random_json(&mut rng, 3), "b": random_json(&mut rng, 3)},
                           "volumes": random_json(&mut rng, 2), "secrets": random_json(&mut rng, 2)});
        let sources = [src];
        let ctx = VetContext {
            network,
            repo_root: repo.path(),
            unsafe_ok: rng.below(2) == 0,
            settings: &settings,
            settings_path: Path::new("/etc/rediacc/renet.json"),
            renet_dirs: &[],
            sources: &sources,
        };
        let _ = vet(&model, &ctx);
        let _ = vet_references(&referenced_files(&sources).0, &ctx);
        let mut slots = SlotTable::new();
        slots.insert("a".into(), 0);
        slots.insert("b".into(), 1);
        let _ = rewrite(&model, network, &slots, ctx.unsafe_ok, &NoFiles);
    }
}

#[test]
fn port_parser_is_linear_and_bounded() {
    // A thousand entries is fine; one more is a clear refusal, never a stall.
    let ok: Value = (1..=1000)
        .map(|t| json!({"target": t, "published": t.to_string()}))
        .collect();
    assert_eq!(parse_ports(&ok).unwrap().len(), 1000);
    let big: Value = (1..=65535).map(|t| json!({"target": t})).collect();
    let err = parse_ports(&big).unwrap_err();
    assert!(
        err.contains("65535 ports") && err.contains("at most 1000"),
        "{err}"
    );
}

/// A project folder with `compose.yml` holding `text` and a private runtime folder.
struct Project {
    dir: tempfile::TempDir,
    runtime: tempfile::TempDir,
}

impl Project {
    fn new(text: &str) -> Project {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
            runtime: tempfile::tempdir().unwrap(),
        };
        std::fs::write(p.dir.path().join("compose.yml"), text).unwrap();
        p
    }

    /// Runs `renet compose -- <args>`; returns stderr, insisting on failure without a panic.
    fn refused(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = renet(self.dir.path());
        cmd.env("RENET_RUNTIME_DIR", self.runtime.path())
            .args(["compose", "--network-id", &NETWORK.to_string(), "--"])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let err = fails(&mut cmd);
        assert!(!err.contains("panicked"), "{err}");
        self.assert_nothing_written();
        err
    }

    fn assert_nothing_written(&self) {
        assert!(
            !self.dir.path().join(".rediacc.json").exists(),
            ".rediacc.json written"
        );
        let left: Vec<_> = std::fs::read_dir(self.runtime.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "runtime files written: {left:?}");
    }
}

#[test]
fn non_ascii_flag_is_an_error_not_a_panic() {
    let p = Project::new("services:\n  a:\n    image: x\n");
    let err = p.refused(&["-é", "config"], &[]);
    assert!(err.contains("-é"), "{err}");
}

#[test]
fn non_ascii_after_a_variable_name_writes_nothing() {
    let p = Project::new("services:\n  a:\n    image: x\n    environment: {A: \"${NMé}\"}\n");
    let err = p.refused(&["up", "-d"], &[]);
    assert!(err.contains("compose.yml") && err.contains("NMé"), "{err}");
}

#[test]
fn deeply_nested_defaults_are_bounded_in_time() {
    let n = 25_000;
    let value = format!("{}x{}", "${N:-".repeat(n), "}".repeat(n));
    let p = Project::new(&format!(
        "services:\n  a:\n    image: x\n    environment:\n      A: \"{value}\"\n"
    ));
    let started = std::time::Instant::now();
    let err = p.refused(&["config"], &[("RENET_COMPOSE_CONFIG_TIMEOUT", "5")]);
    assert!(
        err.contains("did not finish within 5 s") || err.contains("compose.yml"),
        "{err}"
    );
    eprintln!("refused after {:?}", started.elapsed());
}

#[test]
fn every_port_of_the_range_is_refused_before_anything_is_written() {
    let p = Project::new("services:\n  a:\n    image: x\n    ports: [\"1-65535\"]\n");
    let err = p.refused(&["up", "-d"], &[]);
    assert!(
        err.contains("service `a`") && err.contains("at most 1000"),
        "{err}"
    );
}

#[test]
fn invalid_port_is_refused_before_slots_are_written() {
    let p = Project::new("services:\n  a:\n    image: x\n    ports: [\"x:80\"]\n");
    let err = p.refused(&["up", "-d"], &[]);
    assert!(err.contains("x"), "{err}");
    let p = Project::new("services:\n  a:\n    image: x\n    ports: [\"80/sctp\"]\n");
    let err = p.refused(&["up", "-d"], &[]);
    assert!(err.contains("sctp"), "{err}");
}

#[test]
fn extends_cycle_through_another_spelling_is_refused() {
    let p = Project::new(
        "services:\n  a:\n    image: x\n    extends: {file: ./sub/../compose.yml, service: b}\n  b:\n    image: x\n    extends: {file: sub/../sub/../compose.yml, service: a}\n",
    );
    std::fs::create_dir(p.dir.path().join("sub")).unwrap();
    let err = p.refused(&["config"], &[]);
    assert!(
        err.to_lowercase().contains("circular") || err.contains("cycle"),
        "{err}"
    );
}

#[test]
fn multi_document_yaml_is_read_as_compose_reads_it() {
    let p = Project::new(
        "services:\n  a:\n    image: x\n---\nservices:\n  b:\n    image: x\n    ports: ['8080:80']\n",
    );
    let mut cmd = renet(p.dir.path());
    cmd.env("RENET_RUNTIME_DIR", p.runtime.path()).args([
        "compose",
        "--network-id",
        &NETWORK.to_string(),
        "--",
        "config",
        "--format",
        "json",
    ]);
    let out: Value = serde_json::from_str(&ok(&mut cmd)).unwrap();
    assert_eq!(out["services"]["a"]["network_mode"], "host");
    assert_eq!(
        out["services"]["b"]["labels"]["rediacc.tcp_ports"],
        "8080:80"
    );
    // Slots in file order, across documents.
    let slots: Value =
        serde_json::from_str(&std::fs::read_to_string(p.dir.path().join(".rediacc.json")).unwrap())
            .unwrap();
    assert_eq!(slots["services"]["a"]["slot"], 0);
    assert_eq!(slots["services"]["b"]["slot"], 1);
}
