//! Host ownership: which repository may serve which host name (spec §6.3, docs/labels.md
//! "Multi-tenant rules").
//!
//! The model follows the Kubernetes Gateway API's conflict rule — the oldest claim wins — and
//! makes the claim durable:
//! - the hosts of network N's automatic routes (the host template with `{network_id}` = N)
//!   belong to N alone, always, whether or not N runs anything;
//! - an operator may grant host names or whole suffixes (`*.shop.example.com`) to network IDs
//!   in the settings file; a granted name belongs to its grantee, and with `grants_only` every
//!   name that is not granted is refused;
//! - any other exact name belongs to the first repository that published a router for it. The
//!   claim is recorded in the state folder ([`HostTable`], `hosts.json`) and kept while the
//!   owner is down or redeploying and across route-server restarts, until an operator releases
//!   it (`renet claims release host NAME`);
//! - a `HostRegexp` (a [`HostScope::Suffix`]) is never claimed by being first: a repository may
//!   use one only inside a suffix the operator granted it, and never over another network's
//!   automatic routes.
//!
//! Pure: the route server loads and saves the table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::routing::rule::{HostScope, canonical_host};

/// One recorded claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostClaim {
    pub network_id: u32,
    /// Unix seconds of the claim (the claiming container's creation time).
    pub since: i64,
    /// The router that claimed it first (namespaced name), for operators.
    pub router: String,
}

/// The persisted claims, by canonical host name (sorted: deterministic file and output).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTable {
    pub hosts: BTreeMap<String, HostClaim>,
}

/// The operator's host policy (settings file, `routing.host_grants` and
/// `routing.grants_only`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// Canonical grants: exact names and suffixes, with their grantee.
    pub grants: Vec<(HostScope, u32)>,
    /// Refuse every name that no grant covers (automatic-route hosts stay allowed).
    pub grants_only: bool,
}

impl HostPolicy {
    /// Reads `{"2816": ["shop.example.com", "*.shop.example.com"], ...}`. A grant that is not
    /// a host name or `*.` + host name, or a key that is not a number, is an error naming it.
    pub fn from_grants(
        grants: &BTreeMap<String, Vec<String>>,
        grants_only: bool,
    ) -> Result<HostPolicy, String> {
        let mut out = Vec::new();
        for (network, names) in grants {
            let n: u32 = network
                .trim()
                .parse()
                .map_err(|_| format!("routing.host_grants: key `{network}` is not a network ID"))?;
            for name in names {
                let scope =
                    match name.strip_prefix("*.") {
                        Some(suffix) => HostScope::Suffix(canonical_host(suffix).map_err(|e| {
                            format!("routing.host_grants.{network}: `{name}`: {e}")
                        })?),
                        None => HostScope::Exact(canonical_host(name).map_err(|e| {
                            format!("routing.host_grants.{network}: `{name}`: {e}")
                        })?),
                    };
                out.push((scope, n));
            }
        }
        out.sort();
        Ok(HostPolicy {
            grants: out,
            grants_only,
        })
    }

    /// The grantee of the most specific grant covering `host` (an exact grant beats a suffix,
    /// a longer suffix beats a shorter one).
    fn grantee_of(&self, host: &str) -> Option<u32> {
        let mut best: Option<(usize, u32)> = None;
        for (scope, n) in &self.grants {
            let specificity = match scope {
                HostScope::Exact(h) if h == host => usize::MAX,
                HostScope::Suffix(s) if is_below(host, s) => s.len(),
                _ => continue,
            };
            if best.is_none_or(|(b, _)| specificity > b) {
                best = Some((specificity, *n));
            }
        }
        best.map(|(_, n)| n)
    }
}

/// Whether `host` is strictly below `suffix` (`a.b.c` is below `b.c`; `b.c` is not).
pub fn is_below(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len() + 1
        && host.ends_with(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

/// The hosts of automatic routes: the host template with its base domain filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoHosts {
    /// Template pieces: literal text and placeholders, base domain already substituted.
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `{service}`: what `host_label` makes of a service name, `[a-z0-9-]+`.
    Service,
    /// `{network_id}`: decimal digits.
    NetworkId,
}

impl AutoHosts {
    /// `None` when automatic routes are off (no base domain).
    pub fn new(template: &str, base_domain: Option<&str>, enabled: bool) -> Option<AutoHosts> {
        let domain = base_domain.filter(|_| enabled)?;
        let filled = template.replace("{base_domain}", &domain.to_ascii_lowercase());
        let mut pieces = Vec::new();
        let mut rest = filled.as_str();
        while !rest.is_empty() {
            let next = [
                ("{service}", Piece::Service),
                ("{network_id}", Piece::NetworkId),
            ]
            .into_iter()
            .filter_map(|(p, piece)| rest.find(p).map(|i| (i, p.len(), piece)))
            .min_by_key(|(i, _, _)| *i);
            match next {
                Some((i, len, piece)) => {
                    if i > 0 {
                        pieces.push(Piece::Literal(rest[..i].to_ascii_lowercase()));
                    }
                    pieces.push(piece);
                    rest = &rest[i + len..];
                }
                None => {
                    pieces.push(Piece::Literal(rest.to_ascii_lowercase()));
                    rest = "";
                }
            }
        }
        Some(AutoHosts { pieces })
    }

    /// The network whose automatic-route host `host` (canonical) could be, if any.
    pub fn network_of(&self, host: &str) -> Option<u32> {
        fn walk(pieces: &[Piece], s: &str, id: Option<u32>) -> Option<Option<u32>> {
            let Some((first, rest)) = pieces.split_first() else {
                return s.is_empty().then_some(id);
            };
            match first {
                Piece::Literal(l) => walk(rest, s.strip_prefix(l.as_str())?, id),
                Piece::Service | Piece::NetworkId => {
                    let ok = |b: u8| match first {
                        Piece::Service => b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
                        _ => b.is_ascii_digit(),
                    };
                    let run = s.bytes().take_while(|b| ok(*b)).count();
                    // Longest first; the template is short, so backtracking is cheap.
                    for len in (1..=run).rev() {
                        let here = if matches!(first, Piece::NetworkId) {
                            match s[..len].parse::<u32>() {
                                Ok(n) if s[..len] == n.to_string() => Some(n),
                                _ => continue,
                            }
                        } else {
                            id
                        };
                        if let Some(found) = walk(rest, &s[len..], here.or(id)) {
                            return Some(found);
                        }
                    }
                    None
                }
            }
        }
        walk(&self.pieces, host, None).flatten()
    }

    /// Whether some automatic-route host may lie strictly below `suffix`: the pieces after the
    /// last placeholder form the common tail of every automatic host.
    pub fn may_lie_below(&self, suffix: &str) -> bool {
        let tail: String = self
            .pieces
            .iter()
            .rev()
            .take_while(|p| matches!(p, Piece::Literal(_)))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|p| match p {
                Piece::Literal(l) => l.as_str(),
                _ => "",
            })
            .collect();
        let tail_domain = tail.trim_start_matches('.');
        if tail_domain.is_empty() {
            return true;
        }
        // Every automatic host ends with `.<tail_domain>`. A suffix at or above it covers them;
        // one below it covers them only when the placeholders may span several labels.
        if tail_domain == suffix || is_below(tail_domain, suffix) {
            return true;
        }
        let placeholders_span_labels = self
            .pieces
            .iter()
            .take(self.pieces.len().saturating_sub(1))
            .any(|p| matches!(p, Piece::Literal(l) if l.contains('.')));
        is_below(suffix, tail_domain) && placeholders_span_labels
    }
}

/// Why a scope cannot be had, and by whom it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub owner: Option<u32>,
}

/// Everything a judgement needs besides the claims table.
pub struct HostRules<'a> {
    pub policy: &'a HostPolicy,
    pub auto: Option<&'a AutoHosts>,
}

/// What a router of network `n` may do with `scope`: `Ok(Some(host))` — an exact name that
/// becomes `n`'s claim; `Ok(None)` — allowed with no claim to record; `Err` — refused.
pub fn judge(
    scope: &HostScope,
    n: u32,
    rules: &HostRules,
    table: &HostTable,
) -> Result<Option<String>, Refusal> {
    match judge_by_rules(scope, n, rules)? {
        None => Ok(None),
        Some(check) => judge_by_table(check, n, table),
    }
}

/// What remains of a judgement once the rules allowed a scope: the recorded claims decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCheck<'a> {
    /// An exact name no rule assigns: whoever claimed it first.
    Exact(&'a str),
    /// A granted suffix: no other network may hold a name below it.
    Suffix(&'a str),
}

/// The part of [`judge`] that reads only the rules (automatic-route hosts, grants), not the
/// claims table: `Ok(None)` — allowed, nothing to record; `Ok(Some(check))` — the table
/// decides. The rules do not change between builds, so a caller may keep this outcome for as
/// long as it keeps the scope.
pub fn judge_by_rules<'a>(
    scope: &'a HostScope,
    n: u32,
    rules: &HostRules,
) -> Result<Option<TableCheck<'a>>, Refusal> {
    let refuse = |reason: String, owner: Option<u32>| Err(Refusal { reason, owner });
    match scope {
        HostScope::Any => refuse(
            "HostSNI(`*`) is only allowed on a tcp-* entrypoint this repository holds".into(),
            None,
        ),
        HostScope::Exact(host) => {
            if let Some(m) = rules.auto.and_then(|a| a.network_of(host)) {
                return if m == n {
                    Ok(None)
                } else {
                    refuse(
                        format!(
                            "host `{host}` is an automatic-route host of network {m}; it belongs to that network alone"
                        ),
                        Some(m),
                    )
                };
            }
            match rules.policy.grantee_of(host) {
                Some(g) if g == n => Ok(None),
                Some(g) => refuse(
                    format!(
                        "host `{host}` is granted to network {g} by the operator (routing.host_grants)"
                    ),
                    Some(g),
                ),
                None if rules.policy.grants_only => refuse(
                    format!(
                        "host `{host}` is not granted to network {n}; this server only serves granted names (ask the operator to add it to routing.host_grants)"
                    ),
                    None,
                ),
                None => Ok(Some(TableCheck::Exact(host))),
            }
        }
        HostScope::Suffix(suffix) => {
            let granted = rules.policy.grants.iter().any(|(g, m)| {
                *m == n && matches!(g, HostScope::Suffix(s) if s == suffix || is_below(suffix, s))
            });
            if !granted {
                return refuse(
                    format!(
                        "a host pattern covering `*.{suffix}` needs an operator grant of that suffix (routing.host_grants: {{\"{n}\": [\"*.{suffix}\"]}}); use Host(...) for single names"
                    ),
                    None,
                );
            }
            if let Some(a) = rules.auto
                && a.may_lie_below(suffix)
            {
                return refuse(
                    format!(
                        "the pattern covering `*.{suffix}` could match other networks' automatic-route hosts"
                    ),
                    None,
                );
            }
            // Another network's more specific grant or recorded claim inside the suffix.
            if let Some((g, m)) = rules.policy.grants.iter().find(|(g, m)| {
                *m != n
                    && match g {
                        HostScope::Exact(h) => is_below(h, suffix),
                        HostScope::Suffix(s) => s == suffix || is_below(s, suffix),
                        HostScope::Any => false,
                    }
            }) {
                return refuse(
                    format!(
                        "the pattern covering `*.{suffix}` overlaps {g:?} granted to network {m}"
                    ),
                    Some(*m),
                );
            }
            Ok(Some(TableCheck::Suffix(suffix)))
        }
    }
}

/// The part of [`judge`] that reads the claims table.
pub fn judge_by_table(
    check: TableCheck,
    n: u32,
    table: &HostTable,
) -> Result<Option<String>, Refusal> {
    let refuse = |reason: String, owner: Option<u32>| Err(Refusal { reason, owner });
    match check {
        TableCheck::Exact(host) => match table.hosts.get(host) {
            Some(c) if c.network_id != n => refuse(
                format!(
                    "host `{host}` is held by network {} since its first claim (router `{}`); a claim is kept while its owner is down or redeploying, until an operator releases it (`renet claims release host {host}`)",
                    c.network_id, c.router
                ),
                Some(c.network_id),
            ),
            Some(_) => Ok(None),
            None => Ok(Some(host.to_string())),
        },
        TableCheck::Suffix(suffix) => {
            if let Some((h, c)) = table
                .hosts
                .iter()
                .find(|(h, c)| c.network_id != n && is_below(h, suffix))
            {
                return refuse(
                    format!(
                        "the pattern covering `*.{suffix}` overlaps host `{h}` held by network {}",
                        c.network_id
                    ),
                    Some(c.network_id),
                );
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(h: &str) -> HostScope {
        HostScope::Exact(h.into())
    }

    #[test]
    fn automatic_hosts_belong_to_their_network() {
        let a = AutoHosts::new(
            "{service}-{network_id}.{base_domain}",
            Some("Example.com"),
            true,
        )
        .unwrap();
        assert_eq!(a.network_of("app-2880.example.com"), Some(2880));
        assert_eq!(a.network_of("my-app-2-2816.example.com"), Some(2816));
        assert_eq!(a.network_of("app-02880.example.com"), None);
        assert_eq!(a.network_of("app.example.com"), None);
        assert_eq!(a.network_of("x.app-2880.example.com"), None);
        assert!(a.may_lie_below("example.com"));
        assert!(a.may_lie_below("com"));
        assert!(!a.may_lie_below("shop.example.com"));
        let b =
            AutoHosts::new("{service}.{network_id}.{base_domain}", Some("e.com"), true).unwrap();
        assert_eq!(b.network_of("db.2816.e.com"), Some(2816));
        assert!(b.may_lie_below("2816.e.com"));
        assert!(AutoHosts::new("{service}", None, true).is_none());
    }

    #[test]
    fn first_claim_then_held() {
        let policy = HostPolicy::default();
        let rules = HostRules {
            policy: &policy,
            auto: None,
        };
        let mut table = HostTable::default();
        assert_eq!(
            judge(&exact("shop.example.com"), 2816, &rules, &table),
            Ok(Some("shop.example.com".into()))
        );
        table.hosts.insert(
            "shop.example.com".into(),
            HostClaim {
                network_id: 2816,
                since: 1,
                router: "r-2816".into(),
            },
        );
        assert_eq!(
            judge(&exact("shop.example.com"), 2816, &rules, &table),
            Ok(None)
        );
        let e = judge(&exact("shop.example.com"), 2880, &rules, &table).unwrap_err();
        assert_eq!(e.owner, Some(2816));
        assert!(e.reason.contains("held by network 2816"), "{}", e.reason);
    }

    #[test]
    fn grants_and_suffixes() {
        let grants: BTreeMap<String, Vec<String>> = [
            ("2816".to_string(), vec!["*.shop.example.com".to_string()]),
            ("2880".to_string(), vec!["vip.shop.example.com".to_string()]),
        ]
        .into_iter()
        .collect();
        let policy = HostPolicy::from_grants(&grants, false).unwrap();
        let auto = AutoHosts::new(
            "{service}-{network_id}.{base_domain}",
            Some("example.com"),
            true,
        )
        .unwrap();
        let rules = HostRules {
            policy: &policy,
            auto: Some(&auto),
        };
        let table = HostTable::default();
        assert_eq!(
            judge(&exact("a.shop.example.com"), 2816, &rules, &table),
            Ok(None)
        );
        assert_eq!(
            judge(&exact("a.shop.example.com"), 2880, &rules, &table)
                .unwrap_err()
                .owner,
            Some(2816)
        );
        // The more specific grant wins.
        assert_eq!(
            judge(&exact("vip.shop.example.com"), 2880, &rules, &table),
            Ok(None)
        );
        let suffix = HostScope::Suffix("shop.example.com".into());
        let e = judge(&suffix, 2816, &rules, &table).unwrap_err();
        assert!(e.reason.contains("network 2880"), "{}", e.reason);
        let sub = HostScope::Suffix("eu.shop.example.com".into());
        assert_eq!(judge(&sub, 2816, &rules, &table), Ok(None));
        assert!(judge(&sub, 2944, &rules, &table).is_err());
        let wide = HostScope::Suffix("example.com".into());
        assert!(judge(&wide, 2816, &rules, &table).is_err());
        // Another network's automatic host is never taken, grant or not.
        assert_eq!(
            judge(&exact("app-2880.example.com"), 2816, &rules, &table)
                .unwrap_err()
                .owner,
            Some(2880)
        );
        assert!(
            HostPolicy::from_grants(
                &[("x".to_string(), vec!["a.com".to_string()])]
                    .into_iter()
                    .collect(),
                false
            )
            .is_err()
        );
        let only = HostPolicy {
            grants_only: true,
            ..policy.clone()
        };
        let rules = HostRules {
            policy: &only,
            auto: Some(&auto),
        };
        assert!(judge(&exact("free.example.org"), 2816, &rules, &table).is_err());
        assert_eq!(
            judge(&exact("app-2816.example.com"), 2816, &rules, &table),
            Ok(None)
        );
    }
}
