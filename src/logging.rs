//! Logging for every renet command: `tracing` to stderr, as text or JSON lines
//! (`--log-format`), colours only on a terminal and never with `NO_COLOR`, and every line
//! passed through [`redact`] first.
//!
//! Why redaction sits in the writer: at `RENET_LOG=debug`, libraries log whole Docker API
//! answers (a container inspect holds its environment, e.g. `DB_PASSWORD=…`, and its labels,
//! e.g. a basic-auth hash). Filtering by log target would miss the next library; scrubbing the
//! finished line catches every source.

use std::io::Write;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for journald exporters, Loki, …).
    Json,
}

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// Installs the global subscriber: filter from `RENET_LOG` (default `info`), `format`, ANSI
/// colours only when stderr is a terminal and `NO_COLOR` is unset or empty.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RENET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !no_color();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_ansi(ansi)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// True when `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// stderr, with every written chunk redacted. The fmt layer writes each event with one
/// `write_all`, so a chunk is a whole line.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = redact(&text);
        std::io::stderr().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Words that make a name (an environment variable, a label key) secret-looking, compared
/// with each `_`/`.`/`-` separated part of the name, upper-cased.
const SECRET_PARTS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PWD",
    "SECRET",
    "SECRETS",
    "TOKEN",
    "KEY",
    "APIKEY",
    "PRIVATE",
    "CREDENTIAL",
    "CREDENTIALS",
    "AUTH",
    "BASICAUTH",
    "DIGESTAUTH",
    "USERS",
    "SALT",
    "COOKIE",
    "DSN",
];

/// True when `name` looks like it holds a secret: a part is a secret word, or contains
/// PASSWORD/SECRET/TOKEN, or is a camelCase or run-together key name (`secretKey`, `APIKEY`,
/// `awsAccessKey`) — but not any word ending in "key" (`monkey`).
pub fn is_secret_name(name: &str) -> bool {
    name.split(['_', '.', '-', '/']).any(|part| {
        let p = part.to_ascii_uppercase();
        SECRET_PARTS.contains(&p.as_str())
            || ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL"]
                .iter()
                .any(|w| p.contains(w))
            || (part.len() > 3 && part.ends_with("Key"))
            || [
                "APIKEY",
                "ACCESSKEY",
                "SECRETKEY",
                "PRIVATEKEY",
                "SIGNINGKEY",
            ]
            .iter()
            .any(|w| p.ends_with(w))
    })
}

/// `"name":"value"` (JSON objects: labels, Docker answers), value with JSON escapes.
static JSON_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#""([^"\\]{1,200})"(\s*:\s*)"((?:[^"\\]|\\.)*)""#).expect("valid regex")
});
/// `NAME=value` (environment entries, `key=value` fields): value up to a quote, whitespace,
/// comma or bracket.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"([A-Za-z_][A-Za-z0-9_.\-/]{0,200})=((?:\\.|[^"\s,\]\}\\])+)"#)
        .expect("valid regex")
});

/// Replaces the values of secret-looking names in `text` with [`REDACTED`].
pub fn redact(text: &str) -> String {
    let step = JSON_PAIR.replace_all(text, |c: &Captures| {
        if is_secret_name(&c[1]) {
            format!("\"{}\"{}\"{REDACTED}\"", &c[1], &c[2])
        } else {
            c[0].to_string()
        }
    });
    ASSIGNMENT
        .replace_all(&step, |c: &Captures| {
            if is_secret_name(&c[1]) && &c[2] != REDACTED {
                format!("{}={REDACTED}", &c[1])
            } else {
                c[0].to_string()
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in [
            "DB_PASSWORD",
            "POSTGRES_PASSWORD",
            "api_token",
            "AWS_SECRET_ACCESS_KEY",
            "secretKey",
            "traefik.http.middlewares.a.basicauth.users",
            "GITHUB_TOKEN",
            "MYSQL_ROOT_PASSWORD",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "PATH",
            "HOME",
            "SERVICE_IP",
            "rediacc.service_name",
            "monkey",
            "Hostname",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn env_lists_and_label_objects_are_scrubbed() {
        let inspect = r#"{"Env":["PATH=/bin","DB_PASSWORD=hunter2","API_TOKEN=abc\"d"],"Labels":{"traefik.http.middlewares.a.basicauth.users":"admin:$apr1$x","rediacc.service_name":"db"}}"#;
        let out = redact(inspect);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("abc") && !out.contains(r#"\"d"#), "{out}");
        assert!(!out.contains("apr1"), "{out}");
        assert!(out.contains("PATH=/bin"), "{out}");
        assert!(out.contains(r#""rediacc.service_name":"db""#), "{out}");
        assert!(out.contains("DB_PASSWORD=[redacted]"), "{out}");
        let line = "event start db_password=hunter2 name=web";
        assert_eq!(redact(line), "event start db_password=[redacted] name=web");
    }
}
