//! Fixtures shared by the SHA policy's unit tests.

use nasvisor_plugin_sdk::prelude::*;

/// An env with these settings.
pub fn env_with(settings: &[(&str, &str)]) -> StaticEnv {
    StaticEnv::with_settings(settings)
}

/// A healthy pair as printed by `drbdsetup status --json` (DRBD 9.2), with a
/// second resource.
pub const HEALTHY_JSON: &str = r#"[
{
  "name": "r0",
  "node-id": 0,
  "role": "Primary",
  "suspended": false,
  "suspended-user": false,
  "suspended-no-data": false,
  "suspended-fencing": false,
  "suspended-quorum": false,
  "force-io-failures": false,
  "write-ordering": "flush",
  "devices": [
    {
      "volume": 0,
      "minor": 0,
      "disk-state": "UpToDate",
      "client": false,
      "quorum": true,
      "size": 1048508,
      "read": 1234,
      "written": 5678,
      "al-writes": 9,
      "bm-writes": 0,
      "upper-pending": 0,
      "lower-pending": 0
    } ],
  "connections": [
    {
      "peer-node-id": 1,
      "name": "nas-b",
      "connection-state": "Connected",
      "congested": false,
      "peer-role": "Secondary",
      "tls": false,
      "ap-in-flight": 0,
      "rs-in-flight": 0,
      "paths": [
        {
          "this_host": { "address": "10.0.0.1", "port": 7789, "family": "ipv4" },
          "remote_host": { "address": "10.0.0.2", "port": 7789, "family": "ipv4" },
          "established": true
        } ],
      "peer_devices": [
        {
          "volume": 0,
          "replication-state": "Established",
          "peer-disk-state": "UpToDate",
          "peer-client": false,
          "resync-suspended": "no",
          "received": 0,
          "sent": 5678,
          "out-of-sync": 0,
          "pending": 0,
          "unacked": 0,
          "has-sync-details": false,
          "has-online-verify-details": false,
          "percent-in-sync": 100.00
        } ]
    } ]
},
{
  "name": "r1",
  "node-id": 0,
  "role": "Secondary",
  "devices": [ { "volume": 0, "minor": 1, "disk-state": "UpToDate" } ],
  "connections": [
    {
      "peer-node-id": 1,
      "name": "nas-b",
      "connection-state": "Connected",
      "peer-role": "Primary",
      "peer_devices": [ { "volume": 0, "replication-state": "Established", "peer-disk-state": "UpToDate", "percent-in-sync": 100.00 } ]
    } ]
}
]
"#;

/// The same healthy `r0` as printed by `drbdadm status`.
pub const HEALTHY_TEXT: &str = "r0 role:Primary\n  disk:UpToDate\n  nas-b role:Secondary\n    replication:Established peer-disk:UpToDate\n\n";

/// A JSON status of one resource with these states.
pub fn status_json(
    role: &str,
    disk: &str,
    conn: &str,
    peer_role: &str,
    repl: &str,
    peer_disk: &str,
    pct: f64,
) -> String {
    format!(
        r#"[{{"name":"r0","role":"{role}","devices":[{{"volume":0,"disk-state":"{disk}"}}],"connections":[{{"peer-node-id":1,"name":"nas-b","connection-state":"{conn}","peer-role":"{peer_role}","peer_devices":[{{"volume":0,"replication-state":"{repl}","peer-disk-state":"{peer_disk}","percent-in-sync":{pct}}}]}}]}}]"#
    )
}

/// A host with this SHA role.
pub fn sha_host(id: &str, role: ShaRole) -> HostInfo {
    HostInfo {
        id: id.into(),
        name: format!("name-{id}"),
        sha_role: role,
        ..Default::default()
    }
}

/// A pair state with the given fields (resource r0).
pub fn pair(
    local: ShaRole,
    peer: ShaRole,
    connected: bool,
    replication: ReplicationState,
) -> ShaPairState {
    ShaPairState {
        resource_name: "r0".into(),
        local_role: local,
        peer_role: peer,
        peer_connected: connected,
        replication,
        sync_percent: if replication == ReplicationState::InSync {
            100
        } else {
            0
        },
        split_brain: false,
        switching: false,
    }
}

/// A healthy pair state (local primary).
pub fn healthy() -> ShaPairState {
    pair(
        ShaRole::Primary,
        ShaRole::Secondary,
        true,
        ReplicationState::InSync,
    )
}
