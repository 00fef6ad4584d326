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
    let s = Site::new(host, marker);
    match tcp_port {
        Some(p) => s.tcp(p),
        None => s,
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
        // The keys were written one by one: the edge may have read the HTTP router first.
        wait_marker(
            &format!("{} over HTTPS through the edge", s.host),
            Duration::from_secs(10),
            || c.edge.https(&s.host),
            &s.marker,
        );
        let port = s.tcp_port.unwrap();
        let answer = wait_for(
            &format!("tcp-{port} through the edge"),
            Duration::from_secs(10),
            || {
                c.edge
                    .tcp(port)
                    .and_then(|a| if a.contains(&s.marker) { Ok(a) } else { Err(a) })
            },
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "tcp-{port}: {answer}");
    }
    let (http, tcp) = c.edge.routers().unwrap();
    assert_eq!(http, ["renet-srv-a", "renet-srv-b"]);
    assert_eq!(
        tcp,
        [
            "renet-srv-a",
            "renet-srv-b",
            "renet-tcp-5432",
            "renet-tcp-6379"
        ]
    );
    // A server whose routers go is gone from the edge; the other stays.
    c.etcd.del_prefix("traefik/http/routers/renet-srv-a/");
    c.etcd.del_prefix("traefik/tcp/routers/renet-srv-a/");
    // The two prefixes go in two etcd revisions: the edge may apply the HTTP router's removal
    // before the TCP (SNI) router's, so both are awaited together.
    wait_for(
        "one.example.test to leave the edge over HTTP and HTTPS",
        Duration::from_secs(10),
        || match (
            c.edge.http("one.example.test"),
            c.edge.https("one.example.test"),
        ) {
            (Ok((404, _)), https) if https.is_err_or_not_200() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
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

/// Bad endpoints are refused with the endpoint named, a non-zero exit, and nothing written;
/// `--cluster` without `--edge` is refused too (a server joins with `route-server --cluster`).
#[test]
fn the_edge_configuration_refuses_bad_endpoints_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (args, named) in [
        (
            vec!["--edge", "--cluster", "http://198.18.72.3"],
            "`http://198.18.72.3`",
        ),
        (
            vec!["--edge", "--cluster", "198.18.72.3:2379"],
            "give the scheme",
        ),
        (
            vec!["--edge", "--cluster", "http://198.18.72.3:2379/v3"],
            "no path",
        ),
        (
            vec![
                "--edge",
                "--cluster",
                "http://198.18.72.3:2379,https://198.18.72.4:2379",
            ],
            "some are http",
        ),
        (vec!["--edge", "--cluster", " , "], "none given"),
        (vec!["--cluster", "http://198.18.72.3:2379"], "needs --edge"),
    ] {
        let out = std::process::Command::new(renet_bin())
            .args(["proxy", "config"])
            .args(&args)
            .arg("--settings")
            .arg(dir.path().join("renet.json"))
            .arg("--out-dir")
            .arg(dir.path().join("traefik"))
            .arg("--unit-dir")
            .arg(dir.path().join("units"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(named), "{args:?}: {err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{args:?} wrote something"
        );
    }
    let out = std::process::Command::new(renet_bin())
        .args(["proxy", "config", "--edge"])
        .arg("--settings")
        .arg(dir.path().join("renet.json"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "--edge without --cluster");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// With the route servers in the cluster (`renet route-server --cluster`)

/// The etcd value of `<prefix>/serving/host/<host>` for network `n` on `server`.
fn serving(n: u32, server: &str) -> String {
    format!(r#"{{"network_id":{n},"server":"{server}"}}"#)
}

/// A cluster with servers `a` and `b`, daemons 4032 on `a` and 4096 on `b`, route servers in
/// the cluster.
fn two_servers() -> Cluster {
    let mut c = Cluster::start();
    let endpoints = Etcd::endpoints();
    for (name, n) in [("a", NET_A), ("b", NET_B)] {
        let i = c.add_server(name);
        let srv = &mut c.servers[i];
        srv.start_daemon(n);
        srv.start_route_server(Some(&endpoints));
    }
    c
}

/// `/health` of `srv` lists a refused router for `host` whose owner is network `owner`.
fn refused_for(srv: &Server, host: &str, owner: u32) -> Result<(), String> {
    let h = srv.health()?;
    let refused = h["refused"].as_array().cloned().unwrap_or_default();
    let hit = refused.iter().any(|r| {
        r["rule"].as_str().is_some_and(|rule| rule.contains(host))
            && r["owner"].to_string().contains(&owner.to_string())
    });
    if hit {
        Ok(())
    } else {
        Err(format!("no refusal of {host} (owner {owner}) in {h}"))
    }
}

#[test]
fn each_repository_is_reached_on_its_own_server_through_the_edge() {
    let c = two_servers();
    let one = site("one.example.test", "repo-4032-on-a", Some(5432));
    let two = site("two.example.test", "repo-4096-on-b", Some(6379));
    c.servers[0].run_site(NET_A, "one", &one);
    c.servers[1].run_site(NET_B, "two", &two);
    for (s, n, server) in [(&one, NET_A, "a"), (&two, NET_B, "b")] {
        wait_marker(
            &format!("{} over HTTP through the edge", s.host),
            Duration::from_secs(20),
            || c.edge.http(&s.host),
            &s.marker,
        );
        let (code, body) = c.edge.https(&s.host).unwrap();
        assert!(
            code == 200 && body.contains(&s.marker),
            "HTTPS {}: {code} {body}",
            s.host
        );
        let port = s.tcp_port.unwrap();
        let answer = wait_for(
            &format!("tcp-{port} through the edge"),
            Duration::from_secs(10),
            || {
                c.edge
                    .tcp(port)
                    .and_then(|a| if a.contains(&s.marker) { Ok(a) } else { Err(a) })
            },
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(
            c.etcd.get(&format!("renet/owners/host/{}", s.host)),
            Some(n.to_string())
        );
        assert_eq!(
            c.etcd.get(&format!("renet/serving/host/{}", s.host)),
            Some(serving(n, server))
        );
        assert_eq!(
            c.etcd.get(&format!("renet/owners/tcp/{port}")),
            Some(n.to_string())
        );
    }
}

/// The first repository to claim a host keeps it cluster-wide: the other server's claim is
/// refused whichever arrives first, and when both start at the same instant exactly one wins.
#[test]
fn a_host_has_one_owner_across_servers_in_either_order_and_in_a_race() {
    let c = two_servers();
    let (a, b) = (&c.servers[0], &c.servers[1]);
    // Sequential, both orders.
    for (round, (first, n1, second, n2)) in [(a, NET_A, b, NET_B), (b, NET_B, a, NET_A)]
        .into_iter()
        .enumerate()
    {
        let host = format!("order{round}.example.test");
        let winner = format!("winner-{round}-{}", first.name);
        let loser = format!("loser-{round}-{}", second.name);
        first.run_site(
            n1,
            &format!("o{round}"),
            &Site::new(&host, &winner).slot(1 + round as u32),
        );
        wait_marker(
            &format!("{host} on {}", first.name),
            Duration::from_secs(20),
            || c.edge.http(&host),
            &winner,
        );
        second.run_site(
            n2,
            &format!("o{round}"),
            &Site::new(&host, &loser).slot(1 + round as u32),
        );
        wait_for(
            &format!("{host} refused on {}", second.name),
            Duration::from_secs(20),
            || refused_for(second, &host, n1),
        );
        for _ in 0..10 {
            let (code, body) = c.edge.http(&host).unwrap();
            assert!(
                code == 200 && body.contains(&winner),
                "{host}: {code} {body}\n{}",
                c.logs()
            );
            let (_, body) = c.edge.https(&host).unwrap();
            assert!(body.contains(&winner), "{host} HTTPS: {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Not served by the loser's own Traefik either.
        assert!(
            !second
                .http(&host)
                .map(|r| r.1)
                .unwrap_or_default()
                .contains(&loser)
        );
        assert_eq!(
            c.etcd.get(&format!("renet/owners/host/{host}")),
            Some(n1.to_string())
        );
    }
    // Races: both containers started at the same instant, fresh host each time.
    for round in 0..5u32 {
        let host = format!("race{round}.example.test");
        let barrier = std::sync::Barrier::new(2);
        let slot = 3 + round;
        std::thread::scope(|scope| {
            for (srv, n) in [(a, NET_A), (b, NET_B)] {
                let barrier = &barrier;
                let host = &host;
                scope.spawn(move || {
                    let args = Site::new(host, &format!("race-{round}-{n}"))
                        .slot(slot)
                        .docker_run_args(n, &format!("race{round}"));
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    barrier.wait();
                    srv.daemon(n).docker_ok(&args);
                });
            }
        });
        let owner: u32 = wait_for(
            &format!("an owner of {host}"),
            Duration::from_secs(20),
            || {
                c.etcd
                    .get(&format!("renet/owners/host/{host}"))
                    .ok_or_else(|| "no owner yet".to_string())
            },
        )
        .parse()
        .unwrap();
        let (winner, loser, lost) = if owner == NET_A {
            (a, b, NET_B)
        } else {
            (b, a, NET_A)
        };
        let _ = lost;
        let marker = format!("race-{round}-{owner}");
        wait_marker(
            &format!("{host} through the edge"),
            Duration::from_secs(20),
            || c.edge.http(&host),
            &marker,
        );
        wait_for(
            &format!("{host} refused on {}", loser.name),
            Duration::from_secs(20),
            || refused_for(loser, &host, owner),
        );
        assert_eq!(
            c.etcd.get(&format!("renet/serving/host/{host}")),
            Some(serving(owner, &winner.name))
        );
        for _ in 0..10 {
            let (code, body) = c.edge.http(&host).unwrap();
            assert!(
                code == 200 && body.contains(&marker),
                "race {round}: {code} {body}"
            );
        }
        println!(
            "race {round}: won by network {owner} on server {}",
            winner.name
        );
    }
}

/// A repository moving from server `a` to server `b` keeps its host: the edge sends it to `a`
/// until `a` lets go, then to `b`; no request is answered by anybody else in between.
#[test]
fn a_moving_repository_keeps_its_host_with_no_other_answer_in_between() {
    move_repository(false);
}

/// The same move while a third party (network 4096, already on `b`) asks for the host: it is
/// refused throughout, and it must not keep the owner from arriving on `b`.
/// (`b`'s local first-claim table once recorded the intruder's claim although the cluster
/// refused it, and then refused the moving owner locally: nobody served the host.)
#[test]
fn a_third_party_on_the_destination_neither_takes_nor_blocks_a_moving_host() {
    move_repository(true);
}

/// Sets the flag when dropped: a client loop stops also when the test panics (a thread scope
/// waits for its threads before it unwinds).
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn move_repository(with_intruder: bool) {
    let mut c = two_servers();
    let host = "move.example.test";
    c.servers[0].run_site(NET_A, "mv", &Site::new(host, "moving-repo-on-a"));
    wait_marker(
        "the host on a",
        Duration::from_secs(20),
        || c.edge.http(host),
        "moving-repo-on-a",
    );
    if with_intruder {
        c.servers[1].run_site(NET_B, "intruder", &Site::new(host, "intruder").slot(5));
        wait_for("the intruder refused", Duration::from_secs(20), || {
            refused_for(&c.servers[1], host, NET_A)
        });
    }
    // The repository's daemon on b, too (same network ID, b's own folders).
    c.servers[1].start_daemon(NET_A);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let answers = std::thread::scope(|scope| {
        let edge = &c.edge;
        let stop = &stop;
        let _stop_on_panic = StopOnDrop(stop);
        let client = scope.spawn(move || {
            let mut seen: Vec<(u16, String)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(match edge.http(host) {
                    Ok((code, body)) => (code, body.trim().to_string()),
                    Err(e) => (0, e),
                });
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        let b = &c.servers[1];
        b.run_site(NET_A, "mv", &Site::new(host, "moving-repo-on-b"));
        // b waits while a serves it.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            c.etcd.get(&format!("renet/serving/host/{host}")),
            Some(serving(NET_A, "a")),
            "b took the host while a still serves it"
        );
        // The repository goes down on a.
        c.servers[0].remove_site(NET_A, "mv");
        let t = Instant::now();
        wait_for(
            "the host to follow to b",
            Duration::from_secs(20),
            || match edge.http(host) {
                Ok((200, body)) if body.contains("moving-repo-on-b") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        println!(
            "host moved to b {:.2} s after the repository went down on a",
            t.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        client.join().unwrap()
    });
    let mut from_a = 0;
    let mut from_b = 0;
    for (code, body) in &answers {
        if *code == 200 {
            match body.as_str() {
                "moving-repo-on-a" => from_a += 1,
                "moving-repo-on-b" => from_b += 1,
                other => panic!("a 200 not from the repository: {other:?}\n{answers:?}"),
            }
        }
    }
    assert!(from_a > 0 && from_b > 0, "{answers:?}");
    assert!(!answers.iter().any(|(_, b)| b.contains("intruder")));
    assert_eq!(
        c.etcd.get(&format!("renet/serving/host/{host}")),
        Some(serving(NET_A, "b"))
    );
    assert_eq!(
        c.etcd.get(&format!("renet/owners/host/{host}")),
        Some(NET_A.to_string())
    );
    println!(
        "{} requests during the move: {from_a} answered by the repository on a, {from_b} on b, {} other (no route)",
        answers.len(),
        answers.len() - from_a - from_b
    );
}

/// Losing one of three etcd members changes nothing: requests through the edge keep
/// succeeding, a new claim still works, and nothing changes when the member comes back.
/// (A route server once lost its session with the member and could not reconnect while it was
/// down: a client balanced over all endpoints fails when one refuses, etcd-client issue #39.)
#[test]
fn one_etcd_member_down_changes_nothing() {
    let mut c = two_servers();
    let one = Site::new("f1.example.test", "f1-on-a");
    let two = Site::new("f2.example.test", "f2-on-b");
    c.servers[0].run_site(NET_A, "f1", &one);
    c.servers[1].run_site(NET_B, "f2", &two);
    for s in [&one, &two] {
        wait_marker(
            &s.host,
            Duration::from_secs(20),
            || c.edge.http(&s.host),
            &s.marker,
        );
    }

    // One of three etcd members killed: requests keep succeeding, a new claim still works.
    c.etcd.kill_member(0);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for s in [&one, &two] {
            let (code, body) = c.edge.http(&s.host).unwrap();
            assert!(
                code == 200 && body.contains(&s.marker),
                "{}: {code} {body}",
                s.host
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let three = Site::new("f3.example.test", "f3-on-a").slot(1);
    c.servers[0].run_site(NET_A, "f3", &three);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.edge.http(&three.host) {
            Ok((200, body)) if body.contains(&three.marker) => break,
            other => assert!(
                Instant::now() < deadline,
                "a new claim with one member down: {other:?}\n{}\n{:?}",
                c.logs(),
                c.servers[0].health()
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Server a's two hosts are two alternatives of its routers; SNI passthrough reaches both.
    assert_eq!(
        c.etcd
            .get("traefik/tcp/routers/renet-srv-a/rule")
            .as_deref(),
        Some("HostSNI(`f1.example.test`) || HostSNI(`f3.example.test`)")
    );
    for s in [&one, &three] {
        wait_marker(
            &format!("{} over HTTPS", s.host),
            Duration::from_secs(10),
            || c.edge.https(&s.host),
            &s.marker,
        );
    }
    assert_edge_rules_match_serving(&c.etcd, &["a", "b"]);
    // The member comes back: still nothing changes.
    c.etcd.start_member(0);
    c.etcd.wait_healthy(Duration::from_secs(30));
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for s in [&one, &two, &three] {
            let (code, body) = c.edge.http(&s.host).unwrap();
            assert!(
                code == 200 && body.contains(&s.marker),
                "{} after the member came back: {code} {body}\n{}",
                s.host,
                c.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A killed server's hosts leave the edge within the lease TTL (plus the edge's reaction) and
/// its ownership stays; it takes them back when it returns. With etcd gone, each server keeps
/// serving its own hosts and says it is not connected.
#[test]
fn a_dead_server_leaves_the_edge_and_without_etcd_servers_keep_serving() {
    let mut c = two_servers();
    let one = Site::new("f1.example.test", "f1-on-a");
    let two = Site::new("f2.example.test", "f2-on-b");
    c.servers[0].run_site(NET_A, "f1", &one);
    c.servers[1].run_site(NET_B, "f2", &two);
    let three = Site::new("f3.example.test", "f3-on-a").slot(1);
    c.servers[0].run_site(NET_A, "f3", &three);
    for s in [&one, &two, &three] {
        wait_marker(
            &s.host,
            Duration::from_secs(20),
            || c.edge.http(&s.host),
            &s.marker,
        );
    }

    // Server b dies (SIGKILL of its route server): its host leaves the edge within the TTL.
    for s in [&one, &two] {
        wait_marker(
            &format!("{} through the edge before the kill", s.host),
            Duration::from_secs(10),
            || c.edge.http(&s.host),
            &s.marker,
        );
    }
    c.servers[1].kill_route_server();
    let t = Instant::now();
    wait_for(
        "f2 to leave the edge",
        Duration::from_secs(LEASE_TTL_SECONDS + 10),
        || match c.edge.http(&two.host) {
            Ok((200, body)) => Err(format!("still served: {body}")),
            _ => Ok(()),
        },
    );
    let gone = t.elapsed();
    println!(
        "f2 left the edge {:.2} s after its server was killed (lease TTL {LEASE_TTL_SECONDS} s)",
        gone.as_secs_f64()
    );
    assert!(
        gone < Duration::from_secs(LEASE_TTL_SECONDS + 5),
        "f2 stayed {gone:?} (TTL {LEASE_TTL_SECONDS} s)"
    );
    assert_eq!(
        c.etcd.get(&format!("renet/serving/host/{}", two.host)),
        None
    );
    assert_eq!(
        c.etcd.get(&format!("renet/owners/host/{}", two.host)),
        Some(NET_B.to_string()),
        "ownership outlives the server"
    );
    // a's host is untouched.
    let (code, body) = c.edge.http(&one.host).unwrap();
    assert!(code == 200 && body.contains(&one.marker), "{code} {body}");

    // b comes back: its network still owns f2, so it serves it again.
    c.servers[1].start_route_server(Some(&Etcd::endpoints()));
    wait_marker(
        "f2 back on the edge",
        Duration::from_secs(20),
        || c.edge.http(&two.host),
        &two.marker,
    );

    // etcd gone entirely: each server keeps serving its own hosts, and says it lost the
    // cluster.
    c.etcd.kill_all();
    for srv in &c.servers {
        wait_for(
            &format!("{}'s /health to say the cluster is not connected", srv.name),
            Duration::from_secs(LEASE_TTL_SECONDS + 15),
            || {
                let h = srv.health()?;
                if h["cluster"]["connected"] == serde_json::Value::Bool(false) {
                    Ok(())
                } else {
                    Err(h["cluster"].to_string())
                }
            },
        );
    }
    let until = Instant::now() + Duration::from_secs(LEASE_TTL_SECONDS + 2);
    while Instant::now() < until {
        for (srv, s) in [
            (&c.servers[0], &one),
            (&c.servers[0], &three),
            (&c.servers[1], &two),
        ] {
            let (code, body) = srv.http(&s.host).unwrap();
            assert!(
                code == 200 && body.contains(&s.marker),
                "{} straight to {} without etcd: {code} {body}",
                s.host,
                srv.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    c.servers.clear();
}

/// The edge's unit passes `systemd-analyze verify`; its exposure level is printed.
#[test]
fn the_edge_unit_passes_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(renet_bin())
        .args(["proxy", "config", "--edge", "--cluster", &Etcd::endpoints()])
        .arg("--settings")
        .arg(dir.path().join("renet.json"))
        .arg("--out-dir")
        .arg(dir.path().join("traefik"))
        .arg("--unit-dir")
        .arg(dir.path().join("units"))
        .arg("--traefik-bin")
        .arg(traefik_bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = dir.path().join("units/traefik-edge.service");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (scripts/test-env.sh installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    if let Some(level) = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    {
        println!("edge unit: {level}");
    }
    // The settings remember the endpoints: a rerun without --cluster writes the same.
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("renet.json")).unwrap())
            .unwrap();
    assert_eq!(
        settings["cluster"]["endpoints"],
        serde_json::json!(Etcd::endpoints().split(',').collect::<Vec<_>>())
    );
}
