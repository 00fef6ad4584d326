//! Vetting (spec §5): an allow-list over compose's own resolved model (`resolved.rs`).
//!
//! Every service setting renet does not know is refused (unless `--unsafe`), so a setting added
//! to compose tomorrow cannot widen what a tenant reaches without someone deciding it may.
//! Paths are judged after `..` is normalised and symlinks are resolved. Anything of renet
//! itself or of another repository (sockets, secrets, data roots, runtime folders, and their
//! parent folders) is refused even with `--unsafe`. Pure apart from resolving symlinks.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::addresses::NetworkId;
use crate::compose::model::{Reference, SourceFile};
use crate::compose::resolved::{EnvFiles, services, unescape};

/// Operator settings that widen the allow-list: `{"compose": {...}}` in the settings file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ComposeSettings {
    /// Host paths every repository may bind-mount (with everything below them). A trailing
    /// `:ro` allows only read-only mounts. Renet's own folders and other repositories' stay
    /// refused whatever is listed.
    pub allowed_paths: Vec<String>,
    /// Capabilities beyond Docker's default set that every repository may add (e.g. `NET_BIND_SERVICE`
    /// is default already; `SYS_PTRACE` is not).
    pub allowed_capabilities: Vec<String>,
}

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Default capabilities that act on the network namespace — the host's, for renet services —
/// and are dropped from every service unless `--unsafe` (spec §5). `NET_RAW` opens raw and
/// packet sockets: with it a container sniffs every other repository's loopback traffic.
/// (`NET_BIND_SERVICE` only lets a process bind ports below 1024 on addresses it may bind
/// anyway, so it stays.)
pub const DROPPED_NETWORK_CAPS: &[&str] = &["NET_RAW"];

/// Harmless files people mount everywhere, allowed read-only.
const READ_ONLY_ALLOWED: &[&str] = &["/etc/localtime", "/etc/timezone", "/usr/share/zoneinfo"];

/// Host folders of renet and of shared infrastructure: nothing at, above or below them may be
/// mounted by a repository, even with `--unsafe` (except a repository's own secrets folder).
const PROTECTED_ROOTS: &[&str] = &[
    "/var/run/rediacc",
    "/run/rediacc",
    "/run/renet",
    "/var/lib/rediacc",
    "/run/containerd",
    "/var/lib/containerd",
    "/run/docker",
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/var/lib/docker",
];

/// Service settings that cannot widen what a service reaches on the host: allowed as they are.
/// (Those that can are judged one by one in `vet_service`; anything else is refused.)
const HARMLESS_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cap_drop",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "depends_on",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "environment",
    "expose",
    "external_links",
    "extra_hosts",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "labels",
    "links",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pids_limit",
    "platform",
    "ports",
    "profiles",
    "pull_policy",
    "read_only",
    "restart",
    "scale",
    "secrets",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "volumes_from",
    "working_dir",
];

/// `build` settings renet knows (the path-like ones are judged in `vet_build`).
const BUILD_KEYS: &[&str] = &[
    "context",
    "dockerfile",
    "dockerfile_inline",
    "args",
    "target",
    "labels",
    "shm_size",
    "extra_hosts",
    "network",
    "no_cache",
    "pull",
    "platforms",
    "tags",
    "ulimits",
    "secrets",
    "additional_contexts",
    "cache_from",
    "cache_to",
    "ssh",
    "entitlements",
    "privileged",
    "isolation",
];

/// One refused setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The service, or `(top level)`.
    pub service: String,
    /// e.g. "`privileged: true`"
    pub setting: String,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// Refused even with `--unsafe`.
    pub always: bool,
    /// What the user can do about it.
    pub way_out: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(l) = self.line {
                write!(f, ":{l}")?;
            }
            write!(f, ": ")?;
        }
        write!(
            f,
            "service `{}`: {} is not allowed",
            self.service, self.setting
        )?;
        if self.always {
            write!(f, " (refused even with --unsafe: {})", self.way_out)
        } else {
            write!(f, "; {}", self.way_out)
        }
    }
}

/// What vetting needs to know besides the model.
pub struct VetContext<'a> {
    pub network: NetworkId,
    /// The repository root (symlinks are resolved here).
    pub repo_root: &'a Path,
    pub unsafe_ok: bool,
    pub settings: &'a ComposeSettings,
    /// Where the settings file is, for messages.
    pub settings_path: &'a Path,
    /// renet's folders besides `PROTECTED_ROOTS` (configured socket, runtime and state folders).
    pub renet_dirs: &'a [PathBuf],
    /// The user's compose files, for line numbers.
    pub sources: &'a [SourceFile],
}

/// The verdict on one host path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathVerdict {
    Allowed,
    /// Refused unless `--unsafe`: why, and the way out.
    Refused(String, String),
    /// Refused always: why.
    Never(String),
}

/// Vets the `env_file`/`label_file` paths of every service (`None` when compose could not
/// show them). compose reads these files while it loads the model, as root, and copies them
/// into the containers' environment and labels.
pub fn vet_env_files(env_files: Option<&EnvFiles>, ctx: &VetContext) -> Vec<Violation> {
    let mut out = Vec::new();
    match env_files {
        Some(map) => {
            for (name, paths) in map {
                for p in paths {
                    judge_file(ctx, name, "env_file", "`env_file`", p, &mut out);
                }
            }
        }
        None => out.push(violation(
            ctx,
            "(any)",
            "env_file",
            "an unknown `env_file`/`label_file` (docker compose could not show them without interpolation)".into(),
            false,
            "write the project so `docker compose config --no-interpolate` accepts it, or run with --unsafe".into(),
        )),
    }
    out.retain(|v| v.always || !ctx.unsafe_ok);
    out
}

/// Vets compose's resolved model. Returns the violations that apply (with `--unsafe`, only
/// the always-refused ones).
pub fn vet(model: &Value, ctx: &VetContext) -> Vec<Violation> {
    let mut out = Vec::new();
    for (name, svc) in services(model) {
        vet_service(name, svc, ctx, &mut out);
    }
    vet_top_level(model, ctx, &mut out);
    for v in out.iter_mut().filter(|v| v.line.is_none()) {
        if let Some((file, line)) = locate_text(ctx.sources, &v.setting) {
            v.file = Some(file);
            v.line = Some(line);
        }
    }
    out.retain(|v| v.always || !ctx.unsafe_ok);
    out
}

/// The first line of the user's files holding the first backquoted path of `setting` (for
/// top-level settings, which `line_of` cannot find).
fn locate_text(sources: &[SourceFile], setting: &str) -> Option<(PathBuf, usize)> {
    let needle = setting
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|s| s.starts_with('/'))?;
    // The path as a whole value: not followed by more path or by `:` (a mount's target).
    let whole = |l: &str| {
        l.match_indices(needle).any(|(i, _)| {
            l[i + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !matches!(c, ':' | '/') && !c.is_alphanumeric())
        })
    };
    sources.iter().find_map(|s| {
        s.text
            .lines()
            .position(whole)
            .map(|i| (s.path.clone(), i + 1))
    })
}

/// Vets the files `extends` and `include` pull in — before compose reads them: compose merges
/// them into the model and keeps no trace of where a setting came from.
pub fn vet_references(references: &[Reference], ctx: &VetContext) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in references {
        let what = format!("`{}` file `{}`", r.kind, r.written);
        let service = r.service.clone().unwrap_or_else(|| "(top level)".into());
        let verdict = match &r.path {
            None => PathVerdict::Refused(
                "renet cannot see which file a variable names".into(),
                "write the path without variables, or run with --unsafe".into(),
            ),
            Some(p) => judge_path(p, true, ctx),
        };
        if let Some(mut v) = verdict_violation(ctx, &service, r.kind, what, verdict) {
            v.file = Some(r.declared_in.clone());
            v.line = r.line;
            out.push(v);
        }
    }
    out.retain(|v| v.always || !ctx.unsafe_ok);
    out
}

fn violation(
    ctx: &VetContext,
    service: &str,
    key: &str,
    setting: String,
    always: bool,
    way_out: String,
) -> Violation {
    let (file, line) = locate(ctx.sources, service, key);
    Violation {
        service: service.to_string(),
        setting,
        file,
        line,
        always,
        way_out,
    }
}

/// The file and line of `key` in `service`, else the first compose file.
fn locate(sources: &[SourceFile], service: &str, key: &str) -> (Option<PathBuf>, Option<usize>) {
    for s in sources.iter().rev() {
        if let Some(l) = s.line_of(service, key) {
            return (Some(s.path.clone()), Some(l));
        }
    }
    (sources.first().map(|s| s.path.clone()), None)
}

fn verdict_violation(
    ctx: &VetContext,
    service: &str,
    key: &str,
    setting: String,
    verdict: PathVerdict,
) -> Option<Violation> {
    match verdict {
        PathVerdict::Allowed => None,
        PathVerdict::Refused(why, way_out) => Some(violation(
            ctx,
            service,
            key,
            format!("{setting} ({why})"),
            false,
            way_out,
        )),
        PathVerdict::Never(why) => Some(violation(
            ctx,
            service,
            key,
            format!("{setting} ({why})"),
            true,
            "it belongs to renet or to another repository".into(),
        )),
    }
}

const UNSAFE: &str = "remove it, or run with --unsafe";

fn vet_service(name: &str, svc: &Map<String, Value>, ctx: &VetContext, out: &mut Vec<Violation>) {
    let mut refused: Vec<Violation> = Vec::new();
    let mut refuse = |key: &str, setting: String, way_out: &str| {
        refused.push(violation(ctx, name, key, setting, false, way_out.into()));
    };
    for (key, value) in svc {
        match key.as_str() {
            k if HARMLESS_KEYS.contains(&k) || k.starts_with("x-") => {}
            "privileged" => {
                if value.as_bool() == Some(true) {
                    refuse(key, "`privileged: true`".into(), UNSAFE);
                }
            }
            "pid" | "ipc" | "uts" | "userns_mode" | "cgroup" => {
                let v = value.as_str().unwrap_or_default();
                let bad = v == "host" || (key == "userns_mode" && !v.is_empty());
                if bad {
                    refuse(key, format!("`{key}: {v}`"), UNSAFE);
                }
            }
            "cap_add" => {
                for cap in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if !capability_allowed(cap, ctx.settings) {
                        refuse(
                            key,
                            format!("`cap_add: {cap}` (beyond Docker's default capabilities, or acting on the host's network)"),
                            &format!(
                                "remove it, ask the operator to list it in `compose.allowed_capabilities` of {}, or run with --unsafe",
                                ctx.settings_path.display()
                            ),
                        );
                    }
                }
            }
            "devices" | "device_cgroup_rules" | "gpus" => {
                if !is_empty(value) {
                    refuse(key, format!("`{key}` (host devices)"), UNSAFE);
                }
            }
            "security_opt" => {
                for opt in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if !security_opt_allowed(opt) {
                        refuse(key, format!("`security_opt: {opt}`"), UNSAFE);
                    }
                }
            }
            "sysctls" => {
                for k in sysctl_names(value) {
                    if !(k.starts_with("kernel.shm")
                        || k.starts_with("kernel.msg")
                        || k == "kernel.sem"
                        || k.starts_with("fs.mqueue."))
                    {
                        refuse(key, format!("`sysctls: {k}` (would change the host)"), UNSAFE);
                    }
                }
            }
            "runtime" => {
                let v = value.as_str().unwrap_or_default();
                if !v.is_empty() && v != "runc" {
                    refuse(key, format!("`runtime: {v}`"), UNSAFE);
                }
            }
            "logging" => {
                let driver = value.get("driver").and_then(Value::as_str).unwrap_or("");
                if !["", "json-file", "local", "none", "journald"].contains(&driver) {
                    refuse(
                        key,
                        format!("`logging.driver: {driver}` (the daemon itself would send the logs, outside the repository's isolation)"),
                        "use json-file, local, journald or none, or run with --unsafe",
                    );
                }
            }
            "post_start" | "pre_stop" => {
                for hook in value.as_array().into_iter().flatten() {
                    if hook.get("privileged").and_then(Value::as_bool) == Some(true) {
                        refuse(key, format!("a privileged `{key}` hook"), UNSAFE);
                    }
                }
            }
            "cgroup_parent" => out.push(violation(
                ctx,
                name,
                key,
                "`cgroup_parent` (it would move the containers out of the repository's cgroup and its firewall)".into(),
                true,
                "the repository's cgroup is what isolates it".into(),
            )),
            "use_api_socket" => {
                if value.as_bool() == Some(true) {
                    out.push(violation(
                        ctx,
                        name,
                        key,
                        "`use_api_socket: true` (the Docker API socket)".into(),
                        true,
                        "the daemon socket gives root on the host".into(),
                    ));
                }
            }
            "volumes" => {
                for vol in value.as_array().into_iter().flatten() {
                    vet_mount(name, vol, ctx, out);
                }
            }
            "build" => vet_build(name, value, ctx, out),
            "deploy" => {
                let devices = value
                    .pointer("/resources/reservations/devices")
                    .or_else(|| value.pointer("/resources/reservations/generic_resources"));
                if devices.is_some_and(|d| !is_empty(d)) {
                    refuse(key, "`deploy.resources.reservations.devices` (host devices)".into(), UNSAFE);
                }
            }
            "develop" => {
                let watches = value.get("watch").and_then(Value::as_array);
                for w in watches.into_iter().flatten() {
                    if let Some(p) = w.get("path").and_then(Value::as_str) {
                        judge_file(ctx, name, "develop", "watch path", p, out);
                    }
                }
            }
            other => refuse(
                other,
                format!("`{other}` (renet does not know whether it is safe)"),
                UNSAFE,
            ),
        }
    }
    out.extend(refused);
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Capability names as the kernel spells them, without `CAP_`.
pub fn normalise_capability(cap: &str) -> String {
    let c = cap.trim().to_ascii_uppercase();
    c.strip_prefix("CAP_").unwrap_or(&c).to_string()
}

fn capability_allowed(cap: &str, settings: &ComposeSettings) -> bool {
    let c = normalise_capability(cap);
    if settings
        .allowed_capabilities
        .iter()
        .any(|a| normalise_capability(a) == c)
    {
        return true;
    }
    DOCKER_DEFAULT_CAPS.contains(&c.as_str()) && !DROPPED_NETWORK_CAPS.contains(&c.as_str())
}

fn security_opt_allowed(opt: &str) -> bool {
    let (k, v) = opt
        .split_once(['=', ':'])
        .map(|(k, v)| (k.trim(), v.trim()))
        .unwrap_or((opt.trim(), ""));
    match k {
        "no-new-privileges" => true,
        "apparmor" => v != "unconfined",
        // label=user:..., role, type, level are fine; label=disable turns SELinux off.
        "label" => !v.is_empty() && v != "disable",
        _ => false,
    }
}

fn sysctl_names(v: &Value) -> Vec<String> {
    match v {
        Value::Object(m) => m.keys().cloned().collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.split('=').next().unwrap_or(s).trim().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// A service's `volumes:` entry in compose's long form.
fn vet_mount(name: &str, vol: &Value, ctx: &VetContext, out: &mut Vec<Violation>) {
    let ty = vol.get("type").and_then(Value::as_str).unwrap_or("volume");
    let source = vol.get("source").and_then(Value::as_str).unwrap_or("");
    let read_only = vol.get("read_only").and_then(Value::as_bool) == Some(true);
    match ty {
        "bind" => {
            let path = PathBuf::from(unescape(source));
            let verdict = judge_path(&path, read_only, ctx);
            if let Some(v) = verdict_violation(
                ctx,
                name,
                "volumes",
                format!("bind mount of `{}`", path.display()),
                verdict,
            ) {
                out.push(v);
            }
        }
        "volume" | "tmpfs" | "image" => {}
        other => out.push(violation(
            ctx,
            name,
            "volumes",
            format!("a `{other}` mount of `{source}`"),
            false,
            UNSAFE.into(),
        )),
    }
}

fn vet_build(name: &str, build: &Value, ctx: &VetContext, out: &mut Vec<Violation>) {
    let context = build.get("context").and_then(Value::as_str).unwrap_or("");
    if is_local_path(context) {
        judge_file(ctx, name, "build", "`build.context`", context, out);
        if let Some(df) = build.get("dockerfile").and_then(Value::as_str) {
            let p = Path::new(context).join(unescape(df));
            judge_file(
                ctx,
                name,
                "build",
                "`build.dockerfile`",
                &p.to_string_lossy(),
                out,
            );
        }
    }
    if let Some(Value::Object(extra)) = build.get("additional_contexts") {
        for (k, v) in extra {
            if let Some(p) = v.as_str().filter(|p| is_local_path(p)) {
                judge_file(
                    ctx,
                    name,
                    "build",
                    &format!("`build.additional_contexts.{k}`"),
                    p,
                    out,
                );
            }
        }
    }
    for key in ["cache_from", "cache_to"] {
        for entry in build
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if entry.split(',').any(|p| p.trim() == "type=local") {
                out.push(violation(
                    ctx,
                    name,
                    "build",
                    format!("`build.{key}: {entry}` (a local cache reads or writes a host folder)"),
                    false,
                    "use a registry cache, or run with --unsafe".into(),
                ));
            }
        }
    }
    if let Value::Object(m) = build {
        for k in m.keys().filter(|k| !BUILD_KEYS.contains(&k.as_str())) {
            out.push(violation(
                ctx,
                name,
                "build",
                format!("`build.{k}` (renet does not know whether it is safe)"),
                false,
                UNSAFE.into(),
            ));
        }
    }
    for key in ["ssh", "entitlements"] {
        if build.get(key).is_some_and(|v| !is_empty(v)) {
            out.push(violation(
                ctx,
                name,
                "build",
                format!("`build.{key}` (hands the build host credentials or privileges)"),
                false,
                UNSAFE.into(),
            ));
        }
    }
    if build.get("privileged").and_then(Value::as_bool) == Some(true) {
        out.push(violation(
            ctx,
            name,
            "build",
            "`build.privileged: true`".into(),
            false,
            UNSAFE.into(),
        ));
    }
}

/// A build context that is a folder on this host (not a Git URL, `docker-image://` or `service:`).
fn is_local_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with('.')
}

/// Judges a file or folder compose or docker would read (read-only use).
fn judge_file(
    ctx: &VetContext,
    service: &str,
    key: &str,
    what: &str,
    path: &str,
    out: &mut Vec<Violation>,
) {
    let verdict = if path.contains('$') && !path.contains("$$") {
        PathVerdict::Refused(
            "renet cannot see which file a variable names".into(),
            "write the path without variables, or run with --unsafe".into(),
        )
    } else {
        judge_path(Path::new(&unescape(path)), true, ctx)
    };
    let setting = format!("{what} `{path}`");
    if let Some(v) = verdict_violation(ctx, service, key, setting, verdict) {
        out.push(v);
    }
}

/// Top-level `volumes` (a `driver_opts` bind is a bind mount), `secrets` and `configs` files.
fn vet_top_level(model: &Value, ctx: &VetContext, out: &mut Vec<Violation>) {
    let top = "(top level)";
    if let Some(Value::Object(vols)) = model.get("volumes") {
        for (name, vol) in vols {
            let driver = vol.get("driver").and_then(Value::as_str).unwrap_or("local");
            if driver != "local" && !driver.is_empty() {
                out.push(violation(
                    ctx,
                    top,
                    "volumes",
                    format!("volume `{name}` with driver `{driver}`"),
                    false,
                    UNSAFE.into(),
                ));
            }
            if let Some(device) = bind_device(vol) {
                let verdict = judge_path(Path::new(&unescape(&device)), false, ctx);
                if let Some(v) = verdict_violation(
                    ctx,
                    top,
                    "volumes",
                    format!("volume `{name}`: a bind of `{device}` through `driver_opts`"),
                    verdict,
                ) {
                    out.push(v);
                }
            }
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(Value::Object(items)) = model.get(section) {
            for (name, item) in items {
                if let Some(file) = item.get("file").and_then(Value::as_str) {
                    judge_file(
                        ctx,
                        top,
                        section,
                        &format!("`{section}.{name}` file"),
                        file,
                        out,
                    );
                }
            }
        }
    }
}

/// The host path a named volume binds, if its `driver_opts` make it a bind mount.
fn bind_device(vol: &Value) -> Option<String> {
    let opts = vol.get("driver_opts")?.as_object()?;
    let o = opts.get("o").and_then(Value::as_str).unwrap_or("");
    let ty = opts.get("type").and_then(Value::as_str).unwrap_or("");
    let is_bind = o
        .split(',')
        .any(|x| x.trim() == "bind" || x.trim() == "rbind")
        || ty == "none";
    let device = opts.get("device").and_then(Value::as_str)?;
    is_bind.then(|| device.to_string())
}

/// The verdict on a host path a service would mount (or compose would read).
fn judge_path(path: &Path, read_only: bool, ctx: &VetContext) -> PathVerdict {
    let lexical = normalize(path);
    let real = resolve_symlinks(&lexical);
    let secrets = |root: &Path| root.join("secrets").join(ctx.network.to_string());
    let mut roots: Vec<PathBuf> = PROTECTED_ROOTS.iter().map(PathBuf::from).collect();
    roots.extend(ctx.renet_dirs.iter().map(|d| normalize(d)));
    let roots: Vec<PathBuf> = roots
        .iter()
        .flat_map(|r| [r.clone(), resolve_symlinks(r)])
        .collect();
    let own_secrets = |p: &Path| roots.iter().any(|r| p.starts_with(secrets(r)));
    for p in [&lexical, &real] {
        if own_secrets(p) {
            continue;
        }
        if let Some(r) = roots.iter().find(|r| r.starts_with(p)) {
            return PathVerdict::Never(format!("it holds `{}`", r.display()));
        }
        if let Some(r) = roots.iter().find(|r| p.starts_with(r)) {
            return PathVerdict::Never(describe_protected(p, r));
        }
    }
    if own_secrets(&lexical) && own_secrets(&real) {
        return PathVerdict::Allowed;
    }
    let repo = resolve_symlinks(&normalize(ctx.repo_root));
    if real.starts_with(&repo) {
        return PathVerdict::Allowed;
    }
    for entry in &ctx.settings.allowed_paths {
        let (p, ro_only) = match entry.strip_suffix(":ro") {
            Some(p) => (p, true),
            None => (entry.as_str(), false),
        };
        let allowed = resolve_symlinks(&normalize(Path::new(p)));
        if real.starts_with(&allowed) && (read_only || !ro_only) {
            return PathVerdict::Allowed;
        }
    }
    let harmless = READ_ONLY_ALLOWED
        .iter()
        .any(|a| lexical.starts_with(a) || real.starts_with(resolve_symlinks(Path::new(a))));
    if harmless {
        return if read_only {
            PathVerdict::Allowed
        } else {
            PathVerdict::Refused(
                "writable".into(),
                "add `:ro` (read_only: true) to mount it read-only".into(),
            )
        };
    }
    PathVerdict::Refused(
        format!("outside the repository {}", repo.display()),
        format!(
            "move it into the repository, ask the operator to list it in `compose.allowed_paths` of {}, or run with --unsafe",
            ctx.settings_path.display()
        ),
    )
}

/// What a path inside one of renet's folders is, for the message.
fn describe_protected(path: &Path, root: &Path) -> String {
    let rest: Vec<String> = path
        .strip_prefix(root)
        .map(|r| r.iter().map(|c| c.to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    let network_of = |s: &str| {
        s.strip_prefix("docker-")
            .map(|n| n.trim_end_matches(".sock").to_string())
            .filter(|n| n.parse::<u32>().is_ok())
    };
    match rest.as_slice() {
        [first, second, ..] if first == "secrets" => format!("secrets of network {second}"),
        [first, ..] if first.ends_with(".sock") && network_of(first).is_some() => format!(
            "the daemon socket of network {}",
            network_of(first).unwrap_or_default()
        ),
        [first, ..] if network_of(first).is_some() => format!(
            "the data of network {}",
            network_of(first).unwrap_or_default()
        ),
        _ => format!("inside `{}`", root.display()),
    }
}

/// Lexical normalization (`.` and `..`), so `./../../etc` cannot slip past the checks.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(x) => out.push(x),
            _ => {}
        }
    }
    out
}

/// Follows symlinks of the longest existing prefix (e.g. `/var/run` → `/run`, or a link in the
/// repo pointing at `/etc`); the missing rest is normalised lexically.
pub fn resolve_symlinks(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for f in tail.into_iter().rev() {
                out.push(f);
            }
            return normalize(&out);
        }
        match (
            existing.file_name().map(|f| f.to_os_string()),
            existing.parent(),
        ) {
            (Some(f), Some(parent)) => {
                tail.push(f);
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        repo: tempfile::TempDir,
        settings: ComposeSettings,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                repo: tempfile::tempdir().unwrap(),
                settings: ComposeSettings::default(),
            }
        }

        fn vet(&self, model: &str, unsafe_ok: bool) -> Vec<String> {
            let model: Value = serde_json::from_str(model).unwrap();
            let src = SourceFile::parse(
                &self.repo.path().join("compose.yml"),
                "services:\n  app:\n    image: x\n    privileged: true\n".into(),
            );
            let sources = [src];
            let ctx = VetContext {
                network: NetworkId::new(2816).unwrap(),
                repo_root: self.repo.path(),
                unsafe_ok,
                settings: &self.settings,
                settings_path: Path::new("/etc/rediacc/renet.json"),
                renet_dirs: &[],
                sources: &sources,
            };
            vet(&model, &ctx).iter().map(|v| v.to_string()).collect()
        }

        fn service(&self, settings: &str, unsafe_ok: bool) -> Vec<String> {
            self.vet(
                &format!(r#"{{"services":{{"app":{{"image":"x",{settings}}}}}}}"#),
                unsafe_ok,
            )
        }
    }

    fn bind(src: &str, ro: bool) -> String {
        format!(r#""volumes":[{{"type":"bind","source":"{src}","target":"/t","read_only":{ro}}}]"#)
    }

    #[test]
    fn refused_unless_unsafe() {
        let f = Fixture::new();
        let cases = [
            (r#""privileged":true"#.to_string(), "`privileged: true`"),
            (r#""pid":"host""#.into(), "`pid: host`"),
            (r#""ipc":"host""#.into(), "`ipc: host`"),
            (r#""uts":"host""#.into(), "`uts: host`"),
            (r#""cgroup":"host""#.into(), "`cgroup: host`"),
            (r#""userns_mode":"host""#.into(), "`userns_mode: host`"),
            (r#""cap_add":["NET_ADMIN"]"#.into(), "`cap_add: NET_ADMIN`"),
            (
                r#""cap_add":["SYS_MODULE"]"#.into(),
                "`cap_add: SYS_MODULE`",
            ),
            (
                r#""cap_add":["CAP_DAC_READ_SEARCH"]"#.into(),
                "DAC_READ_SEARCH",
            ),
            (r#""cap_add":["ALL"]"#.into(), "`cap_add: ALL`"),
            (r#""cap_add":["NET_RAW"]"#.into(), "`cap_add: NET_RAW`"),
            (
                r#""devices":[{"source":"/dev/sda","target":"/dev/sda","permissions":"rwm"}]"#
                    .into(),
                "`devices`",
            ),
            (
                r#""device_cgroup_rules":["b *:* rwm"]"#.into(),
                "`device_cgroup_rules`",
            ),
            (
                r#""security_opt":["seccomp=unconfined"]"#.into(),
                "seccomp=unconfined",
            ),
            (
                r#""security_opt":["apparmor:unconfined"]"#.into(),
                "apparmor:unconfined",
            ),
            (
                r#""sysctls":{"net.ipv4.ip_forward":"1"}"#.into(),
                "net.ipv4.ip_forward",
            ),
            (r#""some_new_setting":true"#.into(), "`some_new_setting`"),
            (bind("/etc", false), "bind mount of `/etc`"),
            (bind("/etc/ssl", true), "bind mount of `/etc/ssl`"),
            (bind("/dev/sda", false), "bind mount of `/dev/sda`"),
            (
                r#""build":{"context":"/srv"}"#.into(),
                "`build.context` `/srv`",
            ),
            (
                r#""build":{"context":"https://git.invalid/x.git","cache_to":["type=local,dest=/etc"]}"#.into(),
                "`build.cache_to: type=local,dest=/etc`",
            ),
            (
                r#""deploy":{"resources":{"reservations":{"devices":[{"capabilities":["gpu"]}]}}}"#.into(),
                "`deploy.resources.reservations.devices`",
            ),
            (
                r#""build":{"context":"https://git.invalid/x.git","ssh":["default"]}"#.into(),
                "`build.ssh`",
            ),
        ];
        for (setting, expected) in cases {
            let v = f.service(&setting, false);
            assert_eq!(v.len(), 1, "{setting}: {v:?}");
            assert!(v[0].contains(expected), "{setting}: {}", v[0]);
            assert!(v[0].contains("service `app`"), "{}", v[0]);
            assert!(v[0].contains("--unsafe"), "{}", v[0]);
            assert!(
                f.service(&setting, true).is_empty(),
                "--unsafe lets `{setting}` through"
            );
        }
        let v = f.service(r#""privileged":true"#, false);
        assert!(v[0].contains("compose.yml:4: service `app`"), "{}", v[0]);
    }

    #[test]
    fn never_allowed_even_with_unsafe() {
        let f = Fixture::new();
        for src in [
            "/",
            "/var",
            "/var/run",
            "/run",
            "/var/lib",
            "/var/lib/rediacc",
            "/var/lib/rediacc/docker-2880",
            "/var/lib/rediacc/docker-2880/volumes",
            "/var/run/rediacc",
            "/run/rediacc/secrets",
            "/var/run/rediacc/secrets/2880",
            "/var/run/rediacc/docker-2880.sock",
            "/var/run/rediacc/docker-2816.sock",
            "/run/renet",
            "/run/containerd/containerd.sock",
            "/var/run/docker.sock",
            "/var/run/rediacc/secrets/2816/../2880",
        ] {
            let v = f.service(&bind(src, true), true);
            assert_eq!(v.len(), 1, "{src}: {v:?}");
            assert!(v[0].contains("even with --unsafe"), "{src}: {}", v[0]);
        }
        let v = f.service(r#""cgroup_parent":"/x""#, true);
        assert_eq!(v.len(), 1, "{v:?}");
        let v = f.vet(
            r#"{"services":{},"secrets":{"s":{"file":"/var/run/rediacc/secrets/2880/pw"}}}"#,
            true,
        );
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn allowed_settings_pass() {
        let mut f = Fixture::new();
        let repo = f.repo.path().display().to_string();
        std::fs::create_dir(f.repo.path().join("data")).unwrap();
        for ok in [
            bind(&format!("{repo}/data"), false),
            bind(&format!("{repo}/new/deeper"), false),
            bind("/etc/localtime", true),
            bind("/usr/share/zoneinfo", true),
            bind("/var/run/rediacc/secrets/2816/db", true),
            bind("/run/rediacc/secrets/2816", false),
            r#""volumes":[{"type":"volume","source":"data","target":"/d"},{"type":"tmpfs","target":"/tmp"}]"#.into(),
            r#""cap_add":["CHOWN","cap_kill"],"cap_drop":["ALL"]"#.into(),
            r#""security_opt":["no-new-privileges:true"]"#.into(),
            r#""sysctls":{"kernel.shmmax":"1"}"#.into(),
            format!(r#""build":{{"context":"{repo}","dockerfile":"Dockerfile"}}"#),
            r#""ports":[{"target":80}],"restart":"always","healthcheck":{"test":["CMD","true"]}"#.into(),
        ] {
            assert_eq!(f.service(&ok, false), Vec::<String>::new(), "{ok}");
        }
        // Writable /etc/localtime is not the harmless case: the way out is `:ro`.
        let v = f.service(&bind("/etc/localtime", false), false);
        assert!(v[0].contains("add `:ro`"), "{v:?}");
        // A symlink in the repo pointing outside is judged by its target.
        std::os::unix::fs::symlink("/etc", f.repo.path().join("etc-link")).unwrap();
        let v = f.service(&bind(&format!("{repo}/etc-link/ssl"), true), false);
        assert!(v[0].contains("outside the repository"), "{v:?}");
        // `..` cannot climb out.
        let v = f.service(&bind(&format!("{repo}/data/../../../etc"), true), false);
        assert_eq!(v.len(), 1, "{v:?}");
        // Operator settings widen the list.
        f.settings.allowed_paths = vec!["/srv/shared".into(), "/opt/ro:ro".into()];
        f.settings.allowed_capabilities = vec!["SYS_PTRACE".into()];
        assert!(f.service(&bind("/srv/shared/x", false), false).is_empty());
        assert!(f.service(&bind("/opt/ro/x", true), false).is_empty());
        assert_eq!(f.service(&bind("/opt/ro/x", false), false).len(), 1);
        assert!(f.service(r#""cap_add":["SYS_PTRACE"]"#, false).is_empty());
        // ...but never to renet's folders.
        f.settings.allowed_paths = vec!["/var/run/rediacc".into()];
        assert_eq!(f.service(&bind("/var/run/rediacc/x", true), false).len(), 1);
    }

    #[test]
    fn named_volume_bind_and_files() {
        let f = Fixture::new();
        let v = f.vet(
            r#"{"services":{},"volumes":{"v":{"driver_opts":{"type":"none","o":"bind","device":"/etc"}}}}"#,
            false,
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("a bind of `/etc`"), "{}", v[0]);
        let v = f.vet(
            r#"{"services":{},"secrets":{"s":{"file":"/etc/shadow"}},"configs":{"c":{"file":"/etc/passwd"}}}"#,
            false,
        );
        assert_eq!(v.len(), 2, "{v:?}");
        let v = f.vet(
            r#"{"services":{},"volumes":{"v":{"driver_opts":{"type":"none","o":"bind","device":"/var/lib/rediacc/docker-2880"}}}}"#,
            true,
        );
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn security_opts() {
        assert!(security_opt_allowed("no-new-privileges"));
        assert!(security_opt_allowed("label=type:svirt_apache_t"));
        assert!(!security_opt_allowed("label=disable"));
        assert!(!security_opt_allowed("seccomp:unconfined"));
        assert!(!security_opt_allowed("seccomp=/tmp/profile.json"));
        assert!(!security_opt_allowed("systempaths=unconfined"));
    }
}
