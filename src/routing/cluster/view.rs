//! What this server knows of the cluster (a mirror of etcd's `<prefix>/` keys, kept by the
//! agent's watch) and the verdict it gives route building for each resource a router needs
//! (docs/cluster.md "Ownership, decided by transactions"). Pure.

use std::collections::BTreeMap;

use crate::routing::cluster::keys::{
    Parsed, Resource, Schema, ServerRecord, Serving, edge_host_problem,
};

/// The router name of a claim laid over the local table by [`ClusterView::overlay_hosts`]
/// (never a label router's: those end in `-<network ID>`). Such claims are not persisted
/// locally: etcd holds them.
pub const CLUSTER_OWNER: &str = "(cluster owner)";

/// A `serving` key as read, with the lease it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingEntry {
    pub serving: Serving,
    /// The raw value, compared byte for byte by transactions.
    pub raw: Vec<u8>,
    pub lease: i64,
}

/// The mirror. `connected` is false while etcd is unreachable or this server has no lease:
/// what was known stays, nothing new is claimed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// This server's name.
    pub server: String,
    pub connected: bool,
    /// This server's current lease (0: none).
    pub lease: i64,
    /// Why the agent is not connected (for `/health`).
    pub error: Option<String>,
    pub servers: BTreeMap<String, ServerRecord>,
    /// Owner network of each resource, with the raw value.
    pub owners: BTreeMap<Resource, (u32, Vec<u8>)>,
    pub serving: BTreeMap<Resource, ServingEntry>,
    /// Resources the agent cannot claim for a reason of this server's own (a host that does
    /// not fit its server's edge rule), with the reason, until the next reconciliation.
    pub unroutable: BTreeMap<Resource, String>,
}

/// What route building may do with a resource a router of network `n` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This server serves it for `n`: keep the router.
    Serve,
    /// Not (yet) this server's: withhold the router, keep asking.
    Pending(String),
    /// Another network holds it: refuse the router.
    Refused { reason: String, owner: u32 },
}

impl ClusterView {
    pub fn new(server: &str) -> ClusterView {
        ClusterView {
            server: server.to_string(),
            ..ClusterView::default()
        }
    }

    /// Applies one key from etcd (`value` `None`: deleted).
    pub fn apply(&mut self, schema: &Schema, key: &str, value: Option<(&[u8], i64)>) {
        match schema.parse(key) {
            Some(Parsed::Server(name)) => match value.and_then(|(v, _)| ServerRecord::decode(v)) {
                Some(record) => {
                    self.servers.insert(name, record);
                }
                None => {
                    self.servers.remove(&name);
                }
            },
            Some(Parsed::Owner(r)) => {
                let owner = value.and_then(|(v, _)| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u32>().ok())
                        .map(|n| (n, v.to_vec()))
                });
                match owner {
                    Some(o) => {
                        self.owners.insert(r, o);
                    }
                    None => {
                        self.owners.remove(&r);
                    }
                }
            }
            Some(Parsed::Serving(r)) => {
                let entry = value.and_then(|(v, lease)| {
                    Serving::decode(v).map(|serving| ServingEntry {
                        serving,
                        raw: v.to_vec(),
                        lease,
                    })
                });
                match entry {
                    Some(e) => {
                        self.serving.insert(r, e);
                    }
                    None => {
                        self.serving.remove(&r);
                    }
                }
            }
            None => {}
        }
    }

    /// The verdict for `r` wanted by network `n` on this server.
    pub fn verdict(&self, r: &Resource, n: u32) -> Verdict {
        if let Some((m, _)) = self.owners.get(r)
            && *m != n
        {
            return Verdict::Refused {
                reason: format!(
                    "{r} is held by network {m} in the cluster since its first claim; a claim \
                     is kept while its owner is down, moving or its server is dead, until an \
                     operator releases it (`renet cluster release {} {}`)",
                    r.kind(),
                    r.id()
                ),
                owner: *m,
            };
        }
        if let Resource::Host(h) = r
            && let Some(problem) = edge_host_problem(h)
        {
            return Verdict::Pending(format!(
                "{r} cannot be put in this server's edge rule: {problem}"
            ));
        }
        match self.serving.get(r) {
            Some(e) if e.serving.network_id != n => Verdict::Refused {
                reason: format!(
                    "{r} is served for network {} by server `{}` in the cluster",
                    e.serving.network_id, e.serving.server
                ),
                owner: e.serving.network_id,
            },
            Some(e) if e.serving.server == self.server => Verdict::Serve,
            Some(e) => Verdict::Pending(format!(
                "{r} of network {n} is served by server `{}` (the repository is moving); this \
                 server takes it when `{}` stops serving it or its lease ends",
                e.serving.server, e.serving.server
            )),
            None if self.unroutable.contains_key(r) => Verdict::Pending(self.unroutable[r].clone()),
            None if !self.connected => Verdict::Pending(format!(
                "{r}: etcd is unreachable, so no new cluster claims are made until it is back"
            )),
            None => Verdict::Pending(format!("{r}: claiming it in the cluster")),
        }
    }

    /// Lays the cluster's host owners over the local claims table before a build: in a
    /// cluster, etcd decides who owns a name, so a local first claim by a network the cluster
    /// refused must not block the owner (for example when the owner moves to this server).
    pub fn overlay_hosts(&self, table: &mut crate::routing::ownership::HostTable) {
        for (r, (n, _)) in &self.owners {
            let Resource::Host(h) = r else { continue };
            if table.hosts.get(h).is_some_and(|c| c.network_id == *n) {
                continue;
            }
            table.hosts.insert(
                h.clone(),
                crate::routing::ownership::HostClaim {
                    network_id: *n,
                    since: 0,
                    router: CLUSTER_OWNER.into(),
                },
            );
        }
    }

    /// The resources this server serves now (with the network they are served for).
    pub fn served_here(&self) -> impl Iterator<Item = (&Resource, &ServingEntry)> {
        self.serving
            .iter()
            .filter(|(_, e)| e.serving.server == self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> (Schema, ClusterView) {
        let schema = Schema::new("renet", "traefik");
        let mut v = ClusterView::new("a");
        v.connected = true;
        (schema, v)
    }

    #[test]
    fn the_owner_decides_and_the_serving_server_serves() {
        let (schema, mut v) = view();
        let h = Resource::Host("shop.example.com".into());
        assert!(matches!(v.verdict(&h, 4032), Verdict::Pending(_)));
        v.apply(
            &schema,
            "renet/owners/host/shop.example.com",
            Some((b"4032", 0)),
        );
        let refused = v.verdict(&h, 4096);
        assert!(
            matches!(&refused, Verdict::Refused { owner: 4032, reason } if reason.contains("renet cluster release host shop.example.com")),
            "{refused:?}"
        );
        let mine = br#"{"network_id":4032,"server":"a"}"#;
        v.apply(
            &schema,
            "renet/serving/host/shop.example.com",
            Some((mine, 7)),
        );
        assert_eq!(v.verdict(&h, 4032), Verdict::Serve);
        let theirs = br#"{"network_id":4032,"server":"b"}"#;
        v.apply(
            &schema,
            "renet/serving/host/shop.example.com",
            Some((theirs, 9)),
        );
        let moving = v.verdict(&h, 4032);
        assert!(
            matches!(&moving, Verdict::Pending(m) if m.contains("moving")),
            "{moving:?}"
        );
        // Served for another network (its owner key released meanwhile): still not ours.
        v.apply(&schema, "renet/owners/host/shop.example.com", None);
        assert!(matches!(
            v.verdict(&h, 4096),
            Verdict::Refused { owner: 4032, .. }
        ));
        v.apply(&schema, "renet/serving/host/shop.example.com", None);
        v.connected = false;
        let offline = v.verdict(&h, 4032);
        assert!(matches!(&offline, Verdict::Pending(m) if m.contains("unreachable")));
    }

    #[test]
    fn what_is_served_stays_while_disconnected() {
        let (schema, mut v) = view();
        let p = Resource::Tcp(5432);
        v.apply(&schema, "renet/owners/tcp/5432", Some((b"4032", 0)));
        v.apply(
            &schema,
            "renet/serving/tcp/5432",
            Some((br#"{"network_id":4032,"server":"a"}"#, 3)),
        );
        v.connected = false;
        assert_eq!(v.verdict(&p, 4032), Verdict::Serve);
        assert_eq!(v.served_here().count(), 1);
    }

    #[test]
    fn garbage_values_are_ignored() {
        let (schema, mut v) = view();
        v.apply(
            &schema,
            "renet/owners/host/x.example",
            Some((b"not a number", 0)),
        );
        v.apply(&schema, "renet/serving/host/x.example", Some((b"{}", 1)));
        v.apply(&schema, "renet/servers/b", Some((b"[]", 1)));
        assert!(v.owners.is_empty() && v.serving.is_empty() && v.servers.is_empty());
    }

    /// A host that cannot stand in a server's shared edge rule, or does not fit it, waits with
    /// the reason (`/health` `cluster.pending`) and is never served.
    #[test]
    fn a_host_the_edge_rule_cannot_take_waits_with_the_reason() {
        let (_, mut v) = view();
        let hostile = Resource::Host("a`) || Host(`victim.example.com".into());
        assert!(matches!(
            v.verdict(&hostile, 4032),
            Verdict::Pending(m) if m.contains("cannot be put in this server's edge rule")
        ));
        let big = Resource::Host("late.example.com".into());
        v.unroutable.insert(
            big.clone(),
            "late.example.com is not claimed: above the limit".into(),
        );
        assert_eq!(
            v.verdict(&big, 4032),
            Verdict::Pending("late.example.com is not claimed: above the limit".into())
        );
    }
}
