//! `renet proxy config`: Traefik v3 static configuration and systemd units (spec §7).

#[derive(Debug, clap::Subcommand)]
pub enum ProxyCommand {
    /// Write Traefik's static configuration, its env file and the systemd units.
    Config,
}

pub fn run(cmd: ProxyCommand) -> anyhow::Result<u8> {
    let _ = cmd;
    anyhow::bail!("proxy config: not built yet")
}
