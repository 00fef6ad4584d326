//! Stage 2 of route building: merging the containers' fragments into one configuration with
//! Traefik's merge rule (`pkg/provider/configuration.go`): an object defined by several
//! containers survives only when every definition is equal (services: equal but for their
//! servers, which are pooled). Objects are namespaced per repository before they get here, so
//! a merge never crosses repositories.

use std::collections::{BTreeMap, BTreeSet};

use crate::addresses::NetworkId;
use crate::routing::fragment::Fragment;
use crate::routing::traefik_labels::{Section, Value};

/// An object shared between the builder's caches and the published configuration: a rebuild
/// copies a pointer, not the object (an object is copied only when a merge changes it).
pub type Shared = std::sync::Arc<Value>;

/// Routers, services and middlewares of one protocol, shared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedSection {
    pub routers: SharedMap,
    pub services: SharedMap,
    pub middlewares: SharedMap,
}

/// The objects of one kind by name: compact, as every container's fragment holds three of
/// them for each protocol (`compact_map`).
pub type SharedMap = crate::routing::compact_map::CompactMap<Shared>;

impl SharedSection {
    pub fn is_empty(&self) -> bool {
        self.routers.is_empty() && self.services.is_empty() && self.middlewares.is_empty()
    }
}

impl From<Section> for SharedSection {
    fn from(s: Section) -> Self {
        let share = |m: BTreeMap<String, Value>| {
            m.into_iter()
                .map(|(k, v)| (k, Shared::new(v)))
                .collect::<SharedMap>()
        };
        SharedSection {
            routers: share(s.routers),
            services: share(s.services),
            middlewares: share(s.middlewares),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Http,
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Obj {
    Router,
    Service,
    Middleware,
}

impl Obj {
    pub fn as_str(self) -> &'static str {
        match self {
            Obj::Router => "router",
            Obj::Service => "service",
            Obj::Middleware => "middleware",
        }
    }
}

pub fn section_map(s: &mut SharedSection, obj: Obj) -> &mut SharedMap {
    match obj {
        Obj::Router => &mut s.routers,
        Obj::Service => &mut s.services,
        Obj::Middleware => &mut s.middlewares,
    }
}

/// Container names, sorted, without duplicates. Most objects have one: a one-name vector
/// takes a tenth of the memory of a one-name `BTreeSet` (a builder keeps an origin for every
/// object, twice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(Vec<String>);

impl Names {
    pub fn insert(&mut self, name: &str) {
        if let Err(i) = self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            self.0.reserve_exact(1);
            self.0.insert(i, name.to_string());
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }
}

impl IntoIterator for Names {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> FromIterator<&'a str> for Names {
    fn from_iter<T: IntoIterator<Item = &'a str>>(iter: T) -> Self {
        let mut names = Names::default();
        for n in iter {
            names.insert(n);
        }
        names
    }
}

/// Who defined a published object.
#[derive(Debug, Clone)]
pub struct Origin {
    pub network_id: NetworkId,
    pub containers: Names,
    pub tier: u8,
    /// Creation time (Unix seconds) of the oldest container defining it: the age of its claims.
    pub created: i64,
}

/// The published configuration while it is being assembled.
#[derive(Debug, Default)]
pub struct Published {
    pub http: SharedSection,
    pub tcp: SharedSection,
    pub udp: SharedSection,
    pub origins: BTreeMap<(Proto, Obj, String), Origin>,
}

impl Published {
    pub fn section(&mut self, p: Proto) -> &mut SharedSection {
        match p {
            Proto::Http => &mut self.http,
            Proto::Tcp => &mut self.tcp,
            Proto::Udp => &mut self.udp,
        }
    }

    /// Adds every object and origin of `part` (a repository's merge), sharing the objects.
    /// `part`'s names must not be in `self` (repositories never share names).
    pub fn add_part(&mut self, part: &Published) {
        for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
            let (to, from) = (self.section(proto), part.section_ref(proto));
            for (mine, theirs) in [
                (&mut to.routers, &from.routers),
                (&mut to.services, &from.services),
                (&mut to.middlewares, &from.middlewares),
            ] {
                mine.extend(theirs.iter().map(|(k, v)| (k.clone(), Shared::clone(v))));
            }
        }
        self.origins
            .extend(part.origins.iter().map(|(k, o)| (k.clone(), o.clone())));
    }

    /// Removes every object and origin `part` added ([`Published::add_part`]).
    pub fn remove_part(&mut self, part: &Published) {
        for key in part.origins.keys() {
            let (proto, obj, name) = key;
            section_map(self.section(*proto), *obj).remove(name);
            self.origins.remove(key);
        }
    }

    /// The routers of `proto` with their origins, in name order (the two maps are walked side
    /// by side: no lookups).
    pub fn routers_with_origins(
        &self,
        proto: Proto,
    ) -> impl Iterator<Item = (&String, &Shared, &Origin)> {
        let mut origins = self
            .origins
            .range((proto, Obj::Router, String::new())..)
            .take_while(move |((p, o, _), _)| *p == proto && *o == Obj::Router)
            .peekable();
        self.section_ref(proto)
            .routers
            .iter()
            .map(move |(name, router)| {
                while origins.next_if(|((_, _, n), _)| n < name).is_some() {}
                let (_, origin) = origins
                    .next()
                    .filter(|((_, _, n), _)| n == name)
                    .expect("every published router has an origin");
                (name, router, origin)
            })
    }

    pub fn section_ref(&self, p: Proto) -> &SharedSection {
        match p {
            Proto::Http => &self.http,
            Proto::Tcp => &self.tcp,
            Proto::Udp => &self.udp,
        }
    }
}

/// Traefik's service merge: load balancers equal in everything but their servers merge, the
/// servers de-duplicated by `url`/`address`. Defaults Traefik fills in are compared as set.
fn merge_service(existing: &mut Value, other: &Value, proto: Proto) -> bool {
    let (Some(a), Some(b)) = (existing.get("loadBalancer"), other.get("loadBalancer")) else {
        return *existing == *other;
    };
    let comparable = |lb: &Value| {
        let mut lb = lb.clone();
        lb.remove("servers");
        if proto == Proto::Http {
            for (k, v) in [
                ("passHostHeader", Value::Bool(true)),
                ("strategy", Value::Str("wrr".into())),
            ] {
                if lb.get(k).is_none() {
                    lb.set(k, v);
                }
            }
            if lb.get("responseForwarding").is_none() {
                let mut rf = Value::empty_map();
                rf.set("flushInterval", Value::Str("100ms".into()));
                lb.set("responseForwarding", rf);
            }
        }
        lb
    };
    if comparable(a) != comparable(b) {
        return false;
    }
    let key = if proto == Proto::Http {
        "url"
    } else {
        "address"
    };
    let new_servers = match b.get("servers") {
        Some(Value::List(items)) => items.clone(),
        _ => Vec::new(),
    };
    let lb = existing.get_mut("loadBalancer").expect("checked above");
    if !matches!(lb.get("servers"), Some(Value::List(_))) {
        lb.set("servers", Value::List(Vec::new()));
    }
    if let Some(Value::List(servers)) = lb.get_mut("servers") {
        for s in new_servers {
            if !servers.iter().any(|x| x.get(key) == s.get(key)) {
                servers.push(s);
            }
        }
    }
    true
}

/// Adds one object to the published configuration with Traefik's merge rule: services merge
/// when only their servers differ; routers and middlewares must be equal; otherwise every copy
/// is removed at the end.
pub fn add_object(
    published: &mut Published,
    to_delete: &mut BTreeSet<(Proto, Obj, String)>,
    key: (Proto, Obj, String),
    value: Shared,
    owner: &Owner,
) {
    let (proto, obj, name) = key.clone();
    let origin = published.origins.entry(key.clone()).or_insert(Origin {
        network_id: owner.network_id,
        containers: Names::default(),
        tier: owner.tier,
        created: owner.created,
    });
    origin.containers.insert(owner.container);
    origin.created = origin.created.min(owner.created);
    let map = section_map(published.section(proto), obj);
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(existing) => {
            let merged = match obj {
                Obj::Service if !Shared::ptr_eq(existing, &value) => {
                    merge_service(Shared::make_mut(existing), &value, proto)
                }
                _ => Shared::ptr_eq(existing, &value) || **existing == *value,
            };
            if !merged {
                to_delete.insert(key);
            }
        }
    }
}

/// Who adds an object: the container and its repository.
pub struct Owner<'a> {
    pub network_id: NetworkId,
    pub container: &'a str,
    pub tier: u8,
    pub created: i64,
}

/// Merges the fragments in Traefik's order (`<default name>-<id>`; repositories never share
/// names). Objects whose definitions disagree are removed and reported in `conflicts`.
pub fn merge(fragments: &mut [&Fragment], conflicts: &mut Vec<serde_json::Value>) -> Published {
    let (published, keyed) = merge_keyed(fragments);
    conflicts.extend(keyed.into_iter().map(|(_, c)| c));
    published
}

/// A merge conflict with the object it removed: conflicts of several merges are reported in
/// the order of their keys, as one merge over everything reports them.
pub type KeyedConflict = ((Proto, Obj, String), serde_json::Value);

/// [`merge`], with each conflict's key. Since repositories never share names, merging each
/// repository alone and taking the union gives what one merge over everything gives.
pub fn merge_keyed(fragments: &mut [&Fragment]) -> (Published, Vec<KeyedConflict>) {
    let mut conflicts = Vec::new();
    fragments.sort_by(|a, b| (a.network_id, &a.merge_key).cmp(&(b.network_id, &b.merge_key)));
    let mut published = Published::default();
    let mut to_delete: BTreeSet<(Proto, Obj, String)> = BTreeSet::new();
    for frag in fragments.iter() {
        for proto in [Proto::Http, Proto::Tcp, Proto::Udp] {
            let src = match proto {
                Proto::Http => &frag.http,
                Proto::Tcp => &frag.tcp,
                Proto::Udp => &frag.udp,
            };
            for obj in [Obj::Router, Obj::Service, Obj::Middleware] {
                let objects = match obj {
                    Obj::Router => &src.routers,
                    Obj::Service => &src.services,
                    Obj::Middleware => &src.middlewares,
                };
                for (name, value) in objects {
                    add_object(
                        &mut published,
                        &mut to_delete,
                        (proto, obj, name.clone()),
                        value.clone(),
                        &Owner {
                            network_id: frag.network_id,
                            container: &frag.container,
                            tier: frag.tier,
                            created: frag.created,
                        },
                    );
                }
            }
        }
    }
    for key in &to_delete {
        let (proto, obj, name) = key;
        section_map(published.section(*proto), *obj).remove(name);
        let origin = published.origins.get(key).cloned();
        conflicts.push((key.clone(), serde_json::json!({
            "kind": format!("{} {}", proto.as_str(), obj.as_str()),
            "network_id": origin.as_ref().map(|o| o.network_id.get()),
            "object": name,
            "containers": origin.map(|o| o.containers.into_iter().collect::<Vec<_>>()).unwrap_or_default(),
            "reason": "defined by several containers with different configurations: removed (Traefik's merge rule)",
        })));
    }
    (published, conflicts)
}
