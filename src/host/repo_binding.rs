//! One network ID ↔ one repository root, recorded beside the repo daemon's data
//! (`<data dir>/docker-<N>/repository.json`) so that every renet command sees it.
//!
//! Why: without it, `renet compose` run by hand in a subfolder holding a Rediaccfile takes the
//! subfolder for the root, creates a second `.rediacc.json` there and hands out addresses that
//! other services already hold; and two folders can use one network ID without a word.
//!
//! - The first command that needs a root for network N (`renet compose`, `renet repo up`)
//!   records it. Later commands run inside that root are corrected to it (a subfolder uses the
//!   root's slots); commands naming another root are refused, with both folders and the way
//!   out in the message.
//! - The record also names the socket folder the repository's daemon lives in, so the route
//!   server knows which repositories it should see ("expected"): a registered repository whose
//!   daemon is missing makes `/health` degraded.
//! - The binding is a guard against operator mistakes, not a tenant boundary: it is written
//!   with an exclusive lock and an atomic replace, and released only by an operator
//!   (`renet repo unbind`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::addresses::NetworkId;

/// File name inside `<data dir>/docker-<N>/`.
pub const FILE_NAME: &str = "repository.json";

/// The record of one network ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub network_id: u32,
    /// The repository root (canonical path).
    pub root: PathBuf,
    /// The socket folder of the repo daemon (absolute).
    pub socket_dir: PathBuf,
}

/// `<data dir>/docker-<N>/repository.json`
pub fn record_path(data_dir: &Path, id: NetworkId) -> PathBuf {
    data_dir.join(format!("docker-{id}")).join(FILE_NAME)
}

/// The binding of `id`, if recorded. A record that cannot be read is an error naming the file.
pub fn read(data_dir: &Path, id: NetworkId) -> Result<Option<Binding>> {
    read_file(&record_path(data_dir, id))
}

fn read_file(path: &Path) -> Result<Option<Binding>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "{}: corrupt repository binding; fix it, or remove it to let the next command \
                 record the repository again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// Every recorded binding under `data_dir`, by network ID. Unreadable records are skipped
/// with a warning (a listing must not fail because of one bad file).
pub fn list(data_dir: &Path) -> Vec<Binding> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut out: Vec<Binding> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n: u32 = name.to_str()?.strip_prefix("docker-")?.parse().ok()?;
            NetworkId::new(n).ok()?;
            match read_file(&e.path().join(FILE_NAME)) {
                Ok(b) => b.filter(|b| b.network_id == n),
                Err(err) => {
                    tracing::warn!("{err:#}");
                    None
                }
            }
        })
        .collect();
    out.sort_by_key(|b| b.network_id);
    out
}

/// What to do with a root a command resolved for network `id`, given the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No record yet: record this root.
    Record,
    /// The command runs in (or names) the bound root or a folder inside it: use the bound root.
    UseBound(PathBuf),
}

/// Judges `candidate` (the root a command resolved) and `cwd` against `bound` (canonical
/// paths). A candidate inside the bound root — a subfolder with its own Rediaccfile — is
/// corrected to the bound root; anything else is refused.
pub fn judge(
    id: NetworkId,
    bound: Option<&Binding>,
    candidate: &Path,
    record: &Path,
) -> Result<Decision> {
    let Some(b) = bound else {
        return Ok(Decision::Record);
    };
    if candidate.starts_with(&b.root) {
        return Ok(Decision::UseBound(b.root.clone()));
    }
    bail!(
        "network {id} belongs to the repository {} (recorded in {}), but this command is for {}: \
         one network ID serves one repository. Run it in {}, give another network ID, or, if the \
         repository really moved, release the old one with `renet repo unbind --network-id {id}`",
        b.root.display(),
        record.display(),
        candidate.display(),
        b.root.display()
    )
}

/// Resolves the root a command must use for network `id` and records it when it is the first:
/// `candidate` is what the command found (flag, `REDIACC_WORKING_DIR`, nearest folder).
pub fn bind(
    data_dir: &Path,
    id: NetworkId,
    candidate: &Path,
    socket_dir: &Path,
) -> Result<PathBuf> {
    let candidate = std::fs::canonicalize(candidate)
        .with_context(|| format!("{}: cannot open the repository folder", candidate.display()))?;
    let socket_dir = std::path::absolute(socket_dir)
        .with_context(|| format!("{}: cannot make absolute", socket_dir.display()))?;
    let path = record_path(data_dir, id);
    let folder = path.parent().expect("record path has a folder");
    // Two first commands at once must not both record their own root.
    let lock_path = folder.join(".repository.lock");
    let opened = std::fs::create_dir_all(folder).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
    });
    let lock = match opened {
        Ok(l) => l,
        // A data folder this user may not write (renet run by hand without root): the record
        // that exists is still enforced, a new one is not written.
        Err(e) if is_not_writable(&e) => {
            let root = check(data_dir, id, &candidate)?;
            if read_file(&path)?.is_none() {
                eprintln!(
                    "renet: warning: cannot record the repository of network {id} in {} ({e}); \
                     the one-root-per-network check is off for this command",
                    path.display()
                );
            }
            return Ok(root);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("{}: cannot open", lock_path.display()));
        }
    };
    lock.lock()
        .with_context(|| format!("{}: cannot lock", lock_path.display()))?;
    let bound = read_file(&path)?;
    match judge(id, bound.as_ref(), &candidate, &path)? {
        Decision::UseBound(root) => {
            if root != candidate {
                eprintln!(
                    "renet: {} is inside the repository {} of network {id}: using the root",
                    candidate.display(),
                    root.display()
                );
            }
            Ok(root)
        }
        Decision::Record => {
            let b = Binding {
                network_id: id.get(),
                root: candidate.clone(),
                socket_dir,
            };
            let mut bytes = serde_json::to_vec_pretty(&b)?;
            bytes.push(b'\n');
            crate::atomic_file::write(&path, &bytes, None)
                .with_context(|| format!("{}: cannot record the repository", path.display()))?;
            tracing::info!(
                "network {id} is now bound to {} ({})",
                candidate.display(),
                path.display()
            );
            Ok(candidate)
        }
    }
}

fn is_not_writable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Checks a root against the record without recording anything (read-only commands such as
/// `renet ips`, `renet repo down|info`): the bound root when `candidate` is inside it.
pub fn check(data_dir: &Path, id: NetworkId, candidate: &Path) -> Result<PathBuf> {
    let canonical = std::fs::canonicalize(candidate).unwrap_or_else(|_| candidate.to_path_buf());
    let path = record_path(data_dir, id);
    match judge(id, read_file(&path)?.as_ref(), &canonical, &path)? {
        Decision::UseBound(root) => Ok(root),
        Decision::Record => Ok(candidate.to_path_buf()),
    }
}

/// Removes the record of `id` (the operator's way to move a repository or reuse an ID).
pub fn unbind(data_dir: &Path, id: NetworkId) -> Result<Option<Binding>> {
    let path = record_path(data_dir, id);
    let old = read_file(&path)?;
    if old.is_some() {
        std::fs::remove_file(&path)
            .with_context(|| format!("{}: cannot remove", path.display()))?;
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NetworkId {
        NetworkId::new(3520).unwrap()
    }

    #[test]
    fn first_root_is_recorded_subfolders_are_corrected_others_refused() {
        let data = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let sub = repo.path().join("api");
        std::fs::create_dir(&sub).unwrap();
        let root = std::fs::canonicalize(repo.path()).unwrap();

        assert_eq!(
            bind(data.path(), id(), repo.path(), Path::new("/s")).unwrap(),
            root
        );
        assert_eq!(
            bind(data.path(), id(), &sub, Path::new("/s")).unwrap(),
            root
        );
        assert_eq!(check(data.path(), id(), &sub).unwrap(), root);
        let err = format!(
            "{:#}",
            bind(data.path(), id(), other.path(), Path::new("/s")).unwrap_err()
        );
        assert!(
            err.contains(&root.display().to_string())
                && err.contains(
                    &std::fs::canonicalize(other.path())
                        .unwrap()
                        .display()
                        .to_string()
                )
                && err.contains("renet repo unbind --network-id 3520"),
            "{err}"
        );
        assert_eq!(list(data.path()).len(), 1);
        assert!(unbind(data.path(), id()).unwrap().is_some());
        assert!(list(data.path()).is_empty());
        // Released: another root may take the ID.
        bind(data.path(), id(), other.path(), Path::new("/s")).unwrap();
    }

    #[test]
    fn a_sibling_with_a_common_prefix_is_not_inside() {
        let b = Binding {
            network_id: 3520,
            root: "/srv/app".into(),
            socket_dir: "/s".into(),
        };
        assert!(judge(id(), Some(&b), Path::new("/srv/app2"), Path::new("/r")).is_err());
        assert_eq!(
            judge(id(), Some(&b), Path::new("/srv/app/x"), Path::new("/r")).unwrap(),
            Decision::UseBound("/srv/app".into())
        );
    }
}
