//! A map from strings, sorted by key, that stores a few entries in one exactly sized vector
//! and only more than [`SMALL`] in a `BTreeMap`.
//!
//! Why: the route builder keeps the decoded Traefik configuration of every container
//! ([`crate::routing::traefik_labels::Value`]), and almost all of its maps hold one to five
//! fields (`loadBalancer`, `servers`, `url`, a router's `rule`/`service`/`entryPoints`). A
//! `BTreeMap` allocates a node for eleven entries even for one: at 5,000 containers those
//! nodes were about a quarter of the route server's memory (docs/performance.md "(b'')").
//! Large maps still go to a `BTreeMap`, so a tenant's label set with thousands of fields in
//! one map costs `O(log n)` per insertion, never a quadratic number of moves.
//!
//! Iteration is in key order in both forms, and equality and ordering compare the entries
//! in that order: the same results as a `BTreeMap` with the same entries.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map;
use std::fmt;

/// The most entries kept in the vector; one more moves them into a `BTreeMap`.
pub const SMALL: usize = 16;

#[derive(Clone)]
pub struct CompactMap<V> {
    entries: Entries<V>,
}

#[derive(Clone)]
enum Entries<V> {
    /// Sorted by key, no duplicates, at most [`SMALL`] entries, capacity = length.
    Small(Vec<(String, V)>),
    Large(BTreeMap<String, V>),
}

impl<V> Default for CompactMap<V> {
    fn default() -> Self {
        CompactMap {
            entries: Entries::Small(Vec::new()),
        }
    }
}

impl<V> CompactMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Small(v) => v.len(),
            Entries::Large(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        match &self.entries {
            Entries::Small(v) => small_position(v, key).ok().map(|i| &v[i].1),
            Entries::Large(m) => m.get(key),
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        match &mut self.entries {
            Entries::Small(v) => small_position(v, key).ok().map(|i| &mut v[i].1),
            Entries::Large(m) => m.get_mut(key),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match &mut self.entries {
            Entries::Small(v) => match small_position(v, &key) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
                Err(_) if v.len() == SMALL => {
                    let mut m: BTreeMap<String, V> = std::mem::take(v).into_iter().collect();
                    m.insert(key, value);
                    self.entries = Entries::Large(m);
                    None
                }
                Err(i) => {
                    // Exactly sized: most maps never grow after decoding, and at most
                    // `SMALL` entries are moved per insertion.
                    v.reserve_exact(1);
                    v.insert(i, (key, value));
                    None
                }
            },
            Entries::Large(m) => m.insert(key, value),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        match &mut self.entries {
            Entries::Small(v) => {
                let i = small_position(v, key).ok()?;
                let (_, value) = v.remove(i);
                v.shrink_to_fit();
                Some(value)
            }
            Entries::Large(m) => m.remove(key),
        }
    }

    pub fn clear(&mut self) {
        self.entries = Entries::Small(Vec::new());
    }

    /// Keeps the entries for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut V) -> bool) {
        match &mut self.entries {
            Entries::Small(v) => {
                v.retain_mut(|(k, value)| keep(k, value));
                v.shrink_to_fit();
            }
            Entries::Large(m) => m.retain(|k, value| keep(k, value)),
        }
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_, V> {
        match &self.entries {
            Entries::Small(v) => Iter::Small(v.iter()),
            Entries::Large(m) => Iter::Large(m.iter()),
        }
    }

    /// The entries in key order, values mutable.
    pub fn iter_mut(&mut self) -> IterMut<'_, V> {
        match &mut self.entries {
            Entries::Small(v) => IterMut::Small(v.iter_mut()),
            Entries::Large(m) => IterMut::Large(m.iter_mut()),
        }
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.iter_mut().map(|(_, v)| v)
    }

    /// The value of `key`, inserted with `make` when absent.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        if !self.contains_key(key) {
            self.insert(key.to_string(), make());
        }
        self.get_mut(key).expect("inserted above")
    }
}

/// Where `key` is in a sorted vector, or where it would go.
fn small_position<V>(v: &[(String, V)], key: &str) -> Result<usize, usize> {
    v.binary_search_by(|(k, _)| k.as_str().cmp(key))
}

/// The entries of a [`CompactMap`] in key order.
pub enum Iter<'a, V> {
    Small(std::slice::Iter<'a, (String, V)>),
    Large(btree_map::Iter<'a, String, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a String, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Large(i) => i.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(i) => i.size_hint(),
            Iter::Large(i) => i.size_hint(),
        }
    }
}

impl<V> DoubleEndedIterator for Iter<'_, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next_back().map(|(k, v)| (k, v)),
            Iter::Large(i) => i.next_back(),
        }
    }
}

impl<V> ExactSizeIterator for Iter<'_, V> {}

/// The entries of a [`CompactMap`] in key order, values mutable.
pub enum IterMut<'a, V> {
    Small(std::slice::IterMut<'a, (String, V)>),
    Large(btree_map::IterMut<'a, String, V>),
}

impl<'a, V> Iterator for IterMut<'a, V> {
    type Item = (&'a String, &'a mut V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            IterMut::Small(i) => i.next().map(|(k, v)| (&*k, v)),
            IterMut::Large(i) => i.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            IterMut::Small(i) => i.size_hint(),
            IterMut::Large(i) => i.size_hint(),
        }
    }
}

impl<V> DoubleEndedIterator for IterMut<'_, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            IterMut::Small(i) => i.next_back().map(|(k, v)| (&*k, v)),
            IterMut::Large(i) => i.next_back(),
        }
    }
}

impl<V> ExactSizeIterator for IterMut<'_, V> {}

impl<'a, V> IntoIterator for &'a CompactMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

impl<'a, V> IntoIterator for &'a mut CompactMap<V> {
    type Item = (&'a String, &'a mut V);
    type IntoIter = IterMut<'a, V>;

    fn into_iter(self) -> IterMut<'a, V> {
        self.iter_mut()
    }
}

/// The owned entries of a [`CompactMap`] in key order.
pub enum IntoIter<V> {
    Small(std::vec::IntoIter<(String, V)>),
    Large(btree_map::IntoIter<String, V>),
}

impl<V> Iterator for IntoIter<V> {
    type Item = (String, V);

    fn next(&mut self) -> Option<(String, V)> {
        match self {
            IntoIter::Small(i) => i.next(),
            IntoIter::Large(i) => i.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            IntoIter::Small(i) => i.size_hint(),
            IntoIter::Large(i) => i.size_hint(),
        }
    }
}

impl<V> DoubleEndedIterator for IntoIter<V> {
    fn next_back(&mut self) -> Option<(String, V)> {
        match self {
            IntoIter::Small(i) => i.next_back(),
            IntoIter::Large(i) => i.next_back(),
        }
    }
}

impl<V> ExactSizeIterator for IntoIter<V> {}

impl<V> IntoIterator for CompactMap<V> {
    type Item = (String, V);
    type IntoIter = IntoIter<V>;

    fn into_iter(self) -> IntoIter<V> {
        match self.entries {
            Entries::Small(v) => IntoIter::Small(v.into_iter()),
            Entries::Large(m) => IntoIter::Large(m.into_iter()),
        }
    }
}

impl<V> FromIterator<(String, V)> for CompactMap<V> {
    /// Later entries replace earlier ones with the same key, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut map = CompactMap::new();
        map.extend(iter);
        map
    }
}

impl<V> Extend<(String, V)> for CompactMap<V> {
    fn extend<I: IntoIterator<Item = (String, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<V> From<BTreeMap<String, V>> for CompactMap<V> {
    fn from(m: BTreeMap<String, V>) -> Self {
        m.into_iter().collect()
    }
}

/// `map[key]`, as for a `BTreeMap`: panics when `key` is absent.
impl<V> std::ops::Index<&str> for CompactMap<V> {
    type Output = V;

    fn index(&self, key: &str) -> &V {
        self.get(key).expect("no entry for this key in the map")
    }
}

impl<V> std::ops::Index<&String> for CompactMap<V> {
    type Output = V;

    fn index(&self, key: &String) -> &V {
        &self[key.as_str()]
    }
}

impl<V: PartialEq> PartialEq for CompactMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<V: Eq> Eq for CompactMap<V> {}

impl<V: PartialOrd> PartialOrd for CompactMap<V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.iter().partial_cmp(other.iter())
    }
}

impl<V: Ord> Ord for CompactMap<V> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl<V: std::hash::Hash> std::hash::Hash for CompactMap<V> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for entry in self.iter() {
            entry.hash(state);
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for CompactMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_small_map_holds_exactly_its_entries() {
        let mut m = CompactMap::new();
        m.insert("b".to_string(), 2);
        m.insert("a".to_string(), 1);
        assert_eq!(m.insert("b".to_string(), 3), Some(2));
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            [(&"a".into(), &1), (&"b".into(), &3)]
        );
        match &m.entries {
            Entries::Small(v) => assert_eq!(v.capacity(), 2),
            Entries::Large(_) => panic!("two entries went to a BTreeMap"),
        }
    }

    #[test]
    fn more_than_small_entries_move_to_a_btree() {
        let m: CompactMap<usize> = (0..=SMALL).map(|i| (format!("{i:03}"), i)).collect();
        assert!(matches!(m.entries, Entries::Large(_)));
        assert_eq!(m.len(), SMALL + 1);
        assert_eq!(m.get("016"), Some(&16));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u8),
        Remove(String),
        Retain(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = "[a-e]{1,2}";
        prop_oneof![
            4 => (key, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            1 => key.prop_map(Op::Remove),
            1 => any::<u8>().prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// Any sequence of changes leaves the same entries, in the same order, as a BTreeMap
        /// given the same changes; comparisons agree with the BTreeMap's.
        #[test]
        fn behaves_as_a_btreemap(ops in prop::collection::vec(op(), 0..60),
                                 other in prop::collection::btree_map("[a-e]{1,2}", any::<u8>(), 0..20)) {
            let mut compact = CompactMap::new();
            let mut reference = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(compact.insert(k.clone(), v), reference.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(compact.remove(&k), reference.remove(&k)),
                    Op::Retain(limit) => {
                        compact.retain(|_, v| *v < limit);
                        reference.retain(|_, v| *v < limit);
                    }
                }
                prop_assert_eq!(compact.len(), reference.len());
                prop_assert!(compact.iter().eq(reference.iter()));
                prop_assert!(compact.iter().rev().eq(reference.iter().rev()));
            }
            for k in ["a", "b", "ab", "e", "ee", "z"] {
                prop_assert_eq!(compact.get(k), reference.get(k));
            }
            let other_compact = CompactMap::from(other.clone());
            prop_assert_eq!(compact.cmp(&other_compact), reference.cmp(&other));
            prop_assert_eq!(compact == other_compact, reference == other);
            prop_assert!(compact.clone().into_iter().eq(reference.into_iter()));
        }
    }
}
