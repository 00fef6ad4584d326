//! The route server's last known containers, kept in the state folder (`containers.json`).
//!
//! Why: after a restart of the route server, a repo daemon that does not answer yet (crashed,
//! hung, still starting) would otherwise contribute no containers, and Traefik would drop that
//! repository's routes although its containers still run under their shims. So every change of
//! the container set is saved, and at startup a daemon whose socket is present starts from its
//! saved containers, marked `stale` in `/health`, until it answers and is listed afresh.
//!
//! The file is a cache: a missing or unreadable file means "nothing known" (logged), never a
//! reason not to start.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::addresses::NetworkId;
use crate::routing::build::{Container, Health, Labels};

/// File name in the state folder.
pub const FILE: &str = "containers.json";

/// One saved container (route building's `Container`, in a stable on-disk form).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    network_id: u32,
    id: String,
    name: String,
    labels: Labels,
    health: String,
    /// Creation time (Unix seconds): the age of the container's claims.
    #[serde(default)]
    created: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedFile {
    containers: Vec<Saved>,
}

fn health_name(h: Health) -> &'static str {
    match h {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

fn health_from(name: &str) -> Health {
    match name {
        "starting" => Health::Starting,
        "healthy" => Health::Healthy,
        "unhealthy" => Health::Unhealthy,
        _ => Health::None,
    }
}

/// Writes the containers atomically (`atomic_file`).
pub fn save(path: &Path, containers: &[Container]) -> Result<()> {
    let file = SavedFile {
        containers: containers
            .iter()
            .map(|c| Saved {
                network_id: c.network_id.get(),
                id: c.id.clone(),
                name: c.name.clone(),
                labels: c.labels.clone(),
                health: health_name(c.health).to_string(),
                created: c.created,
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec(&file)?;
    bytes.push(b'\n');
    crate::atomic_file::write(path, &bytes, Some(0o600))
        .with_context(|| format!("{}: cannot save the last known containers", path.display()))
}

/// Reads the saved containers; a missing file is an empty list. Entries with an invalid
/// network ID are skipped (the file is a cache, not an authority).
pub fn load(path: &Path) -> Result<Vec<Container>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let file: SavedFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a last-known containers file", path.display()))?;
    Ok(file
        .containers
        .into_iter()
        .filter_map(|s| {
            Some(Container {
                network_id: NetworkId::new(s.network_id).ok()?,
                id: s.id,
                name: s.name,
                labels: s.labels,
                health: health_from(&s.health),
                created: s.created,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::build::LabelSet;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert!(load(&path).unwrap().is_empty());
        let c = Container {
            network_id: NetworkId::new(2816).unwrap(),
            id: "abc".into(),
            name: "web".into(),
            labels: LabelSet::from([("rediacc.service_name", "web")]).into(),
            health: Health::Healthy,
            created: 1_700_000_000,
        };
        save(&path, std::slice::from_ref(&c)).unwrap();
        assert_eq!(load(&path).unwrap(), vec![c]);
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path).is_err());
    }
}
