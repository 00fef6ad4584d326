//! What a tenant's labels may ask of the shared Traefik, judged per container after its
//! objects were namespaced (docs/labels.md, "Multi-tenant rules").
//!
//! Traefik runs as root and serves every repository, so a label must not make it read host
//! files, call addresses outside the repository, reference objects the repository does not
//! own, listen for the repository on entrypoints it has no business on, or spin (a health check
//! every 2µs). Each check is an allow-list: what is not stated as allowed is refused, with the
//! field, the value and the way out. A violation drops the whole container, as a bad label
//! does in Traefik's own Docker provider, so a tenant's mistake never reaches other tenants.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addresses::NetworkId;
use crate::routing::traefik_labels::{Section, Value, duration_nanos};

/// The operator's knobs (settings file, `routing.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantLimits {
    /// References to objects of other providers a tenant may use, exactly as written
    /// (`secure-headers@file`). Everything else with an `@` is refused.
    pub allowed_references: BTreeSet<String>,
    /// Plugin names (`traefik.http.middlewares.x.plugin.<name>`) tenants may configure.
    pub allowed_plugins: BTreeSet<String>,
    /// Whether outbound addresses (forwardAuth, redis) may be DNS names. Off by default: a
    /// tenant controls its own DNS and could point a name at another tenant's loopback IP.
    pub allow_outbound_hostnames: bool,
    /// Floor of health-check intervals and timeouts and circuit-breaker check periods, in
    /// nanoseconds.
    pub health_check_floor_nanos: i128,
    /// Entrypoints HTTP routers may name.
    pub http_entrypoints: BTreeSet<String>,
    /// Ports with a `tcp-<port>` / `udp-<port>` entrypoint.
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits {
            allowed_references: BTreeSet::new(),
            allowed_plugins: BTreeSet::new(),
            allow_outbound_hostnames: false,
            health_check_floor_nanos: 1_000_000_000,
            http_entrypoints: ["web", "websecure", "web-v6", "websecure-v6"]
                .into_iter()
                .map(String::from)
                .collect(),
            tcp_ports: BTreeSet::new(),
            udp_ports: BTreeSet::new(),
        }
    }
}

/// Checks one container's namespaced sections. `Err` names the object, field and value.
pub fn check(
    n: NetworkId,
    http: &Section,
    tcp: &Section,
    udp: &Section,
    limits: &TenantLimits,
) -> Result<(), String> {
    let ctx = Ctx { n, limits };
    for (name, r) in &http.routers {
        let at = format!("http router `{name}`");
        ctx.http_entrypoints(&at, r)?;
        ctx.references(&at, r, &["service"], &["middlewares"])?;
        ctx.tls_options(&at, r)?;
    }
    for (name, s) in &http.services {
        let at = format!("http service `{name}`");
        ctx.references(&at, s, &[], &["middlewares"])?;
        if let Some(lb) = s.get("loadBalancer") {
            ctx.transport(&at, lb)?;
            if let Some(hc) = lb.get("healthCheck") {
                ctx.health_check(&at, hc)?;
                if let Some(scheme) = hc.get_str("scheme") {
                    check_scheme(&format!("{at}: healthCheck.scheme"), scheme)?;
                }
            }
        }
    }
    for (name, m) in &http.middlewares {
        ctx.http_middleware(&format!("http middleware `{name}`"), m)?;
    }
    for (name, r) in &tcp.routers {
        let at = format!("tcp router `{name}`");
        ctx.port_entrypoints(&at, r, "tcp", &limits.tcp_ports)?;
        ctx.references(&at, r, &["service"], &["middlewares"])?;
        ctx.tls_options(&at, r)?;
    }
    for (name, s) in &tcp.services {
        let at = format!("tcp service `{name}`");
        if let Some(lb) = s.get("loadBalancer") {
            ctx.transport(&at, lb)?;
            if let Some(hc) = lb.get("healthCheck") {
                ctx.health_check(&at, hc)?;
            }
        }
    }
    for (name, r) in &udp.routers {
        let at = format!("udp router `{name}`");
        ctx.port_entrypoints(&at, r, "udp", &limits.udp_ports)?;
        ctx.references(&at, r, &["service"], &[])?;
    }
    Ok(())
}

/// `server.scheme` (and a health check's scheme): only the schemes Traefik's load balancer
/// speaks, so the value cannot carry a URL of its own (`http://evil#`).
pub fn check_scheme(at: &str, scheme: &str) -> Result<(), String> {
    match scheme {
        "http" | "https" | "h2c" => Ok(()),
        other => Err(format!(
            "{at}: scheme `{other}` is not allowed; use http, https or h2c"
        )),
    }
}

struct Ctx<'a> {
    n: NetworkId,
    limits: &'a TenantLimits,
}

impl Ctx<'_> {
    /// A reference that survived namespacing with an `@` names another provider's object.
    fn reference(&self, at: &str, field: &str, r: &str) -> Result<(), String> {
        if !r.contains('@') || self.limits.allowed_references.contains(r) {
            return Ok(());
        }
        Err(format!(
            "{at}: {field} `{r}` refers to an object this repository does not own \
             (`@internal`, `@file` and other providers are off limits unless the operator \
             allow-lists the exact name in routing.allowed_references); refer to this \
             repository's own objects by their plain name"
        ))
    }

    fn references(
        &self,
        at: &str,
        v: &Value,
        single: &[&str],
        lists: &[&str],
    ) -> Result<(), String> {
        for f in single {
            if let Some(r) = v.get_str(f) {
                self.reference(at, f, r)?;
            }
        }
        for f in lists {
            for r in v.get_list(f) {
                self.reference(at, f, &r)?;
            }
        }
        Ok(())
    }

    /// `tls.options` names TLS options, which labels cannot define: only `default` or an
    /// allow-listed name.
    fn tls_options(&self, at: &str, router: &Value) -> Result<(), String> {
        match router.get("tls").and_then(|t| t.get_str("options")) {
            None | Some("") | Some("default") => Ok(()),
            Some(o) if self.limits.allowed_references.contains(o) => Ok(()),
            Some(o) => Err(format!(
                "{at}: tls.options `{o}` is not allowed (labels cannot define TLS options; the \
                 operator may allow-list a shared one in routing.allowed_references)"
            )),
        }
    }

    fn transport(&self, at: &str, lb: &Value) -> Result<(), String> {
        match lb.get_str("serversTransport") {
            None | Some("") => Ok(()),
            Some(t) if self.limits.allowed_references.contains(t) => Ok(()),
            Some(t) => Err(format!(
                "{at}: serversTransport `{t}` is not allowed (a transport carries client \
                 certificates and TLS settings of the operator's; the operator may allow-list \
                 one in routing.allowed_references)"
            )),
        }
    }

    fn http_entrypoints(&self, at: &str, router: &Value) -> Result<(), String> {
        for ep in router.get_list("entryPoints") {
            if !self.limits.http_entrypoints.contains(&ep) {
                return Err(format!(
                    "{at}: entrypoint `{ep}` is not an HTTP entrypoint tenants may use ({}); \
                     leave entrypoints out to be served on the default ones",
                    self.limits
                        .http_entrypoints
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(())
    }

    /// TCP/UDP routers: at least one entrypoint, each `<proto>-<port>` of a registered port.
    /// No entrypoint would mean every entrypoint — HTTP, HTTPS and the API included.
    fn port_entrypoints(
        &self,
        at: &str,
        router: &Value,
        proto: &str,
        ports: &BTreeSet<u16>,
    ) -> Result<(), String> {
        let eps = router.get_list("entryPoints");
        if eps.is_empty() {
            return Err(format!(
                "{at}: no entrypoints, which Traefik reads as every entrypoint (HTTP and HTTPS \
                 included); name one, e.g. entrypoints={proto}-<port>"
            ));
        }
        for ep in eps {
            let port = ep
                .strip_prefix(proto)
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|p| p.parse::<u16>().ok().filter(|n| n.to_string() == p));
            match port {
                Some(p) if ports.contains(&p) => {}
                Some(p) => {
                    return Err(format!(
                        "{at}: entrypoint `{ep}` does not exist (port {p} is not registered \
                         with the proxy; the operator adds it to {proto}_ports)"
                    ));
                }
                None => {
                    return Err(format!(
                        "{at}: entrypoint `{ep}` is not a {proto}-<port> entrypoint; {} routers \
                         live only on {proto}-* entrypoints",
                        proto.to_uppercase()
                    ));
                }
            }
        }
        Ok(())
    }

    fn health_check(&self, at: &str, hc: &Value) -> Result<(), String> {
        for field in ["interval", "unhealthyInterval", "timeout"] {
            self.duration_floor(at, &format!("healthCheck.{field}"), hc.get_str(field))?;
        }
        Ok(())
    }

    fn duration_floor(&self, at: &str, field: &str, v: Option<&str>) -> Result<(), String> {
        let Some(v) = v else { return Ok(()) };
        let floor = self.limits.health_check_floor_nanos;
        match duration_nanos(v) {
            Some(d) if d >= floor => Ok(()),
            _ => Err(format!(
                "{at}: {field} `{v}` is below the floor of {} set by the operator \
                 (routing.health_check_floor)",
                format_nanos(floor)
            )),
        }
    }

    fn http_middleware(&self, at: &str, m: &Value) -> Result<(), String> {
        if let Some(chain) = m.get("chain") {
            self.references(at, chain, &[], &["middlewares"])?;
        }
        if let Some(errors) = m.get("errors") {
            self.references(at, errors, &["service"], &[])?;
        }
        for kind in ["basicAuth", "digestAuth"] {
            if let Some(f) = m.get(kind).and_then(|a| a.get_str("usersFile"))
                && !f.is_empty()
            {
                return Err(format!(
                    "{at}: {kind}.usersFile makes the proxy read a file of the host; give the \
                     users inline ({kind}.users)"
                ));
            }
        }
        if let Some(fa) = m.get("forwardAuth") {
            if let Some(addr) = fa.get_str("address") {
                self.outbound_url(&format!("{at}: forwardAuth.address"), addr)?;
            }
            file_fields(&format!("{at}: forwardAuth.tls"), fa.get("tls"))?;
        }
        if let Some(redis) = m.get("rateLimit").and_then(|r| r.get("redis")) {
            for ep in redis.get_list("endpoints") {
                self.outbound_host_port(&format!("{at}: rateLimit.redis.endpoints"), &ep)?;
            }
            file_fields(&format!("{at}: rateLimit.redis.tls"), redis.get("tls"))?;
        }
        if let Some(cb) = m.get("circuitBreaker") {
            self.duration_floor(at, "circuitBreaker.checkPeriod", cb.get_str("checkPeriod"))?;
        }
        if let Some(Value::Map(plugins)) = m.get("plugin") {
            for name in plugins.keys() {
                if !self.limits.allowed_plugins.contains(name) {
                    return Err(format!(
                        "{at}: plugin `{name}` is not allowed (plugins run arbitrary code and \
                         configuration in the shared proxy; the operator may allow-list it in \
                         routing.allowed_plugins)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// `http(s)://HOST[:PORT][/path][?query]`, in a strict form both Go and this check read
    /// the same way: no user info, no backslash, no percent-encoding in the authority.
    fn outbound_url(&self, at: &str, url: &str) -> Result<(), String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("{at}: `{url}` must start with http:// or https://"))?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if tail.chars().any(|c| !c.is_ascii_graphic() || c == '\\') {
            return Err(format!(
                "{at}: `{url}` has a character outside printable ASCII or a backslash"
            ));
        }
        self.outbound_host_port(at, authority)
    }

    /// `HOST[:PORT]`: the repository's own service IPs, public IP literals, and (when the
    /// operator allows) public DNS names.
    fn outbound_host_port(&self, at: &str, authority: &str) -> Result<(), String> {
        let bad = |why: &str| Err(format!("{at}: `{authority}` {why}"));
        if authority.is_empty()
            || authority
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        {
            return bad("is not a plain HOST or HOST:PORT (no user info, escapes or spaces)");
        }
        let (host, port) = split_host_port(authority);
        if let Some(p) = port
            && (p.is_empty() || p.parse::<u16>().map_or(true, |p| p == 0))
        {
            return bad("has an invalid port");
        }
        let ip = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(|h| h.parse::<Ipv6Addr>().map(IpAddr::V6))
            .unwrap_or_else(|| host.parse::<Ipv4Addr>().map(IpAddr::V4));
        match ip {
            Ok(IpAddr::V4(v4)) if self.n.contains_service_ip(v4) => Ok(()),
            Ok(ip) if is_public(ip) => Ok(()),
            Ok(_) => bad(&format!(
                "is a loopback, private, link-local or reserved address outside this \
                 repository's service IPs ({}); point it at one of this repository's services",
                self.n.block_cidr()
            )),
            Err(_)
                if host.starts_with('[')
                    || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
            {
                bad("is not a valid IP address")
            }
            Err(_) if !self.limits.allow_outbound_hostnames => bad(
                "names a host by DNS name; the proxy would follow whatever address that name \
                 resolves to (another repository's included), so use this repository's service \
                 IP or a public IP, or ask the operator to set routing.allow_outbound_hostnames",
            ),
            Err(_) => {
                let h = host.to_ascii_lowercase();
                let local = !h.contains('.')
                    || h == "localhost"
                    || [
                        ".localhost",
                        ".local",
                        ".internal",
                        ".localdomain",
                        ".home.arpa",
                    ]
                    .iter()
                    .any(|s| h.ends_with(s));
                if local {
                    bad("is a local name")
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Certificate, key and CA fields are file paths the proxy would open.
fn file_fields(at: &str, tls: Option<&Value>) -> Result<(), String> {
    for field in ["ca", "cert", "key"] {
        if let Some(v) = tls.and_then(|t| t.get_str(field))
            && !v.is_empty()
        {
            return Err(format!(
                "{at}.{field} makes the proxy open a file of the host; not allowed for tenants"
            ));
        }
    }
    Ok(())
}

fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => {
                let port = authority[i + 1..].strip_prefix(':');
                (&authority[..=i], port)
            }
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (authority, None),
    }
}

/// Globally routable: not loopback, private, link-local, CGNAT, multicast, documentation,
/// benchmarking, unspecified or broadcast (IPv4-mapped IPv6 judged as its IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8
                || s[0] == 0x0064 && s[1] == 0xff9b
                || s[0] == 0)
        }
    }
}

fn format_nanos(n: i128) -> String {
    if n % 1_000_000_000 == 0 {
        format!("{}s", n / 1_000_000_000)
    } else {
        format!("{}ms", n / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nid() -> NetworkId {
        NetworkId::new(2816).unwrap()
    }

    fn limits() -> TenantLimits {
        TenantLimits {
            tcp_ports: [5432, 10000].into_iter().collect(),
            udp_ports: [53].into_iter().collect(),
            ..TenantLimits::default()
        }
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    fn mw(m: Value) -> Result<(), String> {
        let mut http = Section::default();
        http.middlewares.insert("m-2816".into(), m);
        check(
            nid(),
            &http,
            &Section::default(),
            &Section::default(),
            &limits(),
        )
    }

    #[test]
    fn outbound_addresses() {
        let fa = |addr: &str| mw(map(&[("forwardAuth", map(&[("address", s(addr))]))]));
        assert!(fa("http://127.0.11.5:9000/auth").is_ok());
        assert!(fa("https://8.8.8.8/x?y=1").is_ok());
        for bad in [
            "http://127.0.11.66:9000/",
            "http://127.0.0.1:7111/routes.json",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest",
            "http://[::1]:80/",
            "http://[::ffff:127.0.0.1]/",
            "http://127.0.11.5@127.0.11.66/",
            "http://127.0.11.5\\@127.0.11.66/",
            "http://auth.example.com/",
            "http://localhost/",
            "ftp://8.8.8.8/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://127.1/",
        ] {
            assert!(fa(bad).is_err(), "{bad}");
        }
        let redis = |ep: &str| {
            mw(map(&[(
                "rateLimit",
                map(&[("redis", map(&[("endpoints", Value::List(vec![s(ep)]))]))]),
            )]))
        };
        assert!(redis("127.0.11.9:6379").is_ok());
        assert!(redis("127.0.11.70:6379").is_err());
        let mut open = limits();
        open.allow_outbound_hostnames = true;
        let mut http = Section::default();
        http.middlewares.insert(
            "m-2816".into(),
            map(&[(
                "forwardAuth",
                map(&[("address", s("https://auth.example.com/v"))]),
            )]),
        );
        assert!(
            check(
                nid(),
                &http,
                &Section::default(),
                &Section::default(),
                &open
            )
            .is_ok()
        );
    }

    #[test]
    fn files_plugins_references_and_floors() {
        let e = mw(map(&[(
            "basicAuth",
            map(&[("usersFile", s("/etc/shadow"))]),
        )]))
        .unwrap_err();
        assert!(e.contains("usersFile"), "{e}");
        let e = mw(map(&[(
            "forwardAuth",
            map(&[
                ("address", s("http://127.0.11.5/")),
                ("tls", map(&[("key", s("/etc/ssl/private/k.pem"))])),
            ]),
        )]))
        .unwrap_err();
        assert!(e.contains("forwardAuth.tls.key"), "{e}");
        let e = mw(map(&[("plugin", map(&[("evil", map(&[("a", s("b"))]))]))])).unwrap_err();
        assert!(e.contains("plugin `evil`"), "{e}");
        let e = mw(map(&[(
            "chain",
            map(&[("middlewares", Value::List(vec![s("api@internal")]))]),
        )]))
        .unwrap_err();
        assert!(e.contains("api@internal"), "{e}");
        assert!(
            mw(map(&[(
                "circuitBreaker",
                map(&[("checkPeriod", s("2us"))])
            )]))
            .is_err()
        );
        let mut http = Section::default();
        http.services.insert(
            "s-2816".into(),
            map(&[(
                "loadBalancer",
                map(&[("healthCheck", map(&[("interval", s("2us"))]))]),
            )]),
        );
        let e = check(
            nid(),
            &http,
            &Section::default(),
            &Section::default(),
            &limits(),
        )
        .unwrap_err();
        assert!(
            e.contains("healthCheck.interval `2us` is below the floor of 1s"),
            "{e}"
        );
        let mut allowed = limits();
        allowed.allowed_references.insert("hdrs@file".into());
        let mut http = Section::default();
        http.routers.insert(
            "r-2816".into(),
            map(&[("middlewares", Value::List(vec![s("hdrs@file")]))]),
        );
        assert!(
            check(
                nid(),
                &http,
                &Section::default(),
                &Section::default(),
                &allowed
            )
            .is_ok()
        );
        assert!(
            check(
                nid(),
                &http,
                &Section::default(),
                &Section::default(),
                &limits()
            )
            .is_err()
        );
    }

    #[test]
    fn entrypoints() {
        let router = |eps: &[&str]| {
            map(&[(
                "entryPoints",
                Value::List(eps.iter().map(|e| s(e)).collect()),
            )])
        };
        let tcp = |eps: &[&str]| {
            let mut t = Section::default();
            t.routers.insert("r-2816".into(), router(eps));
            check(
                nid(),
                &Section::default(),
                &t,
                &Section::default(),
                &limits(),
            )
        };
        assert!(tcp(&["tcp-5432"]).is_ok());
        for bad in [
            &[][..],
            &["websecure"],
            &["traefik"],
            &["tcp-6000"],
            &["tcp-05432"],
        ] {
            assert!(tcp(bad).is_err(), "{bad:?}");
        }
        let mut h = Section::default();
        h.routers.insert("r-2816".into(), router(&["tcp-5432"]));
        assert!(
            check(
                nid(),
                &h,
                &Section::default(),
                &Section::default(),
                &limits()
            )
            .is_err()
        );
        let mut u = Section::default();
        u.routers.insert("r-2816".into(), router(&["udp-53"]));
        assert!(
            check(
                nid(),
                &Section::default(),
                &Section::default(),
                &u,
                &limits()
            )
            .is_ok()
        );
        assert!(check_scheme("x", "http://evil#").is_err());
        assert!(check_scheme("x", "h2c").is_ok());
    }
}
