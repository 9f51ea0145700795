//! # nasvisor plugin host
//!
//! Runs policy plugins (WebAssembly components of the `nasvisor:plugin` WIT
//! package) in a sandbox: one wasmtime engine with the pooling allocator,
//! an `InstancePre` per plugin, a fresh store per decision with an epoch
//! deadline and a memory cap. Every answer is validated; a plugin that fails a
//! decision is replaced for that decision by the built-in native default, and
//! quarantined after repeated failures. Decisions are journaled and can be
//! replayed against another plugin build.

pub mod cache;
pub mod config;
pub mod decision;
pub mod error;
pub mod host_imports;
pub mod journal;
pub mod package;
pub mod policy;
pub mod redact;
pub mod runtime;
pub mod testkit;
pub mod validate;

pub use config::RuntimeConfig;
pub use decision::{
    answer_json, invoke, invoke_judging_the_plugin, invoke_native, invoke_native_with, Answer,
    DecisionInput, DecisionOutput, NativeEnv, NativePolicies,
};
pub use error::{CallError, LoadError};
pub use package::{Manifest, Package};
pub use policy::{
    Decision, DecisionSource, DecisionSummary, PolicyHost, SlotStatus, RECENT_DECISIONS,
};
pub use runtime::{LoadSource, LoadedPlugin, Runtime};
