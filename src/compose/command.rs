//! `renet compose` and `renet ips`: resolves the network ID, repo root and compose files, then
//! allocates slots, vets, writes the override and hands over to docker compose (spec §4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::addresses::{
    MISSING_NETWORK_ID, NetworkId, network_id_from_socket, resolve_network_id, service_ip_vars,
    socket_file_name,
};
use crate::compose::files::{self, ComposeArgs as ComposeCliArgs};
use crate::compose::interpolation::interpolate;
use crate::compose::invoke;
use crate::compose::model::Project;
use crate::compose::rewrite;
use crate::compose::slots::{self, SlotTable};
use crate::compose::vetting;
use crate::host::daemons::DEFAULT_DATA_DIR;
use crate::host::repo_binding;
use crate::host::settings::DEFAULT_SOCKET_DIR;

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
    /// Allow the settings vetting refuses (privileged, host pid/ipc/userns, SYS_ADMIN, system
    /// bind mounts, Docker sockets). Another repo's secrets stay refused.
    #[arg(long = "unsafe")]
    pub allow_unsafe: bool,
    /// Print the docker compose command, its environment and renet's override; run nothing.
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

    let cli = ComposeCliArgs::parse(&args.compose_args)?;
    // COMPOSE_FILE / COMPOSE_PROFILES may also come from `.env` in the working folder.
    let env_dir = cli
        .project_directory
        .as_ref()
        .map(|d| cwd.join(d))
        .unwrap_or_else(|| cwd.clone());
    let dot_env_cwd: BTreeMap<String, String> = invoke::read_env_file(&env_dir.join(".env"))?
        .into_iter()
        .collect();
    let compose_file = std::env::var("COMPOSE_FILE")
        .ok()
        .or_else(|| dot_env_cwd.get("COMPOSE_FILE").cloned());
    let path_sep = std::env::var("COMPOSE_PATH_SEPARATOR")
        .ok()
        .or_else(|| dot_env_cwd.get("COMPOSE_PATH_SEPARATOR").cloned());
    let resolved = files::resolve(&cli, &cwd, compose_file.as_deref(), path_sep.as_deref())?;
    let project = Project::load(&resolved.files)?;

    // Interpolation environment as compose builds it: the process environment wins over the
    // env files, and renet's variables win over both.
    let mut env_files_vars: BTreeMap<String, String> = BTreeMap::new();
    if cli.env_files.is_empty() {
        env_files_vars.extend(invoke::read_env_file(&resolved.project_dir.join(".env"))?);
    } else {
        for f in &cli.env_files {
            let p = cwd.join(f);
            if !p.is_file() {
                bail!(
                    "{}: env file not found (given with --env-file)",
                    p.display()
                );
            }
            env_files_vars.extend(invoke::read_env_file(&p)?);
        }
    }

    // Check variable names before anything is written.
    let existing = slots::read(&repo_root)?;
    let all_names: Vec<&str> = existing
        .keys()
        .map(String::as_str)
        .chain(project.service_names.iter().map(String::as_str))
        .collect();
    service_ip_vars(all_names).map_err(|e| anyhow::anyhow!("{}: {e}", repo_root.display()))?;

    // Vet before allocating: a refused project leaves no trace in `.rediacc.json`.
    let pre_vars = ip_vars(network, &existing)?;
    let lookup = make_lookup(&pre_vars, &env_files_vars);
    let interp = |s: &str| interpolate(s, &lookup).unwrap_or_else(|_| s.to_string());
    let violations = vetting::vet(&project, network, args.allow_unsafe, &interp);
    if !violations.is_empty() {
        for v in &violations {
            eprintln!("renet: error: {v}");
        }
        bail!("{} setting(s) refused; nothing was run", violations.len());
    }

    let allocation = slots::allocate(&repo_root, &project.service_names)?;
    for (name, slot) in &allocation.added {
        tracing::debug!("service `{name}` got slot {slot}");
    }
    warn_shared_names(&repo_root, &resolved.project_dir, &project.service_names);
    let vars = ip_vars(network, &allocation.slots)?;
    let lookup = make_lookup(&vars, &env_files_vars);
    let interp = |s: &str| interpolate(s, &lookup).unwrap_or_else(|_| s.to_string());
    let rewrite = rewrite::rewrite(&project, network, &allocation.slots, &interp)
        .map_err(|e| anyhow::anyhow!(e))?;
    for w in &rewrite.warnings {
        eprintln!("renet: warning: {w}");
    }

    let mut child_env: Vec<(String, String)> = vars.clone();
    child_env.push(("REDIACC_NETWORK_ID".into(), network.to_string()));
    child_env.push(("DOCKER_HOST".into(), docker_host.clone()));

    let override_path = override_path(network, &resolved.project_dir, &resolved.files);
    let mut compose_args = cli.global.clone();
    for f in &resolved.files {
        compose_args.push("-f".into());
        compose_args.push(f.display().to_string());
    }
    compose_args.push("-f".into());
    compose_args.push(override_path.display().to_string());
    compose_args.extend(cli.rest.iter().cloned());

    let program = invoke::find_compose();
    if args.dry_run {
        let cmdline = match &program {
            Ok(p) => invoke::command_line(p, &compose_args),
            Err(_) => format!("docker compose {}", compose_args.join(" ")),
        };
        println!("# repo root: {}", repo_root.display());
        println!("# network {network}, daemon {docker_host}");
        println!("# command:\n{cmdline}");
        println!("# environment:");
        for (k, v) in &child_env {
            println!("{k}={v}");
        }
        println!("# override file {}:", override_path.display());
        print!("{}", rewrite.override_yaml);
        return Ok(0);
    }
    let program = program?;
    write_override(&override_path, &rewrite.override_yaml)?;
    Err(invoke::exec_compose(&program, &compose_args, &child_env))
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

fn make_lookup<'a>(
    vars: &'a [(String, String)],
    env_files: &'a BTreeMap<String, String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
            .or_else(|| env_files.get(name).cloned())
    }
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
fn override_path(network: NetworkId, project_dir: &Path, files: &[PathBuf]) -> PathBuf {
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
    let dir = std::env::var_os("RENET_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/renet/compose"));
    let name = project_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.join(format!("{network}-{name}-{h:016x}.override.yml"))
}

fn write_override(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().expect("override path has a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
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
