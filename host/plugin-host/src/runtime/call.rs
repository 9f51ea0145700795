//! Calling a plugin: a fresh store and instance per call, the deadline
//! checked at every epoch tick, and a failure told apart as the plugin's
//! fault or the host's.

use super::pool::SlotPermit;
use super::{thread_cpu_time, LoadedPlugin, Runtime};
use crate::error::CallError;
use crate::host_imports::{CallCtx, MemoryCap};
use std::time::{Duration, Instant};
use wasmtime::component::{ComponentNamedList, Instance, Lift, Lower};
use wasmtime::{Store, UpdateDeadline};

/// The message wasmtime gives when a lift exhausts the hostcall fuel.
const FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// A call in progress.
pub(super) struct Call {
    pub(super) store: Store<CallCtx>,
    pub(super) permit: SlotPermit,
    /// CPU time of the calling thread when the store was made.
    cpu_start: Duration,
    /// When the call must have ended.
    deadline: Instant,
}

impl Runtime {
    /// Takes a slot (waiting at most `wait`) and makes a fresh store for one
    /// call of `plugin`: memory cap, hostcall fuel, and a deadline
    /// `deadline-ms` from now.
    fn begin(
        &self,
        plugin: &LoadedPlugin,
        wall_clock_ms: u64,
        wait: Duration,
    ) -> Result<Call, CallError> {
        let waited = Instant::now();
        let permit = self.slots.acquire(wait).ok_or_else(|| CallError::NoSlot {
            waited_ms: waited.elapsed().as_millis() as u64,
        })?;
        let cpu_start = thread_cpu_time();
        let origin = Instant::now();
        let deadline = origin + Duration::from_millis(self.config.deadline_ms);
        let ctx = CallCtx {
            limiter: MemoryCap::new(self.config.memory_limit_bytes() as usize),
            settings: plugin.settings.clone(),
            wall_clock_ms,
            origin,
            log_budget: self.config.log_budget_bytes,
            logs_dropped: 0,
            plugin: plugin.label.clone(),
            plugin_id: plugin.id,
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|cx| &mut cx.limiter);
        store.set_hostcall_fuel(self.config.max_transfer_bytes() as usize);
        // At every tick, the running call compares the time with its
        // deadline.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        Ok(Call {
            store,
            permit,
            cpu_start,
            deadline,
        })
    }

    /// Instantiates `plugin` in a fresh store, as a decision does.
    pub(super) fn instantiate(
        &self,
        plugin: &LoadedPlugin,
        wall_clock_ms: u64,
        wait: Duration,
    ) -> Result<(Call, Instance), (Option<Call>, CallError)> {
        let mut call = self
            .begin(plugin, wall_clock_ms, wait)
            .map_err(|e| (None, e))?;
        match plugin.pre.instantiate(&mut call.store) {
            Ok(instance) => Ok((call, instance)),
            Err(e) => {
                let e = self.classify(&call, e, true);
                Err((Some(call), e))
            }
        }
    }

    fn slot_wait(&self) -> Duration {
        Duration::from_millis(self.config.slot_wait_ms)
    }

    /// A fresh store and instance of `plugin`, dropped without a call: what
    /// every decision pays before the guest runs. For benchmarks.
    #[doc(hidden)]
    pub fn instantiate_only(&self, plugin: &LoadedPlugin) -> Result<(), CallError> {
        match self.instantiate(plugin, 0, self.slot_wait()) {
            Ok((call, _)) => {
                self.finish(call);
                Ok(())
            }
            Err((call, e)) => {
                if let Some(call) = call {
                    self.finish(call);
                }
                Err(e)
            }
        }
    }

    /// Calls `export` in a fresh instance with the configured limits.
    pub fn call<P, R>(
        &self,
        plugin: &LoadedPlugin,
        export: &str,
        wall_clock_ms: u64,
        params: P,
    ) -> Result<R, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let idx = plugin
            .export_index(export)
            .map_err(CallError::Instantiate)?;
        let (mut call, instance) = match self.instantiate(plugin, wall_clock_ms, self.slot_wait()) {
            Ok(ok) => ok,
            Err((call, e)) => {
                if let Some(call) = call {
                    self.finish(call);
                }
                return Err(e);
            }
        };
        let result = instance
            .get_typed_func::<P, R>(&mut call.store, idx)
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))
            .and_then(|f| {
                f.call(&mut call.store, params)
                    .map_err(|e| self.classify(&call, e, false))
            })
            .and_then(|answer| {
                // A call whose thread was off the CPU when the deadline
                // passed can finish without another deadline check: its
                // answer came too late all the same.
                if Instant::now() > call.deadline {
                    return Err(self.late(&call));
                }
                Ok(answer)
            });
        self.finish(call);
        result
    }

    /// The error of a call that reached its deadline: the plugin's fault,
    /// unless the calling thread got less than half the deadline in CPU
    /// time (a plugin that runs never waits: no import blocks), which is the
    /// host's doing. Except when the reaper spent a quarter of the deadline
    /// or more, during the call, resetting memory this plugin touched in
    /// earlier calls: then the plugin starved itself.
    fn late(&self, call: &Call) -> CallError {
        let deadline_ms = self.config.deadline_ms;
        let deadline = Duration::from_millis(deadline_ms);
        let cpu = thread_cpu_time().saturating_sub(call.cpu_start);
        let data = call.store.data();
        if cpu < deadline / 2 && self.reaping.time_for(data.plugin_id, data.origin) < deadline / 4 {
            CallError::Starved {
                deadline_ms,
                cpu_ms: cpu.as_millis() as u64,
            }
        } else {
            CallError::DeadlineExceeded { deadline_ms }
        }
    }

    fn classify(&self, call: &Call, e: wasmtime::Error, instantiating: bool) -> CallError {
        if let Some(requested) = call.store.data().limiter.hit {
            return CallError::MemoryLimit {
                requested: requested as u64,
                limit: self.config.memory_limit_bytes(),
            };
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => self.late(call),
            Some(trap) => {
                let what = match trap {
                    wasmtime::Trap::UnreachableCodeReached => {
                        "unreachable code reached (the plugin panicked or aborted)".to_string()
                    }
                    wasmtime::Trap::StackOverflow => {
                        "stack overflow (recursion too deep)".to_string()
                    }
                    other => other.to_string(),
                };
                CallError::Trap(what)
            }
            None if e.chain().any(|c| c.to_string().contains(FUEL_EXHAUSTED)) => {
                CallError::InvalidOutput(format!(
                    "the plugin handed the host more than max-transfer-kib ({} KiB) at once \
                     (its answer, or the arguments of one host call)",
                    self.config.max_transfer_kib()
                ))
            }
            None if instantiating => CallError::Instantiate(format!("{e:#}")),
            None => CallError::Trap(format!("{e:#}")),
        }
    }
}
