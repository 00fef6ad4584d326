//! The persisted claims in the route server's state folder: `ports.json` (port allocations)
//! and `hosts.json` (host ownership), shared by the route server and the operator's
//! `renet claims` command.
//!
//! Both writers take an exclusive lock on `claims.lock` (std `File::lock`) around every
//! read-modify-write, and files are replaced atomically (`atomic_file`). The route server
//! remembers the [`Stamp`] of what it last read or wrote; when the files changed under it (an
//! operator released a claim), it reloads instead of overwriting them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::routing::build::Claims;

/// File name of the persisted port table in the state folder.
pub const PORTS_FILE: &str = "ports.json";
/// File name of the persisted host claims.
pub const HOSTS_FILE: &str = "hosts.json";
const LOCK_FILE: &str = "claims.lock";

/// Modification times of both files: what a reader last saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp(Option<SystemTime>, Option<SystemTime>);

/// The state folder's claims files.
#[derive(Debug, Clone)]
pub struct ClaimsStore {
    dir: PathBuf,
}

impl ClaimsStore {
    pub fn new(dir: &Path) -> ClaimsStore {
        ClaimsStore {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Holds the lock until the returned file is dropped.
    fn lock(&self) -> Result<File> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("{}: cannot create the state folder", self.dir.display()))?;
        let path = self.path(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        file.lock()
            .with_context(|| format!("{}: cannot lock", path.display()))?;
        Ok(file)
    }

    /// What the files look like now.
    pub fn stamp(&self) -> Stamp {
        let mtime = |name| {
            std::fs::metadata(self.path(name))
                .and_then(|m| m.modified())
                .ok()
        };
        Stamp(mtime(PORTS_FILE), mtime(HOSTS_FILE))
    }

    /// Loads both tables (missing files are empty tables; a corrupt one is an error).
    pub fn load(&self) -> Result<(Claims, Stamp)> {
        let _lock = self.lock()?;
        self.load_locked()
    }

    fn load_locked(&self) -> Result<(Claims, Stamp)> {
        let claims = Claims {
            ports: read_table(&self.path(PORTS_FILE), "port allocation table")?,
            hosts: read_table(&self.path(HOSTS_FILE), "host claims table")?,
        };
        Ok((claims, self.stamp()))
    }

    /// Writes the tables that differ from `old`, unless the files changed since `expected`
    /// (then nothing is written and `None` is returned: reload and build again).
    pub fn save(&self, old: &Claims, new: &Claims, expected: &Stamp) -> Result<Option<Stamp>> {
        let _lock = self.lock()?;
        if self.stamp() != *expected {
            return Ok(None);
        }
        if old.ports != new.ports
            || !self.path(PORTS_FILE).exists() && !new.ports.allocations.is_empty()
        {
            write_table(&self.path(PORTS_FILE), &new.ports, "port allocations")?;
        }
        if old.hosts != new.hosts || !self.path(HOSTS_FILE).exists() && !new.hosts.hosts.is_empty()
        {
            write_table(&self.path(HOSTS_FILE), &new.hosts, "host claims")?;
        }
        Ok(Some(self.stamp()))
    }

    /// Removes the claim on `host` (canonicalised first); errors when nobody holds it.
    pub fn release_host(&self, host: &str) -> Result<u32> {
        let host = crate::routing::rule::canonical_host(host)
            .map_err(|e| anyhow::anyhow!("`{host}`: {e}"))?;
        let _lock = self.lock()?;
        let (mut claims, _) = self.load_locked()?;
        let Some(claim) = claims.hosts.hosts.remove(&host) else {
            bail!(
                "no repository holds host `{host}` (see `renet claims list`); automatic-route \
                 hosts and operator grants are not claims and cannot be released"
            );
        };
        write_table(&self.path(HOSTS_FILE), &claims.hosts, "host claims")?;
        Ok(claim.network_id)
    }

    /// Removes the allocation of `protocol`/`port`; errors when nobody holds it.
    pub fn release_port(&self, protocol: &str, port: u16) -> Result<u32> {
        let _lock = self.lock()?;
        let (mut claims, _) = self.load_locked()?;
        let Some(holder) = claims.ports.holder(protocol, port).map(|a| a.network_id) else {
            bail!("no repository holds {protocol} port {port} (see `renet claims list`)");
        };
        claims.ports.release(protocol, port);
        write_table(&self.path(PORTS_FILE), &claims.ports, "port allocations")?;
        Ok(holder)
    }
}

fn read_table<T: DeserializeOwned + Default>(path: &Path, what: &str) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{}: corrupt {what}; fix it, or move it away to let every claim be made afresh",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// Atomic replace (`atomic_file`): a crash leaves the old or the new table, never a torn one.
fn write_table<T: Serialize>(path: &Path, table: &T, what: &str) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(table)?;
    bytes.push(b'\n');
    crate::atomic_file::write(path, &bytes, None)
        .with_context(|| format!("{}: cannot save {what}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ownership::HostClaim;
    use crate::routing::port_allocation::PortAllocation;

    fn claims() -> Claims {
        let mut c = Claims::default();
        c.ports.allocations.push(PortAllocation {
            protocol: "tcp".into(),
            port: 10000,
            entrypoint: "tcp-10000".into(),
            network_id: 2816,
            service: "db".into(),
            target: 5432,
            preferred: 0,
        });
        c.hosts.hosts.insert(
            "shop.example.com".into(),
            HostClaim {
                network_id: 2816,
                since: 5,
                router: "shop-2816".into(),
            },
        );
        c
    }

    #[test]
    fn round_trip_release_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClaimsStore::new(dir.path());
        let (empty, stamp) = store.load().unwrap();
        assert_eq!(empty, Claims::default());
        let stamp = store.save(&empty, &claims(), &stamp).unwrap().unwrap();
        assert_eq!(store.load().unwrap().0, claims());
        // An operator releases a host: the server's next save is refused, it must reload.
        assert_eq!(store.release_host("SHOP.example.com.").unwrap(), 2816);
        assert!(store.release_host("shop.example.com").is_err());
        assert_eq!(store.save(&claims(), &claims(), &stamp).unwrap(), None);
        let (now, _) = store.load().unwrap();
        assert!(now.hosts.hosts.is_empty());
        assert_eq!(store.release_port("tcp", 10000).unwrap(), 2816);
        assert!(store.release_port("tcp", 10000).is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
        std::fs::write(dir.path().join(HOSTS_FILE), "{not json").unwrap();
        let e = format!("{:#}", store.load().unwrap_err());
        assert!(e.contains("corrupt host claims table"), "{e}");
    }
}
