//! The rendered pieces of a route builder's union of merges: the `/routes.yaml` text of every
//! object and the `/routes.json` text of every router, by name in document order.
//!
//! Why: at thousands of containers a rebuild that walks every object — even only to compare it
//! with what it rendered last time — spends most of its time waiting on memory. The builder
//! knows what changed (the repositories it re-merged, and what stage 3 takes out and adds), so
//! it tells the pieces: a changed repository's pieces are taken out and its new objects
//! rendered; stage 3's refusals and port forwards are applied for one build and taken back
//! with the union itself ([`Pieces::apply`], [`Pieces::revert`]). The bodies are then a
//! concatenation of the pieces, byte-identical to what `render` and `listing` make of the
//! whole configuration (the builder's tests and the incremental-equals-full property test
//! compare them).

use std::collections::BTreeMap;

use crate::routing::listing::{self, Listing};
use crate::routing::merge::{Obj, Proto, Published};
use crate::routing::render;

/// The kinds in document order (`/routes.yaml` sorts its keys).
const KINDS: [(Obj, &str); 3] = [
    (Obj::Middleware, "middlewares"),
    (Obj::Router, "routers"),
    (Obj::Service, "services"),
];
const PROTOS: [Proto; 3] = [Proto::Http, Proto::Tcp, Proto::Udp];

/// Rendered text by name, for each protocol and kind; listing entries by router name, for
/// each protocol.
#[derive(Debug, Default)]
pub struct Pieces {
    yaml: BTreeMap<(Proto, Obj), BTreeMap<String, String>>,
    json: BTreeMap<Proto, BTreeMap<String, String>>,
    /// Body lengths of the last build: the next ones are about as long.
    last_len: (usize, usize),
}

/// What [`Pieces::apply`] changed, for [`Pieces::revert`].
#[derive(Debug, Default)]
pub struct Applied {
    taken_yaml: Vec<((Proto, Obj), String, String)>,
    taken_json: Vec<(Proto, String, String)>,
    added: Vec<(Proto, String)>,
}

impl Pieces {
    /// Renders and adds every object of `part` (one repository's merge).
    pub fn add_part(&mut self, part: &Published) {
        for proto in PROTOS {
            let s = part.section_ref(proto);
            for (obj, _) in KINDS {
                let objects = match obj {
                    Obj::Router => &s.routers,
                    Obj::Service => &s.services,
                    Obj::Middleware => &s.middlewares,
                };
                let texts = self.yaml.entry((proto, obj)).or_default();
                for (name, value) in objects {
                    texts.insert(name.clone(), render::render_object(name, value));
                }
            }
            let entries = self.json.entry(proto).or_default();
            for (name, router, origin) in part.routers_with_origins(proto) {
                let entry = listing::entry(s, proto, name, router, origin);
                entries.insert(name.clone(), listing::entry_text(&entry));
            }
        }
    }

    /// Takes out every piece of `part` ([`Pieces::add_part`]).
    pub fn remove_part(&mut self, part: &Published) {
        for (proto, obj, name) in part.origins.keys() {
            if let Some(texts) = self.yaml.get_mut(&(*proto, *obj)) {
                texts.remove(name);
            }
            if *obj == Obj::Router
                && let Some(entries) = self.json.get_mut(proto)
            {
                entries.remove(name);
            }
        }
    }

    /// Mirrors stage 3 for one build: takes out the pieces of `removed` objects and adds the
    /// pieces of the port forwards `forwards` (their router and service, as `published` — the
    /// configuration after stage 3 — holds them).
    pub fn apply(
        &mut self,
        published: &Published,
        removed: impl IntoIterator<Item = (Proto, Obj, String)>,
        forwards: &[(Proto, String)],
    ) -> Applied {
        let mut applied = Applied::default();
        for (proto, obj, name) in removed {
            if let Some(text) = self
                .yaml
                .get_mut(&(proto, obj))
                .and_then(|t| t.remove(&name))
            {
                applied.taken_yaml.push(((proto, obj), name.clone(), text));
            }
            if obj == Obj::Router
                && let Some(text) = self.json.get_mut(&proto).and_then(|e| e.remove(&name))
            {
                applied.taken_json.push((proto, name, text));
            }
        }
        for (proto, name) in forwards {
            if applied.added.contains(&(*proto, name.clone())) {
                continue;
            }
            let s = published.section_ref(*proto);
            let mut any = false;
            for (obj, map) in [(Obj::Router, &s.routers), (Obj::Service, &s.services)] {
                if let Some(value) = map.get(name) {
                    any = true;
                    self.yaml
                        .entry((*proto, obj))
                        .or_default()
                        .insert(name.clone(), render::render_object(name, value));
                }
            }
            if let (Some(router), Some(origin)) = (
                s.routers.get(name),
                published.origins.get(&(*proto, Obj::Router, name.clone())),
            ) {
                let entry = listing::entry(s, *proto, name, router, origin);
                self.json
                    .entry(*proto)
                    .or_default()
                    .insert(name.clone(), listing::entry_text(&entry));
            }
            if any {
                applied.added.push((*proto, name.clone()));
            }
        }
        applied
    }

    /// Takes back what [`Pieces::apply`] did.
    pub fn revert(&mut self, applied: Applied) {
        for (proto, name) in applied.added {
            for obj in [Obj::Router, Obj::Service] {
                if let Some(texts) = self.yaml.get_mut(&(proto, obj)) {
                    texts.remove(&name);
                }
            }
            if let Some(entries) = self.json.get_mut(&proto) {
                entries.remove(&name);
            }
        }
        for (kind, name, text) in applied.taken_yaml {
            self.yaml.entry(kind).or_default().insert(name, text);
        }
        for (proto, name, text) in applied.taken_json {
            self.json.entry(proto).or_default().insert(name, text);
        }
    }

    /// The `/routes.yaml` body and the `/routes.json` listing of the pieces.
    pub fn bodies(&mut self) -> (String, Listing) {
        let (yaml_len, json_len) = self.last_len;
        let mut yaml = String::with_capacity(yaml_len + yaml_len / 16);
        for proto in PROTOS {
            let mut open = false;
            for (obj, kind) in KINDS {
                let Some(texts) = self.yaml.get(&(proto, obj)).filter(|t| !t.is_empty()) else {
                    continue;
                };
                if !open {
                    yaml.push_str(&render::quote(proto.as_str()));
                    yaml.push_str(":\n");
                    open = true;
                }
                yaml.push_str("  ");
                yaml.push_str(&render::quote(kind));
                yaml.push_str(":\n");
                for text in texts.values() {
                    yaml.push_str(text);
                }
            }
        }
        if yaml.is_empty() {
            yaml.push_str("{}\n");
        }
        let mut json = String::with_capacity(json_len + json_len / 16);
        listing::assemble(&mut json, |proto, out| {
            for text in self.json.get(&proto).into_iter().flat_map(|e| e.values()) {
                out.push_str(text);
            }
        });
        self.last_len = (yaml.len(), json.len());
        (yaml, Listing::from_text(json))
    }

    /// How many pieces are held: objects, listing entries (tests: what is gone is forgotten).
    pub fn len(&self) -> (usize, usize) {
        (
            self.yaml.values().map(BTreeMap::len).sum(),
            self.json.values().map(BTreeMap::len).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addresses::NetworkId;
    use crate::routing::merge::{Origin, Shared};
    use crate::routing::traefik_labels::Value;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(Value::Str),
            "[ -~]{0,8}".prop_map(Value::Str),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Map(m.into())),
            ]
        })
    }

    /// `protocol → kind → name → object` as a configuration with an origin for each object.
    fn published(doc: &[Vec<BTreeMap<String, Value>>]) -> Published {
        let mut p = Published::default();
        for (proto, kinds) in PROTOS.iter().zip(doc) {
            for ((obj, _), objects) in KINDS.iter().zip(kinds) {
                for (name, value) in objects {
                    crate::routing::merge::section_map(p.section(*proto), *obj)
                        .insert(name.clone(), Shared::new(value.clone()));
                    p.origins.insert(
                        (*proto, *obj, name.clone()),
                        Origin {
                            network_id: NetworkId::new(2816).unwrap(),
                            containers: [name.as_str()].into_iter().collect(),
                            tier: 1,
                            created: 0,
                        },
                    );
                }
            }
        }
        p
    }

    /// The bodies the reference renderers make of the whole document.
    fn reference(p: &Published) -> (String, Vec<u8>) {
        let mut doc = BTreeMap::new();
        let mut list = serde_json::Map::new();
        for proto in PROTOS {
            let s = p.section_ref(proto);
            let mut kinds = BTreeMap::new();
            for (obj, kind) in KINDS {
                let objects = match obj {
                    Obj::Router => &s.routers,
                    Obj::Service => &s.services,
                    Obj::Middleware => &s.middlewares,
                };
                if !objects.is_empty() {
                    let plain = objects.iter().map(|(k, v)| (k.clone(), (**v).clone()));
                    kinds.insert(kind.to_string(), Value::Map(plain.collect()));
                }
            }
            if !kinds.is_empty() {
                doc.insert(proto.as_str().to_string(), Value::Map(kinds.into()));
            }
            let entries = p
                .routers_with_origins(proto)
                .map(|(n, r, o)| listing::entry(s, proto, n, r, o))
                .collect();
            list.insert(proto.as_str().into(), serde_json::Value::Array(entries));
        }
        (
            render::to_yaml(&Value::Map(doc.into())),
            crate::routing::http_api::canonical_json(&serde_json::Value::Object(list)).to_vec(),
        )
    }

    fn arb_doc() -> impl Strategy<Value = Vec<Vec<BTreeMap<String, Value>>>> {
        prop::collection::vec(
            prop::collection::vec(prop::collection::btree_map("[a-d]", arb_value(), 0..3), 3),
            3,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, .. ProptestConfig::default() })]
        /// The bodies the route server serves, assembled from pieces, are what the reference
        /// renderers make of the whole configuration — also after parts come and go and after
        /// stage 3's changes are applied and taken back; and the pieces forget what is gone.
        #[test]
        fn pieces_equal_the_reference_renderers(first in arb_doc(), second in arb_doc()) {
            let (a, b) = (published(&first), published(&second));
            let mut pieces = Pieces::default();
            pieces.add_part(&a);
            let (yaml, json) = pieces.bodies();
            let (ref_yaml, ref_json) = reference(&a);
            prop_assert_eq!(&yaml, &ref_yaml);
            prop_assert_eq!(json.text().as_bytes(), &ref_json[..]);

            // Stage 3 takes every router out for one build, then gives them back.
            let routers: Vec<(Proto, Obj, String)> = PROTOS
                .iter()
                .flat_map(|p| a.section_ref(*p).routers.keys().map(|n| (*p, Obj::Router, n.clone())))
                .collect();
            let mut without = published(&first);
            for (p, _, n) in &routers {
                without.section(*p).routers.remove(n);
            }
            let applied = pieces.apply(&without, routers, &[]);
            prop_assert_eq!(pieces.bodies().0, reference(&without).0);
            pieces.revert(applied);
            prop_assert_eq!(pieces.bodies().0, ref_yaml);

            pieces.remove_part(&a);
            prop_assert_eq!(pieces.len(), (0, 0));
            prop_assert_eq!(pieces.bodies().0, "{}\n");
            pieces.add_part(&b);
            prop_assert_eq!(pieces.bodies().0, reference(&b).0);
        }
    }
}
