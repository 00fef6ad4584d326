//! The etcd key schema (docs/cluster.md "What lives in etcd"): renet's own keys under
//! `<prefix>/`, and the Traefik keys the edge's etcd provider reads under `<traefik_root>/`.
//! Pure: names and values only, so the schema is tested without etcd and every writer and
//! reader agrees on it.

use std::collections::BTreeSet;
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

    /// The edge keys of one port served by `s`: its router and its own service. A host has
    /// none of its own: it is one alternative of its server's routers
    /// ([`Schema::server_router_keys`]).
    pub fn resource_traefik_keys(&self, r: &Resource, s: &ServerRecord) -> Vec<(String, String)> {
        let t = &self.traefik_root;
        let n = &s.name;
        match r {
            Resource::Host(_) => Vec::new(),
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
            Resource::Host(_) => Vec::new(),
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

    /// The edge routers of every host server `server` serves: one HTTP router on `web`
    /// (`Host(`a`) || Host(`b`) || …`) and one TCP router on `websecure` (`HostSNI(`a`) || …`,
    /// TLS passed through), hosts sorted. One router per server instead of one per host keeps
    /// the edge's rebuild small: Traefik's KV provider and muxers cost grows with the number of
    /// routers, not with the length of a rule (docs/performance.md "Cluster").
    ///
    /// Every host is checked against [`edge_host_problem`] here, where the shared rule is
    /// rendered: a name that could change the rule's meaning would break the routes of every
    /// repository on the server. Errors when `hosts` is empty (no router then: delete
    /// [`Schema::server_router_prefixes`]), holds a name that is not a plain host name, or the
    /// rule would exceed [`MAX_EDGE_RULE_BYTES`].
    pub fn server_router_keys(
        &self,
        server: &str,
        hosts: &BTreeSet<String>,
    ) -> Result<Vec<(String, String)>, String> {
        if hosts.is_empty() {
            return Err(format!("server `{server}` serves no host at the edge"));
        }
        if let Some((h, problem)) = hosts
            .iter()
            .find_map(|h| edge_host_problem(h).map(|p| (h, p)))
        {
            return Err(format!("{h:?} cannot be put in an edge rule: {problem}"));
        }
        let sni = edge_rule("HostSNI", hosts);
        if sni.len() > MAX_EDGE_RULE_BYTES {
            return Err(edge_rule_full(server, hosts.len(), sni.len()));
        }
        let t = &self.traefik_root;
        let http = format!("{t}/http/routers/renet-srv-{server}");
        let tcp = format!("{t}/tcp/routers/renet-srv-{server}");
        Ok(vec![
            (format!("{http}/rule"), edge_rule("Host", hosts)),
            (format!("{http}/entryPoints/0"), "web".into()),
            (format!("{http}/service"), format!("renet-{server}")),
            (format!("{tcp}/rule"), sni),
            (format!("{tcp}/entryPoints/0"), "websecure".into()),
            (format!("{tcp}/service"), format!("renet-{server}-https")),
            (format!("{tcp}/tls/passthrough"), "true".into()),
        ])
    }

    /// Key prefixes of [`Schema::server_router_keys`] (deleted as ranges when the server
    /// serves no host any more). Server names are DNS labels, so `renet-srv-a/` never covers
    /// server `a-1`'s keys.
    pub fn server_router_prefixes(&self, server: &str) -> Vec<String> {
        let t = &self.traefik_root;
        vec![
            format!("{t}/http/routers/renet-srv-{server}/"),
            format!("{t}/tcp/routers/renet-srv-{server}/"),
        ]
    }
}

/// The longest rule one server's edge router may have. etcd refuses a request above 1.5 MiB
/// by default, and one transaction carries both rules (the HTTP one is a little shorter);
/// every change rewrites them, so they also set how fast etcd's history grows. About 12,000
/// hosts of 30 characters fit; hosts past the limit are not claimed (`/health` pending).
pub const MAX_EDGE_RULE_BYTES: usize = 512 * 1024;

/// Why `host` may not stand in an edge rule, if it may not: the allow-list is the canonical
/// host names the cluster claims (dot-separated labels of `a-z`, `0-9`, `-`, `_`, 1 to 63
/// characters, 253 in all), which is also inside what Traefik's `HostSNI` accepts. Nothing
/// else — no backtick, parenthesis, `|`, space, upper case or non-ASCII — can reach a rule.
pub fn edge_host_problem(host: &str) -> Option<String> {
    if host.is_empty() || host.len() > 253 {
        return Some(format!("{} characters (1 to 253)", host.len()));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Some(format!("label {label:?} is not 1 to 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')))
        {
            return Some(format!(
                "character {c:?} (only a-z, 0-9, `-`, `_` and dots)"
            ));
        }
    }
    None
}

/// `Matcher(`a`) || Matcher(`b`) || …` over sorted, allow-listed hosts.
fn edge_rule(matcher: &str, hosts: &BTreeSet<String>) -> String {
    let mut rule = String::new();
    for h in hosts {
        if !rule.is_empty() {
            rule.push_str(" || ");
        }
        rule.push_str(&format!("{matcher}(`{h}`)"));
    }
    rule
}

/// The refusal of a host that does not fit its server's rule.
pub fn edge_rule_full(server: &str, hosts: usize, bytes: usize) -> String {
    format!(
        "server `{server}`'s edge rule would list {hosts} hosts in {bytes} bytes, above the \
         limit of {MAX_EDGE_RULE_BYTES} (docs/cluster.md \"Decisions and limits\"): serve \
         fewer host names from this server"
    )
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
    fn edge_keys_of_a_server_and_a_port() {
        let s = Schema::new("renet", "traefik");
        assert!(
            s.resource_traefik_keys(&Resource::Host("shop.example.com".into()), &server())
                .is_empty()
        );
        let hosts: BTreeSet<String> = ["shop.example.com", "a.example.com", "b_1.example.com"]
            .into_iter()
            .map(String::from)
            .collect();
        let keys = s.server_router_keys("a", &hosts).unwrap();
        assert_eq!(
            keys,
            vec![
                (
                    "traefik/http/routers/renet-srv-a/rule".to_string(),
                    "Host(`a.example.com`) || Host(`b_1.example.com`) || Host(`shop.example.com`)"
                        .to_string()
                ),
                (
                    "traefik/http/routers/renet-srv-a/entryPoints/0".into(),
                    "web".into()
                ),
                (
                    "traefik/http/routers/renet-srv-a/service".into(),
                    "renet-a".into()
                ),
                (
                    "traefik/tcp/routers/renet-srv-a/rule".into(),
                    "HostSNI(`a.example.com`) || HostSNI(`b_1.example.com`) || \
                     HostSNI(`shop.example.com`)"
                        .into()
                ),
                (
                    "traefik/tcp/routers/renet-srv-a/entryPoints/0".into(),
                    "websecure".into()
                ),
                (
                    "traefik/tcp/routers/renet-srv-a/service".into(),
                    "renet-a-https".into()
                ),
                (
                    "traefik/tcp/routers/renet-srv-a/tls/passthrough".into(),
                    "true".into()
                ),
            ]
        );
        let prefixes = s.server_router_prefixes("a");
        for (k, _) in &keys {
            assert!(prefixes.iter().any(|p| k.starts_with(p)), "{k}");
        }
        // Server `a`'s prefixes never cover server `a-1`'s routers.
        for (k, _) in s.server_router_keys("a-1", &hosts).unwrap() {
            assert!(!prefixes.iter().any(|p| k.starts_with(p)), "{k}");
        }
        assert!(s.server_router_keys("a", &BTreeSet::new()).is_err());
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

    /// A name that could close the backtick, the matcher or the rule, or add an alternative,
    /// never reaches a server's shared rule: the whole rule is refused, naming the host.
    #[test]
    fn hostile_names_never_reach_an_edge_rule() {
        let s = Schema::new("renet", "traefik");
        for hostile in [
            "evil.example.com`) || Host(`victim.example.com",
            "evil`.example.com",
            "evil.example.com)",
            "a) || HostRegexp(`.*`",
            "evil.example.com || x",
            "evil example.com",
            "evil.example.com\nHost(`victim.example.com`)",
            "evil.example.com\r",
            "evil\t.example.com",
            "Evil.Example.com",
            "bücher.example.com",
            "evil.example.com\u{202e}",
            "evil..example.com",
            ".evil.example.com",
            "evil.example.com.",
            "*.example.com",
            "evil,example.com",
            "",
        ] {
            assert!(edge_host_problem(hostile).is_some(), "{hostile:?} accepted");
            let hosts: BTreeSet<String> = ["good.example.com".to_string(), hostile.to_string()]
                .into_iter()
                .collect();
            let err = s.server_router_keys("a", &hosts).unwrap_err();
            assert!(
                err.contains("cannot be put in an edge rule"),
                "{hostile:?}: {err}"
            );
        }
        assert!(edge_host_problem(&"a".repeat(64)).is_some());
        assert!(edge_host_problem(&["a"; 128].join(".")).is_some());
        for fine in [
            "shop.example.com",
            "xn--bcher-kva.example.com",
            "a-b_c.d1",
            "localhost",
        ] {
            assert_eq!(edge_host_problem(fine), None, "{fine}");
        }
    }

    #[test]
    fn a_rule_past_the_limit_is_refused() {
        let s = Schema::new("renet", "traefik");
        let per_host = "HostSNI(``) || ".len();
        let name = |i: usize| format!("host-{i:06}.{}.example.com", "x".repeat(40));
        let fit = MAX_EDGE_RULE_BYTES / (per_host + name(0).len());
        let mut hosts: BTreeSet<String> = (0..fit).map(name).collect();
        let keys = s.server_router_keys("a", &hosts).unwrap();
        assert!(keys.iter().all(|(_, v)| v.len() <= MAX_EDGE_RULE_BYTES));
        hosts.insert(name(fit));
        hosts.insert(name(fit + 1));
        let err = s.server_router_keys("a", &hosts).unwrap_err();
        assert!(err.contains("above the limit"), "{err}");
    }
}
