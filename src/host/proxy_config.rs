//! `renet proxy config`: Traefik v3 static configuration, its Cloudflare env file and the
//! systemd units of Traefik and the route server (spec §7).
//!
//! The flags are merged into the settings file that `renet route-server` also reads, and the
//! static configuration is rendered from that merged file alone. So the entrypoints Traefik
//! opens are exactly the ones the route server routes to, and rerunning the command without
//! flags regenerates the same bytes.
//!
//! Everything is validated and rendered in memory first; only then are files written (each
//! atomically), so bad input leaves no partial state.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::host::settings::Settings;

/// File names inside the output folder.
pub const STATIC_CONFIG_FILE: &str = "traefik.yml";
/// The folder of Traefik's file provider, below the output folder.
pub const DYNAMIC_DIR: &str = "dynamic";
/// The routes file the route server writes there with the `file` provider.
pub const ROUTES_FILE: &str = "routes.yaml";
/// renet's own dynamic configuration there (the entrypoints' retry middleware).
pub const DEFAULTS_FILE: &str = "renet-defaults.yaml";
/// The retry middlewares every HTTP entrypoint uses, outermost first (docs/performance.md,
/// "Redeploys"; Traefik ≥ 3.7, whose `retry` middleware has `status` and `timeout`). Both
/// follow Traefik's own retry semantics:
/// - `renet-replay`: an idempotent request (every method but POST, PATCH and LOCK, with a body
///   of at most [`REPLAY_MAX_BODY_BYTES`]) answered 502 — the backend dropped it with the
///   connection, as a process killed by `docker stop` does with the requests it holds — is
///   sent once more. POST, PATCH and LOCK are never sent twice.
/// - `renet-retry`: a request that could not be sent at all (the port is closed while compose
///   recreates the container) is retried with backoff until the replacement answers, for at
///   most [`RETRY_TIMEOUT`]; Traefik never resends a request after it wrote a byte of it.
pub const RETRY_MIDDLEWARES: [&str; 2] = ["renet-replay@file", "renet-retry@file"];
/// How long a request that finds the port closed is retried. Traefik's backoff grows from
/// the initial interval to twice it over all attempts (100 attempts from 100 ms: about 14 s
/// of waits), so the timeout is what bounds it. The old default, 10 attempts, covered only
/// about 1.3 s — shorter than many recreates.
pub const RETRY_TIMEOUT: &str = "10s";
const RETRY_ATTEMPTS: u32 = 100;
const RETRY_INITIAL_INTERVAL: &str = "100ms";
/// Request bodies up to this size are kept for a replay; a larger body goes through
/// unbuffered and without a replay (every buffered byte is Traefik memory, per request).
pub const REPLAY_MAX_BODY_BYTES: u32 = 64 * 1024;

/// The oldest Traefik the generated configuration works with: the retry middlewares'
/// `status` and `timeout` are new in 3.7.0, and an older Traefik rejects the whole defaults
/// file, which would leave every HTTP router without its entrypoint's middlewares.
pub const MIN_TRAEFIK: (u32, u32) = (3, 7);

/// `traefik version`'s `Version:` line as (major, minor, patch).
pub fn parse_traefik_version(output: &str) -> Option<(u32, u32, u32)> {
    let v = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))?
        .trim()
        .trim_start_matches('v');
    let mut parts = v.split(['.', '-', '+']).map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Refuses a Traefik older than [`MIN_TRAEFIK`] at `bin`; a note when it cannot be asked (not
/// installed yet, or its answer is not understood): the files are still written.
fn check_traefik_version(bin: &Path) -> Result<Option<String>> {
    let out = match std::process::Command::new(bin).arg("version").output() {
        Ok(out) if out.status.success() => out,
        _ => {
            return Ok(Some(format!(
                "note: could not run `{} version`; install Traefik {}.{} or later there before \
                 starting {TRAEFIK_UNIT}",
                bin.display(),
                MIN_TRAEFIK.0,
                MIN_TRAEFIK.1
            )));
        }
    };
    match parse_traefik_version(&String::from_utf8_lossy(&out.stdout)) {
        Some((major, minor, patch)) if (major, minor) < MIN_TRAEFIK => bail!(
            "renet proxy config: {} is Traefik {major}.{minor}.{patch}; the generated entrypoints \
             need {}.{} or later (their retry middlewares use `status` and `timeout`). Install a \
             newer Traefik, or point --traefik-bin at one; nothing was written",
            bin.display(),
            MIN_TRAEFIK.0,
            MIN_TRAEFIK.1
        ),
        Some(_) => Ok(None),
        None => Ok(Some(format!(
            "note: `{} version` names no version renet understands; Traefik {}.{} or later is \
             needed",
            bin.display(),
            MIN_TRAEFIK.0,
            MIN_TRAEFIK.1
        ))),
    }
}

/// renet's own dynamic configuration (`renet-defaults.yaml` in the file provider's folder):
/// the two retry middlewares of [`RETRY_MIDDLEWARES`].
pub fn defaults_dynamic_yaml() -> String {
    format!(
        "# renet's own dynamic configuration, written by `renet proxy config`.\n\
         http:\n  middlewares:\n\
         \x20   renet-replay:\n      retry:\n        attempts: 2\n        initialInterval: \"{RETRY_INITIAL_INTERVAL}\"\n\
         \x20       timeout: \"{RETRY_TIMEOUT}\"\n        status: [\"502\"]\n        disableRetryOnNetworkError: true\n\
         \x20       maxRequestBodyBytes: {REPLAY_MAX_BODY_BYTES}\n\
         \x20   renet-retry:\n      retry:\n        attempts: {RETRY_ATTEMPTS}\n        initialInterval: \"{RETRY_INITIAL_INTERVAL}\"\n\
         \x20       timeout: \"{RETRY_TIMEOUT}\"\n"
    )
}

/// Traefik applies a provider's next configuration at most this often (the first change
/// after a quiet spell is applied at once).
const PROVIDERS_THROTTLE: &str = "500ms";
pub const ENV_FILE: &str = "traefik.env";
pub const ACME_FILE: &str = "acme.json";
pub const ROUTE_SERVER_UNIT: &str = "renet-route-server.service";
pub const TRAEFIK_UNIT: &str = "traefik.service";
/// The repo daemon template unit: `renet-daemon@2816.service`.
pub const DAEMON_UNIT: &str = "renet-daemon@.service";
/// Defaults of the paths `renet proxy config` remembers (`ProxySettings`).
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
pub const DEFAULT_RENET_BIN: &str = "/usr/local/bin/renet";
pub const DEFAULT_TRAEFIK_BIN: &str = "/usr/local/bin/traefik";

/// What `renet proxy config` remembers besides the shared settings: where it wrote the units
/// and which binaries they run (so a later run, e.g. a token rotation, rewrites the same
/// units), the preset TCP/UDP ports, Traefik's optional access log and metrics. Stored as the
/// `proxy` object of the settings file; every field is optional (None → the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySettings {
    /// Folder of the systemd units [default /etc/systemd/system].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_dir: Option<PathBuf>,
    /// The renet binary the units run [default /usr/local/bin/renet].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renet_bin: Option<PathBuf>,
    /// The traefik binary [default /usr/local/bin/traefik].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traefik_bin: Option<PathBuf>,
    /// The repo daemons' data folder (repository registry) [default /var/lib/rediacc].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Preset TCP entrypoint ports; None → 3306, 5432, 6379, 27017, 11211, 5672, 9092.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset_tcp_ports: Option<Vec<u16>>,
    /// Preset UDP entrypoint ports; None → 53.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset_udp_ports: Option<Vec<u16>>,
    /// Traefik's access log file (JSON lines); None → no access log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<PathBuf>,
    /// Loopback address of Traefik's Prometheus metrics entrypoint; None → no metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traefik_metrics_address: Option<String>,
    /// How Traefik gets the routes: `file` (the route server writes them into the dynamic
    /// folder, Traefik's file provider sees each change at once) or `http` (Traefik polls
    /// `/routes.yaml` every 5 s); None → `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_provider: Option<String>,
}

impl ProxySettings {
    pub fn unit_dir(&self) -> PathBuf {
        self.unit_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_UNIT_DIR.into())
    }
    pub fn renet_bin(&self) -> PathBuf {
        self.renet_bin
            .clone()
            .unwrap_or_else(|| DEFAULT_RENET_BIN.into())
    }
    pub fn traefik_bin(&self) -> PathBuf {
        self.traefik_bin
            .clone()
            .unwrap_or_else(|| DEFAULT_TRAEFIK_BIN.into())
    }
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| crate::host::daemons::DEFAULT_DATA_DIR.into())
    }
}

/// Preset TCP and UDP ports; None → the built-in list.
pub type PresetPorts = (Option<Vec<u16>>, Option<Vec<u16>>);

/// `--preset-ports none|default|LIST`: LIST is comma separated, `PORT` (TCP) or `PORT/udp`.
/// Returns (TCP, UDP); `default` → (None, None).
pub fn parse_preset_ports(v: &str) -> Result<PresetPorts> {
    match v.trim() {
        "default" => return Ok((None, None)),
        "none" | "" => return Ok((Some(Vec::new()), Some(Vec::new()))),
        _ => {}
    }
    let mut tcp = std::collections::BTreeSet::new();
    let mut udp = std::collections::BTreeSet::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('/') {
            Some((p, "udp")) => udp.insert(parse_port(p)?),
            Some((p, "tcp")) => tcp.insert(parse_port(p)?),
            Some((_, proto)) => bail!("`{item}`: `{proto}` is not tcp or udp"),
            None => tcp.insert(parse_port(item)?),
        };
    }
    Ok((
        Some(tcp.into_iter().collect()),
        Some(udp.into_iter().collect()),
    ))
}
/// The certificate resolver every route refers to by default (`Settings::cert_resolver`).
pub const RESOLVER: &str = "letsencrypt";
/// The variable Traefik's Cloudflare DNS provider (lego) reads.
pub const TOKEN_VAR: &str = "CF_DNS_API_TOKEN";

#[derive(Debug, clap::Subcommand)]
pub enum ProxyCommand {
    /// Save the infrastructure settings, then write Traefik's static configuration, its env
    /// file and the systemd units.
    Config(Box<ConfigArgs>),
}

/// Flags named like `rdc context set-infra`. A flag that is not given keeps the value already
/// in the settings file; an empty value (`--public-ipv6 ''`, `--tcp-ports ''`) clears it.
#[derive(Debug, Default, clap::Args)]
pub struct ConfigArgs {
    /// Settings file shared with the route server [default: /etc/rediacc/renet.json].
    #[arg(long, env = "RENET_SETTINGS")]
    pub settings: Option<PathBuf>,
    /// Folder for traefik.yml, traefik.env and acme.json [default: the settings' traefik_dir].
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Folder the systemd units are written to; remembered [default: /etc/systemd/system].
    #[arg(long)]
    pub unit_dir: Option<PathBuf>,
    /// Folder of the repo daemons' sockets the route server watches [settings: socket_dir].
    #[arg(long)]
    pub socket_dir: Option<PathBuf>,
    /// Folder of the route server's state (ports, last known containers) [settings: state_dir].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Folder of the repo daemons' data (repository registry); remembered
    /// [default: /var/lib/rediacc].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Preset TCP/UDP entrypoints: `none`, `default` (TCP 3306, 5432, 6379, 27017, 11211,
    /// 5672, 9092 and UDP 53) or a list (`5432,6379,53/udp`); remembered.
    #[arg(long, value_name = "none|default|LIST")]
    pub preset_ports: Option<String>,
    /// Traefik access log file (JSON lines); empty → none; remembered.
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<String>,
    /// Loopback address for Traefik's Prometheus metrics (`127.0.0.1:8082`); empty → none;
    /// remembered.
    #[arg(long, value_name = "IP:PORT")]
    pub traefik_metrics: Option<String>,
    /// Public IPv4 address Traefik binds. Without one, Traefik binds 127.0.0.1 (a test machine).
    #[arg(long)]
    pub public_ipv4: Option<String>,
    /// Public IPv6 address; adds the `web-v6` and `websecure-v6` entrypoints.
    #[arg(long)]
    pub public_ipv6: Option<String>,
    /// Base domain of automatic routes (`{service}-{networkID}.<base domain>`).
    #[arg(long)]
    pub base_domain: Option<String>,
    /// ACME account e-mail of the `letsencrypt` resolver.
    #[arg(long)]
    pub cert_email: Option<String>,
    /// Cloudflare API token (Zone:DNS:Edit) for the DNS-01 challenge; stored only in the
    /// 0600 env file. Prefer the environment variable: flags show up in `ps`.
    #[arg(long, env = "CF_DNS_API_TOKEN", hide_env_values = true)]
    pub cf_dns_token: Option<String>,
    /// Extra TCP ports registered with the proxy, comma separated (`25,143,993`).
    #[arg(long)]
    pub tcp_ports: Option<String>,
    /// Extra UDP ports registered with the proxy, comma separated (`53`).
    #[arg(long)]
    pub udp_ports: Option<String>,
    /// Port of the `web` entrypoints (80 in production).
    #[arg(long)]
    pub http_port: Option<String>,
    /// Port of the `websecure` entrypoints (443 in production).
    #[arg(long)]
    pub https_port: Option<String>,
    /// The dynamic TCP range, `FIRST-LAST` (10000-10010).
    #[arg(long)]
    pub dynamic_range: Option<String>,
    /// The route server's loopback listen address (`127.0.0.1:7111`).
    #[arg(long)]
    pub route_server: Option<String>,
    /// Loopback address for Traefik's API and ping (`127.0.0.1:8080`); empty → no API.
    #[arg(long)]
    pub api_address: Option<String>,
    /// The renet binary the units run; remembered [default: /usr/local/bin/renet].
    #[arg(long)]
    pub renet_bin: Option<PathBuf>,
    /// The traefik binary the Traefik unit runs; remembered [default: /usr/local/bin/traefik].
    #[arg(long)]
    pub traefik_bin: Option<PathBuf>,
    /// How Traefik gets the routes: `file` (pushed: the route server writes
    /// `<out dir>/dynamic/routes.yaml`, Traefik's file provider applies each change at once) or
    /// `http` (Traefik polls `/routes.yaml` every 5 s); remembered [default: file].
    #[arg(long, value_name = "file|http", value_parser = ["file", "http"])]
    pub dynamic_provider: Option<String>,
    /// Write a cluster edge instead of a server: a Traefik reading the routes of every server
    /// from etcd (`traefik-edge.yml` and `traefik-edge.service`; docs/cluster.md).
    #[arg(long)]
    pub edge: bool,
    /// With --edge: the etcd endpoints of the cluster, comma separated
    /// (`https://10.0.0.5:2379,https://10.0.0.6:2379,https://10.0.0.7:2379`); remembered in
    /// the settings' `cluster.endpoints` [settings: cluster.endpoints].
    #[arg(long, value_name = "ENDPOINTS")]
    pub cluster: Option<String>,
}

pub fn run(cmd: ProxyCommand) -> Result<u8> {
    match cmd {
        ProxyCommand::Config(args) => {
            let report = config(&args)?;
            for line in report {
                eprintln!("renet: {line}");
            }
            Ok(0)
        }
    }
}

/// Where the generated files go.
#[derive(Debug, Clone)]
pub struct OutputPaths {
    pub settings: PathBuf,
    pub out_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub renet_bin: PathBuf,
    pub traefik_bin: PathBuf,
    pub data_dir: PathBuf,
}

impl OutputPaths {
    /// The folder Traefik's file provider watches: renet's defaults (the retry middleware)
    /// and, with the `file` provider, the routes the route server writes.
    pub fn dynamic_dir(&self) -> PathBuf {
        self.out_dir.join(DYNAMIC_DIR)
    }
    pub fn static_config(&self) -> PathBuf {
        self.out_dir.join(STATIC_CONFIG_FILE)
    }
    pub fn env_file(&self) -> PathBuf {
        self.out_dir.join(ENV_FILE)
    }
    pub fn acme_storage(&self) -> PathBuf {
        self.out_dir.join(ACME_FILE)
    }
}

/// The generated files, rendered in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub static_config: String,
    /// `dynamic/renet-defaults.yaml`: the middlewares the entrypoints use.
    pub defaults_dynamic: String,
    pub route_server_unit: String,
    pub traefik_unit: String,
    pub daemon_unit: String,
}

/// The whole command: merge, validate, render, then write. Returns what it did, for the user.
pub fn config(args: &ConfigArgs) -> Result<Vec<String>> {
    if args.edge {
        return crate::host::edge_config::config(args);
    }
    if args.cluster.is_some() {
        bail!(
            "renet proxy config: --cluster writes an edge and needs --edge; a server joins the \
             cluster with `renet route-server --cluster` or the settings' `cluster` object"
        );
    }
    let settings_path = Settings::path(args.settings.as_deref());
    let mut settings = Settings::load(&settings_path)?;
    merge(&mut settings, args).with_context(|| "renet proxy config: invalid flag".to_string())?;
    validate(&settings).with_context(|| {
        format!(
            "renet proxy config: invalid settings (flags merged into {}); nothing was written",
            settings_path.display()
        )
    })?;
    let token = match &args.cf_dns_token {
        Some(t) => Some(validate_token(t).context("renet proxy config: --cf-dns-token")?),
        None => None,
    };
    let paths = OutputPaths {
        settings: absolute(&settings_path)?,
        out_dir: absolute(&settings.traefik_dir)?,
        unit_dir: absolute(&settings.proxy.unit_dir())?,
        renet_bin: absolute(&settings.proxy.renet_bin())?,
        traefik_bin: absolute(&settings.proxy.traefik_bin())?,
        data_dir: absolute(&settings.proxy.data_dir())?,
    };
    settings.traefik_dir = paths.out_dir.clone();
    settings.dynamic_file = match settings.proxy.dynamic_provider.as_deref() {
        Some("http") => None,
        _ => Some(paths.dynamic_dir().join(ROUTES_FILE)),
    };
    let rendered = render(&settings, &paths);

    let mut report = Vec::new();
    if let Some(note) = check_traefik_version(&paths.traefik_bin)? {
        report.push(note);
    }
    let mut settings_text = serde_json::to_string_pretty(&settings)?;
    settings_text.push('\n');
    write_file(&settings_path, settings_text.as_bytes(), None)?;
    report.push(format!("saved settings to {}", settings_path.display()));

    let env_path = paths.env_file();
    match token {
        Some(t) => {
            write_file(
                &env_path,
                format!("{TOKEN_VAR}={t}\n").as_bytes(),
                Some(0o600),
            )?;
            report.push(format!(
                "wrote the Cloudflare token to {} (mode 0600)",
                env_path.display()
            ));
        }
        None if env_path.exists() => {
            let mode = std::fs::metadata(&env_path)
                .with_context(|| format!("{}: cannot read", env_path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("{}: cannot chmod 0600", env_path.display()))?;
                report.push(format!(
                    "{}: was readable by others (mode {:o}); set to 0600",
                    env_path.display(),
                    mode & 0o777
                ));
            }
            report.push(format!("kept the token in {}", env_path.display()));
        }
        None => {
            // The Traefik unit names this file; systemd refuses to start a unit whose
            // EnvironmentFile is missing, so an empty one is better than none.
            let body = format!(
                "# {TOKEN_VAR}=<Cloudflare API token with Zone:DNS:Edit>\n# Written by `renet proxy config`; set it with --cf-dns-token.\n"
            );
            write_file(&env_path, body.as_bytes(), Some(0o600))?;
            report.push(format!(
                "warning: no Cloudflare token given: `{RESOLVER}` cannot issue certificates until \
                 `renet proxy config --cf-dns-token …` is run ({} written without one)",
                env_path.display()
            ));
        }
    }

    let dynamic_dir = paths.dynamic_dir();
    std::fs::create_dir_all(&dynamic_dir)
        .with_context(|| format!("{}: cannot create", dynamic_dir.display()))?;
    share_with_route_server(&dynamic_dir)?;
    write_file(
        &dynamic_dir.join(DEFAULTS_FILE),
        rendered.defaults_dynamic.as_bytes(),
        Some(0o644),
    )?;
    let yml = paths.static_config();
    write_file(&yml, rendered.static_config.as_bytes(), None)?;
    report.push(format!(
        "wrote the Traefik static configuration {}",
        yml.display()
    ));
    for (name, body) in [
        (ROUTE_SERVER_UNIT, &rendered.route_server_unit),
        (TRAEFIK_UNIT, &rendered.traefik_unit),
        (DAEMON_UNIT, &rendered.daemon_unit),
    ] {
        let p = paths.unit_dir.join(name);
        write_file(&p, body.as_bytes(), None)?;
        report.push(format!("wrote {}", p.display()));
    }
    report.push(format!(
        "next: systemctl daemon-reload && systemctl enable --now {ROUTE_SERVER_UNIT} {TRAEFIK_UNIT}; \
         each repository: systemctl enable --now renet-daemon@<network ID>.service"
    ));
    Ok(report)
}

/// The route server runs as a dynamic user in the `docker` group and replaces the routes file
/// in the dynamic folder (a temp file, then a rename), so the folder is `root:docker 0775`
/// where that group exists (on a machine without it, root-only is all there is).
fn share_with_route_server(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("docker") {
        nix::unistd::chown(dir, None, Some(group.gid))
            .with_context(|| format!("{}: cannot give it to group docker", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o775))
            .with_context(|| format!("{}: cannot chmod 0775", dir.display()))?;
    }
    Ok(())
}

/// Applies the flags that were given to the settings.
pub fn merge(s: &mut Settings, a: &ConfigArgs) -> Result<()> {
    fn opt(v: &str) -> Option<String> {
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_string())
    }
    if let Some(v) = &a.public_ipv4 {
        s.public_ipv4 = opt(v);
    }
    if let Some(v) = &a.public_ipv6 {
        s.public_ipv6 = opt(v);
    }
    if let Some(v) = &a.base_domain {
        s.base_domain = opt(v).map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    }
    if let Some(v) = &a.cert_email {
        s.cert_email = opt(v);
    }
    if let Some(v) = &a.tcp_ports {
        s.tcp_ports = parse_port_list(v).context("--tcp-ports")?;
    }
    if let Some(v) = &a.udp_ports {
        s.udp_ports = parse_port_list(v).context("--udp-ports")?;
    }
    if let Some(v) = &a.http_port {
        s.http_port = parse_port(v).context("--http-port")?;
    }
    if let Some(v) = &a.https_port {
        s.https_port = parse_port(v).context("--https-port")?;
    }
    if let Some(v) = &a.dynamic_range {
        let (first, last) = v
            .split_once('-')
            .with_context(|| format!("--dynamic-range: `{v}` is not FIRST-LAST (10000-10010)"))?;
        s.dynamic_range = [
            parse_port(first).context("--dynamic-range")?,
            parse_port(last).context("--dynamic-range")?,
        ];
    }
    if let Some(v) = &a.route_server {
        s.listen = v.trim().to_string();
    }
    if let Some(v) = &a.api_address {
        s.traefik_api_address = opt(v);
    }
    if let Some(v) = &a.out_dir {
        s.traefik_dir = v.clone();
    }
    if let Some(v) = &a.socket_dir {
        s.socket_dir = absolute(v)?;
    }
    if let Some(v) = &a.state_dir {
        s.state_dir = absolute(v)?;
    }
    let p = &mut s.proxy;
    if let Some(v) = &a.unit_dir {
        p.unit_dir = Some(absolute(v)?);
    }
    if let Some(v) = &a.renet_bin {
        p.renet_bin = Some(absolute(v)?);
    }
    if let Some(v) = &a.traefik_bin {
        p.traefik_bin = Some(absolute(v)?);
    }
    if let Some(v) = &a.data_dir {
        p.data_dir = Some(absolute(v)?);
    }
    if let Some(v) = &a.preset_ports {
        (p.preset_tcp_ports, p.preset_udp_ports) =
            parse_preset_ports(v).context("--preset-ports")?;
    }
    if let Some(v) = &a.access_log {
        p.access_log = opt(v).map(|f| absolute(Path::new(&f))).transpose()?;
    }
    if let Some(v) = &a.traefik_metrics {
        p.traefik_metrics_address = opt(v);
    }
    if let Some(v) = &a.dynamic_provider {
        p.dynamic_provider = Some(v.clone());
    }
    Ok(())
}

/// A port number 1..=65535.
pub fn parse_port(s: &str) -> Result<u16> {
    match s.trim().parse::<u32>() {
        Ok(0) => bail!("port 0 is not a port; use 1..=65535"),
        Ok(p) if p <= 65535 => Ok(p as u16),
        Ok(p) => bail!("port {p} is out of range; use 1..=65535"),
        Err(_) => bail!("`{}` is not a port number (1..=65535)", s.trim()),
    }
}

/// `25,143, 993` → sorted, without duplicates. Empty → empty.
pub fn parse_port_list(s: &str) -> Result<Vec<u16>> {
    let mut ports = std::collections::BTreeSet::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        ports.insert(parse_port(item)?);
    }
    Ok(ports.into_iter().collect())
}

/// Checks everything the static configuration is built from. The error names the setting.
pub fn validate(s: &Settings) -> Result<()> {
    if let Some(ip) = &s.public_ipv4 {
        let parsed: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("public_ipv4: `{ip}` is not an IPv4 address"))?;
        if parsed.is_unspecified() || parsed.is_broadcast() || parsed.is_multicast() {
            bail!(
                "public_ipv4: `{ip}` cannot be bound as one address; give the server's public IPv4"
            );
        }
    }
    if let Some(ip) = &s.public_ipv6 {
        let parsed: Ipv6Addr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("public_ipv6: `{ip}` is not an IPv6 address"))?;
        if parsed.is_unspecified() || parsed.is_multicast() {
            bail!(
                "public_ipv6: `{ip}` cannot be bound as one address; give the server's public IPv6"
            );
        }
    }
    if let Some(d) = &s.base_domain {
        validate_domain(d).with_context(|| format!("base_domain: `{d}`"))?;
    }
    if let Some(e) = &s.cert_email {
        validate_email(e).with_context(|| format!("cert_email: `{e}`"))?;
    }
    for (what, p) in [("http_port", s.http_port), ("https_port", s.https_port)] {
        if p == 0 {
            bail!("{what}: port 0 is not a port; use 1..=65535");
        }
    }
    for p in s.tcp_ports.iter().chain(&s.udp_ports) {
        if *p == 0 {
            bail!("tcp_ports/udp_ports: port 0 is not a port; use 1..=65535");
        }
    }
    let [first, last] = s.dynamic_range;
    if first == 0 || first > last {
        bail!("dynamic_range: {first}-{last} is not a range of ports (FIRST-LAST, 1..=65535)");
    }
    if last - first >= 1000 {
        bail!(
            "dynamic_range: {first}-{last} has {} ports; Traefik opens one listener per port, keep it under 1000",
            last - first + 1
        );
    }
    let listen: SocketAddr = s.listen.parse().with_context(|| {
        format!(
            "listen: `{}` is not an address:port (127.0.0.1:7111)",
            s.listen
        )
    })?;
    if !listen.ip().is_loopback() {
        bail!(
            "listen: the route server must listen on loopback, not `{}`",
            s.listen
        );
    }
    if let Some(api) = &s.traefik_api_address {
        let a: SocketAddr = api.parse().with_context(|| {
            format!("traefik_api_address: `{api}` is not an address:port (127.0.0.1:8080)")
        })?;
        if !a.ip().is_loopback() || a.port() == 0 {
            bail!(
                "traefik_api_address: `{api}`: the API has no authentication; give a loopback address and port (127.0.0.1:8080)"
            );
        }
    }
    if let Some(m) = &s.proxy.traefik_metrics_address {
        let a: SocketAddr = m.parse().with_context(|| {
            format!("proxy.traefik_metrics_address: `{m}` is not an address:port (127.0.0.1:8082)")
        })?;
        if !a.ip().is_loopback() || a.port() == 0 {
            bail!(
                "proxy.traefik_metrics_address: `{m}`: metrics show every router and service; \
                 give a loopback address and port (127.0.0.1:8082)"
            );
        }
    }
    let known = entrypoint_names(s);
    for ep in &s.entrypoints {
        if !known.contains(ep) {
            bail!(
                "entrypoints: automatic routes use `{ep}`, which Traefik will not have (it has {}){}",
                known.join(", "),
                if ep.ends_with("-v6") {
                    "; set public_ipv6 or remove it"
                } else {
                    ""
                }
            );
        }
    }
    // Two entrypoints on one address and port would make Traefik fail at start.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (name, ep) in entrypoints(s) {
        let addr = ep.address;
        if let Some(other) = seen.insert(addr.clone(), name.clone()) {
            bail!(
                "entrypoints `{other}` and `{name}` would both listen on {addr}; change a port (http_port, https_port, tcp_ports, dynamic_range, traefik_api_address)"
            );
        }
    }
    Ok(())
}

fn validate_domain(d: &str) -> Result<()> {
    if d.len() > 253 {
        bail!("longer than 253 characters");
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        bail!("not a domain name: give at least two labels (example.com)");
    }
    for l in labels {
        if l.is_empty() || l.len() > 63 {
            bail!("label `{l}` must have 1 to 63 characters");
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("label `{l}` may only hold a-z, 0-9 and `-` (use punycode for other letters)");
        }
        if l.starts_with('-') || l.ends_with('-') {
            bail!("label `{l}` must not start or end with `-`");
        }
    }
    Ok(())
}

fn validate_email(e: &str) -> Result<()> {
    let Some((local, domain)) = e.split_once('@') else {
        bail!("not an e-mail address (no `@`)");
    };
    if local.is_empty() || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("not an e-mail address");
    }
    validate_domain(&domain.to_ascii_lowercase()).context("the domain part")
}

/// Cloudflare tokens are letters, digits, `-` and `_`; anything else would need quoting in
/// the env file and is far more likely a paste error.
fn validate_token(t: &str) -> Result<String> {
    let t = t.trim();
    if t.is_empty() {
        bail!("the token is empty");
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        bail!(
            "the token holds characters other than letters, digits, `-`, `_` and `.`; check what was pasted"
        );
    }
    Ok(t.to_string())
}

/// One entrypoint of the static configuration.
#[derive(Debug, Clone)]
pub(crate) struct EntryPoint {
    /// `ip:port` or `ip:port/udp`, the form Traefik takes.
    pub(crate) address: String,
    /// For `web`/`web-v6`: the entrypoint to redirect to.
    redirect_to: Option<&'static str>,
    /// Routers on this entrypoint use TLS by default.
    tls: bool,
    /// One of Traefik's default entrypoints (`asDefault`): a router that names no entrypoint
    /// is served only on these (web, websecure and their -v6 twins), never on a `tcp-*`,
    /// `udp-*`, API or metrics entrypoint.
    default: bool,
    /// Serves HTTP (TCP entrypoints do): gets the `aliasHeadersStrategy`.
    pub(crate) http: bool,
}

/// The address HTTP(S), TCP and UDP entrypoints bind on IPv4: the public IPv4, else loopback.
/// Never the wildcard: on a server with several addresses, Traefik must not take ports on
/// addresses (other repos' loopback blocks, private networks) it does not own.
fn ipv4_bind(s: &Settings) -> String {
    s.public_ipv4.clone().unwrap_or_else(|| "127.0.0.1".into())
}

pub(crate) fn entrypoints(s: &Settings) -> Vec<(String, EntryPoint)> {
    let v4 = ipv4_bind(s);
    let mut out = vec![
        (
            "web".to_string(),
            EntryPoint {
                address: format!("{v4}:{}", s.http_port),
                redirect_to: Some("websecure"),
                tls: false,
                default: true,
                http: true,
            },
        ),
        (
            "websecure".to_string(),
            EntryPoint {
                address: format!("{v4}:{}", s.https_port),
                redirect_to: None,
                tls: true,
                default: true,
                http: true,
            },
        ),
    ];
    if let Some(v6) = &s.public_ipv6 {
        let v6 = v6.trim_start_matches('[').trim_end_matches(']');
        out.push((
            "web-v6".to_string(),
            EntryPoint {
                address: format!("[{v6}]:{}", s.http_port),
                redirect_to: Some("websecure-v6"),
                tls: false,
                default: true,
                http: true,
            },
        ));
        out.push((
            "websecure-v6".to_string(),
            EntryPoint {
                address: format!("[{v6}]:{}", s.https_port),
                redirect_to: None,
                tls: true,
                default: true,
                http: true,
            },
        ));
    }
    for p in s.tcp_entrypoint_ports() {
        out.push((
            format!("tcp-{p}"),
            EntryPoint {
                address: format!("{v4}:{p}"),
                redirect_to: None,
                tls: false,
                default: false,
                http: true,
            },
        ));
    }
    for p in s.udp_entrypoint_ports() {
        out.push((
            format!("udp-{p}"),
            EntryPoint {
                address: format!("{v4}:{p}/udp"),
                redirect_to: None,
                tls: false,
                default: false,
                http: false,
            },
        ));
    }
    if let Some(api) = &s.traefik_api_address {
        out.push((
            "traefik".to_string(),
            EntryPoint {
                address: api.clone(),
                redirect_to: None,
                tls: false,
                default: false,
                http: true,
            },
        ));
    }
    if let Some(m) = &s.proxy.traefik_metrics_address {
        out.push((
            METRICS_ENTRYPOINT.to_string(),
            EntryPoint {
                address: m.clone(),
                redirect_to: None,
                tls: false,
                default: false,
                http: true,
            },
        ));
    }
    out
}

/// The entrypoint of Traefik's own Prometheus metrics (loopback only).
pub const METRICS_ENTRYPOINT: &str = "metrics";

/// The names of every entrypoint the static configuration defines, in file order.
pub fn entrypoint_names(s: &Settings) -> Vec<String> {
    entrypoints(s).into_iter().map(|(n, _)| n).collect()
}

/// The HTTP options of every entrypoint that serves HTTP (TCP entrypoints do), on a server and
/// on an edge alike.
pub(crate) fn http_hardening() -> serde_json::Map<String, Value> {
    let mut http = serde_json::Map::new();
    // Headers whose names alias another (X_Auth_User for X-Auth-User) are dropped: backends
    // that map header names to variables (CGI, PHP, WSGI) would read them as the header they
    // alias. Setting it also silences Traefik's per-entrypoint warning.
    http.insert("aliasHeadersStrategy".into(), Value::from("delete"));
    // Encoded `/`, `\` and NUL in a path are refused (400): a backend that decodes the path
    // differently from Traefik's rule matching would see another path (a PathPrefix rule or a
    // middleware bypassed). The other encoded characters stay allowed, as they are today.
    // Explicit values also silence Traefik's warning.
    http.insert(
        "encodedCharacters".into(),
        json!({
            "allowEncodedSlash": false,
            "allowEncodedBackSlash": false,
            "allowEncodedNullCharacter": false,
            "allowEncodedSemicolon": true,
            "allowEncodedPercent": true,
            "allowEncodedQuestionMark": true,
            "allowEncodedHash": true,
        }),
    );
    http
}

/// The start of every static configuration renet writes (server and edge): no update checks
/// or telemetry, plain-text log (it goes to journald or a file), the optional access log.
pub(crate) fn static_preamble(s: &Settings) -> serde_json::Map<String, Value> {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "global".into(),
        json!({ "checkNewVersion": false, "sendAnonymousUsage": false }),
    );
    doc.insert("log".into(), json!({ "level": "INFO", "noColor": true }));
    if let Some(file) = &s.proxy.access_log {
        doc.insert(
            "accessLog".into(),
            json!({ "filePath": file.display().to_string(), "format": "json" }),
        );
    }
    doc
}

/// Traefik's API and ping on the loopback `traefik` entrypoint, when one is configured.
pub(crate) fn insert_api_and_ping(s: &Settings, doc: &mut serde_json::Map<String, Value>) {
    if s.traefik_api_address.is_some() {
        doc.insert(
            "api".into(),
            json!({ "insecure": true, "dashboard": false }),
        );
        doc.insert("ping".into(), json!({ "entryPoint": "traefik" }));
    }
}

/// Renders the static configuration and the units. Pure and deterministic: the same settings
/// and paths give the same bytes.
pub fn render(s: &Settings, paths: &OutputPaths) -> Rendered {
    let mut eps = serde_json::Map::new();
    for (name, ep) in entrypoints(s) {
        let mut e = serde_json::Map::new();
        e.insert("address".into(), Value::from(ep.address));
        if ep.default {
            e.insert("asDefault".into(), Value::Bool(true));
        }
        let mut http = serde_json::Map::new();
        if let Some(to) = ep.redirect_to {
            http.insert(
                "redirections".into(),
                json!({ "entryPoint": { "to": to, "scheme": "https", "permanent": true } }),
            );
        }
        if ep.tls {
            http.insert("tls".into(), json!({}));
        }
        if ep.default && ep.redirect_to.is_none() {
            http.insert("middlewares".into(), json!(RETRY_MIDDLEWARES));
        }
        if ep.http {
            http.extend(http_hardening());
        }
        if !http.is_empty() {
            e.insert("http".into(), Value::Object(http));
        }
        eps.insert(name, Value::Object(e));
    }

    let mut acme = serde_json::Map::new();
    if let Some(email) = &s.cert_email {
        acme.insert("email".into(), Value::from(email.clone()));
    }
    acme.insert(
        "storage".into(),
        Value::from(paths.acme_storage().display().to_string()),
    );
    acme.insert(
        "dnsChallenge".into(),
        json!({ "provider": "cloudflare", "resolvers": ["1.1.1.1:53", "1.0.0.1:53"] }),
    );

    let mut doc = static_preamble(s);
    if s.proxy.traefik_metrics_address.is_some() {
        doc.insert(
            "metrics".into(),
            json!({ "prometheus": { "entryPoint": METRICS_ENTRYPOINT } }),
        );
    }
    doc.insert("entryPoints".into(), Value::Object(eps));
    let mut providers = serde_json::Map::new();
    providers.insert(
        "file".into(),
        json!({ "directory": paths.dynamic_dir().display().to_string(), "watch": true }),
    );
    if s.dynamic_file.is_none() {
        providers.insert(
            "http".into(),
            json!({
                "endpoint": format!("http://{}/routes.yaml", s.listen),
                "pollInterval": "5s",
                "pollTimeout": "5s"
            }),
        );
    }
    // An option of `providers`: at the top level Traefik ignores it without a word.
    providers.insert(
        "providersThrottleDuration".into(),
        Value::from(PROVIDERS_THROTTLE),
    );
    doc.insert("providers".into(), Value::Object(providers));
    doc.insert(
        "certificatesResolvers".into(),
        json!({ RESOLVER: { "acme": Value::Object(acme) } }),
    );
    insert_api_and_ping(s, &mut doc);

    let mut static_config = format!(
        "# Traefik v3 static configuration, written by `renet proxy config` from {}.\n\
         # Do not edit: change the settings with `renet proxy config --…` and rerun it.\n\
         # The Cloudflare token is in {} ({TOKEN_VAR}), never here.\n",
        paths.settings.display(),
        paths.env_file().display()
    );
    static_config
        .push_str(&serde_yaml::to_string(&Value::Object(doc)).expect("JSON values serialize"));

    let defaults_dynamic = defaults_dynamic_yaml();
    Rendered {
        static_config,
        defaults_dynamic,
        route_server_unit: route_server_unit(s, paths),
        traefik_unit: traefik_unit(s, paths),
        daemon_unit: daemon_unit(s, paths),
    }
}

/// The sandbox every renet-written unit shares where it can: no new privileges, a read-only
/// system, private /tmp and devices, no kernel tunables, modules, logs or clock, only the
/// usual system calls.
pub(crate) const COMMON_HARDENING: &str = "NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectSystem=strict
ProtectHome=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @mount @debug @cpu-emulation @obsolete @raw-io @reboot @swap
SystemCallErrorNumber=EPERM
UMask=0077
";

/// The route server: its own dynamic user in the `docker` group (the repo daemons' sockets are
/// `root:docker 0660`), no capabilities, network limited to loopback, writes only its state
/// folder.
fn route_server_unit(s: &Settings, paths: &OutputPaths) -> String {
    let ip_lines = route_server_ip_lines(s);
    let settings = paths.settings.display();
    let state = s.state_dir.display();
    // systemd creates (and hands to the dynamic user) a state folder below /var/lib itself.
    let state_line = match s.state_dir.strip_prefix("/var/lib") {
        Ok(rel) if !rel.as_os_str().is_empty() => format!("StateDirectory={}\n", rel.display()),
        _ => format!("ReadWritePaths={state}\n"),
    };
    format!(
        "# Written by `renet proxy config`.\n\
         [Unit]\n\
         Description=renet route server (Traefik dynamic configuration from the repo daemons)\n\
         Documentation=file://{settings}\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         Environment=RENET_SETTINGS={settings}\n\
         Environment=RENET_DATA_DIR={data}\n\
         Environment=NO_COLOR=1\n\
         ExecStart={bin} route-server --settings {settings} --data-dir {data}\n\
         Restart=always\n\
         RestartSec=2\n\
         DynamicUser=yes\n\
         SupplementaryGroups=docker\n\
         {state_line}\
         {dynamic_line}\
         ReadOnlyPaths=-{data}\n\
         CapabilityBoundingSet=\n\
         AmbientCapabilities=\n\
         PrivateUsers=no\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
         {ip_lines}\
         {COMMON_HARDENING}\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        bin = paths.renet_bin.display(),
        data = paths.data_dir.display(),
        dynamic_line = s
            .dynamic_file
            .as_ref()
            .and_then(|f| f.parent())
            .map(|d| format!("ReadWritePaths={}\n", d.display()))
            .unwrap_or_default(),
    )
}

/// The route server's network allow-list: loopback, plus the etcd members of a cluster
/// (docs/cluster.md). A member given by host name cannot be pinned to an address when the unit
/// is written, so then the address filter is left out rather than cutting the server off.
fn route_server_ip_lines(s: &Settings) -> String {
    let mut allow = vec!["localhost".to_string()];
    for e in s.cluster.endpoints.iter().flat_map(|e| e.split(',')) {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        let authority = e
            .split_once("://")
            .map_or(e, |(_, r)| r)
            .trim_end_matches('/');
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) if !allow.contains(&ip.to_string()) => allow.push(ip.to_string()),
            Ok(_) => {}
            Err(_) => {
                return format!("# No IPAddressDeny: the etcd endpoint `{e}` is a host name.\n");
            }
        }
    }
    format!("IPAddressDeny=any\nIPAddressAllow={}\n", allow.join(" "))
}

/// Traefik: root-owned configuration and certificates, but only `CAP_NET_BIND_SERVICE` (80,
/// 443, 53), writes only its own folder (acme.json) and the access log's.
fn traefik_unit(s: &Settings, paths: &OutputPaths) -> String {
    // The access log's folder must be writable too (`-`: not an error while it is missing).
    let access_log_dir = s
        .proxy
        .access_log
        .as_ref()
        .and_then(|f| f.parent())
        .map(|d| format!(" -{}", d.display()))
        .unwrap_or_default();
    format!(
        "# Written by `renet proxy config`.\n\
         [Unit]\n\
         Description=Traefik reverse proxy for renet repositories\n\
         Documentation=https://doc.traefik.io/traefik/\n\
         Wants=network-online.target {ROUTE_SERVER_UNIT}\n\
         After=network-online.target {ROUTE_SERVER_UNIT}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         EnvironmentFile={env}\n\
         ExecStart={bin} --configFile={config}\n\
         Restart=always\n\
         RestartSec=2\n\
         LimitNOFILE=1048576\n\
         CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n\
         AmbientCapabilities=CAP_NET_BIND_SERVICE\n\
         ReadWritePaths={out} -/var/log{access_log_dir}\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n\
         {COMMON_HARDENING}\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        env = paths.env_file().display(),
        bin = paths.traefik_bin.display(),
        config = paths.static_config().display(),
        out = paths.out_dir.display(),
    )
}

/// A repo daemon, `renet-daemon@<network ID>.service`: `renet daemon start` starts dockerd
/// and returns once it answers (so `Type=forking` with dockerd's pidfile). dockerd needs full
/// root to run containers, so this unit is not sandboxed beyond what dockerd's own unit does;
/// the isolation of the repositories is renet's job (vetting, per-repo daemons).
fn daemon_unit(s: &Settings, paths: &OutputPaths) -> String {
    let sockets = s.socket_dir.display();
    let dirs = format!(
        "--socket-dir {sockets} --data-dir {}",
        paths.data_dir.display()
    );
    format!(
        "# Written by `renet proxy config`.\n\
         [Unit]\n\
         Description=renet repo daemon (dockerd) of network %i\n\
         After=network.target\n\
         Before={ROUTE_SERVER_UNIT}\n\
         \n\
         [Service]\n\
         Type=forking\n\
         PIDFile={sockets}/docker-%i.pid\n\
         Environment=NO_COLOR=1\n\
         ExecStart={bin} daemon start --network-id %i {dirs}\n\
         ExecStop={bin} daemon stop --network-id %i {dirs}\n\
         TimeoutStartSec=120\n\
         TimeoutStopSec=120\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         Delegate=yes\n\
         KillMode=process\n\
         LimitNOFILE=1048576\n\
         TasksMax=infinity\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        bin = paths.renet_bin.display(),
    )
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: cannot make absolute", p.display()))
}

/// Writes a file atomically (`atomic_file`), creating its folder. With a mode (the token's env
/// file), the content is never readable by others, not even for an instant.
pub(crate) fn write_file(path: &Path, body: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    crate::atomic_file::write(path, body, mode)
        .with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traefik_versions_are_read_from_its_version_command() {
        let out = "Version:      3.7.15\nCodename:     x\nGo version:   go1.25\n";
        assert_eq!(parse_traefik_version(out), Some((3, 7, 15)));
        assert_eq!(
            parse_traefik_version("Version: v3.6.0-rc1\n"),
            Some((3, 6, 0))
        );
        assert_eq!(parse_traefik_version("Version: 2.11\n"), Some((2, 11, 0)));
        assert_eq!(parse_traefik_version("traefik\n"), None);
        assert!((3, 6) < MIN_TRAEFIK && (3, 7) >= MIN_TRAEFIK && (4, 0) >= MIN_TRAEFIK);
    }

    #[test]
    fn the_retry_middlewares_replay_dropped_idempotent_requests_and_wait_for_closed_ports() {
        let v: serde_json::Value = serde_yaml::from_str(&defaults_dynamic_yaml()).unwrap();
        let m = &v["http"]["middlewares"];
        assert_eq!(
            m["renet-replay"]["retry"],
            json!({
                "attempts": 2, "initialInterval": "100ms", "timeout": "10s", "status": ["502"],
                "disableRetryOnNetworkError": true, "maxRequestBodyBytes": 65536
            })
        );
        assert_eq!(
            m["renet-retry"]["retry"],
            json!({"attempts": 100, "initialInterval": "100ms", "timeout": "10s"})
        );
        for name in RETRY_MIDDLEWARES {
            let name = name.strip_suffix("@file").unwrap();
            assert!(m[name].is_object(), "{name} is defined");
        }
    }

    fn paths() -> OutputPaths {
        OutputPaths {
            settings: "/etc/rediacc/renet.json".into(),
            out_dir: "/etc/rediacc/traefik".into(),
            unit_dir: "/etc/systemd/system".into(),
            renet_bin: "/usr/local/bin/renet".into(),
            traefik_bin: "/usr/local/bin/traefik".into(),
            data_dir: "/var/lib/rediacc".into(),
        }
    }

    fn production() -> Settings {
        let mut s = Settings::default();
        let args = ConfigArgs {
            public_ipv4: Some("203.0.113.50".into()),
            public_ipv6: Some("2001:db8::1".into()),
            base_domain: Some("Example.com.".into()),
            cert_email: Some("admin@example.com".into()),
            tcp_ports: Some("25,143,465,587,993,25".into()),
            udp_ports: Some("53".into()),
            ..Default::default()
        };
        merge(&mut s, &args).unwrap();
        s
    }

    #[test]
    fn production_settings_render_the_expected_entrypoints() {
        let s = production();
        validate(&s).unwrap();
        assert_eq!(s.base_domain.as_deref(), Some("example.com"));
        assert_eq!(s.tcp_ports, vec![25, 143, 465, 587, 993]);
        let names = entrypoint_names(&s);
        assert_eq!(&names[..4], &["web", "websecure", "web-v6", "websecure-v6"]);
        assert!(names.contains(&"tcp-25".to_string()));
        assert!(names.contains(&"tcp-3306".to_string()));
        assert!(names.contains(&"tcp-10010".to_string()));
        assert_eq!(names.last().unwrap(), "udp-53");
        let r = render(&s, &paths());
        let y = &r.static_config;
        assert!(y.contains("address: 203.0.113.50:443"), "{y}");
        assert!(y.contains("address: '[2001:db8::1]:443'"), "{y}");
        assert!(y.contains("address: 203.0.113.50:53/udp"), "{y}");
        assert!(y.contains("endpoint: http://127.0.0.1:7111/routes.yaml"));
        assert!(y.contains("pollInterval: 5s"));
        assert!(y.contains("provider: cloudflare"));
        assert!(!y.contains("0.0.0.0") && !y.contains("[::]"));
        assert!(!y.contains("api:"), "no API unless asked for");
        assert_eq!(render(&s, &paths()), r, "deterministic");
        assert!(
            r.traefik_unit
                .contains("EnvironmentFile=/etc/rediacc/traefik/traefik.env")
        );
        assert!(r.traefik_unit.contains("Restart=always"));
        assert!(
            r.traefik_unit
                .contains("After=network-online.target renet-route-server.service")
        );
        assert!(r.route_server_unit.contains(
            "ExecStart=/usr/local/bin/renet route-server --settings /etc/rediacc/renet.json"
        ));
    }

    #[test]
    fn the_route_server_unit_lets_a_cluster_member_reach_etcd() {
        let mut s = Settings::default();
        let unit = |s: &Settings| render(s, &paths()).route_server_unit;
        assert!(unit(&s).contains("IPAddressDeny=any\nIPAddressAllow=localhost\n"));
        s.cluster.endpoints = vec![
            "https://10.0.0.5:2379,https://10.0.0.6:2379".into(),
            "https://[2001:db8::7]:2379".into(),
        ];
        assert!(
            unit(&s).contains(
                "IPAddressDeny=any\nIPAddressAllow=localhost 10.0.0.5 10.0.0.6 2001:db8::7\n"
            ),
            "{}",
            unit(&s)
        );
        s.cluster.endpoints = vec!["https://etcd-1.example.com:2379".into()];
        let u = unit(&s);
        assert!(!u.contains("IPAddressDeny="), "{u}");
    }

    #[test]
    fn without_public_ipv4_everything_binds_loopback() {
        let s = Settings::default();
        let y = render(&s, &paths()).static_config;
        assert!(y.contains("address: 127.0.0.1:80\n"), "{y}");
        assert!(!y.contains("web-v6"));
        assert_eq!(s.effective_entrypoints(), vec!["websecure"]);
    }

    #[test]
    fn bad_input_is_named() {
        let cases: Vec<(ConfigArgs, &str)> = vec![
            (
                ConfigArgs {
                    public_ipv4: Some("300.1.1.1".into()),
                    ..Default::default()
                },
                "public_ipv4",
            ),
            (
                ConfigArgs {
                    public_ipv4: Some("0.0.0.0".into()),
                    ..Default::default()
                },
                "public_ipv4",
            ),
            (
                ConfigArgs {
                    public_ipv6: Some("::".into()),
                    ..Default::default()
                },
                "public_ipv6",
            ),
            (
                ConfigArgs {
                    base_domain: Some("exa mple.com".into()),
                    ..Default::default()
                },
                "base_domain",
            ),
            (
                ConfigArgs {
                    base_domain: Some("-x.com".into()),
                    ..Default::default()
                },
                "base_domain",
            ),
            (
                ConfigArgs {
                    cert_email: Some("admin".into()),
                    ..Default::default()
                },
                "cert_email",
            ),
            (
                ConfigArgs {
                    tcp_ports: Some("25,0".into()),
                    ..Default::default()
                },
                "--tcp-ports",
            ),
            (
                ConfigArgs {
                    udp_ports: Some("70000".into()),
                    ..Default::default()
                },
                "--udp-ports",
            ),
            (
                ConfigArgs {
                    tcp_ports: Some("443".into()),
                    ..Default::default()
                },
                "both listen",
            ),
            (
                ConfigArgs {
                    api_address: Some("0.0.0.0:8080".into()),
                    ..Default::default()
                },
                "traefik_api_address",
            ),
            (
                ConfigArgs {
                    dynamic_range: Some("10010-10000".into()),
                    ..Default::default()
                },
                "dynamic_range",
            ),
        ];
        for (args, want) in cases {
            let mut s = Settings::default();
            let err = merge(&mut s, &args)
                .and_then(|_| validate(&s))
                .expect_err(want);
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{want}: {msg}");
        }
    }

    #[test]
    fn v6_entrypoints_for_automatic_routes_need_ipv6() {
        let s = Settings {
            entrypoints: vec!["websecure".into(), "websecure-v6".into()],
            ..Default::default()
        };
        let msg = format!("{:#}", validate(&s).unwrap_err());
        assert!(
            msg.contains("websecure-v6") && msg.contains("public_ipv6"),
            "{msg}"
        );
    }

    #[test]
    fn preset_ports_parse() {
        assert_eq!(parse_preset_ports("default").unwrap(), (None, None));
        assert_eq!(
            parse_preset_ports("none").unwrap(),
            (Some(vec![]), Some(vec![]))
        );
        assert_eq!(
            parse_preset_ports("6379, 5432,53/udp,5432/tcp").unwrap(),
            (Some(vec![5432, 6379]), Some(vec![53]))
        );
        assert!(parse_preset_ports("53/sctp").is_err());
        assert!(parse_preset_ports("0").is_err());
    }

    #[test]
    fn default_entrypoints_and_header_hardening() {
        let s = production();
        let y = render(&s, &paths()).static_config;
        let doc: serde_json::Value = serde_yaml::from_str(&y).unwrap();
        let eps = &doc["entryPoints"];
        for name in ["web", "websecure", "web-v6", "websecure-v6"] {
            assert_eq!(eps[name]["asDefault"], true, "{name}: {y}");
        }
        for name in ["tcp-5432", "udp-53"] {
            assert!(eps[name].get("asDefault").is_none(), "{name}: {y}");
        }
        assert_eq!(eps["tcp-5432"]["http"]["aliasHeadersStrategy"], "delete");
        assert!(eps["udp-53"].get("http").is_none(), "UDP has no HTTP");
        assert_eq!(doc["log"]["noColor"], true);
    }

    #[test]
    fn the_throttle_is_an_option_of_the_providers() {
        // At the top level Traefik ignores it silently and throttles for its default 2 s.
        let y = render(&production(), &paths()).static_config;
        let doc: serde_json::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(
            doc["providers"]["providersThrottleDuration"],
            PROVIDERS_THROTTLE
        );
        assert!(doc.get("providersThrottleDuration").is_none(), "{y}");
    }

    #[test]
    fn tokens_are_checked() {
        assert!(validate_token("abc-DEF_123").is_ok());
        assert!(validate_token("").is_err());
        assert!(validate_token("abc\ndef=1").is_err());
    }
}
