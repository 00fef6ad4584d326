//! Benchmark of `renet compose` (prints figures; run with `cargo bench --bench compose`):
//! - `renet compose --dry-run` on a 61-service project (first run, which allocates all slots,
//!   and steady state);
//! - the ratio of `renet compose -- config` to plain `docker compose config` on the same
//!   project. renet asks compose for its resolved model (to vet what will really run) and then
//!   runs compose on the vetted model, so compose loads the project twice; the second load is
//!   of one already-normalised JSON file (shown separately).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RENET: &str = env!("CARGO_BIN_EXE_renet");
const RUNS: usize = 30;

fn main() {
    for n in [61, 5] {
        bench_project(n);
    }
}

fn bench_project(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "x-base: &base\n  image: renet-test/busybox:latest\n  restart: unless-stopped\nservices:\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "  svc-{i}:\n    <<: *base\n    command: [\"httpd\", \"-f\", \"-p\", \"${{SVC_{i}_IP}}:8080\"]\n    environment:\n      PEER: ${{SVC_{}_IP}}\n    ports: [\"{}:80\"]\n",
            (i + 1) % n,
            20000 + i
        ));
    }
    std::fs::write(dir.path().join("compose.yaml"), text).unwrap();
    println!("== {n}-service project ==");

    let first = time(|| renet(dir.path(), &["--dry-run", "--", "up", "-d"]));
    let dry: Vec<Duration> = (0..RUNS)
        .map(|_| time(|| renet(dir.path(), &["--dry-run", "--", "up", "-d"])))
        .collect();
    println!("renet compose --dry-run (renet's own work, no compose):");
    println!("  first run (allocates {n} slots): {:.2} ms", ms(first));
    report("  steady state", &dry);

    let vars: Vec<(String, String)> = (0..n)
        .map(|i| (format!("SVC_{i}_IP"), format!("127.0.11.{}", i + 2)))
        .collect();
    let plain = |file: &Path| {
        let mut c = Command::new("docker");
        c.current_dir(dir.path())
            .args(["compose", "-f"])
            .arg(file)
            .arg("config")
            .envs(vars.iter().cloned());
        quiet(&mut c)
    };
    // One run first: it writes the model renet hands to compose.
    renet(dir.path(), &["--", "config"]);
    let model_file = std::fs::read_dir(std::env::temp_dir().join("renet-bench"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    // Interleaved, so that the three see the same load (the machine is shared): renet, plain
    // compose on the user's file, plain compose on renet's model (what the final run costs on
    // its own).
    let (mut renet_config, mut plain_config, mut final_run) = (vec![], vec![], vec![]);
    for _ in 0..RUNS {
        renet_config.push(time(|| renet(dir.path(), &["--", "config"])));
        plain_config.push(time(|| plain(Path::new("compose.yaml"))));
        final_run.push(time(|| plain(&model_file)));
    }
    println!("config on the same project:");
    report("  renet compose -- config                 ", &renet_config);
    report("  docker compose config                   ", &plain_config);
    report("  docker compose -f <renet's model> config", &final_run);
    println!(
        "  ratio renet/plain (median): {:.3}; of which the final run on renet's model: {:.3}",
        median(&renet_config).as_secs_f64() / median(&plain_config).as_secs_f64(),
        median(&final_run).as_secs_f64() / median(&plain_config).as_secs_f64()
    );
}

fn renet(dir: &Path, args: &[&str]) {
    let mut c = Command::new(RENET);
    c.current_dir(dir)
        .env(
            "RENET_RUNTIME_DIR",
            std::env::temp_dir().join("renet-bench"),
        )
        // Its own registry of repository roots: 2816 may be bound to another root on this host.
        .env("RENET_DATA_DIR", dir.join(".renet-bench-data"))
        .env_remove("DOCKER_HOST")
        .args(["compose", "--network-id", "2816"])
        .args(args);
    quiet(&mut c);
}

fn quiet(c: &mut Command) {
    let st = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{c:?} failed");
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn report(what: &str, v: &[Duration]) {
    let mut s = v.to_vec();
    s.sort();
    let p = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what}: median {:.2} ms, p90 {:.2} ms, min {:.2} ms, max {:.2} ms ({} runs)",
        ms(p(0.5)),
        ms(p(0.9)),
        ms(s[0]),
        ms(s[s.len() - 1]),
        s.len()
    );
}
