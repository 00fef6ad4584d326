//! Test-only evaluator of a rule's host matchers with Traefik's semantics (see the module doc
//! of [`super`]), used to check that [`super::host_scopes`] is sound: every host a rule can
//! match lies in one of its scopes.

use std::collections::HashMap;

use super::matchers::{self, Kind};
use super::{Expr, HostScope, Matcher, Protocol};

pub(super) struct Evaluator {
    protocol: Protocol,
    regexps: HashMap<String, Option<regex::Regex>>,
}

impl Evaluator {
    pub fn new(protocol: Protocol) -> Self {
        Evaluator {
            protocol,
            regexps: HashMap::new(),
        }
    }

    /// Whether `expr` matches a request for `host` (as the client sent it, without port)
    /// when the `n`th non-host matcher met (in evaluation order) is `others(n)`.
    pub fn matches(&mut self, expr: &Expr, host: &str, others: &mut dyn FnMut() -> bool) -> bool {
        match expr {
            Expr::Matcher(m) => match matchers::kind_of(&m.name, self.protocol) {
                Kind::Other => others(),
                Kind::HostName => m.args.iter().any(|a| self.host_name(a, host)),
                Kind::HostRegexp => m.args.iter().any(|a| self.host_regexp(a, host)),
            },
            Expr::Not(inner) => !self.matches(inner, host, others),
            // Both sides always run so the `others` sequence does not depend on short-cuts.
            Expr::And(a, b) => {
                let (a, b) = (self.matches(a, host, others), self.matches(b, host, others));
                a && b
            }
            Expr::Or(a, b) => {
                let (a, b) = (self.matches(a, host, others), self.matches(b, host, others));
                a || b
            }
        }
    }

    /// `Host` (v3 `host`) / `HostSNI` (v3 `hostSNI`).
    fn host_name(&self, arg: &str, host: &str) -> bool {
        if arg == "*" {
            return true;
        }
        let request = host.trim().to_lowercase();
        let arg = arg.to_lowercase();
        match self.protocol {
            Protocol::Tcp => {
                !request.is_empty() && domain_match(&request, arg.strip_suffix('.').unwrap_or(&arg))
            }
            Protocol::Http => {
                if request.is_empty() {
                    return false;
                }
                domain_match(&request, &arg)
                    || arg
                        .strip_suffix('.')
                        .is_some_and(|a| domain_match(&request, a))
                    || request
                        .strip_suffix('.')
                        .is_some_and(|r| domain_match(r, &arg))
            }
        }
    }

    fn host_regexp(&mut self, pattern: &str, host: &str) -> bool {
        let request = host.trim().to_lowercase();
        let re = self
            .regexps
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok());
        re.as_ref().is_some_and(|re| re.is_match(&request))
    }
}

/// traefik `pkg/muxer/muxer.go` `DomainMatchHostExpression`.
fn domain_match(domain: &str, expr: &str) -> bool {
    if expr.starts_with('*') {
        let mut labels: Vec<&str> = domain.split('.').collect();
        labels[0] = "*";
        return labels.join(".").eq_ignore_ascii_case(expr);
    }
    domain.eq_ignore_ascii_case(expr)
}

/// Whether `host` (lower-cased, trailing dots removed) lies in one of `scopes`.
pub(super) fn in_scopes<'s>(host: &str, mut scopes: impl Iterator<Item = &'s HostScope>) -> bool {
    let host = host.trim().to_lowercase();
    let host = host.trim_end_matches('.');
    scopes.any(|scope| match scope {
        HostScope::Any => true,
        HostScope::Exact(name) => host == name,
        HostScope::Suffix(domain) => host.ends_with(&format!(".{domain}")),
    })
}

/// Test helper: a matcher.
pub(super) fn m(name: &str, args: &[&str]) -> Expr {
    Expr::Matcher(Matcher {
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    })
}
