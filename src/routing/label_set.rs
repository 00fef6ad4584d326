//! A container's labels as one immutable, compact, sorted set: every key and value in one
//! text buffer, and a sorted table of where each entry ends in it.
//!
//! Why: the route server holds the labels of every running container (discovery's set, shared
//! by the redeploy grace, the builder and the last-known cache). As a `BTreeMap<String,
//! String>` they were 11.2 MiB of the server's 41 MiB live heap at 5,000 containers (about
//! 2.2 KB a container for 4–9 labels: a heap allocation per key and per value, plus `BTreeMap`
//! nodes with room for eleven entries; docs/performance.md "(b'')"). Here a container's labels
//! are two allocations: the text, exactly sized, and 16 bytes an entry.
//!
//! Docker never changes a container's labels, so the set is built once and never edited.
//! Building collects, sorts by key (a stable sort: `O(n log n)` however many labels a tenant
//! writes) and keeps the last value of a repeated key, which is what collecting into a
//! `BTreeMap` does. Lookups are a binary search; iteration, equality, hashing, `Debug` and
//! serialization (a map, in key order) give the same results as that `BTreeMap`.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where one entry lies in [`LabelSet::text`]: its key starts where the entry before it ends
/// (0 for the first), its value starts at `key_end` and ends at `value_end`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Entry {
    key_end: usize,
    value_end: usize,
}

/// Labels sorted by key, no key twice; see the module doc.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LabelSet {
    /// Every entry's key then value, in key order, nothing between them.
    text: Box<str>,
    /// One per entry, in key order.
    entries: Box<[Entry]>,
}

impl LabelSet {
    /// Builds from entries already sorted by key without repeats (a `BTreeMap`'s order).
    fn from_sorted<'a>(sorted: impl ExactSizeIterator<Item = (&'a str, &'a str)> + Clone) -> Self {
        let size = sorted.clone().map(|(k, v)| k.len() + v.len()).sum();
        let mut text = String::with_capacity(size);
        let mut entries = Vec::with_capacity(sorted.len());
        for (key, value) in sorted {
            text.push_str(key);
            let key_end = text.len();
            text.push_str(value);
            entries.push(Entry {
                key_end,
                value_end: text.len(),
            });
        }
        LabelSet {
            text: text.into_boxed_str(),
            entries: entries.into_boxed_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `i` as (key, value).
    fn entry(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 {
            0
        } else {
            self.entries[i - 1].value_end
        };
        let e = self.entries[i];
        (
            &self.text[start..e.key_end],
            &self.text[e.key_end..e.value_end],
        )
    }

    fn position(&self, key: &str) -> Option<usize> {
        let (mut low, mut high) = (0, self.entries.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.entry(mid).0.cmp(key) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| self.entry(i).1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// (key, value) in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            set: self,
            range: 0..self.entries.len(),
        }
    }

    /// Keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.iter().map(|(k, _)| k)
    }

    /// The labels as an ordinary map, to edit (a new set is built from the result).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// The entries of a [`LabelSet`] in key order.
#[derive(Clone)]
pub struct Iter<'a> {
    set: &'a LabelSet,
    range: std::ops::Range<usize>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.range.next().map(|i| self.set.entry(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.range.next_back().map(|i| self.set.entry(i))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a LabelSet {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<(String, String)> for LabelSet {
    /// Sorted by key; of a repeated key the last value wins (as collecting into a `BTreeMap`).
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut all: Vec<(String, String)> = iter.into_iter().collect();
        // Stable, so repeats of a key stay in arrival order and the last of each run wins.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let last_of_each = all
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| all.get(i + 1).is_none_or(|next| next.0 != *key))
            .map(|(_, (k, v))| (k.as_str(), v.as_str()));
        let kept: Vec<(&str, &str)> = last_of_each.collect();
        Self::from_sorted(kept.iter().copied())
    }
}

impl From<BTreeMap<String, String>> for LabelSet {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self::from_sorted(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl<const N: usize> From<[(&str, &str); N]> for LabelSet {
    fn from(pairs: [(&str, &str); N]) -> Self {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl Hash for LabelSet {
    /// The entries in order, as a `BTreeMap` hashes them (length, then each key and value).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for entry in self {
            entry.hash(state);
        }
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for LabelSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for LabelSet {
    /// As a `BTreeMap` reads a map (a repeated key: the last value).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(LabelSet::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sorted_by_key_and_the_last_repeat_wins() {
        let set: LabelSet = owned(&[("b", "1"), ("a", "2"), ("b", "3"), ("", "e")])
            .into_iter()
            .collect();
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [("", "e"), ("a", "2"), ("b", "3")]
        );
        assert_eq!(set.get("b"), Some("3"));
        assert_eq!(set.get(""), Some("e"));
        assert_eq!(set.get("c"), None);
        assert!(set.contains_key("a") && !set.contains_key("A"));
        assert_eq!(set.keys().collect::<Vec<_>>(), ["", "a", "b"]);
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn empty_values_and_multibyte_text_keep_their_boundaries() {
        let set = LabelSet::from([("é", ""), ("ab", "ü"), ("a", "bc")]);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [("a", "bc"), ("ab", "ü"), ("é", "")]
        );
        assert_eq!(set.get("é"), Some(""));
        assert!(LabelSet::default().is_empty());
        assert_eq!(LabelSet::default().get(""), None);
    }

    #[test]
    fn serializes_and_prints_as_the_map_it_replaces() {
        let pairs = owned(&[("z", "\"q\""), ("a", "x"), ("m", "")]);
        let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
        let set: LabelSet = pairs.into_iter().collect();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(
            serde_yaml::to_string(&set).unwrap(),
            serde_yaml::to_string(&map).unwrap()
        );
        assert_eq!(format!("{set:?}"), format!("{map:?}"));
        let back: LabelSet = serde_json::from_str(r#"{"b":"1","a":"2","b":"3"}"#).unwrap();
        assert_eq!(back, LabelSet::from([("a", "2"), ("b", "3")]));
        assert_eq!(
            back.to_map(),
            BTreeMap::from([("a".into(), "2".into()), ("b".into(), "3".into())])
        );
    }

    /// Thousands of labels (a tenant writes what it likes): built by sorting, not by insertion.
    #[test]
    fn many_labels_in_reverse_order() {
        let n = 20_000;
        let set: LabelSet = (0..n)
            .rev()
            .map(|i| {
                (
                    format!("traefik.http.routers.r{i:05}.rule"),
                    format!("v{i}"),
                )
            })
            .collect();
        assert_eq!(set.len(), n);
        assert_eq!(set.get("traefik.http.routers.r12345.rule"), Some("v12345"));
        assert!(set.keys().zip(set.keys().skip(1)).all(|(a, b)| a < b));
    }

    proptest! {
        /// Against the `BTreeMap` it replaces: the same entries in the same order, the same
        /// lookups (present and absent keys), length, and equality with another set.
        #[test]
        fn behaves_like_a_btreemap(
            pairs in proptest::collection::vec(("[a-c.é]{0,3}", "[x-z]{0,2}"), 0..40),
            other in proptest::collection::vec(("[a-c.é]{0,3}", "[x-z]{0,2}"), 0..40),
            probes in proptest::collection::vec("[a-c.é]{0,3}", 0..10),
        ) {
            let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
            let set: LabelSet = pairs.iter().cloned().collect();
            let other_map: BTreeMap<String, String> = other.iter().cloned().collect();
            let other_set: LabelSet = other.iter().cloned().collect();
            prop_assert_eq!(
                set.iter().collect::<Vec<_>>(),
                map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>()
            );
            prop_assert_eq!(set.iter().rev().count(), map.len());
            prop_assert_eq!(set.len(), map.len());
            prop_assert_eq!(set.is_empty(), map.is_empty());
            for key in probes.iter().chain(map.keys()) {
                prop_assert_eq!(set.get(key), map.get(key).map(String::as_str));
                prop_assert_eq!(set.contains_key(key), map.contains_key(key));
            }
            prop_assert_eq!(&LabelSet::from(map.clone()), &set);
            prop_assert_eq!(set == other_set, map == other_map);
            if set == other_set {
                let key = std::hash::RandomState::new();
                prop_assert_eq!(
                    std::hash::BuildHasher::hash_one(&key, &set),
                    std::hash::BuildHasher::hash_one(&key, &other_set)
                );
            }
            prop_assert_eq!(set.to_map(), map);
        }
    }
}
