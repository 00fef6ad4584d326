//! `renet proxy config --edge --cluster <endpoints>`: the Traefik v3 static configuration of a
//! cluster **edge** (docs/cluster.md) and its systemd unit.
//!
//! An edge is a plain Traefik that reads the routes every server publishes in etcd with
//! Traefik's own etcd provider: HTTP by Host on `web`, TLS passed through by SNI on `websecure`
//! (certificates stay on the servers), and one `tcp-<port>`/`udp-<port>` entrypoint per port the
//! servers have, so an edge TCP/UDP router a server writes always finds its entrypoint. The
//! port list is the settings' own (`Settings::tcp_entrypoint_ports`), the same the servers
//! open, so edge and servers agree as long as they share the settings file.
//!
//! An edge keeps no state: several may run side by side on the same etcd. Everything is
//! validated and rendered in memory before anything is written.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::host::proxy_config::{self, write_file};
use crate::host::settings::Settings;

/// The edge's static configuration, in the output folder.
pub const EDGE_CONFIG_FILE: &str = "traefik-edge.yml";
/// The edge's systemd unit (beside, never instead of, a server's `traefik.service`: one machine
/// may be both).
pub const EDGE_UNIT: &str = "traefik-edge.service";
/// Traefik's default root key of the etcd provider, and the default of `cluster.traefik_root`.
pub const DEFAULT_TRAEFIK_ROOT: &str = "traefik";
/// An edge applies etcd changes at most this often: small, so a host that moves or a server
/// that dies changes the edge within a fraction of a second after etcd does.
const EDGE_PROVIDERS_THROTTLE: &str = "200ms";

/// How the edge reaches etcd: what Traefik's etcd provider needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    /// `host:port` each (the scheme is gone: Traefik's provider takes plain addresses and
    /// uses TLS when a `tls` section is present).
    pub endpoints: Vec<String>,
    /// The endpoints were given as `https://…`: TLS even without a CA file (system bundle).
    pub tls: bool,
    pub root_key: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// What `--cluster` and the settings' `cluster` object give the edge, before validation.
#[derive(Debug, Clone, Default)]
pub struct EtcdAccessInput {
    /// Comma separated or already split.
    pub endpoints: Vec<String>,
    pub root_key: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Splits `--cluster a,b,c` into endpoints (empty items dropped).
pub fn split_endpoints(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// Validates the etcd access: endpoints `http(s)://host:port` (as the servers take them) (an IPv4, `[IPv6]` or a
/// DNS name, a port, no path), one scheme for all, client certificate and key together, a user
/// with a password, a root key Traefik can use. The error names the endpoint or setting.
pub fn etcd_access(input: &EtcdAccessInput) -> Result<EtcdAccess> {
    if input.endpoints.is_empty() {
        bail!(
            "cluster endpoints: none given; pass --cluster with the etcd client URLs, comma \
             separated (https://10.0.0.5:2379,https://10.0.0.6:2379,https://10.0.0.7:2379)"
        );
    }
    let mut endpoints = Vec::new();
    let mut schemes = std::collections::BTreeSet::new();
    for e in &input.endpoints {
        let (scheme, addr) = crate::routing::cluster::settings::parse_endpoint(e)
            .with_context(|| format!("cluster endpoint `{e}`"))?;
        schemes.insert(scheme);
        if !endpoints.contains(&addr) {
            endpoints.push(addr);
        }
    }
    if schemes.len() > 1 {
        bail!(
            "cluster endpoints: some are http:// and some https://; etcd members of one cluster \
             are reached one way (give all https:// or all http://)"
        );
    }
    let tls_scheme = schemes.contains("https");
    match (&input.cert_file, &input.key_file) {
        (Some(_), None) => bail!("cluster.cert_file is set without cluster.key_file; give both"),
        (None, Some(_)) => bail!("cluster.key_file is set without cluster.cert_file; give both"),
        _ => {}
    }
    let has_tls_files =
        input.ca_file.is_some() || input.cert_file.is_some() || input.key_file.is_some();
    if has_tls_files && !tls_scheme {
        bail!(
            "cluster: ca_file/cert_file/key_file are set but the endpoints are http://; \
             give the endpoints as https://host:port"
        );
    }
    for (what, f) in [
        ("cluster.ca_file", &input.ca_file),
        ("cluster.cert_file", &input.cert_file),
        ("cluster.key_file", &input.key_file),
    ] {
        if let Some(f) = f
            && !f.is_absolute()
        {
            bail!(
                "{what}: `{}` is not an absolute path (Traefik runs from another folder)",
                f.display()
            );
        }
    }
    match (&input.user, &input.password) {
        (Some(_), None) => bail!("cluster.user is set without cluster.password"),
        (None, Some(_)) => bail!("cluster.password is set without cluster.user"),
        _ => {}
    }
    let root_key = input
        .root_key
        .clone()
        .unwrap_or_else(|| DEFAULT_TRAEFIK_ROOT.to_string());
    validate_root_key(&root_key).with_context(|| format!("cluster.traefik_root `{root_key}`"))?;
    Ok(EtcdAccess {
        endpoints,
        tls: tls_scheme,
        root_key,
        ca_file: input.ca_file.clone(),
        cert_file: input.cert_file.clone(),
        key_file: input.key_file.clone(),
        user: input.user.clone(),
        password: input.password.clone(),
    })
}

/// Traefik's etcd provider reads every key below `<root>/`: a path of `[A-Za-z0-9_.-]`
/// segments, without leading or trailing `/`.
fn validate_root_key(k: &str) -> Result<()> {
    if k.is_empty()
        || k.split('/').any(|seg| {
            seg.is_empty()
                || !seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
    {
        bail!("give a key path of letters, digits, `_`, `-`, `.` and inner `/` (traefik)");
    }
    Ok(())
}

/// Where the edge's files go.
#[derive(Debug, Clone)]
pub struct EdgePaths {
    pub settings: PathBuf,
    pub out_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub traefik_bin: PathBuf,
}

impl EdgePaths {
    pub fn static_config(&self) -> PathBuf {
        self.out_dir.join(EDGE_CONFIG_FILE)
    }
}

/// The edge's generated files, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRendered {
    pub static_config: String,
    pub unit: String,
}

impl EdgeRendered {
    /// The static configuration holds the etcd password (Traefik reads its static
    /// configuration from one source only, so it cannot come from an environment file):
    /// then only root may read it.
    pub fn static_config_mode(access: &EtcdAccess) -> u32 {
        if access.password.is_some() {
            0o600
        } else {
            0o644
        }
    }
}

/// Entrypoints of the edge: `web`, `websecure` (TCP passthrough by SNI, no TLS of its own),
/// `tcp-<port>`, `udp-<port>`, and Traefik's API/ping entrypoint when configured. Every TCP
/// entrypoint gets the HTTP hardening a server's have (Traefik treats them as HTTP capable).
pub fn edge_entrypoints(s: &Settings) -> Vec<(String, Value)> {
    // The server's entrypoints (same names, addresses and order), without the server-only
    // parts: no redirect on `web`, no TLS of its own on `websecure`, no retry middleware or
    // `asDefault` (every edge router names its entrypoint), and no metrics entrypoint.
    proxy_config::entrypoints(s)
        .into_iter()
        .filter(|(name, _)| name != proxy_config::METRICS_ENTRYPOINT)
        .map(|(name, ep)| {
            let mut e = serde_json::Map::new();
            e.insert("address".into(), Value::from(ep.address));
            if ep.http {
                e.insert("http".into(), Value::Object(proxy_config::http_hardening()));
            }
            (name, Value::Object(e))
        })
        .collect()
}

/// Renders the edge's static configuration and unit. Pure and deterministic.
pub fn render(s: &Settings, access: &EtcdAccess, paths: &EdgePaths) -> EdgeRendered {
    let mut eps = serde_json::Map::new();
    for (name, ep) in edge_entrypoints(s) {
        eps.insert(name, ep);
    }
    let mut etcd = serde_json::Map::new();
    etcd.insert("endpoints".into(), json!(access.endpoints));
    etcd.insert("rootKey".into(), Value::from(access.root_key.clone()));
    if let Some(u) = &access.user {
        etcd.insert("username".into(), Value::from(u.clone()));
    }
    if let Some(p) = &access.password {
        etcd.insert("password".into(), Value::from(p.clone()));
    }
    if access.tls {
        // Traefik refuses an empty `tls` section ("tls cannot be a standalone element"); the
        // explicit verification flag makes it TLS with the system's CA bundle.
        let mut tls = serde_json::Map::new();
        tls.insert("insecureSkipVerify".into(), Value::Bool(false));
        for (k, f) in [
            ("ca", &access.ca_file),
            ("cert", &access.cert_file),
            ("key", &access.key_file),
        ] {
            if let Some(f) = f {
                tls.insert(k.into(), Value::from(f.display().to_string()));
            }
        }
        etcd.insert("tls".into(), Value::Object(tls));
    }

    let mut doc = proxy_config::static_preamble(s);
    doc.insert("entryPoints".into(), Value::Object(eps));
    // An option of `providers`: at the top level Traefik ignores it and throttles for 2 s.
    doc.insert(
        "providers".into(),
        json!({ "providersThrottleDuration": EDGE_PROVIDERS_THROTTLE, "etcd": Value::Object(etcd) }),
    );
    proxy_config::insert_api_and_ping(s, &mut doc);
    let mut static_config = format!(
        "# Traefik v3 static configuration of a renet cluster edge, written by\n\
         # `renet proxy config --edge` from {}.\n\
         # Do not edit: change the settings and rerun it. Routes come from etcd (docs/cluster.md).\n",
        paths.settings.display()
    );
    static_config
        .push_str(&serde_yaml::to_string(&Value::Object(doc)).expect("JSON values serialize"));
    EdgeRendered {
        static_config,
        unit: edge_unit(s, paths),
    }
}

/// The edge's Traefik: root-owned configuration, only `CAP_NET_BIND_SERVICE` (80, 443, 53),
/// writes nothing but its access log; it needs the network (etcd, the servers), not loopback
/// only.
fn edge_unit(s: &Settings, paths: &EdgePaths) -> String {
    let access_log_dir = s
        .proxy
        .access_log
        .as_ref()
        .and_then(|f| f.parent())
        .map(|d| format!("ReadWritePaths=-{}\n", d.display()))
        .unwrap_or_default();
    format!(
        "# Written by `renet proxy config --edge`.\n\
         [Unit]\n\
         Description=Traefik edge of a renet cluster (routes from etcd)\n\
         Documentation=https://doc.traefik.io/traefik/providers/etcd/\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={bin} --configFile={config}\n\
         Restart=always\n\
         RestartSec=2\n\
         LimitNOFILE=1048576\n\
         CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n\
         AmbientCapabilities=CAP_NET_BIND_SERVICE\n\
         {access_log_dir}\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n\
         {hardening}\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        bin = paths.traefik_bin.display(),
        config = paths.static_config().display(),
        hardening = crate::host::proxy_config::COMMON_HARDENING,
    )
}

/// `renet proxy config --edge`: the proxy flags are merged into the settings (ports, bind
/// addresses, access log, API address) and saved, as for a server, then the edge files are
/// written. Returns what it did, for the user.
pub fn config(args: &crate::host::proxy_config::ConfigArgs) -> Result<Vec<String>> {
    use crate::host::proxy_config as pc;
    let settings_path = Settings::path(args.settings.as_deref());
    let mut settings = Settings::load(&settings_path)?;
    pc::merge(&mut settings, args).context("renet proxy config --edge: invalid flag")?;
    if let Some(list) = &args.cluster {
        settings.cluster.endpoints = split_endpoints(list);
    }
    pc::validate(&settings).with_context(|| {
        format!(
            "renet proxy config --edge: invalid settings (flags merged into {}); nothing was written",
            settings_path.display()
        )
    })?;
    let access = access_input(&settings)
        .and_then(|input| etcd_access(&input))
        .context("renet proxy config --edge: nothing was written")?;
    let paths = EdgePaths {
        settings: std::path::absolute(&settings_path)?,
        out_dir: std::path::absolute(&settings.traefik_dir)?,
        unit_dir: std::path::absolute(settings.proxy.unit_dir())?,
        traefik_bin: std::path::absolute(settings.proxy.traefik_bin())?,
    };
    let rendered = render(&settings, &access, &paths);

    let mut report = Vec::new();
    let mut settings_text = serde_json::to_string_pretty(&settings)?;
    settings_text.push('\n');
    write_file(&settings_path, settings_text.as_bytes(), None)?;
    report.push(format!("saved settings to {}", settings_path.display()));
    let yml = paths.static_config();
    write_file(
        &yml,
        rendered.static_config.as_bytes(),
        Some(EdgeRendered::static_config_mode(&access)),
    )?;
    report.push(format!(
        "wrote the edge's Traefik static configuration {} (etcd {}, root key `{}`)",
        yml.display(),
        access.endpoints.join(","),
        access.root_key
    ));
    let unit = paths.unit_dir.join(EDGE_UNIT);
    write_file(&unit, rendered.unit.as_bytes(), None)?;
    report.push(format!("wrote {}", unit.display()));
    report.push(format!(
        "next: systemctl daemon-reload && systemctl enable --now {EDGE_UNIT}"
    ));
    Ok(report)
}

/// The etcd access of the edge, from the settings' `cluster` object (endpoints, root key, TLS
/// files, user and password file: the same ones the servers use); `--cluster` has already been
/// merged into the endpoints.
fn access_input(s: &Settings) -> Result<EtcdAccessInput> {
    let c = &s.cluster;
    let password = match &c.password_file {
        Some(f) => Some(crate::routing::cluster::settings::read_password(
            "cluster.password_file",
            f,
        )?),
        None => None,
    };
    // Traefik reads the client key; refuse it here, with the setting named, when every user
    // may read it too (or it is missing), rather than leave the edge failing at start.
    if let Some(k) = &c.key_file {
        crate::routing::cluster::settings::read_secret("cluster.key_file", k)?;
    }
    if c.user.is_some() != c.password_file.is_some() {
        bail!("cluster.user and cluster.password_file go together");
    }
    Ok(EtcdAccessInput {
        endpoints: c
            .endpoints
            .iter()
            .flat_map(|e| split_endpoints(e))
            .collect(),
        root_key: Some(c.traefik_root.clone()),
        ca_file: c.ca_file.clone(),
        cert_file: c.cert_file.clone(),
        key_file: c.key_file.clone(),
        user: c.user.clone(),
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> EdgePaths {
        EdgePaths {
            settings: "/etc/rediacc/renet.json".into(),
            out_dir: "/etc/rediacc/traefik".into(),
            unit_dir: "/etc/systemd/system".into(),
            traefik_bin: "/usr/local/bin/traefik".into(),
        }
    }

    fn input(endpoints: &str) -> EtcdAccessInput {
        EtcdAccessInput {
            endpoints: split_endpoints(endpoints),
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_lose_their_scheme_and_keep_their_order() {
        let a = etcd_access(&input(
            "http://198.18.72.1:23791, http://198.18.72.1:23792,http://etcd-3.example.com:2379/",
        ))
        .unwrap();
        assert_eq!(
            a.endpoints,
            [
                "198.18.72.1:23791",
                "198.18.72.1:23792",
                "etcd-3.example.com:2379"
            ]
        );
        assert!(!a.tls);
        assert_eq!(a.root_key, "traefik");
        let v6 = etcd_access(&input("https://[2001:db8::5]:2379")).unwrap();
        assert_eq!(v6.endpoints, ["[2001:db8::5]:2379"]);
        assert!(v6.tls);
    }

    #[test]
    fn bad_endpoints_are_named() {
        for (e, why) in [
            ("", "none given"),
            ("10.0.0.5:2379", "give the scheme"),
            ("http://10.0.0.5", "no port"),
            ("http://10.0.0.5:0", "port 0"),
            ("http://10.0.0.5:99999", "out of range"),
            ("ftp://10.0.0.5:2379", "scheme `ftp`"),
            ("http://10.0.0.5:2379/v3", "no path"),
            ("http://2001:db8::5:2379", "brackets"),
            ("http://[2001:db8::zz]:2379", "IPv6"),
            ("http://bad_host:2379", "neither an IP"),
            (
                "http://10.0.0.5:2379,https://10.0.0.6:2379",
                "some are http",
            ),
        ] {
            let err = format!("{:#}", etcd_access(&input(e)).unwrap_err());
            assert!(err.contains(why), "{e}: {err}");
            if !e.is_empty() && !e.contains(',') {
                assert!(err.contains(&format!("`{e}`")), "names the endpoint: {err}");
            }
        }
    }

    #[test]
    fn tls_files_and_credentials_must_come_in_pairs() {
        let mut i = input("https://10.0.0.5:2379");
        i.cert_file = Some("/etc/rediacc/c.pem".into());
        assert!(format!("{:#}", etcd_access(&i).unwrap_err()).contains("key_file"));
        let mut i = input("http://10.0.0.5:2379");
        i.ca_file = Some("/etc/rediacc/ca.pem".into());
        assert!(format!("{:#}", etcd_access(&i).unwrap_err()).contains("https://"));
        let mut i = input("https://10.0.0.5:2379");
        i.ca_file = Some("ca.pem".into());
        assert!(format!("{:#}", etcd_access(&i).unwrap_err()).contains("absolute"));
        let mut i = input("http://10.0.0.5:2379");
        i.user = Some("edge".into());
        assert!(format!("{:#}", etcd_access(&i).unwrap_err()).contains("password"));
        let mut i = input("http://10.0.0.5:2379");
        i.root_key = Some("/traefik".into());
        assert!(format!("{:#}", etcd_access(&i).unwrap_err()).contains("traefik_root"));
    }

    fn settings() -> Settings {
        let mut s = Settings {
            public_ipv4: Some("203.0.113.9".into()),
            traefik_api_address: Some("127.0.0.1:8080".into()),
            tcp_ports: vec![25],
            ..Default::default()
        };
        s.proxy.preset_tcp_ports = Some(vec![5432]);
        s.proxy.preset_udp_ports = Some(vec![53]);
        s.dynamic_range = [10000, 10001];
        s
    }

    #[test]
    fn the_edge_reads_etcd_and_opens_every_server_port() {
        let mut i = input("https://10.0.0.5:2379,https://10.0.0.6:2379");
        i.ca_file = Some("/etc/rediacc/etcd-ca.pem".into());
        i.cert_file = Some("/etc/rediacc/etcd-client.pem".into());
        i.key_file = Some("/etc/rediacc/etcd-client-key.pem".into());
        i.user = Some("edge".into());
        i.password = Some("s3cret".into());
        i.root_key = Some("traefik-prod".into());
        let a = etcd_access(&i).unwrap();
        let r = render(&settings(), &a, &paths());
        let doc: serde_json::Value = serde_yaml::from_str(&r.static_config).unwrap();
        let etcd = &doc["providers"]["etcd"];
        assert_eq!(etcd["endpoints"], json!(["10.0.0.5:2379", "10.0.0.6:2379"]));
        assert_eq!(etcd["rootKey"], "traefik-prod");
        assert_eq!(etcd["username"], "edge");
        assert_eq!(etcd["password"], "s3cret");
        assert_eq!(etcd["tls"]["ca"], "/etc/rediacc/etcd-ca.pem");
        assert_eq!(etcd["tls"]["key"], "/etc/rediacc/etcd-client-key.pem");
        assert_eq!(
            doc["providers"].as_object().unwrap().len(),
            2,
            "etcd only, and the throttle"
        );
        assert_eq!(doc["providers"]["providersThrottleDuration"], "200ms");
        assert!(doc.get("providersThrottleDuration").is_none());
        let eps = doc["entryPoints"].as_object().unwrap();
        let names: Vec<&str> = eps.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "web",
                "websecure",
                "tcp-25",
                "tcp-5432",
                "tcp-10000",
                "tcp-10001",
                "udp-53",
                "traefik"
            ]
        );
        assert_eq!(eps["web"]["address"], "203.0.113.9:80");
        assert!(
            eps["web"]["http"].get("redirections").is_none(),
            "the servers redirect, the edge passes HTTP on"
        );
        assert!(
            eps["websecure"]["http"].get("tls").is_none(),
            "no TLS on the edge: passthrough by SNI"
        );
        assert_eq!(eps["tcp-5432"]["http"]["aliasHeadersStrategy"], "delete");
        assert_eq!(etcd["tls"]["insecureSkipVerify"], false);
        assert_eq!(eps["udp-53"]["address"], "203.0.113.9:53/udp");
        assert_eq!(doc["ping"]["entryPoint"], "traefik");
        assert!(!r.static_config.contains("0.0.0.0"));
        assert_eq!(EdgeRendered::static_config_mode(&a), 0o600);
        assert_eq!(render(&settings(), &a, &paths()), r, "deterministic");
    }

    #[test]
    fn plain_endpoints_have_no_tls_section_and_the_unit_is_hardened() {
        let a = etcd_access(&input("http://198.18.72.1:23791")).unwrap();
        let r = render(&settings(), &a, &paths());
        let doc: serde_json::Value = serde_yaml::from_str(&r.static_config).unwrap();
        assert!(doc["providers"]["etcd"].get("tls").is_none());
        let https = etcd_access(&input("https://10.0.0.5:2379")).unwrap();
        let doc: serde_json::Value =
            serde_yaml::from_str(&render(&settings(), &https, &paths()).static_config).unwrap();
        assert_eq!(
            doc["providers"]["etcd"]["tls"],
            json!({ "insecureSkipVerify": false }),
            "TLS with the system's CA bundle (Traefik refuses an empty tls section)"
        );
        assert!(doc["providers"]["etcd"].get("password").is_none());
        assert_eq!(EdgeRendered::static_config_mode(&a), 0o644);
        let u = &r.unit;
        assert!(
            u.contains(
                "ExecStart=/usr/local/bin/traefik --configFile=/etc/rediacc/traefik/traefik-edge.yml"
            ),
            "{u}"
        );
        for line in [
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "Restart=always",
        ] {
            assert!(u.contains(line), "{line}: {u}");
        }
        assert!(!u.contains("IPAddressDeny"), "the edge needs the network");
        assert!(!u.contains("EnvironmentFile"), "no token on the edge");
    }
}
