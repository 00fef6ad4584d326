//! `cargo bench --bench route_build`: route building in process at the scale of the
//! route-server bench (200 repositories × 25 containers; every fifth container has `traefik.*`
//! labels). Prints the time of each stage of a full build, of a rebuild after one container
//! changed (what the route server does on an event), and the memory held after many changes.
//! Figures go to docs/performance.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use renet::addresses::NetworkId;
use renet::routing::build::RouteBuilder;
use renet::routing::build::{Claims, Container, Health, RouteSettings};

const DAEMONS: u32 = 200;
const PER_DAEMON: u32 = 25;

fn labels(n: NetworkId, j: u32, generation: u32) -> BTreeMap<String, String> {
    let s = format!("s{j}");
    let mut l = BTreeMap::from([
        ("rediacc.service_name".to_string(), s.clone()),
        (
            "rediacc.service_ip".to_string(),
            n.slot_ip(j).unwrap().to_string(),
        ),
        ("rediacc.network_id".to_string(), n.to_string()),
        (
            "rediacc.service_port".to_string(),
            (8080 + generation % 2).to_string(),
        ),
    ]);
    if j.is_multiple_of(5) {
        for (k, v) in [
            ("traefik.enable".to_string(), "true".to_string()),
            (
                format!("traefik.http.routers.{s}.rule"),
                format!("Host(`{s}-{n}.t2.example`)"),
            ),
            (
                format!("traefik.http.routers.{s}.middlewares"),
                format!("{s}-hsts"),
            ),
            (
                format!("traefik.http.middlewares.{s}-hsts.headers.stsSeconds"),
                "15768000".to_string(),
            ),
            (
                format!("traefik.http.services.{s}.loadbalancer.server.port"),
                (8080 + generation % 2).to_string(),
            ),
        ] {
            l.insert(k, v);
        }
    }
    l
}

fn containers() -> Vec<Container> {
    (0..DAEMONS)
        .flat_map(|k| {
            let n = NetworkId::new(2816 + 64 * k).unwrap();
            (0..PER_DAEMON).map(move |j| Container {
                network_id: n,
                id: format!("{:064x}", (n.get() as u64) << 16 | j as u64),
                name: format!("c{j}"),
                labels: std::sync::Arc::new(labels(n, j, 0).into()),
                health: Health::None,
                created: j as i64,
            })
        })
        .collect()
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn stats(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.9).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3,
        v.len()
    );
}

fn main() {
    let mut all = containers();
    let mut s = renet::host::settings::Settings {
        base_domain: Some("bench.example".into()),
        ..Default::default()
    };
    s.entrypoints = vec!["websecure".into()];
    let settings = RouteSettings::from_settings(&s).expect("valid settings");
    println!(
        "## route building, {} containers ({} with traefik labels)",
        all.len(),
        all.len() / 5
    );

    let mut full = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let snap = renet::routing::build::build_with(&all, &settings, &Claims::default());
        full.push(t.elapsed());
        std::hint::black_box(snap);
    }
    stats("full build (no cache)", full);

    let mut builder = RouteBuilder::default();
    let mut claims = Claims::default();
    let t = Instant::now();
    let snap = builder.build(&all, &settings, &claims);
    println!(
        "first build of a long-lived builder: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    claims.ports = snap.ports.clone();
    claims.hosts = snap.hosts.clone();
    let rss_first = rss_mib();
    // Sampled along the way: memory must stay flat, not merely end low.
    let mut rss_steps = Vec::new();
    let mut one = Vec::new();
    let mut stages = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for i in 0..1000u32 {
        // One container changes (a redeploy with another port), in turn across repositories.
        let idx = (i as usize * 37) % all.len();
        let c = &mut all[idx];
        let j: u32 = c.name[1..].parse().unwrap();
        c.labels = std::sync::Arc::new(labels(c.network_id, j, i + 1).into());
        c.id = format!(
            "{:064x}",
            ((c.network_id.get() as u64) << 32) | (i as u64 + 1) << 8 | j as u64
        );
        let t = Instant::now();
        let snap = builder.build(&all, &settings, &claims);
        one.push(t.elapsed());
        let st = builder.timings();
        for (v, d) in stages
            .iter_mut()
            .zip([st.fragments, st.merge, st.claims, st.render])
        {
            v.push(d);
        }
        claims.ports = snap.ports;
        claims.hosts = snap.hosts;
        if (i + 1) % 200 == 0 {
            rss_steps.push(rss_mib());
        }
    }
    stats("rebuild after one container changed", one);
    for (name, v) in ["fragments", "merge", "claims", "render"]
        .iter()
        .zip(stages)
    {
        stats(&format!("  of which {name}"), v);
    }
    println!(
        "RSS after the first snapshot {:.0} MiB, after 1000 changes {:.0} MiB (every 200: {})",
        rss_first,
        rss_mib(),
        rss_steps
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
