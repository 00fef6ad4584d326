//! Free ports for the tests' own listeners (Traefik entry points, its API, the route server).
//!
//! Why not `bind(port 0)`: the kernel hands those out from its ephemeral range, the same range
//! every outgoing connection on the machine takes its source port from. A port that was free
//! when the test asked can be a curl's, Traefik's or dockerd's source port a moment later, and
//! the child that should listen on it fails with "address already in use" (a CI run went red
//! that way). So the ports come from outside `net.ipv4.ip_local_port_range`, which no
//! `bind(0)` and no `connect` ever takes, and a process-wide set keeps two tests of one binary
//! from being handed the same port (cargo runs the test binaries one after another).

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The ports this module picks from: above the ephemeral range when there is room there
/// (Debian's default range ends at 60999), else below it.
fn candidate_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("read /proc/sys/net/ipv4/ip_local_port_range");
    let mut bounds = range.split_whitespace().map(|n| n.parse::<u16>().unwrap());
    let (low, high) = (bounds.next().unwrap(), bounds.next().unwrap());
    if high <= 64_535 {
        (high + 1, 65_535)
    } else {
        assert!(
            low >= 11_024,
            "the ephemeral port range {low}-{high} leaves no room for test ports"
        );
        (low - 10_000, low - 1)
    }
}

/// A port no other test of this process was given, free for TCP (`udp` false) or UDP on every
/// address of `ips` a moment ago, and outside the ephemeral range.
pub fn free_port_on_all(ips: &[&str], udp: bool) -> u16 {
    let (low, high) = candidate_range();
    let span = u32::from(high - low) + 1;
    // A start that differs per process, so consecutive binaries do not probe the same ports.
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for step in 0..span {
        let port = low + ((seed.wrapping_add(step)) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        let free = ips.iter().all(|ip| {
            if udp {
                UdpSocket::bind((*ip, port)).is_ok()
            } else {
                TcpListener::bind((*ip, port)).is_ok()
            }
        });
        if free {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free test port in {low}-{high} on {ips:?}");
}

/// A TCP port of `ip` that was free a moment ago (see the module comment for why not port 0).
pub fn free_port_on(ip: &str) -> u16 {
    free_port_on_all(&[ip], false)
}
