//! Mapping a DRBD [`Resource`] to the standard [`ShaPairState`].
//!
//! The pair is the resource's first connection (an SHA pair has one peer).
//!
//! - `local-role` / `peer-role`: `Primary` -> primary, `Secondary` ->
//!   secondary, anything else (`Unknown`, empty) -> none. Case-insensitive.
//! - `peer-connected`: the connection's state is `Connected`.
//! - `replication`, per local volume (matched with the peer device of the same
//!   volume number), then the worst over volumes (out-of-sync > unknown >
//!   syncing > in-sync):
//!   - no connection, or not `Connected`: out-of-sync;
//!   - replication `SyncSource`, `SyncTarget`, `PausedSyncS`, `PausedSyncT`,
//!     `StartingSyncS`, `StartingSyncT`, `WFBitMapS`, `WFBitMapT`,
//!     `WFSyncUUID`: syncing;
//!   - replication `Off`, `Ahead`, `Behind`: out-of-sync;
//!   - replication `Established`, `VerifyS`, `VerifyT`: in-sync when both the
//!     local and the peer disk are `UpToDate`; out-of-sync when either is
//!     `Outdated`, `Inconsistent`, `Failed` or `Diskless`; unknown otherwise;
//!   - anything else: unknown. A resource without volumes is unknown.
//! - `sync-percent`: 100 when in-sync; else the lowest reported
//!   `percent-in-sync` over the volumes, rounded and clamped to 0..=100; 0
//!   when none is reported.
//! - `split-brain`: a split-brain marker was found (see [`crate::drbd`]), or
//!   both sides are `Primary` while connected. A `StandAlone` connection by
//!   itself is *not* a split brain (an administrator may have disconnected
//!   the pair); it is reported as a disconnected, out-of-sync pair.
//! - `switching`: connected, not split, and neither side is `Primary`: the
//!   old primary has demoted and the new one has not yet promoted. (A pair
//!   that was never promoted looks the same; `check-setup` reports it as
//!   "no-primary".)

use nasvisor_plugin_sdk::prelude::*;

use crate::drbd::{Connection, Resource};

/// Map a DRBD role name to an SHA role.
pub fn role(s: &str) -> ShaRole {
    if s.eq_ignore_ascii_case("primary") {
        ShaRole::Primary
    } else if s.eq_ignore_ascii_case("secondary") {
        ShaRole::Secondary
    } else {
        ShaRole::None
    }
}

/// The WIT name of a replication state, for messages.
pub fn replication_name(r: ReplicationState) -> &'static str {
    match r {
        ReplicationState::InSync => "in-sync",
        ReplicationState::Syncing => "syncing",
        ReplicationState::OutOfSync => "out-of-sync",
        ReplicationState::Unknown => "unknown",
    }
}

/// The WIT name of an SHA role, for messages.
pub fn role_name(r: ShaRole) -> &'static str {
    match r {
        ShaRole::None => "none",
        ShaRole::Primary => "primary",
        ShaRole::Secondary => "secondary",
    }
}

/// Badness rank for aggregating volumes: higher is worse.
fn rank(r: ReplicationState) -> u8 {
    match r {
        ReplicationState::InSync => 0,
        ReplicationState::Syncing => 1,
        ReplicationState::Unknown => 2,
        ReplicationState::OutOfSync => 3,
    }
}

fn is_any(s: &str, set: &[&str]) -> bool {
    set.iter().any(|x| s.eq_ignore_ascii_case(x))
}

/// Replication state of one volume over a connected link.
fn volume_replication(local_disk: &str, replication: &str, peer_disk: &str) -> ReplicationState {
    const SYNCING: &[&str] = &[
        "SyncSource",
        "SyncTarget",
        "PausedSyncS",
        "PausedSyncT",
        "StartingSyncS",
        "StartingSyncT",
        "WFBitMapS",
        "WFBitMapT",
        "WFSyncUUID",
    ];
    const BROKEN: &[&str] = &["Off", "Ahead", "Behind"];
    const ESTABLISHED: &[&str] = &["Established", "VerifyS", "VerifyT"];
    const BAD_DISK: &[&str] = &["Outdated", "Inconsistent", "Failed", "Diskless"];
    if is_any(replication, SYNCING) {
        ReplicationState::Syncing
    } else if is_any(replication, BROKEN) {
        ReplicationState::OutOfSync
    } else if is_any(replication, ESTABLISHED) {
        if local_disk.eq_ignore_ascii_case("UpToDate") && peer_disk.eq_ignore_ascii_case("UpToDate")
        {
            ReplicationState::InSync
        } else if is_any(local_disk, BAD_DISK) || is_any(peer_disk, BAD_DISK) {
            ReplicationState::OutOfSync
        } else {
            ReplicationState::Unknown
        }
    } else {
        ReplicationState::Unknown
    }
}

/// Round a percentage to 0..=100.
fn round_pct(p: f64) -> u8 {
    if !p.is_finite() || p <= 0.0 {
        0
    } else if p >= 100.0 {
        100
    } else {
        (p + 0.5) as u8
    }
}

fn connected(c: Option<&Connection>) -> bool {
    c.is_some_and(|c| c.connection_state.eq_ignore_ascii_case("Connected"))
}

/// The standard pair state of a resource (see the module documentation).
pub fn pair_state(r: &Resource) -> ShaPairState {
    let conn = r.connections.first();
    let peer_connected = connected(conn);
    let local_role = role(&r.role);
    let peer_role = conn.map_or(ShaRole::None, |c| role(&c.peer_role));

    let peer_devices = conn.map_or(&[][..], |c| &c.peer_devices[..]);
    let replication = if !peer_connected {
        ReplicationState::OutOfSync
    } else if r.devices.is_empty() {
        ReplicationState::Unknown
    } else {
        r.devices
            .iter()
            .map(|d| {
                let pd = peer_devices.iter().find(|p| p.volume == d.volume);
                volume_replication(
                    &d.disk_state,
                    pd.map_or("", |p| &p.replication_state),
                    pd.map_or("", |p| &p.peer_disk_state),
                )
            })
            .max_by_key(|s| rank(*s))
            .unwrap_or(ReplicationState::Unknown)
    };
    let sync_percent = if replication == ReplicationState::InSync {
        100
    } else {
        peer_devices
            .iter()
            .filter_map(|p| p.percent_in_sync)
            .map(round_pct)
            .min()
            .unwrap_or(0)
    };
    let split_brain = r.split_brain_marker
        || (peer_connected && local_role == ShaRole::Primary && peer_role == ShaRole::Primary);
    let switching = peer_connected
        && !split_brain
        && local_role != ShaRole::Primary
        && peer_role != ShaRole::Primary;
    ShaPairState {
        resource_name: r.name.clone(),
        local_role,
        peer_role,
        peer_connected,
        replication,
        sync_percent,
        split_brain,
        switching,
    }
}

/// Pick the resource named `wanted`, or the first one.
pub fn select<'r>(resources: &'r [Resource], wanted: Option<&str>) -> Result<&'r Resource, String> {
    match wanted {
        None => resources
            .first()
            .ok_or_else(|| "status lists no DRBD resource".to_string()),
        Some(name) => resources.iter().find(|r| r.name == name).ok_or_else(|| {
            let have: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
            format!(
                "resource {name:?} (setting \"resource\") is not in the status; it lists {}",
                have.join(", ")
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drbd::{self, Device, PeerDevice};
    use crate::testutil::*;

    fn res(
        role: &str,
        disk: &str,
        conn: &str,
        peer_role: &str,
        repl: &str,
        peer_disk: &str,
        pct: Option<f64>,
    ) -> Resource {
        Resource {
            name: "r0".into(),
            role: role.into(),
            devices: vec![Device {
                volume: 0,
                disk_state: disk.into(),
            }],
            connections: vec![Connection {
                name: "peer".into(),
                connection_state: conn.into(),
                peer_role: peer_role.into(),
                peer_devices: vec![PeerDevice {
                    volume: 0,
                    replication_state: repl.into(),
                    peer_disk_state: peer_disk.into(),
                    percent_in_sync: pct,
                }],
            }],
            split_brain_marker: false,
        }
    }

    #[test]
    fn healthy_pair() {
        let s = pair_state(&drbd::parse(HEALTHY_JSON).unwrap()[0]);
        assert_eq!(
            s,
            ShaPairState {
                resource_name: "r0".into(),
                local_role: ShaRole::Primary,
                peer_role: ShaRole::Secondary,
                peer_connected: true,
                replication: ReplicationState::InSync,
                sync_percent: 100,
                split_brain: false,
                switching: false,
            }
        );
        assert_eq!(pair_state(&drbd::parse(HEALTHY_TEXT).unwrap()[0]), s);
    }

    #[test]
    fn replication_mapping() {
        use ReplicationState::*;
        let cases = [
            ("UpToDate", "Connected", "Established", "UpToDate", InSync),
            ("UpToDate", "connected", "established", "uptodate", InSync),
            ("UpToDate", "Connected", "VerifyS", "UpToDate", InSync),
            (
                "UpToDate",
                "Connected",
                "SyncSource",
                "Inconsistent",
                Syncing,
            ),
            (
                "Inconsistent",
                "Connected",
                "SyncTarget",
                "UpToDate",
                Syncing,
            ),
            (
                "UpToDate",
                "Connected",
                "PausedSyncS",
                "Inconsistent",
                Syncing,
            ),
            (
                "UpToDate",
                "Connected",
                "Established",
                "Outdated",
                OutOfSync,
            ),
            (
                "Inconsistent",
                "Connected",
                "Established",
                "UpToDate",
                OutOfSync,
            ),
            (
                "Diskless",
                "Connected",
                "Established",
                "UpToDate",
                OutOfSync,
            ),
            ("UpToDate", "Connected", "Ahead", "UpToDate", OutOfSync),
            ("UpToDate", "Connected", "Off", "UpToDate", OutOfSync),
            (
                "UpToDate",
                "StandAlone",
                "Established",
                "UpToDate",
                OutOfSync,
            ),
            ("UpToDate", "Connecting", "Off", "DUnknown", OutOfSync),
            ("UpToDate", "Connected", "Established", "DUnknown", Unknown),
            (
                "Consistent",
                "Connected",
                "Established",
                "UpToDate",
                Unknown,
            ),
            ("UpToDate", "Connected", "Weird", "UpToDate", Unknown),
            ("UpToDate", "Connected", "", "", Unknown),
        ];
        for (disk, conn, repl, peer_disk, want) in cases {
            let s = pair_state(&res(
                "Primary",
                disk,
                conn,
                "Secondary",
                repl,
                peer_disk,
                None,
            ));
            assert_eq!(s.replication, want, "{disk} {conn} {repl} {peer_disk}");
        }
    }

    #[test]
    fn worst_volume_wins() {
        let mut r = res(
            "Primary",
            "UpToDate",
            "Connected",
            "Secondary",
            "Established",
            "UpToDate",
            Some(100.0),
        );
        r.devices.push(Device {
            volume: 1,
            disk_state: "UpToDate".into(),
        });
        r.connections[0].peer_devices.push(PeerDevice {
            volume: 1,
            replication_state: "SyncSource".into(),
            peer_disk_state: "Inconsistent".into(),
            percent_in_sync: Some(42.4),
        });
        let s = pair_state(&r);
        assert_eq!(s.replication, ReplicationState::Syncing);
        assert_eq!(s.sync_percent, 42);
        // A volume with no peer device is unknown, which beats syncing.
        r.devices.push(Device {
            volume: 2,
            disk_state: "UpToDate".into(),
        });
        assert_eq!(pair_state(&r).replication, ReplicationState::Unknown);
    }

    #[test]
    fn sync_percent_rounding_and_clamping() {
        for (pct, want) in [
            (Some(99.5), 100),
            (Some(99.4), 99),
            (Some(-3.0), 0),
            (Some(250.0), 100),
            (Some(f64::NAN), 0),
            (None, 0),
            (Some(0.49), 0),
        ] {
            let s = pair_state(&res(
                "Primary",
                "UpToDate",
                "Connected",
                "Secondary",
                "SyncSource",
                "Inconsistent",
                pct,
            ));
            assert_eq!(s.sync_percent, want, "{pct:?}");
        }
        let s = pair_state(&res(
            "Primary",
            "UpToDate",
            "Connected",
            "Secondary",
            "Established",
            "UpToDate",
            Some(3.0),
        ));
        assert_eq!(s.sync_percent, 100, "in-sync is always 100");
    }

    #[test]
    fn roles_and_disconnection() {
        let s = pair_state(&res(
            "Primary",
            "UpToDate",
            "StandAlone",
            "Unknown",
            "Off",
            "DUnknown",
            Some(0.0),
        ));
        assert_eq!(
            (s.local_role, s.peer_role, s.peer_connected),
            (ShaRole::Primary, ShaRole::None, false)
        );
        assert_eq!(s.replication, ReplicationState::OutOfSync);
        assert!(!s.split_brain, "StandAlone alone is not a split brain");
        assert!(!s.switching);
        let mut r = res(
            "Secondary",
            "UpToDate",
            "Connected",
            "Primary",
            "Established",
            "UpToDate",
            None,
        );
        r.connections.clear();
        let s = pair_state(&r);
        assert!(!s.peer_connected);
        assert_eq!(s.peer_role, ShaRole::None);
        assert_eq!(s.replication, ReplicationState::OutOfSync);
    }

    #[test]
    fn split_brain_rules() {
        let s = pair_state(&res(
            "Primary",
            "UpToDate",
            "Connected",
            "Primary",
            "Established",
            "UpToDate",
            None,
        ));
        assert!(s.split_brain);
        assert!(!s.switching);
        let mut r = res(
            "Secondary",
            "Outdated",
            "StandAlone",
            "Unknown",
            "Off",
            "DUnknown",
            None,
        );
        r.split_brain_marker = true;
        assert!(pair_state(&r).split_brain);
    }

    #[test]
    fn switching_rule() {
        let s = pair_state(&res(
            "Secondary",
            "UpToDate",
            "Connected",
            "Secondary",
            "Established",
            "UpToDate",
            None,
        ));
        assert!(s.switching);
        let s = pair_state(&res(
            "Secondary",
            "UpToDate",
            "Connected",
            "Primary",
            "Established",
            "UpToDate",
            None,
        ));
        assert!(!s.switching);
        let s = pair_state(&res(
            "Secondary",
            "UpToDate",
            "Connecting",
            "Unknown",
            "Off",
            "DUnknown",
            None,
        ));
        assert!(!s.switching, "not while disconnected");
    }

    #[test]
    fn select_by_name_or_first() {
        let r = drbd::parse(HEALTHY_JSON).unwrap();
        assert_eq!(select(&r, None).unwrap().name, "r0");
        assert_eq!(select(&r, Some("r1")).unwrap().name, "r1");
        let e = select(&r, Some("r9")).unwrap_err();
        assert!(
            e.contains("\"r9\"") && e.contains("r0, r1") && e.contains("resource"),
            "{e}"
        );
        assert!(select(&[], None).is_err());
    }
}
