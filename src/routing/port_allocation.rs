//! TCP/UDP port allocation for `rediacc.tcp_ports` / `rediacc.udp_ports` (spec §6.4): which
//! public port (Traefik entrypoint `tcp-<port>` / `udp-<port>`) forwards to which repo's
//! service. Pure: the table is persisted by the route server.
//!
//! INTERFACE CONTRACT: `PortTable` (serde, persisted as JSON in the state folder),
//! `PortAllocation`.
//!
//! Rules (also in docs/labels.md):
//! - An allocation is keyed by (protocol, network ID, service, target, preferred port). Once
//!   made it keeps its port across builds and restarts while its entrypoint exists.
//! - A preferred (published) port is used when its entrypoint exists, no other allocation holds
//!   it (running or not) and no other repo's `traefik.tcp`/`traefik.udp` router uses it;
//!   otherwise TCP falls back to the dynamic range. UDP has no dynamic range (Traefik's static
//!   configuration defines none), so a UDP port that cannot be had is reported, not forwarded.
//! - Allocations whose container is gone are kept (a repo that is redeploying or down keeps its
//!   public ports, so clients and firewall rules keep working). They yield only when the dynamic
//!   range is full: then the stale allocation with the lowest port is reused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One allocation: a public port (its entrypoint) held by one repo's service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortAllocation {
    /// "tcp" or "udp"
    pub protocol: String,
    pub port: u16,
    pub entrypoint: String,
    pub network_id: u32,
    pub service: String,
    pub target: u16,
    /// The published port asked for (`PUBLISHED:TARGET`, or `PORT`); 0 when none was
    /// (`0:TARGET`). Part of the key, so `8080:80` and `8081:80` are two allocations.
    #[serde(default)]
    pub preferred: u16,
}

impl PortAllocation {
    fn key(&self) -> RequestKey {
        RequestKey {
            protocol: self.protocol.clone(),
            network_id: self.network_id,
            service: self.service.clone(),
            target: self.target,
            preferred: self.preferred,
        }
    }
}

/// The persisted allocation table, sorted for deterministic output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortTable {
    pub allocations: Vec<PortAllocation>,
}

impl PortTable {
    /// The allocation holding `port` of `protocol`, if any.
    pub fn holder(&self, protocol: &str, port: u16) -> Option<&PortAllocation> {
        self.allocations
            .iter()
            .find(|a| a.protocol == protocol && a.port == port)
    }
}

/// What a container asks for: forward a public port to `target` on its service IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    /// "tcp" or "udp"
    pub protocol: String,
    pub network_id: u32,
    pub service: String,
    pub target: u16,
    /// 0 = no preference: take one from the dynamic range.
    pub preferred: u16,
}

/// Which ports exist and which are off limits.
#[derive(Debug, Clone, Default)]
pub struct PortLimits {
    pub tcp_entrypoint_ports: BTreeSet<u16>,
    pub udp_entrypoint_ports: BTreeSet<u16>,
    /// First and last port of the dynamic TCP range.
    pub dynamic_range: (u16, u16),
    /// (protocol, port) → network IDs whose `traefik.tcp`/`traefik.udp` routers use that
    /// entrypoint: not allocated to another repo.
    pub used_by_labels: BTreeMap<(String, u16), BTreeSet<u32>>,
}

/// The outcome of one allocation round.
#[derive(Debug, Clone, Default)]
pub struct Allocation {
    pub table: PortTable,
    /// The port granted to each request.
    pub granted: BTreeMap<RequestKey, u16>,
    /// Requests that got no port, with the reason.
    pub refused: Vec<(RequestKey, String)>,
    /// Requests that did not get their preferred port, with the reason (they got another).
    pub moved: Vec<(RequestKey, String)>,
}

fn entrypoint(protocol: &str, port: u16) -> String {
    format!("{protocol}-{port}")
}

/// Allocates ports for `requests`, starting from the `previous` table.
pub fn allocate(previous: &PortTable, requests: &[RequestKey], limits: &PortLimits) -> Allocation {
    let requests: BTreeSet<RequestKey> = requests.iter().cloned().collect();
    let exists = |protocol: &str, port: u16| match protocol {
        "tcp" => limits.tcp_entrypoint_ports.contains(&port),
        "udp" => limits.udp_entrypoint_ports.contains(&port),
        _ => false,
    };

    // The previous table, cleaned: one allocation per key and per port, entrypoint must exist.
    let mut sorted = previous.allocations.clone();
    sorted.sort();
    let mut table: Vec<PortAllocation> = Vec::new();
    for a in sorted {
        let taken = table
            .iter()
            .any(|b| b.key() == a.key() || (b.protocol == a.protocol && b.port == a.port));
        if !taken && exists(&a.protocol, a.port) {
            table.push(a);
        }
    }

    let mut out = Allocation::default();
    for req in &requests {
        if let Some(a) = table.iter().find(|a| a.key() == *req) {
            out.granted.insert(req.clone(), a.port);
        }
    }

    let held_by_other = |table: &[PortAllocation], req: &RequestKey, port: u16| {
        table
            .iter()
            .find(|a| a.protocol == req.protocol && a.port == port && a.key() != *req)
            .cloned()
    };
    let label_users = |req: &RequestKey, port: u16| -> Vec<u32> {
        limits
            .used_by_labels
            .get(&(req.protocol.clone(), port))
            .map(|s| s.iter().copied().filter(|n| *n != req.network_id).collect())
            .unwrap_or_default()
    };

    for req in &requests {
        if out.granted.contains_key(req) {
            continue;
        }
        let mut why_not_preferred = None;
        if req.preferred != 0 {
            let p = req.preferred;
            if !exists(&req.protocol, p) {
                why_not_preferred = Some(format!(
                    "port {p} has no entrypoint `{}` (register it with the proxy)",
                    entrypoint(&req.protocol, p)
                ));
            } else if let Some(h) = held_by_other(&table, req, p) {
                why_not_preferred = Some(format!(
                    "port {p} is held by network {} (service `{}`, target {})",
                    h.network_id, h.service, h.target
                ));
            } else if let Some(n) = label_users(req, p).first() {
                why_not_preferred = Some(format!(
                    "port {p} is used by a traefik.{} router of network {n}",
                    req.protocol
                ));
            } else {
                grant(&mut table, &mut out, req, p);
                continue;
            }
        }
        if req.protocol != "tcp" {
            out.refused.push((
                req.clone(),
                format!(
                    "{}; UDP has no dynamic range, so nothing is forwarded",
                    why_not_preferred.unwrap_or_else(|| "no published port given".to_string())
                ),
            ));
            continue;
        }
        let (lo, hi) = limits.dynamic_range;
        let free = (lo..=hi).find(|&p| {
            exists("tcp", p)
                && held_by_other(&table, req, p).is_none()
                && label_users(req, p).is_empty()
        });
        let port = free.or_else(|| {
            // Range full: reuse the stale allocation (no container asks for it) with the
            // lowest port.
            let stale = table
                .iter()
                .filter(|a| {
                    a.protocol == "tcp"
                        && (lo..=hi).contains(&a.port)
                        && !requests.contains(&a.key())
                        && label_users(req, a.port).is_empty()
                })
                .map(|a| a.port)
                .min()?;
            table.retain(|a| !(a.protocol == "tcp" && a.port == stale));
            Some(stale)
        });
        match port {
            Some(p) => {
                if let Some(why) = why_not_preferred {
                    out.moved
                        .push((req.clone(), format!("{why}; got {p} instead")));
                }
                grant(&mut table, &mut out, req, p);
            }
            None => out.refused.push((
                req.clone(),
                format!(
                    "{}the dynamic TCP range {lo}-{hi} is full",
                    why_not_preferred
                        .map(|w| format!("{w}, and "))
                        .unwrap_or_default()
                ),
            )),
        }
    }

    table.sort();
    out.table = PortTable { allocations: table };
    out
}

fn grant(table: &mut Vec<PortAllocation>, out: &mut Allocation, req: &RequestKey, port: u16) {
    table.push(PortAllocation {
        protocol: req.protocol.clone(),
        port,
        entrypoint: entrypoint(&req.protocol, port),
        network_id: req.network_id,
        service: req.service.clone(),
        target: req.target,
        preferred: req.preferred,
    });
    out.granted.insert(req.clone(), port);
}

/// One entry of `rediacc.tcp_ports` / `rediacc.udp_ports`: `PORT`, `PUBLISHED:TARGET`, or
/// `0:TARGET` (no published port: one from the dynamic range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortSpec {
    /// 0 = none.
    pub published: u16,
    pub target: u16,
}

/// Parses a `rediacc.tcp_ports` / `rediacc.udp_ports` value. The error names the entry.
pub fn parse_port_list(value: &str) -> Result<Vec<PortSpec>, String> {
    let port = |s: &str, zero_ok: bool| -> Result<u16, String> {
        let s = s.trim();
        match s.parse::<u16>() {
            Ok(0) if zero_ok => Ok(0),
            Ok(p) if p > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
            _ => Err(format!("`{s}` is not a port (1-65535)")),
        }
    };
    let mut out = Vec::new();
    for entry in value.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(format!(
                "empty entry in `{value}` (expected PORT, PUBLISHED:TARGET or 0:TARGET, comma separated)"
            ));
        }
        let spec = match entry.split_once(':') {
            None => {
                let p = port(entry, false).map_err(|e| format!("entry `{entry}`: {e}"))?;
                PortSpec {
                    published: p,
                    target: p,
                }
            }
            Some((published, target)) => PortSpec {
                published: port(published, true).map_err(|e| format!("entry `{entry}`: {e}"))?,
                target: port(target, false).map_err(|e| format!("entry `{entry}`: {e}"))?,
            },
        };
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        let spec = |published, target| PortSpec { published, target };
        let ok: &[(&str, &[PortSpec])] = &[
            ("5432", &[spec(5432, 5432)]),
            ("8080:80", &[spec(8080, 80)]),
            ("0:80", &[spec(0, 80)]),
            (" 25 , 993:1993 ", &[spec(25, 25), spec(993, 1993)]),
        ];
        for (input, want) in ok {
            assert_eq!(parse_port_list(input).unwrap(), *want, "{input}");
        }
        let bad = [
            ("", "empty entry"),
            ("80,", "empty entry"),
            ("0", "`0` is not a port"),
            ("80:0", "`0` is not a port"),
            ("70000", "`70000`"),
            ("http", "`http`"),
            ("+80", "`+80`"),
            ("53/udp", "`53/udp`"),
        ];
        for (input, want) in bad {
            let e = parse_port_list(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
