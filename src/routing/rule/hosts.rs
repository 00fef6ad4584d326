//! Which host names a parsed rule can match: canonical host names, and the host scopes of a
//! rule computed over its disjunctive normal form.

use std::collections::{BTreeSet, HashSet};

use super::matchers::{self, Kind};
use super::regex::regexp_scopes;
use super::{Expr, HostScope, Matcher, Protocol};

/// Most `||` branches a rule may have once `&&` and `!` are distributed.
pub const MAX_BRANCHES: usize = 256;
/// Deepest expression [`host_scopes`] walks (parse output stays far below it).
const MAX_WALK_DEPTH: usize = 1024;

/// Lower case, one trailing dot removed, IDNA to ASCII (punycode) for non-ASCII names, then
/// checked as a DNS name: labels of 1 to 63 characters from `[a-z0-9-_]`, 253 at most in all.
pub fn canonical_host(name: &str) -> Result<String, String> {
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name)
            .map_err(|_| format!("`{name}` is not a valid internationalised domain name"))?
    };
    let host = ascii.strip_suffix('.').unwrap_or(&ascii);
    check_dns_name(host).map_err(|problem| format!("`{name}` is not a host name: {problem}"))?;
    Ok(host.to_string())
}

fn check_dns_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("it is empty".into());
    }
    if host.len() > 253 {
        return Err(format!("it is {} characters long, above 253", host.len()));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (`..`, or a dot at the start)".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "character {bad:?} is not allowed (only a-z, 0-9, `-` and `_`)"
            ));
        }
    }
    Ok(())
}

/// One matcher of a DNF branch, possibly negated.
#[derive(Clone, Copy)]
struct Literal<'e> {
    positive: bool,
    matcher: &'e Matcher,
}

type Branches<'e> = Vec<Vec<Literal<'e>>>;

/// See [`super::host_scopes`].
pub fn host_scopes(expr: &Expr, protocol: Protocol) -> Result<BTreeSet<HostScope>, String> {
    let branches = dnf(expr, false, 0)?;
    let mut scopes = BTreeSet::new();
    // A matcher shared by many branches (`H && (a || b) && ...`) is judged once.
    let mut judged: HashSet<*const Matcher> = HashSet::new();
    for branch in &branches {
        let hosts: Vec<&Matcher> = branch
            .iter()
            .filter(|l| l.positive && matchers::kind_of(&l.matcher.name, protocol) != Kind::Other)
            .map(|l| l.matcher)
            .collect();
        if hosts.is_empty() {
            return Err(unconfined(branch, branches.len(), protocol));
        }
        for matcher in hosts {
            if judged.insert(matcher) {
                scopes.extend(matcher_scopes(matcher, protocol)?);
            }
        }
    }
    Ok(scopes)
}

fn unconfined(branch: &[Literal], branch_count: usize, protocol: Protocol) -> String {
    let host = match protocol {
        Protocol::Http => "Host(...)",
        Protocol::Tcp => "HostSNI(...)",
    };
    let text = branch
        .iter()
        .map(|l| format!("{}{}", if l.positive { "" } else { "!" }, l.matcher))
        .collect::<Vec<_>>()
        .join(" && ");
    if branch_count == 1 {
        format!(
            "rule `{text}` is not confined to a host name: it needs a {host} matcher that is \
             not under `!`"
        )
    } else {
        format!(
            "branch `{text}` is not confined to a host name: every `||` branch needs its own \
             {host}"
        )
    }
}

/// The disjunctive normal form of `expr` (negated when `negated`), bounded.
fn dnf(expr: &Expr, negated: bool, depth: usize) -> Result<Branches<'_>, String> {
    if depth > MAX_WALK_DEPTH {
        return Err(format!(
            "the rule nests deeper than {MAX_WALK_DEPTH} levels"
        ));
    }
    match expr {
        Expr::Matcher(matcher) => Ok(vec![vec![Literal {
            positive: !negated,
            matcher,
        }]]),
        Expr::Not(inner) => dnf(inner, !negated, depth + 1),
        Expr::And(a, b) | Expr::Or(a, b) => {
            let left = dnf(a, negated, depth + 1)?;
            let right = dnf(b, negated, depth + 1)?;
            // De Morgan: under `!`, `&&` becomes `||` and the other way round.
            if matches!(expr, Expr::And(..)) != negated {
                conjunction(left, right)
            } else {
                disjunction(left, right)
            }
        }
    }
}

fn too_many_branches() -> String {
    format!(
        "the rule expands to more than {MAX_BRANCHES} `||` branches once `&&` and `!` are \
         distributed; simplify it"
    )
}

fn disjunction<'e>(mut left: Branches<'e>, right: Branches<'e>) -> Result<Branches<'e>, String> {
    if left.len() + right.len() > MAX_BRANCHES {
        return Err(too_many_branches());
    }
    left.extend(right);
    Ok(left)
}

fn conjunction<'e>(left: Branches<'e>, right: Branches<'e>) -> Result<Branches<'e>, String> {
    if left.len().saturating_mul(right.len()) > MAX_BRANCHES {
        return Err(too_many_branches());
    }
    Ok(left
        .iter()
        .flat_map(|l| {
            right.iter().map(move |r| {
                let mut branch = l.clone();
                branch.extend_from_slice(r);
                branch
            })
        })
        .collect())
}

/// The scopes one positive host matcher confines its branch to.
fn matcher_scopes(matcher: &Matcher, protocol: Protocol) -> Result<Vec<HostScope>, String> {
    match matchers::kind_of(&matcher.name, protocol) {
        Kind::HostName => matcher
            .args
            .iter()
            .map(|arg| host_name_scope(&matcher.name, arg, protocol))
            .collect(),
        Kind::HostRegexp => {
            let mut scopes = Vec::new();
            for arg in &matcher.args {
                scopes.extend(
                    regexp_scopes(arg).map_err(|e| format!("{}: regexp {e}", matcher.name))?,
                );
            }
            Ok(scopes)
        }
        Kind::Other => Ok(Vec::new()),
    }
}

/// The scope of one `Host`/`HostHeader`/`HostSNI` argument. `*` alone matches every name
/// (allowed only as TCP `HostSNI`); `*.domain` matches names one label below `domain` (a
/// subset of [`HostScope::Suffix`]).
fn host_name_scope(name: &str, arg: &str, protocol: Protocol) -> Result<HostScope, String> {
    if arg == "*" {
        return match protocol {
            Protocol::Tcp => Ok(HostScope::Any),
            Protocol::Http => Err(format!(
                "{name}(`*`) matches every host name; name the hosts instead"
            )),
        };
    }
    if !arg.is_ascii() {
        let hint = canonical_host(arg)
            .map(|c| format!("; write it as `{c}`"))
            .unwrap_or_default();
        return Err(format!(
            "{name}(`{arg}`): Traefik refuses non-ASCII host names{hint}"
        ));
    }
    let scope = match arg.strip_prefix("*.") {
        Some(domain) => canonical_host(domain).map(HostScope::Suffix),
        None => canonical_host(arg).map(HostScope::Exact),
    };
    scope.map_err(|e| format!("{name}(`{arg}`): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_hosts() {
        let ok = [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("_acme-challenge.example.com", "_acme-challenge.example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example.", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("localhost", "localhost"),
        ];
        for (input, want) in ok {
            assert_eq!(canonical_host(input).as_deref(), Ok(want), "{input}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}a", "abcdefghi.".repeat(26));
        let bad = [
            ("", "empty"),
            (".", "empty"),
            ("example.com..", "empty label"),
            (".example.com", "empty label"),
            ("a..b", "empty label"),
            ("*.example.com", "'*'"),
            ("example.com:8080", "':'"),
            ("exa mple.com", "' '"),
            ("exa\0mple.com", "not allowed"),
            (long_label.as_str(), "longer than 63"),
            (long_name.as_str(), "above 253"),
        ];
        for (input, want) in bad {
            let err = canonical_host(input).expect_err(input);
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
