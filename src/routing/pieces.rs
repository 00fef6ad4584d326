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
