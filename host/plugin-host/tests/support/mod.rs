//! Hand-written scheduler components for the sandbox tests: a core module
//! written in WAT (the behaviour under test, instruction by instruction),
//! given the WIT world's metadata and turned into a component with
//! wit-component, as `nasvisor plugin build` does for Rust plugins.

#![allow(dead_code)]

use nasvisor_plugin_host::package::Package;
use nasvisor_plugin_host::testkit::{build_signing_key, workspace_root};
use nasvisor_plugin_host::{Answer, CallError, LoadError, LoadedPlugin, Runtime, RuntimeConfig};
use nasvisor_plugin_sdk::World;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The scheduler world's WIT, each file's text passed through `patch`
/// (e.g. to add an `exec` function to the `host` interface).
fn scheduler_resolve(
    patch: &dyn Fn(String) -> String,
) -> (wit_parser::Resolve, wit_parser::WorldId) {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["types.wit", "worlds.wit"] {
        let text = std::fs::read_to_string(workspace_root().join("wit").join(f))
            .unwrap_or_else(|e| panic!("wit/{f}: {e}"));
        std::fs::write(dir.path().join(f), patch(text)).expect("write wit");
    }
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(dir.path()).expect("the WIT parses");
    let world = resolve
        .select_world(&[pkg], Some("scheduler"))
        .expect("scheduler world");
    (resolve, world)
}

/// A scheduler component whose core module is `module_wat`, built against
/// the WIT as changed by `patch`.
pub fn component(module_wat: &str, patch: &dyn Fn(String) -> String) -> Vec<u8> {
    let (resolve, world) = scheduler_resolve(patch);
    let mut module = wat::parse_str(module_wat).expect("the module's WAT parses");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )
    .expect("embed metadata");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("read the module")
        .validate(true)
        .encode()
        .expect("encode the component")
}

/// A scheduler core module: a bump `cabi_realloc`, `place` running
/// `place_body` and then answering host "host-0" (reason "ok"), and
/// `rebalance` running `rebalance_body` and then answering an empty list.
/// Both bodies may use the locals `$t` (i64), `$i` and `$a` (i32); a body
/// that leaves an i32 on the stack and ends with `return` answers from that
/// address instead. `imports` declares host imports, `extra` adds functions,
/// data or a start function. The memory starts at `memory_pages` pages and
/// has no maximum: it grows up to the host's cap.
#[derive(Debug, Clone)]
pub struct Scheduler<'a> {
    pub imports: &'a str,
    pub memory_pages: u32,
    pub place_body: &'a str,
    pub rebalance_body: &'a str,
    pub extra: &'a str,
}

impl Default for Scheduler<'_> {
    fn default() -> Self {
        Scheduler {
            imports: "",
            memory_pages: 2,
            place_body: "",
            rebalance_body: "",
            extra: "",
        }
    }
}

impl Scheduler<'_> {
    pub fn wat(&self) -> String {
        let Scheduler {
            imports,
            memory_pages,
            place_body,
            rebalance_body,
            extra,
        } = self;
        format!(
            r#"(module
  {imports}
  (memory (export "memory") {memory_pages})
  (global $heap (mut i32) (i32.const 65536))
  (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    global.get $heap
    local.get 2 i32.add i32.const 1 i32.sub
    i32.const 0 local.get 2 i32.sub i32.and
    local.tee $p
    local.get 3 i32.add global.set $heap
    (block $done
      (loop $grow
        global.get $heap
        memory.size i32.const 16 i32.shl
        i32.le_u br_if $done
        i32.const 1 memory.grow i32.const -1 i32.eq
        if unreachable end
        br $grow))
    local.get $p)
  ;; "host-0", "ok"
  (data (i32.const 1024) "host-0ok")
  ;; result<placement, _> at 2048: ok, host (1024, 6), passive-host none, reason (1030, 2)
  (data (i32.const 2048) "\00\00\00\00\00\04\00\00\06\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\06\04\00\00\02\00\00\00")
  ;; result<list<rebalance-move>, _> at 2100: ok, empty list
  (data (i32.const 2100) "\00\00\00\00\00\00\00\00\00\00\00\00")
  (func (export "place") (param $args i32) (result i32)
    (local $t i64) (local $i i32) (local $a i32)
    {place_body}
    i32.const 2048)
  (func (export "rebalance") (param i32 i32 i32 i32 i32 i64) (result i32)
    (local $t i64) (local $i i32) (local $a i32)
    {rebalance_body}
    i32.const 2100)
  {extra}
)"#
        )
    }

    /// The component, built against the WIT as changed by `patch`.
    pub fn component_with_wit(&self, patch: &dyn Fn(String) -> String) -> Vec<u8> {
        component(&self.wat(), patch)
    }

    pub fn component(&self) -> Vec<u8> {
        component(&self.wat(), &|t| t)
    }

    /// The component in a package signed with the build key.
    pub fn package(&self, name: &str) -> Vec<u8> {
        signed(name, self.component())
    }
}

/// `component` in a package signed with the build key.
pub fn signed(name: &str, component: Vec<u8>) -> Vec<u8> {
    Package::build(
        name,
        "1.0.0",
        World::Scheduler,
        component,
        Some(&build_signing_key()),
    )
    .to_bytes()
}

/// A runtime trusting the build key.
pub fn runtime(cfg: RuntimeConfig) -> Arc<Runtime> {
    let key = build_signing_key().verifying_key();
    Arc::new(Runtime::new(cfg, vec![key]).expect("runtime"))
}

/// A runtime with the default settings but `deadline_ms` and `memory_limit_mib`.
pub fn runtime_with(deadline_ms: u64, memory_limit_mib: u64) -> Arc<Runtime> {
    runtime(RuntimeConfig {
        deadline_ms,
        memory_limit_mib,
        ..RuntimeConfig::default()
    })
}

pub fn load(rt: &Runtime, package: &[u8]) -> LoadedPlugin {
    rt.load(package, Some(World::Scheduler), vec![])
        .expect("the plugin loads")
}

pub fn load_err(rt: &Runtime, package: &[u8]) -> LoadError {
    match rt.load(package, Some(World::Scheduler), vec![]) {
        Ok(_) => panic!("the plugin must be refused at load"),
        Err(e) => e,
    }
}

/// A scheduler whose `place` spins on the host's monotonic clock until
/// `ms` have passed since the call started (the clock's origin), then
/// answers host "host-0".
pub fn spinning_scheduler(ms: u64) -> Vec<u8> {
    let body = format!(
        "i64.const {} local.set $t
         (block $b (loop $l call $now local.get $t i64.ge_u br_if $b br $l))",
        ms * 1_000_000
    );
    Scheduler {
        imports: IMPORT_NOW,
        place_body: &body,
        ..Default::default()
    }
    .package(&format!("spin-{ms}ms"))
}

/// A scheduler whose `place` grows its memory to 4 GiB (the largest cap)
/// and writes one word in every 4 KiB page of it, again and again, forever.
/// (`$i` counts pages: the byte size of a 4 GiB memory does not fit in an
/// i32.)
pub fn all_memory_writer() -> Vec<u8> {
    Scheduler {
        place_body: "i32.const 65534 memory.grow drop
          (loop $forever
            (block $b (loop $l
              local.get $i memory.size i32.const 16 i32.mul i32.ge_u br_if $b
              local.get $i i32.const 12 i32.shl i32.const 1 i32.store
              local.get $i i32.const 1 i32.add local.set $i
              br $l))
            i32.const 0 local.set $i
            br $forever)",
        ..Default::default()
    }
    .package("all-memory-writer")
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `call` until it is not `CallError::Starved` (at most 20 runs).
pub fn not_starved(call: impl Fn() -> Result<Answer, CallError>) -> Result<Answer, CallError> {
    for _ in 0..20 {
        match call() {
            Err(CallError::Starved { .. }) => continue,
            r => return r,
        }
    }
    panic!("20 runs in a row were starved of CPU: the machine is overloaded");
}

/// Runs `call` until one run is not starved of CPU by a loaded machine (at
/// most 20 runs) and returns its result and wall time. A run is starved when
/// the runtime says so (`CallError::Starved`) or when this thread was off
/// the CPU for more than 2 ms of it: then neither the deadline nor its
/// precision is the plugin's or the sandbox's to keep.
pub fn unstarved(
    call: impl Fn() -> Result<Answer, CallError>,
) -> (Result<Answer, CallError>, Duration) {
    for _ in 0..20 {
        let (cpu, t) = (thread_cpu(), Instant::now());
        let r = call();
        let wall = t.elapsed();
        let off_cpu = wall.saturating_sub(thread_cpu() - cpu);
        if matches!(r, Err(CallError::Starved { .. })) || off_cpu > Duration::from_millis(2) {
            continue;
        }
        return (r, wall);
    }
    panic!("20 runs in a row were starved of CPU: the machine is overloaded");
}

/// Import of the host's monotonic clock as `$now`.
pub const IMPORT_NOW: &str =
    r#"(import "nasvisor:plugin/host@0.1.0" "monotonic-now-ns" (func $now (result i64)))"#;
