//! The decision journal and its replay against another plugin build.

use nasvisor_plugin_host::journal::{read_journal, replay, Journal};
use nasvisor_plugin_host::testkit::*;
use nasvisor_plugin_host::{PolicyHost, Runtime, RuntimeConfig};
use nasvisor_plugin_sdk::World;
use std::sync::Arc;

fn runtime() -> Arc<Runtime> {
    Arc::new(
        Runtime::new(
            RuntimeConfig::default(),
            vec![build_signing_key().verifying_key()],
        )
        .unwrap(),
    )
}

#[test]
fn decisions_are_journaled_and_replay_shows_what_a_new_build_would_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.jsonl");
    let rt = runtime();
    let host = PolicyHost::new(rt.clone(), Some(Journal::open(&path, 1 << 20).unwrap()));
    host.install(
        rt.load(
            &plugin_bytes("nasvisor-scheduler"),
            Some(World::Scheduler),
            vec![],
        )
        .unwrap(),
    );
    for i in 0..5 {
        let d = host.decide(place_input(
            cluster_view(4, 20 + i),
            &format!("vm{i}"),
            i % 2 == 0,
        ));
        assert!(d.answer.is_ok(), "{:?}", d.answer);
    }
    let records = read_journal(&path).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(records
        .iter()
        .all(|r| r.plugin.as_deref() == Some("nasvisor-scheduler@0.1.0")
            && r.source == "plugin"
            && r.function == "place"
            && r.answer.get("ok").is_some()));

    // The same build answers the same.
    let same = rt
        .load(&plugin_bytes("nasvisor-scheduler"), None, vec![])
        .unwrap();
    let report = replay(&rt, &same, &records);
    assert_eq!((report.replayed, report.same), (5, 5));
    assert!(report.differing.is_empty());

    // The evil build picks the first eligible host (host-0); the default
    // spreads by free memory, which in cluster_view is not host-0 for 4 hosts.
    let other = rt
        .load(&plugin_bytes("nasvisor-test-evil"), None, vec![])
        .unwrap();
    let report = replay(&rt, &other, &records);
    assert_eq!(report.replayed, 5);
    assert!(!report.differing.is_empty(), "{report:?}");
    for d in &report.differing {
        assert_ne!(d.recorded, d.replayed);
    }

    // An ha-policy build skips scheduler decisions.
    let ha = rt
        .load(&plugin_bytes("nasvisor-ha-policy"), None, vec![])
        .unwrap();
    let report = replay(&rt, &ha, &records);
    assert_eq!((report.replayed, report.skipped_other_worlds), (0, 5));
}

#[test]
fn fallbacks_are_journaled_with_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let rt = runtime();
    let host = PolicyHost::new(rt.clone(), Some(Journal::open(&path, 1 << 20).unwrap()));
    host.install(
        rt.load(&plugin_bytes("nasvisor-test-evil"), None, vec![])
            .unwrap(),
    );
    host.decide(place_input(cluster_view(3, 3), "panic", false));
    let r = &read_journal(&path).unwrap()[0];
    assert_eq!(r.source, "fallback");
    assert!(
        r.cause.as_deref().unwrap().starts_with("trap"),
        "{:?}",
        r.cause
    );
    assert!(
        r.answer.get("ok").is_some(),
        "the native default's answer is recorded"
    );
}

#[test]
fn journal_is_bounded_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let limit = 64 * 1024;
    let rt = runtime();
    {
        let host = PolicyHost::new(rt.clone(), Some(Journal::open(&path, limit).unwrap()));
        for i in 0..40 {
            host.decide(place_input(cluster_view(7, 10), &format!("v{i}"), false));
        }
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let rotated = dir.path().join("j.jsonl.1");
    assert!(rotated.exists(), "the journal rotated");
    assert!(size(&path) <= limit && size(&rotated) <= limit);
    let before = read_journal(&path).unwrap();
    assert!(
        !before.is_empty() && before.len() < 40,
        "old records were dropped: {}",
        before.len()
    );
    // Sequence numbers continue after reopening.
    let last = before.last().unwrap().seq;
    let host = PolicyHost::new(rt, Some(Journal::open(&path, limit).unwrap()));
    host.decide(place_input(cluster_view(7, 10), "again", false));
    assert_eq!(read_journal(&path).unwrap().last().unwrap().seq, last + 1);
}

#[test]
fn a_torn_last_line_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let rt = runtime();
    {
        let host = PolicyHost::new(rt, Some(Journal::open(&path, 1 << 20).unwrap()));
        host.decide(place_input(cluster_view(2, 2), "a", false));
    }
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"seq\": 1, \"at-ms\"");
    std::fs::write(&path, text).unwrap();
    assert_eq!(read_journal(&path).unwrap().len(), 1);
}
