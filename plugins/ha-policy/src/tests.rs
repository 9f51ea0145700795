//! Scenario tests of `react`.

use nasvisor_plugin_sdk::prelude::*;

use crate::testutil::*;
use crate::DefaultHaPolicy;

fn react(view: &ClusterView, events: &[Event]) -> Vec<HaAction> {
    DefaultHaPolicy.react(&env_with(&[]), view, events).unwrap()
}

fn react_with(settings: &[(&str, &str)], view: &ClusterView, events: &[Event]) -> Vec<HaAction> {
    DefaultHaPolicy
        .react(&env_with(settings), view, events)
        .unwrap()
}

fn degraded(host: &str) -> Event {
    Event::HostDegraded(HostDegraded {
        host: host.into(),
        reasons: vec!["disk 3 failing".into()],
    })
}

fn missed(host: &str, ms: u64) -> Event {
    Event::HeartbeatMissed(HeartbeatMissed {
        host: host.into(),
        missed_ms: ms,
    })
}

fn sha(host: &str, switching: bool, split: bool) -> Event {
    Event::ShaStateChanged(ShaChange {
        host: host.into(),
        state: sha_state(switching, split),
    })
}

fn quorum(has: bool) -> Event {
    Event::QuorumChanged(QuorumChange {
        has_quorum: has,
        online_hosts: if has { 3 } else { 1 },
        total_hosts: 3,
    })
}

fn has_notice(a: &[HaAction], sev: Severity, needle: &str) -> bool {
    notices(a)
        .iter()
        .any(|(s, m)| *s == sev && m.contains(needle))
}

// ---- general ----

#[test]
fn no_events_no_actions() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    assert!(react(&v, &[]).is_empty());
    assert!(react(&ClusterView::default(), &[]).is_empty());
}

#[test]
fn unknown_ids_give_warnings_only() {
    let v = ClusterView {
        has_quorum: true,
        ..Default::default()
    };
    let out = react(
        &v,
        &[
            degraded("ghost"),
            missed("ghost", 99_999),
            Event::HostFenced("ghost".into()),
            Event::VmCrashed(fault("nobody", "ghost", 1)),
            Event::HostRecovered("ghost".into()),
        ],
    );
    assert!(without_notices(&out).is_empty(), "{:?}", brief(&out));
    assert!(has_notice(
        &out,
        Severity::Warning,
        "unknown host ghost reported degraded"
    ));
    assert!(has_notice(
        &out,
        Severity::Warning,
        "heartbeats missed from unknown host ghost"
    ));
    assert!(has_notice(
        &out,
        Severity::Warning,
        "VM nobody crashed but is not in the cluster view"
    ));
}

#[test]
fn bad_settings_are_an_error() {
    let e = DefaultHaPolicy
        .react(
            &env_with(&[("fence-after-ms", "ten")]),
            &ClusterView::default(),
            &[],
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadSettings);
    assert!(e.message.contains("fence-after-ms"));
}

// ---- host-degraded ----

#[test]
fn degraded_host_switches_over_running_ha_vms_to_healthy_passive() {
    let mut stopped = ha_vm("stopped", "h1", "h2");
    stopped.state = VmState::Stopped;
    let v = view(
        three_hosts(),
        vec![
            ha_vm("b", "h1", "h3"),
            ha_vm("a", "h1", "h2"),
            vm("plain", "h1"),
            stopped,
            ha_vm("other", "h2", "h1"),
        ],
    );
    let out = react(&v, &[degraded("h1")]);
    assert_eq!(
        without_notices(&out),
        vec!["switchover a -> h2", "switchover b -> h3"]
    );
    assert!(has_notice(
        &out,
        Severity::Warning,
        "host h1 degraded: disk 3 failing"
    ));
    match &out[0] {
        HaAction::Switchover(m) => assert!(
            m.reason.contains("disk 3 failing") && m.reason.contains("h2"),
            "{}",
            m.reason
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn degraded_uses_ha_active_over_vm_host() {
    let mut a = ha_vm("a", "h1", "h2");
    a.host = Some("h3".into());
    let v = view(three_hosts(), vec![a]);
    assert_eq!(
        without_notices(&react(&v, &[degraded("h1")])),
        vec!["switchover a -> h2"]
    );
    assert!(without_notices(&react(&v, &[degraded("h3")])).is_empty());
}

#[test]
fn degraded_without_healthy_passive_warns() {
    for bad in [
        HostHealth::Degraded,
        HostHealth::Unreachable,
        HostHealth::Fenced,
        HostHealth::Maintenance,
    ] {
        let v = view(
            vec![host("h1", 1000), host_in("h2", bad), host("h3", 1000)],
            vec![ha_vm("a", "h1", "h2")],
        );
        let out = react(&v, &[degraded("h1")]);
        assert!(
            without_notices(&out).is_empty(),
            "{bad:?}: {:?}",
            brief(&out)
        );
        assert!(
            has_notice(&out, Severity::Warning, "HA VM a stays on degraded host h1"),
            "{:?}",
            notices(&out)
        );
    }
    // Passive missing from the view, or the degraded host itself.
    let v = view(
        three_hosts(),
        vec![ha_vm("a", "h1", "h9"), ha_vm("b", "h1", "h1")],
    );
    let out = react(&v, &[degraded("h1")]);
    assert!(without_notices(&out).is_empty());
    assert!(has_notice(
        &out,
        Severity::Warning,
        "h9 is not in the cluster view"
    ));
    assert!(has_notice(
        &out,
        Severity::Warning,
        "the degraded host itself"
    ));
}

#[test]
fn degraded_passive_also_degraded_in_same_batch_is_not_a_target() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(&v, &[degraded("h1"), degraded("h2")]);
    assert!(without_notices(&out).is_empty(), "{:?}", brief(&out));
}

#[test]
fn degraded_ha_vm_without_assignment_warns() {
    let mut a = vm("a", "h1");
    a.ha_enabled = true;
    let v = view(three_hosts(), vec![a]);
    let out = react(&v, &[degraded("h1")]);
    assert!(without_notices(&out).is_empty());
    assert!(has_notice(
        &out,
        Severity::Warning,
        "no passive host assigned"
    ));
}

#[test]
fn degraded_report_of_unreachable_host_does_not_switch_over() {
    let v = view(
        vec![host_in("h1", HostHealth::Unreachable), host("h2", 1000)],
        vec![ha_vm("a", "h1", "h2")],
    );
    let out = react(&v, &[degraded("h1")]);
    assert!(without_notices(&out).is_empty());
    assert!(has_notice(
        &out,
        Severity::Info,
        "is unreachable; no switchover"
    ));
}

#[test]
fn a_host_in_maintenance_switches_its_ha_vms_over() {
    let v = view(
        vec![
            host_in("h1", HostHealth::Maintenance),
            host("h2", 1000),
            host("h3", 1000),
        ],
        vec![ha_vm("a", "h1", "h2")],
    );
    let out = react(&v, &[degraded("h1")]);
    assert_eq!(without_notices(&out), vec!["switchover a -> h2"]);
}

// ---- heartbeat-missed ----

#[test]
fn heartbeat_missed_beyond_threshold_fences_with_quorum() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(&v, &[missed("h1", 10_000)]);
    assert_eq!(brief(&out), vec!["fence h1"]);
    match &out[0] {
        HaAction::Fence(f) => assert!(f.reason.contains("10000 ms"), "{}", f.reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn heartbeat_missed_below_threshold_holds_for_the_remaining_time() {
    let v = view(three_hosts(), vec![]);
    assert_eq!(brief(&react(&v, &[missed("h1", 1_000)])), vec!["hold 2000"]);
    assert_eq!(brief(&react(&v, &[missed("h1", 2_999)])), vec!["hold 1"]);
    assert_eq!(
        brief(&react_with(
            &[("fence-after-ms", "5000")],
            &v,
            &[missed("h1", 4_000)]
        )),
        vec!["hold 1000"]
    );
    assert_eq!(
        brief(&react_with(
            &[("fence-after-ms", "3000")],
            &v,
            &[missed("h1", 4_000)]
        )),
        vec!["fence h1"]
    );
}

#[test]
fn heartbeat_largest_missed_time_per_host_counts() {
    let v = view(three_hosts(), vec![]);
    let out = react(
        &v,
        &[
            missed("h1", 12_000),
            missed("h1", 1_000),
            missed("h2", 1_000),
            missed("h2", 2_000),
        ],
    );
    assert_eq!(brief(&out), vec!["fence h1", "hold 1000"]);
}

#[test]
fn heartbeat_missed_without_quorum_never_fences() {
    let mut v = view(three_hosts(), vec![]);
    v.has_quorum = false;
    let out = react(&v, &[missed("h1", 60_000)]);
    assert_eq!(without_notices(&out), vec!["hold 5000"]);
    assert!(has_notice(
        &out,
        Severity::Critical,
        "no quorum: not acting on fence of host h1"
    ));
    // The same when the batch itself reports the loss.
    let v = view(three_hosts(), vec![]);
    let out = react(&v, &[quorum(false), missed("h1", 60_000)]);
    assert!(
        !brief(&out).iter().any(|s| s.starts_with("fence")),
        "{:?}",
        brief(&out)
    );
}

#[test]
fn heartbeat_of_fenced_host_is_ignored() {
    let v = view(
        vec![host_in("h1", HostHealth::Fenced), host("h2", 1000)],
        vec![],
    );
    assert!(react(&v, &[missed("h1", 60_000)]).is_empty());
}

// ---- host-fenced ----

#[test]
fn fenced_host_fails_over_ha_vms_to_healthy_passive() {
    let mut crashed = ha_vm("crashed", "h1", "h3");
    crashed.state = VmState::Crashed;
    let mut stopped = ha_vm("stopped", "h1", "h2");
    stopped.state = VmState::Stopped;
    let v = view(
        three_hosts(),
        vec![
            ha_vm("a", "h1", "h2"),
            crashed,
            stopped,
            vm("plain", "h1"),
            ha_vm("elsewhere", "h2", "h3"),
        ],
    );
    let out = react(&v, &[Event::HostFenced("h1".into())]);
    assert_eq!(
        without_notices(&out),
        vec!["failover a -> h2", "failover crashed -> h3"]
    );
    assert!(has_notice(
        &out,
        Severity::Warning,
        "VM plain (not HA) was on fenced host h1 and stays down"
    ));
    assert!(!notices(&out).iter().any(|(_, m)| m.contains("stopped")));
}

#[test]
fn fenced_host_falls_back_to_most_free_memory_when_passive_is_unusable() {
    let mut hosts = vec![
        host("h1", 1000),
        host_in("h2", HostHealth::Maintenance),
        host("h3", 4096),
        host("h4", 8192),
        host("h5", 8192),
    ];
    hosts[4].cordoned = true;
    let v = view(hosts, vec![ha_vm("a", "h1", "h2")]);
    let out = react(&v, &[Event::HostFenced("h1".into())]);
    assert_eq!(without_notices(&out), vec!["failover a -> h4"]);
    match &out[0] {
        HaAction::Failover(m) => assert!(
            m.reason.contains("passive host h2 is maintenance"),
            "{}",
            m.reason
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fallback_ties_break_by_id_and_consume_resources() {
    // h3 and h4 can each take exactly one 1024 MiB VM beyond what they have.
    let v = view(
        vec![
            host("h1", 0),
            host_in("h2", HostHealth::Unreachable),
            host("h4", 1024),
            host("h3", 1024),
        ],
        vec![
            ha_vm("a", "h1", "h2"),
            ha_vm("b", "h1", "h2"),
            ha_vm("c", "h1", "h2"),
        ],
    );
    let out = react(&v, &[Event::HostFenced("h1".into())]);
    assert_eq!(
        without_notices(&out),
        vec!["failover a -> h3", "failover b -> h4"]
    );
    assert!(has_notice(
        &out,
        Severity::Critical,
        "HA VM c cannot fail over from fenced host h1"
    ));
}

#[test]
fn fallback_respects_hard_constraints() {
    let mut a = ha_vm("a", "h1", "h2");
    a.constraints.anti_affinity = vec!["enemy".into()];
    let mut b = ha_vm("b", "h1", "h2");
    b.constraints.pinned_hosts = vec!["h3".into()];
    let mut c = ha_vm("c", "h1", "h2");
    c.constraints.required_labels = vec![Label {
        key: "ssd".into(),
        value: "yes".into(),
    }];
    let mut h4 = host("h4", 30000);
    h4.labels = c.constraints.required_labels.clone();
    let v = view(
        vec![
            host("h1", 0),
            host_in("h2", HostHealth::Fenced),
            host("h3", 20000),
            h4,
            host("h5", 40000),
        ],
        vec![a, b, c, vm("enemy", "h5")],
    );
    let out = react(&v, &[Event::HostFenced("h1".into())]);
    assert_eq!(
        without_notices(&out),
        vec!["failover a -> h4", "failover b -> h3", "failover c -> h4"]
    );
}

#[test]
fn fallback_anti_affinity_sees_failovers_of_the_same_batch() {
    let mut a = ha_vm("a", "h1", "h9");
    a.constraints.anti_affinity = vec!["b".into()];
    let mut b = ha_vm("b", "h1", "h9");
    b.constraints.anti_affinity = vec!["a".into()];
    let v = view(
        vec![host("h1", 0), host("h2", 30000), host("h3", 20000)],
        vec![a, b],
    );
    let out = react(&v, &[Event::HostFenced("h1".into())]);
    assert_eq!(
        without_notices(&out),
        vec!["failover a -> h2", "failover b -> h3"]
    );
}

#[test]
fn fenced_passive_host_warns_about_lost_protection() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(&v, &[Event::HostFenced("h2".into())]);
    assert!(without_notices(&out).is_empty());
    assert!(has_notice(
        &out,
        Severity::Warning,
        "HA VM a lost its passive host h2"
    ));
}

#[test]
fn fenced_host_without_quorum_fails_nothing_over() {
    let mut v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    v.has_quorum = false;
    let out = react(&v, &[Event::HostFenced("h1".into())]);
    assert_eq!(without_notices(&out), vec!["hold 5000"]);
    assert!(has_notice(
        &out,
        Severity::Critical,
        "failover of VM a to h2"
    ));
}

#[test]
fn duplicate_fenced_events_give_one_failover() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(
        &v,
        &[
            Event::HostFenced("h1".into()),
            Event::HostFenced("h1".into()),
        ],
    );
    assert_eq!(without_notices(&out), vec!["failover a -> h2"]);
}

#[test]
fn never_targets_a_host_fenced_in_the_same_answer() {
    // h2 (a's passive) is fenced by this very answer: a falls back to h3.
    let v = view(
        vec![host("h1", 0), host("h2", 8000), host("h3", 4000)],
        vec![ha_vm("a", "h1", "h2")],
    );
    let out = react(&v, &[missed("h2", 20_000), Event::HostFenced("h1".into())]);
    assert_eq!(without_notices(&out), vec!["fence h2", "failover a -> h3"]);
}

// ---- vm faults ----

#[test]
fn crashed_vm_restarts_in_place_with_exponential_backoff() {
    let v = view(three_hosts(), vec![vm("a", "h1")]);
    for (n, delay) in [(0, 1000), (1, 1000), (2, 2000), (3, 4000)] {
        let out = react(&v, &[Event::VmCrashed(fault("a", "h1", n))]);
        assert_eq!(brief(&out), vec![format!("restart a after {delay}")]);
    }
    let out = react_with(
        &[("max-restarts", "6")],
        &v,
        &[Event::VmCrashed(fault("a", "h1", 5))],
    );
    assert_eq!(brief(&out), vec!["restart a after 16000"]);
    let out = react_with(
        &[
            ("restart-base-delay-ms", "500"),
            ("restart-max-delay-ms", "3000"),
            ("max-restarts", "10"),
        ],
        &v,
        &[Event::GuestPanicked(fault("a", "h1", 8))],
    );
    assert_eq!(brief(&out), vec!["restart a after 3000"]);
    match &out[0] {
        HaAction::Restart(r) => assert!(
            r.reason.contains("guest panicked") && r.reason.contains("signal 9"),
            "{}",
            r.reason
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_many_faults_fail_ha_vm_over_to_passive() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    // The default limit, 3 (the host's ha-max-restarts default, which the
    // host passes as this setting).
    assert_eq!(
        brief(&react(&v, &[Event::VmCrashed(fault("a", "h1", 3))])),
        vec!["restart a after 4000"]
    );
    let out = react(&v, &[Event::VmCrashed(fault("a", "h1", 4))]);
    assert_eq!(brief(&out), vec!["failover a -> h2"]);
    let out = react_with(
        &[("max-restarts", "0")],
        &v,
        &[Event::VmCrashed(fault("a", "h1", 1))],
    );
    assert_eq!(brief(&out), vec!["failover a -> h2"]);
}

#[test]
fn too_many_faults_without_ha_or_healthy_passive_gives_up() {
    let v = view(three_hosts(), vec![vm("a", "h1")]);
    let out = react(&v, &[Event::VmCrashed(fault("a", "h1", 6))]);
    assert_eq!(brief(&out), vec!["notify Critical"]);
    assert!(has_notice(&out, Severity::Critical, "VM a crashed"));
    assert!(has_notice(
        &out,
        Severity::Critical,
        "more than max-restarts 3"
    ));

    let v = view(
        vec![host("h1", 1000), host_in("h2", HostHealth::Degraded)],
        vec![ha_vm("a", "h1", "h2")],
    );
    let out = react(&v, &[Event::GuestPanicked(fault("a", "h1", 9))]);
    assert_eq!(brief(&out), vec!["notify Critical"]);
    assert!(has_notice(
        &out,
        Severity::Critical,
        "passive host h2 is degraded"
    ));
}

#[test]
fn fault_on_unreachable_host_waits_for_fence() {
    let v = view(
        vec![host_in("h1", HostHealth::Unreachable), host("h2", 1000)],
        vec![ha_vm("a", "h1", "h2")],
    );
    let out = react(&v, &[Event::VmCrashed(fault("a", "h1", 9))]);
    assert!(without_notices(&out).is_empty());
    assert!(has_notice(
        &out,
        Severity::Warning,
        "waiting for the host to be fenced"
    ));
}

#[test]
fn fault_on_fenced_or_maintenance_host_is_not_restarted_in_place() {
    for h in [HostHealth::Fenced, HostHealth::Maintenance] {
        let v = view(
            vec![host_in("h1", h), host("h2", 1000)],
            vec![ha_vm("a", "h1", "h2"), vm("b", "h1")],
        );
        let out = react(
            &v,
            &[
                Event::VmCrashed(fault("a", "h1", 1)),
                Event::VmCrashed(fault("b", "h1", 1)),
            ],
        );
        assert_eq!(without_notices(&out), vec!["failover a -> h2"], "{h:?}");
        assert!(has_notice(&out, Severity::Critical, "VM b crashed"));
    }
}

#[test]
fn fault_of_stopping_vm_is_not_restarted() {
    let mut a = vm("a", "h1");
    a.state = VmState::ShuttingDown;
    let v = view(three_hosts(), vec![a]);
    let out = react(&v, &[Event::VmCrashed(fault("a", "h1", 1))]);
    assert!(without_notices(&out).is_empty());
    assert!(has_notice(&out, Severity::Info, "while being stopped"));
}

#[test]
fn restart_without_quorum_is_suppressed() {
    let mut v = view(three_hosts(), vec![vm("a", "h1")]);
    v.has_quorum = false;
    let out = react(&v, &[Event::VmCrashed(fault("a", "h1", 1))]);
    assert_eq!(without_notices(&out), vec!["hold 5000"]);
    assert!(has_notice(&out, Severity::Critical, "restart of VM a"));
}

// ---- SHA ----

#[test]
fn sha_switching_holds_and_blocks_switchover_from_that_host() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(&v, &[sha("h1", true, false), degraded("h1")]);
    assert_eq!(without_notices(&out), vec!["hold 30000"]);
    assert!(has_notice(
        &out,
        Severity::Info,
        "SHA switchover in progress on host h1"
    ));
    assert!(has_notice(
        &out,
        Severity::Warning,
        "switchover of VM a to h2 deferred: host h1 has an SHA switchover in progress"
    ));
}

#[test]
fn sha_switching_defers_failover_to_that_host_instead_of_redirecting() {
    let v = view(
        three_hosts(),
        vec![ha_vm("b", "h3", "h1"), ha_vm("c", "h3", "h2")],
    );
    let out = react(
        &v,
        &[sha("h1", true, false), Event::HostFenced("h3".into())],
    );
    // b waits for h1 (the block is temporary); c is unaffected.
    assert_eq!(
        without_notices(&out),
        vec!["failover c -> h2", "hold 30000"]
    );
    assert!(has_notice(
        &out,
        Severity::Warning,
        "failover of VM b to h1 deferred"
    ));
}

#[test]
fn sha_blocked_host_is_never_a_fallback_target() {
    let v = view(
        vec![
            host("h1", 60000),
            host_in("h2", HostHealth::Fenced),
            host("h3", 0),
            host("h4", 2048),
        ],
        vec![ha_vm("a", "h3", "h2")],
    );
    let out = react(
        &v,
        &[sha("h1", false, true), Event::HostFenced("h3".into())],
    );
    assert_eq!(
        without_notices(&out),
        vec!["failover a -> h4", "hold 30000"]
    );
}

#[test]
fn sha_switching_on_fenced_source_defers_failover() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react_with(
        &[("sha-hold-ms", "1234")],
        &v,
        &[sha("h1", true, false), Event::HostFenced("h1".into())],
    );
    assert_eq!(without_notices(&out), vec!["hold 1234"]);
    assert!(has_notice(
        &out,
        Severity::Warning,
        "failover of VM a to h2 deferred"
    ));
}

#[test]
fn sha_split_brain_is_critical_and_holds() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(&v, &[sha("h1", false, true), degraded("h1")]);
    assert_eq!(without_notices(&out), vec!["hold 30000"]);
    assert!(has_notice(
        &out,
        Severity::Critical,
        "SHA split brain on host h1 (resource r0)"
    ));
}

#[test]
fn sha_last_state_of_the_batch_counts() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(
        &v,
        &[
            sha("h1", true, false),
            sha("h1", false, false),
            degraded("h1"),
        ],
    );
    assert_eq!(without_notices(&out), vec!["switchover a -> h2"]);
}

#[test]
fn sha_switching_delays_restarts_on_that_host() {
    let v = view(three_hosts(), vec![vm("a", "h1")]);
    let out = react(
        &v,
        &[
            sha("h1", true, false),
            Event::VmCrashed(fault("a", "h1", 1)),
        ],
    );
    assert_eq!(
        without_notices(&out),
        vec!["restart a after 30000", "hold 30000"]
    );
}

// ---- quorum, recovery ----

#[test]
fn quorum_lost_is_critical_and_holds() {
    let v = view(three_hosts(), vec![]);
    let out = react(&v, &[quorum(false)]);
    assert_eq!(brief(&out), vec!["hold 5000", "notify Critical"]);
    assert!(has_notice(
        &out,
        Severity::Critical,
        "quorum lost: 1 of 3 hosts online"
    ));
    let out = react_with(&[("quorum-hold-ms", "777")], &v, &[quorum(false)]);
    assert_eq!(brief(&out), vec!["hold 777", "notify Critical"]);
}

#[test]
fn quorum_lost_in_batch_suppresses_moves_even_if_view_has_quorum() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(&v, &[quorum(false), degraded("h1")]);
    assert_eq!(without_notices(&out), vec!["hold 5000"]);
    assert!(has_notice(
        &out,
        Severity::Critical,
        "switchover of VM a to h2"
    ));
}

#[test]
fn quorum_regained_in_batch_is_info_and_allows_moves() {
    let v = view(three_hosts(), vec![ha_vm("a", "h1", "h2")]);
    let out = react(&v, &[quorum(false), quorum(true), degraded("h1")]);
    assert_eq!(without_notices(&out), vec!["switchover a -> h2"]);
    assert!(has_notice(&out, Severity::Info, "quorum regained"));
}

#[test]
fn host_recovered_is_info() {
    let mut hosts = three_hosts();
    hosts[0].name = "nas-a".into();
    let v = view(hosts, vec![]);
    let out = react(&v, &[Event::HostRecovered("h1".into())]);
    assert_eq!(
        notices(&out),
        vec![(Severity::Info, "host h1 (nas-a) recovered".to_string())]
    );
}

// ---- combination rules ----

#[test]
fn one_action_per_vm_failover_beats_restart_beats_switchover() {
    let v = view(
        three_hosts(),
        vec![ha_vm("a", "h1", "h2"), ha_vm("b", "h3", "h2")],
    );
    let out = react(
        &v,
        &[
            Event::VmCrashed(fault("a", "h1", 1)),
            Event::HostFenced("h1".into()),
            degraded("h3"),
            Event::VmCrashed(fault("b", "h3", 1)),
        ],
    );
    assert_eq!(
        without_notices(&out),
        vec!["failover a -> h2", "restart b after 1000"]
    );
}

#[test]
fn mixed_batch_is_ordered_fences_moves_restarts_holds_notices() {
    let hosts = vec![
        host("h1", 0),
        host("h2", 30000),
        host("h3", 30000),
        host("h4", 30000),
        host("h5", 30000),
    ];
    let v = view(
        hosts,
        vec![
            ha_vm("a", "h1", "h2"),
            ha_vm("b", "h3", "h2"),
            vm("c", "h4"),
            vm("d", "h1"),
        ],
    );
    let out = react(
        &v,
        &[
            Event::HostRecovered("h4".into()),
            Event::VmCrashed(fault("c", "h4", 2)),
            degraded("h3"),
            missed("h5", 20_000),
            Event::HostFenced("h1".into()),
            sha("h4", true, false),
        ],
    );
    assert_eq!(
        brief(&out),
        vec![
            "fence h5",
            "failover a -> h2",
            "switchover b -> h2",
            "restart c after 30000",
            "hold 30000",
            "notify Warning",
            "notify Warning",
            "notify Info",
            "notify Info",
        ]
    );
}

#[test]
fn output_is_independent_of_view_order() {
    let hosts = vec![
        host("h1", 0),
        host_in("h2", HostHealth::Fenced),
        host("h3", 4096),
        host("h4", 4096),
    ];
    let vms = vec![
        ha_vm("b", "h1", "h2"),
        ha_vm("a", "h1", "h2"),
        vm("c", "h1"),
    ];
    let v1 = view(hosts.clone(), vms.clone());
    let mut v2 = view(hosts, vms);
    v2.hosts.reverse();
    v2.vms.reverse();
    let ev = [Event::HostFenced("h1".into()), degraded("h3")];
    let a = react(&v1, &ev);
    assert_eq!(a, react(&v2, &ev));
    assert_eq!(a, react(&v1, &ev));
    assert_eq!(
        without_notices(&a),
        vec!["failover a -> h4", "failover b -> h4"]
    );
}

#[test]
fn no_vm_ever_gets_two_actions_and_targets_are_healthy() {
    // A broad batch over a mixed cluster: check the invariants directly.
    let hosts = vec![
        host("h1", 0),
        host_in("h2", HostHealth::Degraded),
        host("h3", 50000),
        host_in("h4", HostHealth::Unreachable),
        host_in("h5", HostHealth::Maintenance),
        host("h6", 50000),
    ];
    let mut vms = Vec::new();
    for (i, (a, p)) in [
        ("h1", "h2"),
        ("h1", "h3"),
        ("h2", "h3"),
        ("h3", "h6"),
        ("h6", "h4"),
        ("h1", "h5"),
    ]
    .iter()
    .enumerate()
    {
        vms.push(ha_vm(&format!("v{i}"), a, p));
    }
    let v = view(hosts, vms);
    let events: Vec<Event> = vec![
        Event::HostFenced("h1".into()),
        degraded("h2"),
        degraded("h3"),
        Event::VmCrashed(fault("v0", "h1", 1)),
        Event::VmCrashed(fault("v3", "h3", 7)),
        Event::GuestPanicked(fault("v4", "h6", 1)),
        missed("h4", 30_000),
    ];
    let out = react(&v, &events);
    let mut seen = std::collections::BTreeSet::new();
    for a in &out {
        let (vm, target) = match a {
            HaAction::Failover(m) | HaAction::Switchover(m) => {
                (m.vm.clone(), Some(m.target.clone()))
            }
            HaAction::Restart(r) => (r.vm.clone(), None),
            _ => continue,
        };
        assert!(
            seen.insert(vm.clone()),
            "two actions for {vm}: {:?}",
            brief(&out)
        );
        if let Some(t) = target {
            let h = v.host(&t).unwrap();
            assert_eq!(h.health, HostHealth::Healthy, "{vm} -> {t}");
            assert!(
                !["h1", "h2", "h3", "h4"].contains(&t.as_str()),
                "{vm} -> {t} is in trouble"
            );
        }
    }
    assert_eq!(brief(&out)[0], "fence h4");
}

#[test]
fn no_move_to_the_host_a_vm_is_already_on() {
    // Inconsistent record: the VM is on its passive host already.
    let mut a = ha_vm("a", "h1", "h2");
    a.host = Some("h2".into());
    let v = view(three_hosts(), vec![a]);
    let out = react(&v, &[degraded("h1")]);
    assert!(without_notices(&out).is_empty(), "{:?}", brief(&out));
    assert!(has_notice(
        &out,
        Severity::Warning,
        "already recorded on its target h2"
    ));
}

#[test]
fn huge_batches_stay_within_host_limits() {
    let mut vms: Vec<VmInfo> = (0..300).map(|i| vm(&format!("p{i:03}"), "h1")).collect();
    vms.extend((0..300).map(|i| ha_vm(&format!("v{i:03}"), "h1", "h2")));
    let mut hosts = three_hosts();
    hosts[0].name = "x".repeat(5000);
    let v = view(hosts, vms);
    let out = react(&v, &[Event::HostFenced("h1".into()), degraded("h3")]);
    assert_eq!(out.len(), crate::plan::MAX_ACTIONS);
    for a in &out {
        let text = match a {
            HaAction::Failover(m) | HaAction::Switchover(m) => &m.reason,
            HaAction::Restart(r) => &r.reason,
            HaAction::Fence(f) => &f.reason,
            HaAction::Hold(h) => &h.reason,
            HaAction::Notify(n) => &n.message,
        };
        assert!(text.len() <= crate::plan::MAX_TEXT);
    }
    assert!(out
        .iter()
        .any(|a| matches!(a, HaAction::Hold(h) if h.delay_ms == crate::plan::OVERFLOW_HOLD_MS)));
}
