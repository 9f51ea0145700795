//! The wasmtime side: one engine with the pooling allocator and an epoch
//! ticker, a linker with the host imports, compilation (through the cache),
//! and one fresh store per call with a memory cap and a deadline.
//!
//! How a call is kept within `DEADLINE_PRECISION_MS` of its deadline:
//!
//! * The deadline is an instant, not a count of ticks: the ticker thread
//!   bumps the engine's epoch every `epoch-tick-ms` on an absolute schedule,
//!   and at each tick a running call compares the time with its deadline
//!   and stops there (`Store::epoch_deadline_callback`).
//! * Nothing a plugin does runs long between two checks: instructions that
//!   work on a whole memory or table at once (bulk memory, reference types)
//!   are refused at load; what a plugin hands the host is bounded by the
//!   hostcall fuel (`max-transfer-kib`, whose copy time is measured at start)
//!   and host imports copy only what they keep; a component has at most one
//!   memory, so no adapter copies between memories.
//! * Resetting a slot whose memory grew past what stays resident (the cost
//!   grows with the pages the plugin touched) happens on a reaper thread,
//!   after the caller has its answer.
//!
//! Faults of the host are told apart from faults of the plugin: a call waits,
//! bounded, for a slot (`CallError::NoSlot` after `slot-wait-ms`; at most
//! `pool-instances` calls, and two per CPU, run at once), and a deadline
//! reached while the calling thread got less than half the deadline in CPU
//! time is `CallError::Starved`.
//!
//! The parts: `engine` (the engine, the pooling allocator and the ticker),
//! `load` (verifying and compiling a plugin), `pool` (the call slots and the
//! reaper) and `call` (one call: its store, deadline and errors).

mod call;
mod engine;
mod load;
mod pool;

pub use engine::measure_transfer;
pub use load::{LoadSource, LoadedPlugin};

use crate::cache::CodeCache;
use crate::config::RuntimeConfig;
use crate::host_imports::CallCtx;
use engine::Ticker;
use nasvisor_signing::VerifyingKey;
use pool::{Reaper, Reaping, Slots};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::Engine;

/// The plugin runtime: shared by every plugin and every call.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallCtx>,
    config: RuntimeConfig,
    trusted_keys: Vec<VerifyingKey>,
    cache: Option<CodeCache>,
    slots: Arc<Slots>,
    /// Calls that may run at once: `pool-instances`, at most two per CPU.
    running: u32,
    ticker: Option<Ticker>,
    reaper: Option<Reaper>,
    /// What the reaper did for each plugin lately.
    reaping: Arc<Reaping>,
    next_plugin_id: AtomicU64,
    /// CPU time one worst-case transfer took to copy at start.
    transfer_cost: Duration,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.shut_down();
        }
        if let Some(r) = self.reaper.take() {
            r.shut_down();
        }
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Runtime {
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How many calls may run at once: `pool-instances`, but at most two
    /// per CPU this process may use. Further calls wait for a slot.
    pub fn concurrent_calls(&self) -> u32 {
        self.running
    }

    /// CPU time a worst-case transfer of `max-transfer-kib` took to copy on
    /// this machine, measured by `Runtime::new`.
    pub fn transfer_cost(&self) -> Duration {
        self.transfer_cost
    }
}
