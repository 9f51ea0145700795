//! High availability for real: three `nasvisord` processes in network
//! namespaces of their own (see `common/cluster.rs`), real QEMUs under TCG,
//! faults injected from outside (SIGKILL, a cut link).
//!
//! One file although over 700 lines: no fixture is shared (each test starts
//! its own three hosts, one test at a time under `SERIAL`); splitting it
//! would add a test binary, with another copy of `common`, to build.

mod common;

use common::cluster::{console_log, eventually, numbers_after, start_acker, Cluster, Guest};
use common::{alive, HungDir};
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Three daemons and TCG guests on a small machine: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `vm create NAME` of a blank VM with one 64 MiB disk in `pool`, on `host`.
fn blank_on<'a>(name: &'a str, pool_disk: &'a str, host: &'a str) -> Vec<&'a str> {
    vec![
        "vm", "create", name, "--vcpus", "1", "--memory", "128", "--disk", pool_disk, "--host",
        host,
    ]
}

/// Three hosts formed into a cluster, with a pool `nfs` every host
/// reaches (kept while the returned directory lives).
fn three_hosts_with_a_shared_pool(cluster_lines: &[&str]) -> (Cluster, tempfile::TempDir) {
    Cluster::with_shared_pool(3, cluster_lines)
}

fn events_of(c: &Cluster, from: usize, kind: &str) -> Vec<Value> {
    let list = c.host(from).json(&["event", "list", "--limit", "1000"]);
    common::events_of_kind(&list, kind)
}

#[test]
fn a_lost_hosts_vms_are_unknown_then_recovered_elsewhere_or_force_deleted() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    // On nas2: `sh` on the shared pool, `loc` on nas2's own pool.
    c.host(1).json(&blank_on("sh", "nfs:64", "nas2"));
    c.host(1).json(&blank_on("loc", "default:64", "nas2"));
    let pid_of = |vm: &str| -> i32 {
        let v = c.host(2).json(&["vm", "start", vm]);
        assert_eq!(v["state"], "running", "{v:#}");
        let v = c.host(2).json(&["vm", "show", vm]);
        v["pid"].as_i64().expect("a pid") as i32
    };
    let sh_pid = pid_of("sh");
    let loc_pid = pid_of("loc");

    // nas2 is lost: its daemon killed, `sh`'s QEMU killed with it (the
    // host died), `loc`'s QEMU left running (a daemon that died alone),
    // and its link cut.
    c.host_mut(2).kill9();
    // SAFETY: kill(2) of the pid nas2 reported for sh's QEMU, a child of
    // this test's daemon.
    unsafe {
        libc::kill(sh_pid, libc::SIGKILL);
    }
    c.cut(2);

    // Both VMs become `unknown`, with an event each; actions on them say
    // what can be done.
    let sh = eventually(Duration::from_secs(30), "sh unknown", || {
        let v = c.host(1).try_json(&["vm", "show", "sh"])?;
        if v["state"] == "unknown" {
            Ok(v)
        } else {
            Err(format!("{v:#}"))
        }
    });
    let reason = sh["state_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("host nas2 is offline since")
            && reason.contains("last known state: running"),
        "{sh:#}"
    );
    let loc = c.host(3).json(&["vm", "show", "loc"]);
    assert_eq!(loc["state"], "unknown", "{loc:#}");
    let unknown = events_of(&c, 1, "vm-unknown");
    for vm in ["sh", "loc"] {
        assert!(
            unknown.iter().any(|e| e["target"] == format!("vm/{vm}")),
            "no vm-unknown event for {vm}: {unknown:#?}"
        );
    }
    let err = c.host(1).fails(&["vm", "start", "sh"]);
    assert!(
        err.contains("nas2 is offline") && err.contains("vm recover sh"),
        "{err}"
    );

    // Too early: nas2 may still be running sh until its fencing deadline
    // (offline-after 3 s + quorum-stop-delay 4 s).
    let err = c.host(1).fails(&["vm", "recover", "sh"]);
    assert!(
        err.contains("try again in") && err.contains("confirm_host_down"),
        "{err}"
    );
    // A VM on nas2's own pool cannot be recovered, even when confirmed down.
    let err = c
        .host(1)
        .fails(&["vm", "recover", "loc", "--confirm-host-down"]);
    assert!(err.contains("default/") && err.contains("--force"), "{err}");
    // A VM whose host is online is not force-deleted.
    c.host(1)
        .json(&["vm", "create", "other", "--vcpus", "1", "--memory", "64"]);
    let err = c.host(1).fails(&["vm", "delete", "other", "--force"]);
    assert!(err.contains("force"), "{err}");

    // Once the deadline has passed, sh starts on another host.
    let sh = eventually(Duration::from_secs(30), "sh recovered", || {
        c.host(3).try_json(&["vm", "recover", "sh"])
    });
    let to = sh["host"].as_str().expect("a host").to_string();
    assert!(to == "nas1" || to == "nas3", "{sh:#}");
    assert_eq!(sh["state"], "running", "{sh:#}");
    let i = if to == "nas1" { 1 } else { 3 };
    let pid = sh["pid"]
        .as_i64()
        .or_else(|| c.host(i).json(&["vm", "show", "sh"])["pid"].as_i64());
    let pid = pid.expect("sh's new pid") as i32;
    assert!(c.live_qemus(i).contains(&pid), "sh's QEMU on {to}");
    assert!(!events_of(&c, 1, "vm-recovered").is_empty());

    // loc's record is dropped, its disk named as left on nas2.
    let err = c
        .host(1)
        .fails(&["vm", "delete", "loc", "--force", "--delete-disks"]);
    assert!(err.contains("delete_disks"), "{err}");
    let out = c.host(1).cli(&["vm", "delete", "loc", "--force"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("its disks are left on nas2: default/"),
        "{text}"
    );
    let vms = c.host(1).json(&["vm", "list"]);
    assert!(
        vms.as_array()
            .is_some_and(|l| l.iter().all(|v| v["name"] != "loc")),
        "{vms:#}"
    );
    assert!(alive(loc_pid), "loc's QEMU still runs on the cut-off nas2");

    // nas2 comes back: it stops its stale copy of loc, and the leader says
    // it is online again.
    c.heal(2);
    c.host_mut(2).spawn();
    eventually(Duration::from_secs(60), "loc's stale copy stopped", || {
        if alive(loc_pid) {
            Err(format!("pid {loc_pid} alive"))
        } else {
            Ok(())
        }
    });
    eventually(Duration::from_secs(30), "the stale-copy event", || {
        let e = events_of(&c, 1, "vm-stale-copy-stopped");
        if e.iter().any(|e| e["target"] == "vm/loc") {
            Ok(())
        } else {
            Err(format!("{e:#?}"))
        }
    });
    eventually(Duration::from_secs(30), "host-online of nas2", || {
        let e = events_of(&c, 1, "host-online");
        if e.iter().any(|e| e["target"] == "host/nas2") {
            Ok(())
        } else {
            Err(format!("{e:#?}"))
        }
    });
    let sh = c.host(2).json(&["vm", "show", "sh"]);
    assert_eq!(sh["host"], to.as_str(), "{sh:#}");
    assert_eq!(sh["state"], "running", "{sh:#}");

    // Removed from the cluster, nas2 is no longer listed.
    let id2 = c.node_id(2).to_string();
    c.host(1).json(&["cluster", "remove", &id2]);
    let hosts = c.host(1).json(&["host", "list"]);
    let names: Vec<&str> = hosts
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|h| h["id"].as_str())
        .collect();
    assert_eq!(names, vec!["nas1", "nas3"], "{hosts:#}");
}

/// A tmpfs mounted in a daemon's mount namespace (`ip netns exec` gives
/// each daemon its own, and `/` is not shared here), unmounted on drop.
struct Tmpfs {
    path: std::path::PathBuf,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount_for(pid: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let fs = Tmpfs {
            path,
            pid,
            _dir: dir,
        };
        fs.run("mount", &["-t", "tmpfs", "-o", "size=2g", "nv-health"]);
        fs
    }

    fn remount(&self, mode: &str) {
        self.run("mount", &["-o", &format!("remount,{mode}")]);
    }

    /// `program args PATH` in the daemon's mount namespace.
    fn run(&self, program: &str, args: &[&str]) {
        let st = std::process::Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "--", program])
            .args(args)
            .arg(&self.path)
            .status()
            .expect("nsenter runs");
        assert!(st.success(), "{program} {args:?} {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // The namespace is gone with its daemon: then so is the mount.
        let _ = std::process::Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "--", "umount"])
            .arg(&self.path)
            .status()
            .map_err(|e| eprintln!("umount {}: {e}", self.path.display()));
    }
}

/// nas2's health as host list on `from` shows it.
fn health_of(c: &Cluster, from: usize, host: &str) -> Result<(String, Vec<String>), String> {
    let hosts = c.host(from).try_json(&["host", "list"])?;
    let h = hosts
        .as_array()
        .and_then(|l| l.iter().find(|h| h["id"] == host))
        .ok_or(format!("{host} not listed: {hosts:#}"))?;
    let reasons = h["health_reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((
        h["health"].as_str().unwrap_or_default().to_string(),
        reasons,
    ))
}

fn wait_health(c: &Cluster, host: &str, want: &str, reason: &str) {
    eventually(Duration::from_secs(30), &format!("{host} {want}"), || {
        let (h, r) = health_of(c, 1, host)?;
        let reason_ok = if reason.is_empty() {
            r.is_empty()
        } else {
            r.iter().any(|r| r.contains(reason))
        };
        if h == want && reason_ok {
            Ok(())
        } else {
            Err(format!("{h} {r:?}"))
        }
    });
}

#[test]
fn a_hosts_own_checks_and_maintenance_show_as_its_health_and_keep_vms_away() {
    let _s = serial();
    let c = Cluster::start(3);
    c.form();
    for i in 1..=3 {
        let (h, r) = health_of(&c, 1, &c.name(i)).expect("host list");
        assert_eq!(h, "healthy", "nas{i}: {r:?}");
    }

    // A pool of nas2 whose filesystem goes read-only: nas2's own check
    // finds it, the leader records it, and nothing is placed there.
    let fs = Tmpfs::mount_for(c.host(2).pid());
    c.host(1).json(&[
        "pool",
        "create",
        "fast",
        fs.path.to_str().unwrap(),
        "--host",
        "nas2",
    ]);
    fs.remount("ro");
    wait_health(
        &c,
        "nas2",
        "degraded",
        "pool fast is on a filesystem mounted read-only",
    );
    let ev = events_of(&c, 3, "host-degraded");
    assert!(ev.iter().any(|e| e["target"] == "host/nas2"), "{ev:#?}");
    let err = c.host(1).fails(&blank_on("d1", "default:16", "nas2"));
    assert!(
        err.contains("degraded") && err.contains("read-only"),
        "{err}"
    );
    fs.remount("rw");
    wait_health(&c, "nas2", "healthy", "");
    let ev = events_of(&c, 1, "host-healthy");
    assert!(ev.iter().any(|e| e["target"] == "host/nas2"), "{ev:#?}");

    // Maintenance by the administrator.
    let h = c
        .host(3)
        .json(&["host", "degrade", "nas2", "--reason", "disk swap"]);
    assert_eq!(h["health"], "maintenance", "{h:#}");
    wait_health(&c, "nas2", "maintenance", "in maintenance: disk swap");
    let err = c.host(1).fails(&blank_on("d2", "default:16", "nas2"));
    assert!(err.contains("in maintenance"), "{err}");
    assert!(!events_of(&c, 1, "host-maintenance").is_empty());
    let err = c
        .host(1)
        .fails(&["host", "degrade", "nas2", "--reason", "bad\u{7}"]);
    assert!(err.contains("reason"), "{err}");
    c.host(1).json(&["host", "undegrade", "nas2"]);
    wait_health(&c, "nas2", "healthy", "");
    c.host(1).json(&blank_on("d3", "default:16", "nas2"));
}

/// `free_memory_mib` of each host, as host list on nas1 shows it.
fn free_memory(c: &Cluster) -> std::collections::BTreeMap<String, u64> {
    let hosts = c.host(1).json(&["host", "list"]);
    hosts
        .as_array()
        .expect("a list")
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap_or_default().to_string(),
                h["free_memory_mib"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn an_ha_vm_gets_a_passive_host_whose_memory_is_reserved_and_says_when_unprotected() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);

    // Protected: on a shared pool, started on nas1, with a passive host
    // whose free memory drops by the VM's memory.
    let v = c.host(2).json(&[
        "vm", "create", "p", "--vcpus", "1", "--memory", "512", "--disk", "nfs:64", "--host",
        "nas1", "--ha",
    ]);
    assert_eq!(v["ha"], true, "{v:#}");
    assert_eq!(v["ha_status"]["state"], "unprotected", "{v:#}");
    assert!(
        v["ha_status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("chosen when it starts")),
        "{v:#}"
    );
    let before = free_memory(&c);
    let v = c.host(1).json(&["vm", "start", "p"]);
    let passive = v["ha_status"]["passive"]
        .as_str()
        .unwrap_or_else(|| panic!("no passive host: {v:#}"))
        .to_string();
    assert_ne!(passive, "nas1", "{v:#}");
    assert_eq!(v["ha_status"]["active"], "nas1", "{v:#}");
    assert_eq!(v["ha_status"]["state"], "protected", "{v:#}");
    let after = free_memory(&c);
    assert_eq!(
        before[&passive] - after[&passive],
        512,
        "the passive host's free memory: {before:?} -> {after:?}"
    );
    assert_eq!(
        before["nas1"] - after["nas1"],
        512,
        "{before:?} -> {after:?}"
    );
    let st = c.host(2).json(&["ha", "status"]);
    assert!(
        st.as_array().is_some_and(|l| l.len() == 1
            && l[0]["vm"] == "p"
            && l[0]["ha"]["state"] == "protected"
            && l[0]["ha"]["passive"] == passive.as_str()),
        "{st:#}"
    );

    // HA off: the reservation goes; on again: a passive host again.
    let v = c.host(3).json(&["vm", "edit", "p", "--ha", "off"]);
    assert_eq!(v["ha_status"], Value::Null, "{v:#}");
    assert_eq!(free_memory(&c)[&passive], before[&passive]);
    let v = c.host(3).json(&["vm", "edit", "p", "--ha", "on"]);
    assert_eq!(v["ha_status"]["state"], "protected", "{v:#}");
    assert_ne!(v["ha_status"]["passive"], "nas1", "{v:#}");

    // On a host's own pool it is unprotected until the replica of its disk
    // on its passive host is in step, and says so; then protected.
    let mut args = blank_on("q", "default:64", "nas1");
    args.push("--ha");
    c.host(1).json(&args);
    let v = c.host(1).json(&["vm", "start", "q"]);
    assert_eq!(v["ha_status"]["state"], "unprotected", "{v:#}");
    assert!(
        v["ha_status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("replica") && r.contains("default/q-disk0")),
        "{v:#}"
    );
    let v = protected_again(&c, 2, "q", Duration::from_secs(60));
    let q_passive = v["ha_status"]["passive"].as_str().expect("a passive host");
    assert_eq!(v["ha_status"]["replica"]["host"], q_passive, "{v:#}");
    assert_eq!(v["ha_status"]["replica"]["state"], "in-sync", "{v:#}");
    assert!(has_event(&c, 1, "vm-replica-in-sync", "vm/q", q_passive));

    // The passive host lost: the VM keeps running and is protected again
    // on the third host, with an event.
    let v = c.host(1).json(&["vm", "show", "p"]);
    let passive = v["ha_status"]["passive"]
        .as_str()
        .expect("a passive host")
        .to_string();
    let third = ["nas2", "nas3"]
        .into_iter()
        .find(|h| *h != passive)
        .expect("a third host");
    let i = c.index_of_name(&passive).expect("the passive host's index");
    c.host_mut(i).kill9();
    c.cut(i);
    eventually(
        Duration::from_secs(30),
        "p protected on the third host",
        || {
            let v = c.host(1).try_json(&["vm", "show", "p"])?;
            if v["ha_status"]["state"] == "protected" && v["ha_status"]["passive"] == third {
                Ok(v)
            } else {
                Err(format!("{v:#}"))
            }
        },
    );
    let ev = events_of(&c, 1, "vm-ha-protected");
    assert!(
        ev.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("{passive} is lost")) && m.contains(third))),
        "{ev:#?}"
    );
    let v = c.host(1).json(&["vm", "show", "p"]);
    assert_eq!(v["state"], "running", "{v:#}");

    // Two hosts online: HA is refused, naming the offline one.
    let mut args = blank_on("r", "nfs:64", "nas1");
    args.push("--ha");
    let err = c.host(1).fails(&args);
    assert!(
        err.contains("ha") && err.contains("at least 3 online hosts") && err.contains(&passive),
        "{err}"
    );
    // Turning HA off needs no majority of hosts, only the quorum.
    let v = c.host(1).json(&["vm", "edit", "q", "--ha", "off"]);
    assert_eq!(v["ha"], false, "{v:#}");

    // Moved onto its passive host, it gets a new passive host: the host it
    // left.
    c.host(1)
        .json(&["vm", "migrate", "p", "--to", third, "--wait"]);
    eventually(Duration::from_secs(30), "a new passive host", || {
        let v = c.host(1).try_json(&["vm", "show", "p"])?;
        if v["host"] == third
            && v["ha_status"]["state"] == "protected"
            && v["ha_status"]["passive"] == "nas1"
        {
            Ok(())
        } else {
            Err(format!("{v:#}"))
        }
    });
    let ev = events_of(&c, 1, "vm-ha-protected");
    assert!(
        ev.iter().any(|e| e["message"].as_str().is_some_and(|m| m
            .contains(&format!("moved onto its passive host {third}"))
            && m.contains("new passive host is nas1"))),
        "{ev:#?}"
    );
}

/// The pid of VM `vm` on host i, once it runs there with a pid other than
/// `not`.
fn running_pid(c: &Cluster, i: usize, vm: &str, not: Option<i32>) -> i32 {
    eventually(
        Duration::from_secs(60),
        &format!("{vm} running again"),
        || {
            let v = c.host(i).try_json(&["vm", "show", vm])?;
            match v["pid"].as_i64().map(|p| p as i32) {
                Some(p) if v["state"] == "running" && Some(p) != not => Ok(p),
                _ => Err(format!("{v:#}")),
            }
        },
    )
}

/// The pid of the replica server of VM `id` on host i (its pidfile).
fn replica_server_pid(c: &Cluster, i: usize, id: &str) -> i32 {
    let pidfile = c
        .host(i)
        .data_dir()
        .join("run")
        .join(format!("{id}.replica.pid"));
    std::fs::read_to_string(&pidfile)
        .expect("the replica server's pidfile")
        .trim()
        .parse()
        .expect("a pid")
}

/// Sends `sig` to `pid` (a replica server this test's daemons started).
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) of a replica server the test's daemon started for its
    // VM, by the pid of its pidfile.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn kill(pid: i32) {
    // SAFETY: kill(2) of a QEMU pid this test's daemon reported for its VM.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[test]
fn a_crashed_ha_vm_is_restarted_in_place_until_the_restart_limit_then_fails_over() {
    let _s = serial();
    let (c, _shared) = three_hosts_with_a_shared_pool(&["ha-max-restarts = 2"]);
    let mut args = blank_on("cr", "nfs:64", "nas1");
    args.push("--ha");
    c.host(1).json(&args);
    let v = c.host(1).json(&["vm", "start", "cr"]);
    let passive = v["ha_status"]["passive"].as_str().expect("a passive host");
    let p = c.index_of_name(passive).expect("its index");
    let mut pid = running_pid(&c, 1, "cr", None);

    // Two crashes: restarted in place each time (the policy's delay is
    // 1 s, then 2 s), with an event.
    for n in 1..=2 {
        kill(pid);
        pid = running_pid(&c, 1, "cr", Some(pid));
        // The event is recorded just after the start it reports.
        let ev = eventually(Duration::from_secs(10), "the vm-restarted event", || {
            let ev = events_of(&c, 2, "vm-restarted");
            if ev.len() >= n {
                Ok(ev)
            } else {
                Err(format!("{ev:#?}"))
            }
        });
        assert_eq!(ev.len(), n, "{ev:#?}");
        assert!(ev.iter().all(|e| e["target"] == "vm/cr"), "{ev:#?}");
    }
    assert!(c.live_qemus(1).contains(&pid));

    // The third within the period is over ha-max-restarts 2 (the policy's
    // limit too, as the host passes it): not restarted in place, it fails
    // over to its passive host.
    kill(pid);
    let (new, _, _) = watch_handover(&c, 1, pid, p, &[], Duration::from_secs(60));
    let v = c
        .host(p)
        .poll_vm("cr", Duration::from_secs(30), |v| v["state"] == "running");
    assert_eq!(v["host"], c.name(p), "{v:#}");
    assert_eq!(v["pid"].as_i64(), Some(new as i64), "{v:#}");
    let last = v["ha_status"]["last_move"].as_str().unwrap_or_default();
    assert!(
        last.starts_with(&format!("failover from nas1 to {}", c.name(p)))
            && last.contains("crashed 3 time(s)"),
        "{v:#}"
    );
    assert!(has_event(
        &c,
        p,
        "vm-failed-over",
        "vm/cr",
        "failed over from"
    ));
    assert_eq!(events_of(&c, 1, "vm-restarted").len(), 2);
    assert!(events_of(&c, 1, "vm-restart-limit").is_empty());

    // A VM without HA is not restarted.
    c.host(1).json(&blank_on("plain", "nfs:64", "nas1"));
    c.host(1).json(&["vm", "start", "plain"]);
    let p = running_pid(&c, 1, "plain", None);
    kill(p);
    c.host(1).wait_vm("plain", Duration::from_secs(30), |v| {
        v["state"] == "crashed"
    });
    std::thread::sleep(Duration::from_secs(3));
    let v = c.host(1).json(&["vm", "show", "plain"]);
    assert_eq!(v["state"], "crashed", "{v:#}");
}

/// VM `vm`'s view (asked of host i) once it is protected, within `within`.
fn protected_again(c: &Cluster, i: usize, vm: &str, within: Duration) -> Value {
    eventually(within, &format!("{vm} protected"), || {
        let v = c.host(i).try_json(&["vm", "show", vm])?;
        if v["ha_status"]["state"] == "protected" {
            Ok(v)
        } else {
            Err(format!("{v:#}"))
        }
    })
}

/// Creates HA VM `vm` on `host` with a disk on the shared pool, starts it,
/// and returns its passive host's index and its QEMU's pid.
fn protected_vm(c: &Cluster, vm: &str, host: usize) -> (usize, i32) {
    let name = c.name(host);
    let mut args = blank_on(vm, "nfs:64", &name);
    args.push("--ha");
    c.host(1).json(&args);
    let v = c.host(1).json(&["vm", "start", vm]);
    assert_eq!(v["ha_status"]["state"], "protected", "{v:#}");
    let passive = v["ha_status"]["passive"].as_str().expect("a passive host");
    let p = c.index_of_name(passive).expect("the passive host's index");
    (p, running_pid(c, host, vm, None))
}

/// Watches VM `vm`'s QEMUs on two hosts until one runs on `to` (other than
/// `not`): panics if `old` on `from` is ever seen alive together with a
/// QEMU of `vm` on `to`. Returns the new pid and when `old` was last seen
/// alive and the new one first.
fn watch_handover(
    c: &Cluster,
    from: usize,
    old: i32,
    to: usize,
    not: &[i32],
    timeout: Duration,
) -> (i32, Instant, Instant) {
    let start = Instant::now();
    let mut old_last_alive = start;
    loop {
        let old_alive = common::alive(old);
        if old_alive {
            old_last_alive = Instant::now();
        }
        let new: Vec<i32> = c
            .live_qemus(to)
            .into_iter()
            .filter(|p| !not.contains(p))
            .collect();
        if let Some(&pid) = new.first() {
            assert!(
                !old_alive || from == to,
                "two QEMUs of the VM at once: pid {old} on nas{from} and {pid} on nas{to}"
            );
            return (pid, old_last_alive, Instant::now());
        }
        assert!(
            start.elapsed() < timeout,
            "no QEMU on nas{to} within {timeout:?} (old pid {old} alive: {old_alive}); events:\n{}",
            ha_events(c, to)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The HA events as host i lists them, one line each (for failures).
fn ha_events(c: &Cluster, i: usize) -> String {
    let list = c
        .host(i)
        .try_json(&["event", "list", "--limit", "1000"])
        .unwrap_or_default();
    list.as_array()
        .map(|l| {
            l.iter()
                .filter(|e| {
                    e["kind"].as_str().is_some_and(|k| {
                        k.starts_with("ha-") || k.starts_with("vm-") || k.starts_with("host-")
                    })
                })
                .map(|e| format!("{} {} {}", e["kind"], e["target"], e["message"]))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn has_event(c: &Cluster, from: usize, kind: &str, target: &str, text: &str) -> bool {
    events_of(c, from, kind)
        .iter()
        .any(|e| e["target"] == target && e["message"].as_str().is_some_and(|m| m.contains(text)))
}

#[test]
fn a_degraded_host_switches_its_ha_vm_over_and_a_dead_one_fails_it_over() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    let (p, pid) = protected_vm(&c, "web", 2);

    // Switchover: nas2 put into maintenance, web moves live to its passive
    // host and keeps running (the same guest: its QEMU on nas2 ends only
    // after the move).
    c.host(1)
        .json(&["host", "degrade", "nas2", "--reason", "fan failure"]);
    let v = eventually(Duration::from_secs(60), "web switched over", || {
        let v = c.host(3).try_json(&["vm", "show", "web"])?;
        if v["host"] == c.name(p) && v["state"] == "running" {
            Ok(v)
        } else {
            Err(format!("{v:#}\nevents:\n{}", ha_events(&c, 3)))
        }
    });
    let last = v["ha_status"]["last_move"].as_str().unwrap_or_default();
    assert!(
        last.starts_with(&format!("switchover from nas2 to {}", c.name(p)))
            && last.contains("fan failure"),
        "{v:#}"
    );
    assert!(has_event(&c, 1, "vm-switchover", "vm/web", "moves live"));
    // The source's QEMU ends once the switch is recorded (after its last
    // console output is read: up to a second).
    eventually(Duration::from_secs(10), "web's QEMU on nas2 gone", || {
        if common::alive(pid) {
            std::thread::sleep(Duration::from_millis(50));
            Err(format!("pid {pid} still runs"))
        } else {
            Ok(())
        }
    });
    let active = p;
    let pid = running_pid(&c, active, "web", None);
    assert!(c.live_qemus(active).contains(&pid));
    c.host(1).json(&["host", "undegrade", "nas2"]);
    // Protected again: its new passive host is one that is healthy.
    let v = protected_again(&c, 1, "web", Duration::from_secs(30));
    let passive = v["ha_status"]["passive"].as_str().expect("a passive host");
    let p = c.index_of_name(passive).expect("its index");
    assert_ne!(p, active);

    // Failover: the active host dies (daemon and QEMU killed, link cut).
    // The leader fences it past its deadline and web starts on the
    // passive host from the shared pool.
    let t0 = Instant::now();
    c.host_mut(active).kill9();
    kill(pid);
    c.cut(active);
    let (new, _, seen) = watch_handover(&c, active, pid, p, &[], Duration::from_secs(60));
    eprintln!(
        "failover: web runs on nas{p} {:.1} s after nas{active} died",
        (seen - t0).as_secs_f64()
    );
    let v = c
        .host(p)
        .poll_vm("web", Duration::from_secs(30), |v| v["state"] == "running");
    assert_eq!(v["host"], c.name(p), "{v:#}");
    assert_eq!(v["pid"].as_i64(), Some(new as i64), "{v:#}");
    let last = v["ha_status"]["last_move"].as_str().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "failover from {} to {}",
            c.name(active),
            c.name(p)
        )),
        "{v:#}"
    );
    assert!(has_event(
        &c,
        p,
        "host-fenced",
        &format!("host/{}", c.name(active)),
        "past its own deadline"
    ));
    assert!(has_event(
        &c,
        p,
        "vm-failed-over",
        "vm/web",
        "failed over from"
    ));
    let hosts = c.host(p).json(&["host", "list"]);
    let lost = hosts
        .as_array()
        .and_then(|l| l.iter().find(|h| h["id"] == c.name(active).as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(lost["health"], "fenced", "{hosts:#}");
}

#[test]
fn a_cut_off_host_stops_its_ha_vm_before_the_majority_starts_it_and_a_dead_daemons_watchdog_does() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    let (p, pid) = protected_vm(&c, "db", 2);

    // nas2 cut off, alive: it stops db itself when its lease lapses; only
    // then does the majority start db on the passive host.
    c.cut(2);
    let (new, old_gone, seen) = watch_handover(&c, 2, pid, p, &[], Duration::from_secs(60));
    eprintln!(
        "partition: db's QEMU on nas2 last seen alive {:.1} s before the one on nas{p}",
        (seen - old_gone).as_secs_f64()
    );
    assert!(
        c.live_qemus(2).is_empty(),
        "nas2 runs no QEMU: {:?}",
        c.live_qemus(2)
    );
    c.host(p).poll_vm("db", Duration::from_secs(30), |v| {
        v["state"] == "running" && v["host"] == c.name(p)
    });

    // Healed: nas2 comes back, does not start db again, and is no longer
    // fenced.
    c.heal(2);
    c.wait_online(
        1,
        &[(1, true), (2, true), (3, true)],
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(c.live_qemus(2).is_empty(), "nas2 started db again");
    assert!(common::alive(new));
    let (h, _) = health_of(&c, 1, "nas2").expect("host list");
    assert_eq!(h, "healthy");

    // The daemon alone dies on db's host: its QEMU keeps running until the
    // watchdog, a process of its own, kills it at the lease's end; the
    // majority starts db elsewhere only after that.
    let active = p;
    assert!(c.host(active).watchdog_pid().is_some(), "a watchdog runs");
    let v = c.host(1).json(&["vm", "show", "db"]);
    let passive = v["ha_status"]["passive"].as_str().expect("a passive host");
    let p = c.index_of_name(passive).expect("its index");
    c.host_mut(active).kill9();
    assert!(common::alive(new), "the QEMU outlives its daemon");
    let (_, gone, seen) = watch_handover(&c, active, new, p, &[], Duration::from_secs(60));
    eprintln!(
        "dead daemon: db's QEMU on nas{active} last seen alive {:.1} s before the one on nas{p}",
        (seen - gone).as_secs_f64()
    );
    let fired = std::fs::read_to_string(c.host(active).lease_path().with_extension("json.fired"))
        .expect("the watchdog's report");
    assert!(fired.contains("\"db\""), "{fired}");
}

#[test]
fn a_leader_cut_off_then_healed_fences_no_host_the_majority_heard_and_moves_no_vm() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    let l = c.leader();
    // The HA VM on the last other host: the cut-off leader's heartbeat
    // round, stuck on writes no majority confirms (10 s each), reaches it
    // last, after the heal, with the silence it saw while cut off.
    let a = (1..=3).rev().find(|&i| i != l).expect("another host");
    let (_, pid) = protected_vm(&c, "db", a);
    let other = (1..=3).find(|&i| i != l && i != a).expect("a third host");

    c.cut(l);
    eventually(Duration::from_secs(30), "a new leader", || {
        match c.leader_seen_by(other) {
            Some(n) if n != l => Ok(()),
            seen => Err(format!("nas{other} names {seen:?}")),
        }
    });
    // Past every deadline of db's host as the old leader counts it (3 s
    // offline, 2 s fence delay, 1.5 s margin), within its stuck round.
    std::thread::sleep(Duration::from_secs(12));
    c.heal(l);
    c.wait_online(
        other,
        &[(1, true), (2, true), (3, true)],
        Duration::from_secs(60),
    );
    // The old leader's round ends (its last stuck write times out at the
    // latest 10 s later), and its HA round would follow.
    let until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < until {
        assert!(
            alive(pid),
            "db's QEMU on nas{a} was stopped; events:\n{}",
            ha_events(&c, other)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let host = c.name(a);
    for kind in ["host-fenced", "vm-failed-over", "vm-failover-failed"] {
        let seen = events_of(&c, other, kind);
        assert!(seen.is_empty(), "{kind}: {seen:#?}");
    }
    let offline: Vec<Value> = events_of(&c, other, "host-offline")
        .into_iter()
        .filter(|e| e["target"] == format!("host/{host}"))
        .collect();
    assert!(
        offline.is_empty(),
        "db's host was recorded offline: {offline:#?}"
    );
    let v = c.host(other).json(&["vm", "show", "db"]);
    assert_eq!(v["host"], host, "{v:#}");
    assert_eq!(v["state"], "running", "{v:#}");
    assert_eq!(v["pid"].as_i64(), Some(pid as i64), "{v:#}");
    let (h, _) = health_of(&c, other, &host).expect("host list");
    assert_eq!(h, "healthy");
}

#[test]
fn a_fence_command_that_fails_leaves_the_hosts_own_deadline_and_one_that_confirms_shortens_it() {
    let _s = serial();
    let fence = tempfile::tempdir().expect("a directory for the fence command");
    let script = fence.path().join("fence.sh");
    let calls = fence.path().join("calls");
    let fail = fence.path().join("fail");
    std::fs::write(
        &script,
        format!(
            "echo \"$1 $2\" >>{calls}\n\
             if [ -e {fail} ]; then echo 'BMC unreachable' >&2; exit 3; fi\n",
            calls = calls.display(),
            fail = fail.display()
        ),
    )
    .unwrap();
    std::fs::write(&fail, "").unwrap();
    // A host's own deadline far away: 3 s offline, 20 s fence delay, 1.5 s
    // margin.
    let command = format!(
        "fence-command = [\"/bin/sh\", \"{}\", \"{{host}}\", \"{{address}}\"]",
        script.display()
    );
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[&command, "ha-fence-delay-s = 20"]);
    let (p, pid) = protected_vm(&c, "db", 2);

    // The command fails: the leader says so and waits for nas2's own
    // deadline (24.5 s after its last contact) before db starts elsewhere.
    let t0 = Instant::now();
    c.host_mut(2).kill9();
    kill(pid);
    c.cut(2);
    let other = (1..=3).find(|&i| i != 2).expect("a live host");
    eventually(
        Duration::from_secs(30),
        "the fence command's failure",
        || {
            let e = events_of(&c, other, "host-fence-failed");
            match e.iter().find(|e| e["target"] == "host/nas2") {
                Some(e)
                    if e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("BMC unreachable")) =>
                {
                    Ok(())
                }
                _ => Err(format!("events:\n{}", ha_events(&c, other))),
            }
        },
    );
    let (new, _, seen) = watch_handover(&c, 2, pid, p, &[], Duration::from_secs(90));
    let after = (seen - t0).as_secs_f64();
    assert!(
        after >= 23.0,
        "db started on nas{p} {after:.1} s after nas2 died, before nas2's own deadline"
    );
    assert!(has_event(
        &c,
        p,
        "host-fenced",
        "host/nas2",
        "past its own deadline"
    ));
    let called = std::fs::read_to_string(&calls).expect("the command ran");
    assert_eq!(called.trim(), format!("nas2 {}", c.address(2)), "{called}");

    // nas2 comes back; db is protected again.
    c.heal(2);
    c.host_mut(2).spawn();
    c.wait_online(
        p,
        &[(1, true), (2, true), (3, true)],
        Duration::from_secs(60),
    );
    let v = eventually(Duration::from_secs(60), "db protected again", || {
        let v = c.host(p).try_json(&["vm", "show", "db"])?;
        if v["ha_status"]["state"] == "protected" {
            Ok(v)
        } else {
            Err(format!("{v:#}"))
        }
    });
    let passive = v["ha_status"]["passive"].as_str().expect("a passive host");
    let q = c.index_of_name(passive).expect("its index");

    // The command confirms: db starts on its passive host well before the
    // lost host's own deadline.
    std::fs::remove_file(&fail).unwrap();
    let t0 = Instant::now();
    c.host_mut(p).kill9();
    kill(new);
    c.cut(p);
    let (_, _, seen) = watch_handover(&c, p, new, q, &[], Duration::from_secs(60));
    let after = (seen - t0).as_secs_f64();
    assert!(
        after < 20.0,
        "db started on nas{q} only {after:.1} s after nas{p} died"
    );
    eprintln!("fence command confirmed: db runs on nas{q} {after:.1} s after nas{p} died");
    let lost = format!("host/{}", c.name(p));
    assert!(has_event(&c, q, "host-fence-confirmed", &lost, "is off"));
    assert!(has_event(
        &c,
        q,
        "host-fenced",
        &lost,
        "the fence command confirmed"
    ));
    let called = std::fs::read_to_string(&calls).unwrap();
    assert!(
        called
            .lines()
            .any(|l| l == format!("{} {}", c.name(p), c.address(p))),
        "{called}"
    );
}

#[test]
fn a_restarted_daemon_keeps_its_ha_vm_running_on_the_same_qemu() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    let (_, pid) = protected_vm(&c, "db", 2);
    // A service update restarts nasvisord; the VM's QEMU outlives it. The
    // daemon must answer the leader again before its HA lease (5 s with
    // these timings) runs out, or its watchdog kills the guest.
    for round in 1..=3 {
        let t0 = Instant::now();
        c.host_mut(2).stop();
        c.host_mut(2).spawn();
        let up = t0.elapsed();
        c.host(2).poll_vm("db", Duration::from_secs(30), |v| {
            v["state"] == "running" && v["pid"].as_i64() == Some(pid as i64)
        });
        eprintln!(
            "restart {round}: nasvisord answers {:.2} s after its stop began",
            up.as_secs_f64()
        );
        // Past any lease that lapsed during the restart, and the watchdog's
        // grace.
        std::thread::sleep(Duration::from_secs(7));
        assert!(
            alive(pid),
            "round {round}: db's QEMU was killed; events:\n{}",
            ha_events(&c, 1)
        );
        let v = c.host(1).json(&["vm", "show", "db"]);
        assert_eq!(v["host"], "nas2", "{v:#}");
        assert_eq!(v["state"], "running", "{v:#}");
        assert_eq!(v["pid"].as_i64(), Some(pid as i64), "{v:#}");
        let fired = c.host(2).lease_path().with_extension("json.fired");
        assert!(
            !fired.exists(),
            "the watchdog fired: {:?}",
            std::fs::read_to_string(&fired)
        );
    }
    for kind in [
        "host-fenced",
        "vm-failed-over",
        "vm-failover-failed",
        "vm-crashed",
    ] {
        let seen = events_of(&c, 1, kind);
        assert!(seen.is_empty(), "{kind}: {seen:#?}");
    }
}

/// How long the guest image may take to install and boot here.
const BOOT: Duration = Duration::from_secs(240);

/// HA VM `name` installed from the guest image on `host`'s own pool, once
/// it runs protected (the replica of its disks in step on its passive
/// host): its id and view.
fn ha_guest_on_own_pool(c: &Cluster, name: &str, host: &str) -> (String, Value) {
    let g = Guest {
        pool: Some("default"),
        ha: true,
        ..Guest::new(name, host)
    };
    let v = c
        .host(1)
        .install_guest(&g, BOOT)
        .unwrap_or_else(|e| panic!("installing the HA VM: {e}"));
    let id = v["id"].as_str().expect("an id").to_string();
    c.host(1).wait_console(name, "NASVISOR-READY", BOOT);
    let v = eventually(Duration::from_secs(180), "the replica in step", || {
        let v = c.host(1).try_json(&["vm", "show", name])?;
        if v["state"] == "running" && v["ha_status"]["state"] == "protected" {
            Ok(v)
        } else {
            Err(format!("{v:#}"))
        }
    });
    assert_eq!(v["ha_status"]["replica"]["state"], "in-sync", "{v:#}");
    (id, v)
}

/// Waits until VM `vm` (asked of host i) is protected by a replica in
/// step on `host`, its passive host.
fn replica_in_step_on(c: &Cluster, i: usize, vm: &str, host: &str) {
    let v = eventually(Duration::from_secs(120), "a new replica in step", || {
        let v = c.host(i).try_json(&["vm", "show", vm])?;
        if v["ha_status"]["state"] == "protected" && v["ha_status"]["replica"]["host"] == host {
            Ok(v)
        } else {
            Err(format!("{v:#}"))
        }
    });
    assert_eq!(v["ha_status"]["passive"], host, "{v:#}");
}

/// [`ha_guest_on_own_pool`] on nas2: its id, its view, its passive host's
/// name and index, and the index of the third host.
fn ha_guest_on_nas2_with_roles(c: &Cluster, name: &str) -> (String, Value, String, usize, usize) {
    let (id, v) = ha_guest_on_own_pool(c, name, "nas2");
    let passive = v["ha_status"]["passive"]
        .as_str()
        .expect("a passive host")
        .to_string();
    let p = c.index_of_name(&passive).expect("the passive host's index");
    let third = (1..=3).find(|i| *i != 2 && *i != p).expect("a third host");
    (id, v, passive, p, third)
}

/// Waits until nas2 shows VM `vm` protected by a replica brought in step
/// by a resume (another than the one that ended at `after`, if given), and
/// checks that it copied far less than the first full copy (`full` bytes).
/// Prints how long after `since` (when `what` happened) that was.
fn resumed_on(
    c: &Cluster,
    vm: &str,
    after: Option<&Value>,
    full: u64,
    since: Instant,
    what: &str,
) -> Value {
    let v = c.host(2).poll_vm(vm, Duration::from_secs(120), |v| {
        let last = &v["ha_status"]["replica"]["last_sync"];
        v["ha_status"]["state"] == "protected"
            && last["kind"] == "resumed"
            && after.is_none_or(|a| last["at"] != *a)
    });
    eprintln!(
        "protected again {:.1} s after {what}: {:#}",
        since.elapsed().as_secs_f64(),
        v["ha_status"]["replica"]
    );
    let resumed = v["ha_status"]["replica"]["last_sync"]["copied_bytes"]
        .as_u64()
        .expect("bytes copied");
    assert!(
        resumed * 4 < full,
        "a resume copies what was missed ({resumed} bytes), not the disk ({full})"
    );
    v
}

/// The highest "ACK n" in host i's console log of VM `id`./// The highest "ACK n" in host i's console log of VM `id`.
fn last_ack(c: &Cluster, i: usize, id: &str) -> u64 {
    numbers_after(&console_log(c, i, id), "ACK ")
        .into_iter()
        .max()
        .unwrap_or(0)
}

/// Waits until the guest's writer on host i acknowledged `n` more records;
/// the longest time no record was acknowledged meanwhile (polled every
/// 50 ms).
fn longest_stall(c: &Cluster, i: usize, id: &str, n: u64) -> Duration {
    let floor = last_ack(c, i, id);
    let (mut seen, mut since, mut longest) = (floor, Instant::now(), Duration::ZERO);
    let t0 = Instant::now();
    while seen < floor + n {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the writer acknowledged {} of {n} records in 90 s",
            seen - floor
        );
        std::thread::sleep(Duration::from_millis(50));
        let now = last_ack(c, i, id);
        if now != seen {
            longest = longest.max(since.elapsed());
            (seen, since) = (now, Instant::now());
        }
    }
    longest
}

/// Waits until the guest's writer on host i acknowledged `n` more records.
fn more_acks(c: &Cluster, i: usize, id: &str, n: u64) {
    let floor = last_ack(c, i, id);
    eventually(Duration::from_secs(90), "the writer acknowledging", || {
        if last_ack(c, i, id) >= floor + n {
            Ok(())
        } else {
            std::thread::sleep(Duration::from_millis(100));
            Err(format!("last ACK {}", last_ack(c, i, id)))
        }
    });
}

#[test]
fn an_ha_vm_on_a_hosts_own_pool_fails_over_onto_its_replica_with_every_acknowledged_write() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    let (id, v) = ha_guest_on_own_pool(&c, "rep", "nas2");
    let passive = v["ha_status"]["passive"].as_str().expect("a passive host");
    assert_eq!(v["ha_status"]["replica"]["state"], "in-sync", "{v:#}");
    let p = c.index_of_name(passive).expect("the passive host's index");
    let pid = v["pid"].as_i64().expect("a pid") as i32;

    let first = v["ha_status"]["replica"]["last_sync"].clone();
    assert_eq!(first["kind"], "full", "{v:#}");
    let full = first["copied_bytes"].as_u64().expect("bytes copied");

    // The guest's acknowledged writer at work: twenty acknowledgements.
    assert_eq!(start_acker(&c, 2, 2, "rep", &id).expect("a count"), 0);
    more_acks(&c, 2, &id, 20);

    // The replica's connection breaks (only it: the hosts' cluster
    // connections stay) while its server runs on. The guest is held on its
    // write until nas2 records the replica outdated, writes on alone, and
    // the replica comes back in step from only the writes it missed.
    let before = Instant::now();
    let killed = std::process::Command::new("ip")
        .args(["netns", "exec", c.netns(2), "ss", "-K", "dst", &c.ip(p)])
        .args([
            "and", "not", "sport", "=", ":8444", "and", "not", "dport", "=", ":8444",
        ])
        .output()
        .expect("ss runs");
    assert!(killed.status.success(), "{killed:?}");
    let v = resumed_on(&c, "rep", None, full, before, "its link broke");
    assert!(
        has_event(&c, 2, "vm-replica-lost", "vm/rep", passive),
        "{}",
        ha_events(&c, 2)
    );
    assert_eq!(v["pid"].as_i64(), Some(pid as i64), "the same QEMU: {v:#}");
    more_acks(&c, 2, &id, 10);
    assert!(
        !console_log(&c, 2, &id).contains("ACKER-WRITE-FAILED"),
        "a write failed in the guest"
    );

    // nas2 dies (daemon and QEMU killed, link cut). The VM starts on its
    // passive host from the replica (the resumed one).
    c.host_mut(2).kill9();
    kill(pid);
    c.cut(2);
    let (new, _, _) = watch_handover(&c, 2, pid, p, &[], Duration::from_secs(90));
    let v = c.host(p).poll_vm("rep", Duration::from_secs(60), |v| {
        v["state"] == "running" && v["host"] == passive
    });
    assert_eq!(v["pid"].as_i64(), Some(new as i64), "{v:#}");
    assert!(
        v["ha_status"]["last_move"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("failover from nas2 to {passive}"))),
        "{v:#}"
    );
    c.host(p).wait_console("rep", "NASVISOR-READY", BOOT);
    // Every record the guest acknowledged before nas2 died is on the disk
    // it runs from now.
    let acked = numbers_after(&console_log(&c, 2, &id), "ACK ")
        .into_iter()
        .max()
        .expect("acknowledged records");
    let found = start_acker(&c, p, p, "rep", &id).expect("a count");
    assert!(
        found > acked,
        "acknowledged up to {acked}, found {found} records on the replica"
    );
    // And it is protected again, with a replica on the third host.
    let third = (1..=3).find(|i| *i != 2 && *i != p).expect("a third host");
    replica_in_step_on(&c, p, "rep", &c.name(third));
}

#[test]
fn a_passive_host_back_from_an_outage_resumes_its_replica_from_the_writes_it_missed() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    let (id, v, passive, p, third) = ha_guest_on_nas2_with_roles(&c, "back");
    let full = v["ha_status"]["replica"]["last_sync"]["copied_bytes"]
        .as_u64()
        .expect("a full copy first");
    let pid = v["pid"].as_i64().expect("a pid") as i32;
    // No other host can take the passive role.
    c.host(2).json(&["host", "cordon", &c.name(third)]);
    assert_eq!(start_acker(&c, 2, 2, "back", &id).expect("a count"), 0);
    more_acks(&c, 2, &id, 10);

    // The passive host is cut off. The guest is held on its next write
    // until nas2 records the replica outdated, then writes on alone; the
    // lost host stays the passive host.
    c.cut(p);
    more_acks(&c, 2, &id, 20);
    assert!(
        has_event(&c, 2, "vm-replica-lost", "vm/back", &passive),
        "{}",
        ha_events(&c, 2)
    );
    eventually(
        Duration::from_secs(30),
        "the lost passive host kept",
        || {
            if has_event(
                &c,
                2,
                "vm-ha-unprotected",
                "vm/back",
                "stays its passive host",
            ) {
                Ok(())
            } else {
                Err(ha_events(&c, 2))
            }
        },
    );
    let v = c.host(2).json(&["vm", "show", "back"]);
    assert_eq!(v["ha_status"]["passive"], passive.as_str(), "{v:#}");
    assert_eq!(v["ha_status"]["state"], "unprotected", "{v:#}");
    more_acks(&c, 2, &id, 20);

    // It is back, its replica server having run on: the replica is brought
    // in step from only the writes it missed.
    let healed = Instant::now();
    c.heal(p);
    let v = resumed_on(&c, "back", None, full, healed, "the passive host came back");
    assert_eq!(v["pid"].as_i64(), Some(pid as i64), "the same QEMU: {v:#}");
    more_acks(&c, 2, &id, 10);

    // The replica server stops answering without closing its connection
    // (SIGSTOP: its kernel still takes the bytes, so no TCP bound applies).
    // nas2's probe finds it, cuts the link, and the guest writes on; once
    // the server answers again, the replica resumes.
    let server = replica_server_pid(&c, p, &id);
    let resumed_at = v["ha_status"]["replica"]["last_sync"]["at"].clone();
    signal(server, libc::SIGSTOP);
    let stopped = Instant::now();
    more_acks(&c, 2, &id, 10);
    eprintln!(
        "the writer went on {:.1} s after the replica server stopped",
        stopped.elapsed().as_secs_f64()
    );
    assert!(
        has_event(&c, 2, "vm-replica-lost", "vm/back", "did not answer"),
        "{}",
        ha_events(&c, 2)
    );
    signal(server, libc::SIGCONT);
    let v = resumed_on(
        &c,
        "back",
        Some(&resumed_at),
        full,
        stopped,
        "the server stopped",
    );
    assert_eq!(v["pid"].as_i64(), Some(pid as i64), "the same QEMU: {v:#}");
    more_acks(&c, 2, &id, 10);
    assert!(
        !console_log(&c, 2, &id).contains("ACKER-WRITE-FAILED"),
        "a write failed in the guest"
    );

    // The resumed replica holds every acknowledged record: nas2 dies and
    // the VM starts from it on the passive host.
    c.host(2).json(&["host", "uncordon", &c.name(third)]);
    c.host_mut(2).kill9();
    kill(pid);
    c.cut(2);
    let (_new, _, _) = watch_handover(&c, 2, pid, p, &[], Duration::from_secs(90));
    c.host(p).poll_vm("back", Duration::from_secs(60), |v| {
        v["state"] == "running" && v["host"] == passive.as_str()
    });
    c.host(p).wait_console("back", "NASVISOR-READY", BOOT);
    let acked = numbers_after(&console_log(&c, 2, &id), "ACK ")
        .into_iter()
        .max()
        .expect("acknowledged records");
    let found = start_acker(&c, p, p, "back", &id).expect("a count");
    assert!(
        found > acked,
        "acknowledged up to {acked}, found {found} records on the resumed replica"
    );
}

#[test]
fn a_lost_passive_host_holds_the_guest_on_its_write_only_until_the_replica_is_recorded_outdated() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    let (id, v, passive, p, third) = ha_guest_on_nas2_with_roles(&c, "held");
    let pid = v["pid"].as_i64().expect("a pid") as i32;
    assert_eq!(start_acker(&c, 2, 2, "held", &id).expect("a count"), 0);
    more_acks(&c, 2, &id, 10);

    // nas2's daemon restarts (a service update) with the replica attached:
    // the new daemon finds the same QEMU, still protected, and its keeper
    // takes the replica over.
    c.host_mut(2).stop();
    c.host_mut(2).spawn();
    c.host(2).poll_vm("held", Duration::from_secs(30), |v| {
        v["state"] == "running"
            && v["pid"].as_i64() == Some(pid as i64)
            && v["ha_status"]["replica"]["state"] == "in-sync"
    });
    more_acks(&c, 2, &id, 5);

    // The new daemon found QEMU's replica socket again: a replica server
    // that stops answering is still cut off (the writer goes on), and
    // resumed once it answers.
    let v = c.host(2).json(&["vm", "show", "held"]);
    let synced_at = v["ha_status"]["replica"]["last_sync"]["at"].clone();
    let server = replica_server_pid(&c, p, &id);
    signal(server, libc::SIGSTOP);
    let stopped = Instant::now();
    more_acks(&c, 2, &id, 10);
    eprintln!(
        "after the restart, the writer went on {:.1} s after the replica server stopped",
        stopped.elapsed().as_secs_f64()
    );
    signal(server, libc::SIGCONT);
    assert!(
        has_event(&c, 2, "vm-replica-lost", "vm/held", "did not answer"),
        "{}",
        ha_events(&c, 2)
    );
    c.host(2).poll_vm("held", Duration::from_secs(120), |v| {
        let last = &v["ha_status"]["replica"]["last_sync"];
        v["ha_status"]["state"] == "protected"
            && last["kind"] == "resumed"
            && last["at"] != synced_at
    });
    more_acks(&c, 2, &id, 5);

    // The passive host's link is cut (its replica server runs on, out of
    // reach): the guest's next write gets no answer from the replica,
    // fails after the link's bound, and holds the guest until nas2 has
    // recorded the replica outdated; then the guest writes on alone.
    let cut_at = Instant::now();
    c.cut(p);
    let held = longest_stall(&c, 2, &id, 20);
    eprintln!(
        "the writer went on {:.1} s after the passive host's link was cut, held for {:.1} s",
        cut_at.elapsed().as_secs_f64(),
        held.as_secs_f64()
    );
    // The hold itself: the write the replica did not take kept the writer
    // waiting for the link's bound (or for the leader to give the VM a new
    // passive host, 3 s at least), not a moment.
    assert!(
        held >= Duration::from_secs(2),
        "the writer was never held on the lost replica (longest pause {held:?})"
    );
    let log = console_log(&c, 2, &id);
    assert!(
        !log.contains("ACKER-WRITE-FAILED"),
        "a write failed in the guest"
    );
    // (Asked of nas2: the passive host may be nas1, now cut off.)
    // Whichever came first: nas2 found the replica lost (and recorded it
    // outdated), or the leader gave the VM a new passive host (and nas2
    // dropped the old replica).
    assert!(
        has_event(&c, 2, "vm-replica-lost", "vm/held", &passive)
            || has_event(&c, 2, "vm-replica-dropped", "vm/held", &passive),
        "{}",
        ha_events(&c, 2)
    );
    // The same QEMU all along.
    let v = c.host(2).json(&["vm", "show", "held"]);
    assert_eq!(v["pid"].as_i64(), Some(pid as i64), "{v:#}");
    assert_eq!(v["host"], "nas2", "{v:#}");
    // Protected again with a replica in step on the third host.
    replica_in_step_on(&c, 2, "held", &c.name(third));
    more_acks(&c, 2, &id, 10);
    c.heal(p);
}

#[test]
fn a_passive_hosts_hung_disk_cuts_its_replica_off_degrades_it_and_the_vm_is_protected_elsewhere() {
    let _s = serial();
    let (c, _shared) = three_hosts_with_a_shared_pool(&[]);
    // The pools of both hosts that may become the passive one sit on disks
    // that can stop answering.
    let pools: Vec<HungDir> = [1, 3]
        .into_iter()
        .map(|i| {
            let pool = c.host(i).data_dir().join("pools/default");
            HungDir::mount(Some(c.host(i).pid()), pool, false)
        })
        .collect();
    let (id, v, passive, p, third) = ha_guest_on_nas2_with_roles(&c, "hung");
    let pid = v["pid"].as_i64().expect("a pid") as i32;
    assert_eq!(start_acker(&c, 2, 2, "hung", &id).expect("a count"), 0);
    more_acks(&c, 2, &id, 10);

    // The passive host's disk hangs; its server and its link stay up, so
    // no socket error comes. The probe's write to the server's probe file
    // does not come back: nas2 cuts the link, records the replica
    // outdated, and the writer goes on alone.
    let hung = &pools[if p == 1 { 0 } else { 1 }];
    let hung_at = Instant::now();
    hung.hang();
    let held = longest_stall(&c, 2, &id, 20);
    eprintln!(
        "the writer went on {:.1} s after the passive host's disk hung, held for {:.1} s",
        hung_at.elapsed().as_secs_f64(),
        held.as_secs_f64()
    );
    assert!(
        held < Duration::from_secs(40),
        "the writer was held {held:?} on a hung replica disk"
    );
    let log = console_log(&c, 2, &id);
    assert!(
        !log.contains("ACKER-WRITE-FAILED"),
        "a write failed in the guest"
    );
    // Two checks race for the hang, each with a 10 s limit: nas2's probe
    // of the replica (it cuts the link and records the replica outdated),
    // and the passive host's own pool check (it degrades the host, the
    // leader gives the VM a new passive host, and nas2 drops the replica,
    // cutting the write in flight there after 10 s). Under load either may
    // come first; the guest goes on in both, as asserted above.
    let dropped = format!("on host {} is dropped", c.name(p));
    eventually(
        Duration::from_secs(30),
        "the replica on the hung disk cut off",
        || {
            if has_event(&c, 2, "vm-replica-lost", "vm/hung", "did not answer")
                || has_event(&c, 2, "vm-replica-dropped", "vm/hung", &dropped)
            {
                Ok(())
            } else {
                std::thread::sleep(Duration::from_millis(500));
                Err(ha_events(&c, 2))
            }
        },
    );
    // The hung host's own checks name the pool that does not answer; it is
    // degraded, and the VM gets its replica on the third host.
    wait_health(&c, &passive, "degraded", "pool default");
    let (_, reasons) = health_of(&c, 1, &passive).expect("host list");
    assert!(reasons.iter().any(|r| r.contains("answer")), "{reasons:?}");
    // Work on that pool is refused at once, not left to hang.
    let asked = Instant::now();
    let err = c.host(p).fails(&["volume", "list", "default"]);
    assert!(err.contains("does not answer"), "{err}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    replica_in_step_on(&c, 2, "hung", &c.name(third));
    more_acks(&c, 2, &id, 10);
    let v = c.host(2).json(&["vm", "show", "hung"]);
    assert_eq!(v["pid"].as_i64(), Some(pid as i64), "{v:#}");
    assert_eq!(v["host"], "nas2", "{v:#}");

    // The disk answers again: the host is healthy again, and its daemon
    // was never lost (it answers, online all along).
    hung.answer();
    wait_health(&c, &passive, "healthy", "");
    let online = c.online(1).expect("host list");
    assert!(online.iter().all(|(_, up)| *up), "{online:?}");

    // The new passive host's disk hangs too, and the administrator takes
    // that host into maintenance at once: the leader gives the VM its
    // first passive host back, before a probe finds the hang, and nas2
    // drops the replica on the hung disk. Dropping it waits for the guest
    // write in flight there, which does not come back: after 10 s its link
    // is cut, and the guest goes on.
    let other = &pools[if third == 1 { 0 } else { 1 }];
    let third_name = c.name(third);
    other.hang();
    c.host(1)
        .json(&["host", "degrade", &third_name, "--reason", "disk swap"]);
    let held = longest_stall(&c, 2, &id, 20);
    eprintln!(
        "dropping a replica on a hung disk held the writer {:.1} s",
        held.as_secs_f64()
    );
    assert!(held < Duration::from_secs(40), "held {held:?}");
    replica_in_step_on(&c, 2, "hung", &passive);
    assert!(
        has_event(&c, 2, "vm-replica-dropped", "vm/hung", &third_name),
        "{}",
        ha_events(&c, 2)
    );
    let v = c.host(2).json(&["vm", "show", "hung"]);
    assert_eq!(v["pid"].as_i64(), Some(pid as i64), "{v:#}");
    assert!(!console_log(&c, 2, &id).contains("ACKER-WRITE-FAILED"));
    other.answer();
    c.host(1).json(&["host", "undegrade", &third_name]);
    drop(pools);
}

#[test]
fn an_ha_uefi_vms_variables_are_kept_on_its_passive_host_and_a_failover_starts_with_them() {
    let _s = serial();
    let (mut c, _shared) = three_hosts_with_a_shared_pool(&[]);
    let mut args = blank_on("efi", "nfs:64", "nas2");
    args.extend(["--ha", "--firmware", "uefi"]);
    c.host(1).json(&args);
    let v = c.host(1).json(&["vm", "start", "efi"]);
    assert_eq!(v["ha_status"]["state"], "protected", "{v:#}");
    let id = v["id"].as_str().expect("an id").to_string();
    let passive = v["ha_status"]["passive"].as_str().expect("a passive host");
    let p = c.index_of_name(passive).expect("the passive host's index");
    let files: Vec<std::path::PathBuf> = (1..=3)
        .map(|i| c.host(i).data_dir().join("nvram").join(format!("{id}.fd")))
        .collect();
    let vars = |i: usize| std::fs::read(&files[i - 1]).ok();
    // The firmware writes its variables as it boots (boot entries, its
    // monotonic counter): the passive host gets the same bytes, once they
    // are what `want` asks.
    let same = |what: &str, want: &dyn Fn(&[u8]) -> bool| {
        eventually(Duration::from_secs(60), what, || {
            let (a, b) = (vars(2), vars(p));
            match (a, b) {
                (Some(a), Some(b)) if a == b && want(&a) => Ok(a),
                (a, b) => {
                    std::thread::sleep(Duration::from_millis(200));
                    Err(format!(
                        "active {:?} bytes, passive {:?} bytes",
                        a.map(|a| a.len()),
                        b.map(|b| b.len())
                    ))
                }
            }
        })
    };
    let first = same("the passive host holding the VM's variables", &|a| {
        boot_counter(a).is_some()
    });
    let first_boot = boot_counter(&first).expect("a boot counter");
    // A reset boots the firmware again, which counts one boot more: the
    // passive host follows. (Waiting for the count, not for any change:
    // under TCG the first boot may still be writing other variables.)
    c.host(1).json(&["vm", "reboot", "efi"]);
    let second = same("the passive host following the second boot", &|a| {
        boot_counter(a).is_some_and(|n| n > first_boot)
    });
    assert_ne!(first, second);
    // The third host holds nothing of it.
    let third = (1..=3).find(|i| *i != 2 && *i != p).expect("a third host");
    assert!(vars(third).is_none(), "the third host got the variables");
    let booted = boot_counter(&second).expect("OVMF's boot counter (MTC) in the store");
    assert!(booted >= 2, "two boots counted: {booted}");

    // Failover: the active host dies; the VM starts on the passive host
    // with the variables it had, so the firmware counts on from them (a
    // store from the template would start again at 1).
    let pid = running_pid(&c, 2, "efi", None);
    c.host_mut(2).kill9();
    kill(pid);
    c.cut(2);
    c.host(p).poll_vm("efi", Duration::from_secs(60), |v| {
        v["state"] == "running" && v["host"] == passive
    });
    let after = eventually(Duration::from_secs(60), "the firmware booted again", || {
        let n = vars(p).as_deref().and_then(boot_counter).unwrap_or(0);
        if n > booted {
            Ok(n)
        } else {
            std::thread::sleep(Duration::from_millis(200));
            Err(format!("boot counter {n}"))
        }
    });
    assert_eq!(
        after,
        booted + 1,
        "the failover started from the kept store"
    );
    c.heal(2);
}

/// OVMF's boot counter: the value of its `MTC` variable (a u32 the
/// firmware increments at each boot) in a UEFI variable store, from the
/// last copy of the variable marked added (state 0x3F); authenticated
/// (60-byte) or plain (32-byte) variable headers.
fn boot_counter(store: &[u8]) -> Option<u32> {
    let name: Vec<u8> = "MTC\0"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let u32_at = |o: usize| Some(u32::from_le_bytes(store.get(o..o + 4)?.try_into().ok()?));
    let mut found = None;
    for n in 0..store.len().saturating_sub(name.len()) {
        if store[n..n + name.len()] != name[..] {
            continue;
        }
        for (header, name_size_at) in [(60usize, 36usize), (32, 8)] {
            let Some(h) = n.checked_sub(header) else {
                continue;
            };
            if store[h..h + 2] != [0xAA, 0x55] || store[h + 2] != 0x3F {
                continue;
            }
            if u32_at(h + name_size_at)? as usize != name.len() {
                continue;
            }
            found = u32_at(n + name.len()).or(found);
        }
    }
    found
}
