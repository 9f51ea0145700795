//! Test support: a fake core (allowed only here, to test the layer above
//! it), a real TLS client trusting the generated certificate, and a running
//! server on 127.0.0.1:0.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use nasvisor_schema_check as schema;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nasvisor_api::types::{
    strict, AccelKind, ClusterView, DiskRole, EventView, HostView, ImageView, IntoAnswer, JobState,
    JobView, PluginResetView, PluginView, PoolView, SnapshotView, VmState, VmView, VolumeView,
    VswitchView,
};
use nasvisor_api::types::{
    ApiTokenView, AuditEntry, AuditView, Caller, Credential, CredentialKind, DecisionView, Login,
    NewTokenView, Request, Role, SessionView, UserView,
};
use nasvisor_api::{
    Action, Answer, ByteStream, Core, CoreError, FirmwareKind, ImageUpload, PowerOp, Server,
    ServerSettings,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls;

/// An upload the fake core received: the request, the bytes, and the
/// error that ended the stream (if any).
pub type Upload = (ImageUpload, Vec<u8>, Option<String>);

/// The fake's admin token.
pub const ADMIN_TOKEN: &str = "nvt_admin-secret";
/// The fake's operator token.
pub const OPERATOR_TOKEN: &str = "nvt_operator-secret";
/// The fake's viewer token.
pub const VIEWER_TOKEN: &str = "nvt_viewer-secret";
/// The fake's one user with a password, and its password.
pub const LOGIN_USER: &str = "alice";
pub const LOGIN_PASSWORD: &str = "correct horse";
/// The session the fake's login makes, and its CSRF token.
pub const SESSION: &str = "nvs_alice-session";
pub const CSRF: &str = "csrf-of-alice";

/// Records every action and answers with canned typed views (the response
/// schemas' types).
#[derive(Default)]
pub struct FakeCore {
    pub calls: Mutex<Vec<Action>>,
    /// The caller of each action, as the server passed it.
    pub callers: Mutex<Vec<Caller>>,
    /// What the server asked to audit.
    pub audits: Mutex<Vec<AuditEntry>>,
    /// Console requests: (id, follow, tail).
    pub consoles: Mutex<Vec<(String, bool, u64)>>,
    /// Uploads: the request, the bytes received, and the error that ended
    /// the stream (if any).
    pub uploads: Mutex<Vec<Upload>>,
    /// Set when a console stream was dropped (the client went away).
    pub console_dropped: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes of the current upload received so far.
    pub upload_progress: std::sync::atomic::AtomicU64,
}

impl FakeCore {
    pub fn take(&self) -> Vec<Action> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// `value` read as the view `T`, exactly (no field added or lost): the
/// fake's canned answers are schema-valid views.
fn view<T: serde::de::DeserializeOwned + serde::Serialize>(value: Value) -> T {
    strict(&value).unwrap_or_else(|e| panic!("the fake's view matches the type: {e}"))
}

/// A view as the JSON the API sends.
pub fn json_of<T: serde::Serialize>(view: &T) -> Value {
    serde_json::to_value(view).expect("a view serializes")
}

pub fn vm(id: &str) -> VmView {
    view(
        json!({"id": id, "name": id, "state": "stopped", "state_reason": null, "host": null,
           "vcpus": 2, "memory_mib": 2048, "description": null, "autostart": false, "ha": false, "ha_status": null,
           "firmware": "bios", "image": null, "pid": null, "qemu_state": null, "accel": null, "install_job": null,
           "created_at": "2026-01-01T00:00:00Z",
           "disks": [{"pool": "p1", "volume": "v1", "size_mib": 10240, "role": "disk"}],
           "nics": [{"vswitch": "sw0", "mac": "52:54:00:12:34:56", "model": "virtio", "tap": null}]}),
    )
}

pub fn running_vm(id: &str) -> VmView {
    let mut v = vm(id);
    v.state = VmState::Installing;
    v.host = Some("h1".into());
    v.pid = Some(4242);
    v.accel = Some(AccelKind::Tcg);
    v.image = Some("debian-12".into());
    v.install_job = Some("j-install".into());
    v.firmware = FirmwareKind::Uefi;
    let mut seed = v.disks[0].clone();
    seed.volume = "v1-seed".into();
    seed.size_mib = 1;
    seed.role = DiskRole::Seed;
    v.disks.push(seed);
    v.nics[0].tap = Some("nvtap0".into());
    v
}

pub fn cluster() -> ClusterView {
    view(
        json!({"clustered": true, "cluster_id": "c1", "ca_fingerprint": "AA:BB", "max_members": 7,
           "this_node": 1, "address": "192.0.2.1:8444", "leader": 1,
           "members": [{"node_id": 1, "addr": "192.0.2.1:8444", "status": "member", "voter": true, "key": null}]}),
    )
}

fn host(name: &str) -> HostView {
    view(
        json!({"id": name, "name": name, "version": "0.1.0", "cpus": 4,
           "memory_mib": 16384, "cluster_role": "single",
           "accel": "tcg", "accel_reason": "probe guest hung under KVM",
           "free_memory_mib": 8192, "qemu_version": "10.0.2", "node_id": 1,
           "address": "192.0.2.1:8444", "online": true, "cordoned": false, "vms": 1,
           "last_seen": "2026-01-01T00:00:00Z", "protocol": 2, "protocol_compatible": true,
           "health": "healthy", "health_reasons": []}),
    )
}

pub fn job(id: &str, kind: &str) -> JobView {
    view(
        json!({"id": id, "kind": kind, "state": "queued", "progress": 0.0, "error": null,
           "target": null, "message": null, "finished_at": null,
           "created_at": "2026-01-01T00:00:00Z"}),
    )
}

pub fn image(name: &str) -> ImageView {
    view(
        json!({"name": name, "size_mib": 400, "state": "ready", "format": "qcow2",
           "virtual_size_mib": 2048, "os_family": "linux", "os_variant": "debian12",
           "cloud_init": true, "firmware": "bios", "ready_marker": "NASVISOR-READY",
           "iso": false, "job": null, "error": null, "hosts": ["nas1"]}),
    )
}

pub fn event(seq: u64) -> EventView {
    view(
        json!({"seq": seq, "time": "2026-01-01T00:00:00.5+01:00", "kind": "vm.started",
           "severity": "info", "target": "vm/vm1", "message": "vm1 started on h1"}),
    )
}

fn snapshot(pool: &str, volume: &str, name: &str) -> SnapshotView {
    view(
        json!({"name": name, "pool": pool, "volume": volume, "created_at": "2026-01-01T00:00:00Z"}),
    )
}

fn volume(pool: &str, name: &str, size: u64) -> VolumeView {
    view(json!({"name": name, "pool": pool, "size_mib": size, "format": "qcow2", "used_by": null}))
}

fn caller(user: &str, role: Role, via: CredentialKind) -> Caller {
    Caller {
        user: user.into(),
        role,
        via,
        credential: format!("{user}-id"),
        expires_at: None,
        csrf: (via == CredentialKind::Session).then(|| CSRF.to_string()),
    }
}

impl FakeCore {
    /// The canned answer of `action` (recorded).
    async fn handle_as(&self, action: Action) -> Result<Answer, CoreError> {
        self.calls.lock().unwrap().push(action.clone());
        Ok(match action {
            Action::GetHost => host("nas1").into_answer(),
            Action::GetFirmware => firmware().into_answer(),
            Action::RebootHost { .. } => view::<nasvisor_api::types::HostRebootView>(json!({
                "host": "nas1", "command": ["systemctl", "reboot"], "delay_ms": 1000,
                "message": "host nas1 reboots: systemctl reboot runs in 1000 ms",
                "stopping": [], "job": null}))
            .into_answer(),
            Action::GetHostSettings
            | Action::ReplaceHostSettings { .. }
            | Action::ClearHostSettings { .. } => {
                view::<nasvisor_api::types::HostSettingsView>(json!({
                    "host": "nas1", "path": "/var/lib/nasvisor/nasvisord.toml", "text": null,
                    "keys": [], "error": null, "running": "absent", "running_keys": [],
                    "running_reason": null, "rolled_back": null, "restart_needed": false,
                    "restarting": false}))
                .into_answer()
            }
            Action::GetClusterUpdate
            | Action::ResumeClusterUpdate
            | Action::AbortClusterUpdate => rollout("running").into_answer(),
            Action::ListHosts => vec![host("nas1"), host("nas2")].into_answer(),
            Action::SetCordon { host: h, .. } | Action::SetMaintenance { host: h, .. } => {
                host(&h).into_answer()
            }
            Action::EvacuateHost { .. } => job("j4", "evacuate").into_answer(),
            Action::MigrateVm { .. } => job("j5", "migrate").into_answer(),
            Action::InstallPlugin(_) => plugin("acme-scheduler", "acme", "active").into_answer(),
            Action::UninstallPlugin { .. } => Answer::Empty,
            Action::ResetPlugin { world } => view::<PluginResetView>(json!({"world": world,
                "quarantined_on": ["nas2"], "message": "quarantine lifted on nas2"}))
            .into_answer(),
            // The fake is every host: the request is answered as such (and
            // recorded once, as it came).
            Action::OnHost { request, .. } => {
                let answer = Box::pin(self.handle_as(*request)).await;
                self.calls.lock().unwrap().pop();
                return answer;
            }
            Action::JoinCluster(_) => cluster().into_answer(),
            Action::ListVms => vec![vm("vm1")].into_answer(),
            Action::GetVm { id } if id == "missing" => {
                return Err(CoreError::NotFound {
                    what: format!("vm {id}"),
                })
            }
            Action::GetVm { id } if id == "busy" => {
                return Err(CoreError::Conflict {
                    reason: "vm busy is migrating".into(),
                })
            }
            Action::GetVm { id } if id == "noquorum" => {
                return Err(CoreError::Unavailable {
                    reason: "no quorum".into(),
                })
            }
            Action::GetVm { id } if id == "bad" => {
                return Err(CoreError::Invalid {
                    field: "host".into(),
                    reason: "no such host".into(),
                })
            }
            Action::GetVm { id } if id == "inst" => running_vm(&id).into_answer(),
            Action::GetVm { id } | Action::UpdateVm { id, .. } | Action::RecoverVm { id, .. } => {
                vm(&id).into_answer()
            }
            Action::CreateVm(c) => vm(&c.name).into_answer(),
            Action::DeleteVm { id, .. } => vm(&id).into_answer(),
            Action::VmPower { id, op } => match op {
                PowerOp::Start { .. } => running_vm(&id).into_answer(),
                _ => vm(&id).into_answer(),
            },
            Action::ListPools => view::<Vec<PoolView>>(
                json!([{"name": "p1", "path": "/srv/p1", "host": "nas1", "shared": false,
                        "capacity_mib": 100, "free_mib": 50}]),
            )
            .into_answer(),
            Action::CreatePool(p) => view::<PoolView>(
                json!({"name": p.name, "path": p.path, "host": if p.shared { None } else { Some("nas1") },
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
            Action::SnapshotVolume { pool, volume, name }
            | Action::RevertSnapshot { pool, volume, name } => {
                snapshot(&pool, &volume, &name).into_answer()
            }
            Action::ListSnapshots { pool, volume } => {
                vec![snapshot(&pool, &volume, "s1")].into_answer()
            }
            Action::CloneVolume { pool, name, .. } => volume(&pool, &name, 10).into_answer(),
            Action::ImportVolume { .. } => job("j3", "import_volume").into_answer(),
            Action::DeleteVolume { .. }
            | Action::DeleteImage { .. }
            | Action::DeleteVswitch { .. }
            | Action::DeleteSnapshot { .. }
            | Action::DeletePool { .. }
            | Action::ConsoleInput { .. }
            | Action::RemoveMember { .. } => Answer::Empty,
            Action::GetCluster | Action::CreateCluster(_) => cluster().into_answer(),
            Action::IssueJoinToken(_) => Answer::JoinToken(view(
                json!({"token": "nvjt1.abc", "expires_at": "2026-01-01T01:00:00Z"}),
            )),
            Action::ListEvents { since, limit } => {
                let from = since.unwrap_or(0) + 1;
                (from..from + u64::from(limit.min(3)))
                    .map(event)
                    .collect::<Vec<_>>()
                    .into_answer()
            }
            Action::ListImages => vec![image("debian-12")].into_answer(),
            Action::AddImage(_) => job("j2", "add_image").into_answer(),
            Action::ListVswitches => view::<Vec<VswitchView>>(
                json!([{"name": "sw0", "uplink": "eth0", "vlan": null}]),
            )
            .into_answer(),
            Action::CreateVswitch(s) => view::<VswitchView>(
                json!({"name": s.name, "uplink": s.uplink, "vlan": s.vlan}),
            )
            .into_answer(),
            Action::ListJobs => vec![job("j1", "start")].into_answer(),
            Action::GetJob { id } | Action::CancelJob { id } => {
                let mut j = job(&id, "start");
                j.state = JobState::Succeeded;
                j.progress = 1.0;
                j.target = Some("vm/vm1".into());
                j.message = Some("done".into());
                j.finished_at = Some("2026-01-01T00:00:05Z".into());
                j.into_answer()
            }
            Action::ListPlugins => vec![plugin("scheduler", "nasvisor", "active")].into_answer(),
            Action::Whoami => caller("admin", Role::Admin, CredentialKind::Token)
                .view()
                .into_answer(),
            Action::Logout
            | Action::ChangePassword(_)
            | Action::DeleteUser { .. }
            | Action::RevokeToken { .. } => Answer::Empty,
            Action::ListUsers => vec![user("alice")].into_answer(),
            Action::CreateUser(u) => user(&u.name).into_answer(),
            Action::UpdateUser { name, .. } => user(&name).into_answer(),
            Action::ListTokens => vec![api_token("backup")].into_answer(),
            Action::CreateToken(t) => view::<NewTokenView>(json!({
                "token": "nvt_new-secret", "details": json_of(&api_token(&t.name))}))
            .into_answer(),
            Action::ListDecisions { .. } => vec![view::<DecisionView>(json!({
                "time": "2026-01-01T00:00:00Z", "host": "nas1", "world": "scheduler",
                "function": "place", "plugin": "nasvisor-scheduler@0.1.0", "outcome": "plugin",
                "cause": null, "duration_us": 812}))]
            .into_answer(),
            Action::ListAudit { .. } => vec![view::<AuditView>(json!({
                "seq": 1, "time": "2026-01-01T00:00:00Z", "user": "alice", "role": "operator",
                "credential": "alice-id", "address": "127.0.0.1", "host": "nas1",
                "operation": "vmPower", "request": "POST /api/v1/vms/vm1/power",
                "status": 202, "result": "ok"}))]
            .into_answer(),
        })
    }
}

pub fn user(name: &str) -> UserView {
    view(
        json!({"name": name, "role": "operator", "disabled": false, "password_set": true,
        "created_at": "2026-01-01T00:00:00Z", "password_changed_at": null}),
    )
}

pub fn api_token(name: &str) -> ApiTokenView {
    view(
        json!({"id": "0123456789abcdef", "name": name, "user": "alice", "role": "viewer",
        "created_at": "2026-01-01T00:00:00Z", "created_by": "alice", "expires_at": null,
        "expired": false}),
    )
}

#[async_trait::async_trait]
impl Core for FakeCore {
    fn metrics(&self) -> nasvisor_metrics::State {
        nasvisor_metrics::State {
            host: "fake-host".into(),
            vms_by_state: vec![("running".into(), 2), ("stopped".into(), 1)],
            ..Default::default()
        }
    }

    fn authenticate(&self, credential: Credential<'_>) -> Result<Caller, CoreError> {
        let token = CredentialKind::Token;
        match credential {
            Credential::Bearer(ADMIN_TOKEN) => Ok(caller("admin", Role::Admin, token)),
            Credential::Bearer(OPERATOR_TOKEN) => Ok(caller("oscar", Role::Operator, token)),
            Credential::Bearer(VIEWER_TOKEN) => Ok(caller("vera", Role::Viewer, token)),
            Credential::Bearer(SESSION) | Credential::Cookie(SESSION) => {
                Ok(caller(LOGIN_USER, Role::Operator, CredentialKind::Session))
            }
            _ => Err(CoreError::Unauthenticated {
                reason: "invalid token".into(),
            }),
        }
    }

    async fn login(
        &self,
        login: Login,
        _address: std::net::IpAddr,
    ) -> Result<SessionView, CoreError> {
        if login.user == "throttled" {
            return Err(CoreError::Throttled {
                reason: "too many failed logins".into(),
                retry_after_s: 7,
            });
        }
        if login.user != LOGIN_USER || login.password != LOGIN_PASSWORD {
            return Err(CoreError::Unauthenticated {
                reason: "wrong user name or password".into(),
            });
        }
        Ok(SessionView {
            token: SESSION.into(),
            user: LOGIN_USER.into(),
            role: Role::Operator,
            expires_at: "2026-01-01T08:00:00Z".into(),
            idle_timeout_s: 3600,
            csrf_token: CSRF.into(),
        })
    }

    async fn audit(&self, entry: AuditEntry) {
        self.audits.lock().unwrap().push(entry);
    }

    async fn handle(&self, request: &Request, action: Action) -> Result<Answer, CoreError> {
        self.callers.lock().unwrap().push(request.caller.clone());
        self.handle_as(action).await
    }

    /// VM `missing` does not exist; VM `endless` streams until the client
    /// goes away; VM `quiet` sends a line, nothing for 1.5 s, then a last
    /// line; every other VM sends `tail` bytes of "history" (at most
    /// 3 chunks) and, when `follow`, two more chunks.
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
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let dropped = self.console_dropped.clone();
        tokio::spawn(async move {
            if id == "endless" {
                let mut n = 0u64;
                loop {
                    n += 1;
                    if tx
                        .send(Ok(Bytes::from(format!("line {n}\n"))))
                        .await
                        .is_err()
                    {
                        dropped.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            if id == "quiet" {
                // Silent for 1.5 s in the middle of its answer.
                let _ = tx.send(Ok(Bytes::from_static(b"start\n"))).await;
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                let _ = tx.send(Ok(Bytes::from_static(b"end\n"))).await;
                return;
            }
            let _ = tx
                .send(Ok(Bytes::from(format!("history of {id} ({tail})\n"))))
                .await;
            if follow {
                for chunk in ["live 1\n", "live 2\n"] {
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                    let _ = tx.send(Ok(Bytes::from_static(chunk.as_bytes()))).await;
                }
            }
        });
        Ok(Box::pin(ChannelStream(rx)))
    }

    /// Reads the whole stream and records what arrived.
    async fn upload_image(
        &self,
        upload: ImageUpload,
        mut body: ByteStream,
    ) -> Result<Answer, CoreError> {
        let mut got = Vec::new();
        let mut err = None;
        self.upload_progress
            .store(0, std::sync::atomic::Ordering::SeqCst);
        while let Some(chunk) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(body.as_mut(), cx)).await
        {
            match chunk {
                Ok(b) => {
                    got.extend_from_slice(&b);
                    self.upload_progress
                        .store(got.len() as u64, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
            }
        }
        let name = upload.name.clone();
        self.uploads
            .lock()
            .unwrap()
            .push((upload, got, err.clone()));
        if let Some(e) = err {
            return Err(CoreError::Invalid {
                field: "body".into(),
                reason: e,
            });
        }
        let mut j = job("j-up", "upload_image");
        j.target = Some(format!("image/{name}"));
        Ok(j.into_answer())
    }

    async fn install_firmware(&self, body: ByteStream) -> Result<Answer, CoreError> {
        let n = body_len(body).await?;
        let mut j = job("j-fw", "firmware-install");
        j.message = Some(format!("received {n} bytes"));
        Ok(j.into_answer())
    }

    async fn start_cluster_update(
        &self,
        by: String,
        move_back: bool,
        body: ByteStream,
    ) -> Result<Answer, CoreError> {
        let n = body_len(body).await?;
        let mut r = rollout("running");
        r.size = n;
        r.started_by = by;
        r.move_back = move_back;
        Ok(r.into_answer())
    }
}

/// How many bytes an upload's body has, read whole.
async fn body_len(mut body: ByteStream) -> Result<u64, CoreError> {
    let mut n = 0u64;
    while let Some(chunk) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(body.as_mut(), cx)).await
    {
        n += chunk
            .map_err(|e| CoreError::Invalid {
                field: "body".into(),
                reason: e.to_string(),
            })?
            .len() as u64;
    }
    Ok(n)
}

/// A rolling update of two hosts, in state `state`.
pub fn rollout(state: &str) -> nasvisor_api::types::RolloutView {
    view(json!({
        "id": "r1", "version": "2.0.2", "class": "service",
        "sha256": "ab".repeat(32), "size": 1024, "holder": "nas1", "move_back": true,
        "state": state, "failure": null, "advice": null, "started_by": "alice",
        "started_at": "2026-12-05T10:00:00Z", "finished_at": null,
        "hosts": [
            {"host": "nas2", "state": "done", "from_version": "2.0.1", "version": "2.0.2",
             "message": "runs 2.0.2", "job": null, "moved": [],
             "started_at": "2026-12-05T10:00:01Z", "finished_at": "2026-12-05T10:00:09Z"},
            {"host": "nas1", "state": "ready", "from_version": "2.0.1", "version": "2.0.1",
             "message": null, "job": null, "moved": [],
             "started_at": null, "finished_at": null}
        ]
    }))
}

/// A host's firmware: booted from slot a, slot b pending.
pub fn firmware() -> nasvisor_api::types::FirmwareView {
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
        "last_outcome": null,
        "service": null,
        "watchdog": {"hardware": [], "service_timeout_s": null},
        "secure_boot": "unsupported"
    }))
}

/// An mpsc receiver as a stream.
pub struct ChannelStream(pub tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl futures_core::Stream for ChannelStream {
    type Item = std::io::Result<Bytes>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub new_token: Option<String>,
    pub cert_pem: Vec<u8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub async fn start(data_dir: &Path, core: Arc<FakeCore>) -> Running {
        Self::start_with(
            ServerSettings::new("127.0.0.1:0".parse().unwrap(), data_dir),
            core,
        )
        .await
    }

    pub async fn start_with(settings: ServerSettings, core: Arc<FakeCore>) -> Running {
        let server = Server::bind(settings, core).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let fingerprint = server.tls().fingerprint.clone();
        let cert_pem = std::fs::read(&server.tls().cert_path).unwrap();
        let new_token = Some(ADMIN_TOKEN.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Running {
            addr,
            fingerprint,
            new_token,
            cert_pem,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// A client of this server trusting `cert_pem` (a certificate it was
    /// given since it started).
    pub fn client_trusting(&self, cert_pem: &[u8]) -> Client {
        Client::new(self.addr, cert_pem)
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr, &self.cert_pem)
    }
}

/// A real HTTPS client trusting exactly the server's certificate.
pub struct Client {
    addr: SocketAddr,
    name: String,
    connector: tokio_rustls::TlsConnector,
    /// The local address to connect from (a 127.0.0.0/8 address: each is
    /// another client to the server).
    source: Option<std::net::IpAddr>,
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(str::to_string)
    }
}

impl Client {
    pub fn new(addr: SocketAddr, cert_pem: &[u8]) -> Self {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(cert_pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = nasvisor_tls::client_config_builder()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            addr,
            name: "localhost".into(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            source: None,
        }
    }

    /// The same client, connecting from `source` (e.g. 127.0.0.2).
    pub fn with_source(mut self, source: &str) -> Self {
        self.source = Some(source.parse().unwrap());
        self
    }

    /// A TCP connection to the server, from the source address if set.
    pub async fn tcp(&self) -> std::io::Result<tokio::net::TcpStream> {
        match self.source {
            None => tokio::net::TcpStream::connect(self.addr).await,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(self.addr).await
            }
        }
    }

    /// A TLS connection to the server, or why not (a server at its
    /// connection cap closes new ones at once).
    pub async fn try_raw(
        &self,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = self.tcp().await?;
        let name = rustls::pki_types::ServerName::try_from(self.name.clone()).unwrap();
        self.connector.connect(name, tcp).await
    }

    /// The same client, verifying the certificate for another name.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let auth = token.map(|t| ("authorization", format!("Bearer {t}")));
        self.send_headers(method, path, auth.as_slice(), content_type, body)
            .await
    }

    /// [`Self::send`] with any headers (a cookie, a CSRF token).
    pub async fn send_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let resp = self
            .open_with(
                method,
                path,
                headers,
                content_type,
                Full::new(Bytes::copy_from_slice(body)),
            )
            .await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A bare TLS connection to the server.
    pub async fn raw(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        self.try_raw().await.expect("TLS handshake")
    }

    /// Sends a request with any body and returns the answer unread.
    pub async fn open<B>(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: B,
    ) -> http::Response<hyper::body::Incoming>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let auth = token.map(|t| ("authorization", format!("Bearer {t}")));
        self.open_with(method, path, auth.as_slice(), content_type, body)
            .await
    }

    /// [`Self::open`] with any headers.
    pub async fn open_with<B>(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        content_type: Option<&str>,
        body: B,
    ) -> http::Response<hyper::body::Incoming>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tls = self.raw().await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(body).unwrap();
        sender.send_request(req).await.unwrap()
    }

    /// `POST /api/v1/auth/login` with `body`.
    pub async fn login(&self, body: &[u8]) -> Reply {
        let ct = Some("application/json");
        self.send("POST", "/api/v1/auth/login", None, ct, body)
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send("GET", path, token, None, b"").await
    }

    pub async fn json(&self, method: &str, path: &str, token: &str, body: &str) -> Reply {
        self.send(
            method,
            path,
            Some(token),
            Some("application/json"),
            body.as_bytes(),
        )
        .await
    }
}

/// A request body fed through a channel, frame by frame.
pub struct FrameChannel(
    pub tokio::sync::mpsc::Receiver<Result<hyper::body::Frame<Bytes>, std::io::Error>>,
);

impl futures_core::Stream for FrameChannel {
    type Item = Result<hyper::body::Frame<Bytes>, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A scheduler plugin as `GET /api/v1/plugins` lists it, on two hosts
/// (quarantined on nas2).
pub fn plugin(name: &str, vendor: &str, state: &str) -> PluginView {
    let on = |host: &str, state: &str, failures: u64, last: Option<&str>| {
        json!({"host": host, "world": "scheduler", "plugin": format!("{name}@1.0.0"),
            "state": state, "consecutive_failures": failures, "decisions": 7,
            "failures": failures, "fallbacks": failures, "last_failure": last,
            "updated_at": "2026-01-01T00:00:00Z"})
    };
    view(
        json!({"name": name, "world": "scheduler", "version": "1.0.0", "vendor": vendor,
        "state": state, "consecutive_failures": 0, "decisions": 7, "failures": 0,
        "fallbacks": 0, "last_failure": null,
        "hosts": [on("nas1", state, 0, None),
                  on("nas2", "quarantined", 3, Some("trap: unreachable code reached"))]}),
    )
}
