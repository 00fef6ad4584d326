//! The cluster stage of route building (docs/cluster.md): with a cluster view, a router is
//! served only when this server holds every host and port it needs in etcd; a router waiting
//! for a claim is withheld (and listed), a router needing another network's resource is
//! refused, and what the routers need is handed to the agent. Built through the real route
//! builder from containers, as the route server does.

use std::collections::BTreeMap;
use std::sync::Arc;

use renet::addresses::NetworkId;
use renet::routing::build::{Claims, Container, Health, RouteBuilder, RouteSettings, Snapshot};
use renet::routing::cluster::keys::{Resource, Schema};
use renet::routing::cluster::view::ClusterView;

fn container(n: u32, service: &str, extra: &[(&str, &str)]) -> Container {
    let id = NetworkId::new(n).unwrap();
    let mut labels = BTreeMap::new();
    for (k, v) in [
        ("rediacc.service_name", service.to_string()),
        ("rediacc.service_ip", id.slot_ip(0).unwrap().to_string()),
        ("rediacc.network_id", n.to_string()),
        ("com.docker.compose.service", service.to_string()),
        ("com.docker.compose.project", format!("proj{n}")),
    ] {
        labels.insert(k.to_string(), v);
    }
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string());
    }
    Container {
        network_id: id,
        id: format!("{service}{n}id"),
        name: format!("proj{n}-{service}-1"),
        labels: std::sync::Arc::new(labels.into()),
        health: Health::None,
        created: 0,
    }
}

fn shop(n: u32) -> Container {
    container(
        n,
        "web",
        &[
            ("traefik.enable", "true"),
            ("traefik.http.routers.shop.rule", "Host(`Shop.Example.com`)"),
            ("traefik.http.routers.shop.entrypoints", "websecure"),
            (
                "traefik.http.services.shop.loadbalancer.server.port",
                "8080",
            ),
        ],
    )
}

fn db(n: u32) -> Container {
    container(
        n,
        "db",
        &[
            ("traefik.enable", "true"),
            ("traefik.tcp.routers.db.rule", "HostSNI(`*`)"),
            ("traefik.tcp.routers.db.entrypoints", "tcp-25"),
            ("traefik.tcp.services.db.loadbalancer.server.port", "5432"),
        ],
    )
}

fn settings() -> RouteSettings {
    let s = renet::host::settings::Settings {
        tcp_ports: vec![25],
        ..Default::default()
    };
    RouteSettings::from_settings(&s).unwrap()
}

/// A connected view of server `a` after the given keys were read from etcd.
fn view(keys: &[(&str, &str)]) -> ClusterView {
    let schema = Schema::new("renet", "traefik");
    let mut v = ClusterView::new("a");
    v.connected = true;
    for (k, val) in keys {
        v.apply(&schema, k, Some((val.as_bytes(), 7)));
    }
    v
}

fn build(containers: &[Container], v: ClusterView) -> Snapshot {
    let mut b = RouteBuilder::default();
    b.set_cluster_view(Some(Arc::new(v)));
    b.build(containers, &settings(), &Claims::default())
}

const SERVED_HERE: &str = r#"{"network_id":2944,"server":"a"}"#;

#[test]
fn a_router_waits_for_its_claim_and_leaves_nothing_behind() {
    let s = build(&[shop(2944)], view(&[]));
    assert!(!s.routes_yaml.contains("shop-2944"), "{}", s.routes_yaml);
    let c = s.cluster.expect("cluster outcome");
    assert_eq!(
        c.wanted.get(&Resource::Host("shop.example.com".into())),
        Some(&2944)
    );
    assert_eq!(c.pending.len(), 1, "{:?}", c.pending);
    assert!(
        c.pending[0]["reason"]
            .as_str()
            .unwrap()
            .contains("claiming")
    );
}

#[test]
fn a_router_is_served_once_this_server_serves_its_host() {
    let s = build(
        &[shop(2944)],
        view(&[
            ("renet/owners/host/shop.example.com", "2944"),
            ("renet/serving/host/shop.example.com", SERVED_HERE),
        ]),
    );
    assert!(s.routes_yaml.contains("shop-2944"), "{}", s.routes_yaml);
    assert!(s.cluster.unwrap().pending.is_empty());
}

#[test]
fn another_networks_host_is_refused_and_not_wanted() {
    let s = build(
        &[shop(2944)],
        view(&[("renet/owners/host/shop.example.com", "3008")]),
    );
    assert!(!s.routes_yaml.contains("shop-2944"));
    let refused = &s.refused[0];
    assert_eq!(refused["owner"], 3008);
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("renet cluster release host shop.example.com")
    );
    assert!(s.cluster.unwrap().wanted.is_empty());
}

#[test]
fn a_moving_repository_waits_for_the_other_server() {
    let s = build(
        &[shop(2944)],
        view(&[
            ("renet/owners/host/shop.example.com", "2944"),
            (
                "renet/serving/host/shop.example.com",
                r#"{"network_id":2944,"server":"b"}"#,
            ),
        ]),
    );
    assert!(!s.routes_yaml.contains("shop-2944"));
    let c = s.cluster.unwrap();
    assert!(c.pending[0]["reason"].as_str().unwrap().contains("moving"));
    assert_eq!(c.wanted.len(), 1);
}

#[test]
fn a_tcp_port_is_a_cluster_resource() {
    let s = build(&[db(2944)], view(&[]));
    assert!(!s.routes_yaml.contains("db-2944"));
    assert_eq!(
        s.cluster.as_ref().unwrap().wanted.get(&Resource::Tcp(25)),
        Some(&2944)
    );
    let s = build(
        &[db(2944)],
        view(&[
            ("renet/owners/tcp/25", "2944"),
            ("renet/serving/tcp/25", SERVED_HERE),
        ]),
    );
    assert!(s.routes_yaml.contains("db-2944"), "{}", s.routes_yaml);
}

#[test]
fn one_networks_refusal_does_not_touch_anothers_routes() {
    let s = build(
        &[shop(2944), db(3008)],
        view(&[
            ("renet/owners/host/shop.example.com", "3008"),
            ("renet/owners/tcp/25", "3008"),
            (
                "renet/serving/tcp/25",
                r#"{"network_id":3008,"server":"a"}"#,
            ),
        ]),
    );
    assert!(!s.routes_yaml.contains("shop-2944"));
    assert!(s.routes_yaml.contains("db-3008"), "{}", s.routes_yaml);
}

#[test]
fn without_etcd_served_routes_stay_and_new_ones_wait() {
    let mut v = view(&[
        ("renet/owners/host/shop.example.com", "2944"),
        ("renet/serving/host/shop.example.com", SERVED_HERE),
    ]);
    v.connected = false;
    let s = build(&[shop(2944), db(2944)], v);
    assert!(s.routes_yaml.contains("shop-2944"));
    assert!(!s.routes_yaml.contains("db-2944"));
    let c = s.cluster.unwrap();
    assert!(
        c.pending[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
}

#[test]
fn no_view_means_no_cluster_stage() {
    let s = RouteBuilder::default().build(&[shop(2944)], &settings(), &Claims::default());
    assert!(s.routes_yaml.contains("shop-2944"));
    assert!(s.cluster.is_none());
}

#[test]
fn one_network_cannot_fill_the_cluster() {
    let mut s = renet::host::settings::Settings::default();
    s.cluster.max_resources_per_network = 3;
    let settings = RouteSettings::from_settings(&s).unwrap();
    let mut labels = vec![("traefik.enable".to_string(), "true".to_string())];
    for i in 0..5 {
        labels.push((
            format!("traefik.http.routers.r{i}.rule"),
            format!("Host(`h{i}.example.com`)"),
        ));
        labels.push((format!("traefik.http.routers.r{i}.service"), "s".into()));
    }
    labels.push((
        "traefik.http.services.s.loadbalancer.server.port".into(),
        "80".into(),
    ));
    let refs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut b = RouteBuilder::default();
    b.set_cluster_view(Some(Arc::new(view(&[]))));
    let snap = b.build(
        &[container(2944, "web", &refs)],
        &settings,
        &Claims::default(),
    );
    let c = snap.cluster.unwrap();
    assert_eq!(c.wanted.len(), 3, "{:?}", c.wanted);
    assert_eq!(snap.refused.len(), 2);
    assert!(
        snap.refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cluster.max_resources_per_network")
    );
}

#[test]
fn a_local_first_claim_does_not_block_the_cluster_owner() {
    // Network 3008 claimed the name locally first (say, while the owner ran elsewhere); the
    // cluster says 2944 owns it: with the owners laid over the table, 2944 is served and
    // 3008 refused.
    let mut claims = Claims::default();
    claims.hosts.hosts.insert(
        "shop.example.com".into(),
        renet::routing::ownership::HostClaim {
            network_id: 3008,
            since: 0,
            router: "shop-3008".into(),
        },
    );
    let v = view(&[
        ("renet/owners/host/shop.example.com", "2944"),
        ("renet/serving/host/shop.example.com", SERVED_HERE),
    ]);
    v.overlay_hosts(&mut claims.hosts);
    let mut b = RouteBuilder::default();
    b.set_cluster_view(Some(Arc::new(v)));
    let s = b.build(&[shop(2944), shop(3008)], &settings(), &claims);
    assert!(s.routes_yaml.contains("shop-2944"), "{}", s.routes_yaml);
    assert!(!s.routes_yaml.contains("shop-3008"));
    assert!(s.refused.iter().any(|r| r["owner"] == 2944));
}
