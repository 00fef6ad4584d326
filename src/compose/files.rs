//! Which compose files a `renet compose` run is about, found exactly as docker compose finds
//! them: `-f`/`--file` (also given after the `--`), `COMPOSE_FILE`, else the default names in
//! the working folder or its nearest ancestor, plus the matching override file.
//!
//! Also splits the docker compose arguments into compose's global flags and the rest, since
//! renet runs compose's `config` with the global flags and then the user's subcommand on its
//! own final model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Compose's default file names, in compose's order of preference.
pub const DEFAULT_FILE_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
/// Override files merged after the default file when no `-f` is given.
pub const DEFAULT_OVERRIDE_NAMES: &[&str] = &[
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// docker compose global flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "-f",
    "--file",
    "-p",
    "--project-name",
    "--project-directory",
    "--workdir",
    "--profile",
    "--env-file",
    "--ansi",
    "--progress",
    "--parallel",
];

/// The user's docker compose arguments, split into what renet needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposeArgs {
    /// Global flags other than `-f`, in order, each with its value.
    pub global: Vec<String>,
    /// `-f` values, in order.
    pub files: Vec<String>,
    pub project_directory: Option<String>,
    pub env_files: Vec<String>,
    pub profiles: Vec<String>,
    /// The subcommand and everything after it.
    pub rest: Vec<String>,
}

impl ComposeArgs {
    pub fn parse(args: &[String]) -> Result<ComposeArgs> {
        let mut out = ComposeArgs::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if !arg.starts_with('-') || arg == "-" {
                break;
            }
            if arg == "--" {
                break;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") || f.len() == 2 => {
                    (f.to_string(), Some(v.to_string()))
                }
                _ => (arg.clone(), None),
            };
            // `-fcompose.yml` short form.
            // (`get` and not slicing: `-é` must not split a character.)
            let short = flag
                .get(..2)
                .filter(|s| !flag.starts_with("--") && flag.len() > 2 && VALUE_FLAGS.contains(s));
            let (flag, inline) = match (short, inline) {
                (Some(s), None) => (s.to_string(), Some(flag[2..].to_string())),
                (_, inline) => (flag, inline),
            };
            if VALUE_FLAGS.contains(&flag.as_str()) {
                let value = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i).cloned().with_context(|| {
                            format!("docker compose flag `{flag}` needs a value")
                        })?
                    }
                };
                match flag.as_str() {
                    "-f" | "--file" => out.files.push(value),
                    other => {
                        match other {
                            "--project-directory" | "--workdir" => {
                                out.project_directory = Some(value.clone())
                            }
                            "--env-file" => out.env_files.push(value.clone()),
                            "--profile" => out.profiles.push(value.clone()),
                            _ => {}
                        }
                        out.global.push(flag);
                        out.global.push(value);
                    }
                }
            } else {
                out.global.push(arg.clone());
            }
            i += 1;
        }
        out.rest = args[i..].to_vec();
        Ok(out)
    }
}

impl ComposeArgs {
    /// The global flags for the run on renet's final model: all but `--env-file` (the model
    /// is already interpolated; compose must not read those files a second time).
    pub fn final_global(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.global.len() {
            if self.global[i] == "--env-file" {
                i += 2;
                continue;
            }
            out.push(self.global[i].clone());
            i += 1;
        }
        out
    }

    /// Global flags for the `config` runs that read the user's project, with every file renet
    /// resolved given as `-f`: compose reads exactly the files renet looked at.
    pub fn config_global(&self, files: &[PathBuf]) -> Vec<String> {
        let mut out = Vec::new();
        for f in files {
            out.push("-f".to_string());
            out.push(f.display().to_string());
        }
        out.extend(self.global.iter().cloned());
        out
    }
}

/// The compose files of a run, resolved to absolute paths, and the project directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFiles {
    pub files: Vec<PathBuf>,
    pub project_dir: PathBuf,
}

/// Resolves the files as docker compose does. `compose_file_env` is `COMPOSE_FILE` (from the
/// environment or `.env`), split on `COMPOSE_PATH_SEPARATOR` (default `:`).
pub fn resolve(
    args: &ComposeArgs,
    cwd: &Path,
    compose_file_env: Option<&str>,
    path_separator: Option<&str>,
) -> Result<ResolvedFiles> {
    let project_dir_flag = args.project_directory.as_ref().map(|d| absolute(cwd, d));
    let explicit: Vec<String> = if !args.files.is_empty() {
        args.files.clone()
    } else if let Some(list) = compose_file_env.filter(|s| !s.is_empty()) {
        let sep = path_separator.filter(|s| !s.is_empty()).unwrap_or(":");
        list.split(sep)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    } else {
        Vec::new()
    };
    if !explicit.is_empty() {
        let mut files = Vec::new();
        for f in &explicit {
            if f == "-" {
                bail!(
                    "compose file `-` (standard input) is not supported by renet compose: renet must read the file too; write it to a file"
                );
            }
            let p = absolute(cwd, f);
            if !p.is_file() {
                bail!(
                    "{}: compose file not found (given with -f or COMPOSE_FILE)",
                    p.display()
                );
            }
            files.push(p);
        }
        let project_dir = project_dir_flag
            .unwrap_or_else(|| files[0].parent().unwrap_or(Path::new("/")).to_path_buf());
        return Ok(ResolvedFiles { files, project_dir });
    }
    let start = project_dir_flag
        .clone()
        .unwrap_or_else(|| cwd.to_path_buf());
    let mut dir = start.as_path();
    loop {
        if let Some(files) = default_compose_files(dir) {
            let project_dir = project_dir_flag.unwrap_or_else(|| dir.to_path_buf());
            return Ok(ResolvedFiles { files, project_dir });
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => bail!(
                "no compose file found in {} or its parent folders (looked for {}); give one with -f",
                start.display(),
                DEFAULT_FILE_NAMES.join(", ")
            ),
        }
    }
}

/// The default compose file of `dir` and its override, if `dir` has one.
pub fn default_compose_files(dir: &Path) -> Option<Vec<PathBuf>> {
    let main = DEFAULT_FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())?;
    let mut files = vec![main];
    if let Some(o) = DEFAULT_OVERRIDE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    {
        files.push(o);
    }
    Some(files)
}

fn absolute(cwd: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn splits_global_flags_from_the_subcommand() {
        let a = ComposeArgs::parse(&s(&[
            "-f",
            "a.yml",
            "--file=b.yml",
            "-fc.yml",
            "--profile",
            "debug",
            "-p",
            "proj",
            "--env-file",
            ".env.prod",
            "--compatibility",
            "up",
            "-d",
            "-f",
            "not-a-file",
        ]))
        .unwrap();
        assert_eq!(a.files, s(&["a.yml", "b.yml", "c.yml"]));
        assert_eq!(a.profiles, s(&["debug"]));
        assert_eq!(a.env_files, s(&[".env.prod"]));
        assert_eq!(
            a.global,
            s(&[
                "--profile",
                "debug",
                "-p",
                "proj",
                "--env-file",
                ".env.prod",
                "--compatibility"
            ])
        );
        assert_eq!(a.rest, s(&["up", "-d", "-f", "not-a-file"]));
    }

    #[test]
    fn missing_flag_value_is_an_error() {
        assert!(ComposeArgs::parse(&s(&["-f"])).is_err());
    }

    #[test]
    fn non_ascii_flags_do_not_panic() {
        let a = ComposeArgs::parse(&s(&["-é", "config"])).unwrap();
        assert_eq!(a.global, s(&["-é"]));
        let a = ComposeArgs::parse(&s(&["-fé.yml", "-é=x", "--é", "config"])).unwrap();
        assert_eq!(a.files, s(&["é.yml"]));
        let a = ComposeArgs::parse(&s(&["--env-file", "e", "-p", "x", "up"])).unwrap();
        assert_eq!(a.final_global(), s(&["-p", "x"]));
    }

    #[test]
    fn finds_default_files_in_ancestors_with_override() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docker-compose.yml"), "services: {}").unwrap();
        std::fs::write(
            dir.path().join("docker-compose.override.yml"),
            "services: {}",
        )
        .unwrap();
        let sub = dir.path().join("sub/deeper");
        std::fs::create_dir_all(&sub).unwrap();
        let r = resolve(&ComposeArgs::default(), &sub, None, None).unwrap();
        assert_eq!(
            r.files,
            vec![
                dir.path().join("docker-compose.yml"),
                dir.path().join("docker-compose.override.yml")
            ]
        );
        assert_eq!(r.project_dir, dir.path());
    }

    #[test]
    fn compose_file_variable_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.yml"), "services: {}").unwrap();
        std::fs::write(dir.path().join("y.yml"), "services: {}").unwrap();
        let r = resolve(
            &ComposeArgs::default(),
            dir.path(),
            Some("x.yml;y.yml"),
            Some(";"),
        )
        .unwrap();
        assert_eq!(r.files.len(), 2);
        let err = resolve(&ComposeArgs::default(), dir.path(), Some("nope.yml"), None).unwrap_err();
        assert!(err.to_string().contains("nope.yml"), "{err}");
    }
}
