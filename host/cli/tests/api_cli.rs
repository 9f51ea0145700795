//! End-to-end tests of the API-backed commands: the real `nasvisor` binary
//! against a real `nasvisor_api::Server` on 127.0.0.1:0 (real TLS, real
//! token), whose core is a fake that records the Actions it receives and
//! answers with schema-valid objects (the layer below the one under test).
//! The remote tests run the CLI with a config file of their own
//! (`NASVISOR_CONFIG`) against the same server.
//!
//! One file although over 700 lines: the fake core and harness before the
//! first test (560 lines) serve every test and no other file, and one test is
//! a 470-line table of every command. Nothing is shared at run time (each
//! test starts its own server), so a split would save no setup time.

use bytes::Bytes;
use nasvisor_api::types::{
    strict, ApiTokenView, AuditEntry, AuditView, Caller, CallerView, ClusterView, Credential,
    CredentialKind, DiskSpec, EventView, FirmwareKind, FirmwareView, HostDegrade, HostHealth,
    HostView, ImageAdd, ImageMetaSpec, ImageSource, ImageView, InstallNetwork, InstallSpec,
    InstallUser, IntoAnswer, JobView, JoinTokenView, Login, NewTokenView, NicModel, NicSpec,
    PluginResetView, PluginView, PoolCreate, PoolView, Request, Role, SessionView, SnapshotView,
    UserView, VmCreate, VmRecover, VmState, VmUpdate, VmView, VolumeCreate, VolumeFormat,
    VolumeView, VswitchCreate, VswitchView,
};
use nasvisor_api::{
    Action, Answer, ByteStream, Core, CoreError, ImageUpload, PowerOp, Server, ServerSettings,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- fake core

/// The token the fake accepts as the admin's.
const TEST_TOKEN: &str = "nvt_cli-test-token";
/// The session the fake's login makes for alice.
const FAKE_SESSION: &str = "nvs_alice-session";

fn user_view(name: &str, role: &str) -> UserView {
    strict(
        &json!({"name": name, "role": role, "disabled": false, "password_set": true,
        "created_at": "2026-01-01T00:00:00Z", "password_changed_at": null}),
    )
    .unwrap()
}

fn token_view(name: &str) -> ApiTokenView {
    strict(
        &json!({"id": "0123456789abcdef", "name": name, "user": "alice", "role": "operator",
        "created_at": "2026-01-01T00:00:00Z", "created_by": "alice", "expires_at": null,
        "expired": false}),
    )
    .unwrap()
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Action>>,
    /// The user names of the logins asked.
    logins: Mutex<Vec<String>>,
    polls: Mutex<HashMap<String, usize>>,
    /// (request, bytes received, sha256 hex of them)
    uploads: Mutex<Vec<(ImageUpload, u64, String)>>,
    /// Firmware bundles received: (bytes, sha256 hex of them)
    firmware_uploads: Mutex<Vec<(u64, String)>>,
    /// Cluster update bundles received: (bytes, sha256 hex, move_back, by)
    update_uploads: Mutex<Vec<(u64, String, bool, String)>>,
    consoles: Mutex<Vec<(String, bool, u64)>>,
    /// Console input is echoed into open console streams.
    echo: Mutex<Option<tokio::sync::broadcast::Sender<String>>>,
}

impl Fake {
    fn take(&self) -> Vec<Action> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
    fn echo(&self) -> tokio::sync::broadcast::Sender<String> {
        self.echo
            .lock()
            .unwrap()
            .get_or_insert_with(|| tokio::sync::broadcast::channel(16).0)
            .clone()
    }
}

/// `value` read as the view `T`, exactly (no field added or lost): the
/// fake answers with schema-valid views.
fn view<T: serde::de::DeserializeOwned + serde::Serialize>(value: Value) -> T {
    strict(&value).unwrap_or_else(|e| panic!("the fake's view matches the type: {e}"))
}

fn vm(id: &str) -> VmView {
    view(
        json!({"id": id, "name": id, "state": "stopped", "state_reason": null, "host": null,
           "vcpus": 2, "memory_mib": 2048, "description": null, "autostart": false, "ha": false, "ha_status": null,
           "firmware": "bios", "image": null, "pid": null, "qemu_state": null, "accel": null, "install_job": null,
           "created_at": "2026-01-01T00:00:00Z",
           "disks": [{"pool": "p1", "volume": "v1", "size_mib": 10240, "role": "disk"}],
           "nics": [{"vswitch": "sw0", "mac": "52:54:00:12:34:56", "model": "virtio", "tap": null}]}),
    )
}

fn job(id: &str, kind: &str, state: &str, progress: f64, message: Option<&str>) -> JobView {
    view(
        json!({"id": id, "kind": kind, "state": state, "progress": progress, "error": null,
           "target": "vm/vm1", "message": message, "finished_at": null,
           "created_at": "2026-01-01T00:00:00Z"}),
    )
}

fn volume(pool: &str, name: &str, size: u64) -> VolumeView {
    view(json!({"name": name, "pool": pool, "size_mib": size, "format": "qcow2", "used_by": null}))
}

fn snapshot(pool: &str, volume: &str, name: &str) -> SnapshotView {
    view(
        json!({"name": name, "pool": pool, "volume": volume, "created_at": "2026-01-01T00:00:00Z"}),
    )
}

fn image(name: &str) -> ImageView {
    view(
        json!({"name": name, "size_mib": 400, "state": "ready", "format": "qcow2",
           "virtual_size_mib": 2048, "os_family": "linux", "os_variant": "debian12",
           "cloud_init": true, "firmware": "bios", "ready_marker": "NASVISOR-READY",
           "iso": false, "job": null, "error": null, "hosts": ["nas1"]}),
    )
}

fn event(seq: u64) -> EventView {
    view(
        json!({"seq": seq, "time": "2026-01-01T00:00:00Z", "kind": "vm.started",
           "severity": "info", "target": "vm/vm1", "message": format!("event number {seq}")}),
    )
}

fn host() -> HostView {
    view(
        json!({"id": "h1", "name": "nas1", "version": "0.1.0", "cpus": 4, "memory_mib": 16384,
           "cluster_role": "single", "accel": "tcg", "accel_reason": "probe guest hung under KVM",
           "free_memory_mib": 8192, "qemu_version": "10.0.2", "node_id": 1,
           "address": "192.0.2.1:8444", "online": true, "cordoned": false, "vms": 2,
           "last_seen": null, "protocol": 2, "protocol_compatible": true,
           "health": "healthy", "health_reasons": []}),
    )
}

/// A rolling update of two hosts in `state`: nas2 done, nas1 failed when
/// it failed.
fn rollout(state: &str) -> nasvisor_api::types::RolloutView {
    let failed = state == "failed";
    view(json!({
        "id": "r1", "version": "2.0.2", "class": "service",
        "sha256": "ab".repeat(32), "size": 1024, "holder": "nas1", "move_back": true,
        "state": state,
        "failure": failed.then_some("host nas1: the update did not become healthy: exited"),
        "advice": failed.then_some("serving: nas2 on 2.0.2. `nasvisor cluster update resume` goes on"),
        "started_by": "alice",
        "started_at": "2026-12-05T10:00:00Z", "finished_at": null,
        "hosts": [
            {"host": "nas2", "state": "done", "from_version": "2.0.1", "version": "2.0.2",
             "message": "runs 2.0.2", "job": null, "moved": ["web → nas1"],
             "started_at": "2026-12-05T10:00:01Z", "finished_at": "2026-12-05T10:00:09Z"},
            {"host": "nas1", "state": if failed { "failed" } else { "installing" },
             "from_version": "2.0.1", "version": "2.0.1",
             "message": "installing 2.0.2 (job j9)", "job": "j9", "moved": [],
             "started_at": "2026-12-05T10:00:10Z", "finished_at": null}
        ]
    }))
}

fn firmware() -> FirmwareView {
    view(json!({
        "booted": "a",
        "slots": [
            {"slot": "a", "state": "booted", "tries_left": null, "tries_done": null,
             "version": "2.0.1", "generation": 1, "entry": "nasvisor-1-a.conf", "blessed": true},
            {"slot": "b", "state": "pending", "tries_left": 3, "tries_done": null,
             "version": "2.1.0", "generation": 2, "entry": "nasvisor-2-b+3.conf", "blessed": null}
        ],
        "rollback_floor": "2.0.0",
        "clock_floor": "2026-01-10T09:00:00Z",
        "pending": {"slot": "b", "version": "2.1.0", "generation": 2,
                    "installed_at": "2026-02-01T10:00:00Z"},
        "last_outcome": {"result": "installed", "at": "2026-02-01T10:00:00Z", "version": "2.1.0",
                         "slot": "b", "code": null, "reason": "installed into slot b"},
        "service": null,
        "watchdog": {"hardware": [{"device": "/dev/watchdog0", "identity": "i6300ESB timer",
                                   "state": "active", "timeout_s": 60}],
                     "service_timeout_s": 90},
        "secure_boot": "enforcing"
    }))
}

/// This host's site settings: a file on disk; `changed`: not what the
/// running daemon read (`restarting` with `--restart`).
fn settings(changed: bool, restarting: bool) -> nasvisor_api::types::HostSettingsView {
    view(json!({
        "host": "nas1", "path": "/var/lib/nasvisor/nasvisord.toml",
        "text": "[vm]\nreserved-memory-mib = 1536\n",
        "keys": ["vm.reserved-memory-mib"], "error": null,
        "running": if changed { "absent" } else { "applied" },
        "running_keys": if changed { json!([]) } else { json!(["vm.reserved-memory-mib"]) },
        "running_reason": null, "rolled_back": null, "restart_needed": changed,
        "restarting": restarting
    }))
}

impl Fake {
    fn poll_job(&self, id: &str) -> JobView {
        let n = {
            let mut polls = self.polls.lock().unwrap();
            let n = polls.entry(id.to_string()).or_default();
            *n += 1;
            *n
        };
        match (id, n) {
            ("jfail", 1) => job(id, "install", "running", 0.3, Some("installing packages")),
            ("jfail", _) => {
                let mut j = job(id, "install", "failed", 0.3, Some("installing packages"));
                j.error = Some("disk full".into());
                j.finished_at = Some("2026-01-01T00:01:00Z".into());
                j
            }
            (_, 1) => job(id, "install", "queued", 0.0, None),
            (_, 2) => job(id, "install", "running", 0.5, Some("copying image")),
            (_, _) => {
                let mut j = job(id, "install", "succeeded", 1.0, Some("done"));
                j.finished_at = Some("2026-01-01T00:01:00Z".into());
                j
            }
        }
    }
}

impl Fake {
    /// The canned answer of `action` (recorded).
    async fn handle_as(&self, action: Action) -> Result<Answer, CoreError> {
        self.calls.lock().unwrap().push(action.clone());
        Ok(match action {
            Action::GetHost => host().into_answer(),
            Action::GetFirmware => firmware().into_answer(),
            Action::RebootHost { force: false, .. } => view::<nasvisor_api::types::HostRebootView>(json!({
                "host": "nas1", "command": ["systemctl", "reboot"], "delay_ms": 1000,
                "message": "host nas1 reboots: systemctl reboot runs in 1000 ms",
                "stopping": [], "job": null}))
            .into_answer(),
            Action::RebootHost { force: true, .. } => view::<nasvisor_api::types::HostRebootView>(json!({
                "host": "nas1", "command": ["systemctl", "reboot"], "delay_ms": 1000,
                "message": "host nas1 reboots once VMs vm1 are shut down (each forced off after 30 s): job j9; they start again when nasvisord is back",
                "stopping": ["vm1"], "job": "j9"}))
            .into_answer(),
            Action::GetHostSettings => settings(false, false).into_answer(),
            Action::ReplaceHostSettings { restart, .. } | Action::ClearHostSettings { restart } => {
                settings(true, restart).into_answer()
            }
            Action::GetClusterUpdate => rollout("failed").into_answer(),
            Action::ResumeClusterUpdate => rollout("running").into_answer(),
            Action::AbortClusterUpdate => rollout("aborted").into_answer(),
            Action::ListVms => vec![vm("vm1"), vm("web-server-2")].into_answer(),
            Action::GetVm { id } if id == "missing" => {
                return Err(CoreError::NotFound {
                    what: format!("vm {id}"),
                })
            }
            Action::GetVm { id } if id == "bad" => {
                return Err(CoreError::Invalid {
                    field: "host".into(),
                    reason: "no such host".into(),
                })
            }
            Action::GetVm { id } | Action::UpdateVm { id, .. } | Action::RecoverVm { id, .. } => {
                vm(&id).into_answer()
            }
            Action::CreateVm(c) => {
                let mut v = vm(&c.name);
                if let Some(img) = &c.image {
                    v.image = Some(img.clone());
                    v.install_job = Some("j-install".into());
                    v.state = VmState::Installing;
                }
                v.into_answer()
            }
            Action::DeleteVm { id, .. } => vm(&id).into_answer(),
            Action::VmPower { id, op } => {
                let mut v = vm(&id);
                v.state = match op {
                    PowerOp::Start { .. } | PowerOp::Resume {} | PowerOp::Reboot {} => {
                        VmState::Running
                    }
                    PowerOp::Pause {} => VmState::Paused,
                    PowerOp::Shutdown { .. } => VmState::Stopping,
                    PowerOp::ForceOff {} => VmState::Stopped,
                };
                v.into_answer()
            }
            Action::ListPools => view::<Vec<PoolView>>(
                json!([{"name": "p1", "path": "/srv/p1", "host": "nas1", "shared": false,
                        "capacity_mib": 100, "free_mib": 50}]),
            )
            .into_answer(),
            Action::CreatePool(p) => view::<PoolView>(
                json!({"name": p.name, "path": p.path, "host": (!p.shared).then_some("nas1"),
                       "shared": p.shared, "capacity_mib": 100, "free_mib": 100}),
            )
            .into_answer(),
            Action::ListVolumes { pool } => vec![volume(&pool, "v1", 10)].into_answer(),
            Action::CreateVolume { pool, volume: v } => {
                volume(&pool, &v.name, v.size_mib).into_answer()
            }
            Action::ResizeVolume {
                pool,
                volume: v,
                size_mib,
            } => volume(&pool, &v, size_mib).into_answer(),
            Action::CloneVolume { pool, name, .. } => volume(&pool, &name, 10).into_answer(),
            Action::ImportVolume { .. } => {
                job("jimp", "import_volume", "queued", 0.0, None).into_answer()
            }
            Action::SnapshotVolume { pool, volume, name }
            | Action::RevertSnapshot { pool, volume, name } => {
                snapshot(&pool, &volume, &name).into_answer()
            }
            Action::ListSnapshots { pool, volume } => {
                vec![snapshot(&pool, &volume, "s1")].into_answer()
            }
            Action::ListImages => vec![image("debian-12")].into_answer(),
            Action::AddImage(_) => job("jimg", "add_image", "queued", 0.0, None).into_answer(),
            Action::ListVswitches => view::<Vec<VswitchView>>(
                json!([{"name": "sw0", "uplink": "eth0", "vlan": null}]),
            )
            .into_answer(),
            Action::CreateVswitch(s) => view::<VswitchView>(
                json!({"name": s.name, "uplink": s.uplink, "vlan": s.vlan}),
            )
            .into_answer(),
            Action::ListJobs => {
                vec![job("j1", "start", "running", 0.25, Some("booting"))].into_answer()
            }
            Action::GetJob { id } => self.poll_job(&id).into_answer(),
            Action::CancelJob { id } => job(&id, "start", "cancelled", 0.25, None).into_answer(),
            Action::ListPlugins => view::<Vec<PluginView>>(json!([{"name": "evil", "world": "scheduler",
                "version": "0.1.0", "vendor": "acme", "state": "active",
                "consecutive_failures": 0, "decisions": 4, "failures": 0, "fallbacks": 0,
                "last_failure": null,
                "hosts": [
                    {"host": "nas1", "world": "scheduler", "plugin": "evil@0.1.0",
                     "state": "active", "consecutive_failures": 0, "decisions": 4,
                     "failures": 0, "fallbacks": 0, "last_failure": null,
                     "updated_at": "2026-01-01T00:00:00Z"},
                    {"host": "nas2", "world": "scheduler", "plugin": "evil@0.1.0",
                     "state": "quarantined", "consecutive_failures": 3, "decisions": 1,
                     "failures": 3, "fallbacks": 5,
                     "last_failure": "trap: unreachable code reached",
                     "updated_at": "2026-01-01T00:00:00Z"}]}]))
            .into_answer(),
            Action::ListEvents { since, limit } => {
                let from = since.unwrap_or(0) + 1;
                let to = (from + u64::from(limit)).min(4);
                (from..to).map(event).collect::<Vec<_>>().into_answer()
            }
            Action::GetCluster | Action::CreateCluster(_) => view::<ClusterView>(json!({
                "clustered": true, "cluster_id": "c1", "ca_fingerprint": "AA:BB", "max_members": 5,
                "this_node": 1, "address": "192.0.2.1:8444", "leader": 1,
                "members": [{"node_id": 1, "addr": "192.0.2.1:8444", "status": "member", "voter": true, "key": null}]}))
            .into_answer(),
            Action::IssueJoinToken(_) => view::<JoinTokenView>(
                json!({"token": "nvjt1.secret", "expires_at": "2026-01-01T01:00:00Z"}),
            )
            .into_answer(),
            Action::RemoveMember { .. } => Answer::Empty,
            Action::JoinCluster(j) => view::<ClusterView>(json!({
                "clustered": true, "cluster_id": "c1", "ca_fingerprint": "AA:BB", "max_members": 7,
                "this_node": 2, "address": "192.0.2.2:8444", "leader": 1,
                "members": [{"node_id": 1, "addr": j.address, "status": "member", "voter": true, "key": null},
                            {"node_id": 2, "addr": "192.0.2.2:8444", "status": "member", "voter": true, "key": null}]}))
            .into_answer(),
            Action::ListHosts => vec![host()].into_answer(),
            Action::SetCordon { host: h, cordoned } => {
                let mut v = host();
                v.id = h;
                v.cordoned = cordoned;
                v.into_answer()
            }
            Action::SetMaintenance {
                host: h,
                maintenance,
            } => {
                let mut v = host();
                v.id = h;
                if let Some(m) = maintenance {
                    v.health = HostHealth::Maintenance;
                    v.health_reasons =
                        vec![format!("in maintenance: {}", m.reason.unwrap_or_default())];
                }
                v.into_answer()
            }
            Action::InstallPlugin(_) => view::<PluginView>(json!({"name": "acme-scheduler",
                "world": "scheduler", "version": "1.0.0", "vendor": "acme", "state": "active",
                "consecutive_failures": 0, "decisions": 0, "failures": 0, "fallbacks": 0,
                "last_failure": null, "hosts": []}))
            .into_answer(),
            Action::UninstallPlugin { .. } => Answer::Empty,
            Action::ResetPlugin { world } if world == "sha" => view::<PluginResetView>(json!({
                "world": world, "quarantined_on": [],
                "message": "nothing to reset: no plugin is loaded for the sha world"}))
            .into_answer(),
            Action::ResetPlugin { world } => view::<PluginResetView>(json!({"world": world,
                "quarantined_on": ["nas2"],
                "message": format!("quarantine of the {world} plugin (evil@0.1.0) lifted on nas2")}))
            .into_answer(),
            // The fake is every host: the request is answered as such (and
            // recorded once, as it came).
            Action::OnHost { request, .. } => {
                let answer = Box::pin(self.handle_as(*request)).await;
                self.calls.lock().unwrap().pop();
                return answer;
            }
            Action::EvacuateHost { .. } | Action::MigrateVm { .. } => {
                let mut j = job("j-move", "migrate", "succeeded", 1.0, Some("moved"));
                j.finished_at = Some("2026-01-01T00:00:01Z".into());
                j.into_answer()
            }
            Action::ConsoleInput { data, .. } => {
                let _ = self.echo().send(data);
                Answer::Empty
            }
            Action::DeleteVolume { .. }
            | Action::DeleteImage { .. }
            | Action::DeleteVswitch { .. }
            | Action::DeleteSnapshot { .. }
            | Action::DeletePool { .. } => Answer::Empty,
            Action::Logout
            | Action::ChangePassword(_)
            | Action::DeleteUser { .. }
            | Action::RevokeToken { .. } => Answer::Empty,
            Action::Whoami => strict::<CallerView>(&json!({"user": "admin", "role": "admin",
                "via": "token", "credential": "0123456789abcdef", "expires_at": null,
                "csrf_token": null}))
            .unwrap()
            .into_answer(),
            Action::ListUsers => vec![user_view("alice", "operator")].into_answer(),
            Action::CreateUser(u) => user_view(&u.name, u.role.as_str()).into_answer(),
            Action::UpdateUser { name, update } => {
                let mut u = user_view(&name, update.role.map_or("operator", |r| r.as_str()));
                u.disabled = update.disabled.unwrap_or(false);
                u.into_answer()
            }
            Action::ListTokens => vec![token_view("backup")].into_answer(),
            Action::CreateToken(t) => strict::<NewTokenView>(&json!({"token": "nvt_new-secret",
                "details": serde_json::to_value(token_view(&t.name)).unwrap()}))
            .unwrap()
            .into_answer(),
            Action::ListDecisions { .. } => Vec::<nasvisor_api_types::DecisionView>::new().into_answer(),
            Action::ListAudit { since, .. } => {
                let all: Vec<AuditView> = (1..=3)
                    .map(|seq| strict::<AuditView>(&json!({"seq": seq, "time": "2026-01-01T00:00:00Z",
                        "user": "alice", "role": "operator", "credential": "alice-id",
                        "address": "127.0.0.1", "host": "nas1", "operation": "vmPower",
                        "request": "POST /api/v1/vms/vm1/power", "status": 202, "result": "ok"}))
                    .unwrap())
                    .filter(|a| since.is_none_or(|s| a.seq > s))
                    .collect();
                all.into_answer()
            }
        })
    }
}

#[async_trait::async_trait]
impl Core for Fake {
    fn metrics(&self) -> nasvisor_metrics::State {
        nasvisor_metrics::State::default()
    }

    fn authenticate(&self, credential: Credential<'_>) -> Result<Caller, CoreError> {
        let secret = match credential {
            Credential::Bearer(s) | Credential::Cookie(s) => s,
        };
        let (user, role) = match secret {
            TEST_TOKEN => ("admin", Role::Admin),
            FAKE_SESSION => ("alice", Role::Operator),
            "nvt_new-secret" => ("alice", Role::Operator),
            _ => {
                return Err(CoreError::Unauthenticated {
                    reason: "invalid token".into(),
                })
            }
        };
        Ok(Caller {
            user: user.into(),
            role,
            via: if secret == FAKE_SESSION {
                CredentialKind::Session
            } else {
                CredentialKind::Token
            },
            credential: format!("{user}-id"),
            expires_at: None,
            csrf: None,
        })
    }

    async fn login(
        &self,
        login: Login,
        _address: std::net::IpAddr,
    ) -> Result<SessionView, CoreError> {
        self.logins.lock().unwrap().push(login.user.clone());
        if login.user != "alice" || login.password != "correct horse" {
            return Err(CoreError::Unauthenticated {
                reason: "wrong user name or password".into(),
            });
        }
        Ok(SessionView {
            token: FAKE_SESSION.into(),
            user: "alice".into(),
            role: Role::Operator,
            expires_at: "2026-01-01T08:00:00Z".into(),
            idle_timeout_s: 3600,
            csrf_token: "csrf".into(),
        })
    }

    async fn audit(&self, _entry: AuditEntry) {}

    async fn handle(&self, _request: &Request, action: Action) -> Result<Answer, CoreError> {
        self.handle_as(action).await
    }

    async fn console(&self, id: String, follow: bool, tail: u64) -> Result<ByteStream, CoreError> {
        self.consoles
            .lock()
            .unwrap()
            .push((id.clone(), follow, tail));
        if id == "missing" {
            return Err(CoreError::NotFound {
                what: format!("vm {id}"),
            });
        }
        let mut echo = self.echo().subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
        tokio::spawn(async move {
            for chunk in ["boot: ", "history line 1\n", "history line 2\n"] {
                let _ = tx.send(Ok(Bytes::from(chunk))).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !follow {
                return;
            }
            let _ = tx.send(Ok(Bytes::from("live 1\n"))).await;
            let end = tokio::time::sleep(Duration::from_secs(10));
            tokio::pin!(end);
            loop {
                tokio::select! {
                    () = &mut end => return,
                    got = echo.recv() => match got {
                        Ok(line) => {
                            if tx.send(Ok(Bytes::from(format!("echo: {line}")))).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                }
            }
        });
        Ok(Box::pin(Channel(rx)))
    }

    async fn upload_image(
        &self,
        upload: ImageUpload,
        body: ByteStream,
    ) -> Result<Answer, CoreError> {
        let (n, sha) = read_body(body).await?;
        let name = upload.name.clone();
        self.uploads.lock().unwrap().push((upload, n, sha));
        let mut j = job("jup", "upload_image", "queued", 0.0, None);
        j.target = Some(format!("image/{name}"));
        Ok(j.into_answer())
    }

    async fn install_firmware(&self, body: ByteStream) -> Result<Answer, CoreError> {
        let got = read_body(body).await?;
        self.firmware_uploads.lock().unwrap().push(got);
        let mut j = job("jfw", "firmware-install", "queued", 0.0, None);
        j.target = Some("host/h1".into());
        Ok(j.into_answer())
    }

    async fn start_cluster_update(
        &self,
        by: String,
        move_back: bool,
        body: ByteStream,
    ) -> Result<Answer, CoreError> {
        let (n, sha) = read_body(body).await?;
        self.update_uploads
            .lock()
            .unwrap()
            .push((n, sha, move_back, by));
        Ok(rollout("running").into_answer())
    }
}

/// An upload's body, read whole: (bytes, SHA-256 hex).
async fn read_body(mut body: ByteStream) -> Result<(u64, String), CoreError> {
    let mut hash = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(body.as_mut(), cx)).await
    {
        let chunk = chunk.map_err(|e| CoreError::Internal {
            reason: e.to_string(),
        })?;
        n += chunk.len() as u64;
        hash.update(&chunk);
    }
    Ok((n, hex::encode(hash.finalize())))
}

struct Channel(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl futures_core::Stream for Channel {
    type Item = std::io::Result<Bytes>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

// ---------------------------------------------------------------- harness

struct Harness {
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    fingerprint: String,
    token: String,
    core: Arc<Fake>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Harness {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let core = Arc::new(Fake::default());
        let settings = ServerSettings::new("127.0.0.1:0".parse().unwrap(), dir.path());
        let server = rt
            .block_on(Server::bind(settings, core.clone()))
            .expect("bind");
        let addr = server.local_addr().unwrap();
        let fingerprint = server.tls().fingerprint.clone();
        let token = TEST_TOKEN.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Harness {
            _rt: rt,
            dir,
            addr,
            fingerprint,
            token,
            core,
            stop: Some(tx),
        }
    }

    fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("tls/cert.pem")
    }

    /// The CLI's config file of this test (absent until a remote is added).
    fn config(&self) -> PathBuf {
        self.dir.path().join("cli/config.toml")
    }

    /// `nasvisor` with a clean environment, no options, and its config
    /// file at [`Harness::config`] (never the user's).
    fn bare(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nasvisor"));
        for v in [
            "NASVISOR_ENDPOINT",
            "NASVISOR_TOKEN",
            "NASVISOR_TOKEN_FILE",
            "NASVISOR_CA_CERT",
            "NASVISOR_FINGERPRINT",
            "NASVISOR_DATA_DIR",
            "NASVISOR_LOG",
            "NASVISOR_REMOTE",
            "NASVISOR_OUTPUT",
            "XDG_CONFIG_HOME",
        ] {
            c.env_remove(v);
        }
        c.env("NASVISOR_CONFIG", self.config());
        c.stdin(Stdio::null());
        c
    }

    /// `nasvisor` set up to reach the test server (endpoint, token in
    /// NASVISOR_TOKEN, and the certificate found through --data-dir, the
    /// default trust).
    fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with_token(&self.token, args)
    }

    /// [`Harness::cmd`] with another token.
    fn cmd_with_token(&self, token: &str, args: &[&str]) -> Command {
        let mut c = self.bare();
        c.env("NASVISOR_TOKEN", token)
            .args(["--endpoint", &self.endpoint()])
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and expects success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "nasvisor {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit code 1; stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "nasvisor {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "nasvisor did not end within {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

// ---------------------------------------------------------------- tests

#[test]
fn vm_create_sends_exactly_the_request_given_on_the_command_line() {
    let h = Harness::start();
    let keys = tempfile::tempdir().unwrap();
    let keyfile = write(
        keys.path(),
        "keys.pub",
        "# team keys\nssh-ed25519 AAAAC3Nz alice@x\n\necdsa-sha2-nistp256 AAAAE2V bob@y\n",
    );
    let keyarg = format!("@{}", keyfile.display());
    let out = h.ok(&[
        "vm",
        "create",
        "web1",
        "--vcpus",
        "2",
        "--memory",
        "1024",
        "--description",
        "front end",
        "--disk",
        "p1:10240",
        "--disk",
        "p2:volume=data",
        "--nic",
        "sw0",
        "--nic",
        "sw1,mac=52:54:00:aa:bb:cc,model=e1000",
        "--image",
        "debian-12",
        "--firmware",
        "uefi",
        "--autostart",
        "--hostname",
        "web1.example.org",
        "--user",
        "admin",
        "--ssh-key",
        "ssh-rsa AAAAB3Nza admin@z",
        "--ssh-key",
        &keyarg,
        "--password-hash",
        "$6$salt$hash",
        "--sudo",
        "--package",
        "nginx",
        "--package",
        "curl",
        "--ip",
        "192.0.2.10/24",
        "--gateway",
        "192.0.2.1",
        "--dns",
        "192.0.2.53",
        "--dns",
        "2001:db8::53",
        "--disk-size",
        "20",
        "--pool",
        "fast",
        "--timezone",
        "Europe/Berlin",
        "--keep-disks-on-failure",
    ]);
    assert!(out.contains("vm web1 created"), "{out}");
    assert!(out.contains("install job j-install"), "{out}");
    let expected = Action::CreateVm(VmCreate {
        name: "web1".into(),
        vcpus: 2,
        memory_mib: 1024,
        description: Some("front end".into()),
        disks: vec![
            DiskSpec {
                pool: "p1".into(),
                size_mib: Some(10240),
                volume: None,
            },
            DiskSpec {
                pool: "p2".into(),
                size_mib: None,
                volume: Some("data".into()),
            },
        ],
        nics: vec![
            NicSpec {
                vswitch: "sw0".into(),
                mac: None,
                model: None,
            },
            NicSpec {
                vswitch: "sw1".into(),
                mac: Some("52:54:00:aa:bb:cc".into()),
                model: Some(NicModel::E1000),
            },
        ],
        image: Some("debian-12".into()),
        autostart: true,
        ha: false,
        firmware: FirmwareKind::Uefi,
        install: Some(InstallSpec {
            hostname: Some("web1.example.org".into()),
            users: vec![InstallUser {
                name: "admin".into(),
                ssh_authorized_keys: vec![
                    "ssh-rsa AAAAB3Nza admin@z".into(),
                    "ssh-ed25519 AAAAC3Nz alice@x".into(),
                    "ecdsa-sha2-nistp256 AAAAE2V bob@y".into(),
                ],
                password_hash: Some("$6$salt$hash".into()),
                sudo: true,
                groups: vec![],
                shell: None,
            }],
            packages: vec!["nginx".into(), "curl".into()],
            network: vec![InstallNetwork {
                dhcp4: false,
                addresses: vec!["192.0.2.10/24".into()],
                gateway4: Some("192.0.2.1".into()),
                nameservers: vec!["192.0.2.53".into(), "2001:db8::53".into()],
            }],
            disk_size_gib: Some(20),
            timezone: Some("Europe/Berlin".into()),
            pool: Some("fast".into()),
            keep_disks_on_failure: true,
        }),
        host: None,
    });
    assert_eq!(h.core.take(), vec![expected]);

    // The smallest VM: nothing but what was given.
    h.ok(&["vm", "create", "tiny", "--vcpus", "1", "--memory", "64"]);
    assert_eq!(
        h.core.take(),
        vec![Action::CreateVm(VmCreate {
            name: "tiny".into(),
            vcpus: 1,
            memory_mib: 64,
            description: None,
            disks: vec![],
            nics: vec![],
            image: None,
            autostart: false,
            ha: false,
            firmware: FirmwareKind::Bios,
            install: None,
            host: None,
        })]
    );

    // Only --dns: DHCP with those name servers.
    h.ok(&[
        "vm",
        "create",
        "d",
        "--vcpus",
        "1",
        "--memory",
        "64",
        "--nic",
        "sw0",
        "--image",
        "img",
        "--dns",
        "192.0.2.53",
    ]);
    let calls = h.core.take();
    let Action::CreateVm(c) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        c.install.as_ref().unwrap().network,
        vec![InstallNetwork {
            dhcp4: true,
            addresses: vec![],
            gateway4: None,
            nameservers: vec!["192.0.2.53".into()],
        }]
    );
}

#[test]
fn vm_create_refuses_inconsistent_options_locally() {
    let h = Harness::start();
    let e = h.fails(&[
        "vm",
        "create",
        "a",
        "--vcpus",
        "1",
        "--memory",
        "64",
        "--hostname",
        "x",
    ]);
    assert!(e.contains("--hostname") && e.contains("--image"), "{e}");
    let e = h.fails(&[
        "vm", "create", "a", "--vcpus", "1", "--memory", "64", "--image", "i", "--sudo",
    ]);
    assert!(e.contains("--user"), "{e}");
    let e = h.fails(&[
        "vm", "create", "a", "--vcpus", "1", "--memory", "64", "--disk", "p1",
    ]);
    assert!(e.contains("--disk \"p1\""), "{e}");
    let e = h.fails(&[
        "vm",
        "create",
        "a",
        "--vcpus",
        "1",
        "--memory",
        "64",
        "--nic",
        "sw0,speed=10",
    ]);
    assert!(e.contains("--nic") && e.contains("speed=10"), "{e}");
    let e = h.fails(&[
        "vm",
        "create",
        "a",
        "--vcpus",
        "1",
        "--memory",
        "64",
        "--image",
        "i",
        "--user",
        "u",
        "--ssh-key",
        "@/nonexistent/keys.pub",
    ]);
    assert!(e.contains("/nonexistent/keys.pub"), "{e}");
    assert!(h.core.take().is_empty());
    // A clap usage error is exit 2.
    let out = h.run(&["vm", "create", "a", "--vcpus", "x", "--memory", "64"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn api_errors_print_field_reason_and_status() {
    let h = Harness::start();
    let e = h.fails(&["vm", "show", "bad"]);
    assert_eq!(e, "error: host: no such host (HTTP 422)\n");
    let e = h.fails(&["vm", "show", "missing"]);
    assert_eq!(e, "error: vm missing not found (HTTP 404)\n");
    // The API's own validation: the field path of the install option.
    let e = h.fails(&[
        "vm", "create", "a", "--vcpus", "1", "--memory", "64", "--image", "i", "--user", "Root",
    ]);
    assert!(
        e.starts_with("error: install.users[0].name: ") && e.ends_with("(HTTP 400)\n"),
        "{e}"
    );
    let e = h.fails(&["vm", "create", "a/b", "--vcpus", "1", "--memory", "64"]);
    assert!(
        e.starts_with("error: name: ") && e.contains("(HTTP 400)"),
        "{e}"
    );
    // A name that is not a name is refused by the API as a path parameter.
    let e = h.fails(&["vm", "show", "../x"]);
    assert!(
        e.starts_with("error: id: ") && e.contains("(HTTP 400)"),
        "{e}"
    );
    let e = h.fails(&["vm", "edit", "vm1"]);
    assert!(e.contains("nothing to change"), "{e}");
    assert!(h
        .core
        .take()
        .iter()
        .all(|a| matches!(a, Action::GetVm { .. })));
}

#[test]
fn tables_and_json_output() {
    let h = Harness::start();
    let out = h.ok(&["vm", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ID  "), "{out}");
    for col in [
        "NAME",
        "STATE",
        "HOST",
        "VCPUS",
        "MEMORY_MIB",
        "FIRMWARE",
        "IMAGE",
        "AUTOSTART",
    ] {
        assert!(lines[0].contains(col), "{col}: {out}");
    }
    let cols: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "web-server-2",
            "web-server-2",
            "stopped",
            "-",
            "2",
            "2048",
            "bios",
            "-",
            "no"
        ]
    );
    // Columns are aligned: every row's STATE starts where the header's does.
    let at = lines[0].find("STATE").unwrap();
    assert_eq!(&lines[1][at..at + 7], "stopped");
    assert_eq!(&lines[2][at..at + 7], "stopped");

    let out = h.ok(&["--json", "vm", "list"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!([vm("vm1"), vm("web-server-2")]));
    let out = h.ok(&["vm", "list", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), v);

    let out = h.ok(&["host"]);
    assert!(
        out.contains("nas1") && out.contains("16.0 GiB (8.0 GiB free)"),
        "{out}"
    );
    assert!(out.contains("tcg (probe guest hung under KVM)"), "{out}");
    assert!(out.contains("10.0.2"), "{out}");
    let out = h.ok(&["host", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!(host()));

    let out = h.ok(&["host", "list"]);
    assert!(
        out.starts_with("ID  NODE  ADDRESS         ONLINE  CORDONED"),
        "{out}"
    );
    assert!(
        out.contains("h1  1     192.0.2.1:8444  yes     no "),
        "{out}"
    );

    let out = h.ok(&["vm", "show", "vm1"]);
    assert!(
        out.contains("state:") && out.contains("52:54:00:12:34:56"),
        "{out}"
    );
    assert!(out.contains("memory:       2.0 GiB"), "{out}");

    let out = h.ok(&["pool", "list"]);
    assert!(
        out.starts_with(
            "NAME  HOST  PATH     CAPACITY_MIB  FREE_MIB\np1    nas1  /srv/p1  100           50\n"
        ),
        "{out}"
    );
    let out = h.ok(&["image", "list"]);
    assert!(
        out.contains("debian-12") && out.contains("debian12"),
        "{out}"
    );
    let out = h.ok(&["job", "list"]);
    assert!(out.contains("25%") && out.contains("booting"), "{out}");
    let out = h.ok(&["event", "list"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains("event number 3"), "{out}");
    // One row per world and host: quarantine is per host.
    let out = h.ok(&["plugin", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for col in ["WORLD", "HOST", "STATE", "FAILS_IN_ROW", "LAST_FAILURE"] {
        assert!(lines[0].contains(col), "{col}: {out}");
    }
    assert!(
        lines[1].contains("nas1") && lines[1].contains("active"),
        "{out}"
    );
    assert!(
        lines[2].contains("nas2")
            && lines[2].contains("quarantined")
            && lines[2].contains("trap: unreachable code reached"),
        "{out}"
    );
    let out = h.ok(&["plugin", "reset", "scheduler"]);
    assert_eq!(
        out,
        "quarantine of the scheduler plugin (evil@0.1.0) lifted on nas2\n"
    );
    let out = h.ok(&["plugin", "reset", "sha"]);
    assert!(out.starts_with("nothing to reset"), "{out}");
    let out = h.ok(&["vswitch", "list"]);
    assert!(out.contains("sw0") && out.contains("eth0"), "{out}");
    let out = h.ok(&["snapshot", "list", "p1", "v1"]);
    assert!(out.contains("s1"), "{out}");
    let out = h.ok(&["volume", "list", "p1"]);
    assert!(out.contains("v1"), "{out}");
    // A 204 prints nothing in --json mode and a line otherwise.
    assert_eq!(h.ok(&["--json", "pool", "delete", "p9"]), "");
    assert_eq!(h.ok(&["pool", "delete", "p9"]), "pool p9 deleted\n");
}

#[test]
fn every_command_sends_the_right_action() {
    let h = Harness::start();
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(&site, "[vm]\nreserved-memory-mib = 1536\n").unwrap();
    let site = site.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Action)> = vec![
        (vec!["host"], Action::GetHost),
        (vec!["host", "settings"], Action::GetHostSettings),
        (
            vec!["host", "settings", "show", "--host", "nas2"],
            Action::OnHost {
                host: "nas2".into(),
                request: Box::new(Action::GetHostSettings),
            },
        ),
        (
            vec!["host", "settings", "set", site, "--restart"],
            Action::ReplaceHostSettings {
                text: "[vm]\nreserved-memory-mib = 1536\n".into(),
                restart: true,
            },
        ),
        (
            vec!["host", "settings", "clear"],
            Action::ClearHostSettings { restart: false },
        ),
        (vec!["firmware", "status"], Action::GetFirmware),
        (
            vec!["firmware", "reboot"],
            Action::RebootHost {
                force: false,
                shutdown_timeout_s: None,
            },
        ),
        (
            vec!["firmware", "reboot", "--force", "--shutdown-timeout", "30"],
            Action::RebootHost {
                force: true,
                shutdown_timeout_s: Some(30),
            },
        ),
        (
            vec!["cluster", "update", "status"],
            Action::GetClusterUpdate,
        ),
        (
            vec!["cluster", "update", "resume"],
            Action::ResumeClusterUpdate,
        ),
        (
            vec!["cluster", "update", "abort"],
            Action::AbortClusterUpdate,
        ),
        (
            vec!["vm", "start", "vm1"],
            Action::VmPower {
                id: "vm1".into(),
                op: PowerOp::Start { host: None },
            },
        ),
        (
            vec!["vm", "start", "vm1", "--host", "nas2"],
            Action::VmPower {
                id: "vm1".into(),
                op: PowerOp::Start {
                    host: Some("nas2".into()),
                },
            },
        ),
        (
            vec!["vm", "stop", "vm1"],
            Action::VmPower {
                id: "vm1".into(),
                op: PowerOp::Shutdown { timeout_s: 120 },
            },
        ),
        (
            vec!["vm", "stop", "vm1", "--timeout", "30"],
            Action::VmPower {
                id: "vm1".into(),
                op: PowerOp::Shutdown { timeout_s: 30 },
            },
        ),
        (
            vec!["vm", "force-off", "vm1"],
            Action::VmPower {
                id: "vm1".into(),
                op: PowerOp::ForceOff {},
            },
        ),
        (
            vec!["vm", "reboot", "vm1"],
            Action::VmPower {
                id: "vm1".into(),
                op: PowerOp::Reboot {},
            },
        ),
        (
            vec!["vm", "pause", "vm1"],
            Action::VmPower {
                id: "vm1".into(),
                op: PowerOp::Pause {},
            },
        ),
        (
            vec!["vm", "resume", "vm1"],
            Action::VmPower {
                id: "vm1".into(),
                op: PowerOp::Resume {},
            },
        ),
        (
            vec!["vm", "delete", "vm1"],
            Action::DeleteVm {
                id: "vm1".into(),
                delete_disks: false,
                force: false,
            },
        ),
        (
            vec!["vm", "delete", "vm1", "--delete-disks"],
            Action::DeleteVm {
                id: "vm1".into(),
                delete_disks: true,
                force: false,
            },
        ),
        (
            vec!["vm", "delete", "vm1", "--force"],
            Action::DeleteVm {
                id: "vm1".into(),
                delete_disks: false,
                force: true,
            },
        ),
        (
            vec!["vm", "recover", "vm1"],
            Action::RecoverVm {
                id: "vm1".into(),
                recover: VmRecover::default(),
            },
        ),
        (
            vec![
                "vm",
                "recover",
                "vm1",
                "--host",
                "nas3",
                "--confirm-host-down",
            ],
            Action::RecoverVm {
                id: "vm1".into(),
                recover: VmRecover {
                    host: Some("nas3".into()),
                    confirm_host_down: true,
                },
            },
        ),
        (
            vec![
                "vm",
                "edit",
                "vm1",
                "--name",
                "vm2",
                "--vcpus",
                "4",
                "--memory",
                "4096",
                "--description",
                "d",
                "--autostart",
                "false",
            ],
            Action::UpdateVm {
                id: "vm1".into(),
                update: VmUpdate {
                    name: Some("vm2".into()),
                    vcpus: Some(4),
                    memory_mib: Some(4096),
                    description: Some("d".into()),
                    autostart: Some(false),
                    ha: None,
                },
            },
        ),
        (
            vec!["vm", "edit", "vm1", "--ha", "on"],
            Action::UpdateVm {
                id: "vm1".into(),
                update: VmUpdate {
                    ha: Some(true),
                    ..Default::default()
                },
            },
        ),
        (
            vec!["vm", "console-send", "vm1", "root"],
            Action::ConsoleInput {
                id: "vm1".into(),
                data: "root".into(),
            },
        ),
        (
            vec!["vm", "console-send", "vm1", "-n", "ls -l"],
            Action::ConsoleInput {
                id: "vm1".into(),
                data: "ls -l\n".into(),
            },
        ),
        (
            vec!["pool", "create", "p2", "/srv/p2"],
            Action::CreatePool(PoolCreate {
                name: "p2".into(),
                path: "/srv/p2".into(),
                shared: false,
            }),
        ),
        (
            vec!["pool", "create", "nfs", "/mnt/nfs", "--shared"],
            Action::CreatePool(PoolCreate {
                name: "nfs".into(),
                path: "/mnt/nfs".into(),
                shared: true,
            }),
        ),
        (
            vec!["pool", "delete", "p2"],
            Action::DeletePool { name: "p2".into() },
        ),
        (vec!["pool", "list"], Action::ListPools),
        (
            vec!["volume", "create", "p1", "v2", "2048", "--format", "raw"],
            Action::CreateVolume {
                pool: "p1".into(),
                volume: VolumeCreate {
                    name: "v2".into(),
                    size_mib: 2048,
                    format: Some(VolumeFormat::Raw),
                },
            },
        ),
        (
            vec!["volume", "create", "p1", "v3", "100"],
            Action::CreateVolume {
                pool: "p1".into(),
                volume: VolumeCreate {
                    name: "v3".into(),
                    size_mib: 100,
                    format: None,
                },
            },
        ),
        (
            vec!["volume", "delete", "p1", "v2"],
            Action::DeleteVolume {
                pool: "p1".into(),
                volume: "v2".into(),
            },
        ),
        (
            vec!["volume", "resize", "p1", "v2", "4096"],
            Action::ResizeVolume {
                pool: "p1".into(),
                volume: "v2".into(),
                size_mib: 4096,
            },
        ),
        (
            vec!["volume", "clone", "p1", "v1", "v9"],
            Action::CloneVolume {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "v9".into(),
                linked: false,
            },
        ),
        (
            vec!["volume", "clone", "p1", "v1", "v8", "--linked"],
            Action::CloneVolume {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "v8".into(),
                linked: true,
            },
        ),
        (
            vec!["volume", "import", "p1", "old", "/srv/old.vmdk"],
            Action::ImportVolume {
                pool: "p1".into(),
                name: "old".into(),
                path: "/srv/old.vmdk".into(),
            },
        ),
        (
            vec!["snapshot", "list", "p1", "v1"],
            Action::ListSnapshots {
                pool: "p1".into(),
                volume: "v1".into(),
            },
        ),
        (
            vec!["snapshot", "create", "p1", "v1", "s2"],
            Action::SnapshotVolume {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "s2".into(),
            },
        ),
        (
            vec!["snapshot", "revert", "p1", "v1", "s2"],
            Action::RevertSnapshot {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "s2".into(),
            },
        ),
        (
            vec!["snapshot", "delete", "p1", "v1", "s2"],
            Action::DeleteSnapshot {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "s2".into(),
            },
        ),
        // --host: the request is carried out on that host's pools.
        (
            vec!["volume", "create", "p1", "v4", "64", "--host", "nas2"],
            Action::OnHost {
                host: "nas2".into(),
                request: Box::new(Action::CreateVolume {
                    pool: "p1".into(),
                    volume: VolumeCreate {
                        name: "v4".into(),
                        size_mib: 64,
                        format: None,
                    },
                }),
            },
        ),
        (
            vec!["pool", "--host", "nas2", "delete", "p2"],
            Action::OnHost {
                host: "nas2".into(),
                request: Box::new(Action::DeletePool { name: "p2".into() }),
            },
        ),
        (
            vec!["snapshot", "create", "p1", "v1", "s3", "--host", "nas2"],
            Action::OnHost {
                host: "nas2".into(),
                request: Box::new(Action::SnapshotVolume {
                    pool: "p1".into(),
                    volume: "v1".into(),
                    name: "s3".into(),
                }),
            },
        ),
        (
            vec![
                "image",
                "add",
                "deb",
                "--url",
                "https://example.invalid/deb.qcow2",
            ],
            Action::AddImage(ImageAdd {
                name: "deb".into(),
                source: ImageSource::Url("https://example.invalid/deb.qcow2".into()),
                sha256: None,
                meta: ImageMetaSpec::default(),
            }),
        ),
        (
            vec![
                "image",
                "add",
                "win",
                "--path",
                "/srv/win.iso",
                "--os-family",
                "windows",
                "--os-variant",
                "win11",
                "--cloud-init",
                "false",
                "--firmware",
                "uefi",
                "--ready-marker",
                "READY",
            ],
            Action::AddImage(ImageAdd {
                name: "win".into(),
                source: ImageSource::Path("/srv/win.iso".into()),
                sha256: None,
                meta: ImageMetaSpec {
                    os_family: "windows".into(),
                    os_variant: "win11".into(),
                    cloud_init: false,
                    firmware: FirmwareKind::Uefi,
                    ready_marker: Some("READY".into()),
                },
            }),
        ),
        (
            vec![
                "image",
                "add",
                "plain",
                "--url",
                "http://192.0.2.1/plain.qcow2",
                "--sha256",
                "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            ],
            Action::AddImage(ImageAdd {
                name: "plain".into(),
                source: ImageSource::Url("http://192.0.2.1/plain.qcow2".into()),
                sha256: Some(
                    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
                ),
                meta: ImageMetaSpec::default(),
            }),
        ),
        (
            vec!["image", "delete", "deb"],
            Action::DeleteImage { name: "deb".into() },
        ),
        (
            vec![
                "vswitch", "create", "sw1", "--uplink", "eth1", "--vlan", "10",
            ],
            Action::CreateVswitch(VswitchCreate {
                name: "sw1".into(),
                uplink: Some("eth1".into()),
                vlan: Some(10),
            }),
        ),
        (
            vec!["vswitch", "create", "sw2"],
            Action::CreateVswitch(VswitchCreate {
                name: "sw2".into(),
                uplink: None,
                vlan: None,
            }),
        ),
        (
            vec!["vswitch", "delete", "sw1"],
            Action::DeleteVswitch { name: "sw1".into() },
        ),
        (
            vec!["job", "show", "j7"],
            Action::GetJob { id: "j7".into() },
        ),
        (
            vec!["job", "cancel", "j7"],
            Action::CancelJob { id: "j7".into() },
        ),
        (
            vec!["event", "list", "--since", "2", "--limit", "5"],
            Action::ListEvents {
                since: Some(2),
                limit: 5,
            },
        ),
        (
            vec!["event", "list"],
            Action::ListEvents {
                since: None,
                limit: 100,
            },
        ),
        (vec!["plugin", "list"], Action::ListPlugins),
        (
            vec![
                "plugin",
                "decisions",
                "--world",
                "scheduler",
                "--host",
                "nas2",
                "--limit",
                "5",
            ],
            Action::OnHost {
                host: "nas2".into(),
                request: Box::new(Action::ListDecisions {
                    world: Some("scheduler".into()),
                    limit: 5,
                }),
            },
        ),
        (vec!["cluster", "status"], Action::GetCluster),
        (
            vec!["cluster", "create", "--max-members", "5"],
            Action::CreateCluster(nasvisor_api::types::ClusterCreate {
                max_members: Some(5),
            }),
        ),
        (
            vec!["cluster", "join-token", "--ttl", "600"],
            Action::IssueJoinToken(nasvisor_api::types::JoinTokenCreate { ttl_s: Some(600) }),
        ),
        (
            vec!["cluster", "remove", "3"],
            Action::RemoveMember { node_id: 3 },
        ),
        (
            vec!["cluster", "join", "192.0.2.1:8444", "nvjt1.secret"],
            Action::JoinCluster(nasvisor_api::types::ClusterJoin {
                address: "192.0.2.1:8444".into(),
                token: "nvjt1.secret".into(),
            }),
        ),
        (vec!["host", "list"], Action::ListHosts),
        (
            vec!["plugin", "uninstall", "sha"],
            Action::UninstallPlugin {
                world: "sha".into(),
            },
        ),
        (
            vec!["plugin", "reset", "ha-policy"],
            Action::ResetPlugin {
                world: "ha-policy".into(),
            },
        ),
        (
            vec!["host", "cordon", "nas2"],
            Action::SetCordon {
                host: "nas2".into(),
                cordoned: true,
            },
        ),
        (
            vec!["host", "uncordon", "nas2"],
            Action::SetCordon {
                host: "nas2".into(),
                cordoned: false,
            },
        ),
        (
            vec!["host", "degrade", "nas2", "--reason", "disk swap"],
            Action::SetMaintenance {
                host: "nas2".into(),
                maintenance: Some(HostDegrade {
                    reason: Some("disk swap".into()),
                }),
            },
        ),
        (
            vec!["host", "undegrade", "nas2"],
            Action::SetMaintenance {
                host: "nas2".into(),
                maintenance: None,
            },
        ),
        (
            vec!["host", "evacuate", "nas2"],
            Action::EvacuateHost {
                host: "nas2".into(),
            },
        ),
        (
            vec![
                "vm",
                "migrate",
                "vm1",
                "--to",
                "nas2",
                "--max-downtime-ms",
                "30",
            ],
            Action::MigrateVm {
                id: "vm1".into(),
                migrate: nasvisor_api::types::VmMigrate {
                    host: "nas2".into(),
                    max_downtime_ms: Some(30),
                },
            },
        ),
    ];
    for (args, action) in cases {
        let out = h.ok(&args);
        assert_eq!(h.core.take(), vec![action], "nasvisor {args:?}: {out}");
    }
    // Power operations answer with the VM's state.
    let out = h.ok(&["vm", "start", "vm1"]);
    assert_eq!(out, "vm vm1 start: running\n");
    let out = h.ok(&["vm", "pause", "vm1"]);
    assert_eq!(out, "vm vm1 pause: paused\n");
    let out = h.ok(&["--json", "vm", "start", "vm1"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["state"],
        "running"
    );
    let out = h.ok(&["vm", "delete", "vm1", "--delete-disks"]);
    assert_eq!(out, "vm vm1 deleted with its disks\n");
}

#[test]
fn fingerprint_pinning() {
    let h = Harness::start();
    let empty = tempfile::tempdir().unwrap();
    let with = |fp: &str| {
        let mut c = h.bare();
        c.env("NASVISOR_TOKEN", &h.token)
            .args(["--endpoint", &h.endpoint(), "--fingerprint", fp])
            .arg("--data-dir")
            .arg(empty.path())
            .arg("host");
        c.output().unwrap()
    };
    // As nasvisord prints it, and as plain lower-case hex.
    let out = with(&h.fingerprint);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = h.fingerprint.replace(':', "").to_lowercase();
    assert!(with(&plain).status.success());
    // Through the environment too.
    let out = h
        .bare()
        .env("NASVISOR_ENDPOINT", h.endpoint())
        .env("NASVISOR_TOKEN", &h.token)
        .env("NASVISOR_FINGERPRINT", &h.fingerprint)
        .env("NASVISOR_DATA_DIR", empty.path())
        .arg("host")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong pin is refused, naming both fingerprints.
    let mut wrong = plain.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let out = with(&wrong);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.starts_with(&format!("error: cannot talk to {}", h.endpoint())),
        "{e}"
    );
    assert!(e.contains("does not match the pinned"), "{e}");
    assert!(e.contains(&h.fingerprint), "{e}");
    assert!(out.stdout.is_empty());
    // Not a fingerprint at all.
    let out = with("12:34");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
    // No request reached the core through a wrong pin.
    assert_eq!(
        h.core.take(),
        vec![Action::GetHost, Action::GetHost, Action::GetHost]
    );
}

#[test]
fn ca_file_trust_and_missing_trust() {
    let h = Harness::start();
    let empty = tempfile::tempdir().unwrap();
    let base = |c: &mut Command| {
        c.env("NASVISOR_TOKEN", &h.token)
            .args(["--endpoint", &h.endpoint()])
            .arg("--data-dir")
            .arg(empty.path());
    };
    let mut c = h.bare();
    base(&mut c);
    let out = c
        .arg("--ca-cert")
        .arg(h.cert())
        .arg("host")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another server's certificate is not trusted.
    let other = tempfile::tempdir().unwrap();
    nasvisor_api::tls::load_or_generate(other.path(), &Default::default()).unwrap();
    let mut c = h.bare();
    base(&mut c);
    let out = c
        .arg("--ca-cert")
        .arg(other.path().join("tls/cert.pem"))
        .arg("host")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.starts_with(&format!("error: cannot talk to {}", h.endpoint())),
        "{e}"
    );
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // A file that is not a certificate.
    let junk = write(empty.path(), "junk.pem", "hello");
    let mut c = h.bare();
    base(&mut c);
    let out = c.arg("--ca-cert").arg(&junk).arg("host").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.pem: no certificate"));
    // No trust at all: a clear message, no silent skipping.
    let mut c = h.bare();
    base(&mut c);
    let out = c.arg("host").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("--ca-cert") && e.contains("--fingerprint") && e.contains("tls/cert.pem"),
        "{e}"
    );
    // Plain HTTP is refused.
    let mut c = h.bare();
    let out = c
        .env("NASVISOR_TOKEN", &h.token)
        .args(["--endpoint", &format!("http://{}", h.addr), "host"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
    assert_eq!(h.core.take(), vec![Action::GetHost]);
}

#[test]
fn token_missing_wrong_or_from_a_file() {
    let h = Harness::start();
    let mut c = h.bare();
    let out = c
        .args(["--endpoint", &h.endpoint()])
        .arg("--data-dir")
        .arg(h.dir.path())
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.starts_with("error: no admin token"), "{e}");
    assert!(
        e.contains("NASVISOR_TOKEN") && e.contains("--token-file"),
        "{e}"
    );

    // --token still works for old scripts, with a warning: it shows the
    // token to every user of the host (ps).
    let mut c = h.bare();
    let out = c
        .args(["--endpoint", &h.endpoint(), "--token", "wrong"])
        .arg("--data-dir")
        .arg(h.dir.path())
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "warning: --token exposes the token in the process list; use a remote, \
         --token-file or NASVISOR_TOKEN\n\
         error: authorization: invalid token (HTTP 401)\n"
    );
    let mut c = h.bare();
    let out = c
        .args(["--endpoint", &h.endpoint(), &format!("--token={}", h.token)])
        .arg("--data-dir")
        .arg(h.dir.path())
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("warning: --token exposes"));
    // Not in the help: nobody should learn to use it.
    let help = h.bare().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        !help.contains("--token ") && help.contains("--token-file"),
        "{help}"
    );
    // The same wrong token from the environment: no warning.
    let out = h.cmd_with_token("wrong", &["vm", "list"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: authorization: invalid token (HTTP 401)\n"
    );

    let tok = tempfile::tempdir().unwrap();
    let file = write(tok.path(), "token", &format!("{}\n", h.token));
    let mut c = h.bare();
    let out = c
        .args(["--endpoint", &h.endpoint()])
        .arg("--token-file")
        .arg(&file)
        .arg("--data-dir")
        .arg(h.dir.path())
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The --token run and the --token-file run.
    assert_eq!(h.core.take(), vec![Action::ListVms, Action::ListVms]);
}

#[test]
fn console_streams_output_and_sends_input() {
    let h = Harness::start();
    // History only.
    let out = h.ok(&["vm", "console", "vm1"]);
    assert_eq!(out, "boot: history line 1\nhistory line 2\n");
    let out = h.ok(&["vm", "console", "vm1", "--tail", "100"]);
    assert_eq!(out, "boot: history line 1\nhistory line 2\n");
    // Follow with piped input: the lines are sent, their echo shown, and the
    // end of input ends the session.
    let mut child = h
        .cmd(&["vm", "console", "vm1", "--follow"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\nuname -a\n").unwrap();
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(8));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("boot: history line 1\nhistory line 2\n"),
        "{text}"
    );
    assert!(text.contains("live 1\n"), "{text}");
    assert!(
        text.contains("echo: hello\n") && text.contains("echo: uname -a\n"),
        "{text}"
    );
    // Ctrl-] ends the session although stdin stays open.
    let mut child = h
        .cmd(&["vm", "console", "vm1", "-f"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"last\x1d\n").unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(8));
    drop(stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        h.core
            .take()
            .into_iter()
            .filter(|a| matches!(a, Action::ConsoleInput { .. }))
            .collect::<Vec<_>>(),
        vec![
            Action::ConsoleInput {
                id: "vm1".into(),
                data: "hello\n".into()
            },
            Action::ConsoleInput {
                id: "vm1".into(),
                data: "uname -a\n".into()
            },
            Action::ConsoleInput {
                id: "vm1".into(),
                data: "last".into()
            },
        ]
    );
    assert_eq!(
        h.core.consoles.lock().unwrap().clone(),
        vec![
            ("vm1".to_string(), false, 65536),
            ("vm1".to_string(), false, 100),
            ("vm1".to_string(), true, 65536),
            ("vm1".to_string(), true, 65536),
        ]
    );
    // Errors of the stream route are API errors.
    let e = h.fails(&["vm", "console", "missing"]);
    assert_eq!(e, "error: vm missing not found (HTTP 404)\n");
    let e = h.fails(&["vm", "console", "vm1", "--tail", "2000000"]);
    assert!(
        e.starts_with("error: tail: ") && e.contains("(HTTP 400)"),
        "{e}"
    );
    // Long input is split into the API's 4096-byte pieces.
    let long = "x".repeat(5000);
    h.ok(&["vm", "console-send", "vm1", &long]);
    let sent: Vec<usize> = h
        .core
        .take()
        .into_iter()
        .map(|a| match a {
            Action::ConsoleInput { data, .. } => data.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, vec![4096, 904]);
}

#[test]
fn image_upload_streams_the_file() {
    let h = Harness::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    // 5 MiB + a bit of varied content: more than the 1 MiB JSON limit.
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 12345u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let out = h.ok(&[
        "image",
        "add",
        "up1",
        "--upload",
        path.to_str().unwrap(),
        "--os-variant",
        "debian12",
        "--firmware",
        "uefi",
        "--cloud-init",
        "false",
        "--ready-marker",
        "READY ok&now",
    ]);
    assert!(
        out.contains("job jup (upload_image) queued for image/up1"),
        "{out}"
    );
    let uploads = h.core.uploads.lock().unwrap().clone();
    assert_eq!(uploads.len(), 1);
    let (up, n, sha) = &uploads[0];
    assert_eq!(*n, data.len() as u64);
    assert_eq!(*sha, hex::encode(Sha256::digest(&data)));
    assert_eq!(
        *up,
        ImageUpload {
            name: "up1".into(),
            meta: ImageMetaSpec {
                os_family: "linux".into(),
                os_variant: "debian12".into(),
                cloud_init: false,
                firmware: FirmwareKind::Uefi,
                ready_marker: Some("READY ok&now".into()),
            },
        }
    );
    let e = h.fails(&["image", "add", "up2", "--upload", "/nonexistent/disk.img"]);
    assert!(e.contains("/nonexistent/disk.img"), "{e}");
    // Metadata is checked with the API's rules before the file is sent.
    let e = h.fails(&[
        "image",
        "add",
        "up2",
        "--upload",
        path.to_str().unwrap(),
        "--os-family",
        "a b",
    ]);
    assert!(
        e.starts_with("error: os_family: character ' ' not allowed"),
        "{e}"
    );
    assert!(!e.contains("HTTP"), "{e}");
    // A wrong token is found before the file is sent.
    let out = h
        .cmd_with_token(
            "wrong",
            &["image", "add", "up3", "--upload", path.to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: authorization: invalid token (HTTP 401)\n"
    );
    assert_eq!(h.core.uploads.lock().unwrap().len(), 1);
}

#[test]
fn firmware_status_shows_the_slots_and_install_streams_the_bundle_as_a_job() {
    let h = Harness::start();
    let out = h.ok(&["firmware", "status"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("SLOT") && lines[0].contains("STATE"),
        "{out}"
    );
    assert!(
        lines[1].contains("booted") && lines[1].contains("2.0.1"),
        "{out}"
    );
    assert!(
        lines[2].contains("pending (3 tries left)") && lines[2].contains("nasvisor-2-b+3.conf"),
        "{out}"
    );
    assert!(out.contains("rollback floor:  2.0.0"), "{out}");
    assert!(
        out.contains("clock floor:     2026-01-10T09:00:00Z"),
        "{out}"
    );
    assert!(out.contains("2.1.0 in slot b (generation 2"), "{out}");
    assert!(
        out.contains(
            "watchdog:        i6300ESB timer (/dev/watchdog0) active, 60 s; nasvisord 90 s"
        ),
        "{out}"
    );
    assert!(out.contains("secure boot:     enforcing"), "{out}");
    let json: Value = serde_json::from_str(&h.ok(&["--json", "firmware", "status"])).unwrap();
    assert_eq!(strict::<FirmwareView>(&json).unwrap(), firmware());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("update.nvfw");
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 77u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let out = h.ok(&["firmware", "install", path.to_str().unwrap()]);
    assert!(
        out.contains("job jfw (firmware-install) queued for host/h1"),
        "{out}"
    );
    let got = h.core.firmware_uploads.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![(data.len() as u64, hex::encode(Sha256::digest(&data)))]
    );
    let e = h.fails(&["firmware", "install", "/nonexistent/update.nvfw"]);
    assert!(
        e.contains("/nonexistent/update.nvfw: not a bundle file"),
        "{e}"
    );
    assert_eq!(h.core.firmware_uploads.lock().unwrap().len(), 1);
}

#[test]
fn cluster_update_streams_the_bundle_and_shows_each_hosts_step() {
    let h = Harness::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service-2.0.2.nvfw");
    let data: Vec<u8> = (0..2 * 1024 * 1024 + 13u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let out = h.ok(&[
        "cluster",
        "update",
        path.to_str().unwrap(),
        "--no-move-back",
    ]);
    assert!(out.contains("state:      running"), "{out}");
    let rows: Vec<&str> = out.lines().collect();
    let head = rows.iter().position(|l| l.starts_with("HOST")).expect(&out);
    assert!(
        rows[head].contains("STEP") && rows[head].contains("VERSION"),
        "{out}"
    );
    assert!(
        rows[head + 1].starts_with("nas2") && rows[head + 1].contains("done"),
        "{out}"
    );
    assert!(
        rows[head + 2].starts_with("nas1") && rows[head + 2].contains("installing"),
        "{out}"
    );
    assert!(out.contains("moved from nas2: web → nas1"), "{out}");
    let got = h.core.update_uploads.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![(
            data.len() as u64,
            hex::encode(Sha256::digest(&data)),
            false,
            "admin".to_string()
        )]
    );
    // The failed update's status says where it stopped and what to do.
    let out = h.ok(&["cluster", "update", "status"]);
    assert!(out.contains("state:      failed"), "{out}");
    assert!(
        out.contains("failure:    host nas1: the update did not become healthy"),
        "{out}"
    );
    assert!(out.contains("next:       serving: nas2 on 2.0.2."), "{out}");
    let json: Value =
        serde_json::from_str(&h.ok(&["--json", "cluster", "update", "status"])).unwrap();
    assert_eq!(
        strict::<nasvisor_api::types::RolloutView>(&json).unwrap(),
        rollout("failed")
    );
    // --wait follows it until it ends, and a failed end fails the command.
    let e = h.fails(&["cluster", "update", "resume", "--wait"]);
    assert!(
        e.contains("cluster update r1 failed: host nas1: the update did not become healthy"),
        "{e}"
    );
    // No bundle, or not a file: refused before anything is sent.
    let e = h.fails(&["cluster", "update", "/nonexistent/b.nvfw"]);
    assert!(e.contains("/nonexistent/b.nvfw: not a bundle file"), "{e}");
    let o = h.run(&["cluster", "update"]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("<BUNDLE>"));
    assert_eq!(h.core.update_uploads.lock().unwrap().len(), 1);
}

#[test]
fn job_wait_shows_progress_and_ends_with_the_job() {
    let h = Harness::start();
    let started = Instant::now();
    let out = h.run(&["job", "wait", "jprog"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three polls, 250 ms apart.
    assert!(started.elapsed() >= Duration::from_millis(500));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[--------------------]   0% queued"), "{err}");
    assert!(
        err.contains("[##########----------]  50% running: copying image"),
        "{err}"
    );
    assert!(
        err.contains("[####################] 100% succeeded: done"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "job jprog (install) succeeded for vm/vm1\n"
    );

    let out = h.run(&["job", "wait", "jfail"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("30% running: installing packages"), "{err}");
    assert!(
        err.ends_with("error: job jfail failed: disk full\n"),
        "{err}"
    );

    // vm create --wait follows the install job named in the answer.
    let out = h.run(&[
        "vm",
        "create",
        "w1",
        "--vcpus",
        "1",
        "--memory",
        "512",
        "--image",
        "debian-12",
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("install job j-install") && stdout.contains("install of w1 finished"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("copying image"));
    let calls = h.core.take();
    assert_eq!(
        calls
            .iter()
            .filter(|a| **a
                == Action::GetJob {
                    id: "j-install".into()
                })
            .count(),
        3
    );
    // image add --wait and volume import --wait too.
    h.ok(&["image", "add", "i1", "--path", "/srv/i1.qcow2", "--wait"]);
    h.ok(&["volume", "import", "p1", "v5", "/srv/v5.raw", "--wait"]);
    let polled: Vec<Action> = h
        .core
        .take()
        .into_iter()
        .filter(|a| matches!(a, Action::GetJob { .. }))
        .collect();
    assert_eq!(polled.len(), 6, "{polled:?}");
}

#[test]
fn the_fake_answers_follow_the_schemas() {
    let doc = nasvisor_schema_check::openapi();
    let check = |name: &str, v: &Value| {
        nasvisor_schema_check::validate(
            &doc,
            &json!({"$ref": format!("#/components/schemas/{name}")}),
            v,
            name,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    };
    check("Vm", &json!(vm("a")));
    check("Host", &json!(host()));
    check("Job", &json!(job("j", "k", "running", 0.5, Some("m"))));
    check("Image", &json!(image("i")));
    check("Event", &json!(event(1)));
    check("Volume", &json!(volume("p", "v", 1)));
    check("Snapshot", &json!(snapshot("p", "v", "s")));
}

#[test]
fn event_follow_polls_for_new_events() {
    let h = Harness::start();
    let child = h
        .cmd(&["event", "list", "--follow", "--since", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let mut child = child;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("SEQ"), "{text}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("SEQ")).count(),
        1,
        "{text}"
    );
    assert!(
        lines[1].contains("event number 2") && lines[2].contains("event number 3"),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
    let calls = h.core.take();
    assert_eq!(
        calls[0],
        Action::ListEvents {
            since: Some(1),
            limit: 100
        }
    );
    assert_eq!(
        calls[1],
        Action::ListEvents {
            since: Some(3),
            limit: 100
        }
    );
    assert!(calls.len() >= 3, "{calls:?}");
}

#[test]
fn yaml_and_json_output_are_the_typed_view() {
    let h = Harness::start();
    // YAML parses back into the same views as JSON, field for field.
    let yaml = h.ok(&["-o", "yaml", "vm", "list"]);
    let vms: Vec<VmView> = yaml_serde::from_str(&yaml).unwrap();
    assert_eq!(vms, vec![vm("vm1"), vm("web-server-2")]);
    let json = h.ok(&["--output", "json", "vm", "list"]);
    assert_eq!(
        yaml_serde::from_str::<Value>(&yaml).unwrap(),
        serde_json::from_str::<Value>(&json).unwrap()
    );
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap(),
        json!([vm("vm1"), vm("web-server-2")])
    );
    // One view, and an operation's answer, after the command too.
    let out = h.ok(&["host", "-o", "yaml"]);
    assert_eq!(yaml_serde::from_str::<HostView>(&out).unwrap(), host());
    let out = h.ok(&["vm", "start", "vm1", "-o", "yaml"]);
    let v: VmView = yaml_serde::from_str(&out).unwrap();
    assert_eq!(v.state, VmState::Running);
    // From the environment; --json (the old flag) still means JSON.
    let out = h
        .cmd(&["host"])
        .env("NASVISOR_OUTPUT", "yaml")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("accel: tcg\n"), "{text}");
    let out = h
        .cmd(&["--json", "host"])
        .env("NASVISOR_OUTPUT", "yaml")
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!(host())
    );
    // A table stays the default, and an answer without content prints
    // nothing as a document.
    assert!(h.ok(&["-o", "table", "vm", "list"]).starts_with("ID  "));
    assert_eq!(h.ok(&["-o", "yaml", "pool", "delete", "p9"]), "");
    // An unknown format is refused by name, before any request.
    h.core.take();
    let out = h.run(&["-o", "xml", "vm", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("'xml'") && e.contains("table, json, yaml"),
        "{e}"
    );
    assert!(h.core.take().is_empty());
}

#[test]
fn event_follow_in_yaml_prints_one_document_per_event() {
    let h = Harness::start();
    let mut child = h
        .cmd(&["event", "list", "--follow", "--since", "1", "-o", "yaml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let events: Vec<EventView> = yaml_serde::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect();
    assert_eq!(events, vec![event(2), event(3)], "{text}");
}

/// `nasvisor remote add NAME ENDPOINT ARGS...` with `stdin` as its input.
fn remote_add(h: &Harness, name: &str, args: &[&str], stdin: &str) -> Output {
    let mut c = h.bare();
    c.args(["remote", "add", name, &h.endpoint()]).args(args);
    typed(c, stdin)
}

/// Runs `c` with `stdin` typed in (30 s at most).
fn typed(mut c: Command, stdin: &str) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    wait_with_timeout(child, Duration::from_secs(30))
}

/// `nasvisor` with no connection option: only the config file says where.
fn plain(h: &Harness, args: &[&str]) -> Output {
    let empty = h.dir.path().join("no-data-dir");
    h.bare()
        .arg("--data-dir")
        .arg(empty)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn remotes_add_list_switch_and_remove() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::start();
    // Not on a terminal and no pin given: the fingerprint is shown and the
    // remote is not added without --accept-certificate.
    let out = remote_add(&h, "nas1", &[], &h.token);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains(&format!("--fingerprint {}", h.fingerprint)),
        "{e}"
    );
    assert!(e.contains("--accept-certificate"), "{e}");
    assert!(!h.config().exists());
    // Accepted: the server's own fingerprint is pinned, the token read
    // from stdin.
    let out = remote_add(
        &h,
        "nas1",
        &["--accept-certificate"],
        &format!("{}\n", h.token),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&h.fingerprint), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("remote nas1 ("),
        "{}",
        stdout(&out)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&h.config()), 0o600);
    assert_eq!(mode(h.config().parent().unwrap()), 0o700);
    // A second one, pinned by --fingerprint and with --token-file: no
    // connection needed.
    let tok = write(h.dir.path(), "tok", &format!("{}\n", h.token));
    let out = remote_add(
        &h,
        "nas2",
        &[
            "--fingerprint",
            &h.fingerprint,
            "--token-file",
            tok.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A name is used once.
    let out = remote_add(&h, "nas2", &["--fingerprint", &h.fingerprint], &h.token);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a remote named \"nas2\" exists"),
        "{}",
        stderr(&out)
    );

    // Added is not default: without a default the built-in defaults apply.
    let out = plain(&h, &["vm", "list"]);
    assert!(
        stderr(&out).starts_with("error: no admin token"),
        "{}",
        stderr(&out)
    );
    // Named, a remote is used.
    let out = plain(&h, &["--remote", "nas1", "vm", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = plain(&h, &["vm", "list", "--remote", "nas2"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let list = plain(&h, &["remote", "list"]);
    let text = stdout(&list);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("NAME  ENDPOINT"), "{text}");
    assert!(
        lines[1].starts_with("nas1  ") && lines[1].ends_with("no"),
        "{text}"
    );
    let out = plain(&h, &["remote", "switch", "nas2"]);
    assert_eq!(
        stdout(&out),
        format!("default remote: nas2 ({})\n", h.endpoint())
    );
    // Now plain commands go to the default remote.
    let out = plain(&h, &["vm", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = plain(&h, &["-o", "json", "remote", "list"]);
    let views: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pin = Value::String(h.fingerprint.clone());
    assert_eq!(
        views,
        json!([
            {"name": "nas1", "endpoint": h.endpoint(), "fingerprint": pin, "ca_cert": null, "default": false},
            {"name": "nas2", "endpoint": h.endpoint(), "fingerprint": pin, "ca_cert": null, "default": true},
        ])
    );
    let out = plain(&h, &["remote", "show", "nas2"]);
    assert!(
        stdout(&out).contains(&format!("fingerprint:  {}", h.fingerprint)),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("token:        stored (not shown)"),
        "{}",
        stdout(&out)
    );

    // Removing the default leaves none.
    let out = plain(&h, &["remote", "remove", "nas2"]);
    assert!(
        stdout(&out).contains("it was the default"),
        "{}",
        stdout(&out)
    );
    let out = plain(&h, &["-o", "yaml", "remote", "list"]);
    let left: Vec<Value> = yaml_serde::from_slice(&out.stdout).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["name"], "nas1");
    assert_eq!(left[0]["default"], false);
    let out = plain(&h, &["remote", "remove", "nas9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "no remote named \"nas9\" in {}",
            h.config().display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&h.config()), 0o600);
}

/// Adds the remote nas1 (the test server, pinned, with its token) and
/// makes it the default; the output of `remote add`.
fn add_default_remote(h: &Harness) -> Output {
    let out = remote_add(h, "nas1", &["--fingerprint", &h.fingerprint], &h.token);
    assert!(out.status.success(), "{}", stderr(&out));
    let switched = plain(h, &["remote", "switch", "nas1"]);
    assert!(switched.status.success(), "{}", stderr(&switched));
    out
}

#[test]
fn remotes_never_print_their_token() {
    let h = Harness::start();
    let out = add_default_remote(&h);
    assert!(std::fs::read_to_string(h.config())
        .unwrap()
        .contains(&h.token));
    let mut printed = vec![out];
    for format in ["table", "json", "yaml"] {
        printed.push(plain(&h, &["-o", format, "remote", "list"]));
        printed.push(plain(&h, &["-o", format, "remote", "show", "nas1"]));
    }
    // Nor do errors that use it, or the debug log of a request.
    printed.push(plain(&h, &["--fingerprint", &"0".repeat(64), "vm", "list"]));
    printed.push(plain(&h, &["--log", "trace", "vm", "show", "missing"]));
    printed.push(plain(&h, &["--remote", "nas2", "vm", "list"]));
    for out in &printed {
        assert!(!out.stdout.is_empty() || !out.stderr.is_empty());
        let all = format!("{}{}", stdout(out), stderr(out));
        assert!(!all.contains(&h.token), "the token was printed: {all}");
    }
}

#[test]
fn options_and_variables_beat_the_remote() {
    let h = Harness::start();
    add_default_remote(&h);
    assert!(plain(&h, &["host"]).status.success());
    h.core.take();
    // The pin, the token and the token file given beat the remote's.
    let out = plain(&h, &["--fingerprint", &"0".repeat(64), "host"]);
    assert!(
        stderr(&out).contains("does not match the pinned 00:00"),
        "{}",
        stderr(&out)
    );
    let wrong = write(h.dir.path(), "wrong", "wrong\n");
    let out = plain(&h, &["--token-file", wrong.to_str().unwrap(), "host"]);
    assert_eq!(
        stderr(&out),
        "error: authorization: invalid token (HTTP 401)\n"
    );
    let out = h
        .bare()
        .env("NASVISOR_TOKEN", "wrong")
        .arg("host")
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out),
        "error: authorization: invalid token (HTTP 401)\n"
    );
    // So does --ca-cert: the server's certificate file is trusted as given.
    let out = plain(&h, &["--ca-cert", h.cert().to_str().unwrap(), "host"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // --endpoint beats the remote named by --remote: the same server by
    // another name, with the remote's pin and token.
    let other_name = format!("https://localhost:{}", h.addr.port());
    let out = plain(&h, &["--remote", "nas1", "--endpoint", &other_name, "host"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // But the default remote's token never goes to an endpoint given
    // without naming the remote: here none is sent at all.
    let out = plain(&h, &["--endpoint", &other_name, "host"]);
    assert!(
        stderr(&out).starts_with("error: no admin token"),
        "{}",
        stderr(&out)
    );
    // The default remote applies when --endpoint is its own.
    let out = plain(&h, &["--endpoint", &format!("{}/", h.endpoint()), "host"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // NASVISOR_REMOTE names one too, and an unknown name is an error.
    let out = h
        .bare()
        .env("NASVISOR_REMOTE", "nas7")
        .arg("host")
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out),
        format!(
            "error: no remote named \"nas7\" in {} (see `nasvisor remote list`)\n",
            h.config().display()
        )
    );
    assert_eq!(h.core.take().len(), 3);
}

#[test]
fn unsafe_or_malformed_config_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::start();
    add_default_remote(&h);
    let path = h.config();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    for args in [&["--remote", "nas1", "host"][..], &["remote", "list"]] {
        let out = plain(&h, args);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            format!(
                "error: {p}: other users can access this file (mode 0640) and it holds API \
                 tokens; run `chmod 600 {p}` (and change the tokens if others may have read \
                 them)\n",
                p = path.display()
            )
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("endpoint =", "endpoit =")).unwrap();
    let out = plain(&h, &["remote", "list"]);
    let e = stderr(&out);
    assert!(
        e.starts_with(&format!(
            "error: {}: remotes.nas1.endpoit: unknown field `endpoit`",
            path.display()
        )),
        "{e}"
    );
    assert!(!e.contains(&h.token), "{e}");
    assert!(h.core.take().is_empty());
}

/// `nasvisor ARGS` against the harness with `stdin` as input.
fn with_stdin(h: &Harness, args: &[&str], stdin: &str) -> Output {
    typed(h.cmd(args), stdin)
}

#[test]
fn users_tokens_whoami_and_audit_commands_send_their_requests() {
    let h = Harness::start();
    let me = h.ok(&["whoami"]);
    assert!(me.contains("admin") && me.contains("token"), "{me}");

    let out = with_stdin(
        &h,
        &[
            "user",
            "create",
            "bob",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "long enough pw\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with_stdin(
        &h,
        &[
            "user",
            "edit",
            "bob",
            "--role",
            "operator",
            "--disable",
            "--password",
            "--password-stdin",
        ],
        "another long one\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.ok(&["user", "delete", "bob"]);
    let out = h.run(&[
        "user",
        "create",
        "carol",
        "--role",
        "root",
        "--password-stdin",
    ]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("viewer, operator or admin"), "{e}");
    let calls = h.core.take();
    let [Action::Whoami, Action::CreateUser(c), Action::UpdateUser { name, update }, Action::DeleteUser { name: deleted }] =
        calls.as_slice()
    else {
        panic!("{calls:?}");
    };
    assert_eq!(
        (c.name.as_str(), c.role, c.password.as_str()),
        ("bob", Role::Viewer, "long enough pw")
    );
    assert_eq!(name, "bob");
    assert_eq!(update.role, Some(Role::Operator));
    assert_eq!(update.disabled, Some(true));
    assert_eq!(update.password.as_deref(), Some("another long one"));
    assert_eq!(deleted, "bob");

    // A token's secret is printed alone on stdout (so it can be redirected
    // to a file), its details on stderr.
    let out = h
        .cmd(&[
            "token",
            "create",
            "backup",
            "--expires-in",
            "30d",
            "--role",
            "viewer",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "nvt_new-secret\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown once"));
    let listed = h.ok(&["token", "list"]);
    assert!(
        listed.contains("0123456789abcdef") && listed.contains("backup"),
        "{listed}"
    );
    assert!(!listed.contains("nvt_"), "a secret in the list: {listed}");
    h.ok(&["token", "revoke", "0123456789abcdef"]);
    let calls = h.core.take();
    let [Action::CreateToken(t), Action::ListTokens, Action::RevokeToken { id }] = calls.as_slice()
    else {
        panic!("{calls:?}");
    };
    assert_eq!(t.expires_in_s, Some(30 * 86_400));
    assert_eq!(t.role, Some(Role::Viewer));
    assert_eq!(id, "0123456789abcdef");

    let audit: Vec<AuditView> =
        serde_json::from_str(&h.ok(&["audit", "list", "-o", "json", "--since", "1"])).unwrap();
    assert_eq!(audit.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![2, 3]);
}

#[test]
fn remote_add_with_a_user_logs_in_and_stores_a_new_token_not_the_password() {
    let h = Harness::start();
    let out = remote_add(
        &h,
        "lab",
        &[
            "--fingerprint",
            &h.fingerprint,
            "--user",
            "alice",
            "--password-stdin",
        ],
        "wrong horse\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong user name or password"));
    let out = remote_add(
        &h,
        "lab",
        &[
            "--fingerprint",
            &h.fingerprint,
            "--user",
            "alice",
            "--password-stdin",
        ],
        "correct horse\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(h.config()).unwrap();
    assert!(config.contains("nvt_new-secret"), "the new token is stored");
    assert!(
        !config.contains("correct horse") && !config.contains(FAKE_SESSION),
        "{config}"
    );
    let calls = h.core.take();
    assert!(
        matches!(calls.as_slice(), [Action::CreateToken(_), Action::Logout]),
        "{calls:?}"
    );
    assert_eq!(*h.core.logins.lock().unwrap(), vec!["alice", "alice"]);
    // The remote works with the token it stored.
    let out = plain(&h, &["--remote", "lab", "whoami"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn host_settings_show_the_file_and_say_when_a_change_applies() {
    let h = Harness::start();
    let out = h.ok(&["host", "settings"]);
    assert!(
        out.contains("file:            /var/lib/nasvisor/nasvisord.toml"),
        "{out}"
    );
    assert!(
        out.contains("keys:            vm.reserved-memory-mib"),
        "{out}"
    );
    assert!(
        out.contains("running:         applied (vm.reserved-memory-mib)"),
        "{out}"
    );
    assert!(out.contains("restart needed:  no"), "{out}");
    assert!(
        out.ends_with("\n[vm]\nreserved-memory-mib = 1536\n"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(&site, "[vm]\nreserved-memory-mib = 1536\n").unwrap();
    let out = h.ok(&["host", "settings", "set", site.to_str().unwrap()]);
    assert_eq!(
        out,
        "site settings of host nas1 replaced (vm.reserved-memory-mib); they take effect at the \
         next start of nasvisord (or use --restart)\n"
    );
    let out = h.ok(&["host", "settings", "clear", "--restart"]);
    assert_eq!(
        out,
        "site settings of host nas1 removed; nasvisord restarts to apply them (its VMs keep \
         running)\n"
    );
    let missing = dir.path().join("absent.toml");
    let err = h.fails(&["host", "settings", "set", missing.to_str().unwrap()]);
    assert!(err.contains("absent.toml"), "{err}");
}
