//! `on-state-change`: react to a change of a host's SHA pair state.
//!
//! This policy only holds and notifies; VM moves are the HA policy's job.
//!
//! | condition (on `current`, compared with `previous`) | actions |
//! |---|---|
//! | split brain | critical notice + hold `sha-hold-ms` |
//! | switching (and not split) | info notice + hold `sha-hold-ms` |
//! | replication went from in-sync to out-of-sync | warning |
//! | peer disconnected while the local box is secondary and no primary is known, newly so | critical notice |
//! | replication back to in-sync from another known state | info notice |
//! | the host is not in the view | warning |
//!
//! Output order: holds, then notices (critical, warning, info).

use nasvisor_plugin_sdk::prelude::*;

use crate::settings;
use crate::state::replication_name;
use crate::text::clip;

/// Peer gone while we are secondary and nobody is known to be primary: the
/// pair's storage has no server.
fn orphaned(s: &ShaPairState) -> bool {
    !s.peer_connected && s.local_role == ShaRole::Secondary && s.peer_role != ShaRole::Primary
}

/// React to `host`'s pair state changing from `previous` to `current`.
///
/// Errors: `bad-settings` for an invalid `sha-hold-ms`.
pub fn on_state_change(
    env: &dyn Env,
    view: &ClusterView,
    host: &str,
    previous: Option<&ShaPairState>,
    current: &ShaPairState,
) -> Result<Vec<HaAction>, PluginError> {
    let hold_ms = settings::sha_hold_ms(env)?;
    let label = match view.host(host) {
        Some(h) if !h.name.is_empty() && h.name != host => format!("{host} ({})", h.name),
        _ => host.to_string(),
    };
    let res = if current.resource_name.is_empty() {
        String::new()
    } else {
        format!(", resource {}", current.resource_name)
    };
    let mut holds: Vec<HaAction> = Vec::new();
    let mut notices: Vec<(Severity, String)> = Vec::new();

    if view.host(host).is_none() {
        notices.push((
            Severity::Warning,
            format!("SHA state change for host {host}, which is not in the cluster view"),
        ));
    }
    if current.split_brain {
        holds.push(HaAction::Hold(Hold {
            delay_ms: hold_ms,
            reason: format!("SHA split brain on host {label}"),
        }));
        notices.push((
            Severity::Critical,
            format!("SHA split brain on host {label}{res}: both boxes may hold different data; resolve it manually before VMs move"),
        ));
    } else if current.switching {
        holds.push(HaAction::Hold(Hold {
            delay_ms: hold_ms,
            reason: format!("SHA switchover in progress on host {label}"),
        }));
        notices.push((
            Severity::Info,
            format!("SHA switchover in progress on host {label}{res}"),
        ));
    }
    let prev_repl = previous.map(|p| p.replication);
    if prev_repl == Some(ReplicationState::InSync)
        && current.replication == ReplicationState::OutOfSync
    {
        notices.push((
            Severity::Warning,
            format!(
                "SHA replication on host {label}{res} dropped from in-sync to out-of-sync (peer {}connected); the pair is not protected",
                if current.peer_connected { "" } else { "dis" }
            ),
        ));
    }
    if orphaned(current) && !previous.is_some_and(orphaned) {
        notices.push((
            Severity::Critical,
            format!("SHA peer of host {label}{res} disconnected while the local box is secondary and no box is primary: storage is not served"),
        ));
    }
    if matches!(prev_repl, Some(r) if r != ReplicationState::InSync)
        && current.replication == ReplicationState::InSync
    {
        notices.push((
            Severity::Info,
            format!(
                "SHA replication on host {label}{res} is in sync again (was {})",
                replication_name(prev_repl.unwrap_or_default())
            ),
        ));
    }
    let rank = |s: Severity| match s {
        Severity::Critical => 0,
        Severity::Warning => 1,
        Severity::Info => 2,
    };
    notices.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then_with(|| a.1.cmp(&b.1)));
    notices.dedup();
    env.log(LogLevel::Debug, "sha state change", &[("host", host)]);
    Ok(holds
        .into_iter()
        .chain(
            notices
                .into_iter()
                .map(|(severity, message)| HaAction::Notify(Notice { severity, message })),
        )
        .map(|a| match a {
            HaAction::Hold(h) => HaAction::Hold(Hold {
                reason: clip(h.reason),
                ..h
            }),
            HaAction::Notify(n) => HaAction::Notify(Notice {
                message: clip(n.message),
                ..n
            }),
            other => other,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use ReplicationState::*;
    use ShaRole::{Primary, Secondary};

    fn v() -> ClusterView {
        ClusterView {
            hosts: vec![sha_host("h1", Primary)],
            has_quorum: true,
            ..Default::default()
        }
    }

    fn react(prev: Option<&ShaPairState>, cur: &ShaPairState) -> Vec<HaAction> {
        on_state_change(&env_with(&[]), &v(), "h1", prev, cur).unwrap()
    }

    fn brief(a: &[HaAction]) -> Vec<String> {
        a.iter()
            .map(|a| match a {
                HaAction::Hold(h) => format!("hold {}", h.delay_ms),
                HaAction::Notify(n) => format!("{:?}: {}", n.severity, n.message),
                other => panic!("the SHA policy must not emit {other:?}"),
            })
            .collect()
    }

    #[test]
    fn unchanged_healthy_pair_gives_nothing() {
        assert!(react(Some(&healthy()), &healthy()).is_empty());
        assert!(react(None, &healthy()).is_empty());
    }

    #[test]
    fn split_brain_is_critical_and_holds() {
        let mut s = healthy();
        s.split_brain = true;
        s.switching = true;
        let out = brief(&react(Some(&healthy()), &s));
        assert_eq!(out[0], "hold 30000");
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[1].starts_with("Critical: SHA split brain on host h1 (name-h1), resource r0"),
            "{out:?}"
        );
    }

    #[test]
    fn switching_holds_with_info() {
        let s = ShaPairState {
            switching: true,
            ..pair(Secondary, Secondary, true, InSync)
        };
        let out = on_state_change(
            &env_with(&[("sha-hold-ms", "9000")]),
            &v(),
            "h1",
            Some(&healthy()),
            &s,
        )
        .unwrap();
        assert_eq!(
            brief(&out),
            vec![
                "hold 9000".to_string(),
                "Info: SHA switchover in progress on host h1 (name-h1), resource r0".into()
            ]
        );
    }

    #[test]
    fn replication_drop_warns() {
        let s = pair(Primary, Secondary, true, OutOfSync);
        let out = brief(&react(Some(&healthy()), &s));
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("Warning: SHA replication on host h1 (name-h1), resource r0 dropped from in-sync to out-of-sync (peer connected)"), "{out:?}");
        // Not from syncing, and not without a previous state.
        assert!(react(Some(&pair(Primary, Secondary, true, Syncing)), &s).is_empty());
        assert!(react(None, &s).is_empty());
    }

    #[test]
    fn orphaned_secondary_is_critical_once() {
        let prev = pair(Secondary, Primary, true, InSync);
        let cur = pair(Secondary, ShaRole::None, false, OutOfSync);
        let out = brief(&react(Some(&prev), &cur));
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[0].starts_with("Critical: SHA peer of host h1"),
            "{out:?}"
        );
        assert!(out[1].starts_with("Warning: SHA replication"), "{out:?}");
        // Already orphaned before: no repeat.
        assert!(react(Some(&cur), &cur).is_empty());
        // Disconnected while primary: only the replication warning.
        let out = brief(&react(
            Some(&healthy()),
            &pair(Primary, ShaRole::None, false, OutOfSync),
        ));
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("(peer disconnected)"));
        // A secondary whose disconnected peer is still known primary is not orphaned.
        assert!(react(None, &pair(Secondary, Primary, false, OutOfSync)).is_empty());
    }

    #[test]
    fn recovery_to_in_sync_is_info() {
        let out = brief(&react(
            Some(&pair(Primary, Secondary, true, Syncing)),
            &healthy(),
        ));
        assert_eq!(out, vec!["Info: SHA replication on host h1 (name-h1), resource r0 is in sync again (was syncing)"]);
    }

    #[test]
    fn unknown_host_warns_and_bad_settings_fail() {
        let out = on_state_change(
            &env_with(&[]),
            &ClusterView::default(),
            "hx",
            None,
            &healthy(),
        )
        .unwrap();
        assert_eq!(
            brief(&out),
            vec!["Warning: SHA state change for host hx, which is not in the cluster view"]
        );
        let e = on_state_change(
            &env_with(&[("sha-hold-ms", "x")]),
            &v(),
            "h1",
            None,
            &healthy(),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
    }

    #[test]
    fn long_names_are_clipped() {
        let mut s = healthy();
        s.split_brain = true;
        s.resource_name = "r".repeat(5000);
        let out = on_state_change(
            &env_with(&[]),
            &ClusterView::default(),
            &"h".repeat(5000),
            None,
            &s,
        )
        .unwrap();
        for a in out {
            match a {
                HaAction::Hold(h) => assert!(h.reason.len() <= crate::text::MAX_TEXT),
                HaAction::Notify(n) => assert!(n.message.len() <= crate::text::MAX_TEXT),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn never_moves_vms() {
        let states = [
            healthy(),
            pair(Secondary, ShaRole::None, false, OutOfSync),
            ShaPairState {
                split_brain: true,
                ..healthy()
            },
            ShaPairState {
                switching: true,
                ..pair(Secondary, Secondary, true, Unknown)
            },
        ];
        for p in &states {
            for c in &states {
                for a in react(Some(p), c) {
                    assert!(
                        matches!(a, HaAction::Hold(_) | HaAction::Notify(_)),
                        "{a:?}"
                    );
                }
            }
        }
    }
}
