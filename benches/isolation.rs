//! Benchmark of the isolation firewall's cost on loopback traffic (prints figures; run with
//! `cargo bench --bench isolation`, as root with nft installed).
//!
//! Every loopback packet passes the table's output and input hooks, which look the socket's
//! cgroup up in a verdict map. This loads the rules of 0, 1, 64 and 256 repositories exactly
//! as `renet daemon start` writes them, into a table of its own (`renet_bench`, so the real
//! `renet` table is not touched; removed at the end, also on panic), and measures, from a host
//! process (as Traefik is), loopback TCP connections per second and 1-byte round trips per
//! second (median of 3 windows). For comparison, the same rules as one table per repository
//! (`renet_bench_<i>`, each with its own hooks: the design renet does not use).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use renet::addresses::NetworkId;
use renet::host::isolation::{self, CgroupLayout, Member};
use renet::host::settings::Settings;

const WINDOW: Duration = Duration::from_secs(1);
const REPEAT: usize = 3;
const TABLE: &str = "renet_bench";

/// The bench's table and cgroups; removed on drop.
struct BenchTable {
    root: PathBuf,
    members: Vec<Member>,
}

impl BenchTable {
    /// Reinstalls the map rules of `members` (after the per-table comparison removed them).
    fn grow_to_members(&mut self, members: Vec<Member>) {
        if let Some(last) = members.last() {
            let allowed =
                isolation::allowed_destinations(last.id, &Settings::default(), "").unwrap();
            isolation::nft_load(&isolation::render_install(
                TABLE, last.id, &allowed, &members,
            ))
            .unwrap();
        }
        self.members = members;
    }

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

/// The same repositories as one table each, with their own hooks (the rejected design).
fn per_network_tables(members: &[Member]) -> String {
    let mut s = String::new();
    for (i, m) in members.iter().enumerate() {
        let allowed = isolation::allowed_destinations(m.id, &Settings::default(), "").unwrap();
        let accepts: String = isolation::render_install("x", m.id, &allowed, &[])
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("add rule inet x out_{} ", m.id)))
            .map(|r| format!("\t\t{r}\n"))
            .collect();
        let cg = format!(
            "socket cgroupv2 level {} \"{}\"",
            isolation::CGROUP_LEVEL,
            m.nft_cgroup_path
        );
        s += &format!(
            "table inet {TABLE}_{i} {{\n\
             \tchain output {{ type filter hook output priority filter; policy accept;\n\
             \t\toifname \"lo\" ct direction original {cg} jump out;\n\t}}\n\
             \tchain out {{\n{accepts}\t}}\n\
             \tchain input {{ type filter hook input priority filter; policy accept;\n\
             \t\tiifname != \"lo\" ct direction original {cg} counter drop;\n\t}}\n}}\n"
        );
    }
    s
}

fn drop_per_network_tables(count: usize) {
    let script: String = (0..count)
        .map(|i| format!("table inet {TABLE}_{i} {{}}\ndelete table inet {TABLE}_{i}\n"))
        .collect();
    if !script.is_empty() {
        let _ = isolation::nft_load(&script);
    }
}

impl Drop for BenchTable {
    fn drop(&mut self) {
        drop_per_network_tables(self.members.len());
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

    println!("loopback TCP from a host process, median of {REPEAT} x {WINDOW:?}");
    println!(
        "{:>13} {:>22} {:>22} {:>22} {:>22}",
        "repositories",
        "map: connections/s",
        "map: round trips/s",
        "tables: connections/s",
        "tables: round trips/s"
    );
    let measure = || {
        let conns = median(|| {
            rate(|| {
                let mut s = TcpStream::connect(closer_addr).unwrap();
                let _ = s.read_to_end(&mut Vec::new());
            })
        });
        let mut s = TcpStream::connect(echo_addr).unwrap();
        s.set_nodelay(true).unwrap();
        let trips = median(|| {
            rate(|| {
                let mut b = [7u8; 1];
                s.write_all(&b).unwrap();
                s.read_exact(&mut b).unwrap();
            })
        });
        (conns, trips)
    };
    for count in [0usize, 1, 64, 256] {
        table.grow_to(count);
        let (map_conns, map_trips) = measure();
        // Same repositories, one table each, instead of the map (whose two dispatching rules
        // are flushed meanwhile; they come back with the next install).
        isolation::nft_load(&format!(
            "table inet {TABLE} {{ chain output {{ type filter hook output priority filter; }}; \
             chain input {{ type filter hook input priority filter; }}; }}\n\
             flush chain inet {TABLE} output\nflush chain inet {TABLE} input\n"
        ))
        .unwrap();
        if count > 0 {
            isolation::nft_load(&per_network_tables(&table.members)).unwrap();
        }
        let (t_conns, t_trips) = measure();
        drop_per_network_tables(count);
        // Back to the map for the next size.
        let members = std::mem::take(&mut table.members);
        table.grow_to_members(members);
        println!("{count:>13} {map_conns:>22.0} {map_trips:>22.0} {t_conns:>22.0} {t_trips:>22.0}");
    }
}

fn median(mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..REPEAT).map(|_| f()).collect();
    v.sort_by(f64::total_cmp);
    v[REPEAT / 2]
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
