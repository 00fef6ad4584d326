//! The cluster agent: this route server's one connection to etcd (docs/cluster.md).
//!
//! It holds a lease and renews it, publishes the server's record and edge services under it,
//! mirrors `<prefix>/` into a [`ClusterView`] with a watch, and turns what route building
//! wants (`GateOutcome::wanted`) into transactions: first claims, takeovers of the
//! repository's own resources, lease refreshes after a reconnection, and releases of what is
//! no longer wanted. Every write that decides ownership is a transaction comparing what the
//! mirror saw, so two servers racing for a resource cannot both win.
//!
//! The edge routes this server's hosts with one HTTP and one TCP router whose rules list them
//! all (`Schema::server_router_keys`). Every transaction that takes, moves or releases a host's
//! `serving` key rewrites those rules too, so at every etcd revision a host is in this server's
//! rule exactly when its `serving` key names this server; the rule's keys go under the lease
//! that ends first among the hosts they list ([`desired_rule`]), so a lease that ends never
//! leaves a host in the rule without its `serving` key.
//!
//! When etcd cannot be reached, the view keeps what it last knew (the server keeps serving
//! what it holds) with `connected: false`, and the agent retries every second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::watch;

use crate::routing::cluster::keys::{Resource, Schema, ServerRecord, Serving, edge_host_problem};
use crate::routing::cluster::settings::{ClusterConfig, Connection};
use crate::routing::cluster::view::ClusterView;

/// What route building wants held, by resource (None until the first build said so: a
/// restarting server must not release what it serves before it knows what it needs).
pub type Wanted = Option<BTreeMap<Resource, u32>>;

/// The running agent: its view for route building and `/health`, and the channel route
/// building answers on.
pub struct Agent {
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub wanted: watch::Sender<Wanted>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// File in the state folder listing what this server served at the edge, so a restart while
/// etcd is unreachable keeps serving it (docs/cluster.md "Leases and failure").
pub const SERVING_FILE: &str = "cluster-serving.json";

/// What this server serves, as saved: `[["host","shop.example.com",4032], ...]`.
type SavedServing = Vec<(String, String, u32)>;

fn saved_serving(view: &ClusterView) -> SavedServing {
    view.served_here()
        .map(|(r, e)| (r.kind().to_string(), r.id(), e.serving.network_id))
        .collect()
}

/// The view a start begins with: what the last run served, not yet confirmed by etcd.
fn seeded_view(name: &str, state_file: Option<&std::path::Path>) -> ClusterView {
    let mut view = ClusterView::new(name);
    let Some(path) = state_file else { return view };
    let saved: SavedServing = match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{}: ignored ({e})", path.display());
                return view;
            }
        },
        Err(_) => return view,
    };
    for (kind, id, n) in saved {
        if let Ok(r) = Resource::parse(&kind, &id) {
            let serving = Serving {
                network_id: n,
                server: name.to_string(),
            };
            let raw = serving.encode().into_bytes();
            view.serving.insert(
                r,
                crate::routing::cluster::view::ServingEntry {
                    serving,
                    raw,
                    lease: 0,
                },
            );
        }
    }
    view
}

fn save_serving(path: &std::path::Path, view: &ClusterView) {
    let body = serde_json::to_vec(&saved_serving(view)).expect("plain data");
    if let Err(e) = crate::atomic_file::write(path, &body, Some(0o600)) {
        tracing::warn!(
            "{}: cannot save what this server serves: {e}",
            path.display()
        );
    }
}

/// This server's edge rule as written: the hosts it lists and the lease its keys are under
/// (an empty set: no routers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EdgeRule {
    pub hosts: BTreeSet<String>,
    pub lease: i64,
}

/// The hosts this server serves at the edge (host → lease of its `serving` key).
pub type ServedHosts = BTreeMap<String, i64>;

/// The served hosts of `view` that may stand in an edge rule (the others are released).
fn served_hosts(view: &ClusterView) -> ServedHosts {
    view.served_here()
        .filter_map(|(r, e)| match r {
            Resource::Host(h) if edge_host_problem(h).is_none() => Some((h.clone(), e.lease)),
            _ => None,
        })
        .collect()
}

/// The edge rule that matches `served` in the session holding `lease`. A host whose `serving`
/// key is still under an older lease (this server reconnected and is moving its keys onto the
/// new one) stays listed only if the rule's keys go under that older lease: it ends before
/// the session's, and a lease ends in one revision, so the rule never outlives a `serving`
/// key it lists (outliving it would let another server of the same network take the host
/// while this rule still routes it). Hosts under the session's lease are always listed; hosts
/// under a second older lease (or none, lease 0) wait until they are moved.
pub fn desired_rule(served: &ServedHosts, lease: i64) -> EdgeRule {
    let oldest = served
        .values()
        .copied()
        .filter(|l| *l != lease && *l != 0)
        .min();
    let rule_lease = oldest.unwrap_or(lease);
    EdgeRule {
        hosts: served
            .iter()
            .filter(|(_, l)| **l == lease || **l == rule_lease)
            .map(|(h, _)| h.clone())
            .collect(),
        lease: rule_lease,
    }
}

/// Whether an etcd error says a lease ended (a put attached to it failed): the watch brings
/// the deletions, and the next reconciliation writes what matches them.
fn lease_gone(e: &etcd_client::Error) -> bool {
    e.to_string().contains("requested lease not found")
}

impl Agent {
    /// Starts the agent; it connects in the background. `state_file` remembers what this
    /// server serves across restarts ([`SERVING_FILE`] in the state folder).
    pub fn start(config: ClusterConfig, state_file: Option<std::path::PathBuf>) -> Agent {
        let seeded = seeded_view(&config.name, state_file.as_deref());
        let (view_tx, view) = watch::channel(Arc::new(seeded.clone()));
        // Until route building says what it wants, want back what the last run served: a
        // restart after the lease ended re-takes it before the first build looks.
        let previous: BTreeMap<Resource, u32> = seeded
            .served_here()
            .map(|(r, e)| (r.clone(), e.serving.network_id))
            .collect();
        let (wanted, wanted_rx) = watch::channel((!previous.is_empty()).then_some(previous));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(config, seeded, state_file, view_tx, wanted_rx, stop_rx));
        Agent {
            view,
            wanted,
            stop: Some(stop_tx),
            task,
        }
    }

    /// Stops the agent and revokes its lease (bounded), so the edge forgets this server at
    /// once instead of after the TTL.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(3), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// How long one etcd request may take before the connection counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between connection attempts.
const RETRY: Duration = Duration::from_secs(1);

async fn run(
    config: ClusterConfig,
    mut view: ClusterView,
    state_file: Option<std::path::PathBuf>,
    view_tx: watch::Sender<Arc<ClusterView>>,
    mut wanted: watch::Receiver<Wanted>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let schema = Schema::new(&config.prefix, &config.traefik_root);
    let mut saved = saved_serving(&view);
    let mut member = 0usize;
    loop {
        let mut session = Session {
            config: &config,
            schema: &schema,
            view: &mut view,
            view_tx: &view_tx,
            client: None,
            lease: 0,
            state_file: state_file.as_deref(),
            saved: &mut saved,
            member: &mut member,
            rule: None,
        };
        let outcome = tokio::select! {
            r = session.run(&mut wanted) => Some(r),
            _ = &mut stop => None,
        };
        let (client, lease) = (session.client.take(), session.lease);
        match outcome {
            None => {
                if let Some(mut c) = client
                    && lease != 0
                {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, c.lease_revoke(lease)).await;
                    tracing::info!("cluster: lease {lease:x} revoked; leaving the cluster");
                }
                return;
            }
            Some(Err(e)) => {
                member += 1;
                let message = format!("{e:#}");
                if view.connected || view.error.as_deref() != Some(message.as_str()) {
                    tracing::warn!("cluster: {message}; keeping what this server serves");
                }
                view.connected = false;
                view.lease = 0;
                view.error = Some(message);
                view_tx.send_replace(Arc::new(view.clone()));
            }
            Some(Ok(())) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = &mut stop => return,
        }
    }
}

/// One connection with one lease; ends with an error when either is lost.
struct Session<'a> {
    config: &'a ClusterConfig,
    schema: &'a Schema,
    view: &'a mut ClusterView,
    view_tx: &'a watch::Sender<Arc<ClusterView>>,
    client: Option<Client>,
    lease: i64,
    state_file: Option<&'a std::path::Path>,
    /// What the state file holds now (written only when it changes).
    saved: &'a mut SavedServing,
    /// The member this session uses; a failed session moves on to the next one.
    member: &'a mut usize,
    /// This server's edge rule as this session last wrote it (None: not yet written).
    rule: Option<EdgeRule>,
}

/// Connects to the first member, from `first` on, that answers; returns it and its index.
/// `probe_key` is read to check the member answers: a key below renet's own prefix, the only
/// place an etcd user limited to `renet/` and `traefik/` may read (docs/cluster.md).
pub(crate) async fn connect(
    config: &Connection,
    probe_key: &str,
    first: usize,
) -> Result<(Client, usize)> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT)
        // Requests fail on a member cut off from the leader, instead of answering from a
        // minority partition.
        .with_require_leader(true);
    if let Some((user, password)) = &config.credentials {
        // etcd's tokens expire (`--auth-token-ttl`, or a JWT's fixed lifetime) while the
        // session lives on: the client authenticates again and retries instead of failing the
        // request, which would end the session and move everything onto a new lease.
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &config.tls {
        let mut t = etcd_client::TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("cluster.ca_file {}", ca.display()))?;
            t = t.ca_certificate(etcd_client::Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &tls.identity {
            let c = std::fs::read(cert)
                .with_context(|| format!("cluster.cert_file {}", cert.display()))?;
            let k = crate::routing::cluster::settings::read_secret("cluster.key_file", key)?;
            t = t.identity(etcd_client::Identity::from_pem(c, k));
        }
        options = options.with_tls(t);
    }
    // One member at a time, starting at `first`: a client balanced over all members keeps
    // sending requests to a dead one (its connection error is the request's error), so a
    // session talks to one member that answered a quorum read, and the next session starts at
    // the member after it.
    let n = config.endpoints.len();
    let mut errors = Vec::new();
    for i in 0..n {
        let endpoint = &config.endpoints[(first + i) % n];
        match try_member(endpoint, probe_key, options.clone()).await {
            Ok(client) => return Ok((client, (first + i) % n)),
            Err(e) => match explain(&e, config, probe_key) {
                Some(why) => errors.push(format!("{endpoint}: {why} ({e:#})")),
                None => errors.push(format!("{endpoint}: {e:#}")),
            },
        }
    }
    bail!("etcd: no member answered ({})", errors.join("; "))
}

/// Connects to one member and checks it answers a linearizable read (it has a leader and a
/// quorum behind it).
async fn try_member(endpoint: &str, probe_key: &str, options: ConnectOptions) -> Result<Client> {
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options)).await?;
        client
            .get(
                probe_key,
                Some(GetOptions::new().with_keys_only().with_limit(1)),
            )
            .await?;
        Ok::<_, etcd_client::Error>(client)
    };
    tokio::time::timeout(REQUEST_TIMEOUT * 2, attempt)
        .await
        .map_err(|_| anyhow::anyhow!("no answer"))?
        .map_err(Into::into)
}

/// What the operator should check when a member refuses this server: gRPC and TLS errors name
/// the symptom (`connection closed`, `UnknownIssuer`), not the setting behind it. `None` when
/// the error says enough by itself (a member that is down, a timeout).
fn explain(e: &anyhow::Error, config: &Connection, probe_key: &str) -> Option<String> {
    let text = format!("{e:#} {e:?}");
    let user = config.credentials.as_ref().map(|(u, _)| u.as_str());
    if text.contains("authentication failed") {
        return Some(format!(
            "etcd refused user `{}` (cluster.user) with the password of cluster.password_file: \
             the user is unknown or the password is wrong",
            user.unwrap_or("")
        ));
    }
    if text.contains("permission denied") {
        return Some(match user {
            Some(u) => format!(
                "user `{u}` may not read `{probe_key}`: give its role readwrite on renet's \
                 prefix and Traefik's root key (docs/cluster.md)"
            ),
            None => "etcd requires a user: set cluster.user and cluster.password_file".into(),
        });
    }
    if text.contains("user name is empty") || text.contains("user name not found") {
        return Some(
            "etcd has access control enabled: set cluster.user and cluster.password_file".into(),
        );
    }
    // An https:// endpoint without any TLS file still speaks TLS (with no CA to trust).
    let no_files = crate::routing::cluster::settings::TlsFiles {
        ca_file: None,
        identity: None,
    };
    let tls = match config.tls.as_ref() {
        Some(t) => t,
        None if config.endpoints.iter().any(|e| e.starts_with("https://")) => &no_files,
        None => return None,
    };
    if text.contains("invalid peer certificate") || text.contains("UnknownIssuer") {
        return Some(match &tls.ca_file {
            Some(ca) => format!(
                "etcd's certificate is not signed by the CA in cluster.ca_file {} (or does not \
                 name the endpoint's address)",
                ca.display()
            ),
            None => "etcd's certificate cannot be verified: set cluster.ca_file to the CA that \
                     signed it (renet does not use the system's CA bundle)"
                .into(),
        });
    }
    let refused = [
        "received fatal alert",
        "connection closed",
        "broken pipe",
        "Canceled",
        "connection reset",
    ]
    .iter()
    .any(|s| text.contains(s));
    if refused {
        // With TLS 1.3 the client finishes its handshake before the server looks at the client
        // certificate: a refused certificate shows up as an alert (BadCertificate,
        // CertificateRequired) or, when the alert is lost, as a closed connection.
        return Some(match &tls.identity {
            None => "etcd closed the TLS connection, most likely because it requires a client \
                     certificate (--client-cert-auth): set cluster.cert_file and cluster.key_file"
                .into(),
            Some((cert, _)) => format!(
                "etcd closed the TLS connection, most likely because it does not trust the \
                 client certificate cluster.cert_file {} (not signed by a CA of its \
                 --trusted-ca-file)",
                cert.display()
            ),
        });
    }
    None
}

impl Session<'_> {
    fn record(&self) -> ServerRecord {
        ServerRecord {
            address: self.config.address.to_string(),
            http_port: self.config.http_port,
            https_port: self.config.https_port,
            name: self.config.name.clone(),
        }
    }

    fn publish(&mut self) {
        self.view_tx.send_replace(Arc::new(self.view.clone()));
        if let Some(path) = self.state_file {
            let now = saved_serving(self.view);
            if now != *self.saved {
                save_serving(path, self.view);
                *self.saved = now;
            }
        }
    }

    async fn run(&mut self, wanted: &mut watch::Receiver<Wanted>) -> Result<()> {
        let ttl = self.config.lease_ttl;
        let probe = self.schema.server(&self.config.name);
        let (mut client, member) = connect(&self.config.connection, &probe, *self.member).await?;
        *self.member = member;
        self.client = Some(client.clone());
        let lease = client
            .lease_grant(ttl.as_secs() as i64, None)
            .await
            .context("etcd: cannot get a lease")?
            .id();
        self.lease = lease;
        let (mut keeper, mut renewals) = client
            .lease_keep_alive(lease)
            .await
            .context("etcd: cannot keep the lease alive")?;
        self.announce(&mut client).await?;

        let prefix = self.schema.own_prefix();
        let listing = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .context("etcd: cannot read the cluster state")?;
        let revision = listing.header().map(|h| h.revision()).unwrap_or(0);
        let mut fresh = ClusterView::new(&self.config.name);
        for kv in listing.kvs() {
            if let Ok(key) = kv.key_str() {
                fresh.apply(self.schema, key, Some((kv.value(), kv.lease())));
            }
        }
        fresh.connected = true;
        fresh.lease = lease;
        *self.view = fresh;
        let mut events = client
            .watch(
                prefix,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .context("etcd: cannot watch the cluster state")?;
        tracing::info!(
            "cluster: joined as `{}` with lease {lease:x} (TTL {:?}), {} servers, {} owned resources",
            self.config.name,
            ttl,
            self.view.servers.len(),
            self.view.owners.len()
        );
        // Take back what this server served before (its old lease may still be alive) before
        // route building first sees the fresh view, so a reconnection causes no gap.
        let first = wanted.borrow().clone();
        self.reconcile(&mut client, first.as_ref()).await?;
        self.publish();

        let mut renew = tokio::time::interval(ttl / 3);
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    if last_renewal.elapsed() > ttl {
                        bail!("etcd: lease {lease:x} not renewed for {:?}", last_renewal.elapsed());
                    }
                    keeper.keep_alive().await.context("etcd: lease renewal failed")?;
                }
                answer = renewals.message() => {
                    match answer.context("etcd: lease renewal failed")? {
                        Some(r) if r.ttl() > 0 => last_renewal = Instant::now(),
                        Some(_) => bail!("etcd: lease {lease:x} expired"),
                        None => bail!("etcd: the lease renewal stream ended"),
                    }
                }
                message = events.message() => {
                    let response = message
                        .context("etcd: watch failed")?
                        .context("etcd: the watch ended")?;
                    if response.canceled() {
                        bail!("etcd: the watch was cancelled ({})", response.cancel_reason());
                    }
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        let value = match event.event_type() {
                            etcd_client::EventType::Put => Some((kv.value(), kv.lease())),
                            etcd_client::EventType::Delete => None,
                        };
                        self.view.apply(self.schema, key, value);
                    }
                    let w = wanted.borrow().clone();
                    self.reconcile(&mut client, w.as_ref()).await?;
                    self.publish();
                }
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let w = wanted.borrow_and_update().clone();
                    if self.reconcile(&mut client, w.as_ref()).await? {
                        self.publish();
                    }
                }
            }
        }
    }

    /// Writes the server's record and its edge services under the lease.
    async fn announce(&mut self, client: &mut Client) -> Result<()> {
        let record = self.record();
        let lease = Some(PutOptions::new().with_lease(self.lease));
        let mut ops = vec![TxnOp::put(
            self.schema.server(&record.name),
            record.encode(),
            lease.clone(),
        )];
        for (k, v) in self.schema.server_traefik_keys(&record) {
            ops.push(TxnOp::put(k, v, lease.clone()));
        }
        client
            .txn(Txn::new().and_then(ops))
            .await
            .context("etcd: cannot publish this server")?;
        Ok(())
    }

    /// The operations that make this server's edge rule match `served` (none when it already
    /// does), and the rule they write. Errors when the rule would not fit
    /// (`MAX_EDGE_RULE_BYTES`).
    fn rule_ops(&self, served: &ServedHosts) -> Result<(Vec<TxnOp>, Option<EdgeRule>), String> {
        let desired = desired_rule(served, self.lease);
        if self.rule.as_ref() == Some(&desired) {
            return Ok((Vec::new(), None));
        }
        let me = &self.config.name;
        let ops = if desired.hosts.is_empty() {
            self.schema
                .server_router_prefixes(me)
                .into_iter()
                .map(|p| TxnOp::delete(p, Some(etcd_client::DeleteOptions::new().with_prefix())))
                .collect()
        } else {
            let lease = Some(PutOptions::new().with_lease(desired.lease));
            self.schema
                .server_router_keys(me, &desired.hosts)?
                .into_iter()
                .map(|(k, v)| TxnOp::put(k, v, lease.clone()))
                .collect()
        };
        Ok((ops, Some(desired)))
    }

    /// Brings etcd in line with what route building wants. Returns whether the view changed.
    async fn reconcile(
        &mut self,
        client: &mut Client,
        wanted: Option<&BTreeMap<Resource, u32>>,
    ) -> Result<bool> {
        let Some(wanted) = wanted else {
            return Ok(false);
        };
        let mut changed = false;
        let me = self.config.name.clone();
        let record = self.record();
        let lease = Some(PutOptions::new().with_lease(self.lease));
        let mut served = served_hosts(self.view);
        let mut unroutable = BTreeMap::new();
        for (r, &n) in wanted {
            if self.view.owners.get(r).is_some_and(|(m, _)| *m != n) {
                continue;
            }
            if let Resource::Host(h) = r
                && edge_host_problem(h).is_some()
            {
                // Never claimed: the gate's verdict says why (pending).
                continue;
            }
            // The common case first, without building anything: already served under this lease.
            if self.view.serving.get(r).is_some_and(|e| {
                e.serving.server == me && e.serving.network_id == n && e.lease == self.lease
            }) {
                continue;
            }
            let serving_key = self.schema.serving(r);
            let owner_key = self.schema.owner(r);
            let mine = Serving {
                network_id: n,
                server: me.clone(),
            }
            .encode();
            let mut puts = vec![TxnOp::put(serving_key.clone(), mine.clone(), lease.clone())];
            for (k, v) in self.schema.resource_traefik_keys(r, &record) {
                puts.push(TxnOp::put(k, v, lease.clone()));
            }
            let mut served_after = served.clone();
            if let Resource::Host(h) = r {
                served_after.insert(h.clone(), self.lease);
            }
            let (rule_ops, rule_after) = match self.rule_ops(&served_after) {
                Ok(x) => x,
                Err(why) => {
                    unroutable.insert(r.clone(), format!("{r} is not claimed: {why}"));
                    continue;
                }
            };
            puts.extend(rule_ops);
            let txn = match (self.view.serving.get(r), self.view.owners.get(r)) {
                (Some(e), _) if e.serving.server == me && e.serving.network_id == n => {
                    // Served by this server under an older lease: move it to the current one.
                    Txn::new()
                        .when([Compare::value(
                            serving_key.clone(),
                            CompareOp::Equal,
                            e.raw.clone(),
                        )])
                        .and_then(puts)
                }
                (Some(_), _) => continue,
                (None, None) => {
                    puts.push(TxnOp::put(owner_key.clone(), n.to_string(), None));
                    Txn::new()
                        .when([
                            Compare::create_revision(owner_key.clone(), CompareOp::Equal, 0),
                            Compare::create_revision(serving_key.clone(), CompareOp::Equal, 0),
                        ])
                        .and_then(puts)
                }
                (None, Some((_, raw))) => Txn::new()
                    .when([
                        Compare::value(owner_key.clone(), CompareOp::Equal, raw.clone()),
                        Compare::create_revision(serving_key.clone(), CompareOp::Equal, 0),
                    ])
                    .and_then(puts),
            };
            let done = match client.txn(txn).await {
                Ok(done) => done,
                Err(e) if lease_gone(&e) => {
                    tracing::debug!("cluster: claiming {r}: an older lease ended meanwhile");
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("etcd: claiming {r}")),
            };
            if done.succeeded() {
                tracing::info!("cluster: serving {r} for network {n}");
                if !self.view.owners.contains_key(r) {
                    self.view
                        .apply(self.schema, &owner_key, Some((n.to_string().as_bytes(), 0)));
                }
                self.view.apply(
                    self.schema,
                    &serving_key,
                    Some((mine.as_bytes(), self.lease)),
                );
                served = served_after;
                if rule_after.is_some() {
                    self.rule = rule_after;
                }
                changed = true;
            } else {
                tracing::debug!("cluster: claiming {r} lost a race; the watch tells who won");
            }
        }
        let releases: Vec<(Resource, Vec<u8>)> = self
            .view
            .served_here()
            .filter(|(r, e)| {
                wanted.get(*r) != Some(&e.serving.network_id)
                    || matches!(r, Resource::Host(h) if edge_host_problem(h).is_some())
            })
            .map(|(r, e)| (r.clone(), e.raw.clone()))
            .collect();
        for (r, raw) in releases {
            let serving_key = self.schema.serving(&r);
            let mut ops = vec![TxnOp::delete(serving_key.clone(), None)];
            for p in self.schema.resource_traefik_prefixes(&r, &me) {
                ops.push(TxnOp::delete(
                    p,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                ));
            }
            let mut served_after = served.clone();
            if let Resource::Host(h) = &r {
                served_after.remove(h);
            }
            // A smaller set always fits.
            let (rule_ops, rule_after) = self
                .rule_ops(&served_after)
                .map_err(|why| anyhow::anyhow!("releasing {r}: {why}"))?;
            ops.extend(rule_ops);
            let answer = client
                .txn(
                    Txn::new()
                        .when([Compare::value(serving_key.clone(), CompareOp::Equal, raw)])
                        .and_then(ops),
                )
                .await;
            let done = match answer {
                Ok(done) => done,
                Err(e) if lease_gone(&e) => {
                    tracing::debug!("cluster: releasing {r}: an older lease ended meanwhile");
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("etcd: releasing {r}")),
            };
            if done.succeeded() {
                tracing::info!("cluster: no longer serving {r}");
                self.view.apply(self.schema, &serving_key, None);
                served = served_after;
                if rule_after.is_some() {
                    self.rule = rule_after;
                }
                changed = true;
            }
        }
        // The rule as the view says it should be, when no claim or release above wrote it: at
        // the start of a session, and after an older lease ended (its hosts left the view).
        let (ops, rule_after) = self
            .rule_ops(&served)
            .map_err(|why| anyhow::anyhow!("this server's edge rule: {why}"))?;
        if !ops.is_empty() {
            match client.txn(Txn::new().and_then(ops)).await {
                Ok(_) => self.rule = rule_after,
                Err(e) if lease_gone(&e) => {
                    tracing::debug!("cluster: edge rule: an older lease ended meanwhile");
                }
                Err(e) => return Err(e).context("etcd: writing this server's edge rule"),
            }
        }
        if self.view.unroutable != unroutable {
            self.view.unroutable = unroutable;
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::cluster::settings::TlsFiles;

    fn connection(tls: Option<TlsFiles>, user: Option<&str>) -> Connection {
        Connection {
            endpoints: vec!["https://127.0.74.1:24071".into()],
            tls,
            credentials: user.map(|u| (u.to_string(), "pw".to_string())),
        }
    }

    fn why(error: &str, c: &Connection) -> String {
        explain(&anyhow::anyhow!("{error}"), c, "renet/servers/a").unwrap_or_default()
    }

    #[test]
    fn refusals_name_the_setting_to_check() {
        let files = TlsFiles {
            ca_file: Some("/etc/rediacc/etcd-ca.pem".into()),
            identity: Some((
                "/etc/rediacc/etcd-client.pem".into(),
                "/etc/rediacc/etcd-client-key.pem".into(),
            )),
        };
        let full = connection(Some(files.clone()), Some("renet"));
        let w = why(
            "etcdserver: authentication failed, invalid user ID or password",
            &full,
        );
        assert!(
            w.contains("user `renet`") && w.contains("cluster.password_file"),
            "{w}"
        );
        let w = why("etcdserver: permission denied", &full);
        assert!(w.contains("may not read `renet/servers/a`"), "{w}");
        let w = why("invalid peer certificate: UnknownIssuer", &full);
        assert!(
            w.contains("cluster.ca_file /etc/rediacc/etcd-ca.pem"),
            "{w}"
        );
        let w = why("received fatal alert: BadCertificate", &full);
        assert!(
            w.contains("cluster.cert_file /etc/rediacc/etcd-client.pem"),
            "{w}"
        );
        let no_identity = connection(
            Some(TlsFiles {
                identity: None,
                ..files
            }),
            None,
        );
        let w = why(
            "hyper::Error(Canceled, \"connection closed\")",
            &no_identity,
        );
        assert!(w.contains("requires a client certificate"), "{w}");
        // https:// without any TLS file: still TLS, with no CA to trust.
        let w = why(
            "invalid peer certificate: UnknownIssuer",
            &connection(None, None),
        );
        assert!(w.contains("set cluster.ca_file"), "{w}");
        // Plain http, or a member that is simply down: etcd's words are enough.
        let mut plain = connection(None, None);
        plain.endpoints = vec!["http://127.0.74.1:24071".into()];
        assert_eq!(why("connection closed", &plain), "");
        assert_eq!(why("tcp connect error: Connection refused", &full), "");
    }

    fn served(items: &[(&str, i64)]) -> ServedHosts {
        items.iter().map(|(h, l)| (h.to_string(), *l)).collect()
    }

    fn hosts(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn the_rule_lists_the_sessions_hosts_under_its_lease() {
        let r = desired_rule(&served(&[("b.example", 7), ("a.example", 7)]), 7);
        assert_eq!(r.hosts, hosts(&["a.example", "b.example"]));
        assert_eq!(r.lease, 7);
        assert_eq!(desired_rule(&ServedHosts::new(), 7).hosts, BTreeSet::new());
    }

    /// While a reconnected server moves its keys onto its new lease, the rule stays under the
    /// older lease as long as it lists a host still under it: when that lease ends, the rule
    /// and those `serving` keys go in one revision.
    #[test]
    fn while_moving_to_a_new_lease_the_rule_stays_under_the_older_one() {
        let moving = served(&[("a.example", 3), ("b.example", 9), ("c.example", 3)]);
        let r = desired_rule(&moving, 9);
        assert_eq!(r.hosts, hosts(&["a.example", "b.example", "c.example"]));
        assert_eq!(r.lease, 3);
        let moved = served(&[("a.example", 9), ("b.example", 9), ("c.example", 9)]);
        assert_eq!(desired_rule(&moved, 9).lease, 9);
    }

    /// Hosts under a second older lease, or under none, are left out until they are moved:
    /// the rule can follow one lease only.
    #[test]
    fn hosts_of_a_second_older_lease_wait() {
        let r = desired_rule(
            &served(&[
                ("a.example", 3),
                ("b.example", 9),
                ("c.example", 5),
                ("d.example", 0),
            ]),
            9,
        );
        assert_eq!(r.hosts, hosts(&["a.example", "b.example"]));
        assert_eq!(r.lease, 3);
    }
}
