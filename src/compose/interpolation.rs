//! Compose-style `${VAR}` interpolation, for the few values renet itself must read before
//! docker compose runs (ports, bind-mount sources, env_file paths, vetted flags).
//! Docker compose still interpolates the real model; this only has to agree with it.
//!
//! Supported: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
//! `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}`, nested inside defaults.

/// Interpolates `text`, looking variables up with `lookup`. Unset variables become empty (as in
/// compose); `?` forms are errors.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let next = text[i..].find('$').map(|p| i + p).unwrap_or(b.len());
            out.push_str(&text[i..next]);
            i = next;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let end = matching_brace(text, i + 1)
                    .ok_or_else(|| format!("unterminated `${{` in {text:?}"))?;
                out.push_str(&expand(&text[i + 2..end], lookup)?);
                i = end + 1;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                out.push_str(&lookup(&text[start..j]).unwrap_or_default());
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Index of the `}` closing the `{` at `open`, honouring nesting.
fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    for (k, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + k);
                }
            }
            _ => {}
        }
    }
    None
}

fn expand(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_end);
    if name.is_empty() {
        return Err(format!("invalid interpolation `${{{inner}}}`"));
    }
    let value = lookup(name);
    let (op, arg) = if let Some(a) = rest.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = rest.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = rest.strip_prefix(":+") {
        (":+", a)
    } else if rest.is_empty() {
        ("", "")
    } else {
        rest.split_at(1)
    };
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    Ok(match op {
        "" => value.unwrap_or_default(),
        ":-" if non_empty => value.unwrap(),
        ":-" => interpolate(arg, lookup)?,
        "-" if set => value.unwrap(),
        "-" => interpolate(arg, lookup)?,
        ":+" if non_empty => interpolate(arg, lookup)?,
        "+" if set => interpolate(arg, lookup)?,
        ":+" | "+" => String::new(),
        ":?" if non_empty => value.unwrap(),
        "?" if set => value.unwrap(),
        ":?" | "?" => {
            return Err(format!(
                "required variable `{name}` is missing a value: {}",
                interpolate(arg, lookup)?
            ));
        }
        _ => return Err(format!("invalid interpolation `${{{inner}}}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            "WEB_IP" => Some("127.0.11.2".into()),
            _ => None,
        }
    }

    fn i(s: &str) -> Result<String, String> {
        interpolate(s, &env)
    }

    #[test]
    fn forms() {
        assert_eq!(i("$A-${A}").unwrap(), "alpha-alpha");
        assert_eq!(i("$$A").unwrap(), "$A");
        assert_eq!(
            i("${NOPE:-d}|${EMPTY:-d}|${EMPTY-d}|${NOPE-d}").unwrap(),
            "d|d||d"
        );
        assert_eq!(
            i("${A:+x}|${EMPTY:+x}|${EMPTY+x}|${NOPE+x}").unwrap(),
            "x||x|"
        );
        assert_eq!(i("${NOPE:-${WEB_IP}}:80").unwrap(), "127.0.11.2:80");
        assert_eq!(i("${NOPE}").unwrap(), "");
        assert_eq!(i("cost $5").unwrap(), "cost $5");
        assert!(
            i("${NOPE:?must be set}")
                .unwrap_err()
                .contains("must be set")
        );
        assert!(i("${EMPTY:?x}").is_err());
        assert_eq!(i("${EMPTY?x}").unwrap(), "");
        assert!(i("${A").is_err());
    }
}
