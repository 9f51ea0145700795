//! The failover benchmark (run by `benches/failover.sh`, ignored in the
//! test suite): three real `nasvisord` hosts with the daemon's default
//! cluster timings (heartbeat 500 ms, offline after 3 s, HA fence delay
//! 2 s), each in its own network namespace on a test switch, and an HA VM
//! of the bundled image on a pool every host reaches (or, with
//! `NASVISOR_BENCH_POOL=default`, on its host's own pool, replicated to the
//! passive host). Each trial kills the
//! VM's host (daemon and QEMU SIGKILLed, link cut) and measures, from the
//! kill, when the VM's QEMU runs on another host and when its guest prints
//! its ready marker there; then the dead host is started again and healed,
//! and the VM is protected again before the next trial.
//!
//! Before the failovers, switchovers: the VM's host put into maintenance
//! (`host degrade`), the VM moves live to its passive host; the migrate
//! job gives the move's time and the pause QEMU reported.
//!
//! The guest runs the acknowledged writer (`/lib/nasvisor/acker`, see
//! tests/guest-image/README.md): after each failover the writer, started
//! again, must find every record up to the last `ACK` the console showed
//! before the kill.

mod common;

use common::cluster::{
    console_log, eventually, move_figures, numbers_after, start_acker, Cluster, Guest,
};
use nasvisor_ticks::{longest_gap, ticker_command, TickMeter};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(240);
const READY: &str = "NASVISOR-READY";

/// How many ready markers host i's console log of VM `id` holds.
fn readies(c: &Cluster, i: usize, id: &str) -> usize {
    console_log(c, i, id).matches(READY).count()
}

/// The VM once it runs protected.
fn protected(c: &Cluster) -> serde_json::Value {
    eventually(Duration::from_secs(60), "the VM protected", || {
        let v = c.host(1).try_json(&["vm", "show", "ha"])?;
        if v["state"] == "running" && v["ha_status"]["state"] == "protected" {
            Ok(v)
        } else {
            Err(format!("{v:#}"))
        }
    })
}

#[test]
#[ignore = "a benchmark: run benches/failover.sh"]
fn bench_failover() {
    let runs: usize = std::env::var("NASVISOR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (mut c, _shared) = Cluster::with_default_timings(3);
    // `nfs`, the shared pool; `default`, the VM's host's own pool (its
    // disks then fail over through their synchronous replica).
    let pool = std::env::var("NASVISOR_BENCH_POOL").unwrap_or_else(|_| "nfs".into());
    let g = Guest {
        pool: Some(&pool),
        ha: true,
        ..Guest::new("ha", "nas2")
    };
    let v = c
        .host(1)
        .install_guest(&g, BOOT)
        .unwrap_or_else(|e| panic!("installing the HA VM: {e}"));
    let id = v["id"].as_str().expect("an id").to_string();
    c.host(1).wait_console("ha", READY, BOOT);
    assert_eq!(
        start_acker(&c, 2, 2, "ha", &id).expect("the writer's count"),
        0,
        "a new disk has no records"
    );

    // Switchovers: the VM's host put into maintenance, the VM moves live
    // to its passive host; the migrate job gives the move's time and the
    // pause QEMU reported.
    let switchovers: usize = std::env::var("NASVISOR_BENCH_SWITCHOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(runs);
    // The guest-visible gap of each move: a tick every 10 ms on the guest's
    // console, stamped here as each line reaches QEMU's console log on any
    // host.
    let tick = Duration::from_millis(10);
    if switchovers > 0 {
        c.host(1)
            .json(&["vm", "console-send", "-n", "ha", &ticker_command(tick)]);
    }
    let logs = (1..=c.len())
        .map(|i| {
            c.host(i)
                .data_dir()
                .join("run")
                .join(format!("{id}.console.log"))
        })
        .collect();
    let meter = TickMeter::start(logs);
    for run in 0..switchovers {
        let v = protected(&c);
        // A baseline of the same run: the ticks' longest interval over the
        // 3 s before the move.
        let calm = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let degraded = Instant::now();
        let baseline = longest_gap(&meter.ticks(), calm, degraded);
        assert!(
            baseline.ticks > 50,
            "the guest's ticker is not running ({} ticks in 3 s)",
            baseline.ticks
        );
        let from = v["host"].as_str().expect("a host").to_string();
        let to = v["ha_status"]["passive"]
            .as_str()
            .expect("a passive host")
            .to_string();
        c.host(1)
            .json(&["host", "degrade", &from, "--reason", "switchover benchmark"]);
        c.host(1).poll_vm("ha", Duration::from_secs(120), |v| {
            v["host"] == to.as_str() && v["state"] == "running"
        });
        let jobs = c.host(1).json(&["job", "list"]);
        let job = jobs
            .as_array()
            .and_then(|a| {
                a.iter()
                    .filter(|j| j["kind"] == "migrate" && j["target"] == "vm/ha")
                    .max_by(|x, y| x["created_at"].as_str().cmp(&y["created_at"].as_str()))
            })
            .unwrap_or_else(|| panic!("no migrate job: {jobs:#}"))
            .clone();
        let job_id = job["id"].as_str().unwrap_or_default().to_string();
        let job = eventually(Duration::from_secs(60), "the move's job done", || {
            let j = c.host(1).try_json(&["job", "show", &job_id])?;
            if j["state"] == "succeeded" {
                Ok(j)
            } else {
                Err(format!("{j:#}"))
            }
        });
        let (total, down) = move_figures(&job);
        // The ticks go on on the target: wait for a second of them.
        std::thread::sleep(Duration::from_secs(1));
        let gap = longest_gap(&meter.ticks(), degraded, Instant::now());
        assert!(gap.ticks > 50, "the guest's ticker stopped with the move");
        // The guest's whole pause as the source's daemon timed it (its
        // `switch:` log line: QEMU's STOP to the target's answer).
        let i = c.index_of_name(&from).expect("its index");
        let log = std::fs::read_to_string(c.host(i).log_path()).unwrap_or_default();
        let pause_ms = log
            .lines()
            .rev()
            .find(|l| l.contains("switch: paused"))
            .and_then(|l| l.split("resumed_ms=").nth(1))
            .and_then(|r| r.split(|ch: char| !ch.is_ascii_digit()).next())
            .unwrap_or("?")
            .to_string();
        println!(
            "SWITCHOVER run={run} from={from} to={to} total_s={total} downtime_ms={down} \
             daemon_pause_ms={pause_ms} guest_gap_ms={} gap_between=nas{}-nas{} \
             baseline_gap_ms={}",
            gap.length.as_millis(),
            gap.between.0 + 1,
            gap.between.1 + 1,
            baseline.length.as_millis()
        );
        c.host(1).json(&["host", "undegrade", &from]);
    }

    drop(meter);

    let mut lost = 0;
    for run in 0..runs {
        let v = protected(&c);
        let from = c
            .index_of_name(v["host"].as_str().expect("a host"))
            .expect("its index");
        let pid = v["pid"].as_i64().expect("a pid") as i32;
        // The writer is at work: ten more acknowledgements than now.
        let acks = |c: &Cluster| {
            numbers_after(&console_log(c, from, &id), "ACK ")
                .into_iter()
                .max()
                .unwrap_or(0)
        };
        let floor = acks(&c);
        eventually(Duration::from_secs(60), "the writer acknowledging", || {
            if acks(&c) >= floor + 10 {
                Ok(())
            } else {
                std::thread::sleep(Duration::from_millis(100));
                Err(format!("last ACK {}", acks(&c)))
            }
        });
        let before: Vec<usize> = (1..=3).map(|i| readies(&c, i, &id)).collect();
        let t0 = Instant::now();
        c.host_mut(from).kill9();
        // SAFETY: kill(2) of the QEMU pid its daemon reported for the VM.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        c.cut(from);
        // The QEMU on another host, then the guest's marker there.
        let (to, running) = eventually(Duration::from_secs(120), "the VM elsewhere", || {
            for i in (1..=3).filter(|i| *i != from) {
                if !c.live_qemus(i).is_empty() {
                    return Ok((i, t0.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
            Err("no QEMU yet".to_string())
        });
        let ready = eventually(BOOT, "the guest ready there", || {
            if readies(&c, to, &id) > before[to - 1] {
                Ok(t0.elapsed())
            } else {
                std::thread::sleep(Duration::from_millis(20));
                Err("not ready".to_string())
            }
        });
        // Every record acknowledged before the kill (as the dead host's
        // daemon logged the console) is on the disk the VM uses now.
        let acked = numbers_after(&console_log(&c, from, &id), "ACK ")
            .into_iter()
            .max()
            .expect("acknowledged records before the kill");
        let found = start_acker(&c, to, to, "ha", &id).expect("the writer's count");
        let ok = found > acked;
        if !ok {
            lost += 1;
        }
        // One line per sample, parsed by benches/failover.sh.
        println!(
            "SAMPLE run={run} from=nas{from} to=nas{to} qemu_s={:.2} ready_s={:.2} last_ack={acked} records_found={found} records_ok={ok}",
            running.as_secs_f64(),
            ready.as_secs_f64()
        );
        // The dead host comes back for the next trial.
        c.heal(from);
        c.host_mut(from).spawn();
        c.wait_online(
            to,
            &[(1, true), (2, true), (3, true)],
            Duration::from_secs(120),
        );
    }
    assert_eq!(lost, 0, "failovers that lost acknowledged records");
}
