//! `parse-status` and `check-setup`.
//!
//! `check-setup` never fails on a bad status: an unreadable status is the
//! problem `unparseable-status` (with `ok = false`, no state). Otherwise the
//! parsed state is returned with these problems, in this order:
//!
//! | code | when |
//! |------|------|
//! | `not-sha-host` | the host's `sha-role` is `none` |
//! | `peer-disconnected` | the connection to the peer is not `Connected` |
//! | `split-brain` | the pair reports a split brain |
//! | `two-primaries` | both sides are primary |
//! | `no-primary` | neither side is primary |
//! | `not-in-sync` | replication is not in-sync |
//! | `role-mismatch` | the host's `sha-role` (not `none`) differs from the local DRBD role |
//!
//! `ok` is true exactly when there is no problem.
//!
//! A selected resource whose name is empty or longer than 255 bytes is
//! refused as unreadable; messages are clipped to the host's 4096-byte limit.

use nasvisor_plugin_sdk::prelude::*;

use crate::drbd::{self, Resource};
use crate::settings;
use crate::state::{pair_state, replication_name, role_name, select};
use crate::text::{clip, MAX_RESOURCE_NAME};

/// Parse a raw status and select the configured resource.
fn read(env: &dyn Env, raw: &str) -> Result<(Resource, ShaPairState), String> {
    let resources = drbd::parse(raw)?;
    let wanted = settings::resource(env);
    let r = select(&resources, wanted.as_deref())?;
    if r.name.is_empty() || r.name.len() > MAX_RESOURCE_NAME {
        return Err(format!(
            "resource name must be 1 to {MAX_RESOURCE_NAME} bytes long, found {} bytes",
            r.name.len()
        ));
    }
    Ok((r.clone(), pair_state(r)))
}

/// Turn a raw DRBD status into the standard pair state.
///
/// Errors: `invalid-input` naming what is wrong (with line and column for
/// JSON), including a `resource` setting that names a missing resource.
pub fn parse_status(env: &dyn Env, raw: &str) -> Result<ShaPairState, PluginError> {
    read(env, raw)
        .map(|(_, s)| s)
        .map_err(|m| PluginError::new(ErrorCode::InvalidInput, clip(format!("DRBD status: {m}"))))
}

fn problem(code: &str, message: String) -> SetupProblem {
    SetupProblem {
        code: code.into(),
        message: clip(message),
    }
}

/// Check that `host`'s SHA pair is set up correctly. See the module docs.
pub fn check_setup(env: &dyn Env, host: &HostInfo, raw: &str) -> Result<SetupCheck, PluginError> {
    let (r, state) = match read(env, raw) {
        Ok(x) => x,
        Err(m) => {
            env.log(
                LogLevel::Warn,
                "unparseable SHA status",
                &[("host", &host.id), ("error", &m)],
            );
            return Ok(SetupCheck {
                ok: false,
                state: None,
                problems: vec![problem(
                    "unparseable-status",
                    format!("cannot read the DRBD status: {m}"),
                )],
            });
        }
    };
    let mut p = Vec::new();
    let res = &state.resource_name;
    if host.sha_role == ShaRole::None {
        p.push(problem(
            "not-sha-host",
            format!(
                "host {} is not configured as part of an SHA pair (sha-role none)",
                host.id
            ),
        ));
    }
    if !state.peer_connected {
        let why = match r.connections.first() {
            None => "no connection is configured".to_string(),
            Some(c) if c.connection_state.is_empty() => {
                format!("peer {:?} reports no connection state", c.name)
            }
            Some(c) => format!("peer {:?} is {}", c.name, c.connection_state),
        };
        p.push(problem(
            "peer-disconnected",
            format!("resource {res}: the peer box is not connected ({why})"),
        ));
    }
    if state.split_brain {
        p.push(problem(
            "split-brain",
            format!("resource {res}: split brain; both boxes may hold different data and it must be resolved manually"),
        ));
    }
    match (state.local_role == ShaRole::Primary) as u8 + (state.peer_role == ShaRole::Primary) as u8
    {
        2 => p.push(problem(
            "two-primaries",
            format!("resource {res}: both boxes are primary"),
        )),
        0 => p.push(problem(
            "no-primary",
            format!(
                "resource {res}: no box is primary (local {}, peer {})",
                role_name(state.local_role),
                role_name(state.peer_role)
            ),
        )),
        _ => {}
    }
    if state.replication != ReplicationState::InSync {
        p.push(problem(
            "not-in-sync",
            format!(
                "resource {res}: replication is {} ({}% in sync)",
                replication_name(state.replication),
                state.sync_percent
            ),
        ));
    }
    if host.sha_role != ShaRole::None && host.sha_role != state.local_role {
        p.push(problem(
            "role-mismatch",
            format!(
                "host {} is recorded as SHA {} but DRBD reports the local role {} for resource {res}",
                host.id,
                role_name(host.sha_role),
                role_name(state.local_role)
            ),
        ));
    }
    Ok(SetupCheck {
        ok: p.is_empty(),
        state: Some(state),
        problems: p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn codes(c: &SetupCheck) -> Vec<&str> {
        c.problems.iter().map(|p| p.code.as_str()).collect()
    }

    fn check(host: &HostInfo, raw: &str) -> SetupCheck {
        check_setup(&env_with(&[]), host, raw).unwrap()
    }

    #[test]
    fn healthy_pair_is_ok() {
        let c = check(&sha_host("h1", ShaRole::Primary), HEALTHY_JSON);
        assert!(c.ok, "{:?}", c.problems);
        assert!(c.problems.is_empty());
        assert_eq!(c.state.unwrap(), healthy());
        assert!(check(&sha_host("h1", ShaRole::Primary), HEALTHY_TEXT).ok);
    }

    #[test]
    fn resource_setting_selects_the_pair() {
        let env = env_with(&[("resource", "r1")]);
        let c = check_setup(&env, &sha_host("h1", ShaRole::Secondary), HEALTHY_JSON).unwrap();
        assert!(c.ok, "{:?}", c.problems);
        assert_eq!(c.state.unwrap().resource_name, "r1");
        let c = check_setup(&env, &sha_host("h1", ShaRole::Primary), HEALTHY_JSON).unwrap();
        assert_eq!(codes(&c), vec!["role-mismatch"]);
        assert!(
            c.problems[0].message.contains("recorded as SHA primary")
                && c.problems[0].message.contains("secondary")
        );
    }

    #[test]
    fn unparseable_status_is_a_problem_not_an_error() {
        for raw in ["", "[{\"name\": }]", "garbage here", "[]"] {
            let c = check(&sha_host("h1", ShaRole::Primary), raw);
            assert!(!c.ok);
            assert_eq!(c.state, None);
            assert_eq!(codes(&c), vec!["unparseable-status"], "{raw:?}");
        }
        let c = check(&sha_host("h1", ShaRole::Primary), "[{\"name\": }]");
        assert!(
            c.problems[0].message.contains("line 1, column 11"),
            "{}",
            c.problems[0].message
        );
        let c = check_setup(
            &env_with(&[("resource", "nope")]),
            &sha_host("h1", ShaRole::Primary),
            HEALTHY_JSON,
        )
        .unwrap();
        assert_eq!(codes(&c), vec!["unparseable-status"]);
        assert!(c.problems[0].message.contains("\"nope\""));
    }

    #[test]
    fn not_an_sha_host() {
        let c = check(&sha_host("h1", ShaRole::None), HEALTHY_JSON);
        assert_eq!(codes(&c), vec!["not-sha-host"]);
        assert!(!c.ok);
        assert!(c.state.is_some());
    }

    #[test]
    fn disconnected_peer() {
        let raw = status_json(
            "Primary",
            "UpToDate",
            "Connecting",
            "Unknown",
            "Off",
            "DUnknown",
            0.0,
        );
        let c = check(&sha_host("h1", ShaRole::Primary), &raw);
        assert_eq!(codes(&c), vec!["peer-disconnected", "not-in-sync"]);
        assert!(
            c.problems[0].message.contains("\"nas-b\" is Connecting"),
            "{}",
            c.problems[0].message
        );
        assert!(
            c.problems[1].message.contains("out-of-sync (0% in sync)"),
            "{}",
            c.problems[1].message
        );
    }

    #[test]
    fn no_connection_at_all() {
        let c = check(
            &sha_host("h1", ShaRole::Primary),
            r#"[{"name":"r0","role":"Primary","devices":[{"volume":0,"disk-state":"UpToDate"}]}]"#,
        );
        assert_eq!(codes(&c), vec!["peer-disconnected", "not-in-sync"]);
        assert!(c.problems[0]
            .message
            .contains("no connection is configured"));
    }

    #[test]
    fn syncing_pair() {
        let raw = status_json(
            "Primary",
            "UpToDate",
            "Connected",
            "Secondary",
            "SyncSource",
            "Inconsistent",
            61.7,
        );
        let c = check(&sha_host("h1", ShaRole::Primary), &raw);
        assert_eq!(codes(&c), vec!["not-in-sync"]);
        assert!(
            c.problems[0].message.contains("syncing (62% in sync)"),
            "{}",
            c.problems[0].message
        );
    }

    #[test]
    fn two_primaries_are_split_brain() {
        let raw = status_json(
            "Primary",
            "UpToDate",
            "Connected",
            "Primary",
            "Established",
            "UpToDate",
            100.0,
        );
        let c = check(&sha_host("h1", ShaRole::Primary), &raw);
        assert_eq!(codes(&c), vec!["split-brain", "two-primaries"]);
    }

    #[test]
    fn no_primary() {
        let raw = status_json(
            "Secondary",
            "UpToDate",
            "Connected",
            "Secondary",
            "Established",
            "UpToDate",
            100.0,
        );
        let c = check(&sha_host("h1", ShaRole::Secondary), &raw);
        assert_eq!(codes(&c), vec!["no-primary"]);
        assert!(c.problems[0]
            .message
            .contains("local secondary, peer secondary"));
    }

    #[test]
    fn role_mismatch() {
        let c = check(&sha_host("h1", ShaRole::Secondary), HEALTHY_JSON);
        assert_eq!(codes(&c), vec!["role-mismatch"]);
    }

    #[test]
    fn everything_wrong_at_once_in_stable_order() {
        let raw = r#"[{"name":"r0","role":"Secondary","devices":[{"disk-state":"Outdated"}],"connections":[{"name":"nas-b","connection-state":"StandAlone","last-event":"split-brain detected"}]}]"#;
        let c = check(&sha_host("h1", ShaRole::None), raw);
        assert_eq!(
            codes(&c),
            vec![
                "not-sha-host",
                "peer-disconnected",
                "split-brain",
                "no-primary",
                "not-in-sync"
            ]
        );
    }

    #[test]
    fn long_names_are_refused_or_clipped() {
        let long = "r".repeat(300);
        let raw = format!(r#"[{{"name":"{long}","role":"Primary"}}]"#);
        let c = check(&sha_host("h1", ShaRole::Primary), &raw);
        assert_eq!(codes(&c), vec!["unparseable-status"]);
        assert!(c.problems[0].message.contains("1 to 255 bytes"));
        assert!(parse_status(&env_with(&[]), r#"[{"name":"","role":"Primary"}]"#).is_err());
        let peer = "p".repeat(5000);
        let raw = format!(
            r#"[{{"name":"r0","role":"Primary","connections":[{{"name":"{peer}","connection-state":"StandAlone"}}]}}]"#
        );
        let c = check(&sha_host("h1", ShaRole::Primary), &raw);
        assert!(c
            .problems
            .iter()
            .all(|p| p.message.len() <= crate::text::MAX_TEXT));
        let e = parse_status(&env_with(&[]), &format!("{} x", "a".repeat(9000))).unwrap_err();
        assert!(e.message.len() <= crate::text::MAX_TEXT);
    }

    #[test]
    fn parse_status_maps_errors_to_invalid_input() {
        let s = parse_status(&env_with(&[]), HEALTHY_TEXT).unwrap();
        assert_eq!(s, healthy());
        let e = parse_status(&env_with(&[]), "[1,").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(
            e.message.starts_with("DRBD status: invalid JSON"),
            "{}",
            e.message
        );
        assert!(e.message.contains("line 1, column 4"), "{}", e.message);
        let e = parse_status(&env_with(&[("resource", "r7")]), HEALTHY_JSON).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(e.message.contains("r7"));
    }
}
