//! The matchers Traefik registers for each protocol and rule syntax, the spellings of their
//! names it accepts, and how many arguments each takes.
//!
//! Sources (traefik/traefik): `pkg/muxer/http/matcher.go` (`httpFuncs`, `expectNParameters`),
//! `pkg/muxer/http/matcher_v2.go` (`httpFuncsV2`), `pkg/muxer/tcp/matcher.go` (`tcpFuncs`,
//! `expect1Parameter`), `pkg/muxer/tcp/matcher_v2.go` (`tcpFuncsV2`), and
//! `pkg/rules/parser.go` (`NewParser`: each name is registered as written, lower-cased,
//! upper-cased and title-cased after lower-casing; `CheckRule`: at least one argument, none
//! empty).

use super::{Protocol, Syntax};

/// How many arguments a matcher takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arity {
    Exactly(usize),
    OneOrTwo,
    AtLeastOne,
    /// v2 `Headers`/`HeadersRegexp`: gorilla/mux takes key/value pairs.
    Pairs,
}

impl Arity {
    pub fn accepts(self, count: usize) -> bool {
        match self {
            Arity::Exactly(n) => count == n,
            Arity::OneOrTwo => count == 1 || count == 2,
            Arity::AtLeastOne => count >= 1,
            Arity::Pairs => count >= 2 && count.is_multiple_of(2),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Arity::Exactly(1) => "exactly 1 argument",
            Arity::Exactly(2) => "exactly 2 arguments",
            Arity::Exactly(_) => "a fixed number of arguments",
            Arity::OneOrTwo => "1 or 2 arguments",
            Arity::AtLeastOne => "1 or more arguments",
            Arity::Pairs => "an even number (2 or more) of arguments: name, value, ...",
        }
    }
}

/// What a matcher tests, as far as host confinement is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Compares the host (HTTP `Host`, v2 `HostHeader`, TCP `HostSNI`) with literal names.
    HostName,
    /// Matches the host with a Go regexp (v2: a gorilla/mux template, translated by the parser).
    HostRegexp,
    /// Anything else (path, method, headers, client IP, ALPN...).
    Other,
}

pub(super) struct MatcherSpec {
    pub name: &'static str,
    pub arity: Arity,
    pub kind: Kind,
}

const fn spec(name: &'static str, arity: Arity, kind: Kind) -> MatcherSpec {
    MatcherSpec { name, arity, kind }
}

use Arity::*;
use Kind::*;

const HTTP_V3: &[MatcherSpec] = &[
    spec("ClientIP", Exactly(1), Other),
    spec("Method", Exactly(1), Other),
    spec("Host", Exactly(1), HostName),
    spec("HostRegexp", Exactly(1), HostRegexp),
    spec("Path", Exactly(1), Other),
    spec("PathRegexp", Exactly(1), Other),
    spec("PathPrefix", Exactly(1), Other),
    spec("Header", Exactly(2), Other),
    spec("HeaderRegexp", Exactly(2), Other),
    spec("Query", OneOrTwo, Other),
    spec("QueryRegexp", OneOrTwo, Other),
];

const HTTP_V2: &[MatcherSpec] = &[
    spec("Host", AtLeastOne, HostName),
    spec("HostHeader", AtLeastOne, HostName),
    spec("HostRegexp", AtLeastOne, HostRegexp),
    spec("ClientIP", AtLeastOne, Other),
    spec("Path", AtLeastOne, Other),
    spec("PathPrefix", AtLeastOne, Other),
    spec("Method", AtLeastOne, Other),
    spec("Headers", Pairs, Other),
    spec("HeadersRegexp", Pairs, Other),
    spec("Query", AtLeastOne, Other),
];

const TCP_V3: &[MatcherSpec] = &[
    spec("ALPN", Exactly(1), Other),
    spec("ClientIP", Exactly(1), Other),
    spec("HostSNI", Exactly(1), HostName),
    spec("HostSNIRegexp", Exactly(1), HostRegexp),
];

const TCP_V2: &[MatcherSpec] = &[
    spec("ALPN", AtLeastOne, Other),
    spec("ClientIP", AtLeastOne, Other),
    spec("HostSNI", AtLeastOne, HostName),
    spec("HostSNIRegexp", AtLeastOne, HostRegexp),
];

/// The matchers Traefik registers for this protocol and syntax.
pub(super) fn table(protocol: Protocol, syntax: Syntax) -> &'static [MatcherSpec] {
    match (protocol, syntax) {
        (Protocol::Http, Syntax::V3) => HTTP_V3,
        (Protocol::Http, Syntax::V2) => HTTP_V2,
        (Protocol::Tcp, Syntax::V3) => TCP_V3,
        (Protocol::Tcp, Syntax::V2) => TCP_V2,
    }
}

/// The spellings `rules.NewParser` registers for a matcher name: as written, lower case,
/// UPPER case, and `cases.Title` of the lower-cased name (first letter up, e.g. `Hostregexp`).
pub(super) fn spellings(name: &str) -> [String; 4] {
    let lower = name.to_ascii_lowercase();
    let mut title = lower.clone();
    if let Some(first) = title.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    [name.to_string(), lower, name.to_ascii_uppercase(), title]
}

/// The matcher `written` names (in one of the accepted spellings), if any.
pub(super) fn lookup(
    written: &str,
    protocol: Protocol,
    syntax: Syntax,
) -> Option<&'static MatcherSpec> {
    table(protocol, syntax)
        .iter()
        .find(|spec| spellings(spec.name).iter().any(|s| s == written))
}

/// The kind of a matcher by canonical name (any syntax) for host judgements.
pub(super) fn kind_of(name: &str, protocol: Protocol) -> Kind {
    [Syntax::V3, Syntax::V2]
        .into_iter()
        .flat_map(|syntax| table(protocol, syntax))
        .find(|spec| spec.name == name)
        .map_or(Other, |spec| spec.kind)
}
