//! `renet repo up|down|info`: the Rediaccfile runner (spec §8).

#[derive(Debug, clap::Subcommand)]
pub enum RepoCommand {
    /// Run every Rediaccfile's `prep`, then every `up`.
    Up { dir: std::path::PathBuf },
    /// Run every Rediaccfile's `down`, subfolders Z→A then the root.
    Down { dir: std::path::PathBuf },
    /// Run every Rediaccfile's `info`.
    Info { dir: std::path::PathBuf },
}

pub fn run(cmd: RepoCommand) -> anyhow::Result<u8> {
    let _ = cmd;
    anyhow::bail!("repo: not built yet")
}
