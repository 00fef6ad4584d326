//! Proving that a host regexp (`HostRegexp`, `HostSNIRegexp`) only matches names inside a
//! domain, with the semantics Traefik gives it.
//!
//! Traefik compiles the argument with Go's `regexp` and calls `MatchString`, an unanchored
//! search, on the lower-cased host. So a regexp is confined only when every alternative ends
//! with `$` (end of text) right after a literal `.domain` (→ [`HostScope::Suffix`]), or is a
//! literal between `^` and `$` (→ [`HostScope::Exact`]). What comes before `.domain` may be
//! anything: a match still ends with `.domain`. Alternations and optional groups are
//! distributed and judged one alternative at a time.
//!
//! The regexp is parsed with `regex-syntax`, whose syntax is RE2's, the same family as Go's.
//! Where the two read the same text differently, the regexp is refused: class set operations
//! (`&&`, `--`, `~~`) and nested classes, the flags `x`, `u` and `R`, and the assertions
//! `\<`, `\>`, `\b{start}` and friends (Go reads `\<` as `<`). Go-only syntax (`\Q...\E`,
//! octal, `\C`) is an error in `regex-syntax`, hence refused too. Perl classes (`\d`, `\w`)
//! are ASCII in Go but Unicode here; that only matters before the literal domain, where
//! anything is allowed anyway.

use regex_syntax::ast::{self, Ast, ClassSetItem, Visitor};
use regex_syntax::hir::{Class, Hir, HirKind, Look};

use super::HostScope;
use super::hosts::canonical_host;

/// Most literal strings one alternative's tail may expand to (e.g. `(a|b)(c|d)` is 4).
const MAX_TAIL_STRINGS: usize = 64;
/// Longest repetition (`x{0,n}`) expanded into literal strings.
const MAX_EXPANDED_REPEAT: u32 = 4;

const HOW_TO: &str = "write it as `^[a-z0-9-]+\\.your-domain\\.example$` (any prefix, then a \
                      literal `\\.domain` and `$`) or `^exact\\.host\\.example$`";

/// The scopes a host regexp is confined to (one per alternative), or why it is not provably
/// confined.
pub(super) fn regexp_scopes(pattern: &str) -> Result<Vec<HostScope>, String> {
    if !pattern.is_ascii() {
        return Err(format!(
            "`{pattern}` has non-ASCII characters, which Traefik refuses in a host regexp"
        ));
    }
    let hir = parse_go_compatible(pattern)?;
    let mut scopes = Vec::new();
    for alternative in top_alternatives(&hir) {
        scopes.extend(alternative_scopes(alternative).map_err(|e| format!("`{pattern}` {e}"))?);
    }
    Ok(scopes)
}

/// Parses `pattern`, refusing syntax that Go's regexp would read differently.
fn parse_go_compatible(pattern: &str) -> Result<Hir, String> {
    let ast = ast::parse::ParserBuilder::new()
        .nest_limit(64)
        .octal(false)
        .build()
        .parse(pattern)
        .map_err(|e| format!("`{pattern}` is not a regexp renet can judge: {e}"))?;
    ast::visit(&ast, GoCompatibility)
        .map_err(|what| format!("`{pattern}` uses {what}, which Go's regexp reads differently"))?;
    regex_syntax::hir::translate::TranslatorBuilder::new()
        .build()
        .translate(pattern, &ast)
        .map_err(|e| format!("`{pattern}` is not a regexp renet can judge: {e}"))
}

/// Refuses the constructs where regex-syntax and Go's regexp/syntax disagree.
struct GoCompatibility;

impl Visitor for GoCompatibility {
    type Output = ();
    type Err = &'static str;

    fn finish(self) -> Result<(), &'static str> {
        Ok(())
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), &'static str> {
        let flags = match ast {
            Ast::Flags(set) => Some(&set.flags),
            Ast::Group(group) => match &group.kind {
                ast::GroupKind::NonCapturing(flags) => Some(flags),
                _ => None,
            },
            Ast::Assertion(assertion) => {
                use ast::AssertionKind::*;
                return match assertion.kind {
                    StartLine | EndLine | StartText | EndText | WordBoundary | NotWordBoundary => {
                        Ok(())
                    }
                    _ => Err("a word-boundary form such as `\\<` or `\\b{start}`"),
                };
            }
            Ast::Repetition(rep) => {
                if let ast::RepetitionKind::Range(range) = &rep.op.kind {
                    let (ast::RepetitionRange::Exactly(n)
                    | ast::RepetitionRange::AtLeast(n)
                    | ast::RepetitionRange::Bounded(_, n)) = *range;
                    if n > 1000 {
                        return Err("a repetition count above 1000");
                    }
                }
                None
            }
            _ => None,
        };
        for item in flags.map(|f| f.items.as_slice()).unwrap_or_default() {
            if let ast::FlagsItemKind::Flag(
                ast::Flag::IgnoreWhitespace | ast::Flag::Unicode | ast::Flag::CRLF,
            ) = item.kind
            {
                return Err("the flag `x`, `u` or `R`");
            }
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), &'static str> {
        match item {
            ClassSetItem::Bracketed(_) => Err("a class nested in a class (`[[...]]`)"),
            _ => Ok(()),
        }
    }

    fn visit_class_set_binary_op_pre(
        &mut self,
        _op: &ast::ClassSetBinaryOp,
    ) -> Result<(), &'static str> {
        Err("a class set operation (`&&`, `--` or `~~`)")
    }
}

/// The alternatives of the whole regexp: searching for `a|b` matches what `a` or `b` matches.
fn top_alternatives(hir: &Hir) -> Vec<&Hir> {
    match hir.kind() {
        HirKind::Alternation(alts) => alts.iter().flat_map(top_alternatives).collect(),
        HirKind::Capture(capture) => top_alternatives(&capture.sub),
        _ => vec![hir],
    }
}

/// The concatenated items of `hir`, looking through groups.
fn flat_items(hir: &Hir) -> Vec<&Hir> {
    match hir.kind() {
        HirKind::Concat(items) => items.iter().flat_map(flat_items).collect(),
        HirKind::Capture(capture) => flat_items(&capture.sub),
        _ => vec![hir],
    }
}

/// The scopes of one top-level alternative.
fn alternative_scopes(hir: &Hir) -> Result<Vec<HostScope>, String> {
    let mut budget = MAX_TAIL_STRINGS;
    items_scopes(flat_items(hir), &mut budget)
}

/// The scopes of a concatenation. One ending in an alternation (regex-syntax lifts a common
/// prefix such as `^` out of `^a$|^b$`) is distributed: `x(a|b)` is `xa|xb`.
fn items_scopes(mut items: Vec<&Hir>, budget: &mut usize) -> Result<Vec<HostScope>, String> {
    *budget = budget.checked_sub(1).ok_or_else(too_many)?;
    while items
        .last()
        .is_some_and(|last| matches!(last.kind(), HirKind::Empty))
    {
        items.pop();
    }
    if let Some(alternatives) = items.last().and_then(|last| alternation_of(last)) {
        let prefix = &items[..items.len() - 1];
        let mut scopes = Vec::new();
        for alternative in alternatives {
            let mut distributed = prefix.to_vec();
            distributed.extend(flat_items(alternative));
            scopes.extend(items_scopes(distributed, budget)?);
        }
        return Ok(scopes);
    }
    let mut anchored_end = false;
    while let Some(last) = items.last() {
        if matches!(last.kind(), HirKind::Look(Look::End)) {
            anchored_end = true;
            items.pop();
        } else if matches!(last.kind(), HirKind::Empty) {
            items.pop();
        } else {
            break;
        }
    }
    if !anchored_end {
        return Err(format!(
            "does not end with `$`: Traefik searches the host for a match anywhere, so it \
             matches any host containing it; {HOW_TO}"
        ));
    }
    tails_scopes(items, vec![Vec::new()], budget)
}

/// Walks `items` from the right, prepending literal pieces to `tails` (the literal ends
/// collected so far), until the items run out, `^` is reached, or an item that is not a small
/// literal language leaves anything possible before the tails. An alternation or optional
/// group that is not literal is distributed: `^(?:[a-z]+\.)?example\.com$` is
/// `^example\.com$` or `^[a-z]+\.example\.com$`.
fn tails_scopes(
    mut items: Vec<&Hir>,
    mut tails: Vec<Vec<u8>>,
    budget: &mut usize,
) -> Result<Vec<HostScope>, String> {
    let mut anchored_start = false;
    while let Some(item) = items.pop() {
        if items.is_empty() && matches!(item.kind(), HirKind::Look(Look::Start)) {
            anchored_start = true;
            break;
        }
        if let Some(strings) = literal_strings(item) {
            tails = prepend(&strings, &tails).ok_or_else(too_many)?;
            continue;
        }
        if let Some(choices) = choices_of(item) {
            let mut scopes = Vec::new();
            for choice in choices {
                *budget = budget.checked_sub(1).ok_or_else(too_many)?;
                let mut distributed = items.clone();
                distributed.extend(choice);
                scopes.extend(tails_scopes(distributed, tails.clone(), budget)?);
            }
            return Ok(scopes);
        }
        // Anything may come before: what was collected must be a `.domain`.
        break;
    }
    tails
        .iter()
        .map(|tail| tail_scope(tail, anchored_start))
        .collect()
}

/// The item lists an alternation or an optional item (`x?`) stands for.
fn choices_of(hir: &Hir) -> Option<Vec<Vec<&Hir>>> {
    if let Some(alternatives) = alternation_of(hir) {
        return Some(alternatives.iter().map(flat_items).collect());
    }
    match hir.kind() {
        HirKind::Repetition(rep) if rep.min == 0 && rep.max == Some(1) => {
            Some(vec![Vec::new(), flat_items(&rep.sub)])
        }
        HirKind::Capture(capture) => choices_of(&capture.sub),
        _ => None,
    }
}

/// The alternatives of `hir` when it is an alternation (looking through groups).
fn alternation_of(hir: &Hir) -> Option<&[Hir]> {
    match hir.kind() {
        HirKind::Alternation(alternatives) => Some(alternatives),
        HirKind::Capture(capture) => alternation_of(&capture.sub),
        _ => None,
    }
}

fn too_many() -> String {
    format!("expands to more than {MAX_TAIL_STRINGS} literal host names")
}

/// Every `s` of `heads` followed by every `t` of `tails`, or None past the bound.
fn prepend(heads: &[Vec<u8>], tails: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if heads.len().saturating_mul(tails.len()) > MAX_TAIL_STRINGS {
        return None;
    }
    Some(
        heads
            .iter()
            .flat_map(|h| {
                tails.iter().map(move |t| {
                    let mut s = h.clone();
                    s.extend_from_slice(t);
                    s
                })
            })
            .collect(),
    )
}

/// The scope of one literal tail: the whole host when anchored at both ends, else the domain
/// after the tail's leading dot.
fn tail_scope(tail: &[u8], anchored_start: bool) -> Result<HostScope, String> {
    let text = String::from_utf8_lossy(tail).to_ascii_lowercase();
    if !text.is_ascii() {
        // Traefik compares raw bytes here, not the punycode form canonical_host would give.
        return Err(format!(
            "ends with `{text}`, which has non-ASCII characters; {HOW_TO}"
        ));
    }
    if anchored_start {
        return canonical_host(&text)
            .map(HostScope::Exact)
            .map_err(|e| format!("matches exactly `{text}`, which is not a host name: {e}"));
    }
    let Some(domain) = text.strip_prefix('.') else {
        return Err(format!(
            "is not confined to a domain: the literal end `{text}` does not start with `\\.`, \
             so it also matches e.g. `evil{text}`; {HOW_TO}"
        ));
    };
    canonical_host(domain)
        .map(HostScope::Suffix)
        .map_err(|e| format!("ends with `{text}`, whose domain is not a host name: {e}"))
}

/// The finite set of strings `hir` matches, when it is a small literal language (literals,
/// case-insensitive letters, small alternations and repetitions of those), lower-cased.
fn literal_strings(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Empty => Some(vec![Vec::new()]),
        HirKind::Literal(lit) => Some(vec![lit.0.to_ascii_lowercase()]),
        HirKind::Class(class) => Some(class_chars(class)?.into_iter().map(|b| vec![b]).collect()),
        HirKind::Capture(capture) => literal_strings(&capture.sub),
        HirKind::Concat(items) => {
            let mut acc = vec![Vec::new()];
            for item in items.iter().rev() {
                acc = prepend(&literal_strings(item)?, &acc)?;
            }
            Some(acc)
        }
        HirKind::Alternation(alts) => {
            let mut acc = Vec::new();
            for alt in alts {
                acc.extend(literal_strings(alt)?);
                if acc.len() > MAX_TAIL_STRINGS {
                    return None;
                }
            }
            Some(acc)
        }
        HirKind::Repetition(rep) => {
            let max = rep.max?;
            if max > MAX_EXPANDED_REPEAT {
                return None;
            }
            let one = literal_strings(&rep.sub)?;
            let mut acc = Vec::new();
            let mut power = vec![Vec::new()];
            for count in 0..=max {
                if count >= rep.min {
                    acc.extend(power.iter().cloned());
                }
                power = prepend(&one, &power)?;
            }
            (acc.len() <= MAX_TAIL_STRINGS).then_some(acc)
        }
        HirKind::Look(_) => None,
    }
}

/// The lower-cased ASCII characters of a small class (`[ab]`, or what `(?i)` makes of a letter),
/// or None for a larger one. The Kelvin sign and the long s, which Go's `(?i)` also folds to
/// `k` and `s`, count as those letters (Traefik's Host matching equates them too).
fn class_chars(class: &Class) -> Option<Vec<u8>> {
    const MAX_CLASS_CHARS: u32 = 8;
    let mut size = 0;
    let mut chars: Vec<char> = Vec::new();
    let ranges: Vec<(u32, u32)> = match class {
        Class::Unicode(c) => c
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        Class::Bytes(c) => c
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
    };
    for (start, end) in ranges {
        size += end - start + 1;
        if size > MAX_CLASS_CHARS {
            return None;
        }
        chars.extend((start..=end).filter_map(char::from_u32));
    }
    let mut out: Vec<u8> = chars
        .into_iter()
        .map(|c| match c {
            '\u{212A}' => Some(b'k'),
            '\u{17F}' => Some(b's'),
            c if c.is_ascii() => Some(c.to_ascii_lowercase() as u8),
            _ => None,
        })
        .collect::<Option<_>>()?;
    out.sort_unstable();
    out.dedup();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(pattern: &str) -> Result<Vec<HostScope>, String> {
        regexp_scopes(pattern)
    }

    fn suffix(d: &str) -> HostScope {
        HostScope::Suffix(d.into())
    }

    fn exact(d: &str) -> HostScope {
        HostScope::Exact(d.into())
    }

    #[test]
    fn confined_regexps_give_their_domain() {
        let cases: &[(&str, Vec<HostScope>)] = &[
            (
                r"^[a-z]+\.shop\.example\.com$",
                vec![suffix("shop.example.com")],
            ),
            (
                r"[a-z]+\.shop\.example\.com$",
                vec![suffix("shop.example.com")],
            ),
            (r"\.example\.com$", vec![suffix("example.com")]),
            (r"^.*\.example\.com\z", vec![suffix("example.com")]),
            (r"(?i)^[a-z]+\.EXAMPLE\.com$", vec![suffix("example.com")]),
            (r"(?i)^[a-z]+\.kiosk\.com$", vec![suffix("kiosk.com")]),
            (r"^[a-z]+[.]example\.com$", vec![suffix("example.com")]),
            (r"^[a-z]+\x2eexample\.com$", vec![suffix("example.com")]),
            (r"^example\.com$", vec![exact("example.com")]),
            (
                r"^(?:www\.)?example\.com$",
                vec![exact("example.com"), exact("www.example.com")],
            ),
            (
                r"^example\.com\.?$",
                vec![exact("example.com"), exact("example.com")],
            ),
            (
                r"^(a|b)\.example\.com$",
                vec![exact("a.example.com"), exact("b.example.com")],
            ),
            (
                r"^[a-z]+\.a\.example$|^[0-9]+\.b\.example$",
                vec![suffix("a.example"), suffix("b.example")],
            ),
            (r"^[a-z]+(\.example\.com)$", vec![suffix("example.com")]),
            (
                r"^[a-z]+\.(?:a|b)\.example$",
                vec![suffix("a.example"), suffix("b.example")],
            ),
            (r"^\d+\.example\.com$", vec![suffix("example.com")]),
            (
                r"^(?P<sub>[a-z]+)\.example\.com$",
                vec![suffix("example.com")],
            ),
        ];
        for (pattern, want) in cases {
            assert_eq!(&scopes(pattern).unwrap(), want, "{pattern}");
        }
    }

    #[test]
    fn unconfined_regexps_are_refused_with_a_way_out() {
        let cases: &[(&str, &str)] = &[
            (".*", "does not end with `$`"),
            ("^.*$", "does not start with `\\.`"),
            (r"[a-z]+\.example\.com", "does not end with `$`"),
            (r"^[a-z]*example\.com$", "evilexample.com"),
            (r"^[a-z]+\.example\.com$|.*", "does not end with `$`"),
            (r"^[a-z]+\.example\.com(?m)$", "does not end with `$`"),
            (r"^[a-z]+\.example\.com$.*", "does not end with `$`"),
            (r"^[a-z]+\.[a-z]+$", "does not start with `\\.`"),
            (r"^[a-z]+\.$", "not a host name"),
            (r"^$", "not a host name"),
            (r"$", "does not start with `\\.`"),
            (r"^[a-z]+\.exa\<mple\.com$", "word-boundary"),
            (r"^[a-z]+\.exampl[e&&e]\.com$", "class set operation"),
            (r"^[a-z]+\.exampl[[e]]\.com$", "nested"),
            (r"(?x)^[a-z]+ \. example\.com$", "flag"),
            (r"^[a-z]+\Q.example.com\E$", "not a regexp renet can judge"),
            (r"^[a-z]+\.exämple\.com$", "non-ASCII"),
            (r"^[a-z]+\.\x{e9}xample\.com$", "non-ASCII"),
            (r"^a{1001}\.example\.com$", "above 1000"),
            (r"^[a-z]+\.example\.com:8080$", "not a host name"),
            (r"^(?:[a-z]+)?example\.com$", "evilexample.com"),
            (r"(?:^|[a-z])example\.com$", "evilexample.com"),
        ];
        for (pattern, want) in cases {
            let err = scopes(pattern).expect_err(pattern);
            assert!(err.contains(want), "{pattern}: {err}");
        }
    }
}
