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
//! Fills of 20 × 50 and 20 × 500 hosts (`RENET_BENCH_HOSTS=N`: 20 × N only). Then, with etcd
//! empty again and a real server (repo daemon, route server in the cluster, Traefik), it
//! measures **container start → first 200 through the edge**.

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;
use etcd_client::{Client, Txn, TxnOp};

const SERVERS: usize = 20;
/// Hosts per server of the fills measured, smallest first (`RENET_BENCH_HOSTS=500` for one).
const HOSTS_PER_SERVER: &[usize] = &[50, 500];
const CHANGES: usize = 20;
/// etcd's default limit of operations in one transaction is 128.
const OPS_PER_TXN: usize = 120;

/// The keys docs/cluster.md says server `server` writes for `host` (the Traefik keys and
/// `serving`; ownership too).
fn host_ops(server: &str, network_id: u32, host: &str) -> Vec<TxnOp> {
    let serving = format!(r#"{{"network_id":{network_id},"server":"{server}"}}"#);
    let h = format!("traefik/http/routers/renet-host-{host}");
    let t = format!("traefik/tcp/routers/renet-host-{host}");
    [
        (format!("renet/owners/host/{host}"), network_id.to_string()),
        (format!("renet/serving/host/{host}"), serving),
        (format!("{h}/rule"), format!("Host(`{host}`)")),
        (format!("{h}/entryPoints/0"), "web".to_string()),
        (format!("{h}/service"), format!("renet-{server}")),
        (format!("{t}/rule"), format!("HostSNI(`{host}`)")),
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
    let backend = Netns::create("a", "198.18.72.11");
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "backend\n").unwrap();
    let mut httpd = backend.command("busybox");
    httpd
        .args(["httpd", "-f", "-p", "198.18.72.11:80", "-h"])
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
    for hosts_per_server in sizes {
        edge_update_time(&cluster, &rt, &mut client, hosts_per_server);
        // Empty etcd again for the next size.
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
        std::thread::sleep(Duration::from_secs(3));
    }

    drop(_httpd);
    drop(backend);
    container_start_to_edge(&mut cluster);
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

/// Fills etcd with SERVERS x `hosts_per_server` hosts, then measures CHANGES single changes.
fn edge_update_time(
    cluster: &Cluster,
    rt: &tokio::runtime::Runtime,
    client: &mut Client,
    hosts_per_server: usize,
) {
    let fill = Instant::now();
    let mut ops = Vec::new();
    for s in 0..SERVERS {
        let server = format!("s{s:02}");
        ops.extend(server_ops(&server, "198.18.72.11"));
        for h in 0..hosts_per_server {
            ops.extend(host_ops(
                &server,
                4032 + 64 * s as u32,
                &format!("h{h:03}.s{s:02}.example.test"),
            ));
        }
    }
    let keys = ops.len();
    rt.block_on(apply(client, ops));
    println!(
        "filled etcd: {SERVERS} servers x {hosts_per_server} hosts, {keys} keys in {:.1} s",
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
        "edge serves all {} hosts {:.1} s after the fill",
        SERVERS * hosts_per_server,
        t.elapsed().as_secs_f64()
    );
    // Let the edge settle (the fill's last rebuilds).
    std::thread::sleep(Duration::from_secs(3));
    let mut times = Vec::new();
    for i in 0..CHANGES {
        let host = format!("new{i:02}.s{:02}.example.test", i % SERVERS);
        let ops = host_ops(&format!("s{:02}", i % SERVERS), 4032, &host);
        let start = Instant::now();
        rt.block_on(apply(client, ops));
        let done = first_200(&cluster.edge, &host, Duration::from_secs(60));
        times.push(done - start);
        // Changes spaced out, as single changes are (the throttle window is 200 ms).
        std::thread::sleep(Duration::from_millis(300));
    }
    report(
        &format!(
            "edge update time, one new host among {} (keys written -> first 200 through the edge)",
            SERVERS * hosts_per_server
        ),
        times,
    );
}
