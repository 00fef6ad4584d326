//! TCP/UDP port allocation for `rediacc.tcp_ports` / `rediacc.udp_ports` and for the
//! entrypoints `traefik.tcp` / `traefik.udp` label routers name (spec §6.4): which public port
//! (Traefik entrypoint `tcp-<port>` / `udp-<port>`) belongs to which repository. Pure: the
//! table is persisted by the route server.
//!
//! Rules (also in docs/labels.md, "Multi-tenant rules"):
//! - An allocation is keyed by (protocol, network ID, service, target, preferred port). Once
//!   made it keeps its port across builds and restarts while its entrypoint exists.
//! - **A port held by a repository is never handed to another one**, whether or not the
//!   holder's containers run right now: a repository that is redeploying or down keeps its
//!   public ports, so nobody can catch its clients in the meantime. Only an operator releases
//!   a port (`renet claims release`). Within one repository, a port held by a key nobody asks
//!   for any more (a renamed service) passes to the key that asks for it now.
//! - A preferred (published) port is used when its entrypoint exists and it is free or held by
//!   the same repository; otherwise TCP falls back to the dynamic range. UDP has no dynamic
//!   range, so a UDP port that cannot be had is reported, not forwarded.
//! - The dynamic range is shared: each repository holds at most `dynamic_quota` of its ports.
//!   What a repository cannot get is reported, never taken from another.
//! - A label router's entrypoint is an [`ENTRYPOINT_CLAIM`] request: it gets exactly that port
//!   or nothing.
//! - Requests are granted in the order given (the caller orders them oldest container first),
//!   so the first repository to ask wins, and the whole round is linear in the number of
//!   requests plus the size of the dynamic range.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The `service` of a request made by a `traefik.tcp`/`traefik.udp` router's entrypoint rather
/// than by `rediacc.tcp_ports`: the repository holds the port itself, with no forward.
pub const ENTRYPOINT_CLAIM: &str = "@entrypoint";

/// One allocation: a public port (its entrypoint) held by one repo's service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortAllocation {
    /// "tcp" or "udp"
    pub protocol: String,
    pub port: u16,
    pub entrypoint: String,
    pub network_id: u32,
    pub service: String,
    pub target: u16,
    /// The published port asked for (`PUBLISHED:TARGET`, or `PORT`); 0 when none was
    /// (`0:TARGET`). Part of the key, so `8080:80` and `8081:80` are two allocations.
    #[serde(default)]
    pub preferred: u16,
}

impl PortAllocation {
    fn key(&self) -> RequestKey {
        RequestKey {
            protocol: self.protocol.clone(),
            network_id: self.network_id,
            service: self.service.clone(),
            target: self.target,
            preferred: self.preferred,
        }
    }
}

/// The persisted allocation table, sorted for deterministic output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortTable {
    pub allocations: Vec<PortAllocation>,
}

impl PortTable {
    /// The allocation holding `port` of `protocol`, if any.
    pub fn holder(&self, protocol: &str, port: u16) -> Option<&PortAllocation> {
        self.allocations
            .iter()
            .find(|a| a.protocol == protocol && a.port == port)
    }

    /// Removes every allocation of `protocol`/`port`; returns how many there were.
    pub fn release(&mut self, protocol: &str, port: u16) -> usize {
        let before = self.allocations.len();
        self.allocations
            .retain(|a| !(a.protocol == protocol && a.port == port));
        before - self.allocations.len()
    }
}

/// What a container asks for: forward a public port to `target` on its service IP (or, with
/// [`ENTRYPOINT_CLAIM`], hold the port for a label router).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// "tcp" or "udp"
    pub protocol: String,
    pub network_id: u32,
    pub service: String,
    pub target: u16,
    /// 0 = no preference: take one from the dynamic range.
    pub preferred: u16,
}

impl RequestKey {
    fn is_claim(&self) -> bool {
        self.service == ENTRYPOINT_CLAIM
    }
}

/// Which ports exist and how much of the dynamic range one repository may hold.
#[derive(Debug, Clone, Default)]
pub struct PortLimits {
    pub tcp_entrypoint_ports: BTreeSet<u16>,
    pub udp_entrypoint_ports: BTreeSet<u16>,
    /// First and last port of the dynamic TCP range.
    pub dynamic_range: (u16, u16),
    /// Ports of the dynamic range one repository may hold at most.
    pub dynamic_quota: usize,
}

/// The outcome of one allocation round.
#[derive(Debug, Clone, Default)]
pub struct Allocation {
    pub table: PortTable,
    /// The port granted to each request.
    pub granted: BTreeMap<RequestKey, u16>,
    /// Requests that got no port, with the reason.
    pub refused: Vec<(RequestKey, String)>,
    /// Requests that did not get their preferred port, with the reason (they got another).
    pub moved: Vec<(RequestKey, String)>,
}

fn entrypoint(protocol: &str, port: u16) -> String {
    format!("{protocol}-{port}")
}

/// The table being worked on, indexed both ways so every step is O(1).
struct Book<'a> {
    by_port: BTreeMap<(String, u16), PortAllocation>,
    by_key: HashMap<RequestKey, u16>,
    /// Dynamic-range ports held per network.
    dynamic_held: HashMap<u32, usize>,
    limits: &'a PortLimits,
}

impl<'a> Book<'a> {
    fn new(previous: &PortTable, limits: &'a PortLimits) -> Book<'a> {
        let mut book = Book {
            by_port: BTreeMap::new(),
            by_key: HashMap::new(),
            dynamic_held: HashMap::new(),
            limits,
        };
        let mut sorted = previous.allocations.clone();
        sorted.sort();
        for a in sorted {
            let taken = book.by_key.contains_key(&a.key())
                || book.by_port.contains_key(&(a.protocol.clone(), a.port));
            if !taken && book.exists(&a.protocol, a.port) {
                book.insert(a);
            }
        }
        book
    }

    fn exists(&self, protocol: &str, port: u16) -> bool {
        match protocol {
            "tcp" => self.limits.tcp_entrypoint_ports.contains(&port),
            "udp" => self.limits.udp_entrypoint_ports.contains(&port),
            _ => false,
        }
    }

    fn is_dynamic(&self, protocol: &str, port: u16) -> bool {
        let (lo, hi) = self.limits.dynamic_range;
        protocol == "tcp" && (lo..=hi).contains(&port)
    }

    fn insert(&mut self, a: PortAllocation) {
        if self.is_dynamic(&a.protocol, a.port) {
            *self.dynamic_held.entry(a.network_id).or_default() += 1;
        }
        self.by_key.insert(a.key(), a.port);
        self.by_port.insert((a.protocol.clone(), a.port), a);
    }

    fn remove(&mut self, protocol: &str, port: u16) {
        if let Some(a) = self.by_port.remove(&(protocol.to_string(), port)) {
            self.by_key.remove(&a.key());
            if self.is_dynamic(protocol, port)
                && let Some(n) = self.dynamic_held.get_mut(&a.network_id)
            {
                *n -= 1;
            }
        }
    }

    fn holder(&self, protocol: &str, port: u16) -> Option<&PortAllocation> {
        self.by_port.get(&(protocol.to_string(), port))
    }

    fn grant(&mut self, req: &RequestKey, port: u16, out: &mut Allocation) {
        self.insert(PortAllocation {
            protocol: req.protocol.clone(),
            port,
            entrypoint: entrypoint(&req.protocol, port),
            network_id: req.network_id,
            service: req.service.clone(),
            target: req.target,
            preferred: req.preferred,
        });
        out.granted.insert(req.clone(), port);
    }
}

/// Why `req` cannot have port `p`, or `None` when it can (taking over a stale allocation of
/// its own repository if needed).
fn why_not(
    book: &Book,
    requested: &HashSet<&RequestKey>,
    req: &RequestKey,
    p: u16,
) -> Option<String> {
    if !book.exists(&req.protocol, p) {
        return Some(format!(
            "port {p} has no entrypoint `{}` (the operator registers ports in the settings file)",
            entrypoint(&req.protocol, p)
        ));
    }
    if let Some(h) = book.holder(&req.protocol, p)
        && h.key() != *req
    {
        if h.network_id != req.network_id {
            let what = if h.service == ENTRYPOINT_CLAIM {
                "a label router".to_string()
            } else {
                format!("service `{}`", h.service)
            };
            return Some(format!(
                "port {p} is held by network {} ({what}); a held port stays with its \
                 repository, also while it is down or redeploying",
                h.network_id
            ));
        }
        if requested.contains(&h.key()) {
            return Some(format!(
                "port {p} is used by this repository's service `{}`",
                h.service
            ));
        }
    }
    if book.is_dynamic(&req.protocol, p) && over_quota(book, req, p) {
        return Some(quota_reason(book));
    }
    None
}

/// Whether taking dynamic port `p` would put the requester's repository over its quota.
fn over_quota(book: &Book, req: &RequestKey, p: u16) -> bool {
    let held = book.dynamic_held.get(&req.network_id).copied().unwrap_or(0);
    let replaces_own = book
        .holder(&req.protocol, p)
        .is_some_and(|h| h.network_id == req.network_id);
    !replaces_own && held >= book.limits.dynamic_quota
}

fn quota_reason(book: &Book) -> String {
    let (lo, hi) = book.limits.dynamic_range;
    format!(
        "the repository already holds its quota of {} ports of the dynamic range {lo}-{hi} \
         (settings: routing.dynamic_port_quota)",
        book.limits.dynamic_quota
    )
}

/// Allocates ports for `requests` (granted in the order given), starting from `previous`.
pub fn allocate(previous: &PortTable, requests: &[RequestKey], limits: &PortLimits) -> Allocation {
    let mut seen = HashSet::new();
    let requests: Vec<&RequestKey> = requests.iter().filter(|r| seen.insert(*r)).collect();
    let requested: HashSet<&RequestKey> = requests.iter().copied().collect();
    let mut book = Book::new(previous, limits);
    let mut out = Allocation::default();
    for req in &requests {
        if let Some(&p) = book.by_key.get(*req) {
            out.granted.insert((*req).clone(), p);
        }
    }
    let (lo, _) = limits.dynamic_range;
    // Ports below this one in the dynamic range are known to be taken: one pass over the range
    // for the whole round.
    let mut cursor = lo;
    for req in requests {
        if out.granted.contains_key(req) {
            continue;
        }
        let mut why_not_preferred = None;
        if req.preferred != 0 {
            let p = req.preferred;
            match why_not(&book, &requested, req, p) {
                None => {
                    book.remove(&req.protocol, p);
                    book.grant(req, p, &mut out);
                    continue;
                }
                Some(why) => why_not_preferred = Some(why),
            }
        }
        if req.is_claim() || req.protocol != "tcp" {
            let tail = if req.is_claim() {
                "the router is not published"
            } else {
                "UDP has no dynamic range, so nothing is forwarded"
            };
            out.refused.push((
                req.clone(),
                format!(
                    "{}; {tail}",
                    why_not_preferred.unwrap_or_else(|| "no published port given".to_string())
                ),
            ));
            continue;
        }
        let port = dynamic_port(&mut book, &requested, req, &mut cursor);
        match port {
            Ok(p) => {
                if let Some(why) = why_not_preferred {
                    out.moved
                        .push((req.clone(), format!("{why}; got {p} instead")));
                }
                book.grant(req, p, &mut out);
            }
            Err(why) => out.refused.push((
                req.clone(),
                format!(
                    "{}{why}",
                    why_not_preferred
                        .map(|w| format!("{w}, and "))
                        .unwrap_or_default()
                ),
            )),
        }
    }
    out.table = PortTable {
        allocations: book.by_port.into_values().collect(),
    };
    out.table.allocations.sort();
    out
}

/// A port of the dynamic range for `req`: a free one within the quota, else one of the
/// repository's own stale allocations.
fn dynamic_port(
    book: &mut Book,
    requested: &HashSet<&RequestKey>,
    req: &RequestKey,
    cursor: &mut u16,
) -> Result<u16, String> {
    let (lo, hi) = book.limits.dynamic_range;
    let held = book.dynamic_held.get(&req.network_id).copied().unwrap_or(0);
    if held < book.limits.dynamic_quota {
        while *cursor <= hi && *cursor >= lo {
            let p = *cursor;
            if book.exists("tcp", p) && book.holder("tcp", p).is_none() {
                return Ok(p);
            }
            if p == u16::MAX {
                break;
            }
            *cursor += 1;
        }
    }
    // Quota reached or range full: reuse a stale port of the same repository (a service
    // renamed or removed), never one of another repository.
    let stale = book
        .by_port
        .range(("tcp".to_string(), lo)..=("tcp".to_string(), hi))
        .find(|(_, a)| a.network_id == req.network_id && !requested.contains(&a.key()))
        .map(|((_, p), _)| *p);
    if let Some(p) = stale {
        book.remove("tcp", p);
        return Ok(p);
    }
    if held >= book.limits.dynamic_quota {
        Err(quota_reason(book))
    } else {
        Err(format!("the dynamic TCP range {lo}-{hi} is full"))
    }
}

/// One entry of `rediacc.tcp_ports` / `rediacc.udp_ports`: `PORT`, `PUBLISHED:TARGET`, or
/// `0:TARGET` (no published port: one from the dynamic range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortSpec {
    /// 0 = none.
    pub published: u16,
    pub target: u16,
}

/// Parses a `rediacc.tcp_ports` / `rediacc.udp_ports` value. The error names the entry.
pub fn parse_port_list(value: &str) -> Result<Vec<PortSpec>, String> {
    let port = |s: &str, zero_ok: bool| -> Result<u16, String> {
        let s = s.trim();
        match s.parse::<u16>() {
            Ok(0) if zero_ok => Ok(0),
            Ok(p) if p > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
            _ => Err(format!("`{s}` is not a port (1-65535)")),
        }
    };
    let mut out = Vec::new();
    for entry in value.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(format!(
                "empty entry in `{value}` (expected PORT, PUBLISHED:TARGET or 0:TARGET, comma separated)"
            ));
        }
        let spec = match entry.split_once(':') {
            None => {
                let p = port(entry, false).map_err(|e| format!("entry `{entry}`: {e}"))?;
                PortSpec {
                    published: p,
                    target: p,
                }
            }
            Some((published, target)) => PortSpec {
                published: port(published, true).map_err(|e| format!("entry `{entry}`: {e}"))?,
                target: port(target, false).map_err(|e| format!("entry `{entry}`: {e}"))?,
            },
        };
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(n: u32, service: &str, target: u16, preferred: u16) -> RequestKey {
        RequestKey {
            protocol: "tcp".into(),
            network_id: n,
            service: service.into(),
            target,
            preferred,
        }
    }

    fn limits(quota: usize) -> PortLimits {
        PortLimits {
            tcp_entrypoint_ports: [5432].into_iter().chain(10000..=10003).collect(),
            udp_entrypoint_ports: BTreeSet::new(),
            dynamic_range: (10000, 10003),
            dynamic_quota: quota,
        }
    }

    #[test]
    fn a_held_port_never_passes_to_another_repository() {
        let first = allocate(
            &PortTable::default(),
            &[req(2816, "db", 5432, 5432)],
            &limits(2),
        );
        // 2816 is down (no request); 2880 asks for 5432 and for more than the whole range.
        let mut asks = vec![req(2880, "db", 5432, 5432)];
        asks.extend((1..=6).map(|t| req(2880, &format!("s{t}"), t, 0)));
        let second = allocate(&first.table, &asks, &limits(8));
        assert_eq!(second.table.holder("tcp", 5432).unwrap().network_id, 2816);
        assert_eq!(
            second.granted[&asks[0]], 10000,
            "moved to the dynamic range"
        );
        assert!(second.moved[0].1.contains("held by network 2816"));
        assert_eq!(
            second.table.allocations.len(),
            5,
            "5432 + the four dynamic ports"
        );
        assert!(
            second
                .refused
                .iter()
                .all(|(_, why)| why.contains("is full"))
        );
    }

    #[test]
    fn the_dynamic_range_has_a_quota_per_repository() {
        let asks: Vec<RequestKey> = (1..=3)
            .map(|t| req(2880, &format!("s{t}"), t, 0))
            .chain([req(2816, "web", 80, 0)])
            .collect();
        let a = allocate(&PortTable::default(), &asks, &limits(2));
        assert_eq!(a.granted.len(), 3);
        assert!(a.granted.contains_key(&asks[3]), "2816 still gets a port");
        assert!(a.refused[0].1.contains("quota of 2"), "{:?}", a.refused);
        // A renamed service takes over its own repository's stale port once at the quota.
        let renamed = vec![req(2880, "s1", 1, 0), req(2880, "renamed", 2, 0)];
        let b = allocate(&a.table, &renamed, &limits(2));
        assert_eq!(b.granted[&renamed[1]], a.granted[&asks[1]]);
    }

    #[test]
    fn entrypoint_claims_get_their_port_or_nothing() {
        let claim = |n| RequestKey {
            protocol: "tcp".into(),
            network_id: n,
            service: ENTRYPOINT_CLAIM.into(),
            target: 0,
            preferred: 5432,
        };
        let a = allocate(
            &PortTable::default(),
            &[claim(2816), claim(2880)],
            &limits(2),
        );
        assert_eq!(a.granted.len(), 1);
        assert!(a.refused[0].1.contains("router is not published"));
        assert_eq!(a.table.allocations.len(), 1);
    }

    #[test]
    fn every_port_asked_for_gets_a_quota_and_reasons() {
        // 65,535 requests of one repository (compose's `1-65535`): the quota, the rest refused
        // with a reason each. (The route server bounds a container's requests before this.)
        let asks: Vec<RequestKey> = (1..=65535).map(|t| req(2816, "all", t, 0)).collect();
        let a = allocate(&PortTable::default(), &asks, &limits(4));
        assert_eq!(a.granted.len(), 4);
        assert_eq!(a.refused.len(), 65531);
    }

    #[test]
    fn port_lists() {
        let spec = |published, target| PortSpec { published, target };
        let ok: &[(&str, &[PortSpec])] = &[
            ("5432", &[spec(5432, 5432)]),
            ("8080:80", &[spec(8080, 80)]),
            ("0:80", &[spec(0, 80)]),
            (" 25 , 993:1993 ", &[spec(25, 25), spec(993, 1993)]),
        ];
        for (input, want) in ok {
            assert_eq!(parse_port_list(input).unwrap(), *want, "{input}");
        }
        let bad = [
            ("", "empty entry"),
            ("80,", "empty entry"),
            ("0", "`0` is not a port"),
            ("80:0", "`0` is not a port"),
            ("70000", "`70000`"),
            ("http", "`http`"),
            ("+80", "`+80`"),
            ("53/udp", "`53/udp`"),
        ];
        for (input, want) in bad {
            let e = parse_port_list(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
