//! Decoding of `traefik.*` container labels the way Traefik v3's Docker provider does it
//! (label parser `traefik/paerser`, structures in Traefik's `pkg/config/dynamic`), into a
//! typed tree the route builder can rewrite and publish through Traefik's HTTP provider.
//!
//! Why a schema of every field: the HTTP provider rejects the *whole* published document on
//! one unknown field, so a label Traefik's Docker provider would refuse must be refused here
//! (dropping only that container), and everything published must use names Traefik knows.
//! Field names are matched case-insensitively and emitted in Traefik's canonical camelCase.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use crate::routing::compact_map::CompactMap;
use crate::routing::label_set::LabelSet;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};

/// A decoded value: what gets published in `/routes.yaml`. Maps are sorted so the output is
/// byte-deterministic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    List(Vec<Value>),
    /// Compact: the route builder keeps one tree per container (`compact_map`).
    Map(Map),
}

/// The maps of [`Value`].
pub type Map = CompactMap<Value>;

impl Value {
    pub fn empty_map() -> Value {
        Value::Map(Map::new())
    }

    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The field `key` of a map value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.as_map_mut()?.get_mut(key)
    }

    /// A string field of a map value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// The strings of a list field (empty when absent).
    pub fn get_list(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Sets a field of a map value (no-op on other values).
    pub fn set(&mut self, key: &str, value: Value) {
        if let Value::Map(m) = self {
            m.insert(key.to_string(), value);
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.as_map_mut()?.remove(key)
    }

    pub fn str_list(items: impl IntoIterator<Item = String>) -> Value {
        Value::List(items.into_iter().map(Value::Str).collect())
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Str(v) => s.serialize_str(v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// A label that Traefik would refuse: names the label key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    /// The label key (or the key prefix of the element at fault).
    pub key: String,
    pub message: String,
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "label `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for LabelError {}

/// Routers, services and middlewares of one protocol, by name as first spelled in the labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub routers: BTreeMap<String, Value>,
    pub services: BTreeMap<String, Value>,
    pub middlewares: BTreeMap<String, Value>,
}

impl Section {
    pub fn is_empty(&self) -> bool {
        self.routers.is_empty() && self.services.is_empty() && self.middlewares.is_empty()
    }
}

/// What one container's `traefik.*` labels define.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelConfig {
    pub http: Section,
    pub tcp: Section,
    pub udp: Section,
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

/// The type of a field, as paerser sees it when filling Traefik's structures from labels.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Bool,
    /// Go `int`/`int64` (64-bit), base 10.
    Int,
    /// `ptypes.Duration`: an integer is seconds, else Go's `time.ParseDuration`.
    Duration,
    /// `[]string`: split on `,`, each item trimmed.
    List,
    /// `map[string]string`, e.g. `customRequestHeaders.X-Foo=bar`.
    StrMap,
    /// `map[string]int` (`errors.statusRewrites`).
    IntMap,
    Struct(&'static [F]),
    /// A slice of structs addressed by index (`tls.domains[0].main`).
    StructList(&'static [F]),
    /// The label-only singular form of a server list (`loadbalancer.server.port`): one element.
    ServerAsStruct(&'static [F]),
    /// Free-form plugin configuration (`map[string]any`).
    Raw,
    /// Known to Traefik but `label:"-"`: accepted and ignored, as Traefik does.
    Ignored,
}

/// One field: canonical (published) name, type, and whether `field=true` alone creates it
/// (paerser's `allowEmpty`; another value disables it).
#[derive(Debug, Clone, Copy)]
struct F {
    name: &'static str,
    kind: Kind,
    allow_empty: bool,
}

const fn f(name: &'static str, kind: Kind) -> F {
    F {
        name,
        kind,
        allow_empty: false,
    }
}

const fn e(name: &'static str, kind: Kind) -> F {
    F {
        name,
        kind,
        allow_empty: true,
    }
}

/// A field that exists only as a label (`server.port`, `server.scheme`): Traefik's HTTP
/// provider does not know it, so the route builder consumes it into the server's `url` or
/// `address` and removes it before publishing.
const fn label_only(name: &'static str) -> F {
    f(name, Kind::Str)
}

use Kind::*;

const DOMAIN: &[F] = &[f("main", Str), f("sans", List)];

const ROUTER_TLS: &[F] = &[
    f("options", Str),
    f("certResolver", Str),
    f("domains", StructList(DOMAIN)),
];

const ROUTER_OBSERVABILITY: &[F] = &[
    f("accessLogs", Bool),
    f("metrics", Bool),
    f("tracing", Bool),
    f("traceVerbosity", Str),
    f("metadata", Ignored),
];

const HTTP_ROUTER: &[F] = &[
    f("entryPoints", List),
    f("middlewares", List),
    f("service", Str),
    f("rule", Str),
    f("parentRefs", Ignored),
    f("ruleSyntax", Str),
    f("priority", Int),
    e("tls", Struct(ROUTER_TLS)),
    f("observability", Struct(ROUTER_OBSERVABILITY)),
    f("defaultRule", Ignored),
    f("deniedEncodedPathCharacters", Ignored),
];

const COOKIE: &[F] = &[
    f("name", Str),
    f("secure", Bool),
    f("httpOnly", Bool),
    f("sameSite", Str),
    f("maxAge", Int),
    f("path", Str),
    f("domain", Str),
    f("expires", Ignored),
];

const STICKY: &[F] = &[e("cookie", Struct(COOKIE))];

const HTTP_SERVER: &[F] = &[
    f("url", Str),
    f("weight", Int),
    f("preservePath", Bool),
    f("fenced", Ignored),
    label_only("scheme"),
    label_only("port"),
];

const SERVER_HEALTH_CHECK: &[F] = &[
    f("scheme", Str),
    f("mode", Str),
    f("path", Str),
    f("method", Str),
    f("status", Int),
    f("port", Int),
    f("interval", Duration),
    f("unhealthyInterval", Duration),
    f("timeout", Duration),
    f("hostname", Str),
    f("followRedirects", Bool),
    f("headers", StrMap),
];

const PASSIVE_HEALTH_CHECK: &[F] = &[f("failureWindow", Duration), f("maxFailedAttempts", Int)];

const RESPONSE_FORWARDING: &[F] = &[f("flushInterval", Duration)];

const HTTP_LOAD_BALANCER: &[F] = &[
    e("sticky", Struct(STICKY)),
    f("servers", ServerAsStruct(HTTP_SERVER)),
    f("strategy", Str),
    f("healthCheck", Struct(SERVER_HEALTH_CHECK)),
    f("passiveHealthCheck", Struct(PASSIVE_HEALTH_CHECK)),
    f("passHostHeader", Bool),
    f("responseForwarding", Struct(RESPONSE_FORWARDING)),
    f("serversTransport", Str),
    f("nginxUpstreamHashBy", Ignored),
];

const HTTP_SERVICE: &[F] = &[
    f("middlewares", List),
    f("loadBalancer", Struct(HTTP_LOAD_BALANCER)),
    f("highestRandomWeight", Ignored),
    f("weighted", Ignored),
    f("mirroring", Ignored),
    f("failover", Ignored),
];

const IP_STRATEGY: &[F] = &[
    f("depth", Int),
    f("excludedIPs", List),
    f("ipv6Subnet", Int),
];

const SOURCE_CRITERION: &[F] = &[
    f("ipStrategy", Struct(IP_STRATEGY)),
    f("requestHeaderName", Str),
    f("requestHost", Bool),
];

const CLIENT_TLS: &[F] = &[
    f("ca", Str),
    f("cert", Str),
    f("key", Str),
    f("insecureSkipVerify", Bool),
];

const FORWARD_AUTH_TLS: &[F] = &[
    f("ca", Str),
    f("cert", Str),
    f("key", Str),
    f("insecureSkipVerify", Bool),
    f("caOptional", Bool),
];

const REDIS: &[F] = &[
    f("endpoints", List),
    f("tls", Struct(CLIENT_TLS)),
    f("username", Str),
    f("password", Str),
    f("db", Int),
    f("poolSize", Int),
    f("minIdleConns", Int),
    f("maxActiveConns", Int),
    f("readTimeout", Duration),
    f("writeTimeout", Duration),
    f("dialTimeout", Duration),
];

const HEADERS: &[F] = &[
    f("customRequestHeaders", StrMap),
    f("customResponseHeaders", StrMap),
    f("accessControlAllowCredentials", Bool),
    f("accessControlAllowHeaders", List),
    f("accessControlAllowMethods", List),
    f("accessControlAllowOriginList", List),
    f("accessControlAllowOriginListRegex", List),
    f("accessControlExposeHeaders", List),
    f("accessControlMaxAge", Int),
    f("addVaryHeader", Bool),
    f("allowedHosts", List),
    f("hostsProxyHeaders", List),
    f("sslProxyHeaders", StrMap),
    f("stsSeconds", Int),
    f("stsIncludeSubdomains", Bool),
    f("stsPreload", Bool),
    f("forceSTSHeader", Bool),
    f("frameDeny", Bool),
    f("customFrameOptionsValue", Str),
    f("contentTypeNosniff", Bool),
    f("browserXssFilter", Bool),
    f("customBrowserXSSValue", Str),
    f("contentSecurityPolicy", Str),
    f("contentSecurityPolicyReportOnly", Str),
    f("publicKey", Str),
    f("referrerPolicy", Str),
    f("permissionsPolicy", Str),
    f("isDevelopment", Bool),
    f("featurePolicy", Str),
    f("sslRedirect", Bool),
    f("sslTemporaryRedirect", Bool),
    f("sslHost", Str),
    f("sslForceHost", Bool),
];

const DN_SUBJECT: &[F] = &[
    f("country", Bool),
    f("province", Bool),
    f("locality", Bool),
    f("organization", Bool),
    f("organizationalUnit", Bool),
    f("commonName", Bool),
    f("serialNumber", Bool),
    f("domainComponent", Bool),
];

const DN_ISSUER: &[F] = &[
    f("country", Bool),
    f("province", Bool),
    f("locality", Bool),
    f("organization", Bool),
    f("commonName", Bool),
    f("serialNumber", Bool),
    f("domainComponent", Bool),
];

const CERT_INFO: &[F] = &[
    f("notAfter", Bool),
    f("notBefore", Bool),
    f("sans", Bool),
    f("serialNumber", Bool),
    f("subject", Struct(DN_SUBJECT)),
    f("issuer", Struct(DN_ISSUER)),
];

const HTTP_MIDDLEWARE: &[F] = &[
    f("addPrefix", Struct(&[f("prefix", Str)])),
    f(
        "stripPrefix",
        Struct(&[f("prefixes", List), f("forceSlash", Bool)]),
    ),
    f("stripPrefixRegex", Struct(&[f("regex", List)])),
    f("replacePath", Struct(&[f("path", Str)])),
    f(
        "replacePathRegex",
        Struct(&[f("regex", Str), f("replacement", Str)]),
    ),
    f("chain", Struct(&[f("middlewares", List)])),
    f(
        "ipWhiteList",
        Struct(&[f("sourceRange", List), e("ipStrategy", Struct(IP_STRATEGY))]),
    ),
    f(
        "ipAllowList",
        Struct(&[
            f("sourceRange", List),
            e("ipStrategy", Struct(IP_STRATEGY)),
            f("rejectStatusCode", Int),
        ]),
    ),
    f("headers", Struct(HEADERS)),
    f(
        "encodedCharacters",
        Struct(&[
            f("allowEncodedSlash", Bool),
            f("allowEncodedBackSlash", Bool),
            f("allowEncodedNullCharacter", Bool),
            f("allowEncodedSemicolon", Bool),
            f("allowEncodedPercent", Bool),
            f("allowEncodedQuestionMark", Bool),
            f("allowEncodedHash", Bool),
        ]),
    ),
    f(
        "errors",
        Struct(&[
            f("status", List),
            f("statusRewrites", IntMap),
            f("service", Str),
            f("query", Str),
            f("errorRequestHeaders", List),
            f("nginxHeaders", Ignored),
        ]),
    ),
    f(
        "rateLimit",
        Struct(&[
            f("average", Int),
            f("period", Duration),
            f("burst", Int),
            f("sourceCriterion", Struct(SOURCE_CRITERION)),
            f("redis", Struct(REDIS)),
        ]),
    ),
    f(
        "redirectRegex",
        Struct(&[
            f("regex", Str),
            f("replacement", Str),
            f("permanent", Bool),
            f("statusCode", Ignored),
        ]),
    ),
    f(
        "redirectScheme",
        Struct(&[
            f("scheme", Str),
            f("port", Str),
            f("permanent", Bool),
            f("forcePermanentRedirect", Ignored),
        ]),
    ),
    f(
        "basicAuth",
        Struct(&[
            f("users", List),
            f("usersFile", Str),
            f("realm", Str),
            f("removeHeader", Bool),
            f("headerField", Str),
        ]),
    ),
    f(
        "digestAuth",
        Struct(&[
            f("users", List),
            f("usersFile", Str),
            f("removeHeader", Bool),
            f("realm", Str),
            f("headerField", Str),
        ]),
    ),
    f(
        "forwardAuth",
        Struct(&[
            f("address", Str),
            f("tls", Struct(FORWARD_AUTH_TLS)),
            f("trustForwardHeader", Bool),
            f("authResponseHeaders", List),
            f("authResponseHeadersRegex", Str),
            f("authRequestHeaders", List),
            f("maxResponseBodySize", Int),
            f("addAuthCookiesToResponse", List),
            f("headerField", Str),
            f("forwardBody", Bool),
            f("maxBodySize", Int),
            f("preserveLocationHeader", Bool),
            f("preserveRequestMethod", Bool),
            f("authSigninURL", Str),
        ]),
    ),
    f(
        "inFlightReq",
        Struct(&[
            f("amount", Int),
            f("sourceCriterion", Struct(SOURCE_CRITERION)),
        ]),
    ),
    f(
        "buffering",
        Struct(&[
            f("maxRequestBodyBytes", Int),
            f("memRequestBodyBytes", Int),
            f("maxResponseBodyBytes", Int),
            f("memResponseBodyBytes", Int),
            f("retryExpression", Str),
            f("disableRequestBuffer", Ignored),
            f("disableResponseBuffer", Ignored),
        ]),
    ),
    f(
        "circuitBreaker",
        Struct(&[
            f("expression", Str),
            f("checkPeriod", Duration),
            f("fallbackDuration", Duration),
            f("recoveryDuration", Duration),
            f("responseCode", Int),
        ]),
    ),
    e(
        "compress",
        Struct(&[
            f("excludedContentTypes", List),
            f("includedContentTypes", List),
            f("minResponseBodyBytes", Int),
            f("encodings", List),
            f("defaultEncoding", Str),
        ]),
    ),
    f(
        "passTLSClientCert",
        Struct(&[f("pem", Bool), f("info", Struct(CERT_INFO))]),
    ),
    f(
        "retry",
        Struct(&[
            f("attempts", Int),
            f("timeout", Duration),
            f("initialInterval", Duration),
            f("maxRequestBodyBytes", Int),
            f("status", List),
            f("disableRetryOnNetworkError", Bool),
            f("retryNonIdempotentMethod", Bool),
        ]),
    ),
    e("contentType", Struct(&[f("autoDetect", Bool)])),
    f("grpcWeb", Struct(&[f("allowOrigins", List)])),
    f("plugin", Raw),
    f("requestHeaderModifier", Ignored),
    f("responseHeaderModifier", Ignored),
    f("requestRedirect", Ignored),
    f("URLRewrite", Ignored),
    f("authTLSPassCertificateToUpstream", Ignored),
    f("snippet", Ignored),
    f("rewriteTarget", Ignored),
    f("upstreamVHost", Ignored),
    f("appRoot", Ignored),
];

const TCP_ROUTER_TLS: &[F] = &[
    f("passthrough", Bool),
    f("options", Str),
    f("certResolver", Str),
    f("domains", StructList(DOMAIN)),
];

const TCP_ROUTER: &[F] = &[
    f("entryPoints", List),
    f("middlewares", List),
    f("service", Str),
    f("rule", Str),
    f("ruleSyntax", Str),
    f("priority", Int),
    e("tls", Struct(TCP_ROUTER_TLS)),
];

const TCP_SERVER: &[F] = &[f("address", Ignored), label_only("port"), f("tls", Bool)];

const TCP_HEALTH_CHECK: &[F] = &[
    f("port", Int),
    f("send", Str),
    f("expect", Str),
    f("interval", Duration),
    f("unhealthyInterval", Duration),
    f("timeout", Duration),
];

const TCP_LOAD_BALANCER: &[F] = &[
    f("servers", ServerAsStruct(TCP_SERVER)),
    f("serversTransport", Str),
    e("proxyProtocol", Struct(&[f("version", Int)])),
    f("terminationDelay", Int),
    e("healthCheck", Struct(TCP_HEALTH_CHECK)),
];

const TCP_SERVICE: &[F] = &[
    f("loadBalancer", Struct(TCP_LOAD_BALANCER)),
    f("weighted", Ignored),
];

const TCP_MIDDLEWARE: &[F] = &[
    f("inFlightConn", Struct(&[f("amount", Int)])),
    f("ipWhiteList", Struct(&[f("sourceRange", List)])),
    f("ipAllowList", Struct(&[f("sourceRange", List)])),
];

const UDP_ROUTER: &[F] = &[f("entryPoints", List), f("service", Str)];

const UDP_SERVER: &[F] = &[f("address", Ignored), label_only("port")];

const UDP_SERVICE: &[F] = &[
    f(
        "loadBalancer",
        Struct(&[f("servers", ServerAsStruct(UDP_SERVER))]),
    ),
    f("weighted", Ignored),
];

/// Key prefixes the Docker provider decodes (matched case-insensitively, as paerser does).
const FILTERS: &[&str] = &[
    "traefik.http",
    "traefik.tcp",
    "traefik.udp",
    "traefik.tls.stores.default",
];

// ---------------------------------------------------------------------------------------------
// Label tree (paerser's DecodeToNode)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Node {
    /// The name as first spelled.
    name: String,
    /// The label key prefix that leads here, for error messages.
    key: String,
    value: String,
    children: Vec<Node>,
}

impl Node {
    fn child_mut(&mut self, name: &str) -> &mut Node {
        let pos = self
            .children
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name));
        let idx = match pos {
            Some(i) => i,
            None => {
                let key = format!("{}.{}", self.key, name);
                self.children.push(Node {
                    name: name.to_string(),
                    key,
                    ..Default::default()
                });
                self.children.len() - 1
            }
        };
        &mut self.children[idx]
    }
}

fn err(key: &str, message: impl Into<String>) -> LabelError {
    LabelError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Builds paerser's node tree from the labels the Docker provider decodes. Keys are taken in
/// sorted order; a name matches an existing node case-insensitively and keeps its first
/// spelling; a later key of the same path (in another case) overwrites the value.
fn label_tree(labels: &LabelSet) -> Result<Option<Node>, LabelError> {
    let mut root: Option<Node> = None;
    for (key, value) in labels {
        let selected = FILTERS.iter().any(|flt| {
            key.len() >= flt.len()
                && key.is_char_boundary(flt.len())
                && key[..flt.len()].eq_ignore_ascii_case(flt)
        });
        if !selected {
            continue;
        }
        let split: Vec<&str> = key.split('.').collect();
        if split[0] != "traefik" {
            return Err(err(key, format!("invalid label root `{}`", split[0])));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in &split {
            if part.is_empty() {
                return Err(err(key, "empty element between dots"));
            }
            if part.starts_with('[') {
                return Err(err(
                    key,
                    format!("invalid leading character '[' in field name `{part}`"),
                ));
            }
            if part.ends_with(']') {
                let Some(left) = part.find('[') else {
                    return Err(err(key, format!("unbalanced ']' in `{part}`")));
                };
                parts.push(&part[..left]);
                parts.push(&part[left..]);
            } else {
                parts.push(part);
            }
        }
        let node = root.get_or_insert_with(|| Node {
            name: "traefik".into(),
            key: "traefik".into(),
            ..Default::default()
        });
        let mut cur = node;
        for part in &parts[1..] {
            cur = if part.starts_with('[') {
                // `domains[0]`: the key prefix reads without a dot before the index.
                let n = cur.child_mut(part);
                n.key = n.key.replacen(&format!(".{part}"), part, 1);
                n
            } else {
                cur.child_mut(part)
            };
        }
        cur.value = value.to_string();
    }
    Ok(root)
}

// ---------------------------------------------------------------------------------------------
// Typed decoding (paerser's AddMetadata + Fill)
// ---------------------------------------------------------------------------------------------

/// Decodes a container's labels. `Ok` with empty sections when it has no `traefik.http/tcp/udp`
/// labels. An unknown field, a bad value, or a label that would reach outside the container's
/// repository (`traefik.tls.stores.*`) is an error: the container is dropped whole.
pub fn decode(labels: &LabelSet) -> Result<LabelConfig, LabelError> {
    let mut config = LabelConfig::default();
    let Some(root) = label_tree(labels)? else {
        return Ok(config);
    };
    for proto in &root.children {
        let (section, router, service, middleware): (&mut Section, &[F], &[F], Option<&[F]>) =
            match proto.name.to_ascii_lowercase().as_str() {
                "http" => (
                    &mut config.http,
                    HTTP_ROUTER,
                    HTTP_SERVICE,
                    Some(HTTP_MIDDLEWARE),
                ),
                "tcp" => (
                    &mut config.tcp,
                    TCP_ROUTER,
                    TCP_SERVICE,
                    Some(TCP_MIDDLEWARE),
                ),
                "udp" => (&mut config.udp, UDP_ROUTER, UDP_SERVICE, None),
                "tls" => {
                    return Err(err(
                        &proto.key,
                        "TLS stores are server-wide (the default certificate of every site); a \
                     repository cannot set them through labels",
                    ));
                }
                _ => {
                    return Err(err(&proto.key, format!("unknown field `{}`", proto.name)));
                }
            };
        if proto.children.is_empty() {
            return Err(err(
                &proto.key,
                format!("`{}` cannot be a standalone element", proto.name),
            ));
        }
        for kind in &proto.children {
            let lower = kind.name.to_ascii_lowercase();
            let (target, schema) = match (lower.as_str(), middleware) {
                ("routers", _) => (&mut section.routers, router),
                ("services", _) => (&mut section.services, service),
                ("middlewares", Some(m)) => (&mut section.middlewares, m),
                ("serverstransports", _) => continue, // label:"-": ignored by Traefik too
                ("models", _) if proto.name.eq_ignore_ascii_case("tcp") => continue,
                ("models", _) => {
                    return Err(err(
                        &kind.key,
                        "HTTP models apply to entrypoints (server-wide); a repository cannot \
                         define them through labels",
                    ));
                }
                _ => {
                    return Err(err(
                        &kind.key,
                        format!(
                            "unknown field `{}` (known: routers, services{})",
                            kind.name,
                            if middleware.is_some() {
                                ", middlewares"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
            };
            if kind.children.is_empty() {
                return Err(err(
                    &kind.key,
                    format!("`{}` cannot be a standalone element", kind.name),
                ));
            }
            for obj in &kind.children {
                let value = decode_struct(obj, schema)?;
                target.insert(obj.name.clone(), value);
            }
        }
    }
    Ok(config)
}

fn field_names(schema: &[F]) -> String {
    schema
        .iter()
        .filter(|f| !matches!(f.kind, Ignored))
        .map(|f| match f.kind {
            ServerAsStruct(_) => "server",
            _ => f.name,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fills a struct from a node's children.
fn decode_struct(node: &Node, schema: &[F]) -> Result<Value, LabelError> {
    let mut out = BTreeMap::new();
    for child in &node.children {
        let field = schema
            .iter()
            .find(|f| match f.kind {
                ServerAsStruct(_) => child.name.eq_ignore_ascii_case("server"),
                _ => child.name.eq_ignore_ascii_case(f.name),
            })
            .ok_or_else(|| {
                err(
                    &child.key,
                    format!(
                        "unknown field `{}` (known here: {})",
                        child.name,
                        field_names(schema)
                    ),
                )
            })?;
        if let Some(v) = decode_field(child, field)? {
            out.insert(field.name.to_string(), v);
        }
    }
    Ok(Value::Map(out.into()))
}

/// Decodes one field; `None` when Traefik ignores it (`label:"-"`, a disabled `allowEmpty`
/// struct, an empty list).
fn decode_field(node: &Node, field: &F) -> Result<Option<Value>, LabelError> {
    let leaf = |what: &str| -> Result<(), LabelError> {
        if node.children.is_empty() {
            Ok(())
        } else {
            Err(err(
                &node.key,
                format!(
                    "`{}` is a {what}, it has no sub-fields (found `{}.{}`)",
                    node.name, node.name, node.children[0].name
                ),
            ))
        }
    };
    match field.kind {
        Ignored => Ok(None),
        Str => {
            leaf("string")?;
            Ok(Some(Value::Str(node.value.clone())))
        }
        Bool => {
            leaf("boolean")?;
            parse_bool(&node.value)
                .map(|b| Some(Value::Bool(b)))
                .ok_or_else(|| {
                    err(
                        &node.key,
                        format!(
                            "invalid boolean `{}` (use true/false, 1/0, t/f)",
                            node.value
                        ),
                    )
                })
        }
        Int => {
            leaf("number")?;
            parse_int(&node.value)
                .map(|i| Some(Value::Int(i)))
                .ok_or_else(|| err(&node.key, format!("invalid integer `{}`", node.value)))
        }
        Duration => {
            leaf("duration")?;
            parse_duration(&node.value)
                .map(|d| Some(Value::Str(d)))
                .ok_or_else(|| {
                    err(
                        &node.key,
                        format!(
                            "invalid duration `{}` (seconds, or a Go duration like 10s, 1m30s, 100ms)",
                            node.value
                        ),
                    )
                })
        }
        List => {
            leaf("comma-separated list")?;
            if node.value.is_empty() {
                return Ok(None);
            }
            Ok(Some(Value::str_list(
                node.value.split(',').map(|s| s.trim().to_string()),
            )))
        }
        StrMap | IntMap => {
            if node.children.is_empty() {
                return Err(err(
                    &node.key,
                    format!(
                        "`{}` cannot be a standalone element: give entries as `{}.<name>=<value>`",
                        node.name, node.name
                    ),
                ));
            }
            let mut m = BTreeMap::new();
            for c in &node.children {
                if !c.children.is_empty() {
                    return Err(err(
                        &c.children[0].key,
                        format!(
                            "entry `{}` of `{}` cannot have sub-fields",
                            c.name, node.name
                        ),
                    ));
                }
                let v = if matches!(field.kind, IntMap) {
                    Value::Int(
                        parse_int(&c.value)
                            .ok_or_else(|| err(&c.key, format!("invalid integer `{}`", c.value)))?,
                    )
                } else {
                    Value::Str(c.value.clone())
                };
                m.insert(c.name.clone(), v);
            }
            Ok(Some(Value::Map(m.into())))
        }
        Struct(schema) => {
            if node.children.is_empty() && !field.allow_empty {
                return Err(err(
                    &node.key,
                    format!(
                        "`{}` cannot be a standalone element (set one of its fields: {})",
                        node.name,
                        field_names(schema)
                    ),
                ));
            }
            let disabled = field.allow_empty
                && !node.value.is_empty()
                && !node.value.eq_ignore_ascii_case("true");
            let v = decode_struct(node, schema)?;
            Ok((!disabled).then_some(v))
        }
        StructList(schema) => {
            let mut items = Vec::new();
            for c in &node.children {
                items.push(decode_struct(c, schema)?);
            }
            Ok((!items.is_empty()).then_some(Value::List(items)))
        }
        ServerAsStruct(schema) => {
            if node.children.is_empty() {
                return Err(err(
                    &node.key,
                    "invalid server: it needs a field (e.g. `port`)",
                ));
            }
            Ok(Some(Value::List(vec![decode_struct(node, schema)?])))
        }
        Raw => {
            if node.children.is_empty() {
                return Err(err(
                    &node.key,
                    format!("`{}` cannot be a standalone element", node.name),
                ));
            }
            let mut m = BTreeMap::new();
            for c in &node.children {
                m.insert(c.name.clone(), raw_value(c));
            }
            Ok(Some(Value::Map(m.into())))
        }
    }
}

/// paerser's raw maps (plugin configuration): leaves are strings, `[n]` children are lists.
fn raw_value(node: &Node) -> Value {
    if node.children.is_empty() {
        return Value::Str(node.value.clone());
    }
    if node.children[0].name.starts_with('[') {
        return Value::List(node.children.iter().map(raw_value).collect());
    }
    Value::Map(
        node.children
            .iter()
            .map(|c| (c.name.clone(), raw_value(c)))
            .collect(),
    )
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, nothing else.
pub fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A `ptypes.Duration` label: an integer is seconds, else Go's `time.ParseDuration`.
/// Returned in a canonical form (`90s`, `100ms`) so equal durations compare equal when
/// several containers define the same object.
pub fn parse_duration(s: &str) -> Option<String> {
    let nanos: i128 = if let Some(secs) = parse_int(s) {
        i128::from(secs) * 1_000_000_000
    } else {
        go_parse_duration(s)?
    };
    Some(format_duration(nanos))
}

/// A duration as paerser reads it (an integer is seconds, else Go's `time.ParseDuration`), in
/// nanoseconds.
pub fn duration_nanos(s: &str) -> Option<i128> {
    match parse_int(s) {
        Some(secs) => Some(i128::from(secs) * 1_000_000_000),
        None => go_parse_duration(s),
    }
}

fn format_duration(nanos: i128) -> String {
    for (div, unit) in [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")] {
        if nanos % div == 0 {
            return format!("{}{unit}", nanos / div);
        }
    }
    format!("{nanos}ns")
}

/// Go's `time.ParseDuration`, in nanoseconds (limited to the int64 range).
fn go_parse_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let n = total.round() as i128;
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn booleans_follow_go_parse_bool() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "tRUE", "on", "", " true", "2"] {
            assert_eq!(parse_bool(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn integers_and_durations() {
        assert_eq!(parse_int("+42"), Some(42));
        assert_eq!(parse_int("-7"), Some(-7));
        for bad in ["", "4_2", " 42", "0x10", "1e3", "99999999999999999999"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
        let cases = [
            ("42", "42s"),
            ("42s", "42s"),
            ("1m30s", "90s"),
            ("100ms", "100ms"),
            ("0.1s", "100ms"),
            ("1.5h", "5400s"),
            ("0", "0s"),
            ("-2s", "-2s"),
            ("250us", "250us"),
            ("3ns", "3ns"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).as_deref(), Some(want), "{input}");
        }
        for bad in ["", "s", "10x", "1..5s", " 1s", "1 s", ".s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_generated_docker_label_of_the_reference_decodes() {
        // A sample of the keys in Traefik's docs/content/reference/dynamic-configuration/
        // docker-labels.yml, one per field type and nesting shape.
        let keys = [
            ("traefik.http.middlewares.m.addprefix.prefix", "foobar"),
            ("traefik.http.middlewares.m2.basicauth.users", "a, b"),
            ("traefik.http.middlewares.m3.compress", "true"),
            (
                "traefik.http.middlewares.m4.errors.statusrewrites.name0",
                "42",
            ),
            (
                "traefik.http.middlewares.m5.forwardauth.tls.caoptional",
                "true",
            ),
            (
                "traefik.http.middlewares.m6.headers.customrequestheaders.X-Foo",
                "bar",
            ),
            ("traefik.http.middlewares.m7.ipallowlist.ipstrategy", "true"),
            (
                "traefik.http.middlewares.m8.passtlsclientcert.info.subject.organizationalunit",
                "true",
            ),
            (
                "traefik.http.middlewares.m9.plugin.pluginconf0.name0",
                "foobar",
            ),
            (
                "traefik.http.middlewares.m10.ratelimit.redis.dialtimeout",
                "42s",
            ),
            (
                "traefik.http.routers.r.observability.traceverbosity",
                "minimal",
            ),
            ("traefik.http.routers.r.tls.domains[0].sans", "a, b"),
            ("traefik.http.routers.r.tls.domains[1].main", "c"),
            (
                "traefik.http.services.s.loadbalancer.healthcheck.headers.name0",
                "x",
            ),
            (
                "traefik.http.services.s.loadbalancer.sticky.cookie.samesite",
                "lax",
            ),
            ("traefik.http.services.s.loadbalancer.server.weight", "42"),
            ("traefik.tcp.middlewares.t.inflightconn.amount", "42"),
            ("traefik.tcp.routers.tr.tls.passthrough", "true"),
            (
                "traefik.tcp.services.ts.loadbalancer.proxyprotocol.version",
                "2",
            ),
            ("traefik.tcp.services.ts.loadbalancer.server.tls", "true"),
            ("traefik.udp.routers.ur.entrypoints", "udp-53"),
            ("traefik.udp.services.us.loadbalancer.server.port", "53"),
        ];
        let cfg = decode(&labels(&keys)).unwrap();
        let m6 = &cfg.http.middlewares["m6"];
        assert_eq!(
            m6.get("headers")
                .and_then(|h| h.get("customRequestHeaders"))
                .and_then(|h| h.get_str("X-Foo")),
            Some("bar")
        );
        let r = &cfg.http.routers["r"];
        let domains = r.get("tls").unwrap().get("domains").unwrap();
        let Value::List(ds) = domains else { panic!() };
        assert_eq!(ds.len(), 2);
        assert_eq!(ds[0].get_list("sans"), vec!["a", "b"]);
        assert_eq!(ds[1].get_str("main"), Some("c"));
        assert_eq!(
            cfg.http.middlewares["m3"].get("compress"),
            Some(&Value::empty_map())
        );
        assert!(
            cfg.tcp.routers["tr"].get("tls").unwrap().get("passthrough")
                == Some(&Value::Bool(true))
        );
        assert_eq!(
            cfg.udp.routers["ur"].get_list("entryPoints"),
            vec!["udp-53"]
        );
    }

    #[test]
    fn errors_name_the_label() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("traefik.http.routers.r.rul", "x")],
                "traefik.http.routers.r.rul",
            ),
            (
                &[("traefik.http.routers.r.priority", "high")],
                "traefik.http.routers.r.priority",
            ),
            (
                &[("traefik.http.middlewares.m.headers.stsseconds", "1y")],
                "traefik.http.middlewares.m.headers.stsseconds",
            ),
            (
                &[("traefik.http.middlewares.m.headers", "x")],
                "traefik.http.middlewares.m.headers",
            ),
            (
                &[("traefik.http.routers.r.rule.x", "x")],
                "traefik.http.routers.r.rule",
            ),
            (&[("traefik.http..r", "x")], "traefik.http..r"),
            (
                &[("Traefik.http.routers.r.rule", "x")],
                "Traefik.http.routers.r.rule",
            ),
            (
                &[(
                    "traefik.tls.stores.default.defaultgeneratedcert.resolver",
                    "le",
                )],
                "traefik.tls",
            ),
            (
                &[("traefik.http.services.s.loadbalancer.servers.port", "80")],
                "traefik.http.services.s.loadbalancer.servers",
            ),
        ];
        for (input, key) in cases {
            let e = decode(&labels(input)).unwrap_err();
            assert_eq!(e.key, *key, "{input:?}: {e}");
        }
    }

    #[test]
    fn disabled_allow_empty_and_ignored_fields() {
        let cfg = decode(&labels(&[
            ("traefik.http.routers.r.tls", "false"),
            ("traefik.http.routers.r.tls.certresolver", "le"),
            ("traefik.http.routers.q.tls", ""),
            ("traefik.http.services.s.weighted.services", "x"),
            ("traefik.http.services.s.loadbalancer.server.port", "80"),
            ("traefik.enable", "true"),
            ("traefik.docker.network", "x"),
        ]))
        .unwrap();
        assert_eq!(cfg.http.routers["r"].get("tls"), None);
        assert_eq!(cfg.http.routers["q"].get("tls"), Some(&Value::empty_map()));
        assert_eq!(cfg.http.services["s"].get("weighted"), None);
    }

    #[test]
    fn names_are_case_insensitive_first_spelling_wins() {
        let cfg = decode(&labels(&[
            ("traefik.http.routers.Web.rule", "Host(`a`)"),
            ("traefik.http.routers.web.service", "svc"),
            ("traefik.http.routers.web.RULE", "Host(`b`)"),
        ]))
        .unwrap();
        assert_eq!(cfg.http.routers.len(), 1);
        let r = &cfg.http.routers["Web"];
        assert_eq!(r.get_str("service"), Some("svc"));
        // Sorted keys: `...Web.rule` < `...web.RULE` < `...web.service`: the later one wins.
        assert_eq!(r.get_str("rule"), Some("Host(`b`)"));
    }
}
