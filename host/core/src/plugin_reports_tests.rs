use super::*;

fn failed(cause: &str) -> PolicyEvent {
    PolicyEvent::PluginFailed {
        world: World::Scheduler,
        plugin: "evil@1".into(),
        cause: cause.into(),
    }
}

fn fell_back() -> PolicyEvent {
    PolicyEvent::PluginFellBack {
        world: World::Scheduler,
        plugin: "evil@1".into(),
        cause: "host busy".into(),
    }
}

fn count_of(n: &Notice) -> u64 {
    match n {
        Notice::Failed { count, .. } | Notice::FellBack { count, .. } => *count,
        _ => 0,
    }
}

#[test]
fn a_burst_of_faults_gives_one_event_at_once_then_one_count_per_window() {
    let w = Duration::from_secs(10);
    let mut c = Coalescer::new(w);
    let t0 = Instant::now();
    let first = c.push(failed("trap: a"), t0);
    assert_eq!(first.len(), 1);
    assert_eq!(count_of(&first[0]), 1);
    for i in 0..999 {
        let at = t0 + Duration::from_millis(i);
        assert!(c.push(failed(&format!("trap: {i}")), at).is_empty());
    }
    assert!(c.flush(t0 + Duration::from_secs(9)).is_empty());
    let later = c.flush(t0 + w);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(count_of(&later[0]), 999);
    assert!(
        matches!(&later[0], Notice::Failed { cause, .. } if cause == "trap: 998"),
        "the last cause is carried: {later:?}"
    );
    // Nothing held: nothing more to say.
    assert!(c.flush(t0 + 3 * w).is_empty());
    // The window restarts from the last report.
    assert!(c
        .push(failed("x"), t0 + w + Duration::from_secs(1))
        .is_empty());
    assert_eq!(c.push(failed("y"), t0 + 2 * w).len(), 1);
}

#[test]
fn worlds_and_kinds_are_coalesced_apart() {
    let mut c = Coalescer::new(Duration::from_secs(10));
    let t = Instant::now();
    assert_eq!(c.push(failed("a"), t).len(), 1);
    assert_eq!(c.push(fell_back(), t).len(), 1);
    let other = PolicyEvent::PluginFailed {
        world: World::OsInstaller,
        plugin: "i@1".into(),
        cause: "trap".into(),
    };
    assert_eq!(c.push(other, t).len(), 1);
    assert!(c.push(fell_back(), t).is_empty());
}

#[test]
fn a_quarantine_sends_the_held_count_first_and_is_never_held_back() {
    let mut c = Coalescer::new(Duration::from_secs(10));
    let t = Instant::now();
    c.push(failed("a"), t);
    c.push(failed("b"), t);
    c.push(failed("c"), t);
    let out = c.push(
        PolicyEvent::PluginQuarantined {
            world: World::Scheduler,
            plugin: "evil@1".into(),
            failures: 3,
        },
        t,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].kind(), "plugin-failed");
    assert_eq!(count_of(&out[0]), 2);
    assert_eq!(out[1].kind(), "plugin-quarantined");
    let out = c.push(
        PolicyEvent::PluginReset {
            world: World::Scheduler,
            plugin: "evil@1".into(),
        },
        t,
    );
    assert_eq!(
        out.iter().map(Notice::kind).collect::<Vec<_>>(),
        ["plugin-reset"]
    );
    // Installs are recorded by the core itself.
    let out = c.push(
        PolicyEvent::PluginInstalled {
            world: World::Scheduler,
            plugin: "good@2".into(),
        },
        t,
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_cause_quoting_a_huge_or_hostile_answer_is_cut_and_cleaned() {
    let mut c = Coalescer::new(Duration::from_secs(10));
    let hostile = format!(
        "invalid output: unknown host \u{1b}[2J{}",
        "é".repeat(1 << 20)
    );
    let out = c.push(failed(&hostile), Instant::now());
    let Notice::Failed { cause, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(
        cause.len() <= MAX_REPORTED_TEXT + '…'.len_utf8(),
        "{}",
        cause.len()
    );
    assert!(cause.ends_with('…'));
    assert!(!cause.chars().any(char::is_control), "{cause:?}");
    assert!(cause.starts_with("invalid output: unknown host  [2J"));
    let status = SlotStatus {
        world: World::Scheduler,
        plugin: Some("evil@1".into()),
        signer: None,
        consecutive_failures: 1,
        quarantined: false,
        decisions: 0,
        failures: 1,
        fallbacks: 1,
        last_failure: Some(hostile),
    };
    let rec = PluginHostState::of("nas1", &status);
    assert!(rec
        .last_failure
        .is_some_and(|f| f.len() <= MAX_REPORTED_TEXT + 3));
    assert_eq!(reported_text("short\nline"), "short line");
}

#[test]
fn messages_name_the_host_the_world_the_plugin_and_the_cause() {
    let n = Notice::Failed {
        world: World::Scheduler,
        plugin: "evil@1".into(),
        cause: "trap: stack overflow".into(),
        count: 4,
    };
    let m = n.message("nas2");
    for part in ["nas2", "scheduler", "evil@1", "trap: stack overflow", "4"] {
        assert!(m.contains(part), "{part} missing in {m}");
    }
    let q = Notice::Quarantined {
        world: World::Scheduler,
        plugin: "evil@1".into(),
        failures: 3,
    };
    assert!(q.message("nas1").contains("plugin reset scheduler"));
    assert_eq!(q.severity(), Severity::Error);
}
