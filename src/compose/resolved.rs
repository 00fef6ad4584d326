//! compose's own resolved model of a project (spec §5): renet asks docker compose itself
//! (`docker compose <the user's global flags> config --format json`) instead of reading the
//! YAML, `.env`, `--env-file`, `COMPOSE_ENV_FILES`, `extends`, anchors and interpolation a
//! second time. What compose resolves is what is vetted, and — because renet hands exactly
//! that model (plus its own changes) back to compose for the real run — what runs.
//!
//! `config` talks to no daemon, so these runs are cheap and harmless.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::compose::invoke::ComposeProgram;

/// `env_file`/`label_file` paths per service.
pub type EnvFiles = BTreeMap<String, Vec<String>>;

/// One `docker compose config` run: which flags, from which folder, with which variables.
pub struct ConfigRun<'a> {
    pub program: &'a ComposeProgram,
    /// The user's global flags (`-f`, `-p`, `--profile`, `--env-file`, `--project-directory`...).
    pub global: &'a [String],
    pub cwd: &'a Path,
    /// Variables set for compose's interpolation on top of the process environment.
    pub env: &'a [(String, String)],
    /// The compose files, for messages.
    pub files: Vec<std::path::PathBuf>,
    /// Ask for the uninterpolated model too (for `env_file`/`label_file` paths).
    pub with_env_files: bool,
}

impl ConfigRun<'_> {
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program.program);
        cmd.args(&self.program.prefix)
            .args(self.global)
            .arg("config")
            .args(["--format", "json"])
            .args(extra)
            .current_dir(self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("DOCKER_CONTEXT")
            // Its own process group: on a timeout the docker CLI *and* the compose plugin it
            // started are killed.
            .process_group(0);
        for (k, v) in self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The interpolated, normalised model (`config --format json`) and, from the same flags
    /// without interpolation, the `env_file` paths of every service (compose inlines env files
    /// into `environment` and forgets their paths, which vetting needs). Both run at once.
    /// `None` for the env files when compose could not show them (vetting then refuses).
    pub fn load(&self) -> (Result<Value>, Option<EnvFiles>) {
        let spawn = |extra: &[&str]| {
            self.command(extra)
                .spawn()
                .context("cannot run docker compose config")
        };
        let model = spawn(&[]);
        let raw = self
            .with_env_files
            .then(|| spawn(&["--no-interpolate", "--no-consistency"]));
        let files = self
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let model = model
            .and_then(finish)
            .with_context(|| format!("{files}: docker compose cannot load the project"));
        let env_files = match raw.map(|r| r.and_then(finish)) {
            None => Some(EnvFiles::new()),
            Some(Ok(raw)) => Some(env_file_paths(&raw)),
            Some(Err(e)) => {
                tracing::debug!("uninterpolated compose config failed: {e:#}");
                None
            }
        };
        (model, env_files)
    }
}

/// How long one `docker compose config` may take (`RENET_COMPOSE_CONFIG_TIMEOUT`, seconds).
/// compose itself stalls on some hostile files (thousands of nested `${A:-...}` defaults).
pub fn config_timeout() -> Duration {
    std::env::var("RENET_COMPOSE_CONFIG_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

/// Waits for a `config` run (killing it past the timeout) and parses what it printed.
fn finish(mut child: Child) -> Result<Value> {
    let timeout = config_timeout();
    let deadline = Instant::now() + timeout;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for docker compose")? {
            break status;
        }
        if Instant::now() >= deadline {
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            bail!(
                "docker compose config did not finish within {} s (RENET_COMPOSE_CONFIG_TIMEOUT); the project is too complex or hostile",
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!("{}", String::from_utf8_lossy(&stderr).trim());
    }
    serde_json::from_slice(&stdout).context("docker compose config printed invalid JSON")
}

fn read_in_background(
    pipe: Option<impl std::io::Read + Send + 'static>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// `env_file` paths per service, as compose resolved them (absolute) but not interpolated.
fn env_file_paths(raw: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (name, svc) in services(raw) {
        let mut paths: Vec<String> = ["env_file", "label_file"]
            .iter()
            .flat_map(|key| file_list(svc.get(*key)))
            .collect();
        paths.dedup();
        if !paths.is_empty() {
            out.insert(name.clone(), paths);
        }
    }
    out
}

/// `env_file`/`label_file` entries: a path, or a list of paths or `{path: ...}`.
fn file_list(v: Option<&Value>) -> Vec<String> {
    {
        match v {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|e| match e {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(m) => m.get("path").and_then(Value::as_str).map(String::from),
                    _ => None,
                })
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

/// The services of a model (empty when there are none).
pub fn services(model: &Value) -> impl Iterator<Item = (&String, &Map<String, Value>)> {
    model
        .get("services")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_object().map(|m| (k, m)))
}

/// Service names of the model in `file_order` where they appear there, the rest sorted
/// (compose prints services sorted by name; slots go to new services in file order, spec §3).
pub fn service_names(model: &Value, file_order: &[String]) -> Vec<String> {
    let mut names: Vec<String> = services(model).map(|(k, _)| k.clone()).collect();
    names.sort_by_key(|n| {
        (
            file_order.iter().position(|f| f == n).unwrap_or(usize::MAX),
            n.clone(),
        )
    });
    names
}

/// compose prints `$` as `$$` (its output can be loaded again); the real text of a value.
pub fn unescape(s: &str) -> String {
    s.replace("$$", "$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_file_order_then_sorted() {
        let m: Value =
            serde_json::from_str(r#"{"services":{"a":{},"b":{},"c":{},"d":{}}}"#).unwrap();
        let order = vec!["c".to_string(), "a".into(), "x".into()];
        assert_eq!(service_names(&m, &order), ["c", "a", "b", "d"]);
    }

    #[test]
    fn env_files_of_the_raw_model() {
        let raw: Value = serde_json::from_str(
            r#"{"services":{"a":{"env_file":[{"path":"/r/.env","required":true},{"path":"/r/${X}"}]},"b":{}}}"#,
        )
        .unwrap();
        let e = env_file_paths(&raw);
        assert_eq!(e["a"], ["/r/.env", "/r/${X}"]);
        assert!(!e.contains_key("b"));
    }
}
