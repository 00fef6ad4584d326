//! `renet compose` and `renet ips`: resolution of network ID, repo root and files, then slots,
//! vetting, the generated override, and the docker compose run.

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// Arguments for docker compose, after `--`.
    #[arg(last = true)]
    pub compose_args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct IpsArgs {}

pub fn run(args: ComposeArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("compose: not built yet")
}

pub fn run_ips(args: IpsArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("ips: not built yet")
}
