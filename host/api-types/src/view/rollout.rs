//! A rolling update of the cluster (`ClusterUpdate` schema, `nasvisor
//! cluster update`; docs/firmware.md, "Rolling cluster update"): one
//! signed bundle, copied to every member and checked there, then installed
//! one host at a time while the others serve.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the whole rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Hosts are being updated, one at a time.
    Running,
    /// Every host runs the new version.
    Done,
    /// Stopped at a host (`failure`, `advice`); the others serve. `resume`
    /// goes on from that host, `abort` ends it as it is.
    Failed,
    /// Ended by the administrator before every host was updated.
    Aborted,
}

impl RolloutState {
    /// The API name, e.g. `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Done => "done",
            RolloutState::Failed => "failed",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Whether it still moves on by itself.
    pub fn is_running(self) -> bool {
        self == RolloutState::Running
    }
}

/// Where one host stands in the rollout, in the order it goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutHostState {
    /// The bundle is not on it yet.
    Waiting,
    /// Copying the bundle from the host that received it, then checking it
    /// as an install would (signature, product, board, version, expiry).
    Copying,
    /// Holds the checked bundle; waits for its turn.
    Ready,
    /// Its turn: cordoned (no new VMs placed on it).
    Cordoned,
    /// A `reboot` bundle: its running VMs live-migrate away.
    Evacuating,
    /// The bundle installs (its firmware-install job, `job`).
    Installing,
    /// nasvisord restarts (a `service` bundle) or the host reboots (a
    /// `reboot` bundle); waiting for it to be healthy, rejoined, and to
    /// report the new version.
    Restarting,
    /// Uncordoned; the VMs evacuated from it move back.
    Returning,
    /// Runs the new version, serving.
    Done,
    /// Its step failed (`message`); the rollout stopped here.
    Failed,
}

impl RolloutHostState {
    /// The API name, e.g. `installing`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutHostState::Waiting => "waiting",
            RolloutHostState::Copying => "copying",
            RolloutHostState::Ready => "ready",
            RolloutHostState::Cordoned => "cordoned",
            RolloutHostState::Evacuating => "evacuating",
            RolloutHostState::Installing => "installing",
            RolloutHostState::Restarting => "restarting",
            RolloutHostState::Returning => "returning",
            RolloutHostState::Done => "done",
            RolloutHostState::Failed => "failed",
        }
    }
}

/// One host of the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "ClusterUpdateHost", deny_unknown_fields)]
pub struct RolloutHostView {
    /// Host id.
    pub host: String,
    /// Its step.
    pub state: RolloutHostState,
    /// The version it ran when the rollout started.
    pub from_version: String,
    /// The version it runs now, as its record says.
    pub version: String,
    /// What happens now, or what failed.
    pub message: Option<String>,
    /// The job of its step (evacuation, install), when there is one.
    pub job: Option<String>,
    /// The VMs moved away from it (a `reboot` bundle), as `vm → host`.
    pub moved: Vec<String>,
    /// When its turn started (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub started_at: Option<String>,
    /// When it was done or failed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub finished_at: Option<String>,
}

/// A rolling update of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "ClusterUpdate", deny_unknown_fields)]
pub struct RolloutView {
    /// Its id.
    pub id: String,
    /// The bundle's version.
    pub version: String,
    /// `reboot` (a new root slot, hosts reboot after their VMs moved away)
    /// or `service` (a new nasvisord and plugins, VMs stay where they run).
    pub class: String,
    /// The SHA-256 of the whole bundle file, hex.
    pub sha256: String,
    /// Its size, bytes.
    pub size: u64,
    /// The host that received the bundle (the others copy it from there).
    pub holder: String,
    /// Whether VMs evacuated from a host move back once it is updated.
    pub move_back: bool,
    /// Where it stands.
    pub state: RolloutState,
    /// The host it stopped at and why (`failed`).
    pub failure: Option<String>,
    /// How to go on from here (`failed`, `aborted`).
    pub advice: Option<String>,
    /// Who started it.
    pub started_by: String,
    /// When it started (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub started_at: String,
    /// When it ended (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub finished_at: Option<String>,
    /// The hosts, in the order they are updated (the leader last).
    pub hosts: Vec<RolloutHostView>,
}
