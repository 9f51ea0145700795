//! Typed errors of the plugin runtime. Each names its cause in one line.

use nasvisor_plugin_sdk::World;

/// Why a plugin package or component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is not a nasvisor plugin package.
    #[error("malformed plugin package: {0}")]
    MalformedPackage(String),
    /// The package is not signed and developer mode is off.
    #[error("bad signature: the plugin is unsigned and developer mode is off")]
    Unsigned,
    /// The signing key is not among the trusted keys.
    #[error("bad signature: signed by untrusted key {key_id}")]
    UntrustedKey { key_id: String },
    /// The signature does not verify.
    #[error("bad signature: the signature over the manifest does not verify (key {key_id})")]
    BadSignature { key_id: String },
    /// The component bytes differ from the signed digest.
    #[error(
        "bad signature: component bytes were tampered with (sha256 {actual}, signed {signed})"
    )]
    Tampered { signed: String, actual: String },
    /// The manifest's world is not the one expected.
    #[error("wrong world: the plugin is a {found} plugin, expected {expected}")]
    WrongWorld { expected: World, found: String },
    /// The component does not implement its world.
    #[error("wrong world: the component does not implement the {world} world: {detail}")]
    ComponentMismatch { world: World, detail: String },
    /// The WIT version is not compatible with this host.
    #[error("incompatible WIT version {found}: this host implements nasvisor:plugin@{host}")]
    IncompatibleWit { found: String, host: &'static str },
    /// The component imports something the host does not grant: an
    /// interface other than the host's own, or, in the host's interfaces, a
    /// function, type or resource the host does not define, or a function
    /// with another type. `detail` names the item.
    #[error("forbidden import: {import} ({detail})")]
    ForbiddenImport { import: String, detail: String },
    /// The component uses a WebAssembly feature the sandbox refuses: bulk
    /// memory and reference-type instructions (`memory.fill`, `memory.copy`,
    /// `table.fill`, ...) run over a whole memory or table in one
    /// instruction that no deadline check can interrupt.
    #[error("unsupported WebAssembly feature: {detail}; plugins must be built for the WebAssembly MVP feature set (rustc -C target-cpu=mvp, as `nasvisor plugin build` does)")]
    UnsupportedFeature { detail: String },
    /// Compiling the component failed.
    #[error("invalid component: {0}")]
    Compile(String),
    /// The component compiled and links, but a fresh instance of it fails:
    /// its start function traps, runs past the deadline or grows memory past
    /// the cap, or it needs more instances, memories or tables than a
    /// sandbox slot has. A fault of the host (no free slot, a starved CPU)
    /// shows here too, with `cause.is_plugin_fault()` false.
    #[error("the plugin cannot be instantiated: {cause}")]
    Instantiation { cause: CallError },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why one call into a plugin failed. The host falls back to the native
/// default policy on each of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call (instantiation included) ran past its deadline.
    #[error("deadline exceeded: the plugin ran longer than {deadline_ms} ms")]
    DeadlineExceeded { deadline_ms: u64 },
    /// The plugin tried to grow its memory past the cap.
    #[error("memory limit: the plugin tried to use {requested} bytes, the cap is {limit} bytes")]
    MemoryLimit { requested: u64, limit: u64 },
    /// The plugin trapped (panic, stack overflow, unreachable, bad memory access...).
    #[error("trap: {0}")]
    Trap(String),
    /// The plugin answered something the host must not act on.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// Instantiating the plugin failed.
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// A fault of the host, not of the plugin: every instance slot stayed
    /// busy for the bounded wait. Never counts toward quarantine.
    #[error("host busy: no free plugin instance slot within {waited_ms} ms")]
    NoSlot { waited_ms: u64 },
    /// A fault of the host, not of the plugin: the deadline passed while the
    /// plugin had been given only `cpu_ms` of CPU time (the host was
    /// starved). Never counts toward quarantine.
    #[error("host starved: the deadline of {deadline_ms} ms passed after only {cpu_ms} ms of CPU time for the plugin")]
    Starved { deadline_ms: u64, cpu_ms: u64 },
}

impl CallError {
    /// A short stable name of the cause, for journals and metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            CallError::DeadlineExceeded { .. } => "deadline-exceeded",
            CallError::MemoryLimit { .. } => "memory-limit",
            CallError::Trap(_) => "trap",
            CallError::InvalidOutput(_) => "invalid-output",
            CallError::Instantiate(_) => "instantiate",
            CallError::NoSlot { .. } => "no-slot",
            CallError::Starved { .. } => "starved",
        }
    }

    /// Whether the plugin itself is to blame (trap, deadline, memory,
    /// invalid output, a start function that fails): only these count toward
    /// quarantine. Faults of the host (no free slot, a starved CPU) do not.
    pub fn is_plugin_fault(&self) -> bool {
        !matches!(self, CallError::NoSlot { .. } | CallError::Starved { .. })
    }
}
