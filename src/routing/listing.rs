//! The `/routes.json` body (spec §6.5): every HTTP, TCP and UDP router with its rule,
//! entrypoints, backends, repository, service, containers and tier.
//!
//! The body is kept as the text the endpoint serves — JSON with sorted keys, pretty-printed, as
//! `http_api::canonical_json` writes any value — assembled from the text of each router's
//! entry. Why text: at thousands of routers, building (and copying, and serializing) a
//! `serde_json::Value` for every router on every rebuild cost more than everything else a
//! rebuild does; a [`ListingCache`] keeps each entry's text while its router, service and
//! origin are unchanged, so a rebuild renders only the changed entries and copies the rest.
//! Readers that want a value (`renet routes check`, tests) get one parsed on first use.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::routing::merge::{Origin, Proto, Published, Shared, SharedSection};
use crate::routing::traefik_labels::Value;

/// The `/routes.json` body: `{"http": [...], "tcp": [...], "udp": [...]}`.
#[derive(Clone)]
pub struct Listing {
    /// Shared with the served body (an `Arc<str>` would copy the text once more per build).
    text: Arc<String>,
    value: OnceLock<serde_json::Value>,
}

impl Listing {
    pub(crate) fn from_text(text: String) -> Listing {
        Listing {
            text: Arc::new(text),
            value: OnceLock::new(),
        }
    }

    /// The body as served: canonical JSON (sorted keys, pretty-printed, final newline).
    pub fn text(&self) -> &Arc<String> {
        &self.text
    }

    /// The body as a JSON value (parsed on first use).
    pub fn value(&self) -> &serde_json::Value {
        self.value.get_or_init(|| {
            serde_json::from_str(&self.text).expect("the listing is valid JSON by construction")
        })
    }
}

impl Default for Listing {
    /// No routers.
    fn default() -> Self {
        let mut out = String::new();
        assemble(&mut out, |_, _| {});
        Listing::from_text(out)
    }
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

impl std::fmt::Display for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Listing {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl PartialEq<serde_json::Value> for Listing {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.value() == other
    }
}

impl std::ops::Index<&str> for Listing {
    type Output = serde_json::Value;

    fn index(&self, key: &str) -> &serde_json::Value {
        &self.value()[key]
    }
}

/// Writes the document around the entries: `entries(proto, out)` appends the entries of one
/// protocol, each indented and followed by `,\n` (the last comma is taken back here).
pub(crate) fn assemble(out: &mut String, mut entries: impl FnMut(Proto, &mut String)) {
    out.push_str("{\n");
    for (i, proto) in [Proto::Http, Proto::Tcp, Proto::Udp]
        .into_iter()
        .enumerate()
    {
        out.push_str("  \"");
        out.push_str(proto.as_str());
        out.push_str("\": [");
        let start = out.len();
        out.push('\n');
        entries(proto, out);
        if out.len() == start + 1 {
            out.truncate(start);
            out.push(']');
        } else {
            // The last entry's ",\n" becomes "\n  ]".
            out.truncate(out.len() - 2);
            out.push_str("\n  ]");
        }
        out.push_str(if i < 2 { ",\n" } else { "\n" });
    }
    out.push_str("}\n");
}

/// What one entry was made from, and its text.
#[derive(Debug)]
struct Listed {
    router: Shared,
    service: Option<Shared>,
    origin: Origin,
    text: String,
}

/// Entry texts by protocol and router name, reused while the router and its service are the
/// same objects as last time and its origin is equal. Walked side by side with the routers
/// (both sorted by name), so it always holds exactly the last listing's routers.
#[derive(Debug, Default)]
pub struct ListingCache {
    by_proto: BTreeMap<Proto, BTreeMap<String, Listed>>,
    /// The length of the last body: the next one is about as long.
    last_len: usize,
}

impl ListingCache {
    /// The listing of `published`'s routers.
    pub fn listing(&mut self, published: &Published) -> Listing {
        let mut out = String::with_capacity(self.last_len + self.last_len / 16);
        assemble(&mut out, |proto, out| {
            let cache = self.by_proto.entry(proto).or_default();
            list_proto(out, cache, published, proto);
        });
        self.last_len = out.len();
        Listing::from_text(out)
    }

    /// How many entries the cache holds (tests: it forgets what is gone).
    pub fn len(&self) -> usize {
        self.by_proto.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends the entries of one protocol, then brings the cache up to date (new and changed
/// entries in, vanished ones out).
fn list_proto(
    out: &mut String,
    cache: &mut BTreeMap<String, Listed>,
    published: &Published,
    proto: Proto,
) {
    let s = published.section_ref(proto);
    let mut fresh: Vec<(String, Listed)> = Vec::new();
    let mut gone: Vec<String> = Vec::new();
    let mut cached = cache.iter().peekable();
    for (name, router, origin) in published.routers_with_origins(proto) {
        while let Some((k, _)) = cached.next_if(|(k, _)| k.as_str() < name.as_str()) {
            gone.push(k.clone());
        }
        let service = router.get_str("service").and_then(|n| s.services.get(n));
        let hit = cached
            .next_if(|(k, _)| *k == name)
            .map(|(_, l)| l)
            .filter(|l| {
                Shared::ptr_eq(&l.router, router)
                    && match (&l.service, service) {
                        (Some(a), Some(b)) => Shared::ptr_eq(a, b),
                        (None, None) => true,
                        _ => false,
                    }
                    && same_origin(&l.origin, origin)
            });
        match hit {
            Some(l) => out.push_str(&l.text),
            None => {
                let text = entry_text(&entry(s, proto, name, router, origin));
                out.push_str(&text);
                fresh.push((
                    name.clone(),
                    Listed {
                        router: Shared::clone(router),
                        service: service.cloned(),
                        origin: origin.clone(),
                        text,
                    },
                ));
            }
        }
    }
    gone.extend(cached.map(|(k, _)| k.clone()));
    for k in gone {
        cache.remove(&k);
    }
    cache.extend(fresh);
}

/// The fields of an origin an entry shows.
fn same_origin(a: &Origin, b: &Origin) -> bool {
    a.network_id == b.network_id && a.tier == b.tier && a.containers == b.containers
}

/// One entry as it appears in the body: pretty-printed at the depth of `http[i]`, followed by
/// `,\n`. Every string is escaped by serde_json, so a newline in the text is always layout.
pub(crate) fn entry_text(entry: &serde_json::Value) -> String {
    let pretty = serde_json::to_string_pretty(entry).expect("a JSON value always serializes");
    let mut text = String::with_capacity(pretty.len() + pretty.len() / 4);
    text.push_str("    ");
    for line in pretty.split_inclusive('\n') {
        text.push_str(line);
        if line.ends_with('\n') {
            text.push_str("    ");
        }
    }
    text.push_str(",\n");
    text
}

/// One router of `/routes.json`, its keys in sorted order (the body's keys are sorted).
pub(crate) fn entry(
    s: &SharedSection,
    proto: Proto,
    name: &str,
    router: &Value,
    o: &Origin,
) -> serde_json::Value {
    let service = router.get_str("service").unwrap_or("").to_string();
    let key = if proto == Proto::Http {
        "url"
    } else {
        "address"
    };
    let backends: Vec<String> = s
        .services
        .get(&service)
        .and_then(|svc| svc.get("loadBalancer"))
        .map(|lb| match lb.get("servers") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|s| s.get_str(key).map(str::to_string))
                .collect(),
            _ => Vec::new(),
        })
        .unwrap_or_default();
    let mut entry = serde_json::Map::new();
    entry.insert("backends".into(), backends.into());
    entry.insert(
        "container".into(),
        o.containers
            .iter()
            .next()
            .cloned()
            .unwrap_or_default()
            .into(),
    );
    entry.insert(
        "containers".into(),
        o.containers.iter().cloned().collect::<Vec<_>>().into(),
    );
    entry.insert("entrypoints".into(), router.get_list("entryPoints").into());
    entry.insert("name".into(), name.into());
    entry.insert("network_id".into(), o.network_id.get().into());
    if proto != Proto::Udp {
        entry.insert("rule".into(), router.get_str("rule").unwrap_or("").into());
    }
    entry.insert("service".into(), service.into());
    entry.insert("tier".into(), o.tier.into());
    serde_json::Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addresses::NetworkId;
    use crate::routing::merge::Obj;

    fn router(rule: &str, service: &str) -> Shared {
        let mut r = Value::empty_map();
        r.set("rule", Value::Str(rule.into()));
        r.set("service", Value::Str(service.into()));
        r.set("entryPoints", Value::str_list(["websecure".to_string()]));
        Shared::new(r)
    }

    fn service(field: &str, address: &str) -> Shared {
        Shared::new(crate::routing::fragment::server_service(
            field,
            address.to_string(),
        ))
    }

    fn add(p: &mut Published, proto: Proto, name: &str, r: Shared, svc: Shared, container: &str) {
        p.section(proto).routers.insert(name.into(), r);
        p.section(proto).services.insert(name.into(), svc);
        p.origins.insert(
            (proto, Obj::Router, name.into()),
            Origin {
                network_id: NetworkId::new(2816).unwrap(),
                containers: [container].into_iter().collect(),
                tier: 2,
                created: 0,
            },
        );
    }

    /// The value the body must be the canonical text of (built without the cache).
    fn reference(p: &Published) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
            let s = p.section_ref(proto);
            let list = p
                .routers_with_origins(proto)
                .map(|(n, r, o)| entry(s, proto, n, r, o))
                .collect();
            m.insert(proto.as_str().into(), serde_json::Value::Array(list));
        }
        serde_json::Value::Object(m)
    }

    fn check(cache: &mut ListingCache, p: &Published) -> Listing {
        let listing = cache.listing(p);
        let canonical = crate::routing::http_api::canonical_json(&reference(p));
        assert_eq!(listing.text().as_bytes(), &canonical[..]);
        assert_eq!(listing, reference(p));
        listing
    }

    #[test]
    fn the_body_is_the_canonical_json_and_the_cache_follows_the_routers() {
        let mut cache = ListingCache::default();
        let mut p = Published::default();
        assert_eq!(check(&mut cache, &p), Listing::default());
        assert_eq!(
            Listing::default(),
            serde_json::json!({"http": [], "tcp": [], "udp": []})
        );
        add(
            &mut p,
            Proto::Http,
            "a-2816",
            router("Host(`a.example`) && Path(`/\"\\n\u{e9}`)", "a-2816"),
            service("url", "http://127.0.11.2:80"),
            "c\"1",
        );
        add(
            &mut p,
            Proto::Http,
            "b-2816",
            router("Host(`b.example`)", "b-2816"),
            service("url", "http://127.0.11.3:80"),
            "c2",
        );
        add(
            &mut p,
            Proto::Udp,
            "d-2816",
            router("", "d-2816"),
            service("address", "127.0.11.4:53"),
            "c3",
        );
        check(&mut cache, &p);
        assert_eq!(cache.len(), 3);
        // A changed service changes the entry of the router that uses it.
        p.http
            .services
            .insert("b-2816".into(), service("url", "http://127.0.11.3:81"));
        let listing = check(&mut cache, &p);
        assert_eq!(listing["http"][1]["backends"][0], "http://127.0.11.3:81");
        // Removed routers are forgotten.
        p.http.routers.remove("a-2816");
        p.udp.routers.remove("d-2816");
        check(&mut cache, &p);
        assert_eq!(cache.len(), 1);
        p.http.routers.clear();
        check(&mut cache, &p);
        assert!(cache.is_empty());
    }
}
