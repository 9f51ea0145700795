//! The HA chaos run (run by `benches/chaos.sh`, ignored in the test suite):
//! real `nasvisord` hosts in network namespaces of their own on a test
//! switch, with the daemon's default cluster timings, two HA VMs on a pool
//! every host reaches (`NASVISOR_CHAOS_POOL=default`: on their hosts' own
//! pools, replicated to their passive hosts) (one of the bundled image running the acknowledged
//! writer, one blank), and randomised trials. A trial is one fault (kill a
//! host: its daemon and QEMUs; kill a daemon alone; kill an HA VM's QEMU;
//! cut a host's link), then the recovery is watched, then everything is
//! healed (dead daemons started again, links up) before the next trial.
//! Invariants checked after each fault:
//!
//! - no VM runs twice: every 100 ms, the live QEMUs of each VM across all
//!   hosts' run directories are counted;
//! - no acknowledged record is lost: when the writer's guest ran again
//!   somewhere, the writer, started again, must find every record up to
//!   the last `ACK` its console showed before the fault;
//! - every HA VM runs again within the target.
//!
//! It prints one `TRIAL` line per trial and a summary (trials, violations,
//! times to run again).

mod common;

use common::cluster::{console_log, eventually, numbers_after, start_acker, Cluster, Guest};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(240);
/// How long an HA VM may take to run again after a fault.
const TARGET: Duration = Duration::from_secs(30);

/// xorshift64*: reproducible from the seed the run prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// The live QEMUs of VM `id` on each host: (host index, pid).
fn qemus_of(c: &Cluster, id: &str) -> Vec<(usize, i32)> {
    let mut out = Vec::new();
    for i in 1..=c.len() {
        let pidfile = c.host(i).data_dir().join("run").join(format!("{id}.pid"));
        let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).contains(id))
            .unwrap_or(false);
        if ours && common::alive(pid) {
            out.push((i, pid));
        }
    }
    out
}

/// A host any command can go to: running and reachable.
fn any_up(c: &Cluster, down: &[usize]) -> usize {
    (1..=c.len())
        .find(|i| !down.contains(i))
        .expect("a host up")
}

fn kill(pid: i32) {
    // SAFETY: kill(2) of a QEMU pid read from a test daemon's run
    // directory and checked to be that VM's live QEMU just before.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillHost,
    KillDaemon,
    KillQemu,
    CutLink,
}

#[test]
#[ignore = "a chaos run: run benches/chaos.sh"]
fn chaos() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let trials = env("NASVISOR_CHAOS_TRIALS", 100) as usize;
    let hosts = env("NASVISOR_CHAOS_HOSTS", 3).clamp(3, 5) as usize;
    let seed = env(
        "NASVISOR_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    )
    .max(1);
    println!("CHAOS hosts={hosts} trials={trials} seed={seed}");
    let mut rng = Rng(seed);
    let (mut c, _shared) = Cluster::with_default_timings(hosts);
    // `nfs`, the shared pool; `default`, each VM's host's own pool (its
    // disks then reach other hosts only through their synchronous replica).
    let pool = std::env::var("NASVISOR_CHAOS_POOL").unwrap_or_else(|_| "nfs".into());
    let blank_disk = format!("{pool}:64");
    let guest = Guest {
        pool: Some(&pool),
        ha: true,
        ..Guest::new("guest", "nas2")
    };
    let g = c
        .host(1)
        .install_guest(&guest, BOOT)
        .unwrap_or_else(|e| panic!("installing the guest: {e}"));
    let gid = g["id"].as_str().expect("an id").to_string();
    c.host(1).json(&[
        "vm",
        "create",
        "blank",
        "--vcpus",
        "1",
        "--memory",
        "128",
        "--disk",
        &blank_disk,
        "--host",
        "nas3",
        "--ha",
    ]);
    let b = c.host(1).json(&["vm", "start", "blank"]);
    let bid = b["id"].as_str().expect("an id").to_string();
    c.host(1).wait_console("guest", "NASVISOR-READY", BOOT);
    let found = start_acker(&c, 1, 2, "guest", &gid).expect("the writer");
    assert_eq!(found, 0);

    let vms = [("guest", gid.clone()), ("blank", bid.clone())];
    let mut violations: Vec<String> = Vec::new();
    let mut times: Vec<f64> = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for trial in 0..trials {
        // Before: both VMs run once, protected.
        let settle = eventually(Duration::from_secs(120), "both VMs protected", || {
            let mut out = Vec::new();
            for (name, id) in &vms {
                let v = c.host(1).try_json(&["vm", "show", name])?;
                let q = qemus_of(&c, id);
                if v["state"] != "running" || v["ha_status"]["state"] != "protected" || q.len() != 1
                {
                    return Err(format!("{name}: {} {:?}", v["ha_status"], q));
                }
                out.push(q[0]);
            }
            Ok(out)
        });
        let guest_at = settle[0].0;
        // The writer acknowledges (it runs since the last trial).
        let floor = numbers_after(&console_log(&c, guest_at, &gid), "ACK ")
            .into_iter()
            .max()
            .unwrap_or(0);
        eventually(Duration::from_secs(60), "the writer acknowledging", || {
            let n = numbers_after(&console_log(&c, guest_at, &gid), "ACK ")
                .into_iter()
                .max()
                .unwrap_or(0);
            if n >= floor + 5 {
                Ok(())
            } else {
                std::thread::sleep(Duration::from_millis(100));
                Err(format!("last ACK {n}"))
            }
        });

        let fault = [
            Fault::KillHost,
            Fault::KillDaemon,
            Fault::KillQemu,
            Fault::CutLink,
        ][rng.below(4)];
        let vm = rng.below(2);
        let vm_name = vms[vm].0;
        let (vm_host, vm_pid) = settle[vm];
        // Host faults hit the chosen VM's host half the time, any host
        // otherwise.
        let host = if rng.below(2) == 0 {
            vm_host
        } else {
            1 + rng.below(hosts)
        };
        *counts.entry(format!("{fault:?}")).or_default() += 1;
        let readies_before: Vec<usize> = (1..=hosts)
            .map(|i| console_log(&c, i, &gid).matches("NASVISOR-READY").count())
            .collect();
        // Where each host's daemon log stands at the fault (shown for a
        // slow recovery).
        let log_marks: Vec<u64> = (1..=hosts)
            .map(|i| {
                std::fs::metadata(c.host(i).log_path())
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .collect();
        let t0 = Instant::now();
        let mut down: Vec<usize> = Vec::new();
        let mut cut: Vec<usize> = Vec::new();
        let what = match fault {
            Fault::KillHost => {
                c.host_mut(host).kill9();
                c.host(host).kill_qemus();
                c.cut(host);
                down.push(host);
                cut.push(host);
                format!("kill host nas{host}")
            }
            Fault::KillDaemon => {
                c.host_mut(host).kill9();
                down.push(host);
                format!("kill the daemon of nas{host}")
            }
            Fault::KillQemu => {
                kill(vm_pid);
                format!("kill {vm_name}'s QEMU on nas{vm_host}")
            }
            Fault::CutLink => {
                c.cut(host);
                cut.push(host);
                format!("cut nas{host}")
            }
        };
        let unreachable: Vec<usize> = down.iter().chain(&cut).copied().collect();
        // The guest's acknowledgements before the fault, as its host's
        // daemon logged them (read again once that host is down).
        let guest_old = settle[0];

        // Watch: never two QEMUs of a VM; each VM the fault touched (its
        // host unreachable, or its QEMU killed) runs again elsewhere or
        // anew, and the others keep running.
        let touched: Vec<usize> = (0..vms.len())
            .filter(|k| {
                unreachable.contains(&settle[*k].0)
                    || (matches!(fault, Fault::KillQemu) && *k == vm)
            })
            .collect();
        let mut back: BTreeMap<&str, f64> = BTreeMap::new();
        let deadline = t0 + TARGET + Duration::from_secs(30);
        loop {
            for (k, (name, id)) in vms.iter().enumerate() {
                let q = qemus_of(&c, id);
                if q.len() > 1 {
                    violations.push(format!("trial {trial} ({what}): {name} runs twice: {q:?}"));
                }
                let again = touched.contains(&k)
                    && q.len() == 1
                    && q[0] != settle[k]
                    && !unreachable.contains(&q[0].0);
                if again && !back.contains_key(*name) {
                    back.insert(name, t0.elapsed().as_secs_f64());
                }
            }
            if back.len() == touched.len() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (name, secs) in &back {
            times.push(*secs);
            if *secs > TARGET.as_secs_f64() {
                violations.push(format!(
                    "trial {trial} ({what}): {name} ran again only after {secs:.1} s"
                ));
            }
        }
        for k in &touched {
            if !back.contains_key(vms[*k].0) {
                violations.push(format!(
                    "trial {trial} ({what}): {} did not run again within {:.0} s",
                    vms[*k].0,
                    (TARGET + Duration::from_secs(30)).as_secs_f64()
                ));
            }
        }
        for k in (0..vms.len()).filter(|k| !touched.contains(k)) {
            let q = qemus_of(&c, &vms[k].1);
            if q != vec![settle[k]] {
                violations.push(format!(
                    "trial {trial} ({what}): {} was not touched but its QEMUs are {q:?}, were {:?}",
                    vms[k].0, settle[k]
                ));
            }
        }

        // Records: if the guest's QEMU changed, the writer must find all
        // that was acknowledged.
        let records = match qemus_of(&c, &gid).first().copied() {
            Some(now) if now != guest_old => {
                let acked = numbers_after(&console_log(&c, guest_old.0, &gid), "ACK ")
                    .into_iter()
                    .max()
                    .unwrap_or(0);
                let via = any_up(&c, &unreachable);
                eventually(BOOT, "the guest ready again", || {
                    let n = console_log(&c, now.0, &gid)
                        .matches("NASVISOR-READY")
                        .count();
                    if n > readies_before[now.0 - 1] {
                        Ok(())
                    } else {
                        std::thread::sleep(Duration::from_millis(100));
                        Err("not ready".into())
                    }
                });
                match start_acker(&c, via, now.0, "guest", &gid) {
                    Ok(found) if found > acked => format!("ok (ack {acked}, found {found})"),
                    Ok(found) => {
                        violations.push(format!(
                            "trial {trial} ({what}): acknowledged record lost: last ACK {acked}, \
                             found {found}"
                        ));
                        format!("LOST (ack {acked}, found {found})")
                    }
                    Err(e) => {
                        violations.push(format!("trial {trial} ({what}): {e}"));
                        "no count".into()
                    }
                }
            }
            _ => "unchanged".into(),
        };
        println!(
            "TRIAL {trial} fault={fault:?} what=\"{what}\" back={:?} records={records}",
            back
        );

        // A recovery slower than the failover target (10 s): what the
        // cluster recorded meanwhile (its events, once the records of the
        // recovery are in), and what the daemons logged about it since the
        // fault, to tell where the time went.
        if back.values().any(|s| *s > 10.0) || back.len() < touched.len() {
            std::thread::sleep(Duration::from_secs(3));
            let via = any_up(&c, &unreachable);
            if let Ok(ev) = c.host(via).try_json(&["event", "list", "--limit", "40"]) {
                let mut lines: Vec<String> = ev
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!(
                            "SLOW trial={trial} event {} {} {} {}",
                            e["time"].as_str().unwrap_or_default(),
                            e["kind"].as_str().unwrap_or_default(),
                            e["target"].as_str().unwrap_or_default(),
                            e["message"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                lines.sort();
                for l in lines {
                    println!("{l}");
                }
            }
            let names: Vec<&str> = touched.iter().map(|k| vms[*k].0).collect();
            for i in 1..=hosts {
                let Ok(log) = std::fs::read(c.host(i).log_path()) else {
                    continue;
                };
                let from = usize::try_from(log_marks[i - 1])
                    .unwrap_or(0)
                    .min(log.len());
                for l in String::from_utf8_lossy(&log[from..]).lines() {
                    let about = names.iter().any(|n| l.contains(&format!("\"{n}\"")))
                        || ["fenc", "failover", "fail over", "leader", "ha "]
                            .iter()
                            .any(|w| l.contains(w));
                    if about && !l.contains(" DEBUG ") {
                        println!("SLOW trial={trial} log nas{i} {l}");
                    }
                }
            }
        }

        // Heal.
        for i in cut {
            c.heal(i);
        }
        for i in down {
            c.host_mut(i).spawn();
        }
        let all: Vec<(usize, bool)> = (1..=hosts).map(|i| (i, true)).collect();
        c.wait_online(1, &all, Duration::from_secs(120));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    println!(
        "SUMMARY trials={trials} faults={counts:?} violations={} back_median_s={median:.2} back_max_s={:.2}",
        violations.len(),
        times.last().copied().unwrap_or(0.0)
    );
    for v in &violations {
        println!("VIOLATION {v}");
    }
    assert!(violations.is_empty(), "{violations:#?}");
}
