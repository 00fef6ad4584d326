//! Rendering of the published configuration as the `/routes.yaml` body.
//!
//! Every key and every string is emitted as a double-quoted YAML scalar containing only
//! printable ASCII: anything else is a `\uXXXX` / `\UXXXXXXXX` escape. Why: label values are
//! written by untrusted tenants, and a plain (unquoted) scalar is read by YAML's type
//! resolution — `<<` becomes a merge key, `2024-01-01` a timestamp, `0x_1f` or `1_000` a
//! number under YAML 1.1 — and Traefik then refuses the whole document, i.e. every tenant's
//! routes. A quoted scalar has one reading in YAML 1.1 and 1.2 alike, and an ASCII-only body
//! leaves no character a parser may reject as non-printable. Integers and booleans come from
//! typed label fields (already validated) and stay plain.
//!
//! The layout is block style, one key per line, maps sorted (the `Value` maps are ordered), so
//! the body is byte-deterministic.

use std::fmt::Write;

use crate::routing::merge::SharedMap;
use crate::routing::traefik_labels::Value;

/// Renders a document; an empty map is `{}`.
pub fn to_yaml(doc: &Value) -> String {
    let mut out = String::new();
    match doc {
        Value::Map(m) if !m.is_empty() => write_map_entries(&mut out, m, 0),
        Value::List(items) if !items.is_empty() => write_list_items(&mut out, items, 0),
        scalar => {
            write_inline(&mut out, scalar);
            out.push('\n');
        }
    }
    out
}

/// A document of `protocol → kind → name → object`, the shape of `/routes.yaml`.
pub type Sections<'a> = Vec<(&'a str, Vec<(&'a str, &'a SharedMap)>)>;

/// The same text as [`to_yaml`] of the document `sections` describes (empty kinds and
/// protocols left out), without first copying the shared objects into one value. A route
/// builder keeps the text of each object instead (`pieces`); this is the whole-document
/// renderer of a full build.
pub fn sections_to_yaml(sections: &Sections) -> String {
    let mut out = String::new();
    for (proto, kinds) in sections {
        let kinds: Vec<_> = kinds
            .iter()
            .filter(|(_, objects)| !objects.is_empty())
            .collect();
        if kinds.is_empty() {
            continue;
        }
        out.push_str(&quote(proto));
        out.push_str(":\n");
        for (kind, objects) in kinds {
            indent(&mut out, 1);
            out.push_str(&quote(kind));
            out.push_str(":\n");
            for (name, value) in objects.iter() {
                out.push_str(&render_object(name, value));
            }
        }
    }
    if out.is_empty() {
        out.push_str("{}\n");
    }
    out
}

/// The text of one object at the depth of `http.routers.<name>`.
pub(crate) fn render_object(name: &str, value: &Value) -> String {
    let mut text = String::new();
    indent(&mut text, 2);
    text.push_str(&quote(name));
    text.push(':');
    write_value_after_indicator(&mut text, value, 3);
    text
}

/// A double-quoted scalar whose text is exactly `s` for any YAML parser.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

/// Scalars and empty collections, which fit on the line of their key.
fn write_inline(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => out.push_str(&quote(s)),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::List(_) => out.push_str("[]"),
        Value::Map(_) => out.push_str("{}"),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::List(items) => !items.is_empty(),
        Value::Map(m) => !m.is_empty(),
        _ => false,
    }
}

fn write_value_after_indicator(out: &mut String, v: &Value, level: usize) {
    if is_block(v) {
        out.push('\n');
        match v {
            Value::Map(m) => write_map_entries(out, m, level),
            Value::List(items) => write_list_items(out, items, level),
            _ => unreachable!("is_block is true only for collections"),
        }
    } else {
        out.push(' ');
        write_inline(out, v);
        out.push('\n');
    }
}

fn write_map_entries(out: &mut String, m: &crate::routing::traefik_labels::Map, level: usize) {
    for (k, v) in m {
        indent(out, level);
        out.push_str(&quote(k));
        out.push(':');
        write_value_after_indicator(out, v, level + 1);
    }
}

fn write_list_items(out: &mut String, items: &[Value], level: usize) {
    for v in items {
        indent(out, level);
        out.push('-');
        write_value_after_indicator(out, v, level + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    /// The values YAML 1.1 resolves to something other than a string when written plain.
    #[test]
    fn ambiguous_scalars_stay_strings() {
        let tricky = [
            "<<",
            "2024-01-01",
            "1_000",
            "0x_1f",
            "yes",
            "No",
            "on",
            "~",
            "null",
            "0o17",
            "1e3",
            ".inf",
            "-.NaN",
            "1:20",
            "=",
            "!tag",
            "&anchor",
            "*alias",
            "@",
            "`",
            "%",
            "{}",
            "[]",
            "- a",
            "a: b",
            "#c",
            "",
            " ",
            "\t",
            "\n",
            "\u{85}",
            "\u{2028}",
            "\u{FEFF}",
            "\u{0}",
            "\u{1F600}",
            "é",
        ];
        let mut m = BTreeMap::new();
        for (i, t) in tricky.iter().enumerate() {
            m.insert(t.to_string(), Value::Str(t.to_string()));
            m.insert(
                format!("k{i}"),
                Value::List(vec![Value::Str(t.to_string())]),
            );
        }
        let doc = Value::Map(m.into());
        let yaml = to_yaml(&doc);
        assert!(yaml.is_ascii(), "{yaml}");
        assert_eq!(parse_norway(&yaml), doc);
        assert_eq!(parse_yaml_rust2(&yaml), doc);
    }

    #[test]
    fn layout() {
        let doc = map(&[(
            "http",
            map(&[(
                "services",
                map(&[(
                    "s",
                    map(&[(
                        "loadBalancer",
                        map(&[(
                            "servers",
                            Value::List(vec![map(&[("url", Value::Str("http://x".into()))])]),
                        )]),
                    )]),
                )]),
            )]),
        )]);
        assert_eq!(
            to_yaml(&doc),
            "\"http\":\n  \"services\":\n    \"s\":\n      \"loadBalancer\":\n        \"servers\":\n          -\n            \"url\": \"http://x\"\n"
        );
        assert_eq!(to_yaml(&Value::empty_map()), "{}\n");
        assert_eq!(
            to_yaml(&map(&[
                ("a", Value::Int(-3)),
                ("b", Value::Bool(true)),
                ("c", Value::List(vec![]))
            ])),
            "\"a\": -3\n\"b\": true\n\"c\": []\n"
        );
    }

    /// Parses with serde_norway (libyaml's grammar, YAML 1.1 style) into a `Value`.
    fn parse_norway(yaml: &str) -> Value {
        fn conv(v: serde_yaml::Value) -> Value {
            match v {
                serde_yaml::Value::String(s) => Value::Str(s),
                serde_yaml::Value::Bool(b) => Value::Bool(b),
                serde_yaml::Value::Number(n) => Value::Int(n.as_i64().expect("integer")),
                serde_yaml::Value::Sequence(items) => {
                    Value::List(items.into_iter().map(conv).collect())
                }
                serde_yaml::Value::Mapping(m) => Value::Map(
                    m.into_iter()
                        .map(|(k, v)| match k {
                            serde_yaml::Value::String(k) => (k, conv(v)),
                            other => panic!("non-string key {other:?}"),
                        })
                        .collect(),
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        conv(serde_yaml::from_str(yaml).expect("serde_norway parses the body"))
    }

    /// Parses with yaml-rust2 (a YAML 1.2 parser) into a `Value`.
    fn parse_yaml_rust2(yaml: &str) -> Value {
        use yaml_rust2::Yaml;
        fn conv(v: Yaml) -> Value {
            match v {
                Yaml::String(s) => Value::Str(s),
                Yaml::Boolean(b) => Value::Bool(b),
                Yaml::Integer(i) => Value::Int(i),
                Yaml::Array(items) => Value::List(items.into_iter().map(conv).collect()),
                Yaml::Hash(m) => Value::Map(
                    m.into_iter()
                        .map(|(k, v)| match k {
                            Yaml::String(k) => (k, conv(v)),
                            other => panic!("non-string key {other:?}"),
                        })
                        .collect(),
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut docs = yaml_rust2::YamlLoader::load_from_str(yaml).expect("yaml-rust2 parses");
        assert_eq!(docs.len(), 1);
        conv(docs.remove(0))
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(Value::Str),
            "[ -~<>:#&*!|%@`'\"\\\\,\\[\\]{}-]{0,12}".prop_map(Value::Str),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
                prop::collection::btree_map(any::<String>(), inner, 0..5)
                    .prop_map(|m| Value::Map(m.into())),
            ]
        })
    }

    /// `protocol → kind → name → object`, unshared.
    type PlainDoc = BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>;

    /// [`sections_to_yaml`] gives the same text as [`to_yaml`] (the one the round-trip
    /// property below checks).
    fn sections_match(docs: &[PlainDoc]) {
        for doc in docs {
            let shared: BTreeMap<&str, BTreeMap<&str, SharedMap>> = doc
                .iter()
                .map(|(p, kinds)| {
                    let kinds = kinds
                        .iter()
                        .map(|(k, objs)| {
                            let objs = objs
                                .iter()
                                .map(|(n, v)| {
                                    (n.clone(), crate::routing::merge::Shared::new(v.clone()))
                                })
                                .collect();
                            (k.as_str(), objs)
                        })
                        .collect();
                    (p.as_str(), kinds)
                })
                .collect();
            let sections: Sections = shared
                .iter()
                .map(|(p, kinds)| (*p, kinds.iter().map(|(k, o)| (*k, o)).collect()))
                .collect();
            let reference = Value::Map(
                doc.iter()
                    .map(|(p, kinds)| {
                        let kinds: BTreeMap<String, Value> = kinds
                            .iter()
                            .filter(|(_, o)| !o.is_empty())
                            .map(|(k, o)| (k.clone(), Value::Map(o.clone().into())))
                            .collect();
                        (p.clone(), Value::Map(kinds.into()))
                    })
                    .filter(|(_, kinds)| kinds.as_map().is_some_and(|m| !m.is_empty()))
                    .collect(),
            );
            assert_eq!(sections_to_yaml(&sections), to_yaml(&reference));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, .. ProptestConfig::default() })]
        #[test]
        fn the_sections_renderer_equals_the_reference(
            docs in prop::collection::vec(
                prop::collection::btree_map(
                    "[a-c]",
                    prop::collection::btree_map(
                        "[a-c]",
                        prop::collection::btree_map("[a-d]", arb_value(), 0..4),
                        0..3,
                    ),
                    0..3,
                ),
                1..4,
            )
        ) {
            sections_match(&docs);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]
        /// Whatever a label contains, both parsers read back exactly what was rendered.
        #[test]
        fn any_value_round_trips(doc in prop::collection::btree_map(any::<String>(), arb_value(), 0..6).prop_map(|m| Value::Map(m.into()))) {
            let yaml = to_yaml(&doc);
            prop_assert!(yaml.is_ascii());
            prop_assert_eq!(parse_norway(&yaml), doc.clone());
            prop_assert_eq!(parse_yaml_rust2(&yaml), doc);
        }
    }
}
