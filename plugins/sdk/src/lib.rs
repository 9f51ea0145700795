//! # nasvisor plugin SDK
//!
//! A nasvisor policy plugin is a small Rust crate that implements one of the
//! four policy traits of this crate ([`SchedulerPolicy`], [`HaPolicy`],
//! [`ShaPolicy`], [`OsInstallerPolicy`]) over the plain types in [`types`],
//! and exports it with one macro:
//!
//! ```ignore
//! use nasvisor_plugin_sdk::prelude::*;
//!
//! #[derive(Default)]
//! pub struct MyScheduler;
//!
//! impl SchedulerPolicy for MyScheduler {
//!     fn place(&self, env: &dyn Env, view: &ClusterView, req: &PlacementRequest)
//!         -> Result<Placement, PluginError> { /* ... */ }
//!     fn rebalance(&self, env: &dyn Env, view: &ClusterView)
//!         -> Result<Vec<RebalanceMove>, PluginError> { Ok(vec![]) }
//! }
//!
//! nasvisor_plugin_sdk::export_scheduler!(MyScheduler);
//! ```
//!
//! The same crate compiles natively (the host links the default policies that
//! way, and tests run them natively) and to `wasm32-unknown-unknown`, where the
//! export macro adds the component glue generated from `wit/` by wit-bindgen.
//! Enable the cargo feature of your world (`scheduler`, `ha-policy`, `sha` or
//! `os-installer`) on this crate.
//!
//! Plugins are pure functions of their inputs and of [`Env`]: logging, two
//! clocks and the plugin's own settings. There is no filesystem or network.

pub mod limits;
pub mod seed;
pub mod types;

#[doc(hidden)]
pub mod guest;

pub use types::os_installer::{
    BootSettings, Completion, DiskMethod, DiskPlan, Firmware, ImageFormat, ImageMeta, InstallPlan,
    InstallRequest, NicSettings, SeedFile, UserSpec,
};
pub use types::scheduler::{Placement, PlacementRequest, RebalanceMove};
pub use types::sha::{SetupCheck, SetupProblem};
pub use types::*;

/// The version of the WIT package this SDK implements.
pub const WIT_VERSION: &str = "0.1.0";

/// The four plugin worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Scheduler,
    HaPolicy,
    Sha,
    OsInstaller,
}

impl World {
    pub const ALL: [World; 4] = [
        World::Scheduler,
        World::HaPolicy,
        World::Sha,
        World::OsInstaller,
    ];

    /// The WIT name of the world.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Scheduler => "scheduler",
            World::HaPolicy => "ha-policy",
            World::Sha => "sha",
            World::OsInstaller => "os-installer",
        }
    }

    /// The functions a component of this world exports.
    pub fn exports(self) -> &'static [&'static str] {
        match self {
            World::Scheduler => &["place", "rebalance"],
            World::HaPolicy => &["react"],
            World::Sha => &["check-setup", "parse-status", "on-state-change"],
            World::OsInstaller => &["plan-install"],
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for World {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        World::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                format!("unknown world {s:?} (expected scheduler, ha-policy, sha or os-installer)")
            })
    }
}

/// What a plugin may ask of its host: the imports of `wit/types.wit`'s `host`
/// interface. Natively the host passes its own implementation; in a component
/// the calls go through the WIT imports.
pub trait Env {
    /// Write a log record with key/value fields.
    fn log(&self, level: LogLevel, message: &str, fields: &[(&str, &str)]);
    /// Monotonic nanoseconds from an arbitrary origin.
    fn monotonic_now_ns(&self) -> u64;
    /// Wall-clock milliseconds since the Unix epoch, fixed for one decision.
    fn wall_clock_ms(&self) -> u64;
    /// One of the plugin's settings.
    fn setting(&self, key: &str) -> Option<String>;
    /// All of the plugin's settings.
    fn settings(&self) -> Vec<(String, String)>;
}

impl dyn Env + '_ {
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message, &[]);
    }
    pub fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message, &[]);
    }
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message, &[]);
    }
    /// A setting parsed with `FromStr`, or `default` when unset. A value that
    /// does not parse is a `bad-settings` error naming the key.
    pub fn setting_or<T: std::str::FromStr>(
        &self,
        key: &str,
        default: T,
    ) -> Result<T, PluginError> {
        match self.setting(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                PluginError::new(
                    ErrorCode::BadSettings,
                    format!("setting {key:?}: cannot parse {v:?}"),
                )
            }),
        }
    }
}

/// An [`Env`] with fixed settings and no clock movement, for tests and for
/// running policies outside the host. Logs go to standard error when `verbose`.
#[derive(Debug, Clone, Default)]
pub struct StaticEnv {
    pub settings: Vec<(String, String)>,
    pub wall_clock_ms: u64,
    pub verbose: bool,
}

impl StaticEnv {
    /// An env with these settings.
    pub fn with_settings(settings: &[(&str, &str)]) -> StaticEnv {
        StaticEnv {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }
}

impl Env for StaticEnv {
    fn log(&self, level: LogLevel, message: &str, fields: &[(&str, &str)]) {
        if self.verbose {
            eprintln!("[{level:?}] {message} {fields:?}");
        }
    }
    fn monotonic_now_ns(&self) -> u64 {
        0
    }
    fn wall_clock_ms(&self) -> u64 {
        self.wall_clock_ms
    }
    fn setting(&self, key: &str) -> Option<String> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    fn settings(&self) -> Vec<(String, String)> {
        self.settings.clone()
    }
}

/// The `scheduler` world: where a VM runs.
pub trait SchedulerPolicy {
    /// Choose the host (and the passive host of an HA VM) at first power-on.
    /// The host must be one of `req.eligible_hosts`; the passive host one of
    /// `req.eligible_passive_hosts` and different from the host.
    fn place(
        &self,
        env: &dyn Env,
        view: &ClusterView,
        req: &PlacementRequest,
    ) -> Result<Placement, PluginError>;
    /// Advise live migrations that would even out the cluster.
    fn rebalance(
        &self,
        env: &dyn Env,
        view: &ClusterView,
    ) -> Result<Vec<RebalanceMove>, PluginError>;
}

/// The `ha-policy` world: how the cluster reacts to faults.
pub trait HaPolicy {
    fn react(
        &self,
        env: &dyn Env,
        view: &ClusterView,
        events: &[Event],
    ) -> Result<Vec<HaAction>, PluginError>;
}

/// The `sha` world: integration with a two-box storage HA pair.
pub trait ShaPolicy {
    fn check_setup(
        &self,
        env: &dyn Env,
        host: &HostInfo,
        raw_status: &str,
    ) -> Result<SetupCheck, PluginError>;
    fn parse_status(&self, env: &dyn Env, raw_status: &str) -> Result<ShaPairState, PluginError>;
    fn on_state_change(
        &self,
        env: &dyn Env,
        view: &ClusterView,
        host: &str,
        previous: Option<&ShaPairState>,
        current: &ShaPairState,
    ) -> Result<Vec<HaAction>, PluginError>;
}

/// The `os-installer` world: how an image becomes an installed VM disk.
pub trait OsInstallerPolicy {
    fn plan_install(
        &self,
        env: &dyn Env,
        image: &ImageMeta,
        req: &InstallRequest,
    ) -> Result<InstallPlan, PluginError>;
}

/// Everything a plugin author needs.
pub mod prelude {
    pub use crate::types::os_installer::*;
    pub use crate::types::scheduler::*;
    pub use crate::types::sha::*;
    pub use crate::types::*;
    pub use crate::{Env, HaPolicy, OsInstallerPolicy, SchedulerPolicy, ShaPolicy, StaticEnv};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_wit_names() {
        let a = HaAction::Switchover(VmMove {
            vm: "vm1".into(),
            target: "h2".into(),
            reason: "degraded".into(),
        });
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(
            s,
            r#"{"switchover":{"vm":"vm1","target":"h2","reason":"degraded"}}"#
        );
        let h: HostInfo =
            serde_json::from_str(r#"{"id":"h1","health":"degraded","sha-role":"primary"}"#)
                .unwrap();
        assert_eq!(h.health, HostHealth::Degraded);
        assert_eq!(h.sha_role, ShaRole::Primary);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let e = serde_json::from_str::<HostInfo>(r#"{"id":"h1","helth":"degraded"}"#).unwrap_err();
        assert!(e.to_string().contains("helth"), "{e}");
    }

    #[test]
    fn world_names_round_trip() {
        for w in World::ALL {
            assert_eq!(w.as_str().parse::<World>().unwrap(), w);
        }
        assert!("schedulr"
            .parse::<World>()
            .unwrap_err()
            .contains("schedulr"));
    }

    #[test]
    fn setting_or_names_the_bad_key() {
        let env = StaticEnv {
            settings: vec![("spread".into(), "lots".into())],
            ..Default::default()
        };
        let env: &dyn Env = &env;
        let e = env.setting_or::<u32>("spread", 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
        assert!(e.message.contains("spread"));
        assert_eq!(env.setting_or::<u32>("other", 7).unwrap(), 7);
    }
}
