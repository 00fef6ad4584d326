//! What renet still reads of the user's compose files itself — never to decide what runs
//! (that is compose's resolved model, `resolved.rs`), only what compose's model forgets:
//! the order services appear in (slots go to new services in that order, spec §3), the line
//! of a setting (for error messages), and the files `extends` and `include` pull in (compose
//! merges them and keeps no trace of where they came from; vetting must refuse files from
//! outside the repository).
//!
//! Every reading here is tolerant: a file renet cannot read is left to compose, which reports
//! it with its own message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// `extends`/`include` chains deeper than this are refused (compose itself would loop or
/// recurse for a long time on a cycle through another spelling of a path).
pub const MAX_REFERENCE_DEPTH: usize = 32;

/// One compose file: its text (for line numbers) and its YAML documents.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    pub docs: Vec<Value>,
    /// Why the YAML could not be (fully) read, if it could not.
    pub error: Option<String>,
}

impl SourceFile {
    /// Reads and parses `path`; unreadable or invalid YAML gives no documents.
    pub fn load(path: &Path) -> SourceFile {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, text),
            Err(e) => SourceFile {
                path: path.to_path_buf(),
                text: String::new(),
                docs: Vec::new(),
                error: Some(format!("cannot read: {e}")),
            },
        }
    }

    pub fn parse(path: &Path, text: String) -> SourceFile {
        let (docs, error) = parse_documents(&text);
        SourceFile {
            path: path.to_path_buf(),
            text,
            docs,
            error,
        }
    }

    /// Service names in file order (every YAML document, as compose merges them).
    pub fn service_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for doc in &self.docs {
            if let Some(Value::Mapping(m)) = doc.get("services") {
                for k in m.keys().filter_map(Value::as_str) {
                    if !out.iter().any(|n| n == k) {
                        out.push(k.to_string());
                    }
                }
            }
        }
        out
    }

    /// 1-based line of `key:` inside service `service`'s block, found in the text (best effort).
    pub fn line_of(&self, service: &str, key: &str) -> Option<usize> {
        let mut in_services = false;
        let mut svc_indent: Option<usize> = None;
        for (i, line) in self.text.lines().enumerate() {
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
                Some(si) if indent > si => {
                    let k = trimmed.trim_start_matches(['"', '\'']);
                    if k.starts_with(&format!("{key}:"))
                        || k.starts_with(&format!("{key}\":"))
                        || k.starts_with(&format!("{key}':"))
                    {
                        return Some(i + 1);
                    }
                }
                _ => {
                    svc_indent = (name == service && trimmed.contains(':')).then_some(indent);
                }
            }
        }
        None
    }
}

/// Every YAML document of `text` (with `<<` merge keys applied) up to the first invalid one,
/// and the error there.
fn parse_documents(text: &str) -> (Vec<Value>, Option<String>) {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        match <Value as serde::Deserialize>::deserialize(de) {
            Ok(mut v) => {
                let _ = v.apply_merge();
                out.push(v);
            }
            Err(e) => return (out, Some(format!("invalid YAML: {e}"))),
        }
    }
    (out, None)
}

/// Service names of several files, in order of first appearance.
pub fn service_names_in_order(files: &[SourceFile]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in files {
        for n in f.service_names() {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// Service names of the default compose files of `dir` (for `renet repo up`, which allocates
/// slots for every compose project of a repo before anything runs). No compose file → none.
pub fn service_names_in_dir(dir: &Path) -> anyhow::Result<Vec<String>> {
    match crate::compose::files::default_compose_files(dir) {
        None => Ok(Vec::new()),
        Some(files) => {
            let files: Vec<SourceFile> = files.iter().map(|p| SourceFile::load(p)).collect();
            if let Some(f) = files.iter().find(|f| f.error.is_some()) {
                anyhow::bail!(
                    "{}: {}",
                    f.path.display(),
                    f.error.as_deref().unwrap_or_default()
                );
            }
            Ok(service_names_in_order(&files))
        }
    }
}

/// A file another compose file pulls in with `extends.file` or `include`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `extends` or `include`.
    pub kind: &'static str,
    /// The service that extends (none for `include`).
    pub service: Option<String>,
    /// The path as written.
    pub written: String,
    /// The path it names (relative to the declaring file's folder), unless it holds a `$`
    /// variable renet cannot see the value of.
    pub path: Option<PathBuf>,
    pub declared_in: PathBuf,
    pub line: Option<usize>,
}

/// Every `extends.file` and `include` path reachable from `files`, following the files they
/// name (each file once, by its canonical path, at most `MAX_REFERENCE_DEPTH` deep).
/// Returns the references and, if the chain was too deep, the file where it stopped.
pub fn referenced_files(files: &[SourceFile]) -> (Vec<Reference>, Option<PathBuf>) {
    let mut seen: BTreeSet<PathBuf> = files
        .iter()
        .map(|f| std::fs::canonicalize(&f.path).unwrap_or_else(|_| f.path.clone()))
        .collect();
    let mut out = Vec::new();
    let mut queue: Vec<(SourceFile, usize)> = files.iter().map(|f| (f.clone(), 0)).collect();
    let mut too_deep = None;
    while let Some((file, depth)) = queue.pop() {
        for r in references_of(&file) {
            if let Some(p) = &r.path {
                let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                if p.is_file() && seen.insert(canon) {
                    if depth + 1 > MAX_REFERENCE_DEPTH {
                        too_deep = Some(p.clone());
                    } else {
                        queue.push((SourceFile::load(p), depth + 1));
                    }
                }
            }
            out.push(r);
        }
    }
    (out, too_deep)
}

fn references_of(file: &SourceFile) -> Vec<Reference> {
    let dir = file.path.parent().unwrap_or(Path::new("/"));
    let make = |kind, service: Option<String>, written: &str, key: &str| {
        let line = service
            .as_deref()
            .and_then(|s| file.line_of(s, key))
            .or_else(|| {
                file.text
                    .lines()
                    .position(|l| l.contains(written))
                    .map(|i| i + 1)
            });
        Reference {
            kind,
            path: (!written.contains('$')).then(|| dir.join(written)),
            service,
            written: written.to_string(),
            declared_in: file.path.clone(),
            line,
        }
    };
    let mut out = Vec::new();
    for doc in &file.docs {
        if let Some(Value::Mapping(services)) = doc.get("services") {
            for (name, svc) in services {
                let file_ref = svc.get("extends").and_then(|e| e.get("file"));
                if let (Some(name), Some(Value::String(f))) = (name.as_str(), file_ref) {
                    out.push(make("extends", Some(name.to_string()), f, "extends"));
                }
            }
        }
        let includes: Vec<&str> = match doc.get("include") {
            Some(Value::Sequence(list)) => list
                .iter()
                .flat_map(|i| match i {
                    Value::String(s) => vec![s.as_str()],
                    Value::Mapping(_) => match i.get("path") {
                        Some(Value::String(s)) => vec![s.as_str()],
                        Some(Value::Sequence(l)) => l.iter().filter_map(Value::as_str).collect(),
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                })
                .collect(),
            _ => Vec::new(),
        };
        for inc in includes {
            out.push(make("include", None, inc, "include"));
        }
    }
    out
}

/// Whether any of `files` or the files they reference may hold `env_file` or `label_file`
/// (a key anywhere, in any document; a file renet cannot parse counts as "may"). When none
/// does, compose reads no such file and its uninterpolated model need not be asked for.
pub fn may_read_env_files(files: &[SourceFile], references: &[Reference]) -> bool {
    let referenced = references
        .iter()
        .filter_map(|r| r.path.as_ref())
        .map(|p| SourceFile::load(p));
    files
        .iter()
        .cloned()
        .chain(referenced)
        .any(|f| f.error.is_some() || f.docs.iter().any(has_env_file_key))
}

fn has_env_file_key(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m.iter().any(|(k, v)| {
            matches!(k.as_str(), Some("env_file" | "label_file"))
                || has_env_file_key(k)
                || has_env_file_key(v)
        }),
        Value::Sequence(s) => s.iter().any(has_env_file_key),
        Value::Tagged(t) => has_env_file_key(&t.value),
        _ => false,
    }
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
    fn names_in_order_across_documents_and_files() {
        let a = SourceFile::parse(
            Path::new("/r/a.yml"),
            "x-base: &base\n  image: i\nservices:\n  web:\n    <<: *base\n  db: {}\n---\nservices:\n  cache: {}\n  web: {}\n".into(),
        );
        let b = SourceFile::parse(
            Path::new("/r/b.yml"),
            "services:\n  zz: {}\n  db: {}\n".into(),
        );
        assert_eq!(
            service_names_in_order(&[a.clone(), b]),
            ["web", "db", "cache", "zz"]
        );
        assert_eq!(a.line_of("db", "image"), None);
        let c = SourceFile::parse(
            Path::new("/r/c.yml"),
            "services:\n  web:\n    image: x\n  db:\n    image: y\n    privileged: true\n".into(),
        );
        assert_eq!(c.line_of("db", "privileged"), Some(6));
        assert_eq!(c.line_of("web", "privileged"), None);
    }

    #[test]
    fn env_file_keys_anywhere() {
        let f = |t: &str| SourceFile::parse(Path::new("/r/c.yml"), t.into());
        assert!(!may_read_env_files(
            &[f("services:\n  a: {image: x}\n")],
            &[]
        ));
        assert!(may_read_env_files(
            &[f("services:\n  a: {env_file: x}\n")],
            &[]
        ));
        assert!(may_read_env_files(
            &[f("x: 1\n---\nservices:\n  a:\n    \"label\\x5ffile\": x\n")],
            &[]
        ));
        assert!(may_read_env_files(&[f("services: [\n")], &[]));
        assert!(!may_read_env_files(&[f("")], &[]));
    }

    #[test]
    fn extends_and_include_references_followed_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        file(
            dir.path(),
            "sub/base.yml",
            "services:\n  b:\n    extends: {file: ../compose.yml, service: a}\n",
        );
        let main = file(
            dir.path(),
            "compose.yml",
            "include: [{path: [sub/inc.yml]}]\nservices:\n  a:\n    extends:\n      file: sub/base.yml\n      service: b\n  c:\n    extends: {file: '${X}/x.yml', service: q}\n",
        );
        file(dir.path(), "sub/inc.yml", "services: {}\n");
        let (refs, deep) = referenced_files(&[SourceFile::load(&main)]);
        assert!(deep.is_none());
        let written: Vec<&str> = refs.iter().map(|r| r.written.as_str()).collect();
        assert!(written.contains(&"sub/base.yml"), "{written:?}");
        assert!(written.contains(&"sub/inc.yml"), "{written:?}");
        assert!(written.contains(&"../compose.yml"), "{written:?}");
        let var = refs.iter().find(|r| r.written.contains('$')).unwrap();
        assert!(var.path.is_none());
        assert_eq!(var.line, Some(8));
    }
}
