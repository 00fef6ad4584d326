//! The cluster agent against a real etcd (Debian `etcd-server`, started by the test on its
//! own loopback ports): two servers' agents racing for one host at the same instant never both
//! win, the loser sees the winner, the winner's edge keys exist and the loser's do not; a
//! stopped agent's keys leave with its lease; a repository's own host moves to its new server
//! only after the old one lets go; a server's edge rule lists exactly the hosts whose
//! `serving` key names it, after every change.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use renet::routing::cluster::agent::Agent;
use renet::routing::cluster::keys::Resource;
use renet::routing::cluster::settings::{ClusterConfig, Connection};
use renet::routing::cluster::view::ClusterView;

/// A one-member etcd on 127.0.73.1, in a temporary folder; killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    client_port: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    fn spawn(dir: &std::path::Path, client_port: u16) -> Child {
        let client = format!("http://127.0.73.1:{client_port}");
        let peer = format!("http://127.0.73.1:{}", client_port + 1);
        Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian etcd-server, installed by scripts/test-env.sh)")
    }

    fn start(client_port: u16) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let child = Etcd::spawn(dir.path(), client_port);
        let etcd = Etcd {
            child,
            endpoint: format!("http://127.0.73.1:{client_port}"),
            client_port,
            dir,
        };
        etcd.wait_healthy();
        etcd
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.etcdctl(&["endpoint", "health"]).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd on {} did not become healthy", self.endpoint);
    }

    /// SIGKILL and start again on the same data: connections drop, leases survive (etcd
    /// gives them their full TTL again when it comes back).
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Etcd::spawn(self.dir.path(), self.client_port);
        self.wait_healthy();
    }

    /// `etcdctl get -w json` of `key` (at revision `rev` when given).
    fn get_json(&self, key: &str, prefix: bool, rev: Option<i64>) -> serde_json::Value {
        let mut args = vec!["get", "-w", "json", key];
        if prefix {
            args.push("--prefix");
        }
        let rev = rev.map(|r| format!("--rev={r}"));
        if let Some(r) = &rev {
            args.push(r);
        }
        serde_json::from_str(&self.etcdctl(&args).expect("etcdctl get")).unwrap()
    }

    /// Keys and values under `prefix` at revision `rev` (etcd keeps every revision: nothing
    /// compacts in these tests).
    fn get_prefix_at(&self, prefix: &str, rev: i64) -> Vec<(String, String)> {
        let decode = |v: &serde_json::Value| {
            let bytes = base64_decode(v.as_str().unwrap_or(""));
            String::from_utf8(bytes).unwrap()
        };
        self.get_json(prefix, true, Some(rev))["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| (decode(&kv["key"]), decode(&kv["value"])))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn revision(&self) -> i64 {
        self.get_json("renet-none", false, None)["header"]["revision"]
            .as_i64()
            .unwrap()
    }

    /// The lease a key is attached to (0: none or no key).
    fn lease_of(&self, key: &str) -> i64 {
        self.get_json(key, false, None)["kvs"][0]["lease"]
            .as_i64()
            .unwrap_or(0)
    }

    fn etcdctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every key and value under `prefix`.
    fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self
            .etcdctl(&["get", "--prefix", prefix])
            .unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }

    /// The hosts of server `server`'s edge routers, HTTP and TCP (empty: no router).
    fn rule_hosts(&self, server: &str) -> (Vec<String>, Vec<String>) {
        let hosts = |key: &str, matcher: &str| -> Vec<String> {
            self.get(key)
                .map(|rule| {
                    rule.split(" || ")
                        .map(|alt| {
                            alt.strip_prefix(&format!("{matcher}(`"))
                                .and_then(|a| a.strip_suffix("`)"))
                                .unwrap_or_else(|| panic!("{key}: unexpected rule {rule}"))
                                .to_string()
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        (
            hosts(
                &format!("traefik/http/routers/renet-srv-{server}/rule"),
                "Host",
            ),
            hosts(
                &format!("traefik/tcp/routers/renet-srv-{server}/rule"),
                "HostSNI",
            ),
        )
    }

    /// The schema's promise (docs/cluster.md): a host is in server S's edge rules exactly when
    /// `renet/serving/host/<host>` names S, and the rules list their hosts sorted.
    fn assert_rules_match_serving(&self, servers: &[&str]) {
        for s in servers {
            let mut expected: Vec<String> = self
                .get_prefix("renet/serving/host/")
                .into_iter()
                .filter(|(_, v)| v.contains(&format!(r#""server":"{s}""#)))
                .map(|(k, _)| k.trim_start_matches("renet/serving/host/").to_string())
                .collect();
            expected.sort();
            let (http, tcp) = self.rule_hosts(s);
            assert_eq!(http, expected, "server {s}'s HTTP edge rule");
            assert_eq!(tcp, expected, "server {s}'s TCP edge rule");
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", "--print-value-only", key])?;
        let v = out.trim_end_matches('\n').to_string();
        (!v.is_empty()).then_some(v)
    }
}

/// Standard base64 (etcdctl's JSON output), without a crate for six lines.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let mut out = Vec::new();
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (value(c) << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(etcd: &Etcd, name: &str, address: &str) -> ClusterConfig {
    config_at(&etcd.endpoint, name, address)
}

fn config_at(endpoint: &str, name: &str, address: &str) -> ClusterConfig {
    ClusterConfig {
        connection: Connection {
            endpoints: vec![endpoint.to_string()],
            tls: None,
            credentials: None,
        },
        name: name.into(),
        address: address.parse().unwrap(),
        http_port: 80,
        https_port: 443,
        lease_ttl: Duration::from_secs(2),
        prefix: "renet".into(),
        traefik_root: "traefik".into(),
    }
}

/// Waits until `f` holds for the agent's view.
async fn until(agent: &Agent, what: &str, f: impl Fn(&ClusterView) -> bool) -> Arc<ClusterView> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rx = agent.view.clone();
    loop {
        let v = rx.borrow_and_update().clone();
        if f(&v) {
            return v;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for: {what}; view: {v:?}"
        );
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
    }
}

fn want(agent: &Agent, items: &[(Resource, u32)]) {
    let map: BTreeMap<Resource, u32> = items.iter().cloned().collect();
    agent.wanted.send_replace(Some(map));
}

fn serving_server(v: &ClusterView, r: &Resource) -> Option<String> {
    v.serving.get(r).map(|e| e.serving.server.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_racing_for_a_host_never_both_win() {
    let etcd = Etcd::start(23971);
    let a = Agent::start(config(&etcd, "a", "198.18.72.11"), None);
    let b = Agent::start(config(&etcd, "b", "198.18.72.12"), None);
    until(&a, "a connected", |v| v.connected).await;
    until(&b, "b connected", |v| v.connected).await;
    let mut winners = BTreeMap::new();
    for round in 0..10 {
        let host = Resource::Host(format!("race{round}.example.com"));
        // Both ask at the same instant, for different networks.
        want(&a, &[(host.clone(), 2944)]);
        want(&b, &[(host.clone(), 3008)]);
        let settled =
            |v: &ClusterView| v.serving.contains_key(&host) && v.owners.contains_key(&host);
        let va = until(&a, "a sees a winner", settled).await;
        let vb = until(&b, "b sees a winner", settled).await;
        let winner = serving_server(&va, &host).unwrap();
        assert_eq!(serving_server(&vb, &host).as_deref(), Some(winner.as_str()));
        let owner = etcd
            .get(&format!("renet/owners/host/race{round}.example.com"))
            .unwrap();
        let expected_owner = if winner == "a" { "2944" } else { "3008" };
        assert_eq!(
            owner, expected_owner,
            "round {round}: owner key and serving key disagree"
        );
        // The edge routes the host to the winner only.
        let loser = if winner == "a" { "b" } else { "a" };
        let name = format!("race{round}.example.com");
        assert_eq!(etcd.rule_hosts(&winner), (vec![name.clone()], vec![name]));
        assert_eq!(etcd.rule_hosts(loser), (vec![], vec![]));
        assert_eq!(
            etcd.get(&format!("traefik/http/routers/renet-srv-{winner}/service"))
                .unwrap(),
            format!("renet-{winner}")
        );
        assert_eq!(
            etcd.get(&format!(
                "traefik/tcp/routers/renet-srv-{winner}/tls/passthrough"
            ))
            .as_deref(),
            Some("true")
        );
        etcd.assert_rules_match_serving(&["a", "b"]);
        *winners.entry(winner).or_insert(0) += 1;
        // Give it up so the next round starts clean for both.
        want(&a, &[]);
        want(&b, &[]);
        until(&a, "released", |v| !v.serving.contains_key(&host)).await;
    }
    eprintln!("race winners over 10 rounds: {winners:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moving_repository_keeps_its_host_and_a_stopped_server_leaves_the_edge() {
    let etcd = Etcd::start(23975);
    let host = Resource::Host("moving.example.com".into());
    let a = Agent::start(config(&etcd, "a", "198.18.72.11"), None);
    want(&a, &[(host.clone(), 2944)]);
    until(&a, "a serves", |v| {
        serving_server(v, &host).as_deref() == Some("a")
    })
    .await;

    // The repository starts on b too (same network): b waits; a third network is refused.
    let b = Agent::start(config(&etcd, "b", "198.18.72.12"), None);
    want(&b, &[(host.clone(), 2944)]);
    let c = Agent::start(config(&etcd, "c", "198.18.72.13"), None);
    want(&c, &[(host.clone(), 3072)]);
    until(&b, "b connected", |v| v.connected).await;
    until(&c, "c connected", |v| v.connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        etcd.get("renet/serving/host/moving.example.com").unwrap(),
        r#"{"network_id":2944,"server":"a"}"#
    );

    // a stops (its lease is revoked): b takes the host, never c.
    a.shutdown().await;
    until(&b, "b serves after a left", |v| {
        serving_server(v, &host).as_deref() == Some("b")
    })
    .await;
    assert_eq!(
        etcd.get("renet/owners/host/moving.example.com").unwrap(),
        "2944"
    );
    assert_eq!(
        etcd.get("renet/servers/a"),
        None,
        "a's record left with its lease"
    );
    assert_eq!(
        etcd.get("traefik/http/routers/renet-srv-b/service")
            .unwrap(),
        "renet-b"
    );
    assert_eq!(
        etcd.rule_hosts("b").0,
        vec!["moving.example.com".to_string()]
    );
    etcd.assert_rules_match_serving(&["a", "b", "c"]);

    // The repository goes down on b too: the edge router goes, and c still cannot take the
    // host (the owner key has no lease and stays until an operator releases it).
    want(&b, &[]);
    until(&b, "b released", |v| !v.serving.contains_key(&host)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(etcd.get("traefik/http/routers/renet-srv-b/rule"), None);
    assert_eq!(etcd.get("traefik/tcp/routers/renet-srv-b/rule"), None);
    assert!(
        etcd.get_prefix("traefik/http/routers/").is_empty(),
        "no router left: {:?}",
        etcd.get_prefix("traefik/")
    );
    assert_eq!(etcd.get("renet/serving/host/moving.example.com"), None);
    assert_eq!(
        etcd.get("renet/owners/host/moving.example.com").unwrap(),
        "2944"
    );
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_what_it_served() {
    let etcd = Etcd::start(23979);
    let state = tempfile::tempdir().unwrap();
    let file = state
        .path()
        .join(renet::routing::cluster::agent::SERVING_FILE);
    let host = Resource::Host("kept.example.com".into());
    let a = Agent::start(config(&etcd, "a", "198.18.72.11"), Some(file.clone()));
    want(&a, &[(host.clone(), 2944)]);
    until(&a, "a serves", |v| {
        serving_server(v, &host).as_deref() == Some("a")
    })
    .await;
    a.shutdown().await; // revokes the lease: the serving key is gone
    assert_eq!(etcd.get("renet/serving/host/kept.example.com"), None);

    // Started again, before route building says anything: it takes the host back by itself.
    let a = Agent::start(config(&etcd, "a", "198.18.72.11"), Some(file.clone()));
    until(&a, "a serves again", |v| {
        v.connected && serving_server(v, &host).as_deref() == Some("a")
    })
    .await;
    assert_eq!(
        etcd.get("renet/serving/host/kept.example.com").unwrap(),
        r#"{"network_id":2944,"server":"a"}"#
    );
    a.shutdown().await;

    // Started while etcd is down: it still knows what it served (not connected).
    let endpoint = etcd.endpoint.clone();
    drop(etcd);
    let a = Agent::start(config_at(&endpoint, "a", "198.18.72.11"), Some(file));
    let v = a.view.borrow().clone();
    assert!(!v.connected);
    assert_eq!(
        v.verdict(&host, 2944),
        renet::routing::cluster::view::Verdict::Serve
    );
    a.shutdown().await;
}

/// One server's hosts share its two edge routers: every claim and release rewrites the rules in
/// the same transaction as the `serving` key, so after each step the rules list exactly the
/// hosts served, sorted; the last release removes the routers; two servers' rules never share
/// a host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_edge_rule_follows_its_serving_keys() {
    let etcd = Etcd::start(23983);
    let host = |n: &str| Resource::Host(format!("{n}.example.com"));
    let a = Agent::start(config(&etcd, "a", "198.18.72.11"), None);
    let b = Agent::start(config(&etcd, "b", "198.18.72.12"), None);
    want(
        &a,
        &[
            (host("zeta"), 2944),
            (host("alpha"), 2944),
            (host("mid"), 3008),
            (Resource::Tcp(5432), 2944),
        ],
    );
    want(&b, &[(host("beta"), 3072)]);
    until(&a, "a serves its three hosts", |v| {
        ["zeta", "alpha", "mid"]
            .iter()
            .all(|h| serving_server(v, &host(h)).as_deref() == Some("a"))
    })
    .await;
    until(&b, "b serves beta", |v| {
        serving_server(v, &host("beta")).as_deref() == Some("b")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let abc =
        |l: &[&str]| -> Vec<String> { l.iter().map(|h| format!("{h}.example.com")).collect() };
    assert_eq!(etcd.rule_hosts("a").0, abc(&["alpha", "mid", "zeta"]));
    assert_eq!(etcd.rule_hosts("b").0, abc(&["beta"]));
    etcd.assert_rules_match_serving(&["a", "b"]);
    // The port keeps a router of its own.
    assert_eq!(
        etcd.get("traefik/tcp/routers/renet-tcp-5432/service")
            .as_deref(),
        Some("renet-a-tcp-5432")
    );

    // One host goes: the rule loses it in the same step.
    want(
        &a,
        &[
            (host("zeta"), 2944),
            (host("alpha"), 2944),
            (Resource::Tcp(5432), 2944),
        ],
    );
    until(&a, "a released mid", |v| {
        !v.serving.contains_key(&host("mid"))
    })
    .await;
    assert_eq!(etcd.rule_hosts("a").0, abc(&["alpha", "zeta"]));
    etcd.assert_rules_match_serving(&["a", "b"]);

    // Everything goes: no router is left, not an empty rule.
    want(&a, &[]);
    until(&a, "a released all", |v| v.served_here().next().is_none()).await;
    assert_eq!(etcd.get("traefik/http/routers/renet-srv-a/rule"), None);
    assert_eq!(etcd.get("traefik/tcp/routers/renet-srv-a/rule"), None);
    assert_eq!(etcd.get("traefik/tcp/routers/renet-tcp-5432/service"), None);
    etcd.assert_rules_match_serving(&["a", "b"]);

    // A stopped server's rules leave with its lease.
    b.shutdown().await;
    assert_eq!(etcd.get("traefik/http/routers/renet-srv-b/rule"), None);
    a.shutdown().await;
    assert!(
        etcd.get_prefix("traefik/").is_empty(),
        "{:?}",
        etcd.get_prefix("traefik/")
    );
}

/// The promise at every etcd revision, not only at the end: replays the history and checks at
/// each revision that server `server`'s HTTP and TCP rules list exactly the hosts whose
/// `serving` key names it.
fn assert_rules_matched_serving_at_every_revision(etcd: &Etcd, server: &str, from: i64) {
    let to = etcd.revision();
    for rev in from..=to {
        let mut expected: Vec<String> = etcd
            .get_prefix_at("renet/serving/host/", rev)
            .into_iter()
            .filter(|(_, v)| v.contains(&format!(r#""server":"{server}""#)))
            .map(|(k, _)| k.trim_start_matches("renet/serving/host/").to_string())
            .collect();
        expected.sort();
        for (proto, matcher) in [("http", "Host"), ("tcp", "HostSNI")] {
            let key = format!("traefik/{proto}/routers/renet-srv-{server}/rule");
            let rule = etcd
                .get_prefix_at(&key, rev)
                .into_iter()
                .next()
                .map(|kv| kv.1);
            let listed: Vec<String> = rule
                .iter()
                .flat_map(|r| r.split(" || "))
                .map(|alt| {
                    alt.strip_prefix(&format!("{matcher}(`"))
                        .and_then(|a| a.strip_suffix("`)"))
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(listed, expected, "revision {rev}: {key}");
        }
    }
}

/// etcd restarts under a server: its session ends while its lease lives on, so it takes a new
/// lease and moves its `serving` keys onto it one transaction at a time. Meanwhile its rules
/// stay under the old lease (which ends first) and list every host; once all are moved they go
/// under the new lease. At no revision does a rule list a host whose `serving` key is gone, or
/// miss one that names the server; after the old lease ends, everything is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_server_moves_its_rules_with_its_hosts() {
    let mut etcd = Etcd::start(23987);
    let hosts: Vec<Resource> = ["one", "two", "three"]
        .iter()
        .map(|h| Resource::Host(format!("{h}.example.com")))
        .collect();
    let mut cfg = config(&etcd, "a", "198.18.72.11");
    cfg.lease_ttl = Duration::from_secs(4);
    let a = Agent::start(cfg, None);
    want(
        &a,
        &hosts.iter().map(|h| (h.clone(), 2944)).collect::<Vec<_>>(),
    );
    let first = until(&a, "a serves its hosts", |v| {
        hosts
            .iter()
            .all(|h| serving_server(v, h).as_deref() == Some("a"))
    })
    .await;
    let old_lease = first.lease;
    let from = etcd.revision();
    assert_eq!(
        etcd.lease_of("traefik/tcp/routers/renet-srv-a/rule"),
        old_lease
    );

    etcd.restart();
    let moved = until(&a, "a moved its hosts onto a new lease", |v| {
        v.connected
            && v.lease != old_lease
            && hosts
                .iter()
                .all(|h| v.serving.get(h).is_some_and(|e| e.lease == v.lease))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        etcd.lease_of("traefik/tcp/routers/renet-srv-a/rule"),
        moved.lease,
        "the rules follow the hosts onto the new lease"
    );
    // The old lease ends (its TTL, given again by the restart): nothing of a's goes with it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        etcd.rule_hosts("a").1,
        vec!["one.example.com", "three.example.com", "two.example.com"]
    );
    etcd.assert_rules_match_serving(&["a"]);
    assert_rules_matched_serving_at_every_revision(&etcd, "a", from);
    // The hosts were moved, not lost and claimed again: served at every revision.
    for rev in from..=etcd.revision() {
        assert_eq!(
            etcd.get_prefix_at("renet/serving/host/", rev).len(),
            3,
            "revision {rev}"
        );
    }
    a.shutdown().await;
}
