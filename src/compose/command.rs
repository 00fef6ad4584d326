//! `renet compose` and `renet ips`: resolves the network ID, repo root and compose files, then
//! asks compose for its resolved model, vets it, allocates slots, writes the final model and
//! the hosts file, and hands over to docker compose (spec §4, §5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::addresses::{
    MISSING_NETWORK_ID, NetworkId, network_id_from_socket, resolve_network_id, service_ip_vars,
    socket_file_name,
};
use crate::compose::files::{self, ComposeArgs as ComposeCliArgs};
use crate::compose::hosts::{self, RepoHosts};
use crate::compose::invoke;
use crate::compose::model::{self, SourceFile};
use crate::compose::resolved::{self, ConfigRun};
use crate::compose::rewrite;
use crate::compose::slots::{self, SlotTable};
use crate::compose::vetting::{self, VetContext};
use crate::host::daemons::DEFAULT_DATA_DIR;
use crate::host::repo_binding;
use crate::host::settings::{DEFAULT_SOCKET_DIR, Settings};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  renet compose -- up -d\n  renet compose --network-id 2816 -- -f other.yml config\n  renet compose --dry-run -- up -d"
)]
pub struct ComposeArgs {
    /// The repo's network ID (else REDIACC_NETWORK_ID, else DOCKER_HOST=unix://…/docker-<N>.sock).
    #[arg(long)]
    pub network_id: Option<NetworkId>,
    /// The repo root holding `.rediacc.json` (else REDIACC_WORKING_DIR, else the nearest
    /// folder upwards with `.rediacc.json` or a Rediaccfile, else the current folder).
    #[arg(long)]
    pub repo_root: Option<PathBuf>,
    /// Allow the settings vetting refuses (privileged, host namespaces, extra capabilities,
    /// devices, bind mounts outside the repo) and keep NET_RAW. What belongs to renet or to
    /// another repository (sockets, secrets, data roots and their parent folders) stays refused.
    #[arg(long = "unsafe")]
    pub allow_unsafe: bool,
    /// Print the docker compose command, its environment and renet's final model; run nothing.
    /// (Slots are still allocated, so the printed IPs are the real ones.)
    #[arg(long)]
    pub dry_run: bool,
    /// Folder of the repo daemons' sockets.
    #[arg(long, env = "RENET_SOCKET_DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// Folder of the repo daemons' data, where each network ID's repository root is recorded
    /// (`docker-<N>/repository.json`).
    #[arg(long, env = "RENET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Arguments for docker compose, after `--` (global flags like -f and --profile included).
    #[arg(last = true, required = true, value_name = "COMPOSE ARGS")]
    pub compose_args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct IpsArgs {
    /// The repo's network ID (else REDIACC_NETWORK_ID / DOCKER_HOST); without one only slots are shown.
    #[arg(long)]
    pub network_id: Option<NetworkId>,
    /// The repo root (resolved as for `renet compose`).
    #[arg(long)]
    pub repo_root: Option<PathBuf>,
    /// Folder of the repo daemons' data (where the network ID's root is recorded).
    #[arg(long, env = "RENET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The network ID from the flag or the process environment (`addresses::resolve_network_id`).
fn network_id_from_env(flag: Option<NetworkId>) -> Result<Option<NetworkId>> {
    resolve_network_id(
        flag,
        std::env::var("REDIACC_NETWORK_ID").ok().as_deref(),
        std::env::var("DOCKER_HOST").ok().as_deref(),
    )
}

/// Repo root: flag, `REDIACC_WORKING_DIR`, nearest folder with `.rediacc.json` or a
/// Rediaccfile, else `cwd`.
pub fn resolve_repo_root(flag: Option<&Path>, cwd: &Path) -> PathBuf {
    if let Some(f) = flag {
        return cwd.join(f);
    }
    if let Some(d) = std::env::var_os("REDIACC_WORKING_DIR").filter(|d| !d.is_empty()) {
        return cwd.join(d);
    }
    let mut dir = Some(cwd);
    while let Some(d) = dir {
        if ["Rediaccfile", "rediaccfile", slots::FILE_NAME]
            .iter()
            .any(|f| d.join(f).is_file())
        {
            return d.to_path_buf();
        }
        dir = d.parent();
    }
    cwd.to_path_buf()
}

pub fn run(args: ComposeArgs) -> Result<u8> {
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let network = network_id_from_env(args.network_id)?.context(MISSING_NETWORK_ID)?;
    let socket = args.socket_dir.join(socket_file_name(network));
    let docker_host = format!("unix://{}", socket.display());
    if let Ok(h) = std::env::var("DOCKER_HOST") {
        if let Some(other) = network_id_from_socket(&h).filter(|o| *o != network) {
            bail!(
                "DOCKER_HOST={h} names the daemon of network {other}, but this repo is network {network}: \
                 a repo's services must never land on another repo's daemon. Unset DOCKER_HOST or set it to {docker_host}"
            );
        }
        check_socket_dir(&h, &socket)?;
        if !h.is_empty() && network_id_from_socket(&h).is_none() {
            eprintln!(
                "renet: warning: DOCKER_HOST={h} ignored; using the repo daemon {docker_host}"
            );
        }
    }
    let repo_root = resolve_repo_root(args.repo_root.as_deref(), &cwd);
    if !repo_root.is_dir() {
        bail!("{}: the repo root is not a folder", repo_root.display());
    }
    // One network ID, one root: a subfolder is corrected to the root, another root refused.
    // A dry run records nothing.
    let repo_root = if args.dry_run {
        repo_binding::check(&args.data_dir, network, &repo_root)?
    } else {
        repo_binding::bind(&args.data_dir, network, &repo_root, &args.socket_dir)?
    };
    let settings_path = Settings::path(None);
    let settings = Settings::load(&settings_path)?;

    let cli = ComposeCliArgs::parse(&args.compose_args)?;
    let resolved = resolve_files(&cli, &cwd)?;
    let sources: Vec<SourceFile> = resolved.files.iter().map(|p| SourceFile::load(p)).collect();
    let (references, too_deep) = model::referenced_files(&sources);
    if let Some(p) = too_deep {
        bail!(
            "{}: `extends`/`include` chain deeper than {} files (a cycle?); nothing was run",
            p.display(),
            model::MAX_REFERENCE_DEPTH
        );
    }
    let program = invoke::find_compose()?;
    let runtime_dir = runtime_dir();
    // renet's folders as configured (the defaults are always protected too).
    let mut renet_dirs = vec![
        args.socket_dir.clone(),
        runtime_dir.clone(),
        settings.state_dir.clone(),
        settings.socket_dir.clone(),
    ];
    renet_dirs.extend(std::env::var_os("RENET_DATA_DIR").map(PathBuf::from));
    renet_dirs.retain(|d| d.is_absolute() && d.parent().is_some());
    let run = Run {
        network,
        docker_host: &docker_host,
        repo_root: &repo_root,
        cwd: &cwd,
        cli: &cli,
        project_dir: &resolved.project_dir,
        files: &resolved.files,
        sources: &sources,
        references: &references,
        program: &program,
        runtime_dir: &runtime_dir,
        vet: VetContext {
            network,
            repo_root: &repo_root,
            unsafe_ok: args.allow_unsafe,
            settings: &settings.compose,
            settings_path: &settings_path,
            renet_dirs: &renet_dirs,
            sources: &sources,
        },
    };

    // Slots are written only after vetting passed; if another run added services meanwhile,
    // the model is loaded again with the new `<SERVICE>_IP` values.
    let mut known = slots::read(&repo_root)?;
    // `config` only prints: compose can start now and read the vetted model from a pipe.
    let pending = (!args.dry_run && prints_only(&cli))
        .then(|| -> Result<_> {
            let mut early = final_args_prefix(&cli, &resolved.project_dir);
            early.extend(["-f".to_string(), "-".to_string()]);
            early.extend(cli.rest.iter().cloned());
            let env = child_env(network, &known, &docker_host)?;
            Ok(invoke::PendingSpawn::start(program.clone(), early, env))
        })
        .and_then(Result::ok);
    let mut attempt = 0;
    let (prepared, allocation) = loop {
        let prepared = run.prepare(known)?;
        let allocation = slots::allocate(&repo_root, &prepared.names)?;
        if allocation.slots == prepared.slots {
            break (prepared, allocation);
        }
        attempt += 1;
        if attempt == 5 {
            bail!(
                "{}: other renet compose runs keep changing the slots of this repo; run again",
                slots::file_path(&repo_root).display()
            );
        }
        known = allocation.slots;
    };
    for w in &prepared.rewrite.warnings {
        eprintln!("renet: warning: {w}");
    }
    warn_shared_names(&repo_root, &resolved.project_dir, &prepared.names);
    let env = child_env(network, &allocation.slots, &docker_host)?;

    let model_path = model_path(
        network,
        &resolved.project_dir,
        &resolved.files,
        &runtime_dir,
    );
    let mut compose_args = final_args_prefix(&cli, &resolved.project_dir);
    if !cli
        .global
        .iter()
        .any(|a| a == "-p" || a == "--project-name")
    {
        compose_args.push("-p".into());
        compose_args.push(prepared.project.clone());
    }
    compose_args.push("-f".into());
    compose_args.push(model_path.display().to_string());
    compose_args.extend(cli.rest.iter().cloned());
    let text = serde_json::to_string_pretty(&prepared.rewrite.model)? + "\n";

    if args.dry_run {
        println!("# repo root: {}", repo_root.display());
        println!("# network {network}, daemon {docker_host}");
        println!(
            "# command:\n{}",
            invoke::command_line(&program, &compose_args)
        );
        println!("# environment:");
        for (k, v) in &env {
            println!("{k}={v}");
        }
        println!("# model {}:", model_path.display());
        print!("{text}");
        return Ok(0);
    }
    hosts::write(
        &prepared.hosts,
        network,
        &allocation.slots,
        &prepared.rewrite.aliases,
        &prepared.rewrite.extra_hosts,
    )?;
    // The early compose has the same arguments but `-f -` for `-f <model>` and no `-p` (the
    // model's own `name`, which is the project name renet would pass); it is used only when it
    // was started with the final environment (no slot was added meanwhile). It reads the model
    // while renet writes the model file (kept for the `renet compose` runs that follow).
    let pending = pending.and_then(invoke::PendingSpawn::ready);
    if let Some(mut p) = pending.filter(|p| p.env() == env.as_slice()) {
        p.hand_over(text.as_bytes())?;
        write_model(&model_path, &text)?;
        return p.wait();
    }
    write_model(&model_path, &text)?;
    Err(invoke::exec_compose(&program, &compose_args, &env))
}

/// The run only prints the model: `config` (all of its forms), with the project not read
/// from stdin (`-f -`), which the early compose needs for the model.
fn prints_only(cli: &ComposeCliArgs) -> bool {
    cli.rest.first().is_some_and(|c| c == "config") && !cli.files.iter().any(|f| f == "-")
}

/// The global flags of the final compose run up to its `-p` and `-f`: the user's (without
/// `--env-file`), then the project folder unless the user gave one.
fn final_args_prefix(cli: &ComposeCliArgs, project_dir: &Path) -> Vec<String> {
    let mut args = cli.final_global();
    if cli.project_directory.is_none() {
        args.push("--project-directory".into());
        args.push(project_dir.display().to_string());
    }
    args
}

/// Everything one `renet compose` run works with.
struct Run<'a> {
    network: NetworkId,
    docker_host: &'a str,
    repo_root: &'a Path,
    cwd: &'a Path,
    cli: &'a ComposeCliArgs,
    project_dir: &'a Path,
    files: &'a [PathBuf],
    sources: &'a [SourceFile],
    references: &'a [model::Reference],
    program: &'a invoke::ComposeProgram,
    runtime_dir: &'a Path,
    vet: VetContext<'a>,
}

/// A vetted project, ready to be written and run.
struct Prepared {
    /// Every service of the repo with the slots the model was loaded with.
    slots: SlotTable,
    /// This project's services, in slot-allocation order.
    names: Vec<String>,
    project: String,
    hosts: RepoHosts,
    rewrite: rewrite::Rewrite,
}

impl Run<'_> {
    /// Loads compose's model with every `<SERVICE>_IP` set (the repo's known services; new
    /// services get their slots in memory and compose runs once more), vets it and builds the
    /// final model. Writes nothing.
    fn prepare(&self, known: SlotTable) -> Result<Prepared> {
        refuse(&vetting::vet_references(self.references, &self.vet))?;
        let file_order = model::service_names_in_order(self.sources);
        let mut planned = known;
        for _ in 0..3 {
            let vars = child_env(self.network, &planned, self.docker_host)?;
            let (model, env_files) = ConfigRun {
                program: self.program,
                global: &self.cli.config_global(self.files),
                cwd: self.cwd,
                env: &vars,
                files: self.files.to_vec(),
                with_env_files: model::may_read_env_files(self.sources, self.references),
            }
            .load();
            // The env files are judged even when compose failed: it may fail on a file it must
            // not read. (When compose shows neither, its own error comes first.)
            let mut violations = match (&env_files, &model) {
                (None, Err(_)) => Vec::new(),
                _ => vetting::vet_env_files(env_files.as_ref(), &self.vet),
            };
            if model.is_err() {
                refuse(&violations)?;
            }
            let model = model?;
            let names = resolved::service_names(&model, &file_order);
            let all: Vec<&str> = planned
                .keys()
                .map(String::as_str)
                .chain(names.iter().map(String::as_str))
                .collect();
            service_ip_vars(all)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.repo_root.display()))?;
            if !names.iter().all(|n| planned.contains_key(n)) {
                planned = slots::plan(self.repo_root, &names)?.slots;
                continue;
            }
            violations.extend(vetting::vet(&model, &self.vet));
            refuse(&violations)?;
            let project = model
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("default")
                .to_string();
            let hosts = RepoHosts::new(self.runtime_dir, self.network, self.repo_root, &project);
            let rewrite =
                rewrite::rewrite(&model, self.network, &planned, self.vet.unsafe_ok, &hosts)
                    .map_err(|e| {
                        anyhow::anyhow!("{}: {e}; nothing was run", self.project_dir.display())
                    })?;
            return Ok(Prepared {
                slots: planned,
                names,
                project,
                hosts,
                rewrite,
            });
        }
        bail!(
            "the service names of the project change with the `<SERVICE>_IP` variables; renet cannot give them addresses"
        )
    }
}

/// Prints the violations and fails when there are any.
fn refuse(violations: &[vetting::Violation]) -> Result<()> {
    if violations.is_empty() {
        return Ok(());
    }
    for v in violations {
        eprintln!("renet: error: {v}");
    }
    bail!("{} setting(s) refused; nothing was run", violations.len())
}

/// The compose files of the run (for line numbers, slot order and `extends`/`include`).
fn resolve_files(cli: &ComposeCliArgs, cwd: &Path) -> Result<files::ResolvedFiles> {
    // COMPOSE_FILE / COMPOSE_PATH_SEPARATOR may also come from `.env` in the working folder.
    let env_dir = cli
        .project_directory
        .as_ref()
        .map(|d| cwd.join(d))
        .unwrap_or_else(|| cwd.to_path_buf());
    let dot_env: BTreeMap<String, String> = invoke::read_env_file(&env_dir.join(".env"))?
        .into_iter()
        .collect();
    let compose_file = std::env::var("COMPOSE_FILE")
        .ok()
        .or_else(|| dot_env.get("COMPOSE_FILE").cloned());
    let path_sep = std::env::var("COMPOSE_PATH_SEPARATOR")
        .ok()
        .or_else(|| dot_env.get("COMPOSE_PATH_SEPARATOR").cloned());
    files::resolve(cli, cwd, compose_file.as_deref(), path_sep.as_deref())
}

/// renet's runtime folder (`RENET_RUNTIME_DIR`, default `/run/renet/compose`).
fn runtime_dir() -> PathBuf {
    std::env::var_os("RENET_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/renet/compose"))
}

/// `<SERVICE>_IP` for every service of `slots`, `REDIACC_NETWORK_ID` and `DOCKER_HOST`.
fn child_env(
    network: NetworkId,
    slots: &SlotTable,
    docker_host: &str,
) -> Result<Vec<(String, String)>> {
    let mut env = ip_vars(network, slots)?;
    env.push(("REDIACC_NETWORK_ID".into(), network.to_string()));
    env.push(("DOCKER_HOST".into(), docker_host.to_string()));
    Ok(env)
}

/// Refuses a `DOCKER_HOST` that names this network's socket in another folder than the one
/// renet uses (`--socket-dir` / `RENET_SOCKET_DIR`): the services would land on a daemon of
/// the same number elsewhere, e.g. a decoy in the default folder.
fn check_socket_dir(docker_host: &str, socket: &Path) -> Result<()> {
    let Some(path) = docker_host.strip_prefix("unix://") else {
        return Ok(());
    };
    let given = Path::new(path);
    if given.file_name() != socket.file_name() {
        return Ok(());
    }
    let same = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if same(given) != same(socket) {
        bail!(
            "DOCKER_HOST={docker_host} and the socket folder ({}) name two different daemons              for this network; set RENET_SOCKET_DIR (or --socket-dir) to {} or unset DOCKER_HOST",
            socket
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            given
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `<SERVICE>_IP` for every service of the repo.
fn ip_vars(network: NetworkId, slots: &SlotTable) -> Result<Vec<(String, String)>> {
    let names =
        service_ip_vars(slots.keys().map(String::as_str)).map_err(|e| anyhow::anyhow!(e))?;
    names
        .into_iter()
        .map(|(svc, var)| Ok((var, network.slot_ip(slots[&svc])?.to_string())))
        .collect()
}

/// Warns when a service name of this project is also used by another compose project of the
/// repo (they share one slot and one IP).
fn warn_shared_names(repo_root: &Path, project_dir: &Path, names: &[String]) {
    let Ok(entries) = std::fs::read_dir(repo_root) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = vec![repo_root.to_path_buf()];
    dirs.extend(
        entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path()),
    );
    for dir in dirs.iter().filter(|d| d.as_path() != project_dir) {
        let Ok(other) = crate::compose::model::service_names_in_dir(dir) else {
            continue;
        };
        for n in names.iter().filter(|n| other.contains(n)) {
            eprintln!(
                "renet: warning: service `{n}` is also defined in {}: both projects share its slot and IP",
                dir.display()
            );
        }
    }
}

/// A stable path per project, so the `com.docker.compose.project.config_files` label compose
/// puts on containers keeps pointing at a real file.
fn model_path(network: NetworkId, project_dir: &Path, files: &[PathBuf], dir: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |s: &str| {
        for b in s.bytes().chain(std::iter::once(0)) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    };
    feed(&project_dir.display().to_string());
    for f in files {
        feed(&f.display().to_string());
    }
    let name = project_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.join(format!("{network}-{name}-{h:016x}.compose.json"))
}

fn write_model(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().expect("model path has a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    crate::atomic_file::write(path, text.as_bytes(), None)
        .with_context(|| format!("{}: cannot write", path.display()))
}

pub fn run_ips(args: IpsArgs) -> Result<u8> {
    let cwd = std::env::current_dir()?;
    let network = network_id_from_env(args.network_id)?;
    let mut root = resolve_repo_root(args.repo_root.as_deref(), &cwd);
    if let Some(n) = network {
        root = repo_binding::check(&args.data_dir, n, &root)?;
    }
    let table = slots::read(&root)?;
    let vars = service_ip_vars(table.keys().map(String::as_str)).map_err(|e| anyhow::anyhow!(e))?;
    let mut rows: Vec<(String, u32, Option<String>, String)> = vars
        .into_iter()
        .map(|(svc, var)| {
            let slot = table[&svc];
            let ip = network
                .map(|n| n.slot_ip(slot).map(|ip| ip.to_string()))
                .transpose()?;
            Ok((svc, slot, ip, var))
        })
        .collect::<Result<_>>()?;
    rows.sort_by_key(|r| r.1);
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(s, slot, ip, var)| serde_json::json!({"service": s, "slot": slot, "ip": ip, "variable": var}))
            .collect();
        let doc = serde_json::json!({
            "repo_root": root.display().to_string(),
            "network_id": network.map(|n| n.get()),
            "services": list,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{:<24} {:>4}  {:<15} VARIABLE", "SERVICE", "SLOT", "IP");
        for (s, slot, ip, var) in &rows {
            println!(
                "{s:<24} {slot:>4}  {:<15} {var}",
                ip.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(0)
}
