//! The repository's hosts file (spec §4, step 4): every service name of the repository, and
//! each service's `container_name`, network aliases and link aliases, resolve to its service
//! IP inside every container. One file per repository, bind-mounted read-only at `/etc/hosts`
//! of every service (instead of 61 × 61 `extra_hosts` entries handed to compose); a service
//! with `extra_hosts` of its own gets its own copy with those lines added.
//!
//! The file lives in renet's runtime folder (`/run/renet/compose/<N>/`), never in the
//! repository, so a tenant cannot point it elsewhere with a symlink. It is rewritten *in place*
//! (same inode) under a lock: a bind mount pins the inode, so running containers see each
//! update; other compose projects' aliases are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::addresses::NetworkId;
use crate::compose::rewrite::HostsFiles;
use crate::compose::slots::SlotTable;

const SECTION: &str = "# renet: services of the repository (rewritten by renet compose)";

/// The hosts files of one compose project of a repository.
pub struct RepoHosts {
    /// `<runtime dir>/<N>-<hash of the repo root>`.
    pub dir: PathBuf,
    /// The compose project name (per-service files are named after it).
    pub project: String,
}

impl RepoHosts {
    /// The folder is named after the network and the repository root, so a repository that
    /// moves (or a test repository reusing a network ID) starts a file of its own.
    pub fn new(
        runtime_dir: &Path,
        network: NetworkId,
        repo_root: &Path,
        project: &str,
    ) -> RepoHosts {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in repo_root.as_os_str().as_encoded_bytes() {
            h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
        }
        RepoHosts {
            dir: runtime_dir.join(format!("{network}-{h:016x}")),
            project: project.to_string(),
        }
    }

    pub fn shared(&self) -> PathBuf {
        self.dir.join("hosts")
    }
}

impl HostsFiles for RepoHosts {
    fn hosts_file(&self, service: &str, has_extra_hosts: bool) -> PathBuf {
        if has_extra_hosts {
            self.dir
                .join(format!("hosts-{}-{}", self.project, sanitize(service)))
        } else {
            self.shared()
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes the shared file (and per-service copies) after a successful vetting.
pub fn write(
    files: &RepoHosts,
    network: NetworkId,
    slots: &SlotTable,
    aliases: &BTreeMap<String, BTreeSet<String>>,
    extra_hosts: &BTreeMap<String, Vec<(String, String)>>,
) -> Result<()> {
    std::fs::create_dir_all(&files.dir)
        .with_context(|| format!("{}: cannot create", files.dir.display()))?;
    let base = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut fresh: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for (name, slot) in slots {
        let ip = network.slot_ip(*slot)?;
        let names = fresh.entry(ip).or_default();
        names.insert(name.clone());
        names.extend(aliases.get(name).into_iter().flatten().cloned());
    }
    let project_ips: BTreeSet<Ipv4Addr> = aliases
        .keys()
        .filter_map(|n| slots.get(n))
        .filter_map(|s| network.slot_ip(*s).ok())
        .collect();
    let shared = update_in_place(&files.shared(), |old| {
        let mut entries = entries_of(old);
        for (ip, names) in &fresh {
            let e = entries.entry(*ip).or_default();
            if project_ips.contains(ip) {
                *e = names.clone();
            } else {
                e.extend(names.iter().cloned());
            }
        }
        entries.retain(|ip, _| network.contains_service_ip(*ip));
        render(&base, &entries, &[])
    })?;
    for (service, lines) in extra_hosts {
        let path = files.hosts_file(service, true);
        update_in_place(&path, |_| render(&base, &entries_of(&shared), lines))?;
    }
    Ok(())
}

/// The service lines of a hosts file renet wrote.
fn entries_of(text: &str) -> BTreeMap<Ipv4Addr, BTreeSet<String>> {
    let mut out: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    let Some((_, section)) = text.split_once(SECTION) else {
        return out;
    };
    for line in section.lines() {
        if line.starts_with('#') {
            break;
        }
        let mut words = line.split_whitespace();
        if let Some(ip) = words.next().and_then(|w| w.parse::<Ipv4Addr>().ok()) {
            out.entry(ip).or_default().extend(words.map(String::from));
        }
    }
    out
}

/// The host's own lines, then the repository's services, then a service's `extra_hosts`.
pub fn render(
    base: &str,
    entries: &BTreeMap<Ipv4Addr, BTreeSet<String>>,
    extra: &[(String, String)],
) -> String {
    let mut out = String::new();
    for line in base.lines() {
        if line.starts_with(SECTION) {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !out.contains("localhost") {
        out.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    }
    out.push_str(SECTION);
    out.push('\n');
    for (ip, names) in entries {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    if !extra.is_empty() {
        out.push_str("# extra_hosts of the service\n");
        for (host, ip) in extra {
            out.push_str(&format!("{ip}\t{host}\n"));
        }
    }
    out
}

/// Rewrites `path` in place under an exclusive lock; returns the new text.
fn update_in_place(path: &Path, make: impl FnOnce(&str) -> String) -> Result<String> {
    let mut file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    file.lock()
        .with_context(|| format!("{}: cannot lock", path.display()))?;
    let mut old = String::new();
    let _ = file.read_to_string(&mut old);
    let text = make(&old);
    if text != old {
        file.seek(SeekFrom::Start(0))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
        file.set_len(text.len() as u64)?;
        file.sync_all()?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_other_projects_and_updates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let net = NetworkId::new(2816).unwrap();
        let files = RepoHosts::new(dir.path(), net, Path::new("/r"), "a");
        let mut slots = SlotTable::new();
        slots.insert("web".into(), 0);
        slots.insert("db".into(), 1);
        let mut aliases = BTreeMap::new();
        aliases.insert("web".to_string(), BTreeSet::from(["www".to_string()]));
        write(&files, net, &slots, &aliases, &BTreeMap::new()).unwrap();
        let shared = files.shared();
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&shared).unwrap().ino();
        // Another project of the repo: its aliases join, the first project's stay.
        let other = RepoHosts::new(dir.path(), net, Path::new("/r"), "b");
        let mut aliases_b = BTreeMap::new();
        aliases_b.insert("db".to_string(), BTreeSet::from(["database".to_string()]));
        let mut extra = BTreeMap::new();
        extra.insert(
            "db".to_string(),
            vec![("ext".to_string(), "127.0.0.9".to_string())],
        );
        write(&other, net, &slots, &aliases_b, &extra).unwrap();
        let text = std::fs::read_to_string(&shared).unwrap();
        assert!(text.contains("127.0.11.2\tweb www\n"), "{text}");
        assert!(text.contains("127.0.11.3\tdatabase db\n"), "{text}");
        assert_eq!(std::fs::metadata(&shared).unwrap().ino(), inode);
        let own = std::fs::read_to_string(other.hosts_file("db", true)).unwrap();
        assert!(
            own.contains("127.0.0.9\text\n") && own.contains("127.0.11.2\tweb www"),
            "{own}"
        );
        // The first project drops its alias: it is gone.
        write(
            &files,
            net,
            &slots,
            &BTreeMap::from([("web".to_string(), BTreeSet::new())]),
            &BTreeMap::new(),
        )
        .unwrap();
        let text = std::fs::read_to_string(&shared).unwrap();
        assert!(text.contains("127.0.11.2\tweb\n"), "{text}");
        assert!(text.contains("localhost"), "{text}");
    }
}
