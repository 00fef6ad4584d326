//! The `/routes.json` body (spec §6.5): every HTTP, TCP and UDP router with its rule,
//! entrypoints, backends, repository, service, containers and tier.
//!
//! The body is kept as the text the endpoint serves — JSON with sorted keys, pretty-printed, as
//! `http_api::canonical_json` writes any value — assembled from the text of each router's
//! entry. Why text: at thousands of routers, building (and copying, and serializing) a
//! `serde_json::Value` for every router on every rebuild cost more than everything else a
//! rebuild does; a route builder keeps each entry's text (`pieces`), so a rebuild renders only
//! the changed entries and copies the rest. Readers that want a value (`renet routes check`,
//! tests) get one parsed on first use.

use std::sync::{Arc, OnceLock};

use crate::routing::merge::{Origin, Proto, Published, SharedSection};
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

/// The listing of every router of `published` (a full build; a route builder assembles it
/// from kept entries instead).
pub fn listing(published: &Published) -> Listing {
    let mut out = String::new();
    assemble(&mut out, |proto, out| {
        let s = published.section_ref(proto);
        for (name, router, origin) in published.routers_with_origins(proto) {
            out.push_str(&entry_text(&entry(s, proto, name, router, origin)));
        }
    });
    Listing::from_text(out)
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
    use crate::routing::merge::Shared;

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

    /// The value the body must be the canonical text of.
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

    fn check(p: &Published) -> Listing {
        let listing = listing(p);
        let canonical = crate::routing::http_api::canonical_json(&reference(p));
        assert_eq!(listing.text().as_bytes(), &canonical[..]);
        assert_eq!(listing, reference(p));
        listing
    }

    #[test]
    fn the_body_is_the_canonical_json_of_the_entries() {
        let mut p = Published::default();
        assert_eq!(check(&p), Listing::default());
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
        check(&p);
        // A changed service changes the entry of the router that uses it.
        p.http
            .services
            .insert("b-2816".into(), service("url", "http://127.0.11.3:81"));
        let listing = check(&p);
        assert_eq!(listing["http"][1]["backends"][0], "http://127.0.11.3:81");
        // Removed routers leave the listing.
        p.http.routers.remove("a-2816");
        p.udp.routers.remove("d-2816");
        check(&p);
        p.http.routers.clear();
        check(&p);
    }
}
