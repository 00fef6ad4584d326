//! `.rediacc.json`: the repo's service → slot table (spec §3).
//!
//! Slots are stable forever and shared by every compose project of the repo. Updates hold an
//! exclusive lock and replace the file atomically, so concurrent `renet compose` runs never hand
//! out one slot twice and a crash leaves the old or the new file, never a torn one.
//!
//! The lock is taken on the repo root *folder* (flock through std `File::lock`), not on the
//! file: the file is replaced by rename, and a lock on a replaced inode would exclude nobody.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::addresses::MAX_SERVICES;

pub const FILE_NAME: &str = ".rediacc.json";

/// The slots of a repo, keyed by service name.
pub type SlotTable = BTreeMap<String, u32>;

/// What an allocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Every service in the file after the update (old and new).
    pub slots: SlotTable,
    /// Services that got a slot in this call, in allocation order.
    pub added: Vec<(String, u32)>,
}

pub fn file_path(repo_root: &Path) -> PathBuf {
    repo_root.join(FILE_NAME)
}

/// Reads the table without changing anything (a missing file is an empty table).
pub fn read(repo_root: &Path) -> Result<SlotTable> {
    let path = file_path(repo_root);
    let doc = load(&path)?;
    Ok(parse(&path, &doc)?.0)
}

/// Gives every service in `services` (in order) a slot, keeping existing ones, under the repo
/// lock. Writes the file only when something was added. Nothing is written on error.
pub fn allocate(repo_root: &Path, services: &[String]) -> Result<Allocation> {
    let _lock = lock_repo(repo_root)?;
    let path = file_path(repo_root);
    let mut doc = load(&path)?;
    let allocation = assign(&path, &mut doc, services)?;
    if !allocation.added.is_empty() {
        write_atomically(&path, &doc)?;
    }
    Ok(allocation)
}

/// What `allocate` would do now, without writing (and without the lock): `renet compose`
/// learns the IPs of new services before vetting, and writes only once vetting passed.
pub fn plan(repo_root: &Path, services: &[String]) -> Result<Allocation> {
    let path = file_path(repo_root);
    let mut doc = load(&path)?;
    assign(&path, &mut doc, services)
}

/// Gives the services of `services` without a slot the lowest free slots, in `doc`.
fn assign(path: &Path, doc: &mut Value, services: &[String]) -> Result<Allocation> {
    let (mut slots, missing_slot) = parse(path, doc)?;

    let mut wanted: Vec<&str> = Vec::new();
    for name in missing_slot
        .iter()
        .map(String::as_str)
        .chain(services.iter().map(String::as_str))
    {
        if !slots.contains_key(name) && !wanted.contains(&name) {
            wanted.push(name);
        }
    }
    if wanted.is_empty() {
        return Ok(Allocation {
            slots,
            added: Vec::new(),
        });
    }

    let mut used: Vec<bool> = vec![false; MAX_SERVICES as usize];
    for &s in slots.values() {
        used[s as usize] = true;
    }
    let free = used.iter().filter(|u| !**u).count();
    if wanted.len() > free {
        bail!(
            "{}: cannot add {} new service(s) ({}): a repo holds at most {MAX_SERVICES} services \
             (slots 0..=60) and {} are taken; nothing was written. Remove unused entries from {FILE_NAME} \
             or move services to another repository",
            path.display(),
            wanted.len(),
            wanted.join(", "),
            slots.len()
        );
    }

    let services_obj = doc
        .as_object_mut()
        .expect("checked by parse")
        .entry("services")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("checked by parse");
    let mut added = Vec::new();
    for name in wanted {
        let slot = used.iter().position(|u| !*u).expect("counted above") as u32;
        used[slot as usize] = true;
        let entry = services_obj
            .entry(name.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry
            .as_object_mut()
            .expect("checked by parse")
            .insert("slot".into(), Value::from(slot));
        slots.insert(name.to_string(), slot);
        added.push((name.to_string(), slot));
    }
    Ok(Allocation { slots, added })
}

/// Holds the exclusive repo lock until dropped.
pub struct RepoLock(#[allow(dead_code)] File);

pub fn lock_repo(repo_root: &Path) -> Result<RepoLock> {
    let dir = File::open(repo_root)
        .with_context(|| format!("{}: cannot open the repo root", repo_root.display()))?;
    dir.lock()
        .with_context(|| format!("{}: cannot lock the repo root", repo_root.display()))?;
    Ok(RepoLock(dir))
}

fn load(path: &Path) -> Result<Value> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let doc: Value = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{}: corrupt file (not valid JSON); renet will not replace it. Fix it by hand \
                     or restore it from a backup",
                    path.display()
                )
            })?;
            Ok(doc)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(serde_json::json!({ "services": {} }))
        }
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// Validates the document. Returns the slots, plus the services listed without a `slot`
/// (a hand-written entry, which gets one).
fn parse(path: &Path, doc: &Value) -> Result<(SlotTable, Vec<String>)> {
    let corrupt = |what: String| {
        anyhow::anyhow!(
            "{}: corrupt file: {what}; renet will not replace it. Fix it by hand (format: \
             {{\"services\": {{\"api\": {{\"slot\": 0}}}}}})",
            path.display()
        )
    };
    let Some(top) = doc.as_object() else {
        return Err(corrupt("the top level is not an object".into()));
    };
    let mut slots = SlotTable::new();
    let mut missing = Vec::new();
    let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
    match top.get("services") {
        None => {}
        Some(Value::Object(services)) => {
            for (name, entry) in services {
                let Some(entry) = entry.as_object() else {
                    return Err(corrupt(format!("service `{name}` is not an object")));
                };
                match entry.get("slot") {
                    None => missing.push(name.clone()),
                    Some(v) => {
                        let slot =
                            v.as_u64()
                                .filter(|s| *s < MAX_SERVICES as u64)
                                .ok_or_else(|| {
                                    corrupt(format!(
                                        "service `{name}`: slot {v} is not an integer in 0..=60"
                                    ))
                                })? as u32;
                        if let Some(other) = owner.insert(slot, name) {
                            return Err(corrupt(format!(
                                "services `{other}` and `{name}` both have slot {slot}"
                            )));
                        }
                        slots.insert(name.clone(), slot);
                    }
                }
            }
        }
        Some(_) => return Err(corrupt("`services` is not an object".into())),
    }
    Ok((slots, missing))
}

/// Pretty JSON with a final newline, replaced atomically (`atomic_file`).
fn write_atomically(path: &Path, doc: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(doc).expect("JSON values serialize");
    text.push('\n');
    crate::atomic_file::write(path, text.as_bytes(), None)
        .with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allocates_lowest_free_slots_in_order_and_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = allocate(dir.path(), &names(&["web", "db", "cache"])).unwrap();
        assert_eq!(
            a.added,
            vec![("web".into(), 0), ("db".into(), 1), ("cache".into(), 2)]
        );
        let again = allocate(dir.path(), &names(&["cache", "db", "web"])).unwrap();
        assert!(again.added.is_empty());
        assert_eq!(again.slots, a.slots);
    }

    #[test]
    fn removed_services_keep_their_slot() {
        let dir = tempfile::tempdir().unwrap();
        allocate(dir.path(), &names(&["a", "b", "c"])).unwrap();
        let after = allocate(dir.path(), &names(&["a", "c", "d"])).unwrap();
        assert_eq!(after.slots["b"], 1);
        assert_eq!(after.added, vec![("d".into(), 3)]);
    }

    #[test]
    fn hand_written_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path());
        std::fs::write(
            &path,
            r#"{"comment": "mine", "services": {"api": {"slot": 5, "note": "x"}, "old": {}}}"#,
        )
        .unwrap();
        let a = allocate(dir.path(), &names(&["api", "new"])).unwrap();
        assert_eq!(a.slots["api"], 5);
        assert_eq!(a.slots["old"], 0, "an entry without a slot gets one");
        assert_eq!(a.slots["new"], 1);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["comment"], "mine");
        assert_eq!(doc["services"]["api"]["note"], "x");
        assert_eq!(doc["services"]["new"]["slot"], 1);
    }

    #[test]
    fn the_62nd_service_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let sixty_one: Vec<String> = (0..61).map(|i| format!("s{i}")).collect();
        allocate(dir.path(), &sixty_one).unwrap();
        let before = std::fs::read(file_path(dir.path())).unwrap();
        let err = allocate(dir.path(), &names(&["one-too-many"])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("at most 61") && msg.contains("one-too-many"),
            "{msg}"
        );
        assert_eq!(std::fs::read(file_path(dir.path())).unwrap(), before);
    }

    #[test]
    fn corrupt_files_are_errors_and_kept() {
        for body in [
            "{not json",
            "[]",
            r#"{"services": []}"#,
            r#"{"services": {"a": {"slot": 61}}}"#,
            r#"{"services": {"a": {"slot": 1}, "b": {"slot": 1}}}"#,
            r#"{"services": {"a": {"slot": "1"}}}"#,
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(file_path(dir.path()), body).unwrap();
            let err = allocate(dir.path(), &names(&["x"])).unwrap_err();
            assert!(format!("{err:#}").contains("corrupt"), "{body}: {err:#}");
            assert_eq!(
                std::fs::read_to_string(file_path(dir.path())).unwrap(),
                body
            );
        }
    }

    #[test]
    fn reading_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        assert!(!file_path(dir.path()).exists());
    }
}
