//! The cluster's rolling update (`nasvisor cluster update BUNDLE`;
//! docs/firmware.md, "Rolling cluster update").
//!
//! - The host that receives the bundle checks its start as its own install
//!   would, keeps it (`<state>/rollout/<sha256>.nvfw`, hashed as it
//!   arrives) and records the rollout in the store: one record, the hosts
//!   in the order they are updated, the leader last (its own restart moves
//!   the leadership, and the next leader goes on from the record).
//! - The leader drives it ([`Inner::spawn_rollout_loop`]), one step at a
//!   time, each step recorded before the next begins, so that whichever
//!   host leads after a restart goes on from where the record stands:
//!   1. every member copies the bundle from the holder (NBD over the
//!      cluster's TLS, as images are copied) and checks it as an install
//!      would, before any host is touched; a member that refuses it stops
//!      the rollout with no host changed;
//!   2. then one host at a time: cordon; a `reboot` bundle evacuates it
//!      (live migration); its firmware-install job; a `service` release
//!      restarts nasvisord in place, a `reboot` bundle reboots the host;
//!      wait until the host is online, healthy, and reports the new
//!      version; uncordon (unless an administrator had cordoned it) and
//!      move the evacuated VMs back (`move_back`).
//! - The first failure stops it (`failed`), names the host and the reason,
//!   and says how to go on: `resume` from that host, or `abort`. The other
//!   hosts serve throughout; members on different versions stay compatible
//!   by the peer protocol's rule (each writes what the oldest member reads).

use crate::errors;
use crate::firmware::{receive, FirmwareSettings};
use crate::model::{
    kind, now_rfc3339, HostRecord, JobRecord, JobState, Severity, VmRecord, VmStatus,
};
use crate::Inner;
use bytes::Bytes;
use futures_util::Stream;
use nasvisor_api_types::peer::{
    BundleExport, BundleExportReply, ImageExportEnd, RolloutFetch, RolloutFetched, RolloutInstall,
    RolloutInstalling,
};
use nasvisor_api_types::{
    Action, Answer, CoreError, FirmwareOutcomeKind, RolloutHostState, RolloutHostView,
    RolloutState, RolloutView, VmMigrate,
};
use nasvisor_best_effort::BestEffort;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The store kind of the rollout record (one, key [`KEY`]).
pub(crate) const KIND: &str = "rollout";
/// Its key: the last rollout started.
const KEY: &str = "current";

/// Serializes `rollout-fetch` on a member.
static FETCH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How often the leader looks at a running rollout.
const TICK: Duration = Duration::from_secs(1);
/// Longest copy and check of the bundle on one member.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest a member takes to answer a `rollout-install`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a host restarting into a `service` release has to come back
/// healthy on the new version (the release's own deadline is within it).
const SERVICE_RESTART_LIMIT: Duration = Duration::from_secs(10 * 60);
/// How long a rebooting host has.
const REBOOT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The rollout as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RolloutRecord {
    pub id: String,
    pub version: String,
    /// `reboot` or `service`.
    pub class: String,
    pub sha256: String,
    pub size: u64,
    pub holder: String,
    pub move_back: bool,
    pub state: RolloutState,
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default)]
    pub advice: Option<String>,
    pub started_by: String,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub hosts: Vec<RolloutHost>,
}

/// One host of the rollout, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RolloutHost {
    pub host: String,
    pub state: RolloutHostState,
    pub from_version: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub job: Option<String>,
    /// VMs evacuated from it: (VM id, the host it went to).
    #[serde(default)]
    pub moved: Vec<(String, String)>,
    /// Cordoned by an administrator before its turn: left cordoned.
    #[serde(default)]
    pub was_cordoned: bool,
    #[serde(default)]
    pub started_at: Option<String>,
    /// When its restart or reboot began.
    #[serde(default)]
    pub restart_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
}

impl RolloutRecord {
    fn reboot(&self) -> bool {
        self.class == "reboot"
    }
}

/// Where hosts keep the bundles of rollouts.
fn bundle_dir(settings: &FirmwareSettings) -> PathBuf {
    settings.slots.state_dir.join("rollout")
}

fn bundle_path(settings: &FirmwareSettings, sha256: &str) -> Result<PathBuf, CoreError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(errors::invalid("sha256", "must be 64 hex digits"));
    }
    Ok(bundle_dir(settings).join(format!("{}.nvfw", sha256.to_ascii_lowercase())))
}

/// The SHA-256 of file `path`, hex.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Removes every kept bundle but `keep`.
fn prune_bundles(dir: &Path, keep: Option<&Path>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if Some(p.as_path()) != keep {
            std::fs::remove_file(&p).best_effort("remove an older rollout's bundle");
        }
    }
}

impl Inner {
    fn rollout(&self) -> Option<RolloutRecord> {
        self.db.get::<RolloutRecord>(KIND, KEY).map(|(r, _)| r)
    }

    /// `GET /api/v1/cluster/update`.
    pub(crate) fn rollout_view(&self) -> Result<RolloutView, CoreError> {
        self.rollout()
            .map(|r| self.rollout_view_of(&r))
            .ok_or_else(|| none_started(errors::not_found("rollout")))
    }

    fn rollout_view_of(&self, r: &RolloutRecord) -> RolloutView {
        RolloutView {
            id: r.id.clone(),
            version: r.version.clone(),
            class: r.class.clone(),
            sha256: r.sha256.clone(),
            size: r.size,
            holder: r.holder.clone(),
            move_back: r.move_back,
            state: r.state,
            failure: r.failure.clone(),
            advice: r.advice.clone(),
            started_by: r.started_by.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            hosts: r
                .hosts
                .iter()
                .map(|h| RolloutHostView {
                    host: h.host.clone(),
                    state: h.state,
                    from_version: h.from_version.clone(),
                    version: self
                        .db
                        .get::<HostRecord>(kind::HOST, &h.host)
                        .map(|(r, _)| r.version)
                        .unwrap_or_default(),
                    message: h.message.clone(),
                    job: h.job.clone(),
                    moved: h
                        .moved
                        .iter()
                        .map(|(vm, to)| format!("{} → {to}", self.vm_name(vm)))
                        .collect(),
                    started_at: h.started_at.clone(),
                    finished_at: h.finished_at.clone(),
                })
                .collect(),
        }
    }

    fn vm_name(&self, id: &str) -> String {
        self.db
            .get::<VmRecord>(kind::VM, id)
            .map(|(v, _)| v.name)
            .unwrap_or_else(|| id.to_string())
    }

    /// `POST /api/v1/cluster/update`: receives the bundle (checked as this
    /// host's install would check it), keeps it, records the rollout.
    pub(crate) async fn start_rollout(
        self: &Arc<Self>,
        by: String,
        move_back: bool,
        body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    ) -> Result<RolloutView, CoreError> {
        let settings = self.firmware()?.clone();
        let running = |r: &RolloutRecord| {
            errors::conflict(format!(
                "cluster update {} to {} is {} (started {} by {}); resume or abort it first",
                r.id,
                r.version,
                r.state.as_str(),
                r.started_at,
                r.started_by
            ))
        };
        let busy =
            |r: &RolloutRecord| matches!(r.state, RolloutState::Running | RolloutState::Failed);
        if let Some(r) = self.rollout().filter(busy) {
            drain(body).await;
            return Err(running(&r));
        }
        let members = self.rollout_members()?;
        let received = match receive(body, &settings).await {
            Ok(r) => r,
            Err(e) => return Err(e),
        };
        let dir = bundle_dir(&settings);
        let kept = bundle_path(&settings, &received.sha256)?;
        let keep = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::rename(&received.path, &kept))
            .map_err(|e| {
                errors::internal(format!("cannot keep the bundle in {}: {e}", dir.display()))
            });
        if let Err(e) = keep {
            std::fs::remove_file(&received.path).best_effort("remove a received bundle");
            return Err(e);
        }
        let m = &received.manifest;
        let now = now_rfc3339();
        let rec = RolloutRecord {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            version: m.version.to_string(),
            class: m.class.to_string(),
            sha256: received.sha256.clone(),
            size: received.size,
            holder: self.host.id.clone(),
            move_back,
            state: RolloutState::Running,
            failure: None,
            advice: None,
            started_by: by,
            started_at: now,
            finished_at: None,
            hosts: members
                .iter()
                .map(|h| RolloutHost {
                    host: h.id.clone(),
                    state: RolloutHostState::Waiting,
                    from_version: h.version.clone(),
                    message: None,
                    job: None,
                    moved: Vec::new(),
                    was_cordoned: false,
                    started_at: None,
                    restart_at: None,
                    finished_at: None,
                })
                .collect(),
        };
        // Only over a finished rollout, and only if none began meanwhile.
        let expected = self.db.get::<RolloutRecord>(KIND, KEY);
        let written = match &expected {
            Some((r, _)) if busy(r) => Err(running(r)),
            Some((_, rev)) => self.db.put(KIND, KEY, &rec, Some(*rev)).await,
            None => self.db.put(KIND, KEY, &rec, Some(0)).await,
        };
        if let Err(e) = written {
            std::fs::remove_file(&kept).best_effort("remove a kept bundle");
            return Err(e);
        }
        prune_bundles(&dir, Some(&kept));
        self.event(
            "cluster-update-started",
            Severity::Info,
            Some("cluster".into()),
            format!(
                "cluster update {} started by {}: {} bundle {} for {} hosts ({})",
                rec.id,
                rec.started_by,
                rec.class,
                rec.version,
                rec.hosts.len(),
                rec.hosts
                    .iter()
                    .map(|h| h.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .await;
        self.rollout_wake.notify_one();
        Ok(self.rollout_view_of(&rec))
    }

    /// The hosts a rollout updates, in order: every member, the leader
    /// last; refused while one is offline or on an incompatible protocol.
    fn rollout_members(&self) -> Result<Vec<HostRecord>, CoreError> {
        let leader = self.leader_host_id();
        let mut hosts: Vec<HostRecord> = self
            .db
            .list::<HostRecord>(kind::HOST)
            .into_iter()
            .filter(|h| !h.removed)
            .collect();
        if hosts.is_empty() {
            hosts.push(self.host.clone());
        }
        let off: Vec<String> = hosts
            .iter()
            .filter(|h| !h.online || !h.protocol_compatible)
            .map(|h| h.id.clone())
            .collect();
        if !off.is_empty() {
            return Err(errors::conflict(format!(
                "a cluster update needs every member online and in touch: {} {}; bring it back \
                 or remove it from the cluster first",
                off.join(", "),
                if off.len() == 1 { "is not" } else { "are not" }
            )));
        }
        hosts.sort_by_key(|h| (Some(&h.id) == leader.as_ref(), h.id.clone()));
        Ok(hosts)
    }

    /// The host id of the raft leader, as this host knows it.
    fn leader_host_id(&self) -> Option<String> {
        let node = self.db.store().metrics().current_leader?;
        self.db
            .list::<HostRecord>(kind::HOST)
            .into_iter()
            .find(|h| h.node_id == node)
            .map(|h| h.id)
    }

    /// `POST /api/v1/cluster/update/resume`.
    pub(crate) async fn resume_rollout(&self) -> Result<RolloutView, CoreError> {
        let rec = self
            .db
            .update::<RolloutRecord, _>(KIND, KEY, |r| {
                if r.state != RolloutState::Failed {
                    return Err(errors::conflict(format!(
                        "cluster update {} is {}: only a failed one resumes",
                        r.id,
                        r.state.as_str()
                    )));
                }
                r.state = RolloutState::Running;
                r.failure = None;
                r.advice = None;
                r.finished_at = None;
                for h in &mut r.hosts {
                    if h.state == RolloutHostState::Failed {
                        // A refused copy is copied again; a host that
                        // failed its turn takes it again from the start.
                        h.state = if h.started_at.is_none() {
                            RolloutHostState::Waiting
                        } else {
                            RolloutHostState::Ready
                        };
                        h.job = None;
                        h.restart_at = None;
                        h.message = Some("resumed".into());
                    }
                }
                Ok(())
            })
            .await
            .map_err(none_started)?;
        self.event(
            "cluster-update-resumed",
            Severity::Info,
            Some("cluster".into()),
            format!("cluster update {} to {} resumed", rec.id, rec.version),
        )
        .await;
        self.rollout_wake.notify_one();
        Ok(self.rollout_view_of(&rec))
    }

    /// `POST /api/v1/cluster/update/abort`.
    pub(crate) async fn abort_rollout(&self) -> Result<RolloutView, CoreError> {
        let rec = self
            .db
            .update::<RolloutRecord, _>(KIND, KEY, |r| {
                if !matches!(r.state, RolloutState::Running | RolloutState::Failed) {
                    return Err(errors::conflict(format!(
                        "cluster update {} is {}: nothing to abort",
                        r.id,
                        r.state.as_str()
                    )));
                }
                r.state = RolloutState::Aborted;
                r.finished_at = Some(now_rfc3339());
                r.advice = Some(mixed_versions_advice(r));
                Ok(())
            })
            .await
            .map_err(none_started)?;
        // Hosts this rollout cordoned (their turn began and is not done: a
        // done host was uncordoned already) are uncordoned; an
        // administrator's cordon stays.
        for h in &rec.hosts {
            let ours =
                !h.was_cordoned && h.started_at.is_some() && h.state != RolloutHostState::Done;
            if ours {
                self.set_cordon(&h.host, false)
                    .await
                    .best_effort("uncordon a host after an aborted cluster update");
            }
        }
        self.event(
            "cluster-update-aborted",
            Severity::Warning,
            Some("cluster".into()),
            format!("cluster update {} to {} aborted", rec.id, rec.version),
        )
        .await;
        Ok(self.rollout_view_of(&rec))
    }

    /// The rollout's driver: on the leader (or a single host), one step of
    /// a running rollout at a time, every [`TICK`] or when woken.
    pub(crate) fn spawn_rollout_loop(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { break };
                let leads =
                    !me.multi_host() || (me.db.store().leader_term().is_some() && me.has_quorum());
                let running = me.rollout().filter(|r| r.state.is_running());
                if let (true, Some(rec)) = (leads, running) {
                    if let Err(e) = me.rollout_step(rec).await {
                        tracing::warn!(error = %e, "cluster update step (tried again)");
                    }
                }
                let wake = me.clone();
                drop(me);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.rollout_wake.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
        });
    }

    /// One step of a running rollout, recorded.
    async fn rollout_step(self: &Arc<Self>, rec: RolloutRecord) -> Result<(), CoreError> {
        // 1. The bundle on every member, checked, before any host is
        //    touched.
        if let Some(h) = rec.hosts.iter().find(|h| {
            matches!(
                h.state,
                RolloutHostState::Waiting | RolloutHostState::Copying
            )
        }) {
            let host = h.host.clone();
            self.set_host_step(&rec.id, &host, RolloutHostState::Copying, |h| {
                h.message = Some(format!("copying the bundle from host {}", rec.holder));
            })
            .await?;
            let member = self.host_record(&host)?;
            let call = RolloutFetch {
                rollout: rec.id.clone(),
                holder: rec.holder.clone(),
                sha256: rec.sha256.clone(),
                size: rec.size,
            };
            let r = if host == self.host.id {
                self.rollout_fetch(call).await
            } else {
                self.call_peer(&member, call, FETCH_TIMEOUT).await
            };
            return match r {
                Ok(f) => {
                    self.set_host_step(&rec.id, &host, RolloutHostState::Ready, |h| {
                        h.message = Some(format!(
                            "bundle copied and checked: installs {} over {}",
                            f.version,
                            f.installed.as_deref().unwrap_or("the slot's version")
                        ));
                    })
                    .await
                }
                Err(e) => {
                    self.rollout_fail(
                        &rec.id,
                        &host,
                        format!("the bundle could not be copied and checked there: {e}"),
                        "no host was changed".into(),
                    )
                    .await
                }
            };
        }
        // 2. One host at a time.
        let Some(h) = rec
            .hosts
            .iter()
            .find(|h| h.state != RolloutHostState::Done)
            .cloned()
        else {
            return self.rollout_done(&rec).await;
        };
        let host = h.host.clone();
        let member = match self.host_record(&host) {
            Ok(m) => m,
            Err(e) => {
                return self
                    .rollout_fail(&rec.id, &host, e.to_string(), self.serving(&rec, &host))
                    .await
            }
        };
        match h.state {
            RolloutHostState::Ready => {
                // Whether an administrator had cordoned it is recorded
                // before this update cordons it (a step tried again, or a
                // resumed turn, goes by the record, not by the cordon it
                // set itself).
                let was = if h.started_at.is_some() {
                    h.was_cordoned
                } else {
                    let was = member.cordoned;
                    self.set_host_step(&rec.id, &host, RolloutHostState::Ready, |h| {
                        h.was_cordoned = was;
                        h.started_at = Some(now_rfc3339());
                    })
                    .await?;
                    was
                };
                if !member.cordoned {
                    self.set_cordon(&host, true).await?;
                }
                self.set_host_step(&rec.id, &host, RolloutHostState::Cordoned, |h| {
                    h.message = Some(if was {
                        "cordoned (by an administrator before; it stays so)".into()
                    } else {
                        "cordoned".into()
                    });
                })
                .await
            }
            RolloutHostState::Cordoned => {
                if member.version == rec.version {
                    // Already on it (a resumed rollout, or updated by hand).
                    return self
                        .set_host_step(&rec.id, &host, RolloutHostState::Returning, |h| {
                            h.message = Some(format!("already runs {}", rec.version));
                        })
                        .await;
                }
                if rec.reboot() {
                    let running: Vec<String> = self
                        .db
                        .list::<VmRecord>(kind::VM)
                        .into_iter()
                        .filter(|v| {
                            v.host.as_deref() == Some(host.as_str()) && v.state == VmStatus::Running
                        })
                        .map(|v| v.id)
                        .collect();
                    // The host's own evacuation: it knows what runs there.
                    let job = match self
                        .forward_or_here(&host, Action::EvacuateHost { host: host.clone() })
                        .await?
                    {
                        Answer::Job(j) => j.id,
                        other => {
                            return Err(errors::internal(format!(
                                "host {host} answered its evacuation with {other:?}"
                            )))
                        }
                    };
                    self.set_host_step(&rec.id, &host, RolloutHostState::Evacuating, |h| {
                        h.job = Some(job.clone());
                        h.moved = running.iter().map(|v| (v.clone(), String::new())).collect();
                        h.message = Some(format!("moving {} running VMs away", running.len()));
                    })
                    .await
                } else {
                    self.rollout_install(&rec, &member).await
                }
            }
            RolloutHostState::Evacuating => match self.job_end(h.job.as_deref()) {
                None => Ok(()),
                Some(Ok(())) => {
                    let moved: Vec<(String, String)> = h
                        .moved
                        .iter()
                        .map(|(vm, _)| {
                            let to = self
                                .db
                                .get::<VmRecord>(kind::VM, vm)
                                .and_then(|(v, _)| v.host)
                                .unwrap_or_default();
                            (vm.clone(), to)
                        })
                        .collect();
                    self.set_host_step(&rec.id, &host, RolloutHostState::Cordoned, |h| {
                        h.moved = moved.clone();
                        h.job = None;
                        h.message = Some("evacuated".into());
                    })
                    .await?;
                    // The evacuated host installs next (Cordoned with its
                    // VMs gone goes straight to the install).
                    let fresh = self
                        .rollout()
                        .ok_or_else(|| errors::internal("rollout gone"))?;
                    self.rollout_install(&fresh, &member).await
                }
                Some(Err(e)) => {
                    self.rollout_fail(
                        &rec.id,
                        &host,
                        format!("its evacuation failed: {e}"),
                        self.serving(&rec, &host),
                    )
                    .await
                }
            },
            RolloutHostState::Installing => match self.job_end(h.job.as_deref()) {
                None => Ok(()),
                Some(Ok(())) => {
                    if rec.reboot() {
                        let r = self
                            .forward_or_here(
                                &host,
                                Action::RebootHost {
                                    force: false,
                                    shutdown_timeout_s: None,
                                },
                            )
                            .await;
                        if let Err(e) = r {
                            return self
                                .rollout_fail(
                                    &rec.id,
                                    &host,
                                    format!("it does not reboot into the new slot: {e}"),
                                    self.serving(&rec, &host),
                                )
                                .await;
                        }
                    }
                    // From the install's end, by the host's own clock: its
                    // verdict on the new version comes after it.
                    let ended = h
                        .job
                        .as_deref()
                        .and_then(|j| self.db.get::<JobRecord>(kind::JOB, j))
                        .and_then(|(j, _)| j.finished_at)
                        .unwrap_or_else(now_rfc3339);
                    self.set_host_step(&rec.id, &host, RolloutHostState::Restarting, |h| {
                        h.restart_at = Some(ended.clone());
                        h.message = Some(if rec.reboot() {
                            "rebooting into the new slot".into()
                        } else {
                            "nasvisord restarts into the new release".into()
                        });
                    })
                    .await
                }
                Some(Err(e)) => {
                    self.rollout_fail(
                        &rec.id,
                        &host,
                        format!("its install failed: {e}"),
                        self.serving(&rec, &host),
                    )
                    .await
                }
            },
            RolloutHostState::Restarting => self.rollout_restarting(&rec, &h, &member).await,
            RolloutHostState::Returning => {
                // Uncordoned first: the VMs move back to a host that takes
                // VMs again (one an administrator had cordoned stays so,
                // and its VMs stay where they went).
                if !h.was_cordoned {
                    self.set_cordon(&host, false).await?;
                }
                let mut stayed = Vec::new();
                if rec.move_back && !h.was_cordoned {
                    for (vm, _) in &h.moved {
                        if let Err(e) = self.move_back(&rec, &host, vm).await {
                            let name = self.vm_name(vm);
                            tracing::warn!(vm = %name, error = %e, "a VM does not move back after the update");
                            stayed.push(format!("{name} stays where it went ({e})"));
                        }
                    }
                }
                let message = if stayed.is_empty() {
                    format!("runs {}", rec.version)
                } else {
                    format!("runs {}; {}", rec.version, stayed.join("; "))
                };
                self.set_host_step(&rec.id, &host, RolloutHostState::Done, |h| {
                    h.job = None;
                    h.finished_at = Some(now_rfc3339());
                    h.message = Some(message.clone());
                })
                .await?;
                self.event(
                    "cluster-update-host-done",
                    Severity::Info,
                    Some(format!("host/{host}")),
                    format!(
                        "cluster update {}: host {host} runs {} (was {})",
                        rec.id, rec.version, h.from_version
                    ),
                )
                .await;
                Ok(())
            }
            RolloutHostState::Waiting
            | RolloutHostState::Copying
            | RolloutHostState::Done
            | RolloutHostState::Failed => Ok(()),
        }
    }

    /// Live-migrates VM `vm`, evacuated from `host`, back to it (when it
    /// still runs elsewhere), and waits for the move to end.
    async fn move_back(
        self: &Arc<Self>,
        rec: &RolloutRecord,
        host: &str,
        vm: &str,
    ) -> Result<(), CoreError> {
        let Some((v, _)) = self.db.get::<VmRecord>(kind::VM, vm) else {
            return Ok(());
        };
        let Some(at) = v.host.clone().filter(|h| h != host) else {
            return Ok(());
        };
        if v.state != VmStatus::Running {
            return Ok(());
        }
        let answer = self
            .forward_or_here(
                &at,
                Action::MigrateVm {
                    id: v.id.clone(),
                    migrate: VmMigrate {
                        host: host.to_string(),
                        max_downtime_ms: None,
                    },
                },
            )
            .await?;
        let Answer::Job(job) = answer else {
            return Err(errors::internal(format!(
                "host {at} answered the move of VM {} with {answer:?}",
                v.name
            )));
        };
        self.set_host_step(&rec.id, host, RolloutHostState::Returning, |h| {
            h.job = Some(job.id.clone());
            h.message = Some(format!("moving VM {} back from host {at}", v.name));
        })
        .await?;
        loop {
            match self.job_end(Some(&job.id)) {
                None => tokio::time::sleep(Duration::from_millis(250)).await,
                Some(r) => return r.map_err(errors::conflict),
            }
        }
    }

    /// Starts the install on `member` and records its job.
    async fn rollout_install(
        self: &Arc<Self>,
        rec: &RolloutRecord,
        member: &HostRecord,
    ) -> Result<(), CoreError> {
        let call = RolloutInstall {
            rollout: rec.id.clone(),
            sha256: rec.sha256.clone(),
        };
        let r = if member.id == self.host.id {
            self.rollout_install_here(call).await
        } else {
            self.call_peer(member, call, CALL_TIMEOUT).await
        };
        match r {
            Ok(i) => {
                self.set_host_step(&rec.id, &member.id, RolloutHostState::Installing, |h| {
                    h.job = Some(i.job.clone());
                    h.message = Some(format!("installing {} (job {})", rec.version, i.job));
                })
                .await
            }
            Err(e) => {
                self.rollout_fail(
                    &rec.id,
                    &member.id,
                    format!("its install does not start: {e}"),
                    self.serving(rec, &member.id),
                )
                .await
            }
        }
    }

    /// A host restarting or rebooting: done once it is online, healthy and
    /// on the new version; failed when its own update says so or it takes
    /// too long.
    async fn rollout_restarting(
        self: &Arc<Self>,
        rec: &RolloutRecord,
        h: &RolloutHost,
        member: &HostRecord,
    ) -> Result<(), CoreError> {
        let host = &h.host;
        let since = h
            .restart_at
            .as_deref()
            .and_then(parse_time)
            .unwrap_or_else(time::OffsetDateTime::now_utc);
        let waited = (time::OffsetDateTime::now_utc() - since)
            .try_into()
            .unwrap_or(Duration::ZERO);
        // Its own record says what it runs once it started again (the
        // install was skipped when it ran the version already); its
        // firmware status, whether the new version is still on trial, and
        // its verdict: a release rolled back, a slot that failed.
        let firmware = if member.online && waited > Duration::from_secs(2) {
            match self.forward_or_here(host, Action::GetFirmware).await {
                Ok(Answer::Firmware(fw)) => Some(fw),
                _ => None,
            }
        } else {
            None
        };
        if let Some(fw) = &firmware {
            let on_trial = fw.service.as_ref().is_some_and(|s| s.on_trial.is_some());
            // Good, as docs/appliance.md defines it: up, store and plugins
            // (its trial ended or its slot was judged), rejoined. What its
            // health checks report (a disk nearly full, say) is the host's
            // state, not the update's: shown, not waited for.
            if member.version == rec.version
                && member.online
                && member.protocol_compatible
                && !on_trial
                && fw.pending.is_none()
            {
                return self
                    .set_host_step(&rec.id, host, RolloutHostState::Returning, |h| {
                        h.message = Some(format!("healthy and rejoined on {}", rec.version));
                    })
                    .await;
            }
        }
        if let Some(fw) = firmware {
            {
                // Only a verdict on this attempt: a resumed update's host
                // may show the failure of the attempt before.
                if let Some(o) = fw.last_outcome.as_ref().filter(|o| {
                    o.version.as_deref() == Some(rec.version.as_str())
                        && o.result == FirmwareOutcomeKind::Failed
                        && parse_time(&o.at).is_some_and(|at| at >= since)
                }) {
                    return self
                        .rollout_fail(
                            &rec.id,
                            host,
                            format!(
                                "the update did not become healthy: {}",
                                o.reason.as_deref().unwrap_or("failed")
                            ),
                            self.serving(rec, host),
                        )
                        .await;
                }
            }
        }
        let limit = if rec.reboot() {
            REBOOT_LIMIT
        } else {
            SERVICE_RESTART_LIMIT
        };
        if waited > limit {
            return self
                .rollout_fail(
                    &rec.id,
                    host,
                    format!(
                        "not back healthy on {} within {} s (it reports {}{})",
                        rec.version,
                        limit.as_secs(),
                        member.version,
                        if member.online { "" } else { ", offline" }
                    ),
                    self.serving(rec, host),
                )
                .await;
        }
        Ok(())
    }

    /// Carries `action` out on `host` (here when it is this host).
    async fn forward_or_here(
        self: &Arc<Self>,
        host: &str,
        action: Action,
    ) -> Result<Answer, CoreError> {
        if host == self.host.id {
            self.handle_here(action).await
        } else {
            self.forward(host, action).await
        }
    }

    /// How job `id` ended: `None` while it runs.
    fn job_end(&self, id: Option<&str>) -> Option<Result<(), String>> {
        let Some(id) = id else {
            return Some(Err("no job recorded".into()));
        };
        match self.db.get::<JobRecord>(kind::JOB, id) {
            Some((j, _)) if j.state.is_final() => Some(match j.state {
                JobState::Succeeded => Ok(()),
                _ => Err(j.error.unwrap_or_else(|| "failed".into())),
            }),
            Some(_) => None,
            None => Some(Err(format!("job {id} is gone"))),
        }
    }

    /// Records host `host`'s step, and whatever `f` sets.
    async fn set_host_step(
        &self,
        id: &str,
        host: &str,
        state: RolloutHostState,
        f: impl Fn(&mut RolloutHost),
    ) -> Result<(), CoreError> {
        self.db
            .update::<RolloutRecord, _>(KIND, KEY, |r| {
                still_running(r, id)?;
                if let Some(h) = r.hosts.iter_mut().find(|h| h.host == host) {
                    h.state = state;
                    f(h);
                }
                Ok(())
            })
            .await?;
        tracing::info!(
            rollout = id,
            host,
            state = state.as_str(),
            "cluster update step"
        );
        Ok(())
    }

    /// The hosts on the old and the new version, for the advice.
    fn serving(&self, rec: &RolloutRecord, failed: &str) -> String {
        let done: Vec<&str> = rec
            .hosts
            .iter()
            .filter(|h| h.state == RolloutHostState::Done)
            .map(|h| h.host.as_str())
            .collect();
        let old: Vec<&str> = rec
            .hosts
            .iter()
            .filter(|h| h.state != RolloutHostState::Done && h.host != failed)
            .map(|h| h.host.as_str())
            .collect();
        let mut parts = Vec::new();
        if !done.is_empty() {
            parts.push(format!("{} on {}", done.join(", "), rec.version));
        }
        if !old.is_empty() {
            parts.push(format!("{} not updated", old.join(", ")));
        }
        if parts.is_empty() {
            "no other host".into()
        } else {
            format!("serving: {}", parts.join("; "))
        }
    }

    /// Stops the rollout at `host`: recorded, the host uncordoned when this
    /// rollout cordoned it and it is online (it serves on what it runs).
    async fn rollout_fail(
        &self,
        id: &str,
        host: &str,
        reason: String,
        serving: String,
    ) -> Result<(), CoreError> {
        let rec = self
            .db
            .update::<RolloutRecord, _>(KIND, KEY, |r| {
                still_running(r, id)?;
                r.state = RolloutState::Failed;
                r.failure = Some(format!("host {host}: {reason}"));
                r.advice = Some(format!(
                    "{serving}. Find the cause on host {host} (`nasvisor firmware status`, its \
                     events and journal), then `nasvisor cluster update resume` goes on from \
                     host {host}; or `nasvisor cluster update abort` ends the update with the \
                     hosts on the versions they run, which stay compatible. Going back on an \
                     updated host needs a newer bundle (the rollback floor refuses older ones)"
                ));
                if let Some(h) = r.hosts.iter_mut().find(|h| h.host == host) {
                    h.state = RolloutHostState::Failed;
                    h.message = Some(reason.clone());
                    h.finished_at = Some(now_rfc3339());
                }
                Ok(())
            })
            .await?;
        if let Some(h) = rec.hosts.iter().find(|h| h.host == host) {
            let online = self.host_record(host).is_ok_and(|m| m.online);
            if h.started_at.is_some() && !h.was_cordoned && online {
                self.set_cordon(host, false)
                    .await
                    .best_effort("uncordon the host a cluster update stopped at");
            }
        }
        self.event(
            "cluster-update-failed",
            Severity::Error,
            Some(format!("host/{host}")),
            format!(
                "cluster update {id} to {} stopped at host {host}: {reason}",
                rec.version
            ),
        )
        .await;
        Ok(())
    }

    async fn rollout_done(&self, rec: &RolloutRecord) -> Result<(), CoreError> {
        let id = rec.id.clone();
        self.db
            .update::<RolloutRecord, _>(KIND, KEY, |r| {
                still_running(r, &id)?;
                r.state = RolloutState::Done;
                r.finished_at = Some(now_rfc3339());
                Ok(())
            })
            .await?;
        self.event(
            "cluster-update-done",
            Severity::Info,
            Some("cluster".into()),
            format!(
                "cluster update {} done: {} hosts run {}",
                rec.id,
                rec.hosts.len(),
                rec.version
            ),
        )
        .await;
        Ok(())
    }

    // ---- on each member ----

    /// `rollout-fetch`: the bundle here (copied from its holder unless it
    /// is here already), whole, and an install would take it.
    pub(crate) async fn rollout_fetch(&self, c: RolloutFetch) -> Result<RolloutFetched, CoreError> {
        // One at a time: a new leader may ask again while the old one's
        // copy still runs; the second finds the first's copy whole.
        let _one = FETCH.lock().await;
        let settings = self.firmware()?.clone();
        let path = bundle_path(&settings, &c.sha256)?;
        let dir = bundle_dir(&settings);
        std::fs::create_dir_all(&dir)
            .map_err(|e| errors::internal(format!("cannot create {}: {e}", dir.display())))?;
        let have = {
            let p = path.clone();
            tokio::task::spawn_blocking(move || sha256_of(&p).ok())
                .await
                .map_err(errors::internal)?
        };
        if have.as_deref() != Some(c.sha256.as_str()) {
            if c.holder == self.host.id {
                return Err(errors::conflict(format!(
                    "this host received the bundle, but it is no longer in {}",
                    dir.display()
                )));
            }
            prune_bundles(&dir, None);
            self.copy_bundle(&c, &path).await?;
        }
        prune_bundles(&dir, Some(&path));
        // The check an install makes before it writes a byte.
        let slots = settings.slot_set();
        let policy = settings.policy().map_err(errors::internal)?;
        let p = path.clone();
        let manifest = tokio::task::spawn_blocking(move || {
            let mut head = Vec::with_capacity(nasvisor_firmware::BUNDLE_HEAD_BYTES);
            use std::io::Read as _;
            std::fs::File::open(&p)
                .and_then(|f| {
                    f.take(nasvisor_firmware::BUNDLE_HEAD_BYTES as u64)
                        .read_to_end(&mut head)
                })
                .map_err(|e| e.to_string())?;
            slots.precheck(&head, &policy).map_err(|e| e.chain())
        })
        .await
        .map_err(errors::internal)?
        .map_err(|e| {
            std::fs::remove_file(&path).best_effort("remove a refused bundle");
            errors::invalid("bundle", e)
        })?;
        Ok(RolloutFetched {
            version: manifest.version.to_string(),
            installed: Some(self.host.version.clone()),
        })
    }

    /// Copies the bundle from its holder over NBD into `dest`; it must be
    /// the bundle of the rollout (size and SHA-256).
    async fn copy_bundle(&self, c: &RolloutFetch, dest: &Path) -> Result<(), CoreError> {
        let holder = self.host_record(&c.holder)?;
        let export = BundleExport {
            rollout: c.rollout.clone(),
            sha256: c.sha256.clone(),
        };
        let v: BundleExportReply = self.call_peer(&holder, export, CALL_TIMEOUT).await?;
        let tmp = dest.with_extension("part");
        let cancel = tokio_util::sync::CancellationToken::new();
        let r = self
            .pull_export(&holder, &v.host, v.port, &v.export, "raw", &tmp, &cancel)
            .await;
        let end = ImageExportEnd { id: v.id.clone() };
        if let Err(e) = self.call_peer(&holder, end, CALL_TIMEOUT).await {
            tracing::warn!(host = %holder.id, error = %e, "the holder did not stop serving the bundle; it stops when it restarts");
        }
        if let Err(e) = r {
            nasvisor_best_effort::remove_file(&tmp);
            return Err(errors::internal(format!(
                "copying the bundle from host {}: {}",
                holder.id,
                match e {
                    crate::jobs::JobFailure::Failed(e) => e,
                    crate::jobs::JobFailure::Cancelled => "cancelled".into(),
                }
            )));
        }
        // NBD rounds the size up to 512 bytes: cut it back, then it must be
        // the holder's file, byte for byte.
        let (t, size, want) = (tmp.clone(), c.size, c.sha256.clone());
        let checked = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&t)
                .map_err(|e| e.to_string())?;
            let len = f.metadata().map_err(|e| e.to_string())?.len();
            if len < size {
                return Err(format!("the copy has {len} bytes, the bundle {size}"));
            }
            f.set_len(size).map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())?;
            let got = sha256_of(&t).map_err(|e| e.to_string())?;
            if got != want {
                return Err(format!("the copy's SHA-256 is {got}, the bundle's {want}"));
            }
            Ok(())
        })
        .await
        .map_err(errors::internal)?;
        if let Err(e) = checked {
            nasvisor_best_effort::remove_file(&tmp);
            return Err(errors::internal(format!(
                "copying the bundle from host {}: {e}",
                holder.id
            )));
        }
        std::fs::rename(&tmp, dest)
            .map_err(|e| errors::internal(format!("cannot keep the bundle: {e}")))?;
        Ok(())
    }

    /// `bundle-export` on the holder.
    pub(crate) async fn export_bundle(
        &self,
        from: u64,
        c: &BundleExport,
    ) -> Result<BundleExportReply, CoreError> {
        let settings = self.firmware()?;
        let path = bundle_path(settings, &c.sha256)?;
        if !path.exists() {
            return Err(errors::not_found(format!(
                "the bundle of cluster update {} on host {}",
                c.rollout, self.host.id
            )));
        }
        let export = format!("bundle-{}", &c.sha256[..12]);
        let (id, host, port) = self.serve_file(from, &path, "raw", &export).await?;
        Ok(BundleExportReply {
            id,
            host,
            port,
            export,
        })
    }

    /// `rollout-install`: the kept bundle installs as this host's
    /// firmware-install job (a link to it goes to the upload directory, and
    /// the job removes that).
    pub(crate) async fn rollout_install_here(
        self: &Arc<Self>,
        c: RolloutInstall,
    ) -> Result<RolloutInstalling, CoreError> {
        let settings = self.firmware()?.clone();
        let path = bundle_path(&settings, &c.sha256)?;
        let upload = settings.upload_dir();
        std::fs::create_dir_all(&upload)
            .map_err(|e| errors::internal(format!("cannot create {}: {e}", upload.display())))?;
        let link = upload.join(format!("rollout-{}.nvfw", c.rollout));
        std::fs::remove_file(&link).ok();
        std::fs::hard_link(&path, &link).map_err(|e| {
            errors::conflict(format!(
                "the bundle of cluster update {} is not on this host ({}: {e})",
                c.rollout,
                path.display()
            ))
        })?;
        let job = self.start_firmware_install(settings, link).await?;
        Ok(RolloutInstalling { job: job.id })
    }
}

/// A step of rollout `id` is recorded only while that rollout runs (it
/// may have been aborted, or replaced, meanwhile).
fn still_running(r: &RolloutRecord, id: &str) -> Result<(), CoreError> {
    if r.id != id || !r.state.is_running() {
        return Err(errors::conflict(format!(
            "cluster update {id} is no longer running"
        )));
    }
    Ok(())
}

/// An RFC 3339 time of a record.
fn parse_time(t: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
}

/// The store's "not found" of the rollout record, as the API says it.
fn none_started(e: CoreError) -> CoreError {
    match e {
        CoreError::NotFound { .. } => errors::not_found("cluster update (none was ever started)"),
        e => e,
    }
}

/// What the hosts run after an abort.
fn mixed_versions_advice(r: &RolloutRecord) -> String {
    let done: Vec<&str> = r
        .hosts
        .iter()
        .filter(|h| h.state == RolloutHostState::Done)
        .map(|h| h.host.as_str())
        .collect();
    if done.is_empty() {
        "no host was updated".into()
    } else {
        format!(
            "{} run {}; the others their version. Mixed versions stay compatible; start a new \
             cluster update to bring every host to one version",
            done.join(", "),
            r.version
        )
    }
}

/// Reads and drops a refused upload's body, so the client gets the answer.
async fn drain(mut body: impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin) {
    use futures_util::StreamExt as _;
    while let Some(Ok(_)) = body.next().await {}
}
