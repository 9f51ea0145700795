//! What administrators see of the plugins of every host: faults, fallbacks
//! and quarantines become cluster events, each host records its slots'
//! state in the replicated store (so any host lists them all), and
//! `plugin reset` lifts a quarantine on every host through the log.
//!
//! Decisions run on blocking threads; the policy host only queues what
//! happened ([`PolicyHost::drain_events`]) and the decision helper wakes the
//! report task, which turns the queue into events on the async side. Events
//! are raft writes on every host, so a faulty plugin under a burst of
//! decisions is reported at most once per world and kind every
//! [`FAULT_EVENT_INTERVAL`] on each host, with the count since the last
//! report ([`Coalescer`]).
//!
//! [`PolicyHost::drain_events`]: nasvisor_plugin_host::PolicyHost::drain_events

use crate::errors;
use crate::model::{kind, now_rfc3339, HostRecord, Severity};
use crate::{lock, Inner};
use nasvisor_api_types::CoreError;
use nasvisor_api_types::{PluginHostStateView, PluginResetView, PluginSlotState, PluginWorld};
use nasvisor_cluster::Revision;
use nasvisor_plugin_host::policy::PolicyEvent;
use nasvisor_plugin_host::SlotStatus;
use nasvisor_plugin_sdk::World;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most one `plugin-failed` (and one `plugin-fell-back`) event per world
/// per host in this interval; the next one carries the count since.
pub const FAULT_EVENT_INTERVAL: Duration = Duration::from_secs(10);

/// A host rewrites a slot's record for changed counters at most this often
/// (a change of plugin or of quarantine is written at once).
pub const STATE_WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// How often the report task looks at the queue without being woken (to
/// send the counts held back by [`FAULT_EVENT_INTERVAL`]).
const REPORT_TICK: Duration = Duration::from_secs(1);

/// Longest plugin label or fault cause carried into an event or a state
/// record, in bytes. A cause may quote what the plugin answered (an
/// invalid answer of megabytes); events and records stay small.
pub const MAX_REPORTED_TEXT: usize = 512;

/// `s` made fit for an event or a record: control characters (terminal
/// escapes, newlines) become spaces, and it is cut to [`MAX_REPORTED_TEXT`]
/// bytes at a character boundary, marked with `…`.
pub fn reported_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_REPORTED_TEXT + 3));
    for c in s.chars() {
        if out.len() + c.len_utf8() > MAX_REPORTED_TEXT {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The state of one world's slot on one host (kind `plugin-state`, key
/// `<world>/<host>`), as the host recorded it; also its API form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginHostState {
    pub host: String,
    pub world: PluginWorld,
    /// `name@version` of the plugin loaded there; none: the built-in
    /// default decides.
    pub plugin: Option<String>,
    /// `active`, `quarantined`, or `fallback` (no plugin: the built-in
    /// default decides).
    pub state: PluginSlotState,
    /// Faults of the plugin in a row (quarantine at the configured maximum).
    pub consecutive_failures: u32,
    /// Decisions the plugin answered validly since it was loaded there.
    pub decisions: u64,
    /// Faults of the plugin since it was loaded there.
    pub failures: u64,
    /// Decisions the built-in default made instead of the plugin (faults of
    /// the plugin or of the host, quarantine).
    pub fallbacks: u64,
    /// The cause of the plugin's last fault.
    pub last_failure: Option<String>,
    /// When the host recorded this (RFC 3339).
    pub updated_at: String,
}

impl PluginHostState {
    /// The state of `s` on `host`, stamped now.
    pub fn of(host: &str, s: &SlotStatus) -> PluginHostState {
        PluginHostState {
            host: host.to_string(),
            world: world_view(s.world),
            plugin: s.plugin.as_deref().map(reported_text),
            state: slot_state(s),
            consecutive_failures: s.consecutive_failures,
            decisions: s.decisions,
            failures: s.failures,
            fallbacks: s.fallbacks,
            last_failure: s.last_failure.as_deref().map(reported_text),
            updated_at: now_rfc3339(),
        }
    }

    /// The API form (`PluginHostState` schema).
    pub fn view(&self) -> PluginHostStateView {
        PluginHostStateView {
            host: self.host.clone(),
            world: self.world,
            plugin: self.plugin.clone(),
            state: self.state,
            consecutive_failures: self.consecutive_failures,
            decisions: self.decisions,
            failures: self.failures,
            fallbacks: self.fallbacks,
            last_failure: self.last_failure.clone(),
            updated_at: self.updated_at.clone(),
        }
    }

    /// Whether `other` says the same, its time aside.
    fn same_as(&self, other: &PluginHostState) -> bool {
        PluginHostState {
            updated_at: other.updated_at.clone(),
            ..self.clone()
        } == *other
    }

    /// Whether `other` differs in what must be written at once.
    fn transition_from(&self, other: &PluginHostState) -> bool {
        self.plugin != other.plugin || self.state != other.state
    }
}

/// `active`, `quarantined` or `fallback` (no plugin loaded).
pub fn slot_state(s: &SlotStatus) -> PluginSlotState {
    match (&s.plugin, s.quarantined) {
        (None, _) => PluginSlotState::Fallback,
        (Some(_), true) => PluginSlotState::Quarantined,
        (Some(_), false) => PluginSlotState::Active,
    }
}

/// A world, as the API names it.
pub fn world_view(w: World) -> PluginWorld {
    match w {
        World::Scheduler => PluginWorld::Scheduler,
        World::HaPolicy => PluginWorld::HaPolicy,
        World::Sha => PluginWorld::Sha,
        World::OsInstaller => PluginWorld::OsInstaller,
    }
}

fn state_key(world: &str, host: &str) -> String {
    format!("{world}/{host}")
}

/// A quarantine lift asked for (kind `plugin-reset`, key the world); every
/// host applies each new revision of it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginResetRecord {
    pub world: String,
    /// The host that took the request.
    pub requested_by: String,
    pub requested_at: String,
}

/// The report side of the plugins, kept in [`Inner`].
#[derive(Default)]
pub(crate) struct PluginReports {
    /// Woken after every decision; the report task waits on it.
    wake: Arc<tokio::sync::Notify>,
    /// World -> the revision of its `plugin-reset` record applied here.
    resets_applied: Mutex<HashMap<String, Revision>>,
}

impl PluginReports {
    /// Tells the report task that the policy host may have queued events.
    /// Never blocks.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// One event to record, made from one or more policy events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `count` faults of the plugin since the last report; `cause` is the
    /// last one's.
    Failed {
        world: World,
        plugin: String,
        cause: String,
        count: u64,
    },
    /// `count` decisions the built-in default made for a fault of the host.
    FellBack {
        world: World,
        plugin: String,
        cause: String,
        count: u64,
    },
    Quarantined {
        world: World,
        plugin: String,
        failures: u32,
    },
    Reset {
        world: World,
        plugin: String,
    },
}

impl Notice {
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Failed { .. } => "plugin-failed",
            Notice::FellBack { .. } => "plugin-fell-back",
            Notice::Quarantined { .. } => "plugin-quarantined",
            Notice::Reset { .. } => "plugin-reset",
        }
    }

    pub fn world(&self) -> World {
        match self {
            Notice::Failed { world, .. }
            | Notice::FellBack { world, .. }
            | Notice::Quarantined { world, .. }
            | Notice::Reset { world, .. } => *world,
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            Notice::Failed { .. } | Notice::FellBack { .. } => Severity::Warning,
            Notice::Quarantined { .. } => Severity::Error,
            Notice::Reset { .. } => Severity::Info,
        }
    }

    /// The event's message, naming the host, the world, the plugin and the
    /// cause.
    pub fn message(&self, host: &str) -> String {
        match self {
            Notice::Failed {
                world,
                plugin,
                cause,
                count: 1,
            } => format!(
                "host {host}: plugin {plugin} ({world}) failed a decision: {cause}; the built-in default decided"
            ),
            Notice::Failed {
                world,
                plugin,
                cause,
                count,
            } => format!(
                "host {host}: plugin {plugin} ({world}) failed {count} decisions since the last report; last cause: {cause}; the built-in default decided"
            ),
            Notice::FellBack {
                world,
                plugin,
                cause,
                count,
            } => format!(
                "host {host}: the built-in default decided {count} time(s) instead of plugin {plugin} ({world}) for a fault of the host, not of the plugin: {cause}"
            ),
            Notice::Quarantined {
                world,
                plugin,
                failures,
            } => format!(
                "host {host}: plugin {plugin} ({world}) quarantined after {failures} failed decisions in a row; the built-in default decides until `nasvisor plugin reset {world}` or a new install"
            ),
            Notice::Reset { world, plugin } => format!(
                "host {host}: quarantine of plugin {plugin} ({world}) lifted; the plugin decides again"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Repeated {
    Failed,
    FellBack,
}

#[derive(Debug)]
struct Held {
    last_sent: Option<Instant>,
    count: u64,
    plugin: String,
    cause: String,
}

/// Turns the policy host's events into [`Notice`]s, at most one per world
/// and kind (failed, fell back) per window: the first is sent at once, the
/// ones within the window are counted and sent together when it ends. A
/// quarantine, a reset or an install sends the counts held for its world
/// first, so the story reads in order.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    held: HashMap<(Repeated, World), Held>,
}

impl Coalescer {
    pub fn new(window: Duration) -> Coalescer {
        Coalescer {
            window,
            held: HashMap::new(),
        }
    }

    /// Takes one event at `now`; the notices to send now.
    pub fn push(&mut self, e: PolicyEvent, now: Instant) -> Vec<Notice> {
        match e {
            PolicyEvent::PluginFailed {
                world,
                plugin,
                cause,
            } => self.repeated(Repeated::Failed, world, plugin, cause, now),
            PolicyEvent::PluginFellBack {
                world,
                plugin,
                cause,
            } => self.repeated(Repeated::FellBack, world, plugin, cause, now),
            PolicyEvent::PluginQuarantined {
                world,
                plugin,
                failures,
            } => {
                let mut out = self.flush_world(world, now);
                out.push(Notice::Quarantined {
                    world,
                    plugin: reported_text(&plugin),
                    failures,
                });
                out
            }
            PolicyEvent::PluginReset { world, plugin } => {
                let mut out = self.flush_world(world, now);
                out.push(Notice::Reset {
                    world,
                    plugin: reported_text(&plugin),
                });
                out
            }
            // The core records `plugin-installed` itself; the counts held
            // belong to the plugin it replaced.
            PolicyEvent::PluginInstalled { world, .. } => self.flush_world(world, now),
        }
    }

    fn repeated(
        &mut self,
        what: Repeated,
        world: World,
        plugin: String,
        cause: String,
        now: Instant,
    ) -> Vec<Notice> {
        let window = self.window;
        let h = self.held.entry((what, world)).or_insert(Held {
            last_sent: None,
            count: 0,
            plugin: String::new(),
            cause: String::new(),
        });
        h.count += 1;
        h.plugin = reported_text(&plugin);
        h.cause = reported_text(&cause);
        if h.last_sent.is_some_and(|t| now.duration_since(t) < window) {
            return Vec::new();
        }
        vec![Self::send(what, world, h, now)]
    }

    fn send(what: Repeated, world: World, h: &mut Held, now: Instant) -> Notice {
        let count = std::mem::take(&mut h.count);
        h.last_sent = Some(now);
        let (plugin, cause) = (h.plugin.clone(), h.cause.clone());
        match what {
            Repeated::Failed => Notice::Failed {
                world,
                plugin,
                cause,
                count,
            },
            Repeated::FellBack => Notice::FellBack {
                world,
                plugin,
                cause,
                count,
            },
        }
    }

    fn flush_world(&mut self, world: World, now: Instant) -> Vec<Notice> {
        let mut out = Vec::new();
        for what in [Repeated::Failed, Repeated::FellBack] {
            if let Some(h) = self.held.get_mut(&(what, world)).filter(|h| h.count > 0) {
                out.push(Self::send(what, world, h, now));
            }
        }
        out
    }

    /// The counts whose window ended by `now`.
    pub fn flush(&mut self, now: Instant) -> Vec<Notice> {
        let window = self.window;
        let mut out = Vec::new();
        for (&(what, world), h) in self.held.iter_mut() {
            if h.count > 0 && h.last_sent.is_none_or(|t| now.duration_since(t) >= window) {
                out.push(Self::send(what, world, h, now));
            }
        }
        out
    }
}

impl Inner {
    /// Starts the task that records the plugins' events and slot states.
    pub(crate) fn spawn_plugin_reports(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        let wake = self.plugin_reports.wake.clone();
        tokio::spawn(async move {
            let mut coalescer = Coalescer::new(FAULT_EVENT_INTERVAL);
            let mut last_write: HashMap<World, Instant> = HashMap::new();
            loop {
                let Some(me) = weak.upgrade() else { break };
                me.report_plugins(&mut coalescer, &mut last_write).await;
                drop(me);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(REPORT_TICK) => {}
                }
            }
        });
    }

    /// One pass of the report task: the queued policy events become cluster
    /// events (coalesced), and this host's slot states are recorded.
    async fn report_plugins(
        &self,
        coalescer: &mut Coalescer,
        last_write: &mut HashMap<World, Instant>,
    ) {
        let now = Instant::now();
        let mut notices = Vec::new();
        for e in self.policy.drain_events() {
            notices.extend(coalescer.push(e, now));
        }
        notices.extend(coalescer.flush(now));
        for n in notices {
            self.event(
                n.kind(),
                n.severity(),
                Some(format!("plugin/{}", n.world())),
                n.message(&self.host.id),
            )
            .await;
        }
        self.record_plugin_states(last_write, now).await;
    }

    /// Writes this host's slot states that changed: a change of plugin or
    /// quarantine at once, changed counters at most every
    /// [`STATE_WRITE_INTERVAL`].
    async fn record_plugin_states(&self, last_write: &mut HashMap<World, Instant>, now: Instant) {
        for s in self.policy.status() {
            let rec = PluginHostState::of(&self.host.id, &s);
            let key = state_key(rec.world.as_str(), &rec.host);
            let stored = self
                .db
                .get::<PluginHostState>(kind::PLUGIN_STATE, &key)
                .map(|(r, _)| r);
            let due = match &stored {
                None => true,
                Some(old) if rec.same_as(old) => false,
                Some(old) if rec.transition_from(old) => true,
                Some(_) => last_write
                    .get(&s.world)
                    .is_none_or(|t| now.duration_since(*t) >= STATE_WRITE_INTERVAL),
            };
            if !due {
                continue;
            }
            match self.db.put(kind::PLUGIN_STATE, &key, &rec, None).await {
                Ok(_) => {
                    last_write.insert(s.world, now);
                }
                Err(e) => {
                    tracing::warn!(world = %s.world, error = %e, "cannot record the plugin's state; retried later")
                }
            }
        }
    }

    /// The state of `world`'s plugin on every host of the cluster: this
    /// host's live, the others' as they recorded it.
    pub(crate) fn plugin_host_states(&self, local: &SlotStatus) -> Vec<PluginHostState> {
        let world = local.world.as_str();
        let hosts: Vec<HostRecord> = self.db.list(kind::HOST);
        let mut out: Vec<PluginHostState> = hosts
            .iter()
            .filter(|h| h.id != self.host.id)
            .filter_map(|h| {
                self.db
                    .get::<PluginHostState>(kind::PLUGIN_STATE, &state_key(world, &h.id))
                    .map(|(r, _)| r)
            })
            .collect();
        out.push(PluginHostState::of(&self.host.id, local));
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// `nasvisor plugin reset WORLD`: the quarantine of the world's plugin
    /// is lifted on every host (a `plugin-reset` record through the log,
    /// which each host applies; this one at once).
    pub(crate) async fn reset_plugin(&self, world: &str) -> Result<PluginResetView, CoreError> {
        let w: World = world
            .parse()
            .map_err(|e: String| errors::invalid("world", e))?;
        let local = self
            .policy
            .status()
            .into_iter()
            .find(|s| s.world == w)
            .ok_or_else(|| errors::internal(format!("no slot for the {w} world")))?;
        let states = self.plugin_host_states(&local);
        let quarantined_on: Vec<String> = states
            .iter()
            .filter(|s| s.state == PluginSlotState::Quarantined)
            .map(|s| s.host.clone())
            .collect();
        let mut plugins: Vec<&str> = states.iter().filter_map(|s| s.plugin.as_deref()).collect();
        plugins.sort_unstable();
        plugins.dedup();
        // Written even when no host is recorded quarantined: a host may
        // have quarantined it since it last recorded its state.
        let rec = PluginResetRecord {
            world: w.as_str().to_string(),
            requested_by: self.host.id.clone(),
            requested_at: now_rfc3339(),
        };
        self.db
            .put(kind::PLUGIN_RESET, w.as_str(), &rec, None)
            .await?;
        self.apply_plugin_resets();
        self.plugin_reports.wake();
        let message = if plugins.is_empty() {
            format!("nothing to reset: no plugin is loaded for the {w} world (the built-in default decides)")
        } else if quarantined_on.is_empty() {
            format!(
                "nothing to reset: the {w} plugin ({}) is not quarantined on any host",
                plugins.join(", ")
            )
        } else {
            format!(
                "quarantine of the {w} plugin ({}) lifted on {}",
                plugins.join(", "),
                quarantined_on.join(", ")
            )
        };
        Ok(PluginResetView {
            world: world_view(w),
            quarantined_on,
            message,
        })
    }

    /// Lifts the quarantines asked for since this host last looked (at
    /// start, and after every change of the log). A lift of a plugin that
    /// is not quarantined here only clears its run of failures.
    pub(crate) fn apply_plugin_resets(&self) {
        for (key, _, rev) in self.db.store().list(kind::PLUGIN_RESET) {
            {
                let mut applied = lock(&self.plugin_reports.resets_applied);
                if applied.get(&key).is_some_and(|r| *r >= rev) {
                    continue;
                }
                applied.insert(key.clone(), rev);
            }
            let Ok(w) = key.parse::<World>() else {
                tracing::warn!(key = %key, "plugin-reset record of an unknown world");
                continue;
            };
            match self.policy.reset(w) {
                Some(plugin) => {
                    tracing::info!(world = %w, %plugin, "plugin quarantine lifted");
                    self.plugin_reports.wake();
                }
                None => tracing::debug!(world = %w, "plugin reset: nothing quarantined here"),
            }
        }
    }
}

#[cfg(test)]
#[path = "plugin_reports_tests.rs"]
mod tests;
