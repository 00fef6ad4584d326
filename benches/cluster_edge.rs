//! `cargo bench --bench cluster_edge` (root): how fast a cluster edge follows etcd
//! (docs/performance.md, "Cluster").
//!
//! Builds the cluster test environment (tests/cluster_support: 3 etcd members, the edge
//! Traefik written by `renet proxy config --edge`), fills etcd with 20 servers × 500 hosts in
//! the docs/cluster.md schema (with the etcd-client crate, as the route servers do), then
//! measures **edge update time**: one new host's keys written in one transaction → the first
//! 200 through the edge for that host (median and p99 over CHANGES changes). Every host of
//! the fill points at one real backend (busybox httpd in server namespace `a`), so the edge
//! answers 200 as soon as it routes the host.
//!
//! Two layouts of the edge's routers: `per-host` (one HTTP and one TCP router per host, 7 keys
//! a host) and `grouped` (per server one HTTP router `Host(`a`) || Host(`b`) || …` and one TCP
//! router `HostSNI(`a`) || …`, 7 keys a server; a change rewrites the server's two rules). For
//! each, after the changes, the **request latency** through the edge for the host that comes
//! last in its server's rule (REQUESTS requests, one connection each).
//!
//! Fills of 20 × 50 and 20 × 500 hosts (`RENET_BENCH_HOSTS=N`: 20 × N only;
//! `RENET_BENCH_LAYOUT=per-host|grouped`: one layout only; `RENET_BENCH_CHANGES=N`). Then, with etcd empty again and a
//! real server (repo daemon, route server in the cluster, Traefik), it measures **container
//! start → first 200 through the edge** (`RENET_BENCH_CONTAINER_START=0` skips it).
//! `RENET_CLUSTER_NET=<n>` runs everything on 198.18.<n>.0/24 with its own names
//! (tests/cluster_support), beside a test run on the default network.

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;
use etcd_client::{Client, Txn, TxnOp};

const SERVERS: usize = 20;
/// Hosts per server of the fills measured, smallest first (`RENET_BENCH_HOSTS=500` for one).
const HOSTS_PER_SERVER: &[usize] = &[50, 500];
/// Changes timed per layout and size (`RENET_BENCH_CHANGES=N` for another count).
const CHANGES: usize = 20;
/// Requests timed through the edge per layout and size.
const REQUESTS: usize = 300;
/// etcd's default limit of operations in one transaction is 128.
const OPS_PER_TXN: usize = 120;

/// How the edge's host routers are laid out in etcd.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// One HTTP and one TCP router per host (`renet-host-<host>`).
    PerHost,
    /// One HTTP and one TCP router per server whose rule lists all its hosts (`renet-srv-<s>`).
    Grouped,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::PerHost => "per-host",
            Layout::Grouped => "grouped",
        }
    }
}

/// `owners` and `serving` of `host`, served by `server`.
fn claim_ops(server: &str, network_id: u32, host: &str) -> Vec<TxnOp> {
    let serving = format!(r#"{{"network_id":{network_id},"server":"{server}"}}"#);
    vec![
        TxnOp::put(
            format!("renet/owners/host/{host}"),
            network_id.to_string(),
            None,
        ),
        TxnOp::put(format!("renet/serving/host/{host}"), serving, None),
    ]
}

/// Per-host layout: the keys docs/cluster.md says server `server` writes for `host` (the
/// Traefik keys and `serving`; ownership too).
fn host_ops(server: &str, network_id: u32, host: &str) -> Vec<TxnOp> {
    let h = format!("traefik/http/routers/renet-host-{host}");
    let t = format!("traefik/tcp/routers/renet-host-{host}");
    let mut ops = claim_ops(server, network_id, host);
    ops.extend(
        [
            (format!("{h}/rule"), format!("Host(`{host}`)")),
            (format!("{h}/entryPoints/0"), "web".to_string()),
            (format!("{h}/service"), format!("renet-{server}")),
            (format!("{t}/rule"), format!("HostSNI(`{host}`)")),
            (format!("{t}/entryPoints/0"), "websecure".to_string()),
            (format!("{t}/service"), format!("renet-{server}-https")),
            (format!("{t}/tls/passthrough"), "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| TxnOp::put(k, v, None)),
    );
    ops
}

/// Grouped layout: server `server`'s two routers for all of `hosts` (sorted).
fn server_router_ops(server: &str, hosts: &std::collections::BTreeSet<String>) -> Vec<TxnOp> {
    let h = format!("traefik/http/routers/renet-srv-{server}");
    let t = format!("traefik/tcp/routers/renet-srv-{server}");
    let rule = |matcher: &str| {
        hosts
            .iter()
            .map(|host| format!("{matcher}(`{host}`)"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    [
        (format!("{h}/rule"), rule("Host")),
        (format!("{h}/entryPoints/0"), "web".to_string()),
        (format!("{h}/service"), format!("renet-{server}")),
        (format!("{t}/rule"), rule("HostSNI")),
        (format!("{t}/entryPoints/0"), "websecure".to_string()),
        (format!("{t}/service"), format!("renet-{server}-https")),
        (format!("{t}/tls/passthrough"), "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| TxnOp::put(k, v, None))
    .collect()
}

fn server_ops(server: &str, address: &str) -> Vec<TxnOp> {
    [
        (
            format!("renet/servers/{server}"),
            format!(
                r#"{{"address":"{address}","http_port":{HTTP_PORT},"https_port":{HTTPS_PORT},"name":"{server}"}}"#
            ),
        ),
        (
            format!("traefik/http/services/renet-{server}/loadBalancer/servers/0/url"),
            format!("http://{address}:{HTTP_PORT}"),
        ),
        (
            format!("traefik/tcp/services/renet-{server}-https/loadBalancer/servers/0/address"),
            format!("{address}:{HTTPS_PORT}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| TxnOp::put(k, v, None))
    .collect()
}

async fn apply(client: &mut Client, ops: Vec<TxnOp>) {
    for chunk in ops.chunks(OPS_PER_TXN) {
        client
            .txn(Txn::new().and_then(chunk.to_vec()))
            .await
            .expect("etcd transaction");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{what}: n={} median {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        v.len(),
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
    );
}

/// Polls the edge until `host` answers 200; returns when it did.
fn first_200(edge: &Edge, host: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, _)) = edge.http(host) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{host} not served by the edge within {timeout:?}:\n{}",
            tail(&edge.log_text(), 20)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let mut cluster = Cluster::start();
    // One real backend for every fake server: busybox httpd answering any Host.
    let backend_ip = net_ip(11);
    let backend = Netns::create("a", &backend_ip);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "backend\n").unwrap();
    let mut httpd = backend.command("busybox");
    httpd
        .args(["httpd", "-f", "-p", &format!("{backend_ip}:80"), "-h"])
        .arg(www.path());
    let _httpd = Proc::spawn(httpd, www.path().join("httpd.log"), "busybox httpd");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoints: Vec<String> = (0..Etcd::MEMBERS).map(Etcd::client_url).collect();
    let mut client = rt
        .block_on(Client::connect(&endpoints, None))
        .expect("connect to etcd");

    let sizes: Vec<usize> = match std::env::var("RENET_BENCH_HOSTS") {
        Ok(v) => vec![v.parse().expect("RENET_BENCH_HOSTS: hosts per server")],
        Err(_) => HOSTS_PER_SERVER.to_vec(),
    };
    let layouts: Vec<Layout> = match std::env::var("RENET_BENCH_LAYOUT").as_deref() {
        Ok("per-host") => vec![Layout::PerHost],
        Ok("grouped") => vec![Layout::Grouped],
        Ok(other) => panic!("RENET_BENCH_LAYOUT={other}: per-host or grouped"),
        Err(_) => vec![Layout::PerHost, Layout::Grouped],
    };
    for hosts_per_server in sizes {
        for &layout in &layouts {
            edge_update_time(&cluster, &rt, &mut client, layout, hosts_per_server);
            // Empty etcd again for the next run.
            rt.block_on(async {
                for prefix in ["traefik/", "renet/"] {
                    client
                        .delete(
                            prefix,
                            Some(etcd_client::DeleteOptions::new().with_prefix()),
                        )
                        .await
                        .expect("etcd delete");
                }
            });
            // The edge must have forgotten this run before the next fill (with one router per
            // host at 10,000 hosts, that rebuild alone takes tens of seconds): a stale router
            // would answer for the next run's hosts.
            wait_for(
                "the edge to drop every router from etcd",
                Duration::from_secs(600),
                || match cluster.edge.routers() {
                    Ok((http, tcp)) if http.is_empty() && tcp.is_empty() => Ok(()),
                    Ok((http, tcp)) => Err(format!("{} + {} routers left", http.len(), tcp.len())),
                    Err(e) => Err(e),
                },
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    drop(_httpd);
    drop(backend);
    if std::env::var("RENET_BENCH_CONTAINER_START").as_deref() != Ok("0") {
        container_start_to_edge(&mut cluster);
    }
}

/// A real server in the cluster: `docker run` of a site returns → first 200 through the edge.
fn container_start_to_edge(cluster: &mut Cluster) {
    let i = cluster.add_server("b");
    let endpoints = Etcd::endpoints();
    let srv = &mut cluster.servers[i];
    srv.start_daemon(NET_A);
    srv.start_route_server(Some(&endpoints));
    let mut times = Vec::new();
    for k in 0..20 {
        let host = format!("start{k:02}.example.test");
        let s = Site::new(&host, &format!("start-{k}"));
        let name = format!("start{k}");
        srv.run_site(NET_A, &name, &s);
        let start = Instant::now();
        let done = first_200(&cluster.edge, &host, Duration::from_secs(60));
        times.push(done - start);
        srv.daemon(NET_A).docker_ok(&["rm", "-f", &name]);
    }
    report(
        "container start (docker run returned) -> first 200 through the edge",
        times,
    );
}

/// Fills etcd with SERVERS x `hosts_per_server` hosts in `layout`, then measures CHANGES
/// single changes and the request latency through the edge.
fn edge_update_time(
    cluster: &Cluster,
    rt: &tokio::runtime::Runtime,
    client: &mut Client,
    layout: Layout,
    hosts_per_server: usize,
) {
    let backend_ip = net_ip(11);
    let fill = Instant::now();
    let mut ops = Vec::new();
    let mut rules: Vec<std::collections::BTreeSet<String>> = Vec::new();
    for s in 0..SERVERS {
        let server = format!("s{s:02}");
        let network_id = 4032 + 64 * s as u32;
        ops.extend(server_ops(&server, &backend_ip));
        let mut hosts = std::collections::BTreeSet::new();
        for h in 0..hosts_per_server {
            let host = format!("h{h:03}.s{s:02}.example.test");
            match layout {
                Layout::PerHost => ops.extend(host_ops(&server, network_id, &host)),
                Layout::Grouped => ops.extend(claim_ops(&server, network_id, &host)),
            }
            hosts.insert(host);
        }
        if layout == Layout::Grouped {
            ops.extend(server_router_ops(&server, &hosts));
        }
        rules.push(hosts);
    }
    let keys = ops.len();
    let traefik_keys = match layout {
        Layout::PerHost => SERVERS * (2 + 7 * hosts_per_server),
        Layout::Grouped => SERVERS * (2 + 7),
    };
    rt.block_on(apply(client, ops));
    println!(
        "[{}] filled etcd: {SERVERS} servers x {hosts_per_server} hosts, {keys} keys ({traefik_keys} under traefik/) in {:.1} s",
        layout.name(),
        fill.elapsed().as_secs_f64()
    );
    let last = format!(
        "h{:03}.s{:02}.example.test",
        hosts_per_server - 1,
        SERVERS - 1
    );
    let t = Instant::now();
    first_200(&cluster.edge, &last, Duration::from_secs(300));
    println!(
        "[{}] edge serves all {} hosts {:.1} s after the fill",
        layout.name(),
        SERVERS * hosts_per_server,
        t.elapsed().as_secs_f64()
    );
    // Let the edge settle (the fill's last rebuilds).
    std::thread::sleep(Duration::from_secs(3));
    let changes: usize = std::env::var("RENET_BENCH_CHANGES")
        .map(|v| v.parse().expect("RENET_BENCH_CHANGES: a count"))
        .unwrap_or(CHANGES);
    let mut times = Vec::new();
    for i in 0..changes {
        let s = i % SERVERS;
        let server = format!("s{s:02}");
        let host = format!("new{i:02}.s{s:02}.example.test");
        let ops = match layout {
            Layout::PerHost => host_ops(&server, 4032, &host),
            Layout::Grouped => {
                rules[s].insert(host.clone());
                let mut ops = claim_ops(&server, 4032, &host);
                ops.extend(server_router_ops(&server, &rules[s]));
                ops
            }
        };
        assert!(ops.len() <= OPS_PER_TXN, "one change is one transaction");
        let start = Instant::now();
        rt.block_on(apply(client, ops));
        // Generous: the per-host layout at 10,000 hosts takes tens of seconds on a busy machine.
        let done = first_200(&cluster.edge, &host, Duration::from_secs(300));
        println!(
            "[{}] change {i}: {:.0} ms",
            layout.name(),
            (done - start).as_secs_f64() * 1e3
        );
        times.push(done - start);
        // Changes spaced out, as single changes are (the throttle window is 200 ms).
        std::thread::sleep(Duration::from_millis(300));
    }
    report(
        &format!(
            "[{}] edge update time, one new host among {} (keys written -> first 200 through the edge)",
            layout.name(),
            SERVERS * hosts_per_server
        ),
        times,
    );
    // The last host of the last server's rule: in the grouped layout, the last alternative.
    let last_in_rule = rules[SERVERS - 1].iter().next_back().unwrap().clone();
    let mut latencies = Vec::new();
    for _ in 0..REQUESTS {
        let start = Instant::now();
        let (code, _) = cluster
            .edge
            .http(&last_in_rule)
            .expect("request through the edge");
        latencies.push(start.elapsed());
        assert_eq!(code, 200, "{last_in_rule} through the edge");
    }
    report(
        &format!(
            "[{}] request latency through the edge ({last_in_rule}, {} hosts on its server)",
            layout.name(),
            rules[SERVERS - 1].len()
        ),
        latencies,
    );
}
