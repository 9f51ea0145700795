//! The live-migration benchmark (run by `benches/migration.sh`, ignored in
//! the test suite): two real `nasvisord` hosts, each in its own network
//! namespace on a test switch, and an idle guest of the bundled image with
//! 512 MiB and 2 GiB of memory, moved back and forth with and without disk
//! copy (a host pool, or a pool both hosts reach). Each move's total time
//! and the downtime QEMU reported come from the migrate job; the script
//! prints every sample and the medians.

mod common;

use common::cluster::{move_figures as figures, Cluster};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(240);

#[test]
#[ignore = "a benchmark: run benches/migration.sh"]
fn bench_live_migration() {
    let runs: usize = std::env::var("NASVISOR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // `--max-downtime-ms` of every move (the daemon's default when unset).
    let downtime = std::env::var("NASVISOR_BENCH_DOWNTIME_MS").ok();
    let memories: Vec<String> = std::env::var("NASVISOR_BENCH_MEMORY")
        .map(|v| v.split(',').map(String::from).collect())
        .unwrap_or_else(|_| vec!["512".into(), "2048".into()]);
    // NASVISOR_BENCH_TLS=0: the hosts' `migration-tls = false`.
    let plain = std::env::var("NASVISOR_BENCH_TLS").is_ok_and(|v| v == "0");
    let c = Cluster::start_with(
        2,
        if plain {
            &["migration-tls = false"]
        } else {
            &[]
        },
    );
    let tls = if plain { "plain" } else { "tls" };
    c.form();
    let shared = tempfile::tempdir().expect("tempdir");
    let dir = shared.path().join("pool");
    c.host(1)
        .json(&["pool", "create", "nfs", dir.to_str().unwrap(), "--shared"]);
    for memory in memories.iter().map(String::as_str) {
        for (pool, label) in [("default", "disk-copy"), ("nfs", "shared-storage")] {
            let name = format!("b{memory}-{pool}");
            c.host(1)
                .try_json_within(
                    &[
                        "vm",
                        "create",
                        &name,
                        "--image",
                        "nasvisor-mini",
                        "--vcpus",
                        "1",
                        "--memory",
                        memory,
                        "--hostname",
                        &name,
                        "--pool",
                        pool,
                        "--host",
                        "nas1",
                        "--wait",
                    ],
                    BOOT,
                )
                .unwrap_or_else(|e| panic!("installing {name}: {e}"));
            c.host(1).wait_console(&name, "NASVISOR-READY", BOOT);
            // Idle: let the boot's page churn settle.
            std::thread::sleep(Duration::from_secs(2));
            for run in 0..runs {
                let to = if run % 2 == 0 { "nas2" } else { "nas1" };
                let mut args = vec!["vm", "migrate", &name, "--to", to, "--wait"];
                if let Some(d) = downtime.as_deref() {
                    args.extend(["--max-downtime-ms", d]);
                }
                let v = c.host(1).json(&args);
                assert_eq!(v["host"], to, "{v:#}");
                let jobs = c.host(1).json(&["job", "list"]);
                let job = jobs
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .filter(|j| {
                                j["kind"] == "migrate" && j["target"] == format!("vm/{name}")
                            })
                            .max_by(|x, y| x["created_at"].as_str().cmp(&y["created_at"].as_str()))
                    })
                    .unwrap_or_else(|| panic!("no migrate job for {name}: {jobs:#}"))
                    .clone();
                let (total, down) = figures(&job);
                // One line per sample, parsed by benches/migration.sh.
                println!(
                    "SAMPLE memory={memory}MiB mode={label}/{tls} total_s={total} downtime_ms={down}"
                );
            }
            c.host(1).json(&["vm", "force-off", &name]);
        }
    }
}
