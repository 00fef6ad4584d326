//! Several servers behind one edge, through the real parts (docs/cluster.md): a 3-member etcd
//! cluster, "servers" that are network namespaces each with its own repo daemons, route server
//! and Traefik, and an edge Traefik written by `renet proxy config --edge` reading etcd with
//! Traefik's own etcd provider. Clients talk to the edge (198.18.72.2) or straight to a
//! server's Traefik, from the root namespace.
//!
//! Network IDs 4032 and 4096 only; namespaces `renet-ct-*` (tests/cluster_support).
//! Run: `cargo test --test cluster` (root, after `scripts/test-env.sh install`).

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;

fn site(host: &str, marker: &str, tcp_port: Option<u16>) -> Site {
    Site {
        host: host.to_string(),
        marker: marker.to_string(),
        tcp_port,
    }
}

/// Waits until `f` answers 200 with `marker` in the body.
fn wait_marker(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<(u16, String), String>,
    marker: &str,
) {
    wait_for(what, timeout, || match f() {
        Ok((200, body)) if body.contains(marker) => Ok(()),
        Ok((code, body)) => Err(format!("{code}: {body}")),
        Err(e) => Err(e),
    });
}

/// The key schema of docs/cluster.md, written by hand, is what Traefik's etcd provider reads:
/// the edge sends HTTP by Host, HTTPS by SNI (passthrough to the server's own TLS) and a TCP
/// port to the server the keys name, and forgets a host when its keys go.
#[test]
fn the_edge_routes_the_documented_etcd_keys_to_the_servers_they_name() {
    let mut c = Cluster::start();
    let a = c.add_server("a");
    let b = c.add_server("b");
    let sites = [
        (
            a,
            NET_A,
            site("one.example.test", "site-one-on-a", Some(5432)),
        ),
        (
            b,
            NET_B,
            site("two.example.test", "site-two-on-b", Some(6379)),
        ),
    ];
    for (i, n, s) in &sites {
        let srv = &mut c.servers[*i];
        srv.start_daemon(*n);
        srv.run_site(*n, "site", s);
        srv.start_route_server(None);
    }
    for (i, _, s) in &sites {
        let srv = &c.servers[*i];
        wait_marker(
            &format!("{} straight from server {}", s.host, srv.name),
            Duration::from_secs(20),
            || srv.http(&s.host),
            &s.marker,
        );
        assert_eq!(
            c.edge.http(&s.host).map(|r| r.0),
            Ok(404),
            "not in etcd yet"
        );
    }
    for (i, n, s) in &sites {
        let srv = &c.servers[*i];
        write_served_keys(&c.etcd, &srv.name, srv.address(), *n, &s.host, s.tcp_port);
    }
    for (_, _, s) in &sites {
        wait_marker(
            &format!("{} over HTTP through the edge", s.host),
            Duration::from_secs(10),
            || c.edge.http(&s.host),
            &s.marker,
        );
        let (code, body) = c.edge.https(&s.host).unwrap();
        assert_eq!(code, 200, "{}: {body}", s.host);
        assert!(body.contains(&s.marker), "HTTPS {}: {body}", s.host);
        let port = s.tcp_port.unwrap();
        let answer = c.edge.tcp(port).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains(&s.marker),
            "tcp-{port}: {answer}"
        );
    }
    let (http, tcp) = c.edge.routers().unwrap();
    assert_eq!(
        http,
        ["renet-host-one.example.test", "renet-host-two.example.test"]
    );
    assert_eq!(
        tcp,
        [
            "renet-host-one.example.test",
            "renet-host-two.example.test",
            "renet-tcp-5432",
            "renet-tcp-6379"
        ]
    );
    // A host whose keys go is gone from the edge; the other stays.
    c.etcd
        .del_prefix("traefik/http/routers/renet-host-one.example.test/");
    c.etcd
        .del_prefix("traefik/tcp/routers/renet-host-one.example.test/");
    wait_for(
        "one.example.test to leave the edge",
        Duration::from_secs(10),
        || match c.edge.http("one.example.test") {
            Ok((404, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(c.edge.https("one.example.test").is_err_or_not_200());
    wait_marker(
        "two.example.test still through the edge",
        Duration::from_secs(5),
        || c.edge.http("two.example.test"),
        "site-two-on-b",
    );
}

trait NotServed {
    fn is_err_or_not_200(&self) -> bool;
}

impl NotServed for Result<(u16, String), String> {
    fn is_err_or_not_200(&self) -> bool {
        !matches!(self, Ok((200, _)))
    }
}

#[allow(dead_code)]
fn elapsed_since(t: Instant) -> String {
    format!("{:.2} s", t.elapsed().as_secs_f64())
}
