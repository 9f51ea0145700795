//! Failover and switchover: what the leader does for HA VMs after each
//! heartbeat round (docs/ha.md has the timeline).
//!
//! - **A lost host with HA VMs** (recorded offline, or removed): the
//!   ha-policy plugin's `react` hears `heartbeat-missed` with how long the
//!   host has been silent, and answers `fence` (or `hold` until its
//!   `fence-after-ms`). The leader then fences the host: the fence command,
//!   when one is configured, may confirm it is off; otherwise the host is
//!   fenced once its own deadline has passed (`lease.rs`: it stopped its
//!   HA VMs, or its watchdog killed them) plus a margin. The host's record
//!   says how it was fenced, with an event `host-fenced`.
//! - **A fenced host**: `react` hears `host-fenced` and answers `failover`
//!   of each of its HA VMs, to the passive host (or another one). The leader
//!   carries each out: the VM's record moves to the target, which starts
//!   it from its disks on the shared pool (`vm-failed-over`). A VM whose
//!   disks only the lost host reaches stays where it is, with an event.
//! - **A degraded host or one in maintenance** that still answers: `react`
//!   hears `host-degraded` and answers `switchover` of each running HA VM
//!   to its passive host: a live migration (`vm-switchover`).
//!
//! Every answer is validated by the plugin host first (a failover needs its
//! host fenced, a target healthy and with room, ...), and a failing plugin
//! falls back to the native policy; each decision is journaled there.
//! Failovers and switchovers run in tasks of their own: the leader's loop,
//! which renews every host's HA lease, never waits for a VM to start.

use crate::cluster::lease::FAILOVER_MARGIN;
use crate::errors;
use crate::model::{kind, now_rfc3339, Desired, HostRecord, Severity, VmRecord, VmStatus};
use crate::{lock, Inner};
use nasvisor_api_types::{Action, CoreError, HostHealth, PowerOp, VmMigrate};
use nasvisor_plugin_host::{DecisionInput, DecisionOutput};
use nasvisor_plugin_sdk::prelude::{Event, HaAction, HeartbeatMissed, HostDegraded, Notice};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after a failover of a VM that did not succeed the leader tries
/// again (a failover that succeeded lifts the wait at once).
const FAILOVER_RETRY: Duration = Duration::from_secs(15);
/// How long after a switchover of a VM was tried the leader tries again.
const SWITCHOVER_RETRY: Duration = Duration::from_secs(60);

/// The leader's HA bookkeeping (in memory: a new leader starts afresh,
/// which at worst asks the policy again).
#[derive(Default)]
pub(crate) struct HaRuntime {
    /// Lost hosts the policy asked to fence, and their fence command.
    fencing: Mutex<HashMap<String, Fencing>>,
    /// When a failover or switchover of a VM was last tried.
    tried: Attempts,
    /// Hosts the policy holds until then.
    held: Mutex<HashMap<String, Instant>>,
    /// HA VMs whose lost passive host stays their passive host (no other
    /// host could hold the reservation), with that host: announced once.
    pub(crate) kept_passive: Mutex<HashMap<String, String>>,
}

struct Fencing {
    command: Arc<Mutex<FenceCommand>>,
}

/// When a move of each VM was last tried: an attempt that fails is not
/// repeated at once (every heartbeat round), one that succeeded lifts the
/// wait (the VM may have to move again from its new host right away).
#[derive(Default)]
struct Attempts(Mutex<HashMap<String, Instant>>);

impl Attempts {
    /// Whether VM `id` may be tried now, `retry` after its last attempt
    /// (and notes that it is).
    fn try_now(&self, id: &str, retry: Duration) -> bool {
        let mut tried = lock(&self.0);
        let now = Instant::now();
        if tried
            .get(id)
            .is_some_and(|t| now.duration_since(*t) < retry)
        {
            return false;
        }
        tried.insert(id.to_string(), now);
        true
    }

    /// VM `id` moved: its next move may be tried at once.
    fn succeeded(&self, id: &str) {
        lock(&self.0).remove(id);
    }
}

/// Where a host's fence command is.
#[derive(Debug, Clone, PartialEq)]
enum FenceCommand {
    None,
    Running,
    Confirmed,
    Failed(String),
}

/// The move the leader makes for the HA VMs of a host.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// Its host is fenced: start them elsewhere.
    Failover,
    /// Its host is degraded: move them live.
    Switchover,
}

/// States in which an HA VM is meant to be running, so that a failover
/// brings it back.
fn should_run(vm: &VmRecord) -> bool {
    vm.ha
        && vm.desired == Desired::Running
        && matches!(
            vm.state,
            VmStatus::Running
                | VmStatus::Starting
                | VmStatus::Paused
                | VmStatus::Migrating
                | VmStatus::Crashed
                | VmStatus::GuestPanicked
        )
}

impl Inner {
    /// The leader's HA round (see the module's documentation), as the
    /// leader of `term`: what it decides is written in that term only.
    pub(crate) async fn ha_round(self: &Arc<Self>, term: u64) {
        if self.db.store().leader_term() != Some(term) {
            return;
        }
        let hosts: Vec<HostRecord> = self.db.list(kind::HOST);
        lock(&self.ha.fencing).retain(|id, _| hosts.iter().any(|h| &h.id == id && !h.online));
        for h in hosts {
            let vms: Vec<VmRecord> = self
                .db
                .list::<VmRecord>(kind::VM)
                .into_iter()
                .filter(|v| v.host.as_deref() == Some(h.id.as_str()) && should_run(v))
                .collect();
            if vms.is_empty() {
                continue;
            }
            if self.lost_host(&h.id).is_some() {
                let fenced = if h.fenced.is_some() {
                    true
                } else {
                    self.fence_step(&h, term).await
                };
                if fenced {
                    self.failover_step(&h, &vms, term).await;
                }
                continue;
            }
            let (health, reasons) = self.health_of(&h, false);
            if matches!(health, HostHealth::Degraded | HostHealth::Maintenance) {
                let running: Vec<VmRecord> = vms
                    .into_iter()
                    .filter(|v| v.state == VmStatus::Running)
                    .collect();
                self.switchover_step(&h, reasons, &running, term).await;
            }
        }
    }

    /// Asks the ha policy about `events`; its actions (none when it could
    /// not be asked: the plugin host already fell back to the native
    /// policy if the plugin failed).
    pub(crate) async fn react(&self, events: Vec<Event>) -> Vec<HaAction> {
        let decision = self
            .decide(DecisionInput::React {
                view: self.cluster_view(),
                events,
            })
            .await;
        match decision.map(|d| d.answer) {
            Ok(Ok(DecisionOutput::Actions(a))) => a,
            Ok(other) => {
                tracing::warn!(answer = ?other, "the ha policy gave no actions");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "the ha policy could not be asked");
                Vec::new()
            }
        }
    }

    /// An event with an ha policy's notice.
    pub(crate) async fn ha_notice(&self, target: Option<String>, n: Notice) {
        use nasvisor_plugin_sdk::prelude::Severity as S;
        let severity = match n.severity {
            S::Info => Severity::Info,
            S::Warning => Severity::Warning,
            S::Critical => Severity::Error,
        };
        self.event("ha-notice", severity, target, n.message).await;
    }

    /// Lost host `h` with HA VMs, not fenced yet: asks the policy (once it
    /// asked to fence, no more), then fences when it is safe. Whether `h`
    /// is fenced now. The fence is recorded in `term` only.
    async fn fence_step(self: &Arc<Self>, h: &HostRecord, term: u64) -> bool {
        let silent = lock(&self.cluster.last_seen)
            .get(&h.id)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let asked = lock(&self.ha.fencing).contains_key(&h.id);
        if !asked {
            let held = lock(&self.ha.held)
                .get(&h.id)
                .is_some_and(|t| Instant::now() < *t);
            if held {
                return false;
            }
            let actions = self
                .react(vec![Event::HeartbeatMissed(HeartbeatMissed {
                    host: h.id.clone(),
                    missed_ms: silent.as_millis() as u64,
                })])
                .await;
            for a in actions {
                match a {
                    HaAction::Fence(f) if f.host == h.id => {
                        tracing::warn!(host = %h.id, reason = %f.reason, "the ha policy asks to fence a lost host");
                        let command = Arc::new(Mutex::new(FenceCommand::None));
                        if !self.cfg.fence_command.is_empty() {
                            *lock(&command) = FenceCommand::Running;
                            self.spawn_fence_command(h, command.clone());
                        }
                        lock(&self.ha.fencing).insert(h.id.clone(), Fencing { command });
                    }
                    HaAction::Hold(x) => {
                        let until = Instant::now() + Duration::from_millis(x.delay_ms);
                        lock(&self.ha.held).insert(h.id.clone(), until);
                    }
                    HaAction::Notify(n) => self.ha_notice(Some(format!("host/{}", h.id)), n).await,
                    other => {
                        tracing::info!(host = %h.id, action = ?other, "not carried out before the lost host is fenced")
                    }
                }
            }
        }
        let command = match lock(&self.ha.fencing).get(&h.id) {
            Some(f) => lock(&f.command).clone(),
            None => return false,
        };
        let wait = self.ha_fence_after() + FAILOVER_MARGIN;
        let how = match command {
            FenceCommand::Confirmed => "the fence command confirmed that it is off".to_string(),
            _ if silent >= wait => format!(
                "silent for {:.1} s, past its own deadline ({:.1} s after its last contact it \
                 stops its HA VMs, and its watchdog kills them)",
                silent.as_secs_f64(),
                self.ha_fence_after().as_secs_f64()
            ),
            _ => return false,
        };
        let record = format!("{how} (at {})", now_rfc3339());
        let r = self
            .db
            .update_as::<HostRecord, _>(Some(term), kind::HOST, &h.id, |r| {
                if !r.online {
                    r.fenced = Some(record.clone());
                }
                Ok(())
            })
            .await;
        match r {
            Ok(r) if r.fenced.is_some() => {
                self.event(
                    "host-fenced",
                    Severity::Warning,
                    Some(format!("host/{}", h.id)),
                    format!("host {} is fenced: {how}", h.id),
                )
                .await;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(host = %h.id, error = %e, "cannot record that a host is fenced");
                false
            }
        }
    }

    /// Runs the fence command for host `h` and records its outcome.
    fn spawn_fence_command(self: &Arc<Self>, h: &HostRecord, state: Arc<Mutex<FenceCommand>>) {
        let argv: Vec<String> = self
            .cfg
            .fence_command
            .iter()
            .map(|a| a.replace("{host}", &h.id).replace("{address}", &h.address))
            .collect();
        let timeout = self.cfg.fence_command_timeout;
        let me = self.clone();
        let host = h.id.clone();
        tokio::spawn(async move {
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = tokio::time::timeout(timeout, cmd.output()).await;
            let outcome = match out {
                Ok(Ok(o)) if o.status.success() => FenceCommand::Confirmed,
                Ok(Ok(o)) => FenceCommand::Failed(format!(
                    "{}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Ok(Err(e)) => FenceCommand::Failed(format!("cannot run {:?}: {e}", argv[0])),
                Err(_) => FenceCommand::Failed(format!("no answer within {timeout:?}")),
            };
            let (kind_, severity, message) = match &outcome {
                FenceCommand::Confirmed => (
                    "host-fence-confirmed",
                    Severity::Warning,
                    format!("the fence command confirmed that host {host} is off"),
                ),
                FenceCommand::Failed(why) => (
                    "host-fence-failed",
                    Severity::Error,
                    format!(
                        "the fence command for host {host} failed ({why}); the leader waits \
                         for the host's own deadline instead"
                    ),
                ),
                _ => unreachable!("the outcome of a finished command"),
            };
            *lock(&state) = outcome;
            me.event(kind_, severity, Some(format!("host/{host}")), message)
                .await;
        });
    }

    /// Fenced host `h`: asks the policy where its HA VMs go, and fails
    /// them over.
    async fn failover_step(self: &Arc<Self>, h: &HostRecord, vms: &[VmRecord], term: u64) {
        let due: Vec<&VmRecord> = vms
            .iter()
            .filter(|v| self.ha.tried.try_now(&v.id, FAILOVER_RETRY))
            .collect();
        self.move_step(
            h,
            &due,
            Event::HostFenced(h.id.clone()),
            Move::Failover,
            term,
        )
        .await;
    }

    /// Degraded host `h` (or in maintenance): asks the policy, and moves
    /// its running HA VMs to their passive hosts.
    async fn switchover_step(
        self: &Arc<Self>,
        h: &HostRecord,
        reasons: Vec<String>,
        vms: &[VmRecord],
        term: u64,
    ) {
        let due: Vec<&VmRecord> = vms
            .iter()
            .filter(|v| {
                v.passive.as_deref().is_some_and(|p| {
                    self.host_record(p)
                        .is_ok_and(|r| self.health_of(&r, false).0 == HostHealth::Healthy)
                })
            })
            .filter(|v| self.ha.tried.try_now(&v.id, SWITCHOVER_RETRY))
            .collect();
        let event = Event::HostDegraded(HostDegraded {
            host: h.id.clone(),
            reasons,
        });
        self.move_step(h, &due, event, Move::Switchover, term).await;
    }

    /// Sends `event` about host `h` to the policy and carries out the
    /// moves of kind `kind` it answers for the VMs `due`, each in a task,
    /// as the leader of `term`.
    async fn move_step(
        self: &Arc<Self>,
        h: &HostRecord,
        due: &[&VmRecord],
        event: Event,
        kind: Move,
        term: u64,
    ) {
        if due.is_empty() {
            return;
        }
        for a in self.react(vec![event]).await {
            let m = match (kind, a) {
                (Move::Failover, HaAction::Failover(m))
                | (Move::Switchover, HaAction::Switchover(m))
                    if due.iter().any(|v| v.id == m.vm) =>
                {
                    m
                }
                (_, HaAction::Notify(n)) => {
                    self.ha_notice(Some(format!("host/{}", h.id)), n).await;
                    continue;
                }
                (_, other) => {
                    tracing::info!(host = %h.id, action = ?other, ?kind, "not carried out");
                    continue;
                }
            };
            let me = self.clone();
            let host = h.id.clone();
            tokio::spawn(async move {
                match kind {
                    Move::Failover => {
                        let why = format!("host {host} is fenced: {}", m.reason);
                        me.fail_over(&m.vm, &m.target, &why, Some(term)).await
                    }
                    Move::Switchover => {
                        let why = format!("host {host} is degraded: {}", m.reason);
                        me.switch_over(&m.vm, &m.target, &why, term).await
                    }
                }
            });
        }
    }

    /// Fails HA VM `id` over to `target`: its record moves there and the
    /// target starts it. Events say what happened. With `term`, the
    /// leader of that term decided it (its host is fenced), and the record
    /// moves only if it still leads in that term; without, the VM's own
    /// host decided it (its QEMU went down there).
    pub(crate) async fn fail_over(
        self: &Arc<Self>,
        id: &str,
        target: &str,
        why: &str,
        term: Option<u64>,
    ) {
        let started = Instant::now();
        let r = self.fail_over_inner(id, target, why, term).await;
        let name = self
            .find_vm(id)
            .map(|v| v.name)
            .unwrap_or_else(|_| id.to_string());
        match r {
            Ok(from) => {
                self.ha.tried.succeeded(id);
                self.event(
                    "vm-failed-over",
                    Severity::Warning,
                    Some(format!("vm/{name}")),
                    format!(
                        "HA VM {name} failed over from host {from} to host {target} and runs \
                         there (started in {:.1} s): {why}",
                        started.elapsed().as_secs_f64()
                    ),
                )
                .await
            }
            Err(e) => {
                self.event(
                    "vm-failover-failed",
                    Severity::Error,
                    Some(format!("vm/{name}")),
                    format!("HA VM {name} could not fail over to host {target}: {e} ({why})"),
                )
                .await
            }
        }
    }

    /// The failover itself; the host the VM left.
    async fn fail_over_inner(
        self: &Arc<Self>,
        id: &str,
        target: &str,
        why: &str,
        term: Option<u64>,
    ) -> Result<String, CoreError> {
        let (vm, from) = {
            let _g = self.ops.lock().await;
            let vm = self.find_vm(id)?;
            let from = vm.host.clone().unwrap_or_default();
            if from == target {
                return Err(errors::conflict(format!(
                    "VM {} is on host {target} already",
                    vm.name
                )));
            }
            let down_here = matches!(vm.state, VmStatus::Crashed | VmStatus::GuestPanicked)
                && from == self.host.id
                && !self.processes.contains(&vm.id);
            let fenced = self
                .db
                .get::<HostRecord>(kind::HOST, &from)
                .is_none_or(|(h, _)| h.fenced.is_some());
            if !fenced && !down_here {
                return Err(errors::conflict(format!(
                    "host {from} of VM {} is not fenced and the VM did not go down there",
                    vm.name
                )));
            }
            self.check_disks_follow(&vm, &from, target)?;
            if vm.passive.as_deref() != Some(target) {
                self.place_excluding(&vm, Some(target), &[from.as_str()])
                    .await?;
            }
            let moved = format!(
                "failover from {from} to {target} at {}: {why}",
                now_rfc3339()
            );
            let vm = self
                .db
                .update_as::<VmRecord, _>(term, kind::VM, &vm.id, |v| {
                    // As the log has it now: a replica recorded outdated
                    // meanwhile stops the move.
                    self.check_disks_follow(v, &from, target)?;
                    v.host = Some(target.to_string());
                    v.take_replica_on(target);
                    v.state = VmStatus::Stopped;
                    v.state_reason = Some(format!("failing over from host {from}"));
                    v.last_ha_move = Some(moved.clone());
                    Ok(())
                })
                .await?;
            (vm, from)
        };
        if let Err(e) = self.start_on(&vm, target).await {
            self.note_start_failure(&vm, &format!("failed over from host {from}"), &e)
                .await;
            return Err(e);
        }
        Ok(from)
    }

    /// Starts `vm` on `target` (here, or forwarded there).
    pub(crate) async fn start_on(
        self: &Arc<Self>,
        vm: &VmRecord,
        target: &str,
    ) -> Result<(), CoreError> {
        if target == self.host.id {
            self.start_vm(vm, None).await.map(|_| ())
        } else {
            let start = Action::VmPower {
                id: vm.id.clone(),
                op: PowerOp::Start { host: None },
            };
            self.forward(target, start).await.map(|_| ())
        }
    }

    /// Switches HA VM `id` over to `target` (its passive host): a live
    /// migration started on its host. Events say what happened.
    async fn switch_over(self: &Arc<Self>, id: &str, target: &str, why: &str, term: u64) {
        let r = async {
            let vm = self.find_vm(id)?;
            let from = vm.host.clone().unwrap_or_default();
            let moved = format!(
                "switchover from {from} to {target} at {}: {why}",
                now_rfc3339()
            );
            self.db
                .update_as::<VmRecord, _>(Some(term), kind::VM, &vm.id, |v| {
                    v.last_ha_move = Some(moved.clone());
                    Ok(())
                })
                .await?;
            let migrate = VmMigrate {
                host: target.to_string(),
                max_downtime_ms: None,
            };
            if from == self.host.id {
                self.start_migration(&vm.id, migrate).await.map(|_| ())?;
            } else {
                let action = Action::MigrateVm {
                    id: vm.id.clone(),
                    migrate,
                };
                self.forward(&from, action).await.map(|_| ())?;
            }
            Ok::<_, CoreError>((vm.name, from))
        }
        .await;
        match r {
            Ok((name, from)) => {
                self.event(
                    "vm-switchover",
                    Severity::Warning,
                    Some(format!("vm/{name}")),
                    format!("HA VM {name} moves live from host {from} to its passive host {target}: {why}"),
                )
                .await
            }
            Err(e) => {
                let name = self
                    .find_vm(id)
                    .map(|v| v.name)
                    .unwrap_or_else(|_| id.to_string());
                self.event(
                    "vm-switchover-failed",
                    Severity::Error,
                    Some(format!("vm/{name}")),
                    format!("HA VM {name} could not switch over to host {target}: {e} ({why})"),
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempt_waits_and_a_successful_one_lifts_the_wait() {
        let a = Attempts::default();
        let hour = Duration::from_secs(3600);
        assert!(a.try_now("vm1", hour), "the first attempt goes");
        assert!(!a.try_now("vm1", hour), "no second attempt within the wait");
        assert!(a.try_now("vm2", hour), "another VM is not held by it");
        // vm1 moved: the next fault of its new host moves it again at once.
        a.succeeded("vm1");
        assert!(a.try_now("vm1", hour));
        assert!(!a.try_now("vm1", hour));
        assert!(a.try_now("vm1", Duration::ZERO), "past the wait it goes");
    }
}
