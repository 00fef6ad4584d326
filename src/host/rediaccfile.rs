//! `renet repo up|down|info DIR`: the Rediaccfile runner (spec §8).
//!
//! A repository holds Bash files named `Rediaccfile` (or `rediaccfile`) at its root and in
//! first-level subfolders, each with optional `prep`, `up`, `down` and `info` functions. This
//! module finds them, gives every compose service of the repo its slot *before* anything runs
//! (so every `<SERVICE>_IP` is known to every function, also across projects), and calls the
//! functions in the documented order with the repo's variables. Functions' output passes
//! through; a summary at the end says what ran, what was skipped and what failed.
//!
//! Each Rediaccfile is *sourced* by its own `bash` (with its folder as working directory), so
//! two Rediaccfiles never see each other's functions or variables.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

use crate::addresses::{
    MISSING_NETWORK_ID, NetworkId, resolve_network_id, service_ip_vars, socket_file_name,
};
use crate::host::daemons::DEFAULT_DATA_DIR;
use crate::host::settings::DEFAULT_SOCKET_DIR;

/// The two accepted spellings, checked in this order.
pub const FILE_NAMES: [&str; 2] = ["Rediaccfile", "rediaccfile"];

#[derive(Debug, clap::Subcommand)]
pub enum RepoCommand {
    /// Give every compose service its slot, then run every Rediaccfile's `prep`, then every
    /// `up` (root first, then subfolders A→Z).
    Up(RepoArgs),
    /// Run every Rediaccfile's `down`: subfolders Z→A, then the root; every one is tried.
    Down(RepoArgs),
    /// Run every Rediaccfile's `info` (root first, then subfolders A→Z).
    Info(RepoArgs),
    /// Release a network ID's repository binding (the repository moved, or the ID is reused).
    Unbind(UnbindArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct UnbindArgs {
    /// The network ID to release.
    #[arg(long)]
    pub network_id: NetworkId,
    /// Folder of the repo daemons' data, where the binding is recorded.
    #[arg(long, env = "RENET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// The repository root.
    pub dir: PathBuf,
    /// The repo's network ID [default: $REDIACC_NETWORK_ID, else the N of a
    /// DOCKER_HOST=unix://…/docker-<N>.sock].
    #[arg(long)]
    pub network_id: Option<NetworkId>,
    /// Folder of the repo daemons' sockets (DOCKER_HOST is `<socket dir>/docker-<N>.sock`).
    /// Passed on to every command the Rediaccfiles run (`RENET_SOCKET_DIR`).
    #[arg(long, env = "RENET_SOCKET_DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// Folder of the repo daemons' data, where the network ID's root is recorded. Passed on as
    /// `RENET_DATA_DIR`.
    #[arg(long, env = "RENET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Settings file (route server address for the summary). Passed on as `RENET_SETTINGS`.
    #[arg(long, env = "RENET_SETTINGS", value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

pub fn run(cmd: RepoCommand) -> Result<u8> {
    let (phase, args) = match cmd {
        RepoCommand::Up(a) => (Action::Up, a),
        RepoCommand::Down(a) => (Action::Down, a),
        RepoCommand::Info(a) => (Action::Info, a),
        RepoCommand::Unbind(a) => {
            match crate::host::repo_binding::unbind(&a.data_dir, a.network_id)? {
                Some(b) => eprintln!(
                    "renet: network {} released (was bound to {})",
                    a.network_id,
                    b.root.display()
                ),
                None => eprintln!("renet: network {} was not bound", a.network_id),
            }
            return Ok(0);
        }
    };
    let network_id = resolve_network_id(
        args.network_id,
        std::env::var("REDIACC_NETWORK_ID").ok().as_deref(),
        std::env::var("DOCKER_HOST").ok().as_deref(),
    )?
    .context(MISSING_NETWORK_ID)?;
    let target = Target {
        socket_dir: args.socket_dir.clone(),
        data_dir: args.data_dir.clone(),
        settings: args.settings.clone(),
    };
    let report = run_repo(phase, &args.dir, network_id, &target)?;
    eprint!("{report}");
    if phase == Action::Up {
        print_route_summary(network_id, &target);
    }
    Ok(if report.failed() { 1 } else { 0 })
}

/// The command: which functions run, in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    Info,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Up => "up",
            Action::Down => "down",
            Action::Info => "info",
        })
    }
}

/// One Rediaccfile of a repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rediaccfile {
    /// The folder it is in (and runs in).
    pub folder: PathBuf,
    /// Its file name (`Rediaccfile` or `rediaccfile`).
    pub file_name: String,
    /// Its path relative to the repo root, for messages (`Rediaccfile`, `api/Rediaccfile`).
    pub label: String,
    pub is_root: bool,
}

/// The Rediaccfiles of a repo: the root's first (if any), then first-level subfolders in
/// byte order of their names (A→Z). Hidden folders are skipped: they hold tool state (`.git`,
/// `.venv`), never a project.
pub fn discover(root: &Path) -> Result<Vec<Rediaccfile>> {
    let meta = std::fs::metadata(root)
        .with_context(|| format!("{}: cannot open the repository folder", root.display()))?;
    if !meta.is_dir() {
        bail!("{}: not a folder", root.display());
    }
    let mut out = Vec::new();
    if let Some(name) = rediaccfile_in(root)? {
        out.push(Rediaccfile {
            folder: root.to_path_buf(),
            label: name.clone(),
            file_name: name,
            is_root: true,
        });
    }
    let mut subfolders = Vec::new();
    for entry in
        std::fs::read_dir(root).with_context(|| format!("{}: cannot list", root.display()))?
    {
        let entry = entry.with_context(|| format!("{}: cannot list", root.display()))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        // Follows symlinks: a linked project folder is a project folder.
        if entry.path().is_dir() {
            subfolders.push(name);
        }
    }
    subfolders.sort();
    for name in subfolders {
        let folder = root.join(&name);
        if let Some(file_name) = rediaccfile_in(&folder)? {
            out.push(Rediaccfile {
                label: format!("{}/{file_name}", name.to_string_lossy()),
                folder,
                file_name,
                is_root: false,
            });
        }
    }
    Ok(out)
}

/// The Rediaccfile of one folder, by exact name (a case-insensitive file system would find
/// both spellings for one file, so the listing is compared, not `exists()`).
fn rediaccfile_in(folder: &Path) -> Result<Option<String>> {
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(folder).with_context(|| format!("{}: cannot list", folder.display()))?
    {
        let entry = entry.with_context(|| format!("{}: cannot list", folder.display()))?;
        let name = entry.file_name();
        if let Some(n) = FILE_NAMES.iter().find(|n| name == **n)
            && entry.path().is_file()
        {
            found.push(n.to_string());
        }
    }
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => bail!(
            "{}: both `Rediaccfile` and `rediaccfile` exist; renet would not know which to run. \
             Keep one of them",
            folder.display()
        ),
    }
}

/// What happened to one function call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The Rediaccfile has no such function.
    Skipped,
    /// Exit code, or the signal that ended it.
    Failed(String),
    /// Not started because an earlier failure stops the rest.
    NotRun(String),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub function: &'static str,
    pub label: String,
    pub outcome: Outcome,
}

/// Everything a run did, printed as the summary.
#[derive(Debug, Clone)]
pub struct Report {
    pub action: Action,
    pub root: PathBuf,
    pub network_id: NetworkId,
    pub steps: Vec<Step>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.outcome, Outcome::Failed(_)))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count =
            |pred: fn(&Outcome) -> bool| self.steps.iter().filter(|s| pred(&s.outcome)).count();
        let ok = count(|o| matches!(o, Outcome::Ok));
        let skipped = count(|o| matches!(o, Outcome::Skipped));
        let failed = count(|o| matches!(o, Outcome::Failed(_)));
        let not_run = count(|o| matches!(o, Outcome::NotRun(_)));
        writeln!(
            f,
            "renet: repo {} {} (network {}): {ok} ran, {skipped} skipped, {failed} failed, {not_run} not run",
            self.action,
            self.root.display(),
            self.network_id
        )?;
        let width = self.steps.iter().map(|s| s.label.len()).max().unwrap_or(0);
        for s in &self.steps {
            let what = match &s.outcome {
                Outcome::Ok => "ok".to_string(),
                Outcome::Skipped => format!("skipped (no `{}` function)", s.function),
                Outcome::Failed(why) => format!("FAILED ({why})"),
                Outcome::NotRun(why) => format!("not run ({why})"),
            };
            writeln!(f, "  {:<5} {:<width$}  {what}", s.function, s.label)?;
        }
        Ok(())
    }
}

/// How long `repo up` waits for the route server to have seen the repository's containers.
const SUMMARY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long to wait for a route server that does not know the daemon at all.
const SUMMARY_UNSEEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Ends `repo up` with what the route server made of the repository (`renet routes`): its
/// routes, its ports (moved ones marked), and every refusal or conflict. Waits (bounded) until
/// the route server knows as many containers of this daemon as the daemon runs with rediacc
/// labels, so the summary is about this deployment. Never fails the command: a route server
/// that is not running is said, not an error.
fn print_route_summary(network_id: NetworkId, target: &Target) {
    use crate::routing::routes_cli;
    let addr = match routes_cli::route_server_address(None, target.settings.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("renet: routes not checked: {e:#}");
            return;
        }
    };
    let socket = target.socket_dir.join(socket_file_name(network_id));
    let expected = labelled_containers(&socket);
    let started = std::time::Instant::now();
    let summary = loop {
        match routes_cli::fetch(&addr, Some(network_id)) {
            Err(e) => {
                eprintln!("renet: routes not checked: {e:#}");
                return;
            }
            Ok(s) => {
                let seen = s["daemon"]["containers"].as_u64().unwrap_or(0);
                let connected = s["daemon"]["state"] == "connected";
                // A route server that watches another socket folder never sees this daemon
                // (it finds new sockets within milliseconds): no point waiting long for it.
                let unseen = s["daemon"].is_null() && started.elapsed() > SUMMARY_UNSEEN_WAIT;
                if (connected && expected.is_none_or(|n| seen >= n))
                    || unseen
                    || started.elapsed() > SUMMARY_WAIT
                {
                    break s;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    eprint!("{}", routes_cli::render_text(&summary));
}

/// Running containers with a `rediacc.network_id` label on the daemon, if it answers.
fn labelled_containers(socket: &Path) -> Option<u64> {
    // filters={"label":["rediacc.network_id"]}
    let path = "/containers/json?filters=%7B%22label%22%3A%5B%22rediacc.network_id%22%5D%7D";
    let v = crate::host::daemons::http_get_json(socket, path).ok()?;
    v.as_array().map(|a| a.len() as u64)
}

/// Where a repository's daemon and records live: every command a Rediaccfile runs gets the
/// same folders (`RENET_SOCKET_DIR`, `RENET_DATA_DIR`, `RENET_SETTINGS`), so a nested
/// `renet compose` can never fall back to the default folder and its daemon of the same number.
#[derive(Debug, Clone)]
pub struct Target {
    pub socket_dir: PathBuf,
    pub data_dir: PathBuf,
    pub settings: Option<PathBuf>,
}

impl Target {
    /// The default folders (`/var/run/rediacc`, `/var/lib/rediacc`).
    pub fn with_socket_dir(socket_dir: &Path) -> Target {
        Target {
            socket_dir: socket_dir.to_path_buf(),
            data_dir: DEFAULT_DATA_DIR.into(),
            settings: None,
        }
    }
}

/// Runs one command on a repo. Errors (no Rediaccfile, bad compose file, slots, another
/// repository's network ID) come before any function runs; function failures are in the
/// report.
pub fn run_repo(
    action: Action,
    dir: &Path,
    network_id: NetworkId,
    target: &Target,
) -> Result<Report> {
    let socket_dir = target.socket_dir.as_path();
    let root = std::fs::canonicalize(dir)
        .with_context(|| format!("{}: cannot open the repository folder", dir.display()))?;
    // A folder inside the repository bound to this network ID means that repository; another
    // repository's ID is refused before anything runs.
    let root = crate::host::repo_binding::check(&target.data_dir, network_id, &root)?;
    let files = discover(&root)?;
    if files.is_empty() {
        bail!(
            "{}: no Rediaccfile (or rediaccfile) at the root or in a first-level subfolder",
            root.display()
        );
    }
    // A syntax error would otherwise look like missing functions, i.e. "skipped".
    for rf in &files {
        check_syntax(rf)?;
    }
    if action == Action::Up {
        crate::host::repo_binding::bind(&target.data_dir, network_id, &root, socket_dir)?;
    }
    let slots = match action {
        Action::Up => {
            let names = repo_service_names(&files)?;
            crate::compose::slots::allocate(&root, &names)?.slots
        }
        // Reading only: stopping or inspecting a repo must not change its slot table.
        Action::Down | Action::Info => crate::compose::slots::read(&root)?,
    };
    let env = environment(&root, network_id, target, &slots)?;
    if action == Action::Up {
        let socket = socket_dir.join(socket_file_name(network_id));
        if !socket.exists() {
            eprintln!(
                "renet: warning: no repo daemon at {}; start it with `renet daemon start --network-id {network_id}`",
                socket.display()
            );
        }
    }

    let mut steps = Vec::new();
    let runner = Runner { env: &env };
    match action {
        Action::Up => {
            let mut stop: Option<String> = None;
            for rf in &files {
                steps.push(runner.step("prep", rf, &mut stop, true));
            }
            for rf in &files {
                steps.push(runner.step("up", rf, &mut stop, rf.is_root));
            }
        }
        Action::Down => {
            let mut none = None;
            for rf in files.iter().rev() {
                steps.push(runner.step("down", rf, &mut none, false));
            }
        }
        Action::Info => {
            let mut none = None;
            for rf in &files {
                steps.push(runner.step("info", rf, &mut none, false));
            }
        }
    }
    Ok(Report {
        action,
        root,
        network_id,
        steps,
    })
}

/// Service names of every compose project in a Rediaccfile folder, in folder order, each once.
/// The same name in two projects shares one slot (spec §3), which is allowed but worth a word.
fn repo_service_names(files: &[Rediaccfile]) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for rf in files {
        let here = crate::compose::model::service_names_in_dir(&rf.folder)
            .with_context(|| format!("{}: cannot read the compose files", rf.folder.display()))?;
        let project = if rf.is_root {
            "the root".to_string()
        } else {
            rf.label.split('/').next().unwrap_or_default().to_string()
        };
        for name in here {
            match owner.get(&name) {
                Some(other) if *other != project => eprintln!(
                    "renet: warning: service `{name}` is in {other} and in {project}; both get one slot and one IP"
                ),
                Some(_) => {}
                None => {
                    owner.insert(name.clone(), project.clone());
                    names.push(name);
                }
            }
        }
    }
    Ok(names)
}

/// The variables every function sees (spec §8), plus PATH with this renet first.
fn environment(
    root: &Path,
    network_id: NetworkId,
    target: &Target,
    slots: &crate::compose::slots::SlotTable,
) -> Result<Vec<(String, OsString)>> {
    let socket_dir = target.socket_dir.as_path();
    let repo_name = root
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| OsString::from("/"));
    let socket_dir = std::path::absolute(socket_dir)
        .with_context(|| format!("{}: cannot make absolute", socket_dir.display()))?;
    let docker_host = format!(
        "unix://{}",
        socket_dir.join(socket_file_name(network_id)).display()
    );
    let id = OsString::from(network_id.to_string());
    let mut env: Vec<(String, OsString)> = vec![
        ("REDIACC_WORKING_DIR".into(), root.as_os_str().to_owned()),
        ("REDIACC_NETWORK_ID".into(), id.clone()),
        ("REDIACC_REPOSITORY".into(), repo_name.clone()),
        ("DOCKER_HOST".into(), docker_host.into()),
        ("REPOSITORY_PATH".into(), root.as_os_str().to_owned()),
        ("REPOSITORY_NAME".into(), repo_name),
        ("REPOSITORY_NETWORK_ID".into(), id),
        ("RENET_SOCKET_DIR".into(), socket_dir.as_os_str().to_owned()),
        (
            "RENET_DATA_DIR".into(),
            std::path::absolute(&target.data_dir)
                .with_context(|| format!("{}: cannot make absolute", target.data_dir.display()))?
                .into_os_string(),
        ),
    ];
    if let Some(settings) = &target.settings {
        let settings = std::path::absolute(settings)
            .with_context(|| format!("{}: cannot make absolute", settings.display()))?;
        env.push(("RENET_SETTINGS".into(), settings.into_os_string()));
    }
    let vars = service_ip_vars(slots.keys().map(String::as_str)).map_err(|e| {
        anyhow::anyhow!("{}: {e}", crate::compose::slots::file_path(root).display())
    })?;
    for (service, var) in vars {
        let ip = network_id.slot_ip(slots[&service])?;
        env.push((var, ip.to_string().into()));
    }
    // `renet compose` inside a function must be this renet, not another one on PATH.
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let mut paths = vec![dir];
        if let Some(old) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        env.push((
            "PATH".into(),
            std::env::join_paths(paths).context("PATH holds a `:` in a folder name")?,
        ));
    }
    Ok(env)
}

/// `bash -n`: refuse a Rediaccfile with a syntax error before anything runs.
fn check_syntax(rf: &Rediaccfile) -> Result<()> {
    let out = Command::new("bash")
        .arg("-n")
        .arg(&rf.file_name)
        .current_dir(&rf.folder)
        .stdin(Stdio::null())
        .output()
        .context("cannot run bash (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "{}: syntax error; nothing was run:\n{}",
            rf.folder.join(&rf.file_name).display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

/// The script that sources a Rediaccfile and calls one function. Its own state lives in
/// `__renet_*` variables and the positional parameters are cleared, so the Rediaccfile sees a
/// clean `$@`. Whether the function exists is reported through a status file rather than an
/// exit code, because any exit code could also be the function's own.
const SCRIPT: &str = r#"__renet_status=$1; __renet_function=$2; __renet_file=$3; set --
source "./$__renet_file"
if declare -F "$__renet_function" >/dev/null; then
    printf run >"$__renet_status"
    "$__renet_function"
else
    printf missing >"$__renet_status"
    exit 0
fi
"#;

struct Runner<'a> {
    env: &'a [(String, OsString)],
}

impl Runner<'_> {
    /// Runs `function` of `rf` unless `stop` holds a reason; a failure sets `stop` when
    /// `stops_all` is true.
    fn step(
        &self,
        function: &'static str,
        rf: &Rediaccfile,
        stop: &mut Option<String>,
        stops_all: bool,
    ) -> Step {
        let outcome = match stop {
            Some(why) => Outcome::NotRun(why.clone()),
            None => {
                let outcome = self.call(function, rf);
                if let Outcome::Failed(_) = &outcome
                    && stops_all
                {
                    *stop = Some(format!("`{function}` of {} failed", rf.label));
                }
                outcome
            }
        };
        Step {
            function,
            label: rf.label.clone(),
            outcome,
        }
    }

    fn call(&self, function: &'static str, rf: &Rediaccfile) -> Outcome {
        let status_file = match StatusFile::new() {
            Ok(f) => f,
            Err(e) => return Outcome::Failed(format!("{e:#}")),
        };
        eprintln!("renet: ==> {function} {}", rf.label);
        let result = Command::new("bash")
            .args(["--noprofile", "--norc", "-c", SCRIPT, "renet-rediaccfile"])
            .arg(&status_file.0)
            .arg(function)
            .arg(&rf.file_name)
            .current_dir(&rf.folder)
            .env_remove("DOCKER_CONTEXT")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .status();
        let status = match result {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(format!("cannot run bash: {e}")),
        };
        let marker = std::fs::read_to_string(&status_file.0).unwrap_or_default();
        match marker.as_str() {
            "missing" if status.success() => Outcome::Skipped,
            "run" if status.success() => Outcome::Ok,
            "run" => Outcome::Failed(describe(status)),
            _ => Outcome::Failed(format!(
                "{} while the file was being sourced",
                describe(status)
            )),
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// An empty 0600 temp file, removed on drop.
struct StatusFile(PathBuf);

impl StatusFile {
    fn new() -> Result<StatusFile> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "renet-repo-{}-{}.status",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(StatusFile(path))
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
