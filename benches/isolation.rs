//! Benchmark of the isolation firewall's cost on loopback traffic (prints figures; run with
//! `cargo bench --bench isolation`, as root with nft installed).
//!
//! Every packet through the output and input hooks passes the base chain of every repository's
//! table, so the cost grows with the number of repositories. This loads 0, 1, 64 and 256 tables
//! shaped exactly like `renet daemon start`'s (named `renet_bench_<i>`, so no real table is
//! touched; all removed at the end, also on panic) and measures, from a host process (as
//! Traefik is), loopback TCP connections per second and 1-byte round trips per second.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use renet::addresses::NetworkId;
use renet::host::isolation::{self, CgroupLayout};
use renet::host::settings::Settings;

const WINDOW: Duration = Duration::from_secs(2);

/// Removes the bench tables and cgroup on drop.
struct BenchTables {
    count: usize,
    cgroup: std::path::PathBuf,
}

impl Drop for BenchTables {
    fn drop(&mut self) {
        let script: String = (0..self.count)
            .map(|i| {
                format!("table inet renet_bench_{i} {{}}\ndelete table inet renet_bench_{i}\n")
            })
            .collect();
        nft(&script);
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn nft(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run nft (apt-get install nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft refused the bench tables"
    );
}

fn main() {
    let layout = CgroupLayout::detect().expect("a cgroup v2 hierarchy");
    let cgroup = layout.mount.join("renet-bench");
    std::fs::create_dir_all(&cgroup).unwrap();
    let nft_path = cgroup
        .strip_prefix("/sys/fs/cgroup")
        .unwrap()
        .display()
        .to_string();
    let id = NetworkId::new(3328).unwrap();
    let allowed = isolation::allowed_destinations(
        id,
        &Settings::default(),
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    )
    .unwrap();
    let one = isolation::render_ruleset(id, &nft_path, &allowed);

    // One listener that closes at once (the client's connect/EOF is a whole connection) and
    // one that echoes single bytes.
    let closer = TcpListener::bind("127.0.0.1:0").unwrap();
    let closer_addr = closer.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in closer.incoming() {
            drop(c);
        }
    });
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in server.incoming().flatten() {
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                while c.read_exact(&mut b).is_ok() && c.write_all(&b).is_ok() {}
            });
        }
    });

    println!("loopback TCP from a host process, {WINDOW:?} per figure");
    println!(
        "{:>8} {:>16} {:>18}",
        "tables", "connections/s", "round trips/s"
    );
    let mut guard = BenchTables {
        count: 0,
        cgroup: cgroup.clone(),
    };
    for count in [0usize, 1, 64, 256] {
        let script: String = (guard.count..count)
            .map(|i| one.replace("renet_3328", &format!("renet_bench_{i}")))
            .collect();
        if !script.is_empty() {
            nft(&script);
        }
        guard.count = count;
        let conns = rate(|| {
            let mut s = TcpStream::connect(closer_addr).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let trips = rate(|| {
            let mut b = [7u8; 1];
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
        });
        println!("{count:>8} {conns:>16.0} {trips:>18.0}");
    }
}

/// Calls of `f` per second over [`WINDOW`].
fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < WINDOW {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}
