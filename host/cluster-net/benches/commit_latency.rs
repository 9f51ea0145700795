//! Raft commit latency of one state change across N hosts on loopback
//! (in process, each host with its own data directory, mutual TLS between
//! them, every entry fsynced by each host before it counts).
//!
//! `cargo bench -p nasvisor-cluster --bench commit_latency [-- N...]`
//! (default: 3 and 7 hosts; `NASVISOR_BENCH_WRITES` writes per case, 200).
//! Prints the median, p90 and p99 of sequential `put`s on the leader and on a
//! follower (forwarded to the leader).

use std::time::{Duration, Instant};

use nasvisor_cluster::{ClusterSettings, ClusterStore};
use nasvisor_cluster_net::TlsNet;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Stats {
    median: Duration,
    p90: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
    }
}

async fn run(hosts: usize, writes: usize) {
    let mut dirs = Vec::new();
    let mut stores = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let first = ClusterStore::create(
        dir.path(),
        1,
        addr.clone(),
        ClusterSettings::default(),
        TlsNet::shared(),
    )
    .await
    .unwrap();
    first.serve(addr.parse().unwrap()).await.unwrap();
    dirs.push(dir);
    stores.push(first);
    let formed = Instant::now();
    for _ in 1..hosts {
        let token = stores[0]
            .issue_join_token(Duration::from_secs(60))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = ClusterStore::join(
            dir.path(),
            None,
            free_addr(),
            &addr,
            &token,
            TlsNet::shared(),
        )
        .await
        .unwrap();
        dirs.push(dir);
        stores.push(s);
    }
    let formed = formed.elapsed();
    let leader = stores.iter().position(|s| s.is_leader()).unwrap();
    let follower = (leader + 1) % hosts;
    for (name, idx) in [("leader", leader), ("follower", follower)] {
        let s = &stores[idx];
        // Warm up connections.
        for i in 0..10 {
            s.put("bench", &format!("warm-{i}"), serde_json::json!(i), None)
                .await
                .unwrap();
        }
        let mut lat = Vec::with_capacity(writes);
        for i in 0..writes {
            let t = Instant::now();
            s.put(
                "bench",
                &format!("k-{i}"),
                serde_json::json!({ "i": i }),
                None,
            )
            .await
            .unwrap();
            lat.push(t.elapsed());
        }
        let st = stats(lat);
        println!(
            "{hosts} hosts, put on the {name:<8}: median {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  ({writes} writes)",
            st.median.as_secs_f64() * 1e3,
            st.p90.as_secs_f64() * 1e3,
            st.p99.as_secs_f64() * 1e3,
        );
    }
    println!(
        "{hosts} hosts: cluster formed (create + {} joins) in {formed:.2?}",
        hosts - 1
    );
    for s in stores {
        s.shutdown().await.unwrap();
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let cases = if args.is_empty() { vec![3, 7] } else { args };
    let writes = std::env::var("NASVISOR_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for hosts in cases {
        rt.block_on(run(hosts, writes));
    }
}
