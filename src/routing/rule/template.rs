//! v2 host templates (`{sub:[a-z]+}.example.com`), turned into the Go regexp Traefik matches
//! with: `HostRegexp` through gorilla/mux (Traefik's fork containous/mux, `regexp.go`
//! `newRouteRegexp` with `matchHost`), `HostSNIRegexp` through `preparePattern` in
//! traefik `pkg/muxer/tcp/matcher_v2.go`, which copies it. Both build
//! `(?i)^` + quoted literal parts + `(?P<vN>pattern)` per `{name:pattern}` (`{name}` is
//! `[^.]+`) + `$`, i.e. an anchored, case-insensitive regexp.

/// The regexp Traefik compiles from a v2 host template, or why Traefik would refuse it.
pub(super) fn host_template_regexp(template: &str) -> Result<String, String> {
    if !template.is_ascii() {
        return Err("non-ASCII characters are not allowed (Traefik refuses them)".into());
    }
    let braces = brace_indices(template)?;
    let mut pattern = String::from("(?i)^");
    let mut end = 0;
    for (index, pair) in braces.chunks(2).enumerate() {
        let (open, close) = (pair[0], pair[1]);
        pattern.push_str(&quote_meta(&template[end..open]));
        end = close;
        let inner = &template[open + 1..close - 1];
        let (name, pat) = match inner.split_once(':') {
            Some((name, pat)) => (name, pat),
            None => (inner, "[^.]+"),
        };
        if name.is_empty() || pat.is_empty() {
            return Err(format!(
                "missing name or pattern in `{}`",
                &template[open..close]
            ));
        }
        // gorilla/mux also compiles `^pattern$` alone, so a pattern that only parses once
        // embedded (one that closes the group early, e.g. `a)|(.*`) is refused by Traefik.
        regex_syntax::Parser::new()
            .parse(&format!("^{pat}$"))
            .map_err(|e| format!("pattern `{pat}` is not a valid regexp: {e}"))?;
        pattern.push_str(&format!("(?P<v{index}>{pat})"));
    }
    pattern.push_str(&quote_meta(&template[end..]));
    pattern.push('$');
    Ok(pattern)
}

/// gorilla/mux `braceIndices`: the start and end (exclusive) of every top-level `{...}`.
fn brace_indices(s: &str) -> Result<Vec<usize>, String> {
    let mut level: i64 = 0;
    let mut start = 0;
    let mut indices = Vec::new();
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'{' => {
                level += 1;
                if level == 1 {
                    start = i;
                }
            }
            b'}' => {
                level -= 1;
                if level == 0 {
                    indices.push(start);
                    indices.push(i + 1);
                } else if level < 0 {
                    return Err(format!("unbalanced braces in `{s}`"));
                }
            }
            _ => {}
        }
    }
    if level != 0 {
        return Err(format!("unbalanced braces in `{s}`"));
    }
    Ok(indices)
}

/// Go's `regexp.QuoteMeta`.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_gorilla_regexps() {
        let cases = [
            ("example.com", r"(?i)^example\.com$"),
            ("{sub}.example.com", r"(?i)^(?P<v0>[^.]+)\.example\.com$"),
            (
                "{sub:[a-z]{2,3}}.{x:a|b}.example.com",
                r"(?i)^(?P<v0>[a-z]{2,3})\.(?P<v1>a|b)\.example\.com$",
            ),
        ];
        for (template, want) in cases {
            assert_eq!(host_template_regexp(template).unwrap(), want, "{template}");
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        for template in [
            "{sub.example.com",
            "}x{",
            "{:a}.example.com",
            "{a:}.example.com",
            "{x:a)|(.*}.example.com",
            "{x:é}.example.com",
        ] {
            assert!(host_template_regexp(template).is_err(), "{template}");
        }
    }
}
