//! The `nasvisor:plugin/host` interface: what a plugin may call. One function
//! per import; nothing else is linked (no WASI).

use nasvisor_plugin_sdk::LogLevel;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::Linker;
use wasmtime::{ResourceLimiter, StoreContextMut};

/// Fully qualified name of the host interface, as components import it.
pub const HOST_INTERFACE: &str = "nasvisor:plugin/host@0.1.0";
/// Fully qualified name of the types interface (types only, no functions).
pub const TYPES_INTERFACE: &str = "nasvisor:plugin/types@0.1.0";

/// Per-call store state. A fresh one is made for every decision.
pub struct CallCtx {
    pub(crate) limiter: MemoryCap,
    pub(crate) settings: Arc<Vec<(String, String)>>,
    pub(crate) wall_clock_ms: u64,
    pub(crate) origin: Instant,
    pub(crate) log_budget: usize,
    pub(crate) logs_dropped: u64,
    pub(crate) plugin: Arc<str>,
}

/// Caps linear memory and table growth; remembers a refused growth so the
/// resulting trap can be reported as "memory limit".
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) hit: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = Some(desired);
            return Err(wasmtime::Error::msg(format!(
                "memory limit: {desired} bytes requested, cap {}",
                self.limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 1M entries is far beyond any policy.
        Ok(desired <= 1 << 20)
    }
}

/// Adds the host interface (and the empty types interface) to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallCtx>) -> wasmtime::Result<()> {
    let mut root = linker.root();
    // The types interface has no functions; components still import it.
    root.instance(TYPES_INTERFACE)?;
    let mut host = root.instance(HOST_INTERFACE)?;
    host.func_wrap(
        "log",
        |mut cx: StoreContextMut<'_, CallCtx>,
         (level, message, fields): (LogLevel, String, Vec<(String, String)>)| {
            log(cx.data_mut(), level, &message, &fields);
            Ok(())
        },
    )?;
    host.func_wrap(
        "monotonic-now-ns",
        |cx: StoreContextMut<'_, CallCtx>, (): ()| {
            Ok((cx.data().origin.elapsed().as_nanos() as u64,))
        },
    )?;
    host.func_wrap(
        "wall-clock-ms",
        |cx: StoreContextMut<'_, CallCtx>, (): ()| Ok((cx.data().wall_clock_ms,)),
    )?;
    host.func_wrap(
        "setting",
        |cx: StoreContextMut<'_, CallCtx>, (key,): (String,)| {
            let v = cx
                .data()
                .settings
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone());
            Ok((v,))
        },
    )?;
    host.func_wrap("settings", |cx: StoreContextMut<'_, CallCtx>, (): ()| {
        Ok((cx.data().settings.as_ref().clone(),))
    })?;
    Ok(())
}

fn log(cx: &mut CallCtx, level: LogLevel, message: &str, fields: &[(String, String)]) {
    let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if size > cx.log_budget {
        if cx.logs_dropped == 0 {
            tracing::warn!(plugin = %cx.plugin, "plugin log budget exhausted; dropping further records of this call");
        }
        cx.logs_dropped += 1;
        cx.log_budget = 0;
        return;
    }
    cx.log_budget -= size;
    // A plugin may quote its input (password hashes, SSH keys): never logged.
    let message = crate::redact::redact_secrets(message);
    // Formatted only if a subscriber records the event.
    let fields = Fields(fields);
    let plugin = &*cx.plugin;
    match level {
        LogLevel::Trace => tracing::trace!(target: "plugin", plugin, %fields, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "plugin", plugin, %fields, "{message}"),
        LogLevel::Info => tracing::info!(target: "plugin", plugin, %fields, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "plugin", plugin, %fields, "{message}"),
        LogLevel::Error => tracing::error!(target: "plugin", plugin, %fields, "{message}"),
    }
}

/// A log record's fields as `k="v" k2="v2"`.
struct Fields<'a>(&'a [(String, String)]);

impl std::fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={:?}", crate::redact::redact_secrets(v))?;
        }
        Ok(())
    }
}
