//! The route server's Prometheus `/metrics` (OpenMetrics text, which Prometheus scrapes).
//!
//! Two kinds of figures:
//! - state gauges (routers, services, conflicts, rejections, refusals, and per daemon:
//!   connected, stale, containers) are read from the published snapshot and the discovery
//!   state at each scrape, into a registry made for that scrape, so they can never drift from
//!   what `/health` shows;
//! - histograms (rebuild duration, event lag) live as long as the server, in [`Histograms`],
//!   and are added to each scrape's registry (a clone shares the same counts).
//!
//! Built with `prometheus-client`, the Prometheus project's own Rust client, so the text
//! format is the crate's, not hand-written.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::routing::discovery::DaemonReport;

/// Histograms that accumulate over the server's life.
#[derive(Debug, Clone)]
pub struct Histograms {
    /// Seconds from a change of the container set to the new snapshot being published.
    pub rebuild_seconds: Histogram,
    /// Seconds from a Docker event (its own timestamp) to discovery having applied it.
    pub event_lag_seconds: Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            // 100 µs … ~3 s
            rebuild_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 1 ms … ~30 s: a lagging daemon shows in the upper buckets.
            event_lag_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

/// The counts of one snapshot, as `/health` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub routers: usize,
    pub services: usize,
    pub conflicts: usize,
    pub rejected: usize,
    pub refused: usize,
    /// Registered repositories whose daemon socket is missing.
    pub missing: usize,
    pub degraded: bool,
}

type NetworkLabels = Vec<(String, String)>;

/// Renders the OpenMetrics text of one scrape.
pub fn render(counts: &Counts, daemons: &[DaemonReport], hist: &Histograms) -> String {
    let mut registry = Registry::with_prefix("renet");
    let gauge = |registry: &mut Registry, name: &str, help: &str, v: usize| {
        let g: Gauge = Gauge::default();
        g.set(v as i64);
        registry.register(name, help, g);
    };
    gauge(
        &mut registry,
        "routers",
        "Routers in the published configuration",
        counts.routers,
    );
    gauge(
        &mut registry,
        "services",
        "Services in the published configuration",
        counts.services,
    );
    gauge(
        &mut registry,
        "conflicts",
        "Conflicts listed in /health",
        counts.conflicts,
    );
    gauge(
        &mut registry,
        "rejected_containers",
        "Containers never routed (/health rejected)",
        counts.rejected,
    );
    gauge(
        &mut registry,
        "refused",
        "Refused routers and objects (/health refused)",
        counts.refused,
    );
    gauge(
        &mut registry,
        "missing_daemons",
        "Registered repositories without a daemon socket",
        counts.missing,
    );
    gauge(
        &mut registry,
        "degraded",
        "1 when /health answers degraded (503)",
        usize::from(counts.degraded),
    );

    let connected = Family::<NetworkLabels, Gauge>::default();
    let stale = Family::<NetworkLabels, Gauge>::default();
    let containers = Family::<NetworkLabels, Gauge>::default();
    for d in daemons {
        let labels = vec![("network_id".to_string(), d.network_id.to_string())];
        connected.get_or_create(&labels).set(i64::from(d.connected));
        stale.get_or_create(&labels).set(i64::from(d.stale));
        containers.get_or_create(&labels).set(d.containers as i64);
    }
    registry.register(
        "daemon_connected",
        "1 when the repo daemon answers and its events are followed",
        connected,
    );
    registry.register(
        "daemon_stale",
        "1 while a daemon's containers are the last known ones of an earlier run",
        stale,
    );
    registry.register(
        "daemon_containers",
        "Labelled running containers known on the repo daemon",
        containers,
    );
    registry.register(
        "rebuild_duration_seconds",
        "Time to rebuild and publish the configuration after a change",
        hist.rebuild_seconds.clone(),
    );
    registry.register(
        "event_lag_seconds",
        "Time from a Docker event to discovery having applied it",
        hist.event_lag_seconds.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addresses::NetworkId;

    #[test]
    fn renders_gauges_per_daemon_and_histograms() {
        let h = Histograms::default();
        h.rebuild_seconds.observe(0.002);
        let d = DaemonReport {
            network_id: NetworkId::new(2816).unwrap(),
            socket: "/s/docker-2816.sock".into(),
            connected: true,
            containers: 3,
            stale: false,
            last_error: None,
        };
        let text = render(
            &Counts {
                routers: 2,
                ..Default::default()
            },
            &[d],
            &h,
        );
        assert!(text.contains("renet_routers 2\n"), "{text}");
        assert!(
            text.contains("renet_daemon_containers{network_id=\"2816\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("renet_rebuild_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
