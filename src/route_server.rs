//! `renet route-server`: wires discovery, route building and the HTTP endpoints together.

/// Options of `renet route-server` (flags override the settings file).
#[derive(Debug, clap::Args)]
pub struct RouteServerArgs {
    /// Settings file shared with `renet proxy config`.
    #[arg(long, env = "RENET_SETTINGS")]
    pub settings: Option<std::path::PathBuf>,
}

pub fn run(args: RouteServerArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("route-server: not built yet")
}
