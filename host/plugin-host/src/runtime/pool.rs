//! The call slots: the permits that keep the pooling allocator from running
//! out, and the reaper that resets expensive slots after their call.

use super::call::Call;
use super::Runtime;
use crate::host_imports::CallCtx;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::Store;

/// Bytes of each pooled linear memory kept resident (reset in place rather
/// than released) between instances: covers what a decision of the default
/// plugins touches, so RSS is bounded by this times the slots in use.
pub(super) const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// The thread that drops finished stores whose slot reset is expensive.
pub(super) struct Reaper {
    retire: mpsc::Sender<FinishedCall>,
    thread: JoinHandle<()>,
}

impl Reaper {
    /// Starts the thread that drops the stores it is sent, recording in
    /// `reaping` when it works for which plugin.
    pub(super) fn start(reaping: Arc<Reaping>) -> Result<Reaper, String> {
        let (retire, retired) = mpsc::channel::<FinishedCall>();
        let thread = std::thread::Builder::new()
            .name("plugin-reaper".into())
            .spawn(move || {
                for done in retired {
                    let plugin = done._store.data().plugin_id;
                    reaping.started(plugin);
                    drop(done);
                    reaping.finished(plugin);
                }
            })
            .map_err(|e| format!("reaper thread: {e}"))?;
        Ok(Reaper { retire, thread })
    }

    /// Closes the queue and waits for the thread to drop what was queued.
    pub(super) fn shut_down(self) {
        drop(self.retire);
        if self.thread.join().is_err() {
            tracing::error!("the plugin reaper thread panicked");
        }
    }
}

/// When the reaper reset each plugin's instances: resetting what a plugin
/// touched takes CPU that its next calls then lack, so a call starved
/// while the reaper worked for the same plugin is that plugin's doing, not
/// the host's.
#[derive(Debug, Default)]
pub(super) struct Reaping {
    by_plugin: Mutex<HashMap<u64, ReapLog>>,
}

#[derive(Debug, Default)]
struct ReapLog {
    /// Since when the reaper has been resetting an instance of the plugin.
    busy_since: Option<Instant>,
    /// Resets queued or in progress.
    pending: u32,
    /// The latest finished resets: (start, end).
    done: VecDeque<(Instant, Instant)>,
}

/// Finished resets kept per plugin.
const REAP_LOG_LEN: usize = 16;

impl Reaping {
    fn log(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ReapLog>> {
        self.by_plugin.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn queued(&self, plugin: u64) {
        self.log().entry(plugin).or_default().pending += 1;
    }

    pub(super) fn started(&self, plugin: u64) {
        self.log().entry(plugin).or_default().busy_since = Some(Instant::now());
    }

    pub(super) fn finished(&self, plugin: u64) {
        let mut log = self.log();
        let entry = log.entry(plugin).or_default();
        if let Some(start) = entry.busy_since.take() {
            if entry.done.len() == REAP_LOG_LEN {
                entry.done.pop_front();
            }
            entry.done.push_back((start, Instant::now()));
        }
        entry.pending = entry.pending.saturating_sub(1);
    }

    /// How long, between `since` and now, the reaper spent resetting
    /// instances of `plugin`.
    pub(super) fn time_for(&self, plugin: u64, since: Instant) -> Duration {
        let now = Instant::now();
        let log = self.log();
        let Some(entry) = log.get(&plugin) else {
            return Duration::ZERO;
        };
        let overlap =
            |start: Instant, end: Instant| end.saturating_duration_since(start.max(since));
        entry
            .done
            .iter()
            .map(|&(s, e)| overlap(s, e))
            .sum::<Duration>()
            + entry.busy_since.map_or(Duration::ZERO, |s| overlap(s, now))
    }

    /// Drops what is known of a plugin that has nothing queued.
    pub(super) fn forget_idle(&self) {
        self.log().retain(|_, e| {
            e.pending > 0
                || e.done
                    .back()
                    .is_some_and(|(_, end)| end.elapsed() < Duration::from_secs(60))
        });
    }
}

/// Counts the free call slots; a call holds a [`SlotPermit`] from before
/// its store exists until after the store is dropped, so the pooling
/// allocator never runs out. Waiters are served in arrival order: a freed
/// slot is handed to the longest waiter, never taken by a newcomer.
#[derive(Debug)]
pub(super) struct Slots {
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    free: u32,
    waiters: VecDeque<Arc<Waiter>>,
}

#[derive(Debug, Default)]
struct Waiter {
    /// Set, under the slots' lock, when a slot is handed to this waiter.
    granted: AtomicBool,
    wake: Condvar,
}

impl Slots {
    pub(super) fn new(n: u32) -> Slots {
        Slots {
            state: Mutex::new(SlotState {
                free: n,
                waiters: VecDeque::new(),
            }),
        }
    }

    /// Takes a free slot, waiting at most `wait` for one.
    pub(super) fn acquire(self: &Arc<Self>, wait: Duration) -> Option<SlotPermit> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.free > 0 && s.waiters.is_empty() {
            s.free -= 1;
            return Some(SlotPermit(self.clone()));
        }
        let me = Arc::new(Waiter::default());
        s.waiters.push_back(me.clone());
        let until = Instant::now() + wait;
        loop {
            if me.granted.load(Ordering::Relaxed) {
                return Some(SlotPermit(self.clone()));
            }
            let now = Instant::now();
            if now >= until {
                s.waiters.retain(|w| !Arc::ptr_eq(w, &me));
                return None;
            }
            s = me
                .wake
                .wait_timeout(s, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One call slot, held for the life of a call's store.
#[derive(Debug)]
pub(super) struct SlotPermit(Arc<Slots>);

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.waiters.pop_front() {
            Some(next) => {
                next.granted.store(true, Ordering::Relaxed);
                next.wake.notify_one();
            }
            None => s.free += 1,
        }
    }
}

/// A call's store and the slot it holds. Fields drop in order: the store
/// (which returns the instance's memory and tables to the pool), then the
/// permit that lets the next call use them.
struct FinishedCall {
    _store: Store<CallCtx>,
    _permit: SlotPermit,
}

impl Runtime {
    /// Ends a call: the store goes back to the pool here, or on the reaper
    /// thread when its memory grew past the part kept resident (resetting
    /// it costs in proportion to the pages the plugin touched).
    pub(super) fn finish(&self, call: Call) {
        let data = call.store.data();
        if data.logs_dropped > 0 {
            tracing::warn!(plugin = %data.plugin, dropped = data.logs_dropped, "plugin log records dropped");
        }
        let expensive = data.limiter.largest > KEEP_RESIDENT_BYTES || data.limiter.hit.is_some();
        let plugin = data.plugin_id;
        let done = FinishedCall {
            _store: call.store,
            _permit: call.permit,
        };
        if expensive {
            if let Some(r) = &self.reaper {
                self.reaping.forget_idle();
                self.reaping.queued(plugin);
                if let Err(mpsc::SendError(done)) = r.retire.send(done) {
                    // The reaper is gone: drop it here.
                    drop(done);
                    self.reaping.finished(plugin);
                }
            }
        }
    }
}
