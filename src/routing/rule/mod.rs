//! Traefik's rule language, parsed the way Traefik parses it, and the host names a rule can
//! match. The route server publishes every repository's routers into one shared Traefik, so a
//! rule's meaning must be judged with Traefik's grammar, never by looking for `Host(` in the
//! text: anything Traefik might read differently from this module is refused.
//!
//! # What Traefik does (traefik/traefik v3, vulcand/predicate v1.3.0, containous/mux)
//!
//! **Grammar.** `pkg/muxer/http/parser.go` and `pkg/muxer/tcp/mux.go` build parsers with
//! `pkg/rules/parser.go` `NewParser`, which is vulcand/predicate (`parse.go`): the rule goes
//! to Go's `go/parser.ParseExpr`, so it is a Go expression. predicate accepts `&&`, `||`
//! (Go precedence: `&&` binds tighter, both left-associative), unary `!`, parentheses, and
//! calls `Name(args...)` whose arguments are string literals (backtick raw strings, or
//! double-quoted strings with Go escapes `\a \b \f \n \r \t \v \\ \" \NNN \xNN \uNNNN
//! \UNNNNNNNN`, decoded by `strconv.Unquote`). Numbers, identifiers, selectors and other
//! operators fail at predicate or Traefik. Go's scanner rules apply: comments `//...` and
//! `/*...*/`, whitespace, carriage returns dropped from raw strings, NUL and BOM illegal, and a
//! line break after an identifier, string or `)` inserts a semicolon (so the rule must end
//! there; see `lexer.rs`).
//!
//! **Matcher names.** `NewParser` registers each name as written, lower-cased, UPPER-cased
//! and `cases.Title` of the lower-cased name: `Host`, `host`, `HOST`; `HostRegexp`,
//! `hostregexp`, `HOSTREGEXP`, `Hostregexp`; `HostSNI`, `hostsni`, `HOSTSNI`, `Hostsni`. No
//! other casing (`hostSNI`, `HoSt`) is accepted. Every spelling maps to the canonical name,
//! which [`Matcher::name`] holds. `rules.CheckRule`: at least one argument, none empty.
//!
//! **Matchers and arguments** (see `matchers.rs`): HTTP v3 `pkg/muxer/http/matcher.go`
//! (`expectNParameters`): `ClientIP`, `Method`, `Host`, `HostRegexp`, `Path`, `PathRegexp`,
//! `PathPrefix` take 1, `Header`, `HeaderRegexp` 2, `Query`, `QueryRegexp` 1 or 2. HTTP v2
//! `matcher_v2.go`: `Host`, `HostHeader`, `HostRegexp`, `ClientIP`, `Path`, `PathPrefix`,
//! `Method`, `Query` take 1 or more, `Headers`, `HeadersRegexp` pairs. TCP v3
//! `pkg/muxer/tcp/matcher.go`: `ALPN`, `ClientIP`, `HostSNI`, `HostSNIRegexp` take exactly 1;
//! TCP v2 the same names, 1 or more.
//!
//! **Syntax choice.** A router's `ruleSyntax` is used only when it is exactly `v2` (HTTP:
//! `SyntaxParser.parse` falls back to v3 for any other key; TCP: `switch syntax { case "v2"`);
//! an empty one takes the static `core.defaultRuleSyntax` (v3 unless the operator set it).
//! [`rule_syntax`] accepts only `v3`, `v2` or nothing.
//!
//! **Host, v3** (`host` in `matcher.go`, `DomainMatchHostExpression` in `pkg/muxer/muxer.go`):
//! `*` alone matches every request; non-ASCII is refused; the value is lower-cased and
//! compared case-insensitively (`strings.EqualFold`) with the request host, which
//! `requestdecorator` has lower-cased, trimmed and stripped of its port
//! (`types.CanonicalDomain(parseHost(req.Host))`). A trailing dot on either side is ignored.
//! `*.domain` replaces the request's first label by `*`: exactly one label below `domain`.
//! With CNAME flattening on, the flattened name is compared too. **Host, v2** (`hostV2`):
//! lower-cased, exact comparison with the same canonical host and trailing-dot handling; `*`
//! is not special. **HostSNI** (TCP): `*` matches every connection (even without SNI); v3
//! allows `*.domain` like `Host`; the value loses one trailing dot and is compared with
//! `EqualFold` against the lower-cased SNI.
//!
//! **HostRegexp, v3** (`hostRegexp`): Go `regexp.Compile` of the value (non-ASCII refused),
//! then `MatchString` — an unanchored search, case-sensitive unless `(?i)` — on the
//! lower-cased canonical host (and the CNAME-flattened one). `HostSNIRegexp` v3 likewise on the
//! lower-cased SNI. **v2** (`hostRegexpV2` through containous/mux `newRouteRegexp`;
//! `hostSNIRegexpV2`/`preparePattern`): a template `{name:regexp}` (`{name}` = `[^.]+`)
//! becomes `(?i)^literal(?P<v0>regexp)...$`, anchored and case-insensitive, matched against
//! the request host without its port. The parser stores v2 templates as that regexp, so an
//! [`Expr`] means the same whatever syntax it came from (see `template.rs`).
//!
//! **Request side.** Go's HTTP server answers 400 to a Host header with non-ASCII bytes, so
//! HTTP host names are ASCII by the time Traefik matches them; a TLS SNI is not checked that
//! way, which is why `(?i)` letters in a regexp count with their Unicode folds (the Kelvin sign
//! for `k`, the long s for `s`), as `strings.EqualFold` does for `HostSNI`.
//!
//! These findings are checked against the real Traefik (3.7) by
//! `tests/rule_traefik_differential.rs`: matcher spellings and argument counts, layouts, random
//! rules, and which Host headers and SNI names it routes to each rule.
//!
//! # What this module decides
//! [`parse`] gives the [`Expr`] Traefik builds; [`host_scopes`] gives the host names every
//! branch of it is confined to, refusing branches that are not (see `regex.rs` for when a
//! regexp counts as confined).

mod hosts;
mod lexer;
mod matchers;
mod parser;
mod regex;
mod template;

#[cfg(test)]
mod eval;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

pub use hosts::{MAX_BRANCHES, canonical_host};
pub use parser::{MAX_DEPTH, MAX_MATCHERS};

/// Longest rule accepted, in bytes.
pub const MAX_RULE_LEN: usize = 16 * 1024;

/// A router's rule syntax (its `ruleSyntax` label): `v3` (the default) or `v2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    V3,
    V2,
}

impl Syntax {
    fn label(self) -> &'static str {
        match self {
            Syntax::V3 => "v3",
            Syntax::V2 => "v2",
        }
    }
}

/// Whether a rule belongs to an HTTP or a TCP router (they have different matchers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tcp,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Tcp => "TCP",
        }
    }
}

/// Why a rule does not parse, and where (a character offset into the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for RuleError {}

/// A parsed rule. `Display` prints it in canonical spelling with the fewest parentheses; the
/// text parses back to the same `Expr` in the syntax it came from, except v2 host templates
/// (stored as the regexps Traefik compiles). It is meant for messages, not for publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Matcher(Matcher),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// One matcher call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Canonical spelling, e.g. "Host", "HostSNI", whichever accepted spelling the rule used.
    pub name: String,
    /// Unescaped values; for v2 `HostRegexp`/`HostSNIRegexp`, the Go regexp Traefik builds
    /// from the template.
    pub args: Vec<String>,
}

/// A set of host names a rule may match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostScope {
    /// One canonical host name.
    Exact(String),
    /// Every name strictly below this canonical domain (`*.domain`, any depth).
    Suffix(String),
    /// Every name: only TCP `HostSNI(`*`)`.
    Any,
}

impl HostScope {
    /// Whether the scope holds `host` (compared after [`canonical_host`]; false when `host` is
    /// not a host name).
    pub fn contains(&self, host: &str) -> bool {
        let Ok(host) = canonical_host(host) else {
            return false;
        };
        match self {
            HostScope::Any => true,
            HostScope::Exact(name) => host == *name,
            HostScope::Suffix(domain) => is_below(&host, domain),
        }
    }

    /// Whether some host name lies in both scopes.
    pub fn overlaps(&self, other: &HostScope) -> bool {
        use HostScope::*;
        match (self, other) {
            (Any, _) | (_, Any) => true,
            (Exact(a), Exact(b)) => a == b,
            (Exact(name), Suffix(domain)) | (Suffix(domain), Exact(name)) => is_below(name, domain),
            (Suffix(a), Suffix(b)) => a == b || is_below(a, b) || is_below(b, a),
        }
    }
}

/// Whether `name` is strictly below `domain` (both canonical).
fn is_below(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain)
        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
}

/// `example.com`, `*.example.com` (any depth below) or `*`.
impl fmt::Display for HostScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostScope::Exact(name) => f.write_str(name),
            HostScope::Suffix(domain) => write!(f, "*.{domain}"),
            HostScope::Any => f.write_str("*"),
        }
    }
}

/// Parses `rule` as Traefik does for a router of this protocol and syntax.
pub fn parse(rule: &str, protocol: Protocol, syntax: Syntax) -> Result<Expr, RuleError> {
    if rule.len() > MAX_RULE_LEN {
        return Err(RuleError {
            offset: 0,
            message: format!(
                "the rule is {} bytes long, above {MAX_RULE_LEN}",
                rule.len()
            ),
        });
    }
    let in_chars = |e: RuleError| RuleError {
        offset: rule.get(..e.offset).map_or(0, |s| s.chars().count()),
        message: e.message,
    };
    let tokens = lexer::tokenize(rule).map_err(in_chars)?;
    parser::Parser::new(&tokens, rule.len(), protocol, syntax)
        .parse_rule()
        .map_err(in_chars)
}

/// Every DNF branch of the rule must hold at least one positive host matcher (`Host`,
/// `HostRegexp`, v2 `HostHeader`; TCP: `HostSNI`, `HostSNIRegexp`). Returns the union over
/// branches of the scopes of every positive host matcher in each branch (the caller requires
/// all of them to be owned). Errors name the unconfined branch, the regexp that is not
/// provably confined, or the DNF bound ([`MAX_BRANCHES`]).
pub fn host_scopes(expr: &Expr, protocol: Protocol) -> Result<BTreeSet<HostScope>, String> {
    hosts::host_scopes(expr, protocol)
}

/// The syntax a router's `ruleSyntax` label asks for: `v3`, `v2`, or none (v3).
pub fn rule_syntax(label_value: Option<&str>) -> Result<Syntax, String> {
    match label_value {
        None | Some("v3") => Ok(Syntax::V3),
        Some("v2") => Ok(Syntax::V2),
        Some(other) => Err(format!(
            "ruleSyntax `{other}` is not supported: use `v3` (the default) or `v2`"
        )),
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args: Vec<String> = self.args.iter().map(|a| go_string(a)).collect();
        write!(f, "{}({})", self.name, args.join(", "))
    }
}

/// A Go string literal holding `value`: raw when it can be, else quoted with escapes.
fn go_string(value: &str) -> String {
    let needs_escapes = |c: char| c == '`' || c.is_control() || c == '\u{feff}';
    if !value.contains(needs_escapes) {
        return format!("`{value}`");
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if needs_escapes(c) => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, 0)
    }
}

/// Writes `expr` where an operator of precedence `outer` surrounds it (`||` 1, `&&` 2,
/// `!` 3), with parentheses only where Go's precedence and left-associativity need them.
fn write_expr(f: &mut fmt::Formatter<'_>, expr: &Expr, outer: u8) -> fmt::Result {
    let (prec, left, op, right) = match expr {
        Expr::Matcher(m) => return write!(f, "{m}"),
        Expr::Not(inner) => {
            f.write_str("!")?;
            return write_expr(f, inner, 3);
        }
        Expr::Or(a, b) => (1, a, " || ", b),
        Expr::And(a, b) => (2, a, " && ", b),
    };
    if outer > prec {
        f.write_str("(")?;
    }
    write_expr(f, left, prec)?;
    f.write_str(op)?;
    write_expr(f, right, prec + 1)?;
    if outer > prec {
        f.write_str(")")?;
    }
    Ok(())
}
