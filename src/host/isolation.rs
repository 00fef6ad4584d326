//! Kernel-enforced isolation between repositories (spec §9).
//!
//! Every repository's containers share the host's network namespace, so the kernel has to tell
//! them apart by something else: their cgroup. `renet daemon start` runs each repo daemon with
//! `--cgroup-parent /renet/<N>` (cgroupfs driver), so every container of network N lives in
//! `<cgroup2 mount>/renet/<N>/<container id>`. One nftables table, `inet renet`, dispatches on
//! the cgroup of a packet's socket (`socket cgroupv2 level 2 vmap @repo_output`) to the chains of
//! that network, `out_<N>` and `in_<N>`:
//!
//! - output: a connection a container *opens* towards a local address (anything routed through
//!   `lo`: 127.0.0.0/8, ::1, the host's own public addresses) is refused unless it goes to the
//!   repository's own /26, the host's DNS resolvers (port 53), a destination the operator
//!   allows in the settings file (`isolation.allow`), or one of Traefik's public entrypoints;
//! - input: a connection from another host or network namespace (any interface but `lo`) to a
//!   socket of the repository is dropped, so a service bound to `0.0.0.0` or the public address
//!   is reachable from outside only through Traefik.
//!
//! One table with cgroup-keyed verdict maps rather than one table per network: every base chain
//! is a hook every loopback packet passes, and `cargo bench --bench isolation` measured 64
//! per-network tables halving loopback connections per second; a map lookup costs the same for
//! 1 or 1,000 repositories.
//!
//! The nft CLI is driven with one text script per change, loaded with `nft -f` (one
//! transaction: applied whole or not at all). The same rules are what an operator sees in
//! `nft list table inet renet`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::addresses::NetworkId;
use crate::host::settings::Settings;

/// Where nft looks up the path of a `socket cgroupv2` expression (nft prefixes it with this).
const NFT_CGROUP_BASE: &str = "/sys/fs/cgroup";
/// Depth of `/renet/<N>` below the cgroup2 root: the ancestor level the rules compare.
pub const CGROUP_LEVEL: u32 = 2;

/// The `isolation` field of the settings file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationSettings {
    /// Host services every repository's containers may reach on local addresses, besides their
    /// own /26, the DNS resolvers and Traefik's public entrypoints: `ADDR[:PORT][/tcp|/udp]`
    /// (`127.0.0.1:5353/udp`, `[::1]:8125`, `127.0.0.1` for every port; IPv6 in brackets).
    pub allow: Vec<String>,
    /// The resolver file whose `nameserver` addresses containers may query on port 53: the
    /// one the repo daemons copy into containers (dockerd uses the host's, or
    /// `/run/systemd/resolve/resolv.conf` when the host's points at 127.0.0.53).
    pub resolv_conf: PathBuf,
}

impl Default for IsolationSettings {
    fn default() -> Self {
        IsolationSettings {
            allow: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

impl IsolationSettings {
    /// The resolver file's text; a missing file means no resolver to allow.
    fn read_resolv_conf(&self) -> Result<String> {
        match std::fs::read_to_string(&self.resolv_conf) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "settings isolation.resolv_conf: {}: cannot read",
                    self.resolv_conf.display()
                )
            }),
        }
    }
}

/// The dockerd `--cgroup-parent` of network N (cgroupfs driver: a path below the root).
pub fn cgroup_parent(id: NetworkId) -> String {
    format!("/renet/{id}")
}

/// The one table holding every repository's rules.
pub const TABLE: &str = "renet";
/// Serializes changes to [`TABLE`] between concurrent `renet daemon` commands.
const LOCK_FILE: &str = "/run/renet-isolation.lock";

// ---------------------------------------------------------------------------------------------
// Cgroup layout

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on a pure v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid (v1 controllers + v2) host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    pub mount: PathBuf,
}

impl CgroupLayout {
    pub fn detect() -> Result<CgroupLayout> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .context("/proc/self/mountinfo: cannot read")?;
        Self::from_mountinfo(&text)
    }

    /// The cgroup2 mount of a mountinfo text. nft resolves `socket cgroupv2` paths below
    /// `/sys/fs/cgroup`, so only a mount there (or below) can be used.
    pub fn from_mountinfo(text: &str) -> Result<CgroupLayout> {
        let mounts: Vec<PathBuf> = text
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let fstype = right.split_whitespace().next()?;
                let mount_point = left.split_whitespace().nth(4)?;
                (fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
            })
            .collect();
        let Some(mount) = mounts
            .iter()
            .filter(|m| m.starts_with(NFT_CGROUP_BASE))
            .min_by_key(|m| m.components().count())
        else {
            bail!(
                "no cgroup v2 hierarchy mounted below {NFT_CGROUP_BASE} (found: {mounts:?}); the \
                 firewall needs one (mount -t cgroup2 none {NFT_CGROUP_BASE}/unified)"
            );
        };
        Ok(CgroupLayout {
            mount: mount.clone(),
        })
    }

    /// The cgroup folder every container of network N lives below.
    pub fn repo_dir(&self, id: NetworkId) -> PathBuf {
        self.mount.join(format!("renet/{id}"))
    }

    /// The same folder as nft wants it: relative to `/sys/fs/cgroup`.
    pub fn nft_path(&self, id: NetworkId) -> String {
        let rel = self.repo_dir(id);
        rel.strip_prefix(NFT_CGROUP_BASE)
            .unwrap_or(&rel)
            .display()
            .to_string()
    }

    /// Creates the repository's cgroup before dockerd starts: nft resolves the path to the
    /// cgroup's ID when the rules are loaded, so it must exist first and stay (runc only
    /// removes each container's own folder below it).
    pub fn prepare(&self, id: NetworkId) -> Result<()> {
        let dir = self.repo_dir(id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create the repository's cgroup", dir.display()))
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(Ok(v)) = bytes
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .map(|o| u8::from_str_radix(o, 8))
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path of a `/proc/<pid>/cgroup` text (its `0::` line).
pub fn cgroup2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The network whose repository cgroup (`/renet/<N>/…`) holds a cgroup v2 path.
pub fn network_of_cgroup(path: &str) -> Option<NetworkId> {
    let rest = path.strip_prefix("/renet/")?;
    let n = rest.split('/').next()?;
    n.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// What a repository may reach

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One destination a repository's containers may open connections to on a local address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub addr: IpAddr,
    /// Prefix length (32/128 for one address).
    pub prefix: u8,
    /// None → TCP and UDP (and anything else when `ports` is empty too).
    pub protocol: Option<Protocol>,
    /// Empty → every port.
    pub ports: Vec<u16>,
    /// Why it is allowed, for `renet daemon status`.
    pub reason: String,
}

impl Destination {
    /// The nft accept rule.
    fn nft_rule(&self) -> String {
        let family = if self.addr.is_ipv4() { "ip" } else { "ip6" };
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        let mut rule = format!("{family} daddr {}", self.addr);
        if self.prefix != full {
            rule += &format!("/{}", self.prefix);
        }
        let ports = match self.ports.as_slice() {
            [] => None,
            [p] => Some(p.to_string()),
            many => Some(format!(
                "{{ {} }}",
                many.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        match (self.protocol, ports) {
            (Some(p), Some(ports)) => rule += &format!(" {} dport {ports}", p.nft()),
            (Some(p), None) => rule += &format!(" meta l4proto {}", p.nft()),
            (None, Some(ports)) => {
                rule += &format!(" meta l4proto {{ tcp, udp }} th dport {ports}")
            }
            (None, None) => {}
        }
        rule + " accept"
    }

    /// `127.0.0.1:5353/udp (settings: isolation.allow)`.
    pub fn describe(&self) -> String {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        let mut s = match self.addr {
            IpAddr::V6(a) if !self.ports.is_empty() => format!("[{a}]"),
            a => a.to_string(),
        };
        if self.prefix != full {
            s += &format!("/{}", self.prefix);
        }
        match self.ports.as_slice() {
            [] => {}
            [p] => s += &format!(":{p}"),
            [first, .., last] if self.ports.len() == (*last - *first) as usize + 1 => {
                s += &format!(":{first}-{last}")
            }
            many => {
                s += &format!(
                    ":{}",
                    many.iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        }
        match self.protocol {
            Some(p) => s += &format!("/{}", p.nft()),
            None if !self.ports.is_empty() => s += "/tcp+udp",
            None => {}
        }
        format!("{s} ({})", self.reason)
    }
}

/// Parses one `isolation.allow` entry: `ADDR[:PORT][/tcp|/udp]`, an IPv6 address always in
/// brackets (`::1:80` would be a valid address, not port 80 of `::1`).
pub fn parse_allow(entry: &str) -> Result<Destination> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "settings isolation.allow: {entry:?}: {why}; expected ADDR[:PORT][/tcp|/udp], e.g. \
             \"127.0.0.1:5353/udp\" or \"[::1]:8125\""
        )
    };
    let (rest, protocol) = match entry.rsplit_once('/') {
        Some((r, "tcp")) => (r, Some(Protocol::Tcp)),
        Some((r, "udp")) => (r, Some(Protocol::Udp)),
        Some(_) => return Err(bad("the protocol must be tcp or udp (no address ranges)")),
        None => (entry, None),
    };
    let (addr, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("missing `]`"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("`:` expected after `]`"))?,
            ),
        };
        let addr: Ipv6Addr = addr.parse().map_err(|_| bad("not an IPv6 address"))?;
        (IpAddr::V6(addr), port)
    } else if let Ok(addr) = rest.parse::<Ipv4Addr>() {
        (IpAddr::V4(addr), None)
    } else {
        let (addr, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("not an IP address"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| {
            bad("not an IPv4 address (IPv6 goes in brackets: [ADDR] or [ADDR]:PORT)")
        })?;
        (IpAddr::V4(addr), Some(port))
    };
    let ports = match port {
        None => Vec::new(),
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => vec![p],
            _ => return Err(bad("the port must be 1-65535")),
        },
    };
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(bad("not a single host address"));
    }
    Ok(Destination {
        prefix: if addr.is_ipv4() { 32 } else { 128 },
        addr,
        protocol,
        ports,
        reason: "settings: isolation.allow".into(),
    })
}

/// The `nameserver` addresses of a resolv.conf text (IPv6 zone suffixes dropped).
pub fn resolvers(resolv_conf: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// Everything network N's containers may open connections to on local addresses, in the order
/// the rules are written.
pub fn allowed_destinations(
    id: NetworkId,
    settings: &Settings,
    resolv_conf: &str,
) -> Result<Vec<Destination>> {
    let mut out = vec![Destination {
        addr: IpAddr::V4(id.block_base()),
        prefix: 26,
        protocol: None,
        ports: Vec::new(),
        reason: "the repository's own services".into(),
    }];
    for ip in resolvers(resolv_conf) {
        out.push(Destination {
            prefix: if ip.is_ipv4() { 32 } else { 128 },
            addr: ip,
            protocol: None,
            ports: vec![53],
            reason: format!(
                "DNS resolver from {}",
                settings.isolation.resolv_conf.display()
            ),
        });
    }
    for entry in &settings.isolation.allow {
        out.push(parse_allow(entry)?);
    }
    out.extend(traefik_entrypoints(settings)?);
    Ok(out)
}

/// Traefik's entrypoints on the public addresses: a repository may call another one through
/// the proxy, like any client on the internet would.
fn traefik_entrypoints(settings: &Settings) -> Result<Vec<Destination>> {
    let mut tcp: BTreeSet<u16> = settings.tcp_entrypoint_ports();
    tcp.insert(settings.http_port);
    tcp.insert(settings.https_port);
    let udp = settings.udp_entrypoint_ports();
    let mut out = Vec::new();
    for (what, addr) in [
        ("public_ipv4", &settings.public_ipv4),
        ("public_ipv6", &settings.public_ipv6),
    ] {
        let Some(addr) = addr else { continue };
        let ip: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("settings {what}: {addr:?} is not an IP address"))?;
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        for (protocol, ports) in [(Protocol::Tcp, &tcp), (Protocol::Udp, &udp)] {
            if !ports.is_empty() {
                out.push(Destination {
                    addr: ip,
                    prefix,
                    protocol: Some(protocol),
                    ports: ports.iter().copied().collect(),
                    reason: "Traefik's public entrypoints".into(),
                });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The ruleset

/// One network's entry in the shared table: its ID and its cgroup as nft names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NetworkId,
    pub nft_cgroup_path: String,
}

/// The table's skeleton and its two dispatching rules. Repeating the declaration is harmless
/// (nft merges it); the rules are flushed and added again so they exist exactly once.
fn render_skeleton(table: &str) -> String {
    let cgroup = format!("socket cgroupv2 level {CGROUP_LEVEL}");
    format!(
        "table inet {table} {{\n\
         \tmap repo_output {{ type cgroupsv2 : verdict; }}\n\
         \tmap repo_input {{ type cgroupsv2 : verdict; }}\n\
         \tchain output {{ type filter hook output priority filter; policy accept; }}\n\
         \tchain input {{ type filter hook input priority filter; policy accept; }}\n\
         }}\n\
         flush chain inet {table} output\n\
         flush chain inet {table} input\n\
         add rule inet {table} output oifname \"lo\" ct direction original {cgroup} vmap @repo_output\n\
         add rule inet {table} input iifname != \"lo\" ct direction original {cgroup} vmap @repo_input\n"
    )
}

/// Rebuilds both maps from `members`: a map is never edited element by element, because an
/// element is named by its cgroup path and a recreated cgroup would leave an element nobody can
/// name any more.
fn render_maps(table: &str, members: &[Member]) -> String {
    let mut s = format!("flush map inet {table} repo_output\nflush map inet {table} repo_input\n");
    if members.is_empty() {
        return s;
    }
    let elements = |prefix: &str| {
        members
            .iter()
            .map(|m| {
                format!(
                    "{} : jump {prefix}_{}",
                    nft_string(&m.nft_cgroup_path),
                    m.id
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    s += &format!(
        "add element inet {table} repo_output {{ {} }}\n",
        elements("out")
    );
    s += &format!(
        "add element inet {table} repo_input {{ {} }}\n",
        elements("in")
    );
    s
}

/// The nft script that installs (or replaces) network `id`'s chains and makes `members` (which
/// includes `id`) the networks the table dispatches to, in one transaction.
pub fn render_install(
    table: &str,
    id: NetworkId,
    allowed: &[Destination],
    members: &[Member],
) -> String {
    let mut s = render_skeleton(table);
    for chain in [format!("out_{id}"), format!("in_{id}")] {
        s += &format!("add chain inet {table} {chain}\nflush chain inet {table} {chain}\n");
    }
    for d in allowed {
        s += &format!("add rule inet {table} out_{id} {}\n", d.nft_rule());
    }
    s +=
        &format!("add rule inet {table} out_{id} meta l4proto tcp counter reject with tcp reset\n");
    s += &format!("add rule inet {table} out_{id} counter reject\n");
    s += &format!("add rule inet {table} in_{id} counter drop\n");
    s + &render_maps(table, members)
}

/// The nft script that removes network `id`'s chains, leaving `members` (without `id`); with
/// no member left, the whole table goes.
pub fn render_remove(table: &str, id: NetworkId, members: &[Member]) -> String {
    if members.is_empty() {
        return format!("table inet {table} {{}}\ndelete table inet {table}\n");
    }
    let mut s = render_skeleton(table) + &render_maps(table, members);
    for chain in [format!("out_{id}"), format!("in_{id}")] {
        s += &format!(
            "add chain inet {table} {chain}\nflush chain inet {table} {chain}\ndelete chain inet {table} {chain}\n"
        );
    }
    s
}

/// The networks that have chains in a `nft list table` listing.
pub fn networks_in_listing(listing: &str) -> BTreeSet<NetworkId> {
    listing
        .lines()
        .filter_map(|l| {
            let name = l.trim().strip_prefix("chain out_")?.strip_suffix(" {")?;
            name.parse().ok()
        })
        .collect()
}

/// A quoted nft string. Cgroup paths renet builds contain only `[a-z0-9/_-]`; anything else is
/// refused rather than escaped.
fn nft_string(s: &str) -> String {
    assert!(
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-.".contains(c)),
        "unexpected character in cgroup path {s:?}"
    );
    format!("\"{s}\"")
}

fn nft() -> Result<PathBuf> {
    which::which("nft")
        .context("nft not found on PATH; install nftables (Debian: apt-get install nftables)")
}

/// Runs `nft -f -` with `script` on stdin.
pub fn nft_load(script: &str) -> Result<()> {
    let mut child = Command::new(nft()?)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .context("cannot write to nft")?;
    let out = child.wait_with_output().context("cannot run nft")?;
    if !out.status.success() {
        bail!(
            "nft refused the ruleset: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `nft list table inet <table>`, or None when the table does not exist.
pub fn listing(table: &str) -> Result<Option<String>> {
    let out = Command::new(nft()?)
        .args(["list", "table", "inet", table])
        .output()
        .context("cannot run nft")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Serializes the read-modify-write of the shared table between concurrent `renet daemon`
/// commands (each nft transaction is atomic, but the member list is read first).
fn lock() -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("{LOCK_FILE}: cannot open"))?;
    f.lock()
        .with_context(|| format!("{LOCK_FILE}: cannot lock"))?;
    Ok(f)
}

/// The networks of the table now, with their cgroup paths; a network whose cgroup folder is
/// gone is left out of the maps (its chains stay until `renet daemon start` or `stop`).
fn current_members(layout: &CgroupLayout) -> Result<Vec<Member>> {
    let text = listing(TABLE)?.unwrap_or_default();
    Ok(networks_in_listing(&text)
        .into_iter()
        .filter(|id| layout.repo_dir(*id).is_dir())
        .map(|id| Member {
            id,
            nft_cgroup_path: layout.nft_path(id),
        })
        .collect())
}

/// Creates the repository's cgroup and installs (or replaces) network N's rules.
pub fn install(id: NetworkId, settings: &Settings) -> Result<Vec<Destination>> {
    let resolv = settings.isolation.read_resolv_conf()?;
    let allowed = allowed_destinations(id, settings, &resolv)?;
    let layout = CgroupLayout::detect()?;
    layout.prepare(id)?;
    let _lock = lock()?;
    let mut members = current_members(&layout)?;
    members.retain(|m| m.id != id);
    members.push(Member {
        id,
        nft_cgroup_path: layout.nft_path(id),
    });
    members.sort_by_key(|m| m.id.get());
    nft_load(&render_install(TABLE, id, &allowed, &members))
        .with_context(|| format!("installing the firewall of network {id}"))?;
    Ok(allowed)
}

/// Removes network N's rules (nothing to do when they are not there) and its cgroup when empty.
pub fn remove(id: NetworkId) -> Result<()> {
    let layout = CgroupLayout::detect()?;
    {
        let _lock = lock()?;
        let mut members = current_members(&layout)?;
        members.retain(|m| m.id != id);
        nft_load(&render_remove(TABLE, id, &members))
            .with_context(|| format!("removing the firewall of network {id}"))?;
    }
    // Busy (a container still runs, e.g. the daemon was killed) → it stays; harmless.
    let _ = std::fs::remove_dir(layout.repo_dir(id));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Status

/// What `renet daemon status` shows about one network's isolation.
#[derive(Debug, Clone, Serialize)]
pub struct IsolationStatus {
    /// `installed`, `missing`, or `stale` (its chains exist but the table does not dispatch
    /// its cgroup to them: the cgroup was removed or recreated; `renet daemon start`
    /// reinstalls).
    pub firewall: &'static str,
    pub cgroup: String,
    /// What the settings allow now (what `renet daemon start` installs).
    pub allowed: Vec<String>,
    pub warnings: Vec<String>,
}

/// Judges a listing of the shared table for network `id`. nft prints a cgroup ID it cannot
/// map back to a folder as a number, so a recreated cgroup no longer shows its path.
pub fn judge_table(listing: Option<&str>, id: NetworkId, nft_cgroup_path: &str) -> &'static str {
    let Some(text) = listing else {
        return "missing";
    };
    if !networks_in_listing(text).contains(&id) {
        return "missing";
    }
    let dispatched = format!("\"{nft_cgroup_path}\" : jump out_{id}");
    if text.contains(&dispatched) {
        "installed"
    } else {
        "stale"
    }
}

pub fn status(id: NetworkId, settings: &Settings) -> IsolationStatus {
    let mut warnings = Vec::new();
    let layout = CgroupLayout::detect();
    let (cgroup, firewall) = match &layout {
        Ok(layout) => {
            let listing = listing(TABLE).unwrap_or_else(|e| {
                warnings.push(format!("{e:#}"));
                None
            });
            (
                layout.repo_dir(id).display().to_string(),
                judge_table(listing.as_deref(), id, &layout.nft_path(id)),
            )
        }
        Err(e) => {
            warnings.push(format!("{e:#}"));
            (String::new(), "missing")
        }
    };
    let allowed = match settings
        .isolation
        .read_resolv_conf()
        .and_then(|resolv| allowed_destinations(id, settings, &resolv))
    {
        Ok(list) => list.iter().map(Destination::describe).collect(),
        Err(e) => {
            warnings.push(format!("{e:#}"));
            Vec::new()
        }
    };
    IsolationStatus {
        firewall,
        cgroup,
        allowed,
        warnings,
    }
}

// ---------------------------------------------------------------------------------------------
// Listening sockets

/// A listening TCP socket or bound UDP socket of `/proc/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
}

/// Parses a `/proc/net/tcp`-style table, keeping listening TCP sockets (state 0A) or unconnected
/// UDP sockets (state 07). The address column is the kernel's hex dump of the address in
/// network byte order read as host-endian 32-bit words.
pub fn parse_proc_net(text: &str, protocol: Protocol) -> Vec<Listener> {
    let wanted = match protocol {
        Protocol::Tcp => "0A",
        Protocol::Udp => "07",
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != wanted {
                return None;
            }
            let (addr, port) = cols[1].split_once(':')?;
            Some(Listener {
                protocol,
                addr: parse_hex_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                inode: cols[9].parse().ok()?,
            })
        })
        .collect()
}

fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    match words.as_slice() {
        [w] if hex.len() == 8 => Some(IpAddr::V4(Ipv4Addr::from(w.to_be_bytes()))),
        [a, b, c, d] if hex.len() == 32 => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// The warning for a repository's listener, or None when it listens on one of its own
/// addresses.
pub fn judge_listener(id: NetworkId, l: &Listener, process: &str) -> Option<String> {
    let own = match l.addr {
        IpAddr::V4(a) => u32::from(a) & !63 == u32::from(id.block_base()),
        IpAddr::V6(_) => false,
    };
    if own {
        return None;
    }
    let proto = match l.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    let addr = match l.addr {
        IpAddr::V6(a) => format!("[{a}]:{}", l.port),
        IpAddr::V4(a) => format!("{a}:{}", l.port),
    };
    let why = if l.addr.is_unspecified() {
        "every address of the host; the firewall keeps outside clients away, but the port is taken \
         on every address, and the service should bind $SERVICE_IP"
    } else {
        "an address outside the repository's block; bind $SERVICE_IP instead"
    };
    Some(format!(
        "network {id}: {process} listens on {addr}/{proto}, {why} ({})",
        id.block_cidr()
    ))
}

/// Every socket inode held by a process of network N's cgroup, with `comm (pid)`.
fn repo_socket_owners(id: NetworkId) -> BTreeMap<u64, String> {
    let mut owners = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = Path::new("/proc").join(pid.to_string());
        let Ok(cg) = std::fs::read_to_string(dir.join("cgroup")) else {
            continue;
        };
        if cgroup2_path(&cg).and_then(network_of_cgroup) != Some(id) {
            continue;
        }
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let who = format!("{} (pid {pid})", comm.trim());
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|t| socket_inode(&t.to_string_lossy()))
            {
                owners.entry(inode).or_insert_with(|| who.clone());
            }
        }
    }
    owners
}

/// `socket:[12345]` → 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Warnings about network N's processes listening outside the repository's /26.
pub fn listener_warnings(id: NetworkId) -> Vec<String> {
    let owners = repo_socket_owners(id);
    if owners.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (file, protocol) in [
        ("/proc/net/tcp", Protocol::Tcp),
        ("/proc/net/tcp6", Protocol::Tcp),
        ("/proc/net/udp", Protocol::Udp),
        ("/proc/net/udp6", Protocol::Udp),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for l in parse_proc_net(&text, protocol) {
            if let Some(who) = owners.get(&l.inode)
                && let Some(w) = judge_listener(id, &l, who)
                && !out.contains(&w)
            {
                out.push(w);
            }
        }
    }
    out
}

/// The warning for a container of network N's daemon whose process is outside the repository's
/// cgroup (a `--cgroup-parent` of its own, or a daemon started before isolation existed): the
/// firewall does not cover it.
pub fn judge_container_cgroup(id: NetworkId, name: &str, cgroup: Option<&str>) -> Option<String> {
    match cgroup {
        Some(path) if network_of_cgroup(path) == Some(id) => None,
        Some(path) => Some(format!(
            "network {id}: container {name} runs in cgroup {path}, outside {}; the firewall does \
             not cover it (restart the daemon with `renet daemon stop/start`, and remove any \
             cgroup_parent from its configuration)",
            cgroup_parent(id)
        )),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(n: u32) -> NetworkId {
        NetworkId::new(n).unwrap()
    }

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
    const PURE_V2: &str = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";

    #[test]
    fn cgroup_layout_of_a_hybrid_host_is_the_unified_mount() {
        let l = CgroupLayout::from_mountinfo(HYBRID).unwrap();
        assert_eq!(l.mount, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            l.repo_dir(net(3328)),
            PathBuf::from("/sys/fs/cgroup/unified/renet/3328")
        );
        assert_eq!(l.nft_path(net(3328)), "unified/renet/3328");
    }

    #[test]
    fn cgroup_layout_of_a_pure_v2_host_is_the_root() {
        let l = CgroupLayout::from_mountinfo(PURE_V2).unwrap();
        assert_eq!(l.nft_path(net(2816)), "renet/2816");
    }

    #[test]
    fn cgroup_layout_without_cgroup2_is_an_error() {
        let e = CgroupLayout::from_mountinfo("27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n28 1 0:9 / /mnt/cg2 rw - cgroup2 cgroup2 rw\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no cgroup v2 hierarchy"), "{e}");
        assert!(e.contains("/mnt/cg2"), "{e}");
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn cgroup_paths_name_their_network() {
        let text = "1:cpu:/renet/3328/abc\n0::/renet/3328/abc\n";
        assert_eq!(cgroup2_path(text), Some("/renet/3328/abc"));
        assert_eq!(network_of_cgroup("/renet/3328/abc"), Some(net(3328)));
        assert_eq!(network_of_cgroup("/renet/3328"), Some(net(3328)));
        assert_eq!(network_of_cgroup("/renet/3329/abc"), None);
        assert_eq!(network_of_cgroup("/docker/abc"), None);
        assert_eq!(network_of_cgroup("/renetx/3328"), None);
    }

    #[test]
    fn allow_entries_parse() {
        let d = parse_allow("127.0.0.1:5353/udp").unwrap();
        assert_eq!(
            (d.addr, d.ports.clone(), d.protocol),
            (
                "127.0.0.1".parse().unwrap(),
                vec![5353],
                Some(Protocol::Udp)
            )
        );
        assert_eq!(d.nft_rule(), "ip daddr 127.0.0.1 udp dport 5353 accept");
        let d = parse_allow("[::1]:8125").unwrap();
        assert_eq!(
            d.nft_rule(),
            "ip6 daddr ::1 meta l4proto { tcp, udp } th dport 8125 accept"
        );
        assert_eq!(
            parse_allow("127.0.0.9").unwrap().nft_rule(),
            "ip daddr 127.0.0.9 accept"
        );
        assert_eq!(
            parse_allow("[::1]/tcp").unwrap().nft_rule(),
            "ip6 daddr ::1 meta l4proto tcp accept"
        );
        assert_eq!(
            parse_allow("127.0.0.1:80/tcp").unwrap().describe(),
            "127.0.0.1:80/tcp (settings: isolation.allow)"
        );
    }

    #[test]
    fn bad_allow_entries_name_the_entry_and_the_form() {
        for bad in [
            "127.0.0.0/8",
            "localhost:80",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "::1:80",
            "::1",
            "[::1",
            "0.0.0.0:80",
            "127.0.0.1:80/sctp",
            "",
        ] {
            let e = parse_allow(bad).unwrap_err().to_string();
            assert!(e.contains("isolation.allow"), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
            assert!(e.contains("ADDR[:PORT]"), "{bad}: {e}");
        }
    }

    #[test]
    fn resolvers_come_from_nameserver_lines() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver 127.0.0.53\noptions edns0\nnameserver\n";
        assert_eq!(
            resolvers(text),
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn allowed_destinations_are_own_block_resolvers_settings_and_traefik() {
        let mut settings = Settings::default();
        settings.isolation.allow = vec!["127.0.0.1:5353/udp".into()];
        settings.public_ipv4 = Some("203.0.113.50".into());
        let list = allowed_destinations(net(3328), &settings, "nameserver 127.0.0.53\n").unwrap();
        let rules: Vec<String> = list.iter().map(Destination::nft_rule).collect();
        assert_eq!(rules[0], "ip daddr 127.0.13.0/26 accept");
        assert_eq!(
            rules[1],
            "ip daddr 127.0.0.53 meta l4proto { tcp, udp } th dport 53 accept"
        );
        assert_eq!(rules[2], "ip daddr 127.0.0.1 udp dport 5353 accept");
        assert!(rules[3].starts_with("ip daddr 203.0.113.50 tcp dport { 80, 443, 3306,"));
        assert_eq!(rules[4], "ip daddr 203.0.113.50 udp dport 53 accept");
        assert_eq!(rules.len(), 5);
        assert_eq!(
            list[0].describe(),
            "127.0.13.0/26 (the repository's own services)"
        );
    }

    #[test]
    fn no_public_address_means_no_traefik_destination() {
        let list = allowed_destinations(net(3328), &Settings::default(), "").unwrap();
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn a_bad_allow_entry_fails_the_whole_plan() {
        let mut settings = Settings::default();
        settings.isolation.allow = vec!["127.0.0.1:5353/udp".into(), "nope".into()];
        let e = allowed_destinations(net(3328), &settings, "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"nope\""), "{e}");
    }

    fn member(n: u32) -> Member {
        Member {
            id: net(n),
            nft_cgroup_path: format!("unified/renet/{n}"),
        }
    }

    #[test]
    fn install_script_replaces_the_network_chains_and_rebuilds_the_maps() {
        let allowed = allowed_destinations(net(3328), &Settings::default(), "").unwrap();
        let r = render_install("renet", net(3328), &allowed, &[member(2816), member(3328)]);
        assert!(r.contains(
            "add rule inet renet output oifname \"lo\" ct direction original socket cgroupv2 level 2 vmap @repo_output\n"
        ));
        assert!(r.contains(
            "add rule inet renet input iifname != \"lo\" ct direction original socket cgroupv2 level 2 vmap @repo_input\n"
        ));
        assert!(r.contains("flush chain inet renet output\n"));
        assert!(r.contains("add chain inet renet out_3328\nflush chain inet renet out_3328\n"));
        let own = r
            .find("add rule inet renet out_3328 ip daddr 127.0.13.0/26 accept")
            .unwrap();
        let reject = r
            .find("out_3328 meta l4proto tcp counter reject with tcp reset")
            .unwrap();
        assert!(own < reject);
        assert!(r.contains("add rule inet renet in_3328 counter drop\n"));
        assert!(r.contains("flush map inet renet repo_output\n"));
        assert!(r.contains(
            "add element inet renet repo_output { \"unified/renet/2816\" : jump out_2816, \"unified/renet/3328\" : jump out_3328 }"
        ));
        assert!(r.contains(
            "add element inet renet repo_input { \"unified/renet/2816\" : jump in_2816, \"unified/renet/3328\" : jump in_3328 }"
        ));
        // Nothing of another network's chains is touched.
        assert!(!r.contains("chain inet renet out_2816"));
    }

    #[test]
    fn remove_script_drops_the_network_and_the_table_with_the_last_one() {
        let r = render_remove("renet", net(3328), &[member(2816)]);
        assert!(r.contains(
            "add element inet renet repo_output { \"unified/renet/2816\" : jump out_2816 }"
        ));
        assert!(r.contains("flush chain inet renet out_3328\ndelete chain inet renet out_3328\n"));
        assert!(r.contains("delete chain inet renet in_3328\n"));
        // The maps are rebuilt before the chains they pointed to go.
        assert!(r.find("flush map").unwrap() < r.find("delete chain").unwrap());
        assert_eq!(
            render_remove("renet", net(3328), &[]),
            "table inet renet {}\ndelete table inet renet\n"
        );
    }

    #[test]
    fn networks_are_read_back_from_the_listing() {
        let listing = "table inet renet {\n\tmap repo_output {\n\t}\n\tchain output {\n\t}\n\tchain out_2816 {\n\t}\n\tchain in_2816 {\n\t}\n\tchain out_3328 {\n\t}\n\tchain out_99 {\n\t}\n}\n";
        assert_eq!(
            networks_in_listing(listing).into_iter().collect::<Vec<_>>(),
            vec![net(2816), net(3328)]
        );
    }

    #[test]
    fn proc_net_tables_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 020D007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0
   2: 020D007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4244 1 0000000000000000 100 0 0 10 0
";
        let l = parse_proc_net(tcp, Protocol::Tcp);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].addr, "127.0.13.2".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].port, 8080);
        assert_eq!(l[0].inode, 4242);
        assert_eq!(l[1].addr, "0.0.0.0".parse::<IpAddr>().unwrap());
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF0000020D007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0000000000000000 100 0 0 10 0
";
        let l = parse_proc_net(tcp6, Protocol::Tcp);
        assert_eq!(l[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].port, 53);
        assert_eq!(l[1].addr, "127.0.13.2".parse::<IpAddr>().unwrap());
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0
";
        assert_eq!(parse_proc_net(udp, Protocol::Udp)[0].inode, 99);
        assert!(parse_proc_net(udp, Protocol::Tcp).is_empty());
        assert!(parse_proc_net("header\ngarbage line\n", Protocol::Tcp).is_empty());
    }

    #[test]
    fn listeners_outside_the_block_are_warned_about() {
        let l = |addr: &str| Listener {
            protocol: Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port: 8080,
            inode: 1,
        };
        assert_eq!(judge_listener(net(3328), &l("127.0.13.2"), "httpd"), None);
        let w = judge_listener(net(3328), &l("0.0.0.0"), "httpd (pid 7)").unwrap();
        assert!(
            w.contains("httpd (pid 7) listens on 0.0.0.0:8080/tcp"),
            "{w}"
        );
        assert!(w.contains("$SERVICE_IP"), "{w}");
        let w = judge_listener(net(3328), &l("127.0.13.64"), "x").unwrap();
        assert!(w.contains("outside the repository's block"), "{w}");
        assert!(judge_listener(net(3328), &l("::"), "x").is_some());
    }

    #[test]
    fn containers_outside_the_repository_cgroup_are_warned_about() {
        assert_eq!(
            judge_container_cgroup(net(3328), "web", Some("/renet/3328/abc")),
            None
        );
        let w = judge_container_cgroup(net(3328), "web", Some("/docker/abc")).unwrap();
        assert!(
            w.contains("container web runs in cgroup /docker/abc"),
            "{w}"
        );
        assert!(judge_container_cgroup(net(3328), "web", Some("/renet/3392/abc")).is_some());
    }

    #[test]
    fn a_recreated_cgroup_makes_the_rules_stale() {
        let id = net(3328);
        assert_eq!(judge_table(None, id, "renet/3328"), "missing");
        let chains = "\tchain out_3328 {\n\t}\n";
        assert_eq!(
            judge_table(
                Some(&format!(
                    "elements = {{ \"renet/3328\" : jump out_3328 }}\n{chains}"
                )),
                id,
                "renet/3328"
            ),
            "installed"
        );
        assert_eq!(
            judge_table(
                Some(&format!("elements = {{ 4242 : jump out_3328 }}\n{chains}")),
                id,
                "renet/3328"
            ),
            "stale"
        );
        assert_eq!(
            judge_table(Some("\tchain out_2816 {\n\t}\n"), id, "renet/3328"),
            "missing"
        );
    }

    #[test]
    fn socket_links_give_their_inode() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
    }
}
