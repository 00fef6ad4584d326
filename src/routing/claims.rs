//! Stage 3 of route building: what each repository may claim across the shared proxy.
//!
//! - **Hosts** ([`judge_hosts`]): every HTTP and TCP router's rule is parsed with Traefik's
//!   grammar (`rule`), every branch must be confined to host names, and every name (and every
//!   `tls.domains` entry) must be the repository's under the ownership rules (`ownership`).
//! - **Ports** ([`judge_ports`]): the entrypoints of `traefik.tcp`/`traefik.udp` routers and
//!   the `rediacc.tcp_ports`/`udp_ports` forwards are allocated together (`port_allocation`),
//!   oldest container first; a label router whose entrypoint is held by another repository is
//!   refused, a forward moves to the dynamic range or is reported.
//! - **Leftovers** ([`drop_orphans`]): a refused router leaves nothing of its own behind.
//!
//! Routers are judged oldest first (the creation time of the oldest container defining them),
//! so among new claims the first repository to ask wins; recorded claims win over new ones.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::addresses::NetworkId;
use crate::routing::build::{FORWARD_SUFFIX, RouteSettings};
use crate::routing::fragment::{Fragment, normalize, server_service};
use crate::routing::merge::{Obj, Origin, Owner, Proto, Published, Shared, add_object};
use crate::routing::ownership::{self, HostClaim, HostRules, HostTable};
use crate::routing::port_allocation::{self, ENTRYPOINT_CLAIM, PortLimits, PortTable, RequestKey};
use crate::routing::rule::{self, HostScope, Protocol};
use crate::routing::traefik_labels::Value;

/// A router taken out, and why (an entry of `/health`'s `refused`).
pub(crate) fn refusal(
    proto: Proto,
    name: &str,
    o: &Origin,
    rule: Option<&str>,
    reason: &str,
    owner: Option<u32>,
) -> serde_json::Value {
    let mut v = json!({
        "kind": format!("{} router", proto.as_str()),
        "network_id": o.network_id,
        "object": name,
        "containers": o.containers.iter().collect::<Vec<_>>(),
        "reason": reason,
    });
    if let Some(r) = rule {
        v["rule"] = r.into();
    }
    if let Some(owner) = owner {
        v["owner"] = owner.into();
    }
    v
}

/// Routers in the order their claims are judged: oldest claim first (the creation time of the
/// oldest container defining them), then network, protocol and name (deterministic). A route
/// builder keeps one up to date as repositories change ([`AgeOrder::add_part`],
/// [`AgeOrder::remove_part`]) instead of sorting every router on every build.
#[derive(Debug, Default)]
pub struct AgeOrder {
    routers: BTreeMap<(i64, NetworkId, Proto, String), Shared>,
}

impl AgeOrder {
    /// The order of every router of `published`.
    pub fn of(published: &Published) -> AgeOrder {
        let mut order = AgeOrder::default();
        order.add_part(published);
        order
    }

    /// Adds the routers of `part` (one repository's merge).
    pub fn add_part(&mut self, part: &Published) {
        for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
            for (name, router, o) in part.routers_with_origins(proto) {
                self.routers.insert(
                    (o.created, o.network_id, proto, name.clone()),
                    Shared::clone(router),
                );
            }
        }
    }

    /// Takes out the routers of `part` ([`AgeOrder::add_part`]).
    pub fn remove_part(&mut self, part: &Published) {
        for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
            for (name, _, o) in part.routers_with_origins(proto) {
                self.routers
                    .remove(&(o.created, o.network_id, proto, name.clone()));
            }
        }
    }

    /// How many routers it holds (tests: it forgets what is gone).
    pub fn len(&self) -> usize {
        self.routers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }

    /// The routers of `protos`, in order.
    fn of_protos<'a>(&'a self, protos: &'a [Proto]) -> impl Iterator<Item = Aged<'a>> {
        self.routers
            .iter()
            .filter(|((_, _, p, _), _)| protos.contains(p))
            .map(|((created, network_id, proto, name), router)| Aged {
                proto: *proto,
                name,
                router,
                network_id: *network_id,
                created: *created,
            })
    }
}

/// A router in the order of its claims.
struct Aged<'a> {
    proto: Proto,
    name: &'a String,
    router: &'a Shared,
    network_id: NetworkId,
    created: i64,
}

/// A router's scopes (sorted), or why it has none.
pub(crate) type Scopes = std::sync::Arc<Result<Vec<HostScope>, String>>;

/// A router's verdict when the rules alone decide it (every scope is an automatic-route host
/// of its own network, granted, or refused by the rules): `None` when the claims table must
/// be read.
type RulesVerdict = Option<Result<(), (String, Option<u32>)>>;

/// Parsed rules by router object, so a rebuild parses only the rules of new or changed
/// containers: a pointer comparison finds the routers a rebuild shares with the last one (the
/// entry holds the router, so its address cannot be reused meanwhile). Each entry keeps the
/// verdict of the rules when they alone decide. Entries not used by a build are dropped at
/// its end, so the cache follows the live routers. The rules are the builder's settings: a
/// builder starts over when they change.
#[derive(Debug, Default)]
pub struct ScopeCache {
    by_router: std::collections::HashMap<(Proto, usize, u32), ByRouter>,
}

#[derive(Debug)]
struct ByRouter {
    router: Shared,
    scopes: Scopes,
    verdict: RulesVerdict,
    used: bool,
}

impl ScopeCache {
    /// The host scopes of `router` (of network `n`), parsed once per router object.
    pub(crate) fn scopes_of(
        &mut self,
        proto: Proto,
        router: &Shared,
        n: u32,
        rules: &HostRules,
    ) -> Scopes {
        self.judged(proto, router, n, rules).0
    }

    /// The scopes of `router` (of network `n`) and, when the rules alone decide, its verdict.
    fn judged(
        &mut self,
        proto: Proto,
        router: &Shared,
        n: u32,
        rules: &HostRules,
    ) -> (Scopes, RulesVerdict) {
        let address = (proto, Shared::as_ptr(router) as usize, n);
        if let Some(e) = self.by_router.get_mut(&address)
            && Shared::ptr_eq(&e.router, router)
        {
            e.used = true;
            return (Scopes::clone(&e.scopes), e.verdict.clone());
        }
        let scopes = Scopes::new(router_scopes(proto, router).map(|s| s.into_iter().collect()));
        let verdict = rules_verdict(proto, &scopes, n, rules);
        self.by_router.insert(
            address,
            ByRouter {
                router: Shared::clone(router),
                scopes: Scopes::clone(&scopes),
                verdict: verdict.clone(),
                used: true,
            },
        );
        (scopes, verdict)
    }

    /// Drops the entries the last build did not use.
    fn sweep(&mut self) {
        self.by_router.retain(|_, e| std::mem::take(&mut e.used));
    }

    /// How many parsed rules the cache holds (tests: it forgets what is gone).
    pub fn len(&self) -> usize {
        self.by_router.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_router.is_empty()
    }
}

/// The verdict on a router's scopes when the rules alone decide it, judging the scopes in
/// order as [`judge_hosts`] does: it is the rules' only if no scope before the first refusal
/// needs the claims table.
fn rules_verdict(proto: Proto, scopes: &Scopes, n: u32, rules: &HostRules) -> RulesVerdict {
    let scopes = match scopes.as_ref() {
        Err(e) => return Some(Err((e.clone(), None))),
        Ok(scopes) => scopes,
    };
    for scope in scopes {
        if proto == Proto::Tcp && *scope == HostScope::Any {
            continue;
        }
        match ownership::judge_by_rules(scope, n, rules) {
            Ok(None) => {}
            Ok(Some(_)) => return None,
            Err(r) => return Some(Err((r.reason, r.owner))),
        }
    }
    Some(Ok(()))
}

/// The host scopes a router asks for: its rule's, plus its `tls.domains`.
fn router_scopes(proto: Proto, router: &Value) -> Result<BTreeSet<HostScope>, String> {
    let rule_text = router.get_str("rule").unwrap_or("");
    let syntax = rule::rule_syntax(router.get_str("ruleSyntax"))?;
    let protocol = if proto == Proto::Http {
        Protocol::Http
    } else {
        Protocol::Tcp
    };
    let expr = rule::parse(rule_text, protocol, syntax).map_err(|e| format!("rule: {e}"))?;
    let mut scopes = rule::host_scopes(&expr, protocol)?;
    if let Some(Value::List(domains)) = router.get("tls").and_then(|t| t.get("domains")) {
        for d in domains {
            let names = d
                .get_str("main")
                .map(str::to_string)
                .into_iter()
                .chain(d.get_list("sans"));
            for name in names {
                let scope = match name.strip_prefix("*.") {
                    Some(s) => HostScope::Suffix(
                        rule::canonical_host(s)
                            .map_err(|e| format!("tls.domains `{name}`: {e}"))?,
                    ),
                    None => HostScope::Exact(
                        rule::canonical_host(&name)
                            .map_err(|e| format!("tls.domains `{name}`: {e}"))?,
                    ),
                };
                scopes.insert(scope);
            }
        }
    }
    Ok(scopes)
}

/// Judges every HTTP and TCP router's hosts, in `order`; removes the refused ones. Returns the
/// claims table after this build (previous claims plus the new ones).
pub fn judge_hosts(
    published: &mut Published,
    order: &AgeOrder,
    settings: &RouteSettings,
    previous: &HostTable,
    cache: &mut ScopeCache,
    refused: &mut Vec<serde_json::Value>,
    removed: &mut Vec<(Proto, String, Shared)>,
) -> HostTable {
    let mut table = previous.clone();
    let rules = settings.host_rules();
    let mut refusals: Vec<(Proto, String, String, Option<u32>)> = Vec::new();
    for Aged {
        proto,
        name,
        router,
        network_id,
        created,
    } in order.of_protos(&[Proto::Http, Proto::Tcp])
    {
        let n = network_id.get();
        let (scopes, verdict) = cache.judged(proto, router, n, &rules);
        let verdict = match (verdict, scopes.as_ref()) {
            (Some(Ok(())), _) => Ok(Vec::new()),
            (Some(Err(e)), _) => Err(e),
            (None, Err(e)) => Err((e.clone(), None)),
            (None, Ok(scopes)) => judge_scopes(proto, scopes, n, &rules, &table),
        };
        match verdict {
            Ok(new_claims) => {
                for host in new_claims {
                    table.hosts.entry(host).or_insert(HostClaim {
                        network_id: n,
                        since: created,
                        router: name.clone(),
                    });
                }
            }
            Err((reason, owner)) => refusals.push((proto, name.clone(), reason, owner)),
        }
    }
    for (proto, name, reason, owner) in refusals {
        let o = published.origins[&(proto, Obj::Router, name.clone())].clone();
        if let Some(r) = published.section(proto).routers.remove(&name) {
            let rule_text = r.get_str("rule").unwrap_or("");
            refused.push(refusal(proto, &name, &o, Some(rule_text), &reason, owner));
            removed.push((proto, name, r));
        }
    }
    cache.sweep();
    table
}

/// Judges a router's scopes in order against the rules and the table: the new claims, or the
/// first refusal.
fn judge_scopes(
    proto: Proto,
    scopes: &[HostScope],
    n: u32,
    rules: &HostRules,
    table: &HostTable,
) -> Result<Vec<String>, (String, Option<u32>)> {
    let mut new_claims = Vec::new();
    for scope in scopes {
        // HostSNI(`*`) is judged with the entrypoint, which the repository must hold alone
        // (judge_ports).
        if proto == Proto::Tcp && *scope == HostScope::Any {
            continue;
        }
        match ownership::judge(scope, n, rules, table) {
            Ok(Some(host)) => new_claims.push(host),
            Ok(None) => {}
            Err(r) => return Err((r.reason, r.owner)),
        }
    }
    Ok(new_claims)
}

fn entrypoint_port(ep: &str, proto: &str) -> Option<u16> {
    ep.strip_prefix(proto)?.strip_prefix('-')?.parse().ok()
}

/// Allocates the label routers' entrypoints and the port forwards together, oldest first;
/// removes label routers that cannot have their entrypoint and adds the forward objects.
/// Returns the port table after this build.
#[allow(clippy::too_many_arguments)]
pub fn judge_ports(
    published: &mut Published,
    order: &AgeOrder,
    fragments: &[&Fragment],
    settings: &RouteSettings,
    previous: &PortTable,
    refused: &mut Vec<serde_json::Value>,
    conflicts: &mut Vec<serde_json::Value>,
    removed: &mut Vec<(Proto, String, Shared)>,
    forwards: &mut Vec<(Proto, String)>,
) -> PortTable {
    let limits = PortLimits {
        tcp_entrypoint_ports: settings.tcp_entrypoint_ports.clone(),
        udp_entrypoint_ports: settings.udp_entrypoint_ports.clone(),
        dynamic_range: settings.dynamic_range,
        dynamic_quota: settings.dynamic_port_quota,
    };
    // (age, network, order within) → request; the forward's fragment or the router's name.
    enum Asker<'a> {
        Router(Proto, String),
        Forward(&'a Fragment),
    }
    let mut asks: Vec<((i64, NetworkId, u8), RequestKey, Asker)> = Vec::new();
    for Aged {
        proto,
        name,
        router,
        network_id,
        created,
    } in order.of_protos(&[Proto::Tcp, Proto::Udp])
    {
        // Refused by its hosts already.
        if !published.section_ref(proto).routers.contains_key(name) {
            continue;
        }
        for ep in router.get_list("entryPoints") {
            if let Some(p) = entrypoint_port(&ep, proto.as_str()) {
                asks.push((
                    (created, network_id, 0),
                    RequestKey {
                        protocol: proto.as_str().into(),
                        network_id: network_id.get(),
                        service: ENTRYPOINT_CLAIM.into(),
                        target: 0,
                        preferred: p,
                    },
                    Asker::Router(proto, name.clone()),
                ));
            }
        }
    }
    for frag in fragments {
        for (proto, spec) in &frag.ports {
            asks.push((
                (frag.created, frag.network_id, 1),
                RequestKey {
                    protocol: proto.to_string(),
                    network_id: frag.network_id.get(),
                    service: frag.service.clone(),
                    target: spec.target,
                    preferred: spec.published,
                },
                Asker::Forward(frag),
            ));
        }
    }
    asks.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let keys: Vec<RequestKey> = asks.iter().map(|(_, k, _)| k.clone()).collect();
    let allocation = port_allocation::allocate(previous, &keys, &limits);
    let refused_keys: BTreeMap<&RequestKey, &String> =
        allocation.refused.iter().map(|(k, why)| (k, why)).collect();
    let moved_keys: BTreeMap<&RequestKey, &String> =
        allocation.moved.iter().map(|(k, why)| (k, why)).collect();

    let mut reported: BTreeSet<RequestKey> = BTreeSet::new();
    for (_, key, asker) in &asks {
        match asker {
            Asker::Router(proto, name) => {
                let Some(why) = refused_keys.get(key) else {
                    continue;
                };
                let Some(o) = published
                    .origins
                    .get(&(*proto, Obj::Router, name.clone()))
                    .cloned()
                else {
                    continue;
                };
                if let Some(r) = published.section(*proto).routers.remove(name) {
                    let (_, holder) = holder_of(&allocation.table, key);
                    refused.push(refusal(
                        *proto,
                        name,
                        &o,
                        None,
                        &format!("entrypoint `{}-{}`: {why}", key.protocol, key.preferred),
                        holder,
                    ));
                    removed.push((*proto, name.clone(), r));
                }
            }
            Asker::Forward(frag) => {
                let describe = |reason: &str| {
                    json!({
                        "kind": format!("{} port", key.protocol),
                        "network_id": key.network_id,
                        "service": key.service,
                        "target": key.target,
                        "preferred": key.preferred,
                        "containers": [frag.container],
                        "reason": reason,
                    })
                };
                if reported.insert(key.clone()) {
                    if let Some(why) = refused_keys.get(key) {
                        conflicts.push(describe(why));
                    }
                    if let Some(why) = moved_keys.get(key) {
                        conflicts.push(describe(why));
                    }
                }
                if let Some(&port) = allocation.granted.get(key) {
                    forwards.push(add_forward(published, frag, key, port));
                }
            }
        }
    }
    allocation.table
}

/// The allocation holding a refused claim's port, for the report.
fn holder_of(table: &PortTable, key: &RequestKey) -> (Option<String>, Option<u32>) {
    match table.holder(&key.protocol, key.preferred) {
        Some(a) if a.network_id != key.network_id => (Some(a.service.clone()), Some(a.network_id)),
        _ => (None, None),
    }
}

/// The router and service of one granted port forward; returns their protocol and name.
fn add_forward(
    published: &mut Published,
    frag: &Fragment,
    key: &RequestKey,
    port: u16,
) -> (Proto, String) {
    let proto = if key.protocol == "tcp" {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    let name = format!(
        "{}-{}-{}-{port}-{FORWARD_SUFFIX}",
        normalize(&frag.service),
        frag.network_id,
        key.protocol
    );
    let mut router = Value::empty_map();
    router.set(
        "entryPoints",
        Value::str_list([format!("{}-{port}", key.protocol)]),
    );
    if proto == Proto::Tcp {
        router.set("rule", Value::Str("HostSNI(`*`)".into()));
    }
    router.set("service", Value::Str(name.clone()));
    let service = server_service("address", format!("{}:{}", frag.service_ip, key.target));
    let owner = Owner {
        network_id: frag.network_id,
        container: &frag.container,
        tier: 1,
        created: frag.created,
    };
    let mut to_delete = BTreeSet::new();
    for (obj, value) in [(Obj::Router, router), (Obj::Service, service)] {
        add_object(
            published,
            &mut to_delete,
            (proto, obj, name.clone()),
            Shared::new(value),
            &owner,
        );
    }
    for (proto, obj, name) in to_delete {
        crate::routing::merge::section_map(published.section(proto), obj).remove(&name);
    }
    (proto, name)
}

/// Removes the services and middlewares that only refused routers used, so a refused router
/// leaves nothing of its own behind. Objects some surviving router (or middleware chain) still
/// uses stay; objects no refused router used are left alone (Traefik keeps unused services).
/// Returns the objects it removed.
pub fn drop_orphans(
    published: &mut Published,
    refused_routers: &[(Proto, String, Shared)],
) -> Vec<(Proto, Obj, String, Shared)> {
    let mut dropped = Vec::new();
    for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
        let mut candidates: BTreeSet<(Obj, String)> = BTreeSet::new();
        for (p, _, r) in refused_routers {
            if *p != proto {
                continue;
            }
            if let Some(s) = r.get_str("service") {
                candidates.insert((Obj::Service, s.to_string()));
            }
            let mut pending = r.get_list("middlewares");
            while let Some(m) = pending.pop() {
                if !candidates.insert((Obj::Middleware, m.clone())) {
                    continue;
                }
                if let Some(chain) = published
                    .section_ref(proto)
                    .middlewares
                    .get(&m)
                    .and_then(|v| v.get("chain"))
                {
                    pending.extend(chain.get_list("middlewares"));
                }
            }
        }
        if candidates.is_empty() {
            continue;
        }
        let section = published.section_ref(proto);
        let mut used: BTreeSet<(Obj, String)> = BTreeSet::new();
        let mut stack: Vec<(Obj, String)> = Vec::new();
        for r in section.routers.values() {
            if let Some(s) = r.get_str("service") {
                stack.push((Obj::Service, s.to_string()));
            }
            for m in r.get_list("middlewares") {
                stack.push((Obj::Middleware, m));
            }
        }
        while let Some(item) = stack.pop() {
            if !used.insert(item.clone()) {
                continue;
            }
            let (obj, name) = item;
            match obj {
                Obj::Middleware => {
                    if let Some(m) = section.middlewares.get(&name) {
                        if let Some(chain) = m.get("chain") {
                            stack.extend(
                                chain
                                    .get_list("middlewares")
                                    .into_iter()
                                    .map(|m| (Obj::Middleware, m)),
                            );
                        }
                        if let Some(s) = m.get("errors").and_then(|e| e.get_str("service")) {
                            stack.push((Obj::Service, s.to_string()));
                        }
                    }
                }
                Obj::Service => {
                    if let Some(s) = section.services.get(&name) {
                        stack.extend(
                            s.get_list("middlewares")
                                .into_iter()
                                .map(|m| (Obj::Middleware, m)),
                        );
                    }
                }
                Obj::Router => {}
            }
        }
        for (obj, name) in candidates {
            if !used.contains(&(obj, name.clone()))
                && let Some(v) =
                    crate::routing::merge::section_map(published.section(proto), obj).remove(&name)
            {
                dropped.push((proto, obj, name, v));
            }
        }
    }
    dropped
}
