//! Benchmark of rule judging (prints figures; run with `cargo bench --bench rules`): parse +
//! `host_scopes` for typical router rules, and for the largest inputs the bounds allow, so the
//! worst a repository can make the route server spend on one rule is known.

use std::hint::black_box;
use std::time::{Duration, Instant};

use renet::routing::rule::{self, MAX_MATCHERS, MAX_RULE_LEN, Protocol, Syntax};

fn main() {
    let long_regexp = format!(
        "HostRegexp(`^(?:{})\\.example\\.com$`)",
        vec!["[a-z]+"; (MAX_RULE_LEN - 64) / 7].join("|")
    );
    let many_matchers = ["Host(`a.example.com`)"; MAX_MATCHERS].join(" || ");
    // 2^8 = 256 branches, the most host_scopes distributes.
    let widest_dnf = ["(Host(`a.example.com`) || Host(`b.example.com`))"; 8].join(" && ");
    let cases: &[(&str, &str, Syntax)] = &[
        (
            "Host && PathPrefix",
            "Host(`app.example.com`) && PathPrefix(`/api`)",
            Syntax::V3,
        ),
        (
            "HostRegexp",
            r"HostRegexp(`^[a-z0-9-]+\.shop\.example\.com$`)",
            Syntax::V3,
        ),
        (
            "v2 template",
            "HostRegexp(`{sub:[a-z]+}.example.com`)",
            Syntax::V2,
        ),
        ("16 KiB regexp", &long_regexp, Syntax::V3),
        ("256 matchers", &many_matchers, Syntax::V3),
        ("256 DNF branches", &widest_dnf, Syntax::V3),
    ];
    println!(
        "{:<20} {:>8} {:>12} {:>12}",
        "rule", "bytes", "median", "max"
    );
    for (name, text, syntax) in cases {
        let runs = if text.len() > 1000 { 50 } else { 20_000 };
        let verdict = rule::parse(text, Protocol::Http, *syntax)
            .map_err(|e| e.to_string())
            .and_then(|e| rule::host_scopes(&e, Protocol::Http));
        assert!(verdict.is_ok(), "{name}: {verdict:?}");
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let expr = rule::parse(text, Protocol::Http, *syntax);
                let scopes = expr.map(|e| rule::host_scopes(&e, Protocol::Http));
                black_box(scopes).ok();
                start.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "{name:<20} {:>8} {:>9.1} µs {:>9.1} µs",
            text.len(),
            micros(times[times.len() / 2]),
            micros(times[times.len() - 1])
        );
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
