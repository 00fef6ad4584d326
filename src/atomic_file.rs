//! Replacing a file atomically: a temp file in the same folder, fsync, rename, fsync of the
//! folder. A crash at any instant leaves the old or the new file, never a torn one — what
//! `.rediacc.json`, the route server's port table and the proxy configuration all need.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to `path` atomically. With a `mode`, the temp file is created with it (and
/// set exactly, whatever the umask), so the content is never readable by others, not even for
/// an instant; without one, the usual `0666 & !umask`.
///
/// The temp file is `.<name>.tmp-<pid>` beside `path`; it is removed again on failure. Temp
/// files of earlier writers that were killed mid-write (their pid is gone) are removed first
/// ([`remove_stale_temp_files`]).
pub fn write(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    write_staged_in(path, parent_dir(path), bytes, mode)
}

/// Like [`write`], with the temp file in `staging` instead of beside `path`; `staging` must be
/// on the same file system (the rename is atomic only there). For a file in a folder that
/// another program watches (Traefik's file provider reloads on every event in its folder):
/// the only event the folder sees is the rename that puts the complete file in place.
pub fn write_staged_in(
    path: &Path,
    staging: &Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let prefix = temp_prefix(path);
    remove_stale_temp_files(staging, &prefix);
    let tmp = staging.join(format!("{prefix}{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        if let Some(m) = mode {
            opts.mode(m);
        }
        let mut f = opts.open(&tmp)?;
        if let Some(m) = mode {
            f.set_permissions(std::fs::Permissions::from_mode(m))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        if staging != dir {
            File::open(staging)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The folder of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `.<name>.tmp-`: what every temp file of `path` starts with (the pid follows).
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!(".{}.tmp-", name.trim_start_matches('.'))
}

/// Removes `<prefix><pid>` files in `dir` whose writer is gone: a writer killed between
/// creating its temp file and the rename leaves it behind, and nothing else would ever remove
/// it. A temp file of a live process (another writer at work right now) is kept. Failures are
/// ignored: a leftover is untidy, never harmful, and must not stop the write.
pub fn remove_stale_temp_files(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32 && !process_exists(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// True when a process with this pid exists (zombies count as gone).
fn process_exists(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".state.json");
        write(&path, b"old", None).unwrap();
        write(&path, b"new", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(".state.json")]);
    }

    #[test]
    fn a_staged_write_leaves_only_the_file_in_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(".staging");
        std::fs::create_dir(&staging).unwrap();
        let watched = dir.path().join("watched");
        std::fs::create_dir(&watched).unwrap();
        let path = watched.join("routes.yaml");
        write_staged_in(&path, &staging, b"old", Some(0o644)).unwrap();
        write_staged_in(&path, &staging, b"new", Some(0o644)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names = |d: &Path| -> Vec<_> {
            std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect()
        };
        assert_eq!(
            names(&watched),
            vec![std::ffi::OsString::from("routes.yaml")]
        );
        assert!(names(&staging).is_empty());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"old", None).unwrap();
        // Renaming a file over a non-empty folder fails: the old content must stay.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write(&blocked, b"new", None).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(
            !dir.path()
                .join(".blocked.tmp-".to_string() + &std::process::id().to_string())
                .exists()
        );
    }

    #[test]
    fn leftovers_of_dead_writers_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".rediacc.json");
        // A writer that was killed mid-write: a real pid that no longer exists.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".rediacc.json.tmp-{dead}"));
        std::fs::write(&stale, b"half").unwrap();
        // A writer at work right now (a live process) and an unrelated file.
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let busy = dir.path().join(format!(".rediacc.json.tmp-{}", live.id()));
        std::fs::write(&busy, b"in progress").unwrap();
        let other = dir.path().join(".ports.json.tmp-1234567");
        std::fs::write(&other, b"x").unwrap();

        write(&path, b"{}", None).unwrap();
        assert!(!stale.exists(), "the dead writer's temp file is gone");
        assert!(busy.exists(), "a live writer's temp file stays");
        assert!(
            other.exists(),
            "another file's temp files are not ours to judge"
        );
        let _ = live.kill();
        let _ = live.wait();
    }
}
