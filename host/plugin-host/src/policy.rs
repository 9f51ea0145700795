//! The policy host: one slot per world, each with an optional plugin. Every
//! decision goes to the slot's plugin; an answer that fails (trap, deadline,
//! memory limit, invalid output) is replaced by the native default's answer
//! for that decision. After `max-consecutive-failures` faults of the plugin in
//! a row it is quarantined (the native default decides) until a plugin is
//! installed again or the quarantine is lifted with [`PolicyHost::reset`].
//! Faults of the host (no free instance slot, a starved CPU) fall back too but
//! are never blamed on the plugin. Installing a plugin swaps it in between
//! decisions; decisions in flight finish on the plugin they started with.

use crate::decision::{answer_json, invoke, invoke_native, Answer, DecisionInput, NativeEnv};
use crate::error::CallError;
use crate::journal::{Journal, JournalRecord};
use crate::runtime::{LoadedPlugin, Runtime};
use crate::validate::validate;
use arc_swap::ArcSwapOption;
use nasvisor_plugin_sdk::{ErrorCode, PluginError, World};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Who produced the answer of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DecisionSource {
    /// The slot's plugin answered and the answer was valid.
    Plugin { plugin: String },
    /// The plugin failed this decision; the native default answered.
    /// `blamed` is false for a fault of the host (no slot, starved CPU).
    Fallback {
        plugin: String,
        cause: String,
        blamed: bool,
    },
    /// The plugin answered, the validator refused the answer, and the native
    /// default answered. Counts as a fault of the plugin.
    Refused { plugin: String, reason: String },
    /// The plugin is quarantined; the native default answered.
    Quarantined { plugin: String },
    /// No plugin is installed for the world; the native default answered.
    Native,
}

/// One decision's answer and where it came from.
#[derive(Debug, Clone)]
pub struct Decision {
    pub answer: Answer,
    pub source: DecisionSource,
    pub duration: Duration,
}

/// Something an administrator should hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PolicyEvent {
    /// The plugin faulted (trap, deadline, memory, invalid or refused
    /// answer): counted toward quarantine; the native default decided.
    PluginFailed {
        world: World,
        plugin: String,
        cause: String,
    },
    /// The native default decided because of a fault of the host (no free
    /// instance slot, a starved CPU); not counted against the plugin.
    PluginFellBack {
        world: World,
        plugin: String,
        cause: String,
    },
    PluginQuarantined {
        world: World,
        plugin: String,
        failures: u32,
    },
    PluginInstalled {
        world: World,
        plugin: String,
    },
    /// An administrator lifted the quarantine.
    PluginReset {
        world: World,
        plugin: String,
    },
}

/// State of one world's slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SlotStatus {
    pub world: World,
    pub plugin: Option<String>,
    pub signer: Option<String>,
    pub consecutive_failures: u32,
    pub quarantined: bool,
    /// Decisions the plugin answered (validly) since it was installed.
    pub decisions: u64,
    /// Faults of the plugin since it was installed (each also a fallback).
    pub failures: u64,
    /// Decisions the native default made instead of the installed plugin
    /// since it was installed (plugin faults, host faults, quarantine).
    pub fallbacks: u64,
    /// The cause of the plugin's last fault.
    pub last_failure: Option<String>,
}

#[derive(Default)]
struct Slot {
    plugin: ArcSwapOption<LoadedPlugin>,
    failures: AtomicU32,
    quarantined: AtomicBool,
    native_settings: Mutex<Vec<(String, String)>>,
    counts: Mutex<SlotCounts>,
}

#[derive(Default)]
struct SlotCounts {
    decisions: u64,
    failures: u64,
    fallbacks: u64,
    last_failure: Option<String>,
}

const MAX_EVENTS: usize = 1024;

/// Decides through plugins, with validation, fallback, quarantine and journal.
pub struct PolicyHost {
    rt: Arc<Runtime>,
    slots: [Slot; 4],
    journal: Option<Mutex<Journal>>,
    events: Mutex<VecDeque<PolicyEvent>>,
    /// The last [`RECENT_DECISIONS`] decisions, oldest first, for the API
    /// (the journal file keeps their inputs and answers).
    recent: Mutex<VecDeque<DecisionSummary>>,
}

/// How many decisions [`PolicyHost::recent_decisions`] keeps.
pub const RECENT_DECISIONS: usize = 200;

/// One decision as the API lists it: no input or answer (the journal has
/// them, for replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionSummary {
    /// Wall clock of the decision, ms since the epoch.
    pub at_ms: u64,
    pub world: World,
    pub function: String,
    /// `name@version` of the plugin asked, if any.
    pub plugin: Option<String>,
    /// `plugin`, `native`, `fallback`, `refused` or `quarantined`.
    pub outcome: &'static str,
    /// Why the plugin's answer was not used.
    pub cause: Option<String>,
    pub duration_us: u64,
}

impl std::fmt::Debug for PolicyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHost")
            .field("slots", &self.status())
            .finish()
    }
}

fn idx(w: World) -> usize {
    match w {
        World::Scheduler => 0,
        World::HaPolicy => 1,
        World::Sha => 2,
        World::OsInstaller => 3,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl PolicyHost {
    pub fn new(rt: Arc<Runtime>, journal: Option<Journal>) -> PolicyHost {
        PolicyHost {
            rt,
            slots: Default::default(),
            journal: journal.map(Mutex::new),
            events: Mutex::new(VecDeque::new()),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_DECISIONS)),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    fn slot(&self, w: World) -> &Slot {
        &self.slots[idx(w)]
    }

    fn event(&self, e: PolicyEvent) {
        let mut q = self.events.lock().expect("events lock");
        if q.len() == MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// Takes the events recorded since the last call.
    pub fn drain_events(&self) -> Vec<PolicyEvent> {
        self.events.lock().expect("events lock").drain(..).collect()
    }

    /// Installs (or hot-replaces) the plugin of its world and lifts any
    /// quarantine. Decisions already running finish on the previous plugin.
    pub fn install(&self, plugin: LoadedPlugin) {
        let w = plugin.world();
        let slot = self.slot(w);
        let label = plugin.label().to_string();
        *slot.native_settings.lock().expect("settings lock") = plugin.settings.as_ref().clone();
        slot.plugin.store(Some(Arc::new(plugin)));
        slot.failures.store(0, Ordering::SeqCst);
        slot.quarantined.store(false, Ordering::SeqCst);
        *slot.counts.lock().expect("counts lock") = SlotCounts::default();
        tracing::info!(world = %w, plugin = %label, "plugin installed");
        self.event(PolicyEvent::PluginInstalled {
            world: w,
            plugin: label,
        });
    }

    /// Lifts the quarantine of a world's plugin and clears its run of
    /// consecutive failures. Returns the plugin's label when it was
    /// quarantined, `None` when there was nothing to lift.
    pub fn reset(&self, w: World) -> Option<String> {
        let slot = self.slot(w);
        slot.failures.store(0, Ordering::SeqCst);
        if !slot.quarantined.swap(false, Ordering::SeqCst) {
            return None;
        }
        let label = slot.plugin.load().as_ref().map(|p| p.label().to_string())?;
        tracing::info!(world = %w, plugin = %label, "plugin quarantine lifted");
        self.event(PolicyEvent::PluginReset {
            world: w,
            plugin: label.clone(),
        });
        Some(label)
    }

    /// Removes a world's plugin; its decisions go to the native default.
    pub fn uninstall(&self, w: World) {
        self.slot(w).plugin.store(None);
    }

    /// Settings given to the native default when no plugin is installed.
    pub fn set_native_settings(&self, w: World, settings: Vec<(String, String)>) {
        *self.slot(w).native_settings.lock().expect("settings lock") = settings;
    }

    /// The settings of a world (its plugin's, or the native default's).
    pub fn settings(&self, w: World) -> Vec<(String, String)> {
        self.slot(w)
            .native_settings
            .lock()
            .expect("settings lock")
            .clone()
    }

    pub fn status(&self) -> Vec<SlotStatus> {
        World::ALL
            .iter()
            .map(|&w| {
                let s = self.slot(w);
                let p = s.plugin.load();
                let c = s.counts.lock().expect("counts lock");
                SlotStatus {
                    world: w,
                    plugin: p.as_ref().map(|p| p.label().to_string()),
                    signer: p.as_ref().and_then(|p| p.signer.clone()),
                    consecutive_failures: s.failures.load(Ordering::SeqCst),
                    quarantined: s.quarantined.load(Ordering::SeqCst),
                    decisions: c.decisions,
                    failures: c.failures,
                    fallbacks: c.fallbacks,
                    last_failure: c.last_failure.clone(),
                }
            })
            .collect()
    }

    fn native(&self, slot: &Slot, input: &DecisionInput, wall: u64) -> Answer {
        let env = NativeEnv::new(
            slot.native_settings.lock().expect("settings lock").clone(),
            wall,
        );
        let answer = invoke_native(input, &env);
        if let Ok(o) = &answer {
            if let Err(reason) = validate(input, o) {
                tracing::error!(function = input.function(), %reason, "native default answer is invalid");
                return Err(PluginError::new(
                    ErrorCode::Internal,
                    format!("native default policy answered invalidly: {reason}"),
                ));
            }
        }
        answer
    }

    /// Records a failed call of `p`: a fault of the plugin counts toward its
    /// quarantine, a fault of the host does not. Returns the decision's source.
    fn failed(
        &self,
        world: World,
        slot: &Slot,
        p: &LoadedPlugin,
        input: &DecisionInput,
        e: &CallError,
    ) -> DecisionSource {
        let label = p.label().to_string();
        let blamed = e.is_plugin_fault();
        {
            let mut c = slot.counts.lock().expect("counts lock");
            c.fallbacks += 1;
            if blamed {
                c.failures += 1;
                c.last_failure = Some(e.to_string());
            }
        }
        if !blamed {
            tracing::warn!(world = %world, plugin = %label, function = input.function(),
                error = %e, "host fault during a plugin decision; using the native default (not blamed on the plugin)");
            self.event(PolicyEvent::PluginFellBack {
                world,
                plugin: label.clone(),
                cause: e.to_string(),
            });
            return DecisionSource::Fallback {
                plugin: label,
                cause: e.to_string(),
                blamed: false,
            };
        }
        let n = slot.failures.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::warn!(world = %world, plugin = %label, function = input.function(),
            error = %e, failures = n, "plugin failed a decision; using the native default");
        self.event(PolicyEvent::PluginFailed {
            world,
            plugin: label.clone(),
            cause: e.to_string(),
        });
        if n >= self.rt.config().max_consecutive_failures
            && !slot.quarantined.swap(true, Ordering::SeqCst)
        {
            tracing::error!(world = %world, plugin = %label, failures = n,
                "plugin quarantined until it is reloaded or reset");
            nasvisor_metrics::plugin_quarantined(world.as_str());
            self.event(PolicyEvent::PluginQuarantined {
                world,
                plugin: label.clone(),
                failures: n,
            });
        }
        match e {
            CallError::InvalidOutput(reason) => DecisionSource::Refused {
                plugin: label,
                reason: reason.clone(),
            },
            _ => DecisionSource::Fallback {
                plugin: label,
                cause: e.to_string(),
                blamed: true,
            },
        }
    }

    /// The last decisions of this host, oldest first.
    pub fn recent_decisions(&self) -> Vec<DecisionSummary> {
        self.recent
            .lock()
            .expect("recent lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Makes one decision. Never panics on plugin misbehaviour.
    pub fn decide(&self, input: DecisionInput) -> Decision {
        let world = input.world();
        let slot = self.slot(world);
        let wall = now_ms();
        let start = Instant::now();
        let plugin = slot.plugin.load_full();
        let (answer, source) = match plugin {
            None => (self.native(slot, &input, wall), DecisionSource::Native),
            Some(p) if slot.quarantined.load(Ordering::SeqCst) => {
                slot.counts.lock().expect("counts lock").fallbacks += 1;
                (
                    self.native(slot, &input, wall),
                    DecisionSource::Quarantined {
                        plugin: p.label().to_string(),
                    },
                )
            }
            Some(p) => {
                let result = invoke(&self.rt, &p, &input, wall).and_then(|answer| {
                    if let Ok(o) = &answer {
                        validate(&input, o).map_err(CallError::InvalidOutput)?;
                    }
                    Ok(answer)
                });
                match result {
                    Ok(answer) => {
                        slot.failures.store(0, Ordering::SeqCst);
                        slot.counts.lock().expect("counts lock").decisions += 1;
                        (
                            answer,
                            DecisionSource::Plugin {
                                plugin: p.label().to_string(),
                            },
                        )
                    }
                    Err(e) => {
                        let source = self.failed(world, slot, &p, &input, &e);
                        (self.native(slot, &input, wall), source)
                    }
                }
            }
        };
        let duration = start.elapsed();
        let (plugin, kind, cause) = match &source {
            DecisionSource::Plugin { plugin } => (Some(plugin.clone()), "plugin", None),
            DecisionSource::Fallback { plugin, cause, .. } => {
                (Some(plugin.clone()), "fallback", Some(cause.clone()))
            }
            DecisionSource::Refused { plugin, reason } => {
                (Some(plugin.clone()), "refused", Some(reason.clone()))
            }
            DecisionSource::Quarantined { plugin } => (Some(plugin.clone()), "quarantined", None),
            DecisionSource::Native => (None, "native", None),
        };
        nasvisor_metrics::plugin_decision(world.as_str(), kind, duration.as_secs_f64());
        {
            let mut recent = self.recent.lock().expect("recent lock");
            if recent.len() == RECENT_DECISIONS {
                recent.pop_front();
            }
            recent.push_back(DecisionSummary {
                at_ms: wall,
                world,
                function: input.function().to_string(),
                plugin: plugin.clone(),
                outcome: kind,
                cause: cause.clone(),
                duration_us: duration.as_micros() as u64,
            });
        }
        if let Some(j) = &self.journal {
            let rec = JournalRecord {
                seq: 0,
                at_ms: wall,
                world,
                function: input.function().to_string(),
                plugin,
                source: kind.to_string(),
                cause,
                duration_us: duration.as_micros() as u64,
                answer: answer_json(&answer),
                input,
            };
            if let Err(e) = j.lock().expect("journal lock").append(rec) {
                tracing::warn!(error = %e, "cannot write the decision journal");
            }
        }
        Decision {
            answer,
            source,
            duration,
        }
    }
}
