//! Clusters for real: three `nasvisord` processes, each in a network
//! namespace of its own on a test switch (see `common/cluster.rs`), driven
//! by the `nasvisor` CLI run inside each host's namespace. VMs are real
//! QEMUs under TCG.
//!
//! One file although over 700 lines: no fixture is shared (each test starts
//! its own hosts, one test at a time under `SERIAL`); the migration tests
//! could move to a file of their own, which would save no setup time and add
//! a test binary, with another copy of `common`, to build.

mod common;

use common::cluster::{eventually, eventually_until, Cluster, Guest};
use common::{alive, counts};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Three daemons and TCG guests on a small machine: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const BOOT: Duration = Duration::from_secs(120);

fn is_running_on(v: &Value, host: &str) -> bool {
    v["state"] == "running" && v["host"] == host
}

/// `vm create NAME` of a blank VM, as the CLI arguments.
fn blank(name: &str) -> Vec<&str> {
    common::blank_vm_args(name, &[])
}

fn blank_with<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    common::blank_vm_args(name, extra)
}

/// The last `n` characters of `s`, for assertion messages.
fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

#[test]
fn three_hosts_form_a_cluster_place_vms_and_survive_a_leader_loss() {
    let _s = serial();
    // Three members (the limit set to 3) and a fourth host that tries.
    let mut c = Cluster::start(4);
    c.form_with(3, &["--max-members", "3"]);

    // 0. The fourth host: a bad token, then the member limit.
    let err = c
        .host(4)
        .fails(&["cluster", "join", &c.address(1), "nvjt1.bogus"]);
    assert!(err.contains("invalid join token"), "bad token: {err}");
    let t = c.host(1).json(&["cluster", "join-token"]);
    let token = t["token"].as_str().expect("a token").to_string();
    let err = c.host(4).fails(&["cluster", "join", &c.address(1), &token]);
    assert!(
        err.contains("limit") && err.contains("max_members = 3"),
        "a fourth host beyond the limit of 3: {err}"
    );
    let st = c.host(4).json(&["cluster", "status"]);
    assert_eq!(st["clustered"], false, "the refused host: {st:#}");

    // 1. Three voting members, seen from host 3; three online hosts.
    let st = c.host(3).json(&["cluster", "status"]);
    assert_eq!(st["clustered"], true, "host 3 is not clustered: {st:#}");
    let members = st["members"].as_array().expect("members is a list");
    assert_eq!(members.len(), 3, "host 3 does not see 3 members: {st:#}");
    assert!(
        members.iter().all(|m| m["voter"] == true),
        "not every member votes: {st:#}"
    );
    let addrs: BTreeSet<String> = members
        .iter()
        .filter_map(|m| m["addr"].as_str().map(String::from))
        .collect();
    let want: BTreeSet<String> = (1..=3).map(|i| c.address(i)).collect();
    assert_eq!(addrs, want, "member addresses: {st:#}");
    let hosts = c.host(1).json(&["host", "list"]);
    let list = hosts.as_array().expect("host list is a list");
    assert_eq!(list.len(), 3, "host list: {hosts:#}");
    for i in 1..=3 {
        let h = list
            .iter()
            .find(|h| h["name"] == c.name(i).as_str())
            .unwrap_or_else(|| panic!("{} is not in the host list: {hosts:#}", c.name(i)));
        assert_eq!(h["online"], true, "{} is not online: {hosts:#}", c.name(i));
        assert_eq!(
            h["address"],
            c.address(i).as_str(),
            "{}'s address: {hosts:#}",
            c.name(i)
        );
    }

    // 1b. Users and tokens are the cluster's: host 2's own first-start
    // token went with its single-host store; a token made on host 1 works
    // on host 3 at once, and once revoked on host 1, is refused on host 3
    // as soon as the revocation answered.
    let e = c.host(2).cli_with_token(&c.host(2).token, &["whoami"]);
    assert!(!e.status.success(), "host 2's own old token still works");
    let made = c
        .host(1)
        .json(&["token", "create", "ci", "--role", "viewer"]);
    let secret = made["token"].as_str().expect("a token secret").to_string();
    let id = made["id"].as_str().expect("a token id").to_string();
    let who = c.host(3).cli_with_token(&secret, &["--json", "whoami"]);
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(
        (&who["user"], &who["role"]),
        (&Value::from("admin"), &Value::from("viewer"))
    );
    let refused = c.host(3).cli_with_token(
        &secret,
        &["vm", "create", "x", "--vcpus", "1", "--memory", "64"],
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("HTTP 403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    c.host(1).json(&["token", "revoke", &id]);
    let gone = c.host(3).cli_with_token(&secret, &["whoami"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("HTTP 401"),
        "a revoked token accepted on host 3: {}",
        String::from_utf8_lossy(&gone.stderr)
    );

    // 2. A member cannot join again.
    let t = c.host(1).json(&["cluster", "join-token"]);
    let token = t["token"].as_str().expect("a token").to_string();
    let err = c.host(2).fails(&["cluster", "join", &c.address(1), &token]);
    assert!(
        err.contains("already"),
        "joining again should say host 2 is already clustered: {err}"
    );
    let st = c.host(1).json(&["cluster", "status"]);
    assert_eq!(
        st["members"].as_array().map(Vec::len),
        Some(3),
        "the refused join changed the members: {st:#}"
    );

    // 3. A VM placed on nas2 from host 1 runs there; host 3 knows.
    c.host(1).json(&blank_with("a", &["--host", "nas2"]));
    c.host(1).json(&["vm", "start", "a"]);
    let a = c
        .host(3)
        .poll_vm("a", Duration::from_secs(30), |v| is_running_on(v, "nas2"));
    let q2 = c.live_qemus(2);
    assert_eq!(
        q2.len(),
        1,
        "one QEMU should run in nas2's run dir: {q2:?}; {a:#}"
    );
    if let Some(pid) = a["pid"].as_i64() {
        assert!(
            q2.contains(&(pid as i32)),
            "VM a's pid {pid} is not nas2's QEMU {q2:?}"
        );
    }
    assert!(
        c.live_qemus(1).is_empty() && c.live_qemus(3).is_empty(),
        "a QEMU runs on nas1 or nas3: {:?} {:?}",
        c.live_qemus(1),
        c.live_qemus(3)
    );

    // 4. A VM without a host: the cluster places it.
    c.host(3).json(&blank("b"));
    c.host(3).json(&["vm", "start", "b"]);
    let b = c
        .host(3)
        .poll_vm("b", Duration::from_secs(30), |v| v["state"] == "running");
    let on = b["host"].as_str().unwrap_or_default();
    let bi = c
        .index_of_name(on)
        .unwrap_or_else(|| panic!("VM b runs on {on:?}, not one of nas1..nas3: {b:#}"));
    let qb = c.live_qemus(bi);
    assert!(!qb.is_empty(), "no QEMU in {on}'s run dir for VM b: {b:#}");
    if let Some(pid) = b["pid"].as_i64() {
        assert!(
            qb.contains(&(pid as i32)),
            "VM b's pid {pid} is not a QEMU of {on}: {qb:?}"
        );
    }

    // 5. kill -9 the leader: within 10 s the others elect a new one, answer
    // and take changes.
    let l = c.leader();
    let old = c.node_id(l);
    c.host_mut(l).kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = || deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
    let s = (1..=3).find(|&i| i != l).unwrap();
    let st = eventually_until(
        deadline,
        &format!("host {s} naming a leader other than the killed nas{l} (node {old})"),
        || {
            let st = c.host(s).try_json_within(&["cluster", "status"], left())?;
            match st["leader"].as_u64() {
                Some(id) if id != old => Ok(st),
                _ => Err(format!("{st:#}")),
            }
        },
    );
    let nl = c.leader_in(&st);
    assert!(
        nl.is_some_and(|n| n != l),
        "the new leader is not a surviving member: {st:#}"
    );
    let a = c
        .host(s)
        .try_json_within(&["vm", "show", "a"], left())
        .unwrap_or_else(|e| panic!("host {s} after the leader's loss: {e}"));
    assert_eq!(a["name"], "a", "{a:#}");
    let vc = c
        .host(s)
        .try_json_within(&blank("c"), left())
        .unwrap_or_else(|e| panic!("host {s} after the leader's loss: {e}"));
    assert_eq!(vc["name"], "c", "{vc:#}");

    // The killed host comes back and catches up.
    c.host_mut(l).spawn();
    let all: Vec<(usize, bool)> = (1..=3).map(|i| (i, true)).collect();
    c.wait_online(s, &all, Duration::from_secs(30));
    let vc = eventually(
        Duration::from_secs(30),
        &format!("vm show c on the restarted nas{l}"),
        || c.host(l).try_json(&["vm", "show", "c"]),
    );
    assert_eq!(vc["name"], "c", "{vc:#}");
}

#[test]
fn a_follower_cut_off_from_the_majority_stops_its_vms_and_comes_back() {
    let _s = serial();
    let mut c = Cluster::start(3);
    c.form();
    let l = c.leader();
    let cut = (1..=3).rev().find(|&i| i != l).unwrap();
    cut_off_host_stops_its_vms_and_comes_back(&mut c, cut);
}

/// The leader cut off keeps the same deadline as a follower: its fencing
/// runs on its own clock, not behind the heartbeat round's log writes
/// (which each wait 10 s for a majority that is gone).
#[test]
fn a_leader_cut_off_from_the_majority_stops_its_vms_and_comes_back() {
    let _s = serial();
    let mut c = Cluster::start(3);
    c.form();
    let l = c.leader();
    cut_off_host_stops_its_vms_and_comes_back(&mut c, l);
}

/// Host `cut` runs VM v, is cut off from the others, refuses changes and
/// stops v's QEMU, while the majority goes on and sees it offline, all
/// within 15 s (offline after 3 s, quorum-stop delay 4 s); healed, it
/// catches up and runs v again.
fn cut_off_host_stops_its_vms_and_comes_back(c: &mut Cluster, cut: usize) {
    let me = format!("nas{cut}");
    let o = (1..=3).find(|&i| i != cut).unwrap();
    c.host(o).json(&blank_with("v", &["--host", &me]));
    c.host(o).json(&["vm", "start", "v"]);
    let v = c
        .host(o)
        .poll_vm("v", Duration::from_secs(30), |v| is_running_on(v, &me));
    let q = c.live_qemus(cut);
    assert_eq!(q.len(), 1, "one QEMU should run on {me}: {q:?}; {v:#}");
    let pid = q[0];

    c.cut(cut);
    let deadline = Instant::now() + Duration::from_secs(15);

    // The cut-off host refuses changes: it has no quorum. (A change sent
    // in the moment before it noticed may time out instead: its outcome is
    // unknown to the client, so each attempt has its own name.)
    let attempt = std::cell::Cell::new(0);
    let err = eventually_until(
        deadline,
        &format!("{me} refusing vm create x for lack of quorum"),
        || {
            let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
            attempt.set(attempt.get() + 1);
            let name = format!("x{}", attempt.get());
            let x = ["vm", "create", &name, "--vcpus", "1", "--memory", "128"];
            let Some(o) = c.host(cut).cli_within(&x, left) else {
                return Err("no answer (the CLI was stopped)".into());
            };
            assert!(
                !o.status.success(),
                "{me}, cut off from the majority, accepted vm create x: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            let e = String::from_utf8_lossy(&o.stderr).into_owned();
            if e.contains("quorum") {
                Ok(e)
            } else {
                Err(e)
            }
        },
    );
    assert!(err.contains("quorum"), "{err}");

    // After the quorum-stop delay, its VM's QEMU is stopped.
    eventually_until(
        deadline,
        &format!("VM v's QEMU {pid} on the cut-off {me} stopping"),
        || {
            if alive(pid) {
                Err(format!("QEMU {pid} still runs"))
            } else {
                Ok(())
            }
        },
    );

    // The majority keeps working, and sees the host go offline (all within
    // 15 s of the cut).
    eventually_until(deadline, &format!("host {o} accepting vm create y"), || {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let Some(out) = c.host(o).cli_within(&blank("y"), left) else {
            return Err("no answer (the CLI was stopped)".into());
        };
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        // A retry after an attempt that went through late.
        if out.status.success() || e.contains("already exists") {
            Ok(())
        } else {
            Err(e)
        }
    });
    let y = c.host(o).json(&["vm", "show", "y"]);
    assert_eq!(y["name"], "y", "{y:#}");
    eventually_until(
        deadline,
        &format!("host list on host {o} showing {me} offline"),
        || {
            let seen = c.online(o)?;
            if seen.iter().any(|(n, on)| *n == me && !on) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    eventually_until(
        deadline,
        &format!("a host-offline event about {me} on host {o}"),
        || {
            let ev = c.host(o).try_json(&["event", "list"])?;
            let found = ev.as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e["kind"] == "host-offline" && e.to_string().contains(&me))
            });
            if found {
                Ok(())
            } else {
                Err(format!("{ev:#}"))
            }
        },
    );

    // Healed: the host is back online, catches up, and runs v again.
    c.heal(cut);
    let deadline = Instant::now() + Duration::from_secs(30);
    eventually_until(
        deadline,
        &format!("host list on host {o} showing {me} online again"),
        || {
            let seen = c.online(o)?;
            if seen.iter().any(|(n, on)| *n == me && *on) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    eventually_until(deadline, &format!("VM v running on {me} again"), || {
        let v = c.host(o).try_json(&["vm", "show", "v"])?;
        let fresh: Vec<i32> = c
            .live_qemus(cut)
            .into_iter()
            .filter(|p| *p != pid)
            .collect();
        if is_running_on(&v, &me) && !fresh.is_empty() {
            Ok(())
        } else {
            Err(format!("new QEMUs on {me}: {fresh:?}; {v:#}"))
        }
    });
    eventually_until(
        deadline,
        &format!("{me} knowing VM y, created while it was cut off"),
        || c.host(cut).try_json(&["vm", "show", "y"]),
    );
    let refused = format!("x{}", attempt.get());
    let err = c.host(o).fails(&["vm", "show", &refused]);
    assert!(
        err.contains("not found"),
        "the change refused on the cut-off host exists: {err}"
    );
}

/// VM `vm` (its JSON) moved from host `from` to host `to` while its guest
/// counted: the count goes on on `to` (10 more), the first count there
/// follows the last one in `from`'s console log, and no number is missing
/// or repeated.
fn assert_counting_continued(c: &Cluster, vm: &Value, from: usize, to: usize, last_before: u64) {
    let name = vm["name"].as_str().unwrap_or_default();
    let id = vm["id"].as_str().unwrap_or_default();
    let console = |d: &common::Daemon| {
        let o = d.cli(&["vm", "console", name, "--tail", "1048576"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let first = console(c.host(to));
    let first_max = counts(&first).last().copied().unwrap_or(0);
    let after = eventually(
        Duration::from_secs(60),
        &format!("the console of {name} on host {to} growing by 10 counts"),
        || {
            let t = console(c.host(to));
            match counts(&t).last() {
                Some(&n) if n >= first_max + 10 && n > last_before => Ok(t),
                _ => Err(tail(&t, 2000).to_string()),
            }
        },
    );
    // Across the switch: the source's log ends where the target's begins.
    let src_log = c
        .host(from)
        .data_dir()
        .join("run")
        .join(format!("{id}.console.log"));
    let src_text =
        String::from_utf8_lossy(&std::fs::read(&src_log).unwrap_or_default()).into_owned();
    let last_on_source = counts(&src_text).last().copied();
    let first_on_target = counts(&after).first().copied();
    match (last_on_source, first_on_target) {
        (Some(l), Some(f)) => assert_eq!(
            f,
            l + 1,
            "{name}: counts lost or repeated at the switch (source log {})",
            src_log.display()
        ),
        other => panic!("{name}: no counts on one side (source, target): {other:?}"),
    }
    let seq = counts(&after);
    for w in seq.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{name}: the count on host {to} went from {} to {} (a gap or a restart):\n{}",
            w[0],
            w[1],
            tail(&after, 3000)
        );
    }
}

#[test]
fn live_migration_keeps_the_guest_counting() {
    let _s = serial();
    let c = Cluster::start(3);
    c.form();
    let vm = c
        .host(1)
        .install_guest(&Guest::new("mig", "nas1"), BOOT * 2)
        .unwrap_or_else(|e| panic!("installing VM mig on nas1: {e}"));
    assert!(is_running_on(&vm, "nas1"), "{vm:#}");
    c.host(1).wait_console("mig", "NASVISOR-READY", BOOT);

    // The image's counter: "COUNT <n>" every 100 ms on the serial console.
    c.host(1)
        .json(&["vm", "console-send", "-n", "mig", "/lib/nasvisor/counter &"]);
    let before = c
        .host(1)
        .wait_console("mig", "COUNT 20", Duration::from_secs(60));
    let last_before = counts(&before).last().copied().unwrap_or(0);

    let moved = c
        .host(1)
        .try_json_within(
            &["vm", "migrate", "mig", "--to", "nas2", "--wait"],
            BOOT * 2,
        )
        .unwrap_or_else(|e| panic!("migrating VM mig to nas2: {e}"));
    assert!(
        is_running_on(&moved, "nas2"),
        "after the migration: {moved:#}"
    );
    // The source logged each step of the switch (the disk was copied).
    let log = std::fs::read_to_string(c.host(1).log_path()).unwrap();
    let switch = log
        .lines()
        .find(|l| l.contains("switch: paused → stream completed +"))
        .unwrap_or_else(|| panic!("no switch: line in nas1's log:\n{}", tail(&log, 4000)));
    assert!(
        switch.contains("mirrors ended +")
            && switch.contains("resumed on the target +")
            && !switch.contains("+?"),
        "{switch}"
    );
    eprintln!("nas1: {switch}");
    let shown = c
        .host(2)
        .poll_vm("mig", Duration::from_secs(30), |v| is_running_on(v, "nas2"));
    assert!(!c.live_qemus(2).is_empty(), "no QEMU on nas2: {shown:#}");
    eventually(
        Duration::from_secs(30),
        "the source QEMU on nas1 exiting",
        || {
            let q = c.live_qemus(1);
            if q.is_empty() {
                Ok(())
            } else {
                Err(format!("{q:?}"))
            }
        },
    );

    // The guest keeps counting on nas2, without a restart or a gap.
    assert_counting_continued(&c, &vm, 1, 2, last_before);
    let jobs = c.host(1).json(&["job", "list"]);
    let job = jobs
        .as_array()
        .and_then(|a| a.iter().find(|j| j["kind"] == "migrate"))
        .unwrap_or_else(|| panic!("no migrate job: {jobs:#}"))
        .clone();
    let msg = job["message"].as_str().unwrap_or_default();
    eprintln!("live migration with disk copy: {msg}");
    assert!(
        msg.contains("downtime") && msg.contains("of disk copied"),
        "the job reports neither downtime nor the disk copy: {job:#}"
    );
    // The source's disk copies are gone: the volumes live on nas2 now.
    let vols = c.host(1).json(&["volume", "list", "default"]);
    assert_eq!(vols, serde_json::json!([]), "nas1 kept volumes: {vols:#}");

    // Shared storage: a pool every host reaches; the move copies no disk.
    let shared = tempfile::tempdir().expect("tempdir");
    let dir = shared.path().join("pool");
    let dir = dir.to_str().unwrap();
    c.host(2).json(&["pool", "create", "nfs", dir, "--shared"]);
    let g = Guest {
        memory_mib: 192,
        pool: Some("nfs"),
        ..Guest::new("sh", "nas2")
    };
    let vm = c
        .host(2)
        .install_guest(&g, BOOT * 2)
        .unwrap_or_else(|e| panic!("installing VM sh on the shared pool: {e}"));
    assert!(is_running_on(&vm, "nas2"), "{vm:#}");
    assert!(
        vm["disks"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["pool"] == "nfs")),
        "VM sh's disks are not all on the shared pool: {vm:#}"
    );
    c.host(2).wait_console("sh", "NASVISOR-READY", BOOT);
    c.host(2)
        .json(&["vm", "console-send", "-n", "sh", "/lib/nasvisor/counter &"]);
    let before = c
        .host(2)
        .wait_console("sh", "COUNT 20", Duration::from_secs(60));
    let last_before = counts(&before).last().copied().unwrap_or(0);
    let moved = c
        .host(3)
        .try_json_within(&["vm", "migrate", "sh", "--to", "nas3", "--wait"], BOOT * 2)
        .unwrap_or_else(|e| panic!("migrating VM sh to nas3: {e}"));
    assert!(is_running_on(&moved, "nas3"), "{moved:#}");
    let jobs = c.host(3).json(&["job", "list"]);
    let job = jobs
        .as_array()
        .and_then(|a| {
            a.iter()
                .rfind(|j| j["kind"] == "migrate" && j["target"] == "vm/sh")
        })
        .unwrap_or_else(|| panic!("no migrate job of sh: {jobs:#}"))
        .clone();
    let msg = job["message"].as_str().unwrap_or_default();
    eprintln!("live migration on shared storage: {msg}");
    assert!(
        msg.contains("downtime") && !msg.contains("disk copied"),
        "a move on shared storage should copy no disk: {job:#}"
    );
    assert_counting_continued(&c, &vm, 2, 3, last_before);
    c.host(3)
        .json(&["vm", "console-send", "-n", "sh", "echo MOVED-$((40+2))"]);
    c.host(3)
        .wait_console("sh", "MOVED-42", Duration::from_secs(60));
}

#[test]
fn pool_and_volume_requests_carried_out_on_the_host_they_name_and_a_removed_host_refused() {
    let _s = serial();
    let c = Cluster::start(2);
    c.form();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Asked of nas1, carried out on nas2's own pool.
    let v = c
        .host(1)
        .json(&["volume", "create", "default", "far", "64", "--host", "nas2"]);
    assert_eq!(v["name"], "far", "{v:#}");
    let on2 = c
        .host(1)
        .json(&["volume", "list", "default", "--host", "nas2"]);
    assert!(names(&on2).contains(&"far".to_string()), "{on2:#}");
    assert!(
        names(&c.host(2).json(&["volume", "list", "default"])).contains(&"far".to_string()),
        "nas2 itself does not see it"
    );
    let on1 = c.host(1).json(&["volume", "list", "default"]);
    assert!(!names(&on1).contains(&"far".to_string()), "{on1:#}");
    c.host(1).json(&[
        "snapshot", "create", "default", "far", "s1", "--host", "nas2",
    ]);
    let snaps = c.host(2).json(&["snapshot", "list", "default", "far"]);
    assert_eq!(names(&snaps), vec!["s1".to_string()], "{snaps:#}");
    // A pool of nas2's own, made from nas1; `pool list --host` shows
    // nas2's pools measured there.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = c.host(1).json(&[
        "pool",
        "create",
        "extra",
        dir.path().to_str().unwrap(),
        "--host",
        "nas2",
    ]);
    assert_eq!(p["host"], "nas2", "{p:#}");
    let pools = c.host(1).json(&["pool", "list", "--host", "nas2"]);
    let rows = pools.as_array().expect("a list");
    assert!(
        rows.iter()
            .all(|r| r["host"] == "nas2" || r["host"].is_null()),
        "{pools:#}"
    );
    let extra = rows
        .iter()
        .find(|r| r["name"] == "extra")
        .expect("extra listed");
    assert!(extra["capacity_mib"].as_u64().unwrap_or(0) > 0, "{extra:#}");
    // Deleting, and an unknown host.
    c.host(1)
        .json(&["volume", "delete", "default", "far", "--host", "nas2"]);
    let on2 = c.host(2).json(&["volume", "list", "default"]);
    assert!(!names(&on2).contains(&"far".to_string()), "{on2:#}");
    let err = c
        .host(1)
        .fails(&["volume", "list", "default", "--host", "nas9"]);
    assert!(err.contains("host") && err.contains("nas9"), "{err}");

    // nas2 is removed from the cluster: it can no longer talk to nas1.
    let id2 = c.node_id(2).to_string();
    c.host(1).json(&["cluster", "remove", &id2]);
    let err = c.host(2).fails(&[
        "volume", "create", "default", "late", "64", "--host", "nas1",
    ]);
    assert!(
        err.contains("not a member"),
        "a removed host asking nas1: {err}"
    );
    let err = c.host(2).fails(&blank("late"));
    assert!(
        err.contains("not a member"),
        "a removed host writing: {err}"
    );
    let on1 = c.host(1).json(&["volume", "list", "default"]);
    assert!(!names(&on1).contains(&"late".to_string()), "{on1:#}");
    let vms = c.host(1).json(&["vm", "list"]);
    assert!(!names(&vms).contains(&"late".to_string()), "{vms:#}");
}

#[test]
fn cordon_evacuate_offline_move_image_copy_and_cluster_plugins() {
    let _s = serial();
    let c = Cluster::start(2);
    c.form();

    // Plugins of the whole cluster: removed on one host, gone on both;
    // installed on the other, active on both.
    let state_of = |i: usize, world: &str| -> Result<String, String> {
        let list = c.host(i).try_json(&["plugin", "list"])?;
        list.as_array()
            .and_then(|a| a.iter().find(|p| p["world"] == world))
            .and_then(|p| p["state"].as_str().map(String::from))
            .ok_or_else(|| format!("no {world} plugin listed: {list:#}"))
    };
    let scheduler = nasvisor_plugin_host::testkit::plugin_dir().join("nasvisor-scheduler.nvplugin");
    c.host(1)
        .json(&["plugin", "install", scheduler.to_str().unwrap()]);
    let wait_state = |want: &str| {
        for i in [1, 2] {
            eventually(
                Duration::from_secs(10),
                &format!("host {i}: the scheduler plugin {want}"),
                || match state_of(i, "scheduler")? {
                    s if s == want => Ok(()),
                    s => Err(s),
                },
            );
        }
    };
    c.host(2).json(&["plugin", "uninstall", "scheduler"]);
    wait_state("fallback");
    c.host(2)
        .json(&["plugin", "install", scheduler.to_str().unwrap()]);
    wait_state("active");
    let junk = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(junk.path(), b"not a plugin").unwrap();
    let err = c
        .host(1)
        .fails(&["plugin", "install", junk.path().to_str().unwrap()]);
    assert!(err.contains("package") && err.contains("HTTP 422"), "{err}");

    // A cordoned host gets no new VMs, not even when asked for.
    c.host(1).json(&["host", "cordon", "nas2"]);
    let hosts = c.host(2).json(&["host", "list"]);
    let nas2 = hosts
        .as_array()
        .and_then(|a| a.iter().find(|h| h["id"] == "nas2"))
        .unwrap_or_else(|| panic!("nas2 missing: {hosts:#}"));
    assert_eq!(nas2["cordoned"], true, "{hosts:#}");
    for n in ["p1", "p2", "p3"] {
        let v = c.host(2).json(&blank(n));
        assert_eq!(v["host"], "nas1", "VM {n} placed on a cordoned host: {v:#}");
    }
    let err = c.host(1).fails(&blank_with("p4", &["--host", "nas2"]));
    assert!(
        err.contains("cordoned"),
        "explicit placement on nas2: {err}"
    );
    c.host(1).json(&["host", "uncordon", "nas2"]);

    // Offline move: a stopped VM and its disk go to nas2.
    let before = c.host(1).json(&["volume", "list", "default"]);
    assert!(
        before.to_string().contains("p3-disk0"),
        "p3's disk is not on nas1: {before:#}"
    );
    let moved = c
        .host(2)
        .json(&["vm", "migrate", "p3", "--to", "nas2", "--wait"]);
    assert_eq!(moved["host"], "nas2", "{moved:#}");
    assert_eq!(moved["state"], "stopped", "{moved:#}");
    let on2 = c.host(2).json(&["volume", "list", "default"]);
    assert!(on2.to_string().contains("p3-disk0"), "{on2:#}");
    let on1 = c.host(1).json(&["volume", "list", "default"]);
    assert!(!on1.to_string().contains("p3-disk0"), "{on1:#}");
    c.host(1).json(&["vm", "start", "p3"]);
    c.host(1)
        .poll_vm("p3", Duration::from_secs(30), |v| is_running_on(v, "nas2"));

    // Evacuate nas1: its running VM goes live to nas2 (the scheduler
    // plugin does not overcommit vCPUs: nas2 has room for one more); the
    // stopped one stays; nas1 stays cordoned.
    c.host(1).json(&["vm", "start", "p1"]);
    let job = c.host(2).json(&["host", "evacuate", "nas1", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    c.host(1)
        .poll_vm("p1", Duration::from_secs(30), |v| is_running_on(v, "nas2"));
    let p2 = c.host(2).json(&["vm", "show", "p2"]);
    assert!(
        p2["host"] == "nas1" && p2["state"] == "stopped",
        "the stopped VM moved: {p2:#}"
    );
    assert!(
        c.live_qemus(1).is_empty(),
        "QEMUs left on the evacuated nas1: {:?}",
        c.live_qemus(1)
    );
    let hosts = c.host(1).json(&["host", "list"]);
    let nas1 = hosts
        .as_array()
        .and_then(|a| a.iter().find(|h| h["id"] == "nas1"))
        .unwrap_or_else(|| panic!("nas1 missing: {hosts:#}"));
    assert_eq!(nas1["cordoned"], true, "{hosts:#}");
    assert_eq!(nas1["vms"], 1, "{hosts:#}");

    // An image only nas1 has: an install on nas2 copies it there first.
    for n in ["p1", "p3"] {
        c.host(2).json(&["vm", "force-off", n]);
    }
    let src =
        nasvisor_plugin_host::testkit::workspace_root().join("target/guest/nasvisor-mini.qcow2");
    let job = c.host(1).json(&[
        "image",
        "add",
        "solo",
        "--upload",
        src.to_str().unwrap(),
        "--ready-marker",
        "NASVISOR-READY",
    ]);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let hosts_of = |c: &Cluster| {
        let images = c.host(2).json(&["image", "list"]);
        images
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == "solo"))
            .map(|i| i["hosts"].clone())
            .unwrap_or_else(|| panic!("image solo is not listed: {images:#}"))
    };
    assert_eq!(hosts_of(&c), serde_json::json!(["nas1"]));
    let g = Guest {
        image: "solo",
        memory_mib: 192,
        ..Guest::new("s1", "nas2")
    };
    let vm = c
        .host(1)
        .install_guest(&g, BOOT * 2)
        .unwrap_or_else(|e| panic!("installing from an image nas2 lacks: {e}"));
    assert!(is_running_on(&vm, "nas2"), "{vm:#}");
    c.host(1).wait_console("s1", "NASVISOR-READY", BOOT);
    assert_eq!(hosts_of(&c), serde_json::json!(["nas1", "nas2"]));
}

/// After a failed move of VM `m` to nas2: nas2 kept no copy of its disk
/// `big`, and the VM still moves there.
fn no_copy_on_nas2_and_the_vm_still_moves(c: &Cluster) {
    let on2 = c.host(2).json(&["volume", "list", "default"]);
    assert!(
        !on2.to_string().contains("\"big\""),
        "the target kept the half-copied volume: {on2:#}"
    );
    let moved = c
        .host(1)
        .json(&["vm", "migrate", "m", "--to", "nas2", "--wait"]);
    assert!(is_running_on(&moved, "nas2"), "{moved:#}");
}

/// VM `m` runs on nas1 (as host i sees it), with the same QEMU `pid`.
fn m_runs_on_nas1_with(c: &Cluster, i: usize, pid: &[i32]) {
    let vm = c
        .host(i)
        .poll_vm("m", Duration::from_secs(30), |v| is_running_on(v, "nas1"));
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(c.live_qemus(1), pid, "the source QEMU changed");
}

/// Starts host i's daemon again and waits until nas1 sees all three hosts
/// online.
fn restart_and_wait_online(c: &mut Cluster, i: usize) {
    c.host_mut(i).spawn();
    let all: Vec<(usize, bool)> = (1..=3).map(|i| (i, true)).collect();
    c.wait_online(1, &all, Duration::from_secs(60));
}

/// Host i has no live QEMU left (within 30 s).
fn wait_no_qemu(c: &Cluster, i: usize) {
    eventually(
        Duration::from_secs(30),
        &format!("nas{i} without a QEMU"),
        || {
            let q = c.live_qemus(i);
            if q.is_empty() {
                Ok(())
            } else {
                Err(format!("{q:?}"))
            }
        },
    );
}

/// Starts moving VM `m` from nas1 to nas2 and returns the job's id once the
/// disk mirror runs.
fn move_m_to_nas2_until_mirroring(c: &Cluster) -> String {
    let job = c.host(1).json(&["vm", "migrate", "m", "--to", "nas2"]);
    let id = job["id"].as_str().expect("a job id").to_string();
    eventually(Duration::from_secs(60), "the disk mirror running", || {
        let j = c.host(1).try_json(&["job", "show", &id])?;
        match j["message"].as_str() {
            Some(m) if m.starts_with("disks:") => Ok(()),
            _ => Err(format!("{j:#}")),
        }
    });
    id
}

/// Job `id` (asked of nas1) once it has ended.
fn job_end(c: &Cluster, id: &str, timeout: Duration) -> Value {
    eventually(timeout, &format!("job {id} ending"), || {
        let j = c.host(1).try_json(&["job", "show", id])?;
        match j["state"].as_str() {
            Some("cancelled" | "failed" | "succeeded") => Ok(j),
            _ => Err(format!("{j:#}")),
        }
    })
}

/// Starts VM `name` on nas1 with a 256 MiB disk of random data (so a
/// mirror of it takes a while); returns its QEMU's pid.
fn start_vm_with_random_disk(c: &Cluster, name: &str) -> Vec<i32> {
    // A disk of random data, so the mirror takes a while.
    let data = tempfile::NamedTempFile::new().expect("tempfile");
    let o = std::process::Command::new("head")
        .args(["-c", "256M", "/dev/urandom"])
        .stdout(data.reopen().expect("reopen"))
        .status()
        .expect("head runs");
    assert!(o.success());
    let job = c.host(1).json(&[
        "volume",
        "import",
        "default",
        "big",
        data.path().to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    c.host(1).json(&blank_with(
        name,
        &["--disk", "default:volume=big", "--host", "nas1"],
    ));
    c.host(1).json(&["vm", "start", name]);
    let pid = c.live_qemus(1);
    assert_eq!(pid.len(), 1, "{pid:?}");
    pid
}

#[test]
fn a_cancelled_live_migration_leaves_the_vm_running_on_its_source() {
    let _s = serial();
    let c = Cluster::start(2);
    c.form();
    let pid = start_vm_with_random_disk(&c, "m");

    let job = c.host(2).json(&["vm", "migrate", "m", "--to", "nas2"]);
    let id = job["id"].as_str().expect("a job id").to_string();
    c.host(2).json(&["job", "cancel", &id]);
    let end = job_end(&c, &id, Duration::from_secs(60));
    assert_eq!(end["state"], "cancelled", "{end:#}");
    m_runs_on_nas1_with(&c, 2, &pid);
    wait_no_qemu(&c, 2);
    no_copy_on_nas2_and_the_vm_still_moves(&c);
}

#[test]
fn a_target_crashing_during_the_disk_mirror_leaves_the_vm_on_its_source() {
    let _s = serial();
    // Three hosts, so the source and nas3 keep a majority.
    let mut c = Cluster::start(3);
    c.form();
    let pid = start_vm_with_random_disk(&c, "m");

    let id = move_m_to_nas2_until_mirroring(&c);
    // nas2 crashes: its daemon and its QEMU (the paused target) die.
    c.host_mut(2).kill9();
    c.host(2).kill_qemus();

    let end = job_end(&c, &id, Duration::from_secs(90));
    assert_eq!(end["state"], "failed", "{end:#}");
    m_runs_on_nas1_with(&c, 3, &pid);

    // nas2 comes back and drops what it had prepared: no QEMU, no volume.
    restart_and_wait_online(&mut c, 2);
    assert!(c.live_qemus(2).is_empty(), "{:?}", c.live_qemus(2));
    no_copy_on_nas2_and_the_vm_still_moves(&c);
}

#[test]
fn a_target_daemon_down_at_the_switch_resumes_the_vm_when_it_is_back() {
    let _s = serial();
    let mut c = Cluster::start(3);
    c.form();
    start_vm_with_random_disk(&c, "m");
    let id = move_m_to_nas2_until_mirroring(&c);
    // Only nasvisord on nas2 dies: its paused QEMU takes the disk and the
    // memory, and the log (nas1 and nas3) passes the VM to nas2.
    c.host_mut(2).kill9();
    let end = job_end(&c, &id, Duration::from_secs(120));
    assert_eq!(end["state"], "failed", "{end:#}");
    assert!(
        end["error"].as_str().unwrap_or("").contains("owns the VM"),
        "{end:#}"
    );
    assert!(c.live_qemus(1).is_empty(), "the source QEMU stayed");
    let q2 = c.live_qemus(2);
    assert_eq!(q2.len(), 1, "{q2:?}");
    // Back: the daemon finds the move switched and resumes the guest.
    c.host_mut(2).spawn();
    let vm = c.host(2).poll_vm("m", Duration::from_secs(60), |v| {
        v["host"] == "nas2" && v["qemu_state"] == "running"
    });
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(c.live_qemus(2), q2, "the target QEMU changed");
    // Asked of another host, the VM's host answers: its QEMU's pid and
    // state too.
    let seen = c.host(1).json(&["vm", "show", "m"]);
    assert_eq!(seen["qemu_state"], "running", "{seen:#}");
    assert_eq!(seen["pid"].as_i64(), Some(i64::from(q2[0])), "{seen:#}");
    let on1 = c.host(1).json(&["volume", "list", "default"]);
    assert!(!on1.to_string().contains("\"big\""), "{on1:#}");
}

#[test]
fn a_source_daemon_restarting_during_the_disk_mirror_keeps_the_vm() {
    let _s = serial();
    let mut c = Cluster::start(3);
    c.form();
    let pid = start_vm_with_random_disk(&c, "m");
    let id = move_m_to_nas2_until_mirroring(&c);
    // nasvisord on nas1 dies; its QEMU goes on mirroring to nas2.
    c.host_mut(1).kill9();
    assert_eq!(c.live_qemus(1), pid, "the QEMU outlives the daemon");
    restart_and_wait_online(&mut c, 1);

    let end = job_end(&c, &id, Duration::from_secs(60));
    assert_eq!(end["state"], "failed", "{end:#}");
    m_runs_on_nas1_with(&c, 3, &pid);
    // nas2 was told to drop its paused QEMU and the volume.
    wait_no_qemu(&c, 2);
    no_copy_on_nas2_and_the_vm_still_moves(&c);
}

#[test]
fn migration_streams_are_tls_a_plain_source_is_refused_and_the_vm_stays() {
    let _s = serial();
    // nas1 sends plain streams, nas2 (the default) accepts TLS only.
    let c = Cluster::start_per_host(2, |i| {
        if i == 1 {
            vec!["migration-tls = false".into()]
        } else {
            Vec::new()
        }
    });
    c.form();
    // No disks: only the memory stream travels.
    c.host(1).json(&[
        "vm", "create", "t", "--vcpus", "1", "--memory", "128", "--host", "nas1",
    ]);
    c.host(1).json(&["vm", "start", "t"]);
    let pid = c.live_qemus(1);
    let err = c
        .host(1)
        .fails(&["vm", "migrate", "t", "--to", "nas2", "--wait"]);
    assert!(
        err.contains("failed"),
        "a plain stream into a TLS host: {err}"
    );
    let vm = c
        .host(2)
        .poll_vm("t", Duration::from_secs(30), |v| is_running_on(v, "nas1"));
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(c.live_qemus(1), pid, "the source QEMU changed");
    wait_no_qemu(&c, 2);
}

#[test]
fn plugin_faults_are_per_host_seen_from_every_host_and_reset_on_every_host() {
    let _s = serial();
    let c = Cluster::start(2);
    c.form();
    let evil = nasvisor_plugin_host::testkit::test_plugin_dir().join("nasvisor-test-evil.nvplugin");
    assert!(evil.is_file(), "{}: run scripts/build.sh", evil.display());
    let installed = c
        .host(1)
        .json(&["plugin", "install", evil.to_str().unwrap()]);
    let label = format!(
        "{}@{}",
        installed["name"].as_str().unwrap(),
        installed["version"].as_str().unwrap()
    );
    let on = |i: usize, host: &str| -> Result<Value, String> {
        let list = c.host(i).try_json(&["plugin", "list"])?;
        common::plugin_on_host(&list, "scheduler", host)
            .ok_or_else(|| format!("no scheduler state of {host}: {list:#}"))
    };
    eventually(Duration::from_secs(20), "nas2 loads the plugin", || {
        let s = on(2, "nas2")?;
        match (s["plugin"].as_str(), s["state"].as_str()) {
            (Some(p), Some("active")) if p == label => Ok(()),
            _ => Err(s.to_string()),
        }
    });

    // nas2 places three VMs (the requests come to it): its plugin faults
    // there, and only there.
    for name in ["panic", "bad-host", "recurse"] {
        let vm = c.host(2).json(&blank(name));
        assert!(
            vm["host"] == "nas1" || vm["host"] == "nas2",
            "VM {name} placed by the default: {vm:#}"
        );
    }
    // Seen from nas1: quarantined on nas2, active on nas1.
    let nas2 = eventually(
        Duration::from_secs(20),
        "nas1 sees nas2's quarantine",
        || {
            let s = on(1, "nas2")?;
            (s["state"] == "quarantined")
                .then_some(s.clone())
                .ok_or(s.to_string())
        },
    );
    assert_eq!(nas2["consecutive_failures"], 3, "{nas2:#}");
    assert!(
        nas2["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("stack overflow")),
        "{nas2:#}"
    );
    assert_eq!(on(1, "nas1").unwrap()["state"], "active");
    let list = c.host(1).json(&["plugin", "list"]);
    assert_eq!(
        common::plugin_entry(&list, "scheduler").unwrap()["state"],
        "active",
        "nas1 answers with its own state: {list:#}"
    );
    // The events name nas2, in the log every host reads.
    let q = eventually(Duration::from_secs(20), "the quarantine event", || {
        let ev = c.host(1).try_json(&["event", "list", "--limit", "1000"])?;
        let q = common::events_of_kind(&ev, "plugin-quarantined");
        (!q.is_empty()).then_some(q).ok_or(ev.to_string())
    });
    assert_eq!(q.len(), 1, "{q:#?}");
    assert_eq!(q[0]["host"], "nas2", "{q:#?}");
    let ev = c.host(1).json(&["event", "list", "--limit", "1000"]);
    let failed = common::events_of_kind(&ev, "plugin-failed");
    assert!(
        !failed.is_empty() && failed.iter().all(|e| e["host"] == "nas2"),
        "{failed:#?}"
    );

    // Reset from nas1: lifted on nas2 through the log.
    let r = c.host(1).json(&["plugin", "reset", "scheduler"]);
    assert_eq!(r["quarantined_on"], serde_json::json!(["nas2"]), "{r:#}");
    for i in [1, 2] {
        eventually(
            Duration::from_secs(20),
            &format!("host {i} sees nas2 active"),
            || {
                let s = on(i, "nas2")?;
                (s["state"] == "active" && s["consecutive_failures"] == 0)
                    .then_some(())
                    .ok_or(s.to_string())
            },
        );
    }
    let reset = eventually(Duration::from_secs(20), "the reset event", || {
        let ev = c.host(2).try_json(&["event", "list", "--limit", "1000"])?;
        let r = common::events_of_kind(&ev, "plugin-reset");
        (!r.is_empty()).then_some(r).ok_or(ev.to_string())
    });
    assert_eq!(
        reset.len(),
        1,
        "only nas2 had something to lift: {reset:#?}"
    );
    assert_eq!(reset[0]["host"], "nas2", "{reset:#?}");
}
