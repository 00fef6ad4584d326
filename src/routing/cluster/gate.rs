//! Stage 3b of route building, in cluster mode only: a router that passed the local rules is
//! served only when this server holds every cluster resource it needs — its exact host names
//! and its `tcp-*`/`udp-*` ports — in etcd (docs/cluster.md). Routers waiting for a claim are
//! withheld and listed as pending; routers needing another network's resource are refused like
//! a local refusal. What the surviving and waiting routers need is handed to the agent, which
//! claims it (and releases what is no longer needed).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::routing::build::RouteSettings;
use crate::routing::claims::{ScopeCache, refusal};
use crate::routing::cluster::keys::Resource;
use crate::routing::cluster::view::{ClusterView, Verdict};
use crate::routing::merge::{Obj, Proto, Published, Shared};
use crate::routing::ownership::HostRules;
use crate::routing::rule::HostScope;

/// What the gate leaves for the agent and `/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateOutcome {
    /// Every resource a served or waiting router needs, with its network.
    pub wanted: BTreeMap<Resource, u32>,
    /// Routers withheld until a claim settles (`/health` `cluster.pending`).
    pub pending: Vec<serde_json::Value>,
}

/// The cluster resources one router needs. Host patterns and `HostSNI(`*`)` are not edge
/// resources (the edge routes exact names and ports only); a router whose rule cannot be
/// read was already refused by the local rules.
fn resources(
    proto: Proto,
    router: &Shared,
    n: u32,
    rules: &HostRules,
    scopes: &mut ScopeCache,
) -> Vec<Resource> {
    let mut out = Vec::new();
    if matches!(proto, Proto::Http | Proto::Tcp)
        && let Ok(list) = scopes.scopes_of(proto, router, n, rules).as_ref()
    {
        out.extend(list.iter().filter_map(|s| match s {
            HostScope::Exact(h) => Some(Resource::Host(h.clone())),
            _ => None,
        }));
    }
    if matches!(proto, Proto::Tcp | Proto::Udp) {
        for ep in router.get_list("entryPoints") {
            let port = ep
                .strip_prefix(proto.as_str())
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|p| p.parse::<u16>().ok());
            match (proto, port) {
                (Proto::Tcp, Some(p)) => out.push(Resource::Tcp(p)),
                (Proto::Udp, Some(p)) => out.push(Resource::Udp(p)),
                _ => {}
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Judges every router against the cluster view; removes the refused and the waiting ones
/// (into `removed`, so their leftovers go too).
pub fn gate(
    published: &mut Published,
    view: &ClusterView,
    settings: &RouteSettings,
    scopes: &mut ScopeCache,
    refused: &mut Vec<serde_json::Value>,
    removed: &mut Vec<(Proto, String, Shared)>,
) -> GateOutcome {
    let limit = settings.cluster_resource_limit;
    let rules = settings.host_rules();
    let mut outcome = GateOutcome::default();
    let mut held: BTreeMap<u32, BTreeSet<Resource>> = BTreeMap::new();
    for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
        let names: Vec<String> = published
            .section_ref(proto)
            .routers
            .keys()
            .cloned()
            .collect();
        for name in names {
            let o = published.origins[&(proto, Obj::Router, name.clone())].clone();
            let router = published.section_ref(proto).routers[&name].clone();
            let n = o.network_id.get();
            let needs = resources(proto, &router, n, &rules, scopes);
            let mut waiting = Vec::new();
            let mut refusal_reason = None;
            for r in &needs {
                match view.verdict(r, n) {
                    Verdict::Serve => {}
                    Verdict::Pending(why) => waiting.push(why),
                    Verdict::Refused { reason, owner } => {
                        refusal_reason = Some((reason, owner));
                        break;
                    }
                }
            }
            let rule = router.get_str("rule").map(str::to_string);
            let mine = held.entry(n).or_default();
            let new = needs.iter().filter(|r| !mine.contains(*r)).count();
            if refusal_reason.is_none() && mine.len() + new > limit {
                refused.push(refusal(
                    proto,
                    &name,
                    &o,
                    rule.as_deref(),
                    &format!(
                        "network {n} would hold more than {limit} host names and ports in the \
                         cluster (cluster.max_resources_per_network)"
                    ),
                    None,
                ));
            } else if let Some((reason, owner)) = refusal_reason {
                refused.push(refusal(
                    proto,
                    &name,
                    &o,
                    rule.as_deref(),
                    &reason,
                    Some(owner),
                ));
            } else {
                for r in needs {
                    mine.insert(r.clone());
                    outcome.wanted.insert(r, n);
                }
                if waiting.is_empty() {
                    continue;
                }
                outcome.pending.push(json!({
                    "kind": format!("{} router", proto.as_str()),
                    "network_id": n,
                    "object": name,
                    "reason": waiting.join("; "),
                }));
            }
            if let Some(r) = published.section(proto).routers.remove(&name) {
                removed.push((proto, name, r));
            }
        }
    }
    outcome
}
