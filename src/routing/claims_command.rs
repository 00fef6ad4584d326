//! `renet claims list|release`: the operator's view of who holds which host and port, and the
//! one way to take a claim back (a claim otherwise lasts while its repository is down or
//! redeploying, so nobody can catch its traffic meanwhile). Reads and writes the route
//! server's state folder under the same lock the route server uses; a running route server
//! notices the change within a second and rebuilds.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::host::settings::Settings;
use crate::routing::claims_store::ClaimsStore;

#[derive(Debug, clap::Subcommand)]
pub enum ClaimsCommand {
    /// List host claims and port allocations.
    List {
        #[command(flatten)]
        place: StatePlace,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Release a host claim (`host NAME`) or a port (`port tcp/5432`).
    Release {
        #[command(flatten)]
        place: StatePlace,
        /// `host` or `port`.
        #[arg(value_parser = ["host", "port"])]
        kind: String,
        /// A host name, or PROTOCOL/PORT (`tcp/5432`, `udp/53`).
        what: String,
    },
}

/// Where the state folder is: the flag, else the settings file's `state_dir`.
#[derive(Debug, clap::Args)]
pub struct StatePlace {
    /// Settings file [default: /etc/rediacc/renet.json].
    #[arg(long, env = "RENET_SETTINGS", value_name = "FILE")]
    settings: Option<PathBuf>,
    /// The route server's state folder [settings: state_dir].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl StatePlace {
    fn store(&self) -> Result<ClaimsStore> {
        let dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => Settings::load(&Settings::path(self.settings.as_deref()))?.state_dir,
        };
        Ok(ClaimsStore::new(&dir))
    }
}

pub fn run(cmd: ClaimsCommand) -> Result<u8> {
    match cmd {
        ClaimsCommand::List { place, json } => {
            let (claims, _) = place.store()?.load()?;
            let mut out = std::io::stdout().lock();
            let written = if json {
                let v = serde_json::json!({
                    "hosts": claims.hosts.hosts,
                    "ports": claims.ports.allocations,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)
            } else {
                let mut text = String::from(
                    "HOST                                     NETWORK  SINCE       ROUTER\n",
                );
                for (h, c) in &claims.hosts.hosts {
                    text.push_str(&format!(
                        "{h:<40} {:<8} {:<11} {}\n",
                        c.network_id, c.since, c.router
                    ));
                }
                text.push_str("\nPORT       NETWORK  SERVICE              TARGET\n");
                for a in &claims.ports.allocations {
                    let port = format!("{}/{}", a.protocol, a.port);
                    text.push_str(&format!(
                        "{port:<10} {:<8} {:<20} {}\n",
                        a.network_id, a.service, a.target
                    ));
                }
                out.write_all(text.as_bytes())
            };
            match written {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
                other => other.map(|_| 0).map_err(Into::into),
            }
        }
        ClaimsCommand::Release { place, kind, what } => {
            let store = place.store()?;
            let holder = if kind == "host" {
                store.release_host(&what)?
            } else {
                let Some((proto, port)) = what.split_once('/') else {
                    bail!("`{what}`: expected PROTOCOL/PORT, e.g. tcp/5432 or udp/53");
                };
                if proto != "tcp" && proto != "udp" {
                    bail!("`{what}`: the protocol is tcp or udp");
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| anyhow::anyhow!("`{what}`: `{port}` is not a port number"))?;
                store.release_port(proto, port)?
            };
            println!(
                "released {kind} {what} (held by network {holder}); the next repository to claim it gets it"
            );
            Ok(0)
        }
    }
}
