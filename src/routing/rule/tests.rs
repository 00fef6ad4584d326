//! Table-driven tests of the rule parser and host judgements, and property tests: no input
//! panics, random rules written in random legal spellings parse back to the same tree, and
//! every host a rule matches (by Traefik's semantics, [`super::eval`]) is in its scopes.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::eval::{Evaluator, in_scopes, m};
use super::matchers::{self, Arity, Kind};
use super::*;

const HTTP: Protocol = Protocol::Http;
const TCP: Protocol = Protocol::Tcp;

fn exact(h: &str) -> HostScope {
    HostScope::Exact(h.into())
}

fn suffix(h: &str) -> HostScope {
    HostScope::Suffix(h.into())
}

fn scopes_of(rule: &str, protocol: Protocol, syntax: Syntax) -> Result<Vec<HostScope>, String> {
    let expr = parse(rule, protocol, syntax).map_err(|e| format!("parse: {e}"))?;
    host_scopes(&expr, protocol).map(|s| s.into_iter().collect())
}

fn and(a: Expr, b: Expr) -> Expr {
    Expr::And(Box::new(a), Box::new(b))
}

fn or(a: Expr, b: Expr) -> Expr {
    Expr::Or(Box::new(a), Box::new(b))
}

fn not(a: Expr) -> Expr {
    Expr::Not(Box::new(a))
}

/// One argument list of the right size for `arity`.
fn args_for(arity: Arity, name: &str) -> Vec<&'static str> {
    let value = if name == "Query" { "a=b" } else { "/x" };
    match arity {
        Arity::Exactly(n) => vec![value; n],
        Arity::OneOrTwo | Arity::AtLeastOne => vec![value],
        Arity::Pairs => vec![value, value],
    }
}

#[test]
fn every_matcher_parses_in_every_accepted_spelling() {
    for protocol in [HTTP, TCP] {
        for syntax in [Syntax::V3, Syntax::V2] {
            for spec in matchers::table(protocol, syntax) {
                let args = args_for(spec.arity, spec.name);
                let quoted: Vec<String> = args.iter().map(|a| format!("`{a}`")).collect();
                let want = m(spec.name, &args);
                let want = if syntax == Syntax::V2 && spec.kind == Kind::HostRegexp {
                    m(spec.name, &[r"(?i)^/x$"])
                } else {
                    want
                };
                for spelling in matchers::spellings(spec.name) {
                    let rule = format!("{spelling}({})", quoted.join(", "));
                    assert_eq!(parse(&rule, protocol, syntax), Ok(want.clone()), "{rule}");
                }
            }
        }
    }
}

#[test]
fn title_case_spellings_are_traefiks() {
    let [orig, lower, upper, title] = matchers::spellings("HostSNIRegexp");
    assert_eq!(
        [orig, lower, upper, title],
        [
            "HostSNIRegexp",
            "hostsniregexp",
            "HOSTSNIREGEXP",
            "Hostsniregexp"
        ]
        .map(String::from)
    );
    for rule in [
        "hostSNI(`a.com`)",
        "HostSni(`a.com`)",
        "hOSTSNI(`a.com`)",
        "Host_SNI(`a.com`)",
    ] {
        let err = parse(rule, TCP, Syntax::V3).unwrap_err();
        assert!(err.message.contains("unknown matcher"), "{rule}: {err}");
    }
    let err = parse("hoST(`a.com`)", HTTP, Syntax::V3).unwrap_err();
    assert!(
        err.message.contains("Host, host, HOST and Host"),
        "{}",
        err.message
    );
}

#[test]
fn wrong_argument_counts_are_refused() {
    let cases: &[(&str, Protocol, Syntax, &str)] = &[
        (
            "Host(`a.com`, `b.com`)",
            HTTP,
            Syntax::V3,
            "exactly 1 argument",
        ),
        ("Header(`X-A`)", HTTP, Syntax::V3, "exactly 2 arguments"),
        ("Query(`a`, `b`, `c`)", HTTP, Syntax::V3, "1 or 2 arguments"),
        ("Host()", HTTP, Syntax::V3, "got 0"),
        ("HostSNI(`a.com`, `b.com`)", TCP, Syntax::V3, "exactly 1"),
        ("ALPN()", TCP, Syntax::V2, "1 or more"),
        ("Headers(`X-A`)", HTTP, Syntax::V2, "even number"),
        (
            "HeadersRegexp(`X-A`, `a`, `X-B`)",
            HTTP,
            Syntax::V2,
            "even number",
        ),
        ("Host()", HTTP, Syntax::V2, "got 0"),
        ("Query(`a`)", HTTP, Syntax::V2, "name=value"),
    ];
    for (rule, protocol, syntax, want) in cases {
        let err = parse(rule, *protocol, *syntax).expect_err(rule);
        assert!(err.message.contains(want), "{rule}: {err}");
    }
}

#[test]
fn matchers_of_another_protocol_or_syntax_are_unknown() {
    let cases: &[(&str, Protocol, Syntax)] = &[
        ("HostHeader(`a.com`)", HTTP, Syntax::V3),
        ("Headers(`a`, `b`)", HTTP, Syntax::V3),
        ("HeaderRegexp(`a`, `b`)", HTTP, Syntax::V2),
        ("PathRegexp(`/a`)", HTTP, Syntax::V2),
        ("QueryRegexp(`a`)", HTTP, Syntax::V2),
        ("HostSNI(`a.com`)", HTTP, Syntax::V3),
        ("Host(`a.com`)", TCP, Syntax::V3),
        ("PathPrefix(`/`)", TCP, Syntax::V2),
        ("Hostname(`a.com`)", HTTP, Syntax::V3),
    ];
    for (rule, protocol, syntax) in cases {
        let err = parse(rule, *protocol, *syntax).expect_err(rule);
        assert!(err.message.contains("unknown matcher"), "{rule}: {err}");
        assert_eq!(err.offset, 0, "{rule}");
    }
}

#[test]
fn spelling_tricks_give_the_canonical_scope_or_are_refused() {
    let ok: &[(&str, Protocol, Syntax, &[HostScope])] = &[
        (
            "Host(`example.com.`)",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        (
            "host(`Example.COM`)",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        (
            "HOST(`EXAMPLE.com.`)",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        (
            "Host (`example.com`)",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        (
            "Host\t/* x */(`example.com`)",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        (
            "Host(\"\\x65xample.com\")",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        (
            "Host(\"\\145xample\\u002ecom\")",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        (
            "Host(\"\\U00000065xample.com\")",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        (
            "Host(`exa\rmple.com`)",
            HTTP,
            Syntax::V3,
            &[exact("example.com")],
        ),
        ("Host(`a.com`,)", HTTP, Syntax::V3, &[exact("a.com")]),
        ("!!Host(`a.com`)", HTTP, Syntax::V3, &[exact("a.com")]),
        (
            "!(!Host(`a.com`) || PathPrefix(`/x`))",
            HTTP,
            Syntax::V3,
            &[exact("a.com")],
        ),
        (
            "Host(`a.com`) && (PathPrefix(`/x`) || Path(`/y`))",
            HTTP,
            Syntax::V3,
            &[exact("a.com")],
        ),
        (
            "(Host(`a.com`) || Host(`b.com`)) && !ClientIP(`10.0.0.0/8`)",
            HTTP,
            Syntax::V3,
            &[exact("a.com"), exact("b.com")],
        ),
        (
            "Host(`a.com`) && Host(`b.com`)",
            HTTP,
            Syntax::V3,
            &[exact("a.com"), exact("b.com")],
        ),
        (
            "Host(`*.example.com`)",
            HTTP,
            Syntax::V3,
            &[suffix("example.com")],
        ),
        (
            r"HostRegexp(`^[a-z]+\.shop\.example\.com$`)",
            HTTP,
            Syntax::V3,
            &[suffix("shop.example.com")],
        ),
        (
            r"hostregexp(`^[a-z]+\.victim\.com$`) && Path(`/`)",
            HTTP,
            Syntax::V3,
            &[suffix("victim.com")],
        ),
        // v2
        (
            "Host(`a.com`, `B.com.`)",
            HTTP,
            Syntax::V2,
            &[exact("a.com"), exact("b.com")],
        ),
        ("HostHeader(`a.com`)", HTTP, Syntax::V2, &[exact("a.com")]),
        ("hostheader(`a.com`)", HTTP, Syntax::V2, &[exact("a.com")]),
        (
            "HostRegexp(`{sub:[a-z]+}.example.com`)",
            HTTP,
            Syntax::V2,
            &[suffix("example.com")],
        ),
        (
            "HostRegexp(`{sub}.a.example`, `www.b.example`)",
            HTTP,
            Syntax::V2,
            &[suffix("a.example"), exact("www.b.example")],
        ),
        // TCP
        ("HostSNI(`*`)", TCP, Syntax::V3, &[HostScope::Any]),
        (
            "HostSNI(`a.com`, `*`)",
            TCP,
            Syntax::V2,
            &[HostScope::Any, exact("a.com")],
        ),
        (
            "HostSNI(`*.Example.com.`)",
            TCP,
            Syntax::V3,
            &[suffix("example.com")],
        ),
        (
            "hostsni(`a.com`) && ALPN(`h2`)",
            TCP,
            Syntax::V3,
            &[exact("a.com")],
        ),
        (
            r"HostSNIRegexp(`^[a-z]+\.example\.com$`)",
            TCP,
            Syntax::V3,
            &[suffix("example.com")],
        ),
        (
            "HostSNIRegexp(`{x:[a-z]+}.example.com`)",
            TCP,
            Syntax::V2,
            &[suffix("example.com")],
        ),
    ];
    for (rule, protocol, syntax, want) in ok {
        let got = scopes_of(rule, *protocol, *syntax).unwrap_or_else(|e| panic!("{rule}: {e}"));
        let want: BTreeSet<HostScope> = want.iter().cloned().collect();
        let got: BTreeSet<HostScope> = got.into_iter().collect();
        assert_eq!(got, want, "{rule}");
    }

    let refused: &[(&str, Protocol, Syntax, &str)] = &[
        (
            "PathPrefix(`/`)",
            HTTP,
            Syntax::V3,
            "rule `PathPrefix(`/`)` is not confined",
        ),
        (
            "Host(`a.com`) || PathPrefix(`/`)",
            HTTP,
            Syntax::V3,
            "branch `PathPrefix(`/`)` is not confined to a host name: every `||` branch needs \
             its own Host(...)",
        ),
        (
            "Host(`a.com`) || ClientIP(`1.2.3.4`)",
            HTTP,
            Syntax::V3,
            "branch `ClientIP",
        ),
        (
            "Host(`a.com`) || !Host(`b.com`)",
            HTTP,
            Syntax::V3,
            "branch `!Host(`b.com`)`",
        ),
        ("!Host(`b.com`)", HTTP, Syntax::V3, "not under `!`"),
        (
            "!(Host(`a.com`) && Path(`/`))",
            HTTP,
            Syntax::V3,
            "branch `!Host(`a.com`)`",
        ),
        (
            "HostRegexp(`.*`)",
            HTTP,
            Syntax::V3,
            "does not end with `$`",
        ),
        (
            "HostRegexp(`^.*$`)",
            HTTP,
            Syntax::V3,
            "not confined to a domain",
        ),
        (
            r"HostRegexp(`[a-z]+\.example\.com`)",
            HTTP,
            Syntax::V3,
            "does not end with `$`",
        ),
        (
            r"HostRegexp(`^[a-z]*example\.com$`)",
            HTTP,
            Syntax::V3,
            "evilexample.com",
        ),
        (
            "Host(`a.com`) && HostRegexp(`.*`)",
            HTTP,
            Syntax::V3,
            "HostRegexp: regexp",
        ),
        ("Host(`*`)", HTTP, Syntax::V3, "matches every host name"),
        ("Host(`*`)", HTTP, Syntax::V2, "matches every host name"),
        (
            "Host(`exämple.com`)",
            HTTP,
            Syntax::V3,
            "write it as `xn--exmple-cua.com`",
        ),
        ("Host(\"\\u00e9.com\")", HTTP, Syntax::V3, "non-ASCII"),
        ("Host(`a.com:8080`)", HTTP, Syntax::V3, "':'"),
        ("Host(`a..com`)", HTTP, Syntax::V3, "empty label"),
        ("Host(`*a.example.com`)", HTTP, Syntax::V3, "'*'"),
        ("Host(`*.*.example.com`)", HTTP, Syntax::V3, "'*'"),
        ("Host(` a.com`)", HTTP, Syntax::V3, "' '"),
        (
            "HostRegexp(`{sub:.*}`)",
            HTTP,
            Syntax::V2,
            "not confined to a domain",
        ),
        (
            "HostRegexp(`{sub:[a-z]+}example.com`)",
            HTTP,
            Syntax::V2,
            "evil",
        ),
        (
            "HostSNI(`*`) || ALPN(`h2`)",
            TCP,
            Syntax::V3,
            "HostSNI(...)",
        ),
        (
            "HostSNIRegexp(`.+`)",
            TCP,
            Syntax::V3,
            "does not end with `$`",
        ),
        (
            "HostSNI(`a.com`) || ClientIP(`1.2.3.4`)",
            TCP,
            Syntax::V2,
            "branch `ClientIP",
        ),
    ];
    for (rule, protocol, syntax, want) in refused {
        let err = scopes_of(rule, *protocol, *syntax).expect_err(rule);
        assert!(err.contains(want), "{rule}: {err}");
    }
}

#[test]
fn v2_host_regexp_stores_the_regexp_traefik_compiles() {
    let expr = parse("HostRegexp(`{sub:[a-z]+}.Example.com`)", HTTP, Syntax::V2).unwrap();
    assert_eq!(
        expr,
        m("HostRegexp", &[r"(?i)^(?P<v0>[a-z]+)\.Example\.com$"])
    );
    let err = parse("HostRegexp(`{sub.example.com`)", HTTP, Syntax::V2).unwrap_err();
    assert!(err.message.contains("unbalanced braces"), "{err}");
}

#[test]
fn structure_follows_go_precedence() {
    let (a, b, c) = (
        m("Host", &["a.com"]),
        m("Path", &["/b"]),
        m("Method", &["GET"]),
    );
    let cases = [
        (
            "Host(`a.com`) || Path(`/b`) && Method(`GET`)",
            or(a.clone(), and(b.clone(), c.clone())),
        ),
        (
            "(Host(`a.com`) || Path(`/b`)) && Method(`GET`)",
            and(or(a.clone(), b.clone()), c.clone()),
        ),
        (
            "Host(`a.com`) && Path(`/b`) && Method(`GET`)",
            and(and(a.clone(), b.clone()), c.clone()),
        ),
        (
            "!Host(`a.com`) && Path(`/b`)",
            and(not(a.clone()), b.clone()),
        ),
        (
            "!(Host(`a.com`) && Path(`/b`))",
            not(and(a.clone(), b.clone())),
        ),
        (
            "Host(`a.com`) ||\n  // the API\n  Path(`/b`) /* end */ // done",
            or(a.clone(), b.clone()),
        ),
        ("Host(`a.com`)\n", a.clone()),
        ("Host(`a.com`) // only\n\n", a.clone()),
        ("Host(\n`a.com`,\n)", a.clone()),
    ];
    for (rule, want) in cases {
        let got = parse(rule, HTTP, Syntax::V3).unwrap_or_else(|e| panic!("{rule:?}: {e}"));
        assert_eq!(got, want, "{rule:?}");
        let printed = got.to_string();
        assert_eq!(parse(&printed, HTTP, Syntax::V3), Ok(want), "{printed}");
    }
}

#[test]
fn string_escapes_decode_as_go_does() {
    let cases = [
        (r#""a\x2ecom""#, "a.com"),
        (r#""\141""#, "a"),
        (r#""\u00e9\U0001F600""#, "é😀"),
        (r#""\xc3\xa9""#, "é"),
        (r#""\a\b\f\n\r\t\v\\\"""#, "\u{7}\u{8}\u{c}\n\r\t\u{b}\\\""),
        (r#""\x00""#, "\0"),
        ("`\\x41`", "\\x41"),
        ("`a\"b`", "a\"b"),
        ("`multi\nline`", "multi\nline"),
    ];
    for (literal, want) in cases {
        let rule = format!("Path({literal})");
        assert_eq!(
            parse(&rule, HTTP, Syntax::V3),
            Ok(m("Path", &[want])),
            "{rule}"
        );
    }
}

#[test]
fn malformed_rules_get_a_clear_error_with_offset() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "empty"),
        ("  \n ", 0, "empty"),
        ("Host(", 5, "not closed"),
        ("Host(`a.com`", 12, "to close `Host(`"),
        ("Host(`a.com", 5, "raw string"),
        ("Host(\"a.com)", 5, "not closed"),
        ("Host(\"a\nb\")", 5, "not closed on its line"),
        ("Host(`a.com` `b.com`)", 13, "expected `)`"),
        ("Host(example)", 5, "must be strings"),
        ("Host(1)", 5, "unexpected character '1'"),
        ("Host('a.com')", 5, "one character"),
        ("(Host(`a.com`)", 14, "to close the parenthesis"),
        ("Host(`a.com`))", 13, "after a complete expression"),
        ("Host(`a.com`) &&", 16, "ends where a matcher"),
        ("&& Host(`a.com`)", 0, "expected a matcher"),
        ("Host(`a.com`) & Path(`/`)", 14, "`&&` means and"),
        ("Host(`a.com`) | Path(`/`)", 14, "`||` means or"),
        ("Host(`a.com`) == Path(`/`)", 14, "unexpected character '='"),
        ("Host.x(`a.com`)", 4, "unexpected character '.'"),
        ("Host(`a.com`...)", 12, "unexpected character '.'"),
        ("Host(``)", 5, "empty argument"),
        ("Host(`a.com`);", 13, "one expression"),
        ("Host(`a.com`) Path(`/`)", 14, "after a complete expression"),
        ("Host(`a.com`)\n|| Path(`/`)", 13, "line break after `)`"),
        ("Host\n(`a.com`)", 4, "line break after `Host`"),
        ("Host(`a.com`\n)", 12, "line break after a string"),
        ("Host(`a.com`) /* a\nb */ || Path(`/`)", 14, "line break"),
        ("Host(`a.com`) /* x", 14, "not closed"),
        ("Host(\"\\q\")", 6, "unknown escape"),
        ("Host(\"\\'\")", 6, "unknown escape"),
        ("Host(\"\\x4\")", 6, "2 hexadecimal"),
        ("Host(\"\\400\")", 6, "above \\377"),
        ("Host(\"\\18\")", 6, "3 digits"),
        ("Host(\"\\uD800\")", 6, "not a Unicode code point"),
        ("Host(\"\\U00110000\")", 6, "not a Unicode code point"),
        ("Host(\"\\xff\")", 5, "not UTF-8"),
        ("Host(`a\0b`)", 7, "NUL"),
        ("\u{feff}Host(`a.com`)", 0, "byte-order mark"),
        ("Host(`é`) || x(`a`)", 13, "unknown matcher `x`"),
        ("é", 0, "unexpected character 'é'"),
        (
            "Host(`a.com`) || Host\u{a0}(`b`)",
            21,
            "unexpected character",
        ),
    ];
    for (rule, offset, want) in cases {
        let err = parse(rule, HTTP, Syntax::V3).expect_err(rule);
        assert!(err.message.contains(want), "{rule:?}: {err}");
        assert_eq!(err.offset, *offset, "{rule:?}: {err}");
        assert_eq!(
            err.to_string(),
            format!("at character {offset}: {}", err.message)
        );
    }
}

#[test]
fn bounds_are_errors_not_crashes() {
    let deep = |n: usize| format!("{}Host(`a.com`){}", "(".repeat(n), ")".repeat(n));
    assert!(parse(&deep(MAX_DEPTH - 1), HTTP, Syntax::V3).is_ok());
    let err = parse(&deep(MAX_DEPTH), HTTP, Syntax::V3).unwrap_err();
    assert!(err.message.contains("deeper than 64"), "{err}");
    let nots = format!("{}Host(`a.com`)", "!".repeat(10_000));
    assert!(
        parse(&nots, HTTP, Syntax::V3)
            .unwrap_err()
            .message
            .contains("deeper")
    );
    let opens = "(".repeat(MAX_RULE_LEN);
    assert!(parse(&opens, HTTP, Syntax::V3).is_err());
    let too_long = format!("Host(`{}`)", "a".repeat(MAX_RULE_LEN));
    assert!(
        parse(&too_long, HTTP, Syntax::V3)
            .unwrap_err()
            .message
            .contains("above 16384")
    );

    let many = vec!["Host(`a.com`)"; MAX_MATCHERS + 1].join("||");
    let err = parse(&many, HTTP, Syntax::V3).unwrap_err();
    assert!(err.message.contains("more than 256 matchers"), "{err}");
    let most = vec!["Host(`a.com`)"; MAX_MATCHERS].join("||");
    let expr = parse(&most, HTTP, Syntax::V3).unwrap();
    assert_eq!(host_scopes(&expr, HTTP), Ok([exact("a.com")].into()));

    // 2^9 = 512 branches once distributed.
    let product = ["(Host(`a.com`) || Host(`b.com`))"; 9].join(" && ");
    let expr = parse(&product, HTTP, Syntax::V3).unwrap();
    let err = host_scopes(&expr, HTTP).unwrap_err();
    assert!(err.contains("more than 256 `||` branches"), "{err}");
    let negated = format!("!({})", ["(!Host(`a.com`) && !Path(`/`))"; 9].join(" || "));
    let expr = parse(&negated, HTTP, Syntax::V3).unwrap();
    assert!(host_scopes(&expr, HTTP).is_err());
}

#[test]
fn host_scope_membership_and_overlap() {
    let (a, below, any) = (
        exact("a.example.com"),
        suffix("example.com"),
        HostScope::Any,
    );
    assert!(a.contains("A.Example.com."));
    assert!(below.contains("x.y.example.com"));
    assert!(!below.contains("example.com"));
    assert!(!below.contains("evilexample.com"));
    assert!(!below.contains("*.example.com"));
    assert!(any.contains("anything.org"));
    assert!(a.overlaps(&below) && below.overlaps(&a));
    assert!(suffix("shop.example.com").overlaps(&below));
    assert!(!exact("example.com").overlaps(&below));
    assert!(!suffix("xample.com").overlaps(&below));
    assert!(!exact("b.example.com").overlaps(&a));
    assert!(any.overlaps(&a));
    assert_eq!(
        [a, below, any].map(|s| s.to_string()),
        ["a.example.com", "*.example.com", "*"].map(String::from)
    );
}

#[test]
fn rule_syntax_label() {
    assert_eq!(rule_syntax(None), Ok(Syntax::V3));
    assert_eq!(rule_syntax(Some("v3")), Ok(Syntax::V3));
    assert_eq!(rule_syntax(Some("v2")), Ok(Syntax::V2));
    for bad in ["V2", "v1", "", "default", " v2"] {
        let err = rule_syntax(Some(bad)).unwrap_err();
        assert!(err.contains("use `v3`"), "{bad}: {err}");
    }
}

#[test]
fn evaluator_follows_traefik_host_semantics() {
    let mut eval = Evaluator::new(HTTP);
    let mut none = || false;
    let host = m("Host", &["Example.com."]);
    for (request, want) in [
        ("example.com", true),
        ("EXAMPLE.COM.", true),
        ("example.com..", true),
        ("a.example.com", false),
    ] {
        assert_eq!(eval.matches(&host, request, &mut none), want, "{request}");
    }
    let wild = m("Host", &["*.example.com"]);
    assert!(eval.matches(&wild, "a.example.com", &mut none));
    assert!(!eval.matches(&wild, "a.b.example.com", &mut none));
    assert!(!eval.matches(&wild, "example.com", &mut none));
    let re = m("HostRegexp", &[r"\.example\.com$"]);
    assert!(eval.matches(&re, "A.B.Example.com", &mut none));
    assert!(in_scopes("a.example.com..", [suffix("example.com")].iter()));
}

// ---------------------------------------------------------------- property tests

/// (protocol, syntax, canonical name, arity) of every matcher, for generators.
fn all_specs(exclude_templates: bool) -> Vec<(Protocol, Syntax, &'static str, Arity)> {
    let mut out = Vec::new();
    for protocol in [HTTP, TCP] {
        for syntax in [Syntax::V3, Syntax::V2] {
            for spec in matchers::table(protocol, syntax) {
                if exclude_templates && syntax == Syntax::V2 && spec.kind == Kind::HostRegexp {
                    continue;
                }
                out.push((protocol, syntax, spec.name, spec.arity));
            }
        }
    }
    out
}

fn arg_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => prop::sample::select(vec!['.', '-', '/', '*', '=', ' ', '`', '"', '\\', '\'']),
        1 => prop::sample::select(vec!['\n', '\r', '\t', '\0', '\u{1}', '\u{7f}', '\u{feff}']),
        1 => prop::sample::select(vec!['é', 'ß', '€', '😀', '\u{85}', 'K']),
    ]
}

fn arg_value(name: &'static str, syntax: Syntax) -> impl Strategy<Value = String> {
    proptest::collection::vec(arg_char(), 1..8).prop_map(move |chars| {
        let s: String = chars.into_iter().collect();
        if syntax == Syntax::V2 && name == "Query" && !s.contains('=') {
            format!("{s}=v")
        } else {
            s
        }
    })
}

fn arity_counts(arity: Arity) -> Vec<usize> {
    match arity {
        Arity::Exactly(n) => vec![n],
        Arity::OneOrTwo => vec![1, 2],
        Arity::AtLeastOne => vec![1, 2, 3],
        Arity::Pairs => vec![2, 4],
    }
}

/// A random rule tree for one protocol and syntax.
fn rule_tree(protocol: Protocol, syntax: Syntax) -> impl Strategy<Value = Expr> {
    let specs: Vec<_> = all_specs(true)
        .into_iter()
        .filter(|(p, s, _, _)| *p == protocol && *s == syntax)
        .collect();
    let leaf = prop::sample::select(specs).prop_flat_map(move |(_, syntax, name, arity)| {
        prop::sample::select(arity_counts(arity))
            .prop_flat_map(move |n| proptest::collection::vec(arg_value(name, syntax), n))
            .prop_map(move |args| {
                Expr::Matcher(Matcher {
                    name: name.to_string(),
                    args,
                })
            })
    });
    tree_of(leaf.boxed())
}

fn tree_of(leaf: BoxedStrategy<Expr>) -> impl Strategy<Value = Expr> {
    leaf.prop_recursive(5, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(not),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| and(a, b)),
            (inner.clone(), inner).prop_map(|(a, b)| or(a, b)),
        ]
    })
}

/// Writes a tree in Traefik's grammar with choices (spacing, comments, name spelling, string
/// forms, escapes, extra parentheses) taken from `tape`.
struct Writer<'t> {
    tape: &'t [u8],
    at: usize,
    out: String,
}

impl Writer<'_> {
    fn pick(&mut self, n: usize) -> usize {
        let byte = self.tape.get(self.at % self.tape.len().max(1)).copied();
        self.at += 1;
        byte.map_or(0, |b| (b as usize).wrapping_add(self.at / 7) % n)
    }

    /// Blank space; a line break only where Go inserts no semicolon.
    fn blank(&mut self, newline_ok: bool) {
        let forms: &[&str] = if newline_ok {
            &[
                "",
                "",
                " ",
                "\t",
                " /* c */ ",
                "\n",
                "\n  ",
                " // note\n",
                "/* a\nb */",
            ]
        } else {
            &["", "", " ", "\t ", "/* c */", " /**/ "]
        };
        let form = forms[self.pick(forms.len())];
        self.out.push_str(form);
    }

    fn expr(&mut self, expr: &Expr, outer: u8) {
        let extra = self.pick(6) == 0;
        let (prec, left, op, right) = match expr {
            Expr::Matcher(m) => return self.wrapped(extra, |w| w.matcher(m)),
            Expr::Not(inner) => {
                return self.wrapped(extra, |w| {
                    w.out.push('!');
                    w.blank(true);
                    w.expr(inner, 3);
                });
            }
            Expr::Or(a, b) => (1, a, "||", b),
            Expr::And(a, b) => (2, a, "&&", b),
        };
        self.wrapped(extra || outer > prec, |w| {
            w.expr(left, prec);
            w.blank(false);
            w.out.push_str(op);
            w.blank(true);
            w.expr(right, prec + 1);
        });
    }

    fn wrapped(&mut self, parens: bool, body: impl FnOnce(&mut Self)) {
        if parens {
            self.out.push('(');
            self.blank(true);
        }
        body(self);
        if parens {
            self.blank(false);
            self.out.push(')');
        }
    }

    fn matcher(&mut self, m: &Matcher) {
        let spellings = matchers::spellings(&m.name);
        let name = spellings[self.pick(4)].clone();
        self.out.push_str(&name);
        self.blank(false);
        self.out.push('(');
        let mut after_comma = true;
        for (i, arg) in m.args.iter().enumerate() {
            self.blank(true);
            self.string(arg);
            self.blank(false);
            after_comma = i + 1 < m.args.len() || self.pick(4) == 0;
            if after_comma {
                self.out.push(',');
            }
        }
        self.blank(after_comma);
        self.out.push(')');
    }

    fn string(&mut self, value: &str) {
        let raw_ok = !value.contains(['`', '\r', '\0', '\u{feff}']);
        if raw_ok && self.pick(2) == 0 {
            self.out.push('`');
            self.out.push_str(value);
            self.out.push('`');
            return;
        }
        self.out.push('"');
        for c in value.chars() {
            self.escaped_char(c);
        }
        self.out.push('"');
    }

    fn escaped_char(&mut self, c: char) {
        let plain_ok = !matches!(c, '"' | '\\' | '\n' | '\0' | '\u{feff}');
        let mut utf8 = [0u8; 4];
        let bytes = c.encode_utf8(&mut utf8).as_bytes().to_vec();
        match self.pick(6) {
            0 | 1 if plain_ok => self.out.push(c),
            2 => bytes
                .iter()
                .for_each(|b| self.out.push_str(&format!("\\x{b:02X}"))),
            3 => bytes
                .iter()
                .for_each(|b| self.out.push_str(&format!("\\{b:03o}"))),
            4 if (c as u32) <= 0xFFFF => self.out.push_str(&format!("\\u{:04x}", c as u32)),
            _ => self.out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
}

fn write_randomly(expr: &Expr, tape: &[u8]) -> String {
    let mut w = Writer {
        tape,
        at: 0,
        out: String::new(),
    };
    w.blank(true);
    w.expr(expr, 0);
    w.blank(true);
    w.out
}

/// Strings made of rule fragments, to reach deep into the lexer and parser.
fn rule_like() -> impl Strategy<Value = String> {
    let fragments = vec![
        "Host(",
        "host(",
        "HOSTSNI(",
        "HostRegexp(",
        "PathPrefix(",
        "HostSNI(",
        "Headers(",
        "`",
        "\"",
        "\\x",
        "\\u00",
        "\\",
        "41",
        "a.com",
        "*.",
        "*",
        ")",
        "(",
        ",",
        "&&",
        "||",
        "!",
        " ",
        "\n",
        "\r",
        "/*",
        "*/",
        "//",
        "^",
        "$",
        "\\.",
        "[a-z]+",
        ".*",
        "{s:",
        "}",
        "é",
        "\0",
        "\u{feff}",
        "|",
        "&",
        ";",
        "...",
        "0",
    ];
    proptest::collection::vec(prop::sample::select(fragments), 0..40).prop_map(|v| v.concat())
}

fn check_no_panic(input: &str) {
    for protocol in [HTTP, TCP] {
        for syntax in [Syntax::V3, Syntax::V2] {
            if let Ok(expr) = parse(input, protocol, syntax) {
                let _ = host_scopes(&expr, protocol);
                if syntax == Syntax::V3 {
                    let printed = expr.to_string();
                    assert_eq!(parse(&printed, protocol, syntax), Ok(expr), "{printed}");
                }
            }
        }
    }
}

/// Host matchers and candidate hosts for the soundness property.
const HOST_ARGS: &[&str] = &[
    "example.com",
    "a.example.com",
    "*.example.com",
    "Example.COM.",
    "other.org",
    "*",
    "*.b.example.com",
    "xn--bcher-kva.example",
    "bad..name",
];

const REGEXP_ARGS: &[&str] = &[
    r"^[a-z]+\.example\.com$",
    r"\.example\.com$",
    r"^(?:www\.)?other\.org$",
    r"(?i)^.*\.EXAMPLE\.com$",
    r".*",
    r"^[a-z]*example\.com$",
    r"[a-z]+\.example\.com",
    r"^a\.example\.com$|^b\.other\.org$",
    r"^(a|b)\.c\.example\.com\.?$",
    r"example\.com$",
    r"(?i)^[a-z]+\.kiosk\.com$",
    r"(?i)^(?P<v0>[^.]+)\.example\.com$",
    r"^[a-z]+\.example\.com$|[a-z]+",
    r"^(?:[a-z]+\.)?example\.com$",
];

const CANDIDATE_HOSTS: &[&str] = &[
    "example.com",
    "a.example.com",
    "A.Example.Com",
    "x.y.example.com",
    "example.com.",
    "a.example.com.",
    "a.example.com..",
    ".example.com",
    "evilexample.com",
    "example.com.evil.org",
    "a.example.com.evil.org",
    "www.other.org.evil.net",
    "a.c.example.com.x",
    "other.org",
    "www.other.org",
    "b.other.org",
    "a.c.example.com",
    "b.c.example.com.",
    "x.b.example.com",
    "kiosk.com",
    "x.kiosk.com",
    "xn--bcher-kva.example",
    "",
    "*",
    "anything",
];

fn host_rule(protocol: Protocol) -> impl Strategy<Value = Expr> {
    let (name, regexp_name, extra_name) = match protocol {
        Protocol::Http => ("Host", "HostRegexp", "HostHeader"),
        Protocol::Tcp => ("HostSNI", "HostSNIRegexp", "HostSNI"),
    };
    let host_args = proptest::collection::vec(prop::sample::select(HOST_ARGS), 1..3);
    let leaf = prop_oneof![
        3 => prop::sample::select(HOST_ARGS).prop_map(move |h| m(name, &[h])),
        2 => prop::sample::select(REGEXP_ARGS).prop_map(move |r| m(regexp_name, &[r])),
        1 => host_args.prop_map(move |hs| m(extra_name, &hs)),
        3 => prop::sample::select(vec!["/", "/api"]).prop_map(|p| m("PathPrefix", &[p])),
    ];
    tree_of(leaf.boxed())
}

fn host_candidates() -> impl Strategy<Value = Vec<String>> {
    let generated = (
        "[a-z.]{0,6}",
        prop::sample::select(vec!["", ".example.com", ".org"]),
    )
        .prop_map(|(a, b)| format!("{a}{b}"));
    proptest::collection::vec(generated, 0..6)
}

fn check_sound(expr: &Expr, protocol: Protocol, extra_hosts: &[String]) -> Result<(), String> {
    let Ok(scopes) = host_scopes(expr, protocol) else {
        return Ok(());
    };
    let mut eval = Evaluator::new(protocol);
    let mut others = 0u32;
    eval.matches(expr, "", &mut || {
        others += 1;
        false
    });
    let worlds = 1u64 << others.min(8);
    let hosts = CANDIDATE_HOSTS
        .iter()
        .copied()
        .chain(extra_hosts.iter().map(String::as_str));
    for host in hosts {
        for world in 0..worlds {
            let mut n = 0;
            let mut assign = || {
                n += 1;
                world >> ((n - 1) % 64) & 1 == 1
            };
            if eval.matches(expr, host, &mut assign) && !in_scopes(host, scopes.iter()) {
                return Err(format!(
                    "`{expr}` matches `{host}`, outside its scopes {scopes:?}"
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics(input in any::<String>()) {
        check_no_panic(&input);
    }

    #[test]
    fn rule_like_input_never_panics(input in rule_like()) {
        check_no_panic(&input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn written_rules_parse_back_to_the_same_tree(
        (protocol, syntax, expr) in prop::sample::select(vec![
            (HTTP, Syntax::V3), (HTTP, Syntax::V2), (TCP, Syntax::V3), (TCP, Syntax::V2),
        ]).prop_flat_map(|(p, s)| rule_tree(p, s).prop_map(move |e| (p, s, e))),
        tape in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let text = write_randomly(&expr, &tape);
        prop_assert_eq!(parse(&text, protocol, syntax), Ok(expr), "{:?}", text);
    }

    #[test]
    fn host_scopes_hold_every_host_the_rule_matches(
        (protocol, expr) in prop::sample::select(vec![HTTP, TCP])
            .prop_flat_map(|p| host_rule(p).prop_map(move |e| (p, e))),
        extra in host_candidates(),
    ) {
        if let Err(e) = check_sound(&expr, protocol, &extra) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// Regexps and hosts over one small alphabet, so that random hosts often match random regexps.
fn regexp_like() -> impl Strategy<Value = String> {
    let pieces = vec![
        "^", "$", r"\.", ".", "[a-z]+", "[a-z]*", "(?i)", "(?:", "(", ")", "|", "?", "+", "*",
        "example", "com", "a", "b", "k", "K", ".*", r"\z", "[.]", r"\x2e", "[ab]", "{1,2}", "(?m)",
        r"\b", "-", "[^.]+",
    ];
    proptest::collection::vec(prop::sample::select(pieces), 1..12).prop_map(|v| v.concat())
}

fn host_like() -> impl Strategy<Value = String> {
    let pieces = vec![
        "a", "b", "example", "com", ".", ".", "k", "evil", "K", "-", "\u{212a}",
    ];
    proptest::collection::vec(prop::sample::select(pieces), 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn confined_regexps_match_only_inside_their_scopes(
        pattern in regexp_like(),
        hosts in proptest::collection::vec(host_like(), 1..24),
    ) {
        let expr = m("HostRegexp", &[&pattern]);
        if let Ok(scopes) = host_scopes(&expr, HTTP) {
            let mut eval = Evaluator::new(HTTP);
            let mut hosts = hosts;
            // The scopes' own names, and their look-alikes, are the likeliest to go wrong.
            for scope in &scopes {
                if let HostScope::Exact(name) | HostScope::Suffix(name) = scope {
                    let swapped = |from: char, to: &str| name.replacen(from, to, 1);
                    for name in [name.clone(), swapped('a', "b"), swapped('b', "a"),
                                 swapped('.', "x"), swapped('k', "K")] {
                        hosts.extend([format!("x{name}"), format!("x.{name}"),
                                      format!("{name}.x"), format!(".{name}"), name]);
                    }
                }
            }
            for host in &hosts {
                if eval.matches(&expr, host, &mut || false) {
                    prop_assert!(in_scopes(host, scopes.iter()),
                        "`{}` matches {:?}, outside {:?}", pattern, host, scopes);
                }
            }
        }
    }
}
