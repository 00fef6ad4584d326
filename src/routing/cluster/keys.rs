//! The etcd key schema (docs/cluster.md "What lives in etcd"): renet's own keys under
//! `<prefix>/`, and the Traefik keys the edge's etcd provider reads under `<traefik_root>/`.
//! Pure: names and values only, so the schema is tested without etcd and every writer and
//! reader agrees on it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Something a repository holds cluster-wide and the edge routes: an exact host name, or an
/// edge TCP/UDP port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Host(String),
    Tcp(u16),
    Udp(u16),
}

impl Resource {
    /// The kind as it appears in keys and commands: `host`, `tcp`, `udp`.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Host(_) => "host",
            Resource::Tcp(_) => "tcp",
            Resource::Udp(_) => "udp",
        }
    }

    /// The last key segment: the canonical host, or the port number.
    pub fn id(&self) -> String {
        match self {
            Resource::Host(h) => h.clone(),
            Resource::Tcp(p) | Resource::Udp(p) => p.to_string(),
        }
    }

    /// Parses `host NAME` / `tcp PORT` / `udp PORT` (commands and key suffixes). Host names
    /// are canonicalised with the rule parser's own function, so `Shop.Example.com.` and
    /// `shop.example.com` are one resource.
    pub fn parse(kind: &str, id: &str) -> Result<Resource, String> {
        let port = || {
            id.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{id}` is not a port number (1-65535)"))
        };
        match kind {
            "host" => crate::routing::rule::canonical_host(id).map(Resource::Host),
            "tcp" => port().map(Resource::Tcp),
            "udp" => port().map(Resource::Udp),
            other => Err(format!("`{other}`: expected host, tcp or udp")),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// Who serves a resource: written under the serving server's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serving {
    pub network_id: u32,
    pub server: String,
}

impl Serving {
    /// The exact bytes written, so a transaction can compare them.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain struct")
    }

    pub fn decode(bytes: &[u8]) -> Option<Serving> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A live server's record, under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRecord {
    pub address: String,
    pub http_port: u16,
    pub https_port: u16,
    pub name: String,
}

impl ServerRecord {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain struct")
    }

    pub fn decode(bytes: &[u8]) -> Option<ServerRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Key names under one prefix pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub prefix: String,
    pub traefik_root: String,
}

/// What a key under `<prefix>/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Server(String),
    Owner(Resource),
    Serving(Resource),
}

impl Schema {
    pub fn new(prefix: &str, traefik_root: &str) -> Schema {
        Schema {
            prefix: prefix.trim_matches('/').to_string(),
            traefik_root: traefik_root.trim_matches('/').to_string(),
        }
    }

    /// Everything renet itself writes (watched and listed as one range).
    pub fn own_prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn server(&self, name: &str) -> String {
        format!("{}/servers/{name}", self.prefix)
    }

    pub fn owner(&self, r: &Resource) -> String {
        format!("{}/owners/{}/{}", self.prefix, r.kind(), r.id())
    }

    pub fn serving(&self, r: &Resource) -> String {
        format!("{}/serving/{}/{}", self.prefix, r.kind(), r.id())
    }

    /// Reads a key of [`Schema::own_prefix`] back; `None` for anything else.
    pub fn parse(&self, key: &str) -> Option<Parsed> {
        let rest = key.strip_prefix(&self.own_prefix())?;
        let (section, rest) = rest.split_once('/')?;
        if section == "servers" {
            return (!rest.contains('/')).then(|| Parsed::Server(rest.to_string()));
        }
        let (kind, id) = rest.split_once('/')?;
        let r = Resource::parse(kind, id).ok()?;
        // Only canonical spellings count: a key another writer spelled differently is not ours.
        if r.id() != id {
            return None;
        }
        match section {
            "owners" => Some(Parsed::Owner(r)),
            "serving" => Some(Parsed::Serving(r)),
            _ => None,
        }
    }

    /// The edge's services for one server (under its lease): HTTP to its `web`, TCP to its
    /// `websecure` (TLS passed through).
    pub fn server_traefik_keys(&self, s: &ServerRecord) -> Vec<(String, String)> {
        let t = &self.traefik_root;
        let n = &s.name;
        vec![
            (
                format!("{t}/http/services/renet-{n}/loadBalancer/servers/0/url"),
                format!("http://{}:{}", bracket(&s.address), s.http_port),
            ),
            (
                format!("{t}/tcp/services/renet-{n}-https/loadBalancer/servers/0/address"),
                format!("{}:{}", bracket(&s.address), s.https_port),
            ),
        ]
    }

    /// The edge router(s) of one resource served by `s`, plus a port's own service.
    pub fn resource_traefik_keys(&self, r: &Resource, s: &ServerRecord) -> Vec<(String, String)> {
        let t = &self.traefik_root;
        let n = &s.name;
        match r {
            Resource::Host(h) => {
                let http = format!("{t}/http/routers/renet-host-{h}");
                let tcp = format!("{t}/tcp/routers/renet-host-{h}");
                vec![
                    (format!("{http}/rule"), format!("Host(`{h}`)")),
                    (format!("{http}/entryPoints/0"), "web".into()),
                    (format!("{http}/service"), format!("renet-{n}")),
                    (format!("{tcp}/rule"), format!("HostSNI(`{h}`)")),
                    (format!("{tcp}/entryPoints/0"), "websecure".into()),
                    (format!("{tcp}/service"), format!("renet-{n}-https")),
                    (format!("{tcp}/tls/passthrough"), "true".into()),
                ]
            }
            Resource::Tcp(p) => {
                let router = format!("{t}/tcp/routers/renet-tcp-{p}");
                vec![
                    (format!("{router}/rule"), "HostSNI(`*`)".into()),
                    (format!("{router}/entryPoints/0"), format!("tcp-{p}")),
                    (format!("{router}/service"), format!("renet-{n}-tcp-{p}")),
                    (
                        format!(
                            "{t}/tcp/services/renet-{n}-tcp-{p}/loadBalancer/servers/0/address"
                        ),
                        format!("{}:{p}", bracket(&s.address)),
                    ),
                ]
            }
            Resource::Udp(p) => {
                let router = format!("{t}/udp/routers/renet-udp-{p}");
                vec![
                    (format!("{router}/entryPoints/0"), format!("udp-{p}")),
                    (format!("{router}/service"), format!("renet-{n}-udp-{p}")),
                    (
                        format!(
                            "{t}/udp/services/renet-{n}-udp-{p}/loadBalancer/servers/0/address"
                        ),
                        format!("{}:{p}", bracket(&s.address)),
                    ),
                ]
            }
        }
    }

    /// Key prefixes that hold everything [`Schema::resource_traefik_keys`] writes for `r`
    /// (deleted as ranges on release, so nothing is left behind).
    pub fn resource_traefik_prefixes(&self, r: &Resource, server: &str) -> Vec<String> {
        let t = &self.traefik_root;
        match r {
            Resource::Host(h) => vec![
                format!("{t}/http/routers/renet-host-{h}/"),
                format!("{t}/tcp/routers/renet-host-{h}/"),
            ],
            Resource::Tcp(p) => vec![
                format!("{t}/tcp/routers/renet-tcp-{p}/"),
                format!("{t}/tcp/services/renet-{server}-tcp-{p}/"),
            ],
            Resource::Udp(p) => vec![
                format!("{t}/udp/routers/renet-udp-{p}/"),
                format!("{t}/udp/services/renet-{server}-udp-{p}/"),
            ],
        }
    }
}

/// IPv6 addresses in URLs and `host:port` need brackets.
fn bracket(address: &str) -> String {
    if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerRecord {
        ServerRecord {
            address: "198.18.72.11".into(),
            http_port: 80,
            https_port: 443,
            name: "a".into(),
        }
    }

    #[test]
    fn keys_round_trip() {
        let s = Schema::new("renet", "traefik");
        for r in [
            Resource::Host("shop.example.com".into()),
            Resource::Tcp(5432),
            Resource::Udp(53),
        ] {
            assert_eq!(s.parse(&s.owner(&r)), Some(Parsed::Owner(r.clone())));
            assert_eq!(s.parse(&s.serving(&r)), Some(Parsed::Serving(r.clone())));
        }
        assert_eq!(s.parse("renet/servers/a"), Some(Parsed::Server("a".into())));
        // Non-canonical or foreign spellings are not ours.
        assert_eq!(s.parse("renet/owners/host/Shop.example.com"), None);
        assert_eq!(s.parse("renet/owners/tcp/05432"), None);
        assert_eq!(s.parse("renet/owners/tcp/0"), None);
        assert_eq!(s.parse("renetx/owners/tcp/1"), None);
        assert_eq!(s.parse("renet/servers/a/b"), None);
    }

    #[test]
    fn resources_are_canonical() {
        assert_eq!(
            Resource::parse("host", "Shop.Example.COM."),
            Ok(Resource::Host("shop.example.com".into()))
        );
        assert!(Resource::parse("host", "a b").is_err());
        assert!(Resource::parse("tcp", "70000").is_err());
        assert!(Resource::parse("sctp", "1").is_err());
    }

    #[test]
    fn values_are_byte_stable() {
        let v = Serving {
            network_id: 4032,
            server: "a".into(),
        };
        assert_eq!(v.encode(), r#"{"network_id":4032,"server":"a"}"#);
        assert_eq!(Serving::decode(v.encode().as_bytes()), Some(v));
        assert_eq!(
            Serving::decode(b"{\"network_id\":1,\"server\":\"a\",\"x\":1}"),
            None
        );
    }

    #[test]
    fn edge_keys_of_a_host_and_a_port() {
        let s = Schema::new("renet", "traefik");
        let keys = s.resource_traefik_keys(&Resource::Host("shop.example.com".into()), &server());
        assert!(keys.contains(&(
            "traefik/tcp/routers/renet-host-shop.example.com/rule".into(),
            "HostSNI(`shop.example.com`)".into()
        )));
        assert!(keys.contains(&(
            "traefik/tcp/routers/renet-host-shop.example.com/tls/passthrough".into(),
            "true".into()
        )));
        let prefixes = s.resource_traefik_prefixes(&Resource::Tcp(5432), "a");
        for (k, _) in s.resource_traefik_keys(&Resource::Tcp(5432), &server()) {
            assert!(prefixes.iter().any(|p| k.starts_with(p)), "{k}");
        }
        let v6 = ServerRecord {
            address: "2001:db8::1".into(),
            ..server()
        };
        assert_eq!(s.server_traefik_keys(&v6)[0].1, "http://[2001:db8::1]:80");
    }
}
