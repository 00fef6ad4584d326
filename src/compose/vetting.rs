//! Vetting (spec §5): settings that would let a repo's services escape their repository are
//! refused before anything runs, unless `--unsafe`; another repo's secrets are refused always.
//! Pure: works on the `compose_model` view with values already interpolated.

use std::path::{Component, Path, PathBuf};

use serde_yaml::Value;

use crate::addresses::NetworkId;
use crate::compose::model::{Project, ServiceView};

/// Bind-mount sources that are refused (with everything below them).
const SYSTEM_PATHS: &[&str] = &[
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/usr",
    "/var/lib/docker",
];
/// Docker and renet sockets (and renet's folders).
const SOCKET_PATHS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/rediacc",
    "/run/rediacc",
];
/// Harmless files everybody mounts read-only.
const READ_ONLY_ALLOWED: &[&str] = &["/etc/localtime", "/etc/timezone", "/usr/share/zoneinfo"];

/// One refused setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub service: String,
    /// e.g. "`privileged: true`"
    pub setting: String,
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Refused even with `--unsafe`.
    pub always: bool,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(
            f,
            ": service `{}`: {} is not allowed",
            self.service, self.setting
        )?;
        if self.always {
            write!(
                f,
                " (another repository's secrets are refused even with --unsafe)"
            )
        } else {
            write!(f, " (use --unsafe to allow it)")
        }
    }
}

/// Vets every service of the project. `interp` interpolates a string value as compose would.
/// Returns the violations that apply (with `unsafe_ok`, only the always-refused ones).
pub fn vet(
    project: &Project,
    network: NetworkId,
    unsafe_ok: bool,
    interp: &dyn Fn(&str) -> String,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for name in &project.service_names {
        let svc = &project.services[name];
        vet_service(project, svc, network, interp, &mut out);
    }
    for (what, file, declared_in) in project.top_level_files() {
        let dir = declared_in.parent().unwrap_or(Path::new("/"));
        let path = normalize(&dir.join(interp(&file)));
        if let Some(m) = foreign_secret(&path, network) {
            out.push(Violation {
                service: "(top level)".into(),
                setting: format!(
                    "`{what}` file `{}` (secrets of network {m})",
                    path.display()
                ),
                file: declared_in.clone(),
                line: None,
                always: true,
            });
        }
    }
    out.retain(|v| v.always || !unsafe_ok);
    out
}

fn vet_service(
    project: &Project,
    svc: &ServiceView,
    network: NetworkId,
    interp: &dyn Fn(&str) -> String,
    out: &mut Vec<Violation>,
) {
    let s = &svc.settings;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(x) => Some(interp(x)),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let mut push = |key: &str, setting: String, always: bool| {
        let line = project
            .file(&svc.file)
            .and_then(|f| f.line_of(&svc.name, key));
        out.push(Violation {
            service: svc.name.clone(),
            setting,
            file: svc.file.clone(),
            line,
            always,
        });
    };
    if let Some(v) = s.get("privileged").and_then(text)
        && matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1")
    {
        push("privileged", "`privileged: true`".into(), false);
    }
    for key in ["pid", "ipc", "userns_mode"] {
        if let Some(v) = s.get(key).and_then(text)
            && v == "host"
        {
            push(key, format!("`{key}: host`"), false);
        }
    }
    if let Some(Value::Sequence(caps)) = s.get("cap_add") {
        for cap in caps.iter().filter_map(text) {
            let c = cap.to_ascii_uppercase();
            let c = c.strip_prefix("CAP_").unwrap_or(&c);
            if c == "ALL" || c == "SYS_ADMIN" {
                push("cap_add", format!("`cap_add: {cap}`"), false);
            }
        }
    }
    if let Some(Value::Sequence(vols)) = s.get("volumes") {
        for vol in vols {
            let Some((source, read_only)) = bind_source(vol, interp) else {
                continue;
            };
            let path = normalize(&svc.base_dir.join(&source));
            if let Some(m) = foreign_secret(&path, network) {
                push(
                    "volumes",
                    format!(
                        "bind mount of `{}` (secrets of network {m})",
                        path.display()
                    ),
                    true,
                );
            } else if let Some(why) = refused_bind(&path, read_only, network) {
                push(
                    "volumes",
                    format!("bind mount of `{}` ({why})", path.display()),
                    false,
                );
            }
        }
    }
    for env_file in env_files(s.get("env_file"), interp) {
        let path = normalize(&svc.base_dir.join(&env_file));
        if let Some(m) = foreign_secret(&path, network) {
            push(
                "env_file",
                format!("`env_file: {}` (secrets of network {m})", path.display()),
                true,
            );
        }
    }
}

/// The source of a bind mount (short or long syntax) and whether it is read-only.
/// Named volumes and tmpfs give `None`.
fn bind_source(vol: &Value, interp: &dyn Fn(&str) -> String) -> Option<(String, bool)> {
    match vol {
        Value::String(spec) => {
            let spec = interp(spec);
            let parts: Vec<&str> = spec.split(':').collect();
            if parts.len() < 2 {
                return None; // anonymous volume
            }
            let src = parts[0];
            if !(src.starts_with('/') || src.starts_with('.') || src.starts_with('~')) {
                return None; // named volume
            }
            let ro = parts
                .get(2)
                .is_some_and(|m| m.split(',').any(|o| o == "ro"));
            Some((expand_home(src), ro))
        }
        Value::Mapping(m) => {
            let ty = m.get("type").and_then(Value::as_str).unwrap_or("volume");
            if ty != "bind" {
                return None;
            }
            let src = interp(m.get("source").and_then(Value::as_str)?);
            let ro = matches!(m.get("read_only"), Some(Value::Bool(true)))
                || m.get("read_only")
                    .and_then(Value::as_str)
                    .is_some_and(|v| interp(v) == "true");
            Some((expand_home(&src), ro))
        }
        _ => None,
    }
}

fn expand_home(p: &str) -> String {
    match p.strip_prefix('~') {
        Some(rest) => format!(
            "{}{rest}",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        ),
        None => p.to_string(),
    }
}

fn env_files(v: Option<&Value>, interp: &dyn Fn(&str) -> String) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![interp(s)],
        Some(Value::Sequence(list)) => list
            .iter()
            .filter_map(|e| match e {
                Value::String(s) => Some(interp(s)),
                Value::Mapping(m) => m.get("path").and_then(Value::as_str).map(interp),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Why a bind source is refused, if it is.
fn refused_bind(path: &Path, read_only: bool, network: NetworkId) -> Option<&'static str> {
    let path = resolve_symlinks(path);
    if read_only && READ_ONLY_ALLOWED.iter().any(|a| path.starts_with(a)) {
        return None;
    }
    // A repo may mount its own secrets folder: that is what it is for.
    let own = format!("secrets/{network}");
    if ["/var/run/rediacc", "/run/rediacc"]
        .iter()
        .any(|root| path.starts_with(Path::new(root).join(&own)))
    {
        return None;
    }
    if SOCKET_PATHS.iter().any(|p| path.starts_with(p)) {
        return Some("a Docker or renet socket");
    }
    // `/` itself is refused; below it only the listed system folders are.
    if path == Path::new("/") || SYSTEM_PATHS[1..].iter().any(|p| path.starts_with(p)) {
        return Some("a system path");
    }
    None
}

/// `Some(M)` when `path` lies under `/var/run/rediacc/secrets/<M>/` or
/// `/run/rediacc/secrets/<M>/` for a network `M` other than the repo's own.
fn foreign_secret(path: &Path, network: NetworkId) -> Option<String> {
    for p in [path.to_path_buf(), resolve_symlinks(path)] {
        for root in ["/var/run/rediacc/secrets", "/run/rediacc/secrets"] {
            if let Ok(rest) = p.strip_prefix(root) {
                let m = rest
                    .components()
                    .next()?
                    .as_os_str()
                    .to_string_lossy()
                    .to_string();
                if m != network.to_string() {
                    return Some(m);
                }
            }
        }
    }
    None
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
/// repo pointing at `/etc`).
fn resolve_symlinks(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut tail = Vec::new();
    while !existing.exists() {
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
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for f in tail.into_iter().rev() {
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::model::ComposeFile;

    fn project(text: &str) -> Project {
        let f = ComposeFile::parse(Path::new("/repo/compose.yml"), text.to_string()).unwrap();
        Project::from_files(vec![f]).unwrap()
    }

    fn vet_text(text: &str, unsafe_ok: bool) -> Vec<String> {
        let net = NetworkId::new(2816).unwrap();
        vet(&project(text), net, unsafe_ok, &|s| {
            s.replace("${DIR}", "/etc")
        })
        .iter()
        .map(|v| v.to_string())
        .collect()
    }

    #[test]
    fn each_refused_setting() {
        let cases = [
            ("privileged: true", "`privileged: true`"),
            ("pid: host", "`pid: host`"),
            ("ipc: host", "`ipc: host`"),
            ("userns_mode: host", "`userns_mode: host`"),
            ("cap_add: [ALL]", "`cap_add: ALL`"),
            ("cap_add: [CAP_SYS_ADMIN]", "`cap_add: CAP_SYS_ADMIN`"),
            ("volumes: ['/:/host']", "bind mount of `/`"),
            ("volumes: ['/etc/ssl:/ssl:ro']", "bind mount of `/etc/ssl`"),
            ("volumes: ['${DIR}:/x']", "bind mount of `/etc`"),
            (
                "volumes: ['../../../../../../proc:/p']",
                "bind mount of `/proc`",
            ),
            (
                "volumes: ['/var/run/docker.sock:/var/run/docker.sock']",
                "a Docker or renet socket",
            ),
            (
                "volumes: ['/run/rediacc/docker-2880.sock:/d.sock']",
                "a Docker or renet socket",
            ),
            (
                "volumes: [{type: bind, source: /var/lib/docker, target: /d}]",
                "bind mount of `/var/lib/docker`",
            ),
        ];
        for (setting, expected) in cases {
            let text = format!("services:\n  app:\n    image: x\n    {setting}\n");
            let v = vet_text(&text, false);
            assert_eq!(v.len(), 1, "{setting}: {v:?}");
            assert!(v[0].contains(expected), "{setting}: {}", v[0]);
            assert!(
                v[0].contains("/repo/compose.yml:4: service `app`"),
                "{}",
                v[0]
            );
            assert!(v[0].contains("--unsafe"), "{}", v[0]);
            assert!(
                vet_text(&text, true).is_empty(),
                "--unsafe lets `{setting}` through"
            );
        }
    }

    #[test]
    fn harmless_settings_pass() {
        let text = "services:\n  app:\n    image: x\n    cap_add: [NET_ADMIN]\n    volumes:\n      - ./data:/data\n      - data:/var/lib\n      - /etc/localtime:/etc/localtime:ro\n      - /usr/share/zoneinfo:/usr/share/zoneinfo:ro\n      - /srv/app:/srv\n      - /var/run/rediacc/secrets/2816/db:/run/secrets/db:ro\n    env_file: [.env]\nvolumes:\n  data: {}\n";
        assert_eq!(vet_text(text, false), Vec::<String>::new());
        // Writable /etc/localtime is not the harmless case.
        let rw = "services:\n  app:\n    volumes: ['/etc/localtime:/etc/localtime']\n";
        assert_eq!(vet_text(rw, false).len(), 1);
    }

    #[test]
    fn another_repos_secrets_are_refused_even_with_unsafe() {
        for setting in [
            "volumes: ['/var/run/rediacc/secrets/2880/db:/s:ro']",
            "volumes: ['/run/rediacc/secrets/2880:/s']",
            "env_file: /var/run/rediacc/secrets/2880/env",
            "env_file: [{path: /run/rediacc/secrets/6336/env, required: false}]",
        ] {
            let text = format!("services:\n  app:\n    image: x\n    {setting}\n");
            let v = vet_text(&text, true);
            assert_eq!(v.len(), 1, "{setting}: {v:?}");
            assert!(v[0].contains("even with --unsafe"), "{}", v[0]);
        }
        let top = "services:\n  app:\n    image: x\nsecrets:\n  s:\n    file: /var/run/rediacc/secrets/2880/pw\n";
        assert_eq!(vet_text(top, true).len(), 1);
    }
}
