//! Plugins through a running `nasvisord` and the real CLI: a faulty
//! scheduler (the adversarial test plugin, built and signed by
//! scripts/build.sh) installed with `plugin install`, its failed decisions
//! falling back to the built-in default, the `plugin-failed` and
//! `plugin-quarantined` events, `plugin list`, `plugin reset`, and the
//! decision journal the daemon wrote replayed with `plugin replay`; a burst
//! of concurrent placements beyond the instance pool.
//!
//! The test plugin's `place` misbehaves according to the VM's name (see
//! tests/plugins/evil): `panic` traps, `bad-host` answers a host that does
//! not exist (refused by the validator), `recurse` overflows its stack,
//! `slow` answers validly after 30 ms; any other name is placed on the first
//! eligible host.

mod common;

use common::{events_of_kind, plugin_entry, Daemon, DaemonSetup};
use nasvisor_plugin_host::testkit::{plugin_dir, test_plugin_dir, workspace_root};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One daemon at a time: the burst test wants the CPU to itself.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long the daemon may take to turn a decision into an event (the
/// report task is woken by each decision; a raft write on one host).
const REPORTED: Duration = Duration::from_secs(15);

fn evil_package() -> PathBuf {
    let p = test_plugin_dir().join("nasvisor-test-evil.nvplugin");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build.sh (it builds and signs the test plugins)",
        p.display()
    );
    p
}

fn build_pubkey() -> PathBuf {
    workspace_root().join("target/keys/build.pub")
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The scheduler world's entry of `plugin list`.
fn scheduler(d: &Daemon) -> Value {
    let list = d.json(&["plugin", "list"]);
    plugin_entry(&list, "scheduler")
        .unwrap_or_else(|| panic!("no scheduler in plugin list: {list:#}"))
}

/// The events of `kind`, oldest first.
fn events(d: &Daemon, kind: &str) -> Vec<Value> {
    events_of_kind(&d.json(&["event", "list", "--limit", "1000"]), kind)
}

/// Waits until there are `n` events of `kind`; they, oldest first.
fn wait_events(d: &Daemon, kind: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + REPORTED;
    loop {
        let got = events(d, kind);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{n} {kind} event(s) expected, {} seen: {:#}",
            got.len(),
            d.json(&["event", "list"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn message(e: &Value) -> &str {
    e["message"].as_str().unwrap_or_default()
}

/// `plugin replay` of the daemon's journal against `package`: the
/// differing decisions (stdout, one JSON per line), the summary (stderr) and
/// the exit code.
fn replay(d: &Daemon, package: &std::path::Path) -> (Vec<Value>, String, Option<i32>) {
    let journal = d.data_dir().join("journal/decisions.jsonl");
    let o = d.cli(&[
        "plugin",
        "replay",
        s(&journal),
        "--plugin",
        s(package),
        "--trusted-key",
        s(&build_pubkey()),
        "--fail-on-diff",
    ]);
    let diffs = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("replay line {l:?}: {e}")))
        .collect();
    (
        diffs,
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code(),
    )
}

fn seqs(diffs: &[Value]) -> Vec<u64> {
    diffs.iter().filter_map(|d| d["seq"].as_u64()).collect()
}

#[test]
fn a_faulty_plugin_falls_back_is_quarantined_shown_reset_and_its_journal_replays() {
    let _s = serial();
    let d = Daemon::start();
    let evil = evil_package();
    let installed = d.json(&["plugin", "install", s(&evil)]);
    assert_eq!(installed["world"], "scheduler", "{installed:#}");
    assert_eq!(installed["state"], "active", "{installed:#}");
    let label = format!(
        "{}@{}",
        installed["name"].as_str().unwrap(),
        installed["version"].as_str().unwrap()
    );

    // Three faults of the plugin, each a VM the built-in default places.
    for name in ["panic", "bad-host", "recurse"] {
        let vm = d.create_blank_vm(name, &[]);
        assert_eq!(
            vm["host"], "nas1",
            "VM {name} is placed by the built-in default: {vm:#}"
        );
        if name == "panic" {
            // Reported on its own, at once.
            let failed = wait_events(&d, "plugin-failed", 1);
            let m = message(&failed[0]);
            for part in ["nas1", "scheduler", label.as_str(), "trap"] {
                assert!(m.contains(part), "{part:?} missing in: {m}");
            }
            assert_eq!(failed[0]["host"], "nas1", "{:#}", failed[0]);
            assert_eq!(failed[0]["target"], "plugin/scheduler", "{:#}", failed[0]);
        }
    }
    let quarantined = wait_events(&d, "plugin-quarantined", 1);
    assert_eq!(quarantined.len(), 1, "{quarantined:#?}");
    let m = message(&quarantined[0]);
    assert!(
        m.contains("nas1") && m.contains(&label) && m.contains("3"),
        "{m}"
    );
    assert_eq!(quarantined[0]["severity"], "error");
    // The two faults after the first come as one event with their count,
    // before the quarantine.
    let failed = events(&d, "plugin-failed");
    assert_eq!(failed.len(), 2, "{failed:#?}");
    let m = message(&failed[1]);
    assert!(
        m.contains("2 decisions") && m.contains("stack overflow"),
        "{m}"
    );
    assert!(failed[1]["seq"].as_u64() < quarantined[0]["seq"].as_u64());

    // plugin list: quarantined here, with the counts and the last cause.
    let p = scheduler(&d);
    assert_eq!(p["state"], "quarantined", "{p:#}");
    assert_eq!(p["consecutive_failures"], 3, "{p:#}");
    assert_eq!(p["failures"], 3, "{p:#}");
    assert_eq!(p["decisions"], 0, "{p:#}");
    assert!(
        p["last_failure"]
            .as_str()
            .is_some_and(|c| c.contains("stack overflow")),
        "{p:#}"
    );
    let hosts = p["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 1, "{p:#}");
    assert_eq!(hosts[0]["host"], "nas1");
    assert_eq!(hosts[0]["state"], "quarantined");
    assert_eq!(hosts[0]["plugin"], label.as_str());
    let o = d.cli(&["plugin", "list"]);
    let table = String::from_utf8_lossy(&o.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("scheduler"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("nas1") && row.contains("quarantined") && row.contains("stack overflow"),
        "{table}"
    );

    // Quarantined: the plugin is not asked; the default places.
    let vm = d.create_blank_vm("while-quarantined", &[]);
    assert_eq!(vm["host"], "nas1", "{vm:#}");
    let p = scheduler(&d);
    assert_eq!(
        (p["failures"].as_u64(), p["fallbacks"].as_u64()),
        (Some(3), Some(4)),
        "{p:#}"
    );

    // Reset: lifted, recorded, and the plugin decides again.
    let r = d.json(&["plugin", "reset", "scheduler"]);
    assert_eq!(r["world"], "scheduler", "{r:#}");
    assert_eq!(r["quarantined_on"], serde_json::json!(["nas1"]), "{r:#}");
    let reset = wait_events(&d, "plugin-reset", 1);
    assert!(
        message(&reset[0]).contains("nas1") && message(&reset[0]).contains(&label),
        "{reset:#?}"
    );
    let p = scheduler(&d);
    assert_eq!(p["state"], "active", "{p:#}");
    assert_eq!(p["consecutive_failures"], 0, "{p:#}");
    // Nothing left to lift: said so, and not an error.
    let o = d.cli(&["plugin", "reset", "scheduler"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("nothing to reset") && text.contains("not quarantined"),
        "{text}"
    );
    let err = d.fails(&["plugin", "reset", "schedulers"]);
    assert!(err.contains("world") && err.contains("schedulers"), "{err}");
    let vm = d.create_blank_vm("after-reset", &[]);
    assert_eq!(vm["host"], "nas1", "{vm:#}");
    let p = scheduler(&d);
    assert_eq!(
        (p["state"].as_str(), p["decisions"].as_u64()),
        (Some("active"), Some(1)),
        "{p:#}"
    );
    assert_eq!(events(&d, "plugin-quarantined").len(), 1);

    // The journal: what the daemon decided and why.
    let journal = d.data_dir().join("journal/decisions.jsonl");
    let records: Vec<Value> = std::fs::read_to_string(&journal)
        .unwrap_or_else(|e| panic!("{}: {e}", journal.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["world"] == "scheduler")
        .collect();
    let sources: Vec<&str> = records
        .iter()
        .map(|r| r["source"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        sources,
        ["fallback", "refused", "fallback", "quarantined", "plugin"],
        "{records:#?}"
    );
    let seq: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        records[1]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("no-such-host")),
        "{:#}",
        records[1]
    );

    // Against a good build: the default answered the faulty decisions as
    // the good build does; only the one the faulty plugin answered itself
    // differs.
    let good = plugin_dir().join("nasvisor-scheduler.nvplugin");
    let (diffs, summary, code) = replay(&d, &good);
    assert_eq!(seqs(&diffs), [seq[4]], "{summary}\n{diffs:#?}");
    assert!(summary.contains("5 decisions"), "{summary}");
    assert_eq!(code, Some(3), "--fail-on-diff: {summary}");

    // Against the faulty build: its faults come back, each with its cause;
    // the decision it answered itself is the same.
    let (diffs, summary, _) = replay(&d, &evil);
    assert_eq!(seqs(&diffs), seq[..4], "{summary}\n{diffs:#?}");
    let failure = |i: usize| diffs[i]["replayed"]["failure"].as_str().unwrap_or_default();
    assert!(failure(0).starts_with("trap"), "{:#}", diffs[0]);
    assert!(failure(1).starts_with("invalid output"), "{:#}", diffs[1]);
    assert!(failure(2).contains("stack overflow"), "{:#}", diffs[2]);
    // While quarantined the default answered; the plugin answers otherwise.
    assert!(diffs[3]["replayed"]["ok"].is_object(), "{:#}", diffs[3]);
    assert!(summary.contains("1 same, 4 differ"), "{summary}");
}

#[test]
fn a_burst_of_placements_beyond_the_instance_pool_does_not_quarantine_a_healthy_plugin() {
    let _s = serial();
    // Two instance slots (room for one instance of a component of three
    // core instances); decisions that find them busy wait for one (within
    // the deadline, long enough here for every decision of the burst).
    let mut setup = DaemonSetup::single_host();
    setup.plugins_runtime = vec![
        "pool-instances = 2".into(),
        "deadline-ms = 2000".into(),
        "max-consecutive-failures = 2".into(),
    ];
    let d = Daemon::start_with(setup);
    d.json(&["plugin", "install", s(&evil_package())]);

    // `slow` answers validly after 30 ms of its own: many at once overlap.
    // Every request places its VM before the name is checked, so each one
    // is a decision; one VM is created, the others are refused by name.
    const BURST: usize = 12;
    let args = common::blank_vm_args("slow", &[]);
    let children: Vec<_> = (0..BURST)
        .map(|_| {
            d.cli_command(&d.admin_token(), &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("the CLI runs")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("the CLI ends"))
        .collect();
    let created = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(created, 1, "exactly one VM named slow");
    for o in outputs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("exists"), "refused by name only: {err}");
    }
    let vm = d.json(&["vm", "show", "slow"]);
    assert_eq!(vm["host"], "nas1", "{vm:#}");

    let p = scheduler(&d);
    assert_eq!(p["state"], "active", "{p:#}");
    assert_eq!(
        (p["failures"].as_u64(), p["consecutive_failures"].as_u64()),
        (Some(0), Some(0)),
        "a fault of the host was blamed on the plugin: {p:#}"
    );
    let decided = p["decisions"].as_u64().unwrap_or(0) + p["fallbacks"].as_u64().unwrap_or(0);
    assert_eq!(
        decided, BURST as u64,
        "every request made a decision: {p:#}"
    );
    // Give the report task a moment, then: no fault of the plugin reported.
    std::thread::sleep(Duration::from_secs(2));
    assert!(events(&d, "plugin-failed").is_empty());
    assert!(events(&d, "plugin-quarantined").is_empty());
    // A decision that could not get a slot in time is a fault of the host,
    // reported as such.
    if p["fallbacks"].as_u64().unwrap_or(0) > 0 {
        let fell = events(&d, "plugin-fell-back");
        assert!(!fell.is_empty(), "{p:#}");
        assert!(message(&fell[0]).contains("host"), "{fell:#?}");
    }
}

#[test]
fn decisions_run_off_the_async_workers_so_the_api_answers_while_plugins_compute() {
    let _s = serial();
    // `loop` spins until its deadline: long here, so the decisions are
    // surely still running when the API is asked something else.
    const DEADLINE: Duration = Duration::from_secs(15);
    let mut setup = DaemonSetup::single_host();
    setup.plugins_runtime = vec![
        format!("deadline-ms = {}", DEADLINE.as_millis()),
        "max-consecutive-failures = 100".into(),
    ];
    let d = Daemon::start_with(setup);
    d.json(&["plugin", "install", s(&evil_package())]);

    // More spinning decisions than the daemon has async workers (one per
    // CPU): were they run on the workers, nothing would answer until they
    // reached their deadline. (The sandbox may run fewer at once, one per
    // CPU, and let the others fall back when no slot frees in time: enough
    // to hold every worker.)
    let n = std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
    let args = common::blank_vm_args("loop", &[]);
    let started = Instant::now();
    let mut creates: Vec<_> = (0..n)
        .map(|_| {
            d.cli_command(&d.admin_token(), &args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("the CLI runs")
        })
        .collect();
    // The requests are in and their decisions spinning.
    std::thread::sleep(Duration::from_secs(3));
    let host = d.json(&["host"]);
    assert_eq!(host["id"], "nas1", "{host:#}");
    let list = d.json(&["vm", "list"]);
    assert!(list.is_array(), "{list:#}");
    let answered = started.elapsed();
    let running = creates
        .iter_mut()
        .map(|c| c.try_wait().ok().flatten().is_none())
        .filter(|still| *still)
        .count();
    // The behaviour is a bound: answered while the decisions still ran,
    // before any could reach its deadline.
    assert!(
        running > 0 && answered < DEADLINE,
        "the API answered after {answered:?} with {running} of {n} decisions still running: it waited for them"
    );
    for mut c in creates {
        let _ = c.wait();
    }
    // And each decision ended at its deadline; the default placed the VM.
    let p = scheduler(&d);
    assert_eq!(p["fallbacks"].as_u64(), Some(n as u64), "{p:#}");
    assert_eq!(p["decisions"].as_u64(), Some(0), "{p:#}");
    let vm = d.json(&["vm", "show", "loop"]);
    assert_eq!(vm["host"], "nas1", "{vm:#}");
}
