//! The `cluster` object of the settings file and the flags that override it: which etcd to
//! use, how to authenticate, what this server is called and where the edge reaches it
//! (docs/cluster.md "Running it").

use std::path::PathBuf;
use std::time::Duration;

use std::net::{IpAddr, Ipv6Addr};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Default lease TTL: a dead server leaves the edge within this many seconds.
pub const DEFAULT_LEASE_TTL_SECONDS: u64 = 5;

/// Default of `max_resources_per_network`.
pub const DEFAULT_MAX_RESOURCES_PER_NETWORK: usize = 512;

/// `cluster` in `/etc/rediacc/renet.json`. Empty `endpoints` → no cluster (one server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// etcd client URLs (`http://` or `https://`), e.g. `https://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// This server's name in the cluster, a DNS label [default: the host name].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The IP address the edge uses to reach this server's Traefik.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Seconds the server's lease lives without renewal [default 5].
    pub lease_ttl_seconds: u64,
    /// Prefix of renet's own keys [default `renet`].
    pub prefix: String,
    /// Traefik's root key, as the edge's etcd provider reads it [default `traefik`].
    pub traefik_root: String,
    /// CA bundle that signed etcd's server certificates (https endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, when etcd requires client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// etcd user (role-based access), with its password in `password_file` (never inline: the
    /// settings file is readable by the tools that read it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Most host names and edge ports one network may hold in the cluster [default 512]:
    /// ownership keys never expire, so without a bound one repository could fill etcd.
    pub max_resources_per_network: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            endpoints: Vec::new(),
            name: None,
            address: None,
            lease_ttl_seconds: DEFAULT_LEASE_TTL_SECONDS,
            prefix: "renet".into(),
            traefik_root: "traefik".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            user: None,
            password_file: None,
            max_resources_per_network: DEFAULT_MAX_RESOURCES_PER_NETWORK,
        }
    }
}

/// How to reach etcd: endpoints, TLS, credentials (checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub endpoints: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub credentials: Option<(String, String)>,
}

/// Everything the cluster agent needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub connection: Connection,
    pub name: String,
    pub address: std::net::IpAddr,
    pub http_port: u16,
    pub https_port: u16,
    pub lease_ttl: Duration,
    pub prefix: String,
    pub traefik_root: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Reads a secret (the etcd password, the client key), refusing a file every local user may
/// read: whoever can read it can act as this server in the cluster (claim any host for any
/// network). The route server reads it through its group (`docker`), so 0640 or 0600 is
/// right (docs/cluster.md "Running it").
pub fn read_secret(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("{what} {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        bail!(
            "{what} {}: readable by every user (mode {:04o}); it holds a secret of the etcd \
             cluster: chmod o-rwx {} (0640 with the group the route server runs as, or 0600)",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("{what} {}", path.display()))
}

/// The etcd password from `path` ([`read_secret`]), without its trailing newline.
pub fn read_password(what: &str, path: &std::path::Path) -> Result<String> {
    let bytes = read_secret(what, path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{what} {}: not UTF-8 text", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// `[scheme://]host:port` → (scheme, `host:port`).
pub fn parse_endpoint(e: &str) -> Result<(&'static str, String)> {
    let (scheme, rest) = if let Some(r) = e.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = e.strip_prefix("https://") {
        ("https", r)
    } else if let Some((s, _)) = e.split_once("://") {
        bail!("scheme `{s}` is not http or https");
    } else {
        bail!(
            "give the scheme: http://HOST:PORT or https://HOST:PORT, as in https://10.0.0.5:2379"
        );
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        bail!("give only host:port (no path, query or user), as in https://10.0.0.5:2379");
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (ip, port) = v6
            .split_once("]:")
            .context("an IPv6 address needs a port: [2001:db8::5]:2379")?;
        ip.parse::<Ipv6Addr>()
            .with_context(|| format!("`{ip}` is not an IPv6 address"))?;
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .context("no port: give host:port, as in https://10.0.0.5:2379")?;
        if host.contains(':') {
            bail!("an IPv6 address goes in brackets: [2001:db8::5]:2379");
        }
        if host.parse::<IpAddr>().is_err() {
            validate_host_name(host)?;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = crate::host::proxy_config::parse_port(port)?;
    Ok((scheme, format!("{host}:{port}")))
}

fn validate_host_name(h: &str) -> Result<()> {
    if h.is_empty() {
        bail!("no host: give host:port");
    }
    if h.len() > 253
        || h.split('.').any(|l| {
            l.is_empty()
                || l.len() > 63
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    {
        bail!("`{h}` is neither an IP address nor a host name");
    }
    Ok(())
}

/// Splits `a,b,c` into endpoints and checks each is an `http(s)://host:port` URL.
pub fn parse_endpoints(list: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for raw in list.iter().flat_map(|s| s.split(',')) {
        let e = raw.trim();
        if e.is_empty() {
            continue;
        }
        parse_endpoint(e).with_context(|| format!("cluster endpoint `{e}`"))?;
        out.push(e.trim_end_matches('/').to_string());
    }
    Ok(out)
}

/// A server name is one DNS label: it becomes part of etcd keys and Traefik object names.
pub fn check_server_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "cluster name `{name}`: must be one DNS label of lower-case letters, digits and `-` \
             (it names this server in etcd keys and edge routers); set cluster.name or \
             --cluster-name"
        );
    }
    Ok(())
}

fn host_name() -> Option<String> {
    // The kernel's host name (what `hostname` prints), first label only.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .split('.')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
        })
}

/// Key-prefix pieces must not contain `/` tricks: one or more plain path segments.
fn check_prefix(what: &str, p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && p.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        bail!("cluster.{what} `{p}`: expected path segments of letters, digits, `-`, `_`");
    }
    Ok(())
}

impl ClusterSettings {
    /// The agent's configuration, or `None` when no endpoints are set (no cluster).
    pub fn resolve(&self, http_port: u16, https_port: u16) -> Result<Option<ClusterConfig>> {
        let Some(connection) = self.connection()? else {
            return Ok(None);
        };
        let name = match &self.name {
            Some(n) => n.clone(),
            None => host_name().context("cluster.name is not set and the host name is unknown")?,
        };
        check_server_name(&name)?;
        let address = self
            .address
            .as_deref()
            .context(
                "cluster.address is not set: the IP address the edge uses to reach this \
                 server's Traefik (--cluster-address)",
            )?
            .trim()
            .parse::<std::net::IpAddr>()
            .map_err(|_| {
                anyhow::anyhow!(
                    "cluster.address `{}`: expected an IP address",
                    self.address.as_deref().unwrap_or("")
                )
            })?;
        if !(1..=3600).contains(&self.lease_ttl_seconds) {
            bail!(
                "cluster.lease_ttl_seconds {}: expected 1..=3600",
                self.lease_ttl_seconds
            );
        }
        check_prefix("prefix", &self.prefix)?;
        check_prefix("traefik_root", &self.traefik_root)?;
        Ok(Some(ClusterConfig {
            connection,
            name,
            address,
            http_port,
            https_port,
            lease_ttl: Duration::from_secs(self.lease_ttl_seconds),
            prefix: self.prefix.clone(),
            traefik_root: self.traefik_root.clone(),
        }))
    }

    /// How to reach etcd, or `None` when no endpoints are set.
    pub fn connection(&self) -> Result<Option<Connection>> {
        let endpoints = parse_endpoints(&self.endpoints)?;
        if endpoints.is_empty() {
            return Ok(None);
        }
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => {
                // Checked now, so a key every user may read stops a command before it starts
                // (the agent reads it again at each connection: it may be replaced).
                read_secret("cluster.key_file", k)?;
                Some((c.clone(), k.clone()))
            }
            (None, None) => None,
            _ => bail!("cluster.cert_file and cluster.key_file go together"),
        };
        let tls = (self.ca_file.is_some() || identity.is_some()).then(|| TlsFiles {
            ca_file: self.ca_file.clone(),
            identity,
        });
        let credentials = match (&self.user, &self.password_file) {
            (Some(u), Some(f)) => Some((u.clone(), read_password("cluster.password_file", f)?)),
            (None, None) => None,
            _ => bail!("cluster.user and cluster.password_file go together"),
        };
        Ok(Some(Connection {
            endpoints,
            tls,
            credentials,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_urls_with_ports() {
        assert_eq!(
            parse_endpoints(&["http://198.18.72.1:23791, https://a.example:2379/".into()]).unwrap(),
            vec!["http://198.18.72.1:23791", "https://a.example:2379"]
        );
        for bad in [
            "198.18.72.1:2379",
            "http://h",
            "http://h:0",
            "http://u@h:1",
            "ftp://h:1",
        ] {
            let e = parse_endpoints(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn secrets_every_user_may_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("etcd-password");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read_password("cluster.password_file", &f).unwrap(),
            "s3cret"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_password("cluster.password_file", &f)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster.password_file") && e.contains("mode 0644"),
            "{e}"
        );
        assert!(e.contains(&f.display().to_string()), "{e}");
        let missing = dir.path().join("none");
        let e = format!(
            "{:#}",
            read_secret("cluster.key_file", &missing).unwrap_err()
        );
        assert!(e.contains("cluster.key_file") && e.contains("none"), "{e}");
    }

    #[test]
    fn no_endpoints_means_no_cluster() {
        assert_eq!(ClusterSettings::default().resolve(80, 443).unwrap(), None);
    }

    #[test]
    fn resolves_and_checks() {
        let mut s = ClusterSettings {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            name: Some("server-a".into()),
            address: Some("198.18.72.11".into()),
            ..Default::default()
        };
        let c = s.resolve(80, 443).unwrap().unwrap();
        assert_eq!(c.name, "server-a");
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        s.name = Some("Server_A".into());
        assert!(
            s.resolve(80, 443)
                .unwrap_err()
                .to_string()
                .contains("DNS label")
        );
        s.name = Some("a".into());
        s.address = None;
        assert!(
            s.resolve(80, 443)
                .unwrap_err()
                .to_string()
                .contains("cluster.address")
        );
        s.address = Some("198.18.72.11".into());
        s.prefix = "../x".into();
        assert!(
            s.resolve(80, 443)
                .unwrap_err()
                .to_string()
                .contains("prefix")
        );
        s.prefix = "renet".into();
        s.cert_file = Some("/c".into());
        assert!(s.resolve(80, 443).is_err());
    }
}
