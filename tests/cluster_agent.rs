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
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start(client_port: u16) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let client = format!("http://127.0.73.1:{client_port}");
        let peer = format!("http://127.0.73.1:{}", client_port + 1);
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
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
            .expect("etcd (Debian etcd-server, installed by scripts/test-env.sh)");
        let etcd = Etcd {
            child,
            endpoint: client,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if etcd.etcdctl(&["endpoint", "health"]).is_some() {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd on {} did not become healthy", etcd.endpoint);
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
