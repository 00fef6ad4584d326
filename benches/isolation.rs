//! Benchmark of the isolation firewall's cost on loopback traffic (prints figures; run with
//! `cargo bench --bench isolation`, as root with nft installed).
//!
//! Every loopback packet passes the table's output and input hooks, which look the socket's
//! cgroup up in a verdict map. This loads the rules of 0, 1, 64 and 256 repositories exactly
//! as `renet daemon start` writes them, into a table of its own (`renet_bench`, so the real
//! `renet` table is not touched; removed at the end, also on panic), and measures, from a host
//! process (as Traefik is), loopback TCP connections per second and 1-byte round trips per
//! second.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use renet::addresses::NetworkId;
use renet::host::isolation::{self, CgroupLayout, Member};
use renet::host::settings::Settings;

const WINDOW: Duration = Duration::from_secs(2);
const TABLE: &str = "renet_bench";

/// The bench's table and cgroups; removed on drop.
struct BenchTable {
    root: PathBuf,
    members: Vec<Member>,
}

impl BenchTable {
    /// Adds repositories (rules and cgroup each) until there are `count`.
    fn grow_to(&mut self, count: usize) {
        while self.members.len() < count {
            let i = self.members.len() as u32;
            let id = NetworkId::new(2816 + 64 * i).unwrap();
            let dir = self.root.join(i.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            self.members.push(Member {
                id,
                nft_cgroup_path: dir
                    .strip_prefix("/sys/fs/cgroup")
                    .unwrap()
                    .display()
                    .to_string(),
            });
            let allowed = isolation::allowed_destinations(id, &Settings::default(), "").unwrap();
            isolation::nft_load(&isolation::render_install(
                TABLE,
                id,
                &allowed,
                &self.members,
            ))
            .unwrap();
        }
    }
}

impl Drop for BenchTable {
    fn drop(&mut self) {
        let _ = isolation::nft_load(&format!(
            "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"
        ));
        for i in 0..self.members.len() {
            let _ = std::fs::remove_dir(self.root.join(i.to_string()));
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

fn main() {
    let layout = CgroupLayout::detect().expect("a cgroup v2 hierarchy");
    let mut table = BenchTable {
        root: layout.mount.join("renet-bench"),
        members: Vec::new(),
    };

    // One listener that closes at once (the client's connect/EOF is a whole connection) and
    // one that echoes single bytes.
    let closer = TcpListener::bind("127.0.0.1:0").unwrap();
    let closer_addr = closer.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in closer.incoming() {
            drop(c);
        }
    });
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                while c.read_exact(&mut b).is_ok() && c.write_all(&b).is_ok() {}
            });
        }
    });

    println!("loopback TCP from a host process, {WINDOW:?} per figure");
    println!(
        "{:>13} {:>16} {:>18}",
        "repositories", "connections/s", "round trips/s"
    );
    for count in [0usize, 1, 64, 256] {
        table.grow_to(count);
        let conns = rate(|| {
            let mut s = TcpStream::connect(closer_addr).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        let mut s = TcpStream::connect(echo_addr).unwrap();
        s.set_nodelay(true).unwrap();
        let trips = rate(|| {
            let mut b = [7u8; 1];
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
        });
        println!("{count:>13} {conns:>16.0} {trips:>18.0}");
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
