//! What renet reads of a compose project before docker compose runs: the service names (in
//! file order, for slot allocation) and each service's effective settings after `extends`,
//! `<<` merge keys and several `-f` files — enough to vet it and to translate its `ports:`.
//!
//! This is deliberately *not* a compose implementation: docker compose still loads the real
//! model (renet only adds an override file), so everything renet does not read keeps working
//! exactly as in plain docker compose.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_yaml::{Mapping, Value};

/// One compose file, parsed, with merge keys applied and its text kept for line numbers.
#[derive(Debug, Clone)]
pub struct ComposeFile {
    pub path: PathBuf,
    pub text: String,
    pub doc: Value,
}

impl ComposeFile {
    pub fn load(path: &Path) -> Result<ComposeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read compose file", path.display()))?;
        Self::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<ComposeFile> {
        let mut doc: Value = if text.trim().is_empty() {
            Value::Mapping(Mapping::new())
        } else {
            serde_yaml::from_str(&text)
                .with_context(|| format!("{}: invalid YAML", path.display()))?
        };
        doc.apply_merge()
            .with_context(|| format!("{}: invalid `<<` merge key", path.display()))?;
        if !doc.is_mapping() {
            bail!(
                "{}: a compose file must be a mapping at the top level",
                path.display()
            );
        }
        if doc.get("include").is_some() {
            bail!(
                "{}: top-level `include:` is not supported by renet compose (renet must give every \
                 service its IP and labels); list the files with -f instead",
                path.display()
            );
        }
        Ok(ComposeFile {
            path: path.to_path_buf(),
            text,
            doc,
        })
    }

    /// Service names in file order.
    pub fn service_names(&self) -> Result<Vec<String>> {
        match self.doc.get("services") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Mapping(m)) => m
                .keys()
                .map(|k| {
                    k.as_str().map(String::from).with_context(|| {
                        format!(
                            "{}: a service name must be a string, found {k:?}",
                            self.path.display()
                        )
                    })
                })
                .collect(),
            Some(_) => bail!("{}: `services` must be a mapping", self.path.display()),
        }
    }

    fn service(&self, name: &str) -> Option<&Mapping> {
        self.doc.get("services")?.get(name)?.as_mapping()
    }

    /// 1-based line of `key:` inside service `service`'s block, found in the text (best effort).
    pub fn line_of(&self, service: &str, key: &str) -> Option<usize> {
        let lines: Vec<&str> = self.text.lines().collect();
        let mut in_services = false;
        let mut svc_indent = None;
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if indent == 0 {
                in_services = trimmed.starts_with("services:");
                svc_indent = None;
                continue;
            }
            if !in_services {
                continue;
            }
            let name = trimmed
                .split(':')
                .next()
                .unwrap_or("")
                .trim_matches(|c| c == '"' || c == '\'');
            match svc_indent {
                Some(si) if indent <= si => {
                    if indent == si && name == service {
                        continue;
                    }
                    svc_indent = None;
                    if name == service && trimmed.contains(':') {
                        svc_indent = Some(indent);
                    }
                }
                Some(_) => {
                    if trimmed.starts_with(&format!("{key}:"))
                        || trimmed.starts_with(&format!("\"{key}\":"))
                    {
                        return Some(i + 1);
                    }
                }
                None => {
                    if name == service && trimmed.contains(':') {
                        svc_indent = Some(indent);
                    }
                }
            }
        }
        None
    }
}

/// A service's effective settings, merged over `-f` files and `extends`.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub name: String,
    pub settings: Mapping,
    /// The file that defines the service last (for line numbers), and the folder against which
    /// each relative path in `volumes`/`env_file` is resolved.
    pub file: PathBuf,
    pub base_dir: PathBuf,
}

/// The project as renet sees it.
#[derive(Debug, Clone)]
pub struct Project {
    pub files: Vec<ComposeFile>,
    /// Service names in order of first appearance across the files.
    pub service_names: Vec<String>,
    pub services: BTreeMap<String, ServiceView>,
}

impl Project {
    pub fn load(paths: &[PathBuf]) -> Result<Project> {
        let files = paths
            .iter()
            .map(|p| ComposeFile::load(p))
            .collect::<Result<Vec<_>>>()?;
        Self::from_files(files)
    }

    pub fn from_files(files: Vec<ComposeFile>) -> Result<Project> {
        let mut service_names: Vec<String> = Vec::new();
        for f in &files {
            for n in f.service_names()? {
                if !service_names.contains(&n) {
                    service_names.push(n);
                }
            }
        }
        let mut services = BTreeMap::new();
        for name in &service_names {
            let mut merged = Mapping::new();
            let mut file = files[0].path.clone();
            for f in &files {
                if let Some(svc) = f.service(name) {
                    let resolved = resolve_extends(f, name, svc, &mut Vec::new())?;
                    merged = merge_service(&merged, &resolved);
                    file = f.path.clone();
                }
            }
            let base_dir = files[0]
                .path
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf();
            services.insert(
                name.clone(),
                ServiceView {
                    name: name.clone(),
                    settings: merged,
                    file,
                    base_dir,
                },
            );
        }
        Ok(Project {
            files,
            service_names,
            services,
        })
    }

    pub fn file(&self, path: &Path) -> Option<&ComposeFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// `secrets`/`configs` top-level `file:` entries, with the file that declares them.
    pub fn top_level_files(&self) -> Vec<(String, String, PathBuf)> {
        let mut out = Vec::new();
        for f in &self.files {
            for section in ["secrets", "configs"] {
                if let Some(Value::Mapping(m)) = f.doc.get(section) {
                    for (k, v) in m {
                        if let Some(file) = v.get("file").and_then(Value::as_str) {
                            out.push((
                                format!("{section}.{}", k.as_str().unwrap_or("?")),
                                file.to_string(),
                                f.path.clone(),
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Service names of the default compose files of `dir` (for `renet repo up`, which allocates
/// slots for every compose project of a repo before anything runs). No compose file → none.
pub fn service_names_in_dir(dir: &Path) -> Result<Vec<String>> {
    match crate::compose::files::default_compose_files(dir) {
        None => Ok(Vec::new()),
        Some(files) => Ok(Project::load(&files)?.service_names),
    }
}

/// Applies `extends` (same file or another file), recursively, with cycle detection.
/// Relative paths of an extended service from another file are made absolute.
fn resolve_extends(
    file: &ComposeFile,
    name: &str,
    svc: &Mapping,
    chain: &mut Vec<(PathBuf, String)>,
) -> Result<Mapping> {
    let key = (file.path.clone(), name.to_string());
    if chain.contains(&key) {
        bail!(
            "{}: service `{name}`: `extends` forms a cycle",
            file.path.display()
        );
    }
    let Some(ext) = svc.get("extends") else {
        return Ok(svc.clone());
    };
    chain.push(key);
    let (base_name, base_file) = match ext {
        Value::String(s) => (s.clone(), None),
        Value::Mapping(m) => (
            m.get("service")
                .and_then(Value::as_str)
                .with_context(|| {
                    format!(
                        "{}: service `{name}`: `extends` needs `service`",
                        file.path.display()
                    )
                })?
                .to_string(),
            m.get("file").and_then(Value::as_str).map(String::from),
        ),
        _ => bail!(
            "{}: service `{name}`: invalid `extends`",
            file.path.display()
        ),
    };
    let other;
    let base_compose = match &base_file {
        None => file,
        Some(p) => {
            let path = file.path.parent().unwrap_or(Path::new("/")).join(p);
            other = ComposeFile::load(&path).with_context(|| {
                format!("{}: service `{name}`: `extends.file`", file.path.display())
            })?;
            &other
        }
    };
    let base = base_compose.service(&base_name).with_context(|| {
        format!(
            "{}: service `{name}` extends `{base_name}`, which {} does not define",
            file.path.display(),
            base_compose.path.display()
        )
    })?;
    let mut base = resolve_extends(base_compose, &base_name, base, chain)?;
    if base_file.is_some() {
        absolutize_paths(
            &mut base,
            base_compose.path.parent().unwrap_or(Path::new("/")),
        );
    }
    chain.pop();
    let mut child = svc.clone();
    child.remove("extends");
    Ok(merge_service(&base, &child))
}

/// Makes relative bind sources and env_file paths absolute against `dir`.
fn absolutize_paths(svc: &mut Mapping, dir: &Path) {
    let fix = |s: &str| -> String {
        if s.starts_with('.') {
            dir.join(s).display().to_string()
        } else {
            s.to_string()
        }
    };
    if let Some(Value::Sequence(vols)) = svc.get_mut("volumes") {
        for v in vols {
            match v {
                Value::String(s) => *s = fix(s),
                Value::Mapping(m) => {
                    if let Some(Value::String(src)) = m.get_mut("source") {
                        *src = fix(src);
                    }
                }
                _ => {}
            }
        }
    }
    match svc.get_mut("env_file") {
        Some(Value::String(s)) => *s = fix(s),
        Some(Value::Sequence(list)) => {
            for v in list {
                match v {
                    Value::String(s) => *s = fix(s),
                    Value::Mapping(m) => {
                        if let Some(Value::String(p)) = m.get_mut("path") {
                            *p = fix(p);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Merges `over` onto `base` the way renet needs for reading: scalars replaced, sequences
/// concatenated (so nothing a later file adds escapes vetting), mappings merged.
pub fn merge_service(base: &Mapping, over: &Mapping) -> Mapping {
    let mut out = base.clone();
    for (k, v) in over {
        let v = untag(v);
        let merged = match (out.get(k).map(untag), &v) {
            (_, v) if is_reset(v) => {
                out.remove(k);
                continue;
            }
            (Some(Value::Sequence(a)), Value::Sequence(b)) => {
                let mut c = a.clone();
                c.extend(b.iter().cloned());
                Value::Sequence(c)
            }
            (Some(Value::Mapping(a)), Value::Mapping(b)) => Value::Mapping(merge_service(&a, b)),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

/// `!override x` is `x` for reading purposes; `!reset` is handled by `is_reset`.
fn untag(v: &Value) -> Value {
    match v {
        Value::Tagged(t) if t.tag == "override" => t.value.clone(),
        other => other.clone(),
    }
}

fn is_reset(v: &Value) -> bool {
    matches!(v, Value::Tagged(t) if t.tag == "reset")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn names_in_order_across_files_with_anchors_and_extends() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(
            dir.path(),
            "a.yml",
            "x-base: &base\n  image: i\n  cap_add: [NET_ADMIN]\nservices:\n  web:\n    <<: *base\n    ports: ['80']\n  db:\n    extends: web\n    privileged: true\n",
        );
        let b = file(
            dir.path(),
            "b.yml",
            "services:\n  cache:\n    image: c\n  web:\n    ports: ['8080:81']\n",
        );
        let p = Project::load(&[a.clone(), b]).unwrap();
        assert_eq!(p.service_names, vec!["web", "db", "cache"]);
        let web = &p.services["web"].settings;
        assert_eq!(web.get("image").unwrap().as_str(), Some("i"));
        assert_eq!(web.get("ports").unwrap().as_sequence().unwrap().len(), 2);
        let db = &p.services["db"].settings;
        assert_eq!(db.get("cap_add").unwrap().as_sequence().unwrap().len(), 1);
        assert_eq!(db.get("privileged"), Some(&Value::Bool(true)));
        let f = ComposeFile::load(&a).unwrap();
        assert_eq!(f.line_of("db", "privileged"), Some(10));
        assert_eq!(f.line_of("web", "ports"), Some(7));
    }

    #[test]
    fn extends_from_another_file_and_cycles() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("common")).unwrap();
        file(
            dir.path(),
            "common/base.yml",
            "services:\n  base:\n    volumes: ['./data:/data']\n",
        );
        let a = file(
            dir.path(),
            "compose.yml",
            "services:\n  app:\n    extends: {file: common/base.yml, service: base}\n",
        );
        let p = Project::load(&[a]).unwrap();
        let vols = p.services["app"]
            .settings
            .get("volumes")
            .unwrap()
            .as_sequence()
            .unwrap();
        assert!(
            vols[0].as_str().unwrap().contains("common/./data:/data"),
            "{vols:?}"
        );
        let c = file(
            dir.path(),
            "cyc.yml",
            "services:\n  a:\n    extends: b\n  b:\n    extends: a\n",
        );
        assert!(format!("{:#}", Project::load(&[c]).unwrap_err()).contains("cycle"));
    }

    #[test]
    fn bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let bad = file(dir.path(), "bad.yml", "services:\n  web:\n   image: [\n");
        assert!(format!("{:#}", Project::load(&[bad]).unwrap_err()).contains("invalid YAML"));
        let inc = file(dir.path(), "inc.yml", "include: [x.yml]\nservices: {}\n");
        assert!(format!("{:#}", Project::load(&[inc]).unwrap_err()).contains("include"));
    }
}
