//! The `nasvisor:plugin/host` interface: what a plugin may call. One function
//! per import; nothing else is linked (no WASI).
//!
//! Arguments the plugin passes are lifted lazily (`WasmStr`, `WasmList`):
//! the host copies out of the plugin's memory only what it keeps (log text
//! within the call's log budget; a setting key is compared in place), and
//! wasmtime's hostcall fuel (`max-transfer-kib` per host call) bounds what
//! it reads: no host call costs more than one such transfer, whatever the
//! plugin's memory holds.

use nasvisor_plugin_sdk::LogLevel;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Linker, WasmList, WasmStr};
use wasmtime::{Engine, ResourceLimiter, StoreContextMut};

/// Fully qualified name of the host interface, as components import it.
pub const HOST_INTERFACE: &str = "nasvisor:plugin/host@0.1.0";
/// Fully qualified name of the types interface (types only, no functions).
pub const TYPES_INTERFACE: &str = "nasvisor:plugin/types@0.1.0";

/// The functions of the host interface, with their types as
/// [`render_func`] writes them: what a component may import, exactly.
pub const HOST_FUNCTIONS: [(&str, &str); 5] = [
    (
        "log",
        "func(enum{trace, debug, info, warn, error}, string, list<tuple<string, string>>)",
    ),
    ("monotonic-now-ns", "func() -> u64"),
    ("wall-clock-ms", "func() -> u64"),
    ("setting", "func(string) -> option<string>"),
    ("settings", "func() -> list<tuple<string, string>>"),
];
/// The types the host interface defines.
pub const HOST_TYPES: [&str; 1] = ["log-level"];
/// The types the types interface defines (it has no functions).
pub const TYPES_TYPES: [&str; 29] = [
    "host-id",
    "vm-id",
    "resources",
    "host-health",
    "sha-role",
    "label",
    "host-info",
    "vm-state",
    "ha-assignment",
    "placement-constraints",
    "vm-info",
    "cluster-view",
    "host-degraded",
    "heartbeat-missed",
    "vm-fault",
    "quorum-change",
    "replication-state",
    "sha-pair-state",
    "sha-change",
    "event",
    "severity",
    "vm-move",
    "vm-restart",
    "fence-host",
    "hold",
    "notice",
    "ha-action",
    "error-code",
    "plugin-error",
];

/// Per-call store state. A fresh one is made for every decision.
pub struct CallCtx {
    pub(crate) limiter: MemoryCap,
    pub(crate) settings: Arc<Vec<(String, String)>>,
    pub(crate) wall_clock_ms: u64,
    pub(crate) origin: Instant,
    pub(crate) log_budget: usize,
    pub(crate) logs_dropped: u64,
    pub(crate) plugin: Arc<str>,
    /// `LoadedPlugin::id` of the plugin.
    pub(crate) plugin_id: u64,
}

/// Caps linear memory and table growth; remembers a refused growth so the
/// resulting trap can be reported as "memory limit", and the largest memory
/// the instance had (the cost of resetting its slot grows with it).
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) hit: Option<usize>,
    pub(crate) largest: usize,
}

impl MemoryCap {
    pub(crate) fn new(limit: usize) -> MemoryCap {
        MemoryCap {
            limit,
            hit: None,
            largest: 0,
        }
    }
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
        self.largest = self.largest.max(desired);
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
         (level, message, fields): (LogLevel, WasmStr, WasmList<(WasmStr, WasmStr)>)| {
            log(&mut cx, level, &message, &fields)
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
        |cx: StoreContextMut<'_, CallCtx>, (key,): (WasmStr,)| {
            // Compared in place, not copied.
            let key = key.to_str(&cx)?;
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

/// Bytes a log field costs against the budget besides its text, so that a
/// long list of empty fields is not free to walk.
const FIELD_OVERHEAD: usize = 16;

/// The `log` import: keeps the record only if it fits in what is left of the
/// call's log budget; otherwise drops it and every later record of the call
/// without reading them. What a record costs before it is dropped is bounded
/// by the hostcall fuel (one UTF-8 check of at most `max-transfer-kib`).
fn log(
    cx: &mut StoreContextMut<'_, CallCtx>,
    level: LogLevel,
    message: &WasmStr,
    fields: &WasmList<(WasmStr, WasmStr)>,
) -> wasmtime::Result<()> {
    let budget = cx.data().log_budget;
    let record = if budget == 0 || fields.len() > budget / FIELD_OVERHEAD {
        None
    } else {
        read_record(cx, message, fields, budget)?
    };
    let cx = cx.data_mut();
    let Some((message, kept, size)) = record else {
        if cx.logs_dropped == 0 {
            tracing::warn!(plugin = %cx.plugin, "plugin log budget exhausted; dropping further records of this call");
        }
        cx.logs_dropped += 1;
        cx.log_budget = 0;
        return Ok(());
    };
    cx.log_budget -= size;
    // A plugin may quote its input (password hashes, SSH keys): never logged.
    let message = crate::redact::redact_secrets(&message);
    // Formatted only if a subscriber records the event.
    let fields = Fields(&kept);
    let plugin = &*cx.plugin;
    match level {
        LogLevel::Trace => tracing::trace!(target: "plugin", plugin, %fields, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "plugin", plugin, %fields, "{message}"),
        LogLevel::Info => tracing::info!(target: "plugin", plugin, %fields, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "plugin", plugin, %fields, "{message}"),
        LogLevel::Error => tracing::error!(target: "plugin", plugin, %fields, "{message}"),
    }
    Ok(())
}

/// A log record's message, fields and size, or `None` when it is larger
/// than `budget` (text is copied only while it fits).
#[allow(clippy::type_complexity)]
fn read_record(
    cx: &mut StoreContextMut<'_, CallCtx>,
    message: &WasmStr,
    fields: &WasmList<(WasmStr, WasmStr)>,
    budget: usize,
) -> wasmtime::Result<Option<(String, Vec<(String, String)>, usize)>> {
    let pairs = fields
        .iter(&mut *cx)?
        .collect::<wasmtime::Result<Vec<_>>>()?;
    let text = message.to_str(&*cx)?;
    let mut size = text.len();
    if size > budget {
        return Ok(None);
    }
    let message = text.into_owned();
    let mut kept = Vec::with_capacity(pairs.len());
    for (k, v) in &pairs {
        let (k, v) = (k.to_str(&*cx)?, v.to_str(&*cx)?);
        size += k.len() + v.len() + FIELD_OVERHEAD;
        if size > budget {
            return Ok(None);
        }
        kept.push((k.into_owned(), v.into_owned()));
    }
    Ok(Some((message, kept, size)))
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

/// Why an import of a component is not granted: `(import, detail)`.
pub type ImportRefusal = (String, String);

/// Checks every import of a component against what the host grants: only
/// the host and types interfaces, and in them only the functions of
/// [`HOST_FUNCTIONS`] with exactly their types and the types the WIT defines
/// (no resources).
pub(crate) fn check_imports(
    engine: &Engine,
    component: &wasmtime::component::types::Component,
) -> Result<(), ImportRefusal> {
    for (name, item) in component.imports(engine) {
        let (functions, types): (&[(&str, &str)], &[&str]) = match name {
            HOST_INTERFACE => (&HOST_FUNCTIONS, &HOST_TYPES),
            TYPES_INTERFACE => (&[], &TYPES_TYPES),
            _ => {
                return Err((
                    name.to_string(),
                    format!(
                        "{}; plugins may only import {HOST_INTERFACE} and {TYPES_INTERFACE}",
                        item_kind(&item.ty)
                    ),
                ))
            }
        };
        let refuse = |detail: String| Err((name.to_string(), detail));
        let ComponentItem::ComponentInstance(instance) = &item.ty else {
            return refuse(format!("{}, not an interface", item_kind(&item.ty)));
        };
        for (export, ext) in instance.exports(engine) {
            match &ext.ty {
                ComponentItem::ComponentFunc(f) => {
                    let Some((_, granted)) = functions.iter().find(|(n, _)| *n == export) else {
                        return refuse(format!("function `{export}`"));
                    };
                    let found = render_func(f);
                    if found != *granted {
                        return refuse(format!(
                            "function `{export}` of type {found}; the host grants {granted}"
                        ));
                    }
                }
                ComponentItem::Type(Type::Own(_) | Type::Borrow(_))
                | ComponentItem::Resource(_) => {
                    return refuse(format!("resource `{export}`"));
                }
                ComponentItem::Type(_) if types.contains(&export) => {}
                ComponentItem::Type(_) => return refuse(format!("type `{export}`")),
                other => return refuse(format!("{} `{export}`", item_kind(other))),
            }
        }
    }
    Ok(())
}

fn item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::CoreFunc(_) => "core function",
        ComponentItem::Module(_) => "core module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// A component function's type in WIT-like syntax, without parameter names:
/// `func(string) -> option<string>`.
pub fn render_func(f: &ComponentFunc) -> String {
    let params: Vec<String> = f.params().map(|(_, t)| render(&t)).collect();
    let results: Vec<String> = f.results().map(|t| render(&t)).collect();
    match results.len() {
        0 => format!("func({})", params.join(", ")),
        _ => format!("func({}) -> {}", params.join(", "), results.join(", ")),
    }
}

fn render(ty: &Type) -> String {
    let join = |v: Vec<String>| v.join(", ");
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", render(&l.ty())),
        Type::Tuple(t) => format!("tuple<{}>", join(t.types().map(|t| render(&t)).collect())),
        Type::Option(o) => format!("option<{}>", render(&o.ty())),
        Type::Result(r) => {
            let side = |t: Option<Type>| t.map_or_else(|| "_".to_string(), |t| render(&t));
            format!("result<{}, {}>", side(r.ok()), side(r.err()))
        }
        Type::Enum(e) => format!("enum{{{}}}", join(e.names().map(String::from).collect())),
        Type::Flags(f) => format!("flags{{{}}}", join(f.names().map(String::from).collect())),
        Type::Record(r) => format!(
            "record{{{}}}",
            join(
                r.fields()
                    .map(|f| format!("{}: {}", f.name, render(&f.ty)))
                    .collect()
            )
        ),
        Type::Variant(v) => format!(
            "variant{{{}}}",
            join(
                v.cases()
                    .map(|c| match c.ty {
                        Some(t) => format!("{}({})", c.name, render(&t)),
                        None => c.name.to_string(),
                    })
                    .collect()
            )
        ),
        Type::Map(_) => "map".into(),
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
        Type::FixedLengthList(l) => format!("list<{}, {}>", render(&l.ty()), l.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WIT of the host's interfaces, as wit-parser reads it.
    fn wit_interface(name: &str) -> (wit_parser::Resolve, wit_parser::InterfaceId) {
        let mut resolve = wit_parser::Resolve::default();
        let dir = crate::testkit::workspace_root().join("wit");
        let (pkg, _) = resolve.push_dir(&dir).expect("the WIT parses");
        let id = resolve.packages[pkg].interfaces[name];
        (resolve, id)
    }

    #[test]
    fn the_granted_names_are_exactly_those_of_the_wit() {
        for (iface, functions, types) in [
            (
                "host",
                HOST_FUNCTIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                HOST_TYPES.to_vec(),
            ),
            ("types", vec![], TYPES_TYPES.to_vec()),
        ] {
            let (resolve, id) = wit_interface(iface);
            let i = &resolve.interfaces[id];
            let mut wit_fns: Vec<&str> = i.functions.keys().map(String::as_str).collect();
            let mut wit_types: Vec<&str> = i.types.keys().map(String::as_str).collect();
            let (mut functions, mut types) = (functions, types);
            for v in [&mut wit_fns, &mut wit_types, &mut functions, &mut types] {
                v.sort_unstable();
            }
            assert_eq!(wit_fns, functions, "functions of {iface}");
            assert_eq!(wit_types, types, "types of {iface}");
        }
    }
}
