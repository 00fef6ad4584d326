//! Network IDs, loopback blocks and service IPs (spec §2), and the `<SERVICE>_IP` variable
//! names derived from service names (spec §4). Pure: no I/O.

use std::fmt;
use std::net::Ipv4Addr;

/// First valid network ID; every valid ID is this plus a multiple of 64.
pub const FIRST_NETWORK_ID: u32 = 2816;
/// Addresses in a repo's block (a /26).
pub const BLOCK_SIZE: u32 = 64;
/// Services a repo can hold: offsets .2 ..= .62 of the block.
pub const MAX_SERVICES: u32 = 61;
/// Largest network ID whose whole block still fits below 127.255.255.255.
pub const LAST_NETWORK_ID: u32 = 0xFF_FFFF - (BLOCK_SIZE - 1);

/// A validated network ID: `N >= 2816`, `(N - 2816) % 64 == 0`, `N + 63 <= 0xFFFFFF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkId(u32);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error(
        "invalid network ID `{0}`: it must be a number ≥ 2816 where (N - 2816) is a multiple of 64 (2816, 2880, 2944, …) and N + 63 ≤ 16777215"
    )]
    InvalidNetworkId(String),
    #[error("slot {0} is out of range: a repo has slots 0..=60 (61 services)")]
    SlotOutOfRange(u32),
}

impl NetworkId {
    pub fn new(n: u32) -> Result<Self, AddressError> {
        if n < FIRST_NETWORK_ID
            || !(n - FIRST_NETWORK_ID).is_multiple_of(BLOCK_SIZE)
            || n > LAST_NETWORK_ID
        {
            return Err(AddressError::InvalidNetworkId(n.to_string()));
        }
        Ok(NetworkId(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The block's network address: `127.(N>>16).(N>>8).(N)`.
    pub fn block_base(self) -> Ipv4Addr {
        let n = self.0;
        Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8)
    }

    /// `127.x.y.z/26`
    pub fn block_cidr(self) -> String {
        format!("{}/26", self.block_base())
    }

    /// The service IP of a slot: block base + slot + 2.
    pub fn slot_ip(self, slot: u32) -> Result<Ipv4Addr, AddressError> {
        if slot >= MAX_SERVICES {
            return Err(AddressError::SlotOutOfRange(slot));
        }
        Ok(Ipv4Addr::from(u32::from(self.block_base()) + slot + 2))
    }

    /// True when `ip` is one of this block's service addresses (.2 ..= .62).
    pub fn contains_service_ip(self, ip: Ipv4Addr) -> bool {
        let base = u32::from(self.block_base());
        let ip = u32::from(ip);
        ip >= base + 2 && ip <= base + 1 + MAX_SERVICES
    }

    /// The slot of a service IP of this block, if it is one.
    pub fn slot_of(self, ip: Ipv4Addr) -> Option<u32> {
        self.contains_service_ip(ip)
            .then(|| u32::from(ip) - u32::from(self.block_base()) - 2)
    }
}

impl std::str::FromStr for NetworkId {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u32 = s
            .trim()
            .parse()
            .map_err(|_| AddressError::InvalidNetworkId(s.to_string()))?;
        NetworkId::new(n).map_err(|_| AddressError::InvalidNetworkId(s.to_string()))
    }
}

impl serde::Serialize for NetworkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The socket file name of a repo daemon: `docker-<N>.sock`.
pub fn socket_file_name(id: NetworkId) -> String {
    format!("docker-{id}.sock")
}

/// Parses `docker-<N>.sock` (a file name or the tail of a path or `unix://` URL) into a
/// network ID, if the number is a valid one.
pub fn network_id_from_socket(s: &str) -> Option<NetworkId> {
    let name = s.rsplit('/').next()?;
    let digits = name.strip_prefix("docker-")?.strip_suffix(".sock")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: NetworkId = digits.parse().ok()?;
    // Only the canonical spelling: `docker-02816.sock` would be a second name for 2816's
    // daemon, planted by whoever can write into the folder.
    (id.to_string() == digits).then_some(id)
}

/// What every command says when it finds no network ID.
pub const MISSING_NETWORK_ID: &str = "no network ID: give `--network-id N`, set REDIACC_NETWORK_ID=N, or set \
     DOCKER_HOST=unix:///var/run/rediacc/docker-<N>.sock (N is 2816, 2880, 2944, …)";

/// A repo's network ID as every command finds it: the flag, else `REDIACC_NETWORK_ID`, else the
/// `N` of a `DOCKER_HOST` naming `docker-<N>.sock`; `None` when none of them gives one. The
/// environment values are arguments, so the order is tested without touching the process
/// environment.
pub fn resolve_network_id(
    flag: Option<NetworkId>,
    env_id: Option<&str>,
    docker_host: Option<&str>,
) -> anyhow::Result<Option<NetworkId>> {
    use anyhow::Context;
    if flag.is_some() {
        return Ok(flag);
    }
    if let Some(v) = env_id.filter(|v| !v.is_empty()) {
        let id = v
            .parse()
            .with_context(|| format!("REDIACC_NETWORK_ID=`{v}` in the environment"))?;
        return Ok(Some(id));
    }
    Ok(docker_host.and_then(network_id_from_socket))
}

/// The environment variable that carries a service's IP: upper case, every character outside
/// `[A-Z0-9_]` turned into `_`, then `_IP` (`listmonk-app` → `LISTMONK_APP_IP`).
pub fn service_ip_var(service: &str) -> String {
    let mut out: String = service
        .chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.push_str("_IP");
    out
}

/// Checks that no two service names map to the same `<SERVICE>_IP` variable.
/// Returns the variable names in the order of `services`.
pub fn service_ip_vars<'a>(
    services: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, String)>, String> {
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    let mut out = Vec::new();
    for s in services {
        let var = service_ip_var(s);
        if let Some(other) = seen.get(&var) {
            if other != s {
                return Err(format!(
                    "services `{other}` and `{s}` both map to the variable `{var}`; rename one of them"
                ));
            }
            continue;
        }
        seen.insert(var.clone(), s.to_string());
        out.push((s.to_string(), var));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> NetworkId {
        NetworkId::new(n).unwrap()
    }

    #[test]
    fn worked_examples_from_the_spec() {
        assert_eq!(id(2816).block_cidr(), "127.0.11.0/26");
        assert_eq!(id(2816).slot_ip(0).unwrap(), Ipv4Addr::new(127, 0, 11, 2));
        assert_eq!(id(2816).slot_ip(2).unwrap(), Ipv4Addr::new(127, 0, 11, 4));
        assert_eq!(id(6336).block_cidr(), "127.0.24.192/26");
        assert_eq!(id(6336).slot_ip(1).unwrap(), Ipv4Addr::new(127, 0, 24, 195));
        assert_eq!(id(2880).block_cidr(), "127.0.11.64/26");
    }

    #[test]
    fn slot_range_is_61_services() {
        assert_eq!(id(2816).slot_ip(60).unwrap(), Ipv4Addr::new(127, 0, 11, 62));
        assert_eq!(id(2816).slot_ip(61), Err(AddressError::SlotOutOfRange(61)));
    }

    #[test]
    fn invalid_network_ids() {
        for bad in [0, 1, 2815, 2817, 2848, 2879, LAST_NETWORK_ID + 64, u32::MAX] {
            assert!(NetworkId::new(bad).is_err(), "{bad} should be invalid");
        }
        for bad in ["", "abc", "-2816", "2816.0", "99999999999"] {
            assert!(
                bad.parse::<NetworkId>().is_err(),
                "{bad:?} should be invalid"
            );
        }
        assert_eq!(" 2880 ".parse::<NetworkId>().unwrap().get(), 2880);
    }

    #[test]
    fn largest_network_id_fits() {
        let last = id(LAST_NETWORK_ID);
        assert_eq!(last.get() + 63, 0xFF_FFFF);
        assert_eq!(last.slot_ip(60).unwrap(), Ipv4Addr::new(127, 255, 255, 254));
        assert!(NetworkId::new(LAST_NETWORK_ID + 64).is_err());
    }

    #[test]
    fn block_membership() {
        let n = id(2816);
        assert!(!n.contains_service_ip(Ipv4Addr::new(127, 0, 11, 1)));
        assert!(n.contains_service_ip(Ipv4Addr::new(127, 0, 11, 2)));
        assert!(n.contains_service_ip(Ipv4Addr::new(127, 0, 11, 62)));
        assert!(!n.contains_service_ip(Ipv4Addr::new(127, 0, 11, 63)));
        assert!(!n.contains_service_ip(Ipv4Addr::new(127, 0, 11, 66)));
        assert_eq!(n.slot_of(Ipv4Addr::new(127, 0, 11, 4)), Some(2));
    }

    #[test]
    fn socket_names() {
        assert_eq!(socket_file_name(id(2816)), "docker-2816.sock");
        assert_eq!(
            network_id_from_socket("unix:///var/run/rediacc/docker-2880.sock"),
            Some(id(2880))
        );
        assert_eq!(network_id_from_socket("docker-2817.sock"), None);
        assert_eq!(network_id_from_socket("/var/run/docker.sock"), None);
        assert_eq!(network_id_from_socket("docker-.sock"), None);
        assert_eq!(network_id_from_socket("docker-02816.sock"), None);
    }

    #[test]
    fn network_id_resolution_order() {
        assert_eq!(
            resolve_network_id(Some(id(2816)), Some("2880"), None).unwrap(),
            Some(id(2816))
        );
        let both = resolve_network_id(None, Some("2880"), Some("unix:///x/docker-2944.sock"));
        assert_eq!(both.unwrap(), Some(id(2880)));
        let host = resolve_network_id(
            None,
            Some(""),
            Some("unix:///var/run/rediacc/docker-2944.sock"),
        );
        assert_eq!(host.unwrap(), Some(id(2944)));
        let err = resolve_network_id(None, Some("123"), None).unwrap_err();
        assert!(
            format!("{err:#}").contains("REDIACC_NETWORK_ID=`123`"),
            "{err:#}"
        );
        assert_eq!(
            resolve_network_id(None, None, Some("unix:///var/run/docker.sock")).unwrap(),
            None
        );
    }

    #[test]
    fn service_ip_variable_names() {
        assert_eq!(service_ip_var("listmonk-app"), "LISTMONK_APP_IP");
        assert_eq!(service_ip_var("db.primary"), "DB_PRIMARY_IP");
        assert_eq!(service_ip_var("web_1"), "WEB_1_IP");
        assert_eq!(service_ip_var("Postgres"), "POSTGRES_IP");
    }

    #[test]
    fn colliding_variable_names_are_an_error() {
        let err = service_ip_vars(["db-primary", "db.primary"]).unwrap_err();
        assert!(
            err.contains("db-primary") && err.contains("db.primary"),
            "{err}"
        );
        assert!(err.contains("DB_PRIMARY_IP"), "{err}");
        assert_eq!(
            service_ip_vars(["a", "b", "a"]).unwrap(),
            vec![
                ("a".to_string(), "A_IP".to_string()),
                ("b".to_string(), "B_IP".to_string())
            ]
        );
    }
}
