//! One decision: its input and output in every world, and how to ask a
//! component or the native default for it.
//!
//! The JSON form of an input names the function (`"function": "place"`) and
//! its arguments with their WIT names; see docs/plugin-json.md.

use crate::error::{CallError, LoadError};
use crate::runtime::{LoadedPlugin, Runtime};
use nasvisor_plugin_sdk::prelude::*;
use nasvisor_plugin_sdk::World;
use serde::{Deserialize, Serialize};

/// The input of one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "function", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DecisionInput {
    /// scheduler.place
    Place {
        view: ClusterView,
        request: PlacementRequest,
    },
    /// scheduler.rebalance
    Rebalance { view: ClusterView },
    /// ha-policy.react
    React {
        view: ClusterView,
        events: Vec<Event>,
    },
    /// sha.check-setup
    CheckSetup {
        host: HostInfo,
        #[serde(rename = "raw-status")]
        raw_status: String,
    },
    /// sha.parse-status
    ParseStatus {
        #[serde(rename = "raw-status")]
        raw_status: String,
    },
    /// sha.on-state-change
    OnStateChange {
        view: ClusterView,
        host: HostId,
        previous: Option<ShaPairState>,
        current: ShaPairState,
    },
    /// os-installer.plan-install
    PlanInstall {
        image: ImageMeta,
        request: InstallRequest,
        /// Host-only: the free bytes of the pool the disk goes to. The
        /// validator checks the planned disk against it; it is journaled and
        /// replayed but not passed to the plugin. Absent (unknown) in inputs
        /// written before it existed.
        #[serde(
            default,
            rename = "pool-free-bytes",
            skip_serializing_if = "Option::is_none"
        )]
        pool_free_bytes: Option<u64>,
    },
}

impl DecisionInput {
    /// The world whose plugin decides this.
    pub fn world(&self) -> World {
        match self {
            DecisionInput::Place { .. } | DecisionInput::Rebalance { .. } => World::Scheduler,
            DecisionInput::React { .. } => World::HaPolicy,
            DecisionInput::CheckSetup { .. }
            | DecisionInput::ParseStatus { .. }
            | DecisionInput::OnStateChange { .. } => World::Sha,
            DecisionInput::PlanInstall { .. } => World::OsInstaller,
        }
    }

    /// The WIT name of the function.
    pub fn function(&self) -> &'static str {
        match self {
            DecisionInput::Place { .. } => "place",
            DecisionInput::Rebalance { .. } => "rebalance",
            DecisionInput::React { .. } => "react",
            DecisionInput::CheckSetup { .. } => "check-setup",
            DecisionInput::ParseStatus { .. } => "parse-status",
            DecisionInput::OnStateChange { .. } => "on-state-change",
            DecisionInput::PlanInstall { .. } => "plan-install",
        }
    }

    /// The view the decision was made on, if any.
    pub fn view(&self) -> Option<&ClusterView> {
        match self {
            DecisionInput::Place { view, .. }
            | DecisionInput::Rebalance { view }
            | DecisionInput::React { view, .. }
            | DecisionInput::OnStateChange { view, .. } => Some(view),
            _ => None,
        }
    }
}

/// The successful output of one decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DecisionOutput {
    Placement(Placement),
    Moves(Vec<RebalanceMove>),
    Actions(Vec<HaAction>),
    SetupCheck(SetupCheck),
    PairState(ShaPairState),
    Plan(InstallPlan),
}

/// A plugin's answer: an output, or its own deliberate error.
pub type Answer = Result<DecisionOutput, PluginError>;

/// The JSON form of an answer: `{"ok": ...}` or `{"error": {...}}`.
pub fn answer_json(answer: &Answer) -> serde_json::Value {
    match answer {
        Ok(o) => serde_json::json!({ "ok": o }),
        Err(e) => serde_json::json!({ "error": e }),
    }
}

/// The cluster view `place` is given through a component: every host, and
/// only the VMs the request's VM names in its affinity and anti-affinity
/// constraints (the only VMs a placement depends on: the hosts' `free`
/// resources already account for every VM, reservations included). Lowering
/// the whole VM list into a fresh instance costs about 1 µs per VM, so the
/// reduced view keeps a decision's cost independent of the cluster's size.
/// It lowers as the WIT `cluster-view` record (records are structural), and
/// borrows from the full view, so nothing is cloned.
///
/// The WIT documents this on `place`. Validation, the journal and the
/// native fallback all see the full view.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub(crate) struct PlaceView<'a> {
    hosts: &'a [HostInfo],
    vms: Vec<&'a VmInfo>,
    #[component(name = "has-quorum")]
    has_quorum: bool,
    #[component(name = "now-ms")]
    now_ms: u64,
}

impl<'a> PlaceView<'a> {
    /// The reduced view of `view` for placing `req.vm`.
    pub(crate) fn new(view: &'a ClusterView, req: &PlacementRequest) -> PlaceView<'a> {
        let c = &req.vm.constraints;
        let named = |id: &str| {
            c.affinity.iter().any(|a| a == id) || c.anti_affinity.iter().any(|a| a == id)
        };
        let vms = if c.affinity.is_empty() && c.anti_affinity.is_empty() {
            Vec::new()
        } else {
            view.vms.iter().filter(|v| named(&v.id)).collect()
        };
        PlaceView {
            hosts: &view.hosts,
            vms,
            has_quorum: view.has_quorum,
            now_ms: view.now_ms,
        }
    }

    #[cfg(test)]
    fn vm_ids(&self) -> Vec<&str> {
        self.vms.iter().map(|v| v.id.as_str()).collect()
    }
}

type PlaceSig<'a> = (&'a PlaceView<'a>, &'a PlacementRequest);
type PlaceRet = (Result<Placement, PluginError>,);
type RebalanceSig<'a> = (&'a ClusterView,);
type RebalanceRet = (Result<Vec<RebalanceMove>, PluginError>,);
type ReactSig<'a> = (&'a ClusterView, &'a [Event]);
type ActionsRet = (Result<Vec<HaAction>, PluginError>,);
type CheckSetupSig<'a> = (&'a HostInfo, &'a str);
type CheckSetupRet = (Result<SetupCheck, PluginError>,);
type ParseStatusSig<'a> = (&'a str,);
type ParseStatusRet = (Result<ShaPairState, PluginError>,);
type OnStateChangeSig<'a> = (
    &'a ClusterView,
    &'a str,
    &'a Option<ShaPairState>,
    &'a ShaPairState,
);
type PlanInstallSig<'a> = (&'a ImageMeta, &'a InstallRequest);
type PlanInstallRet = (Result<InstallPlan, PluginError>,);

/// Checks every export of the plugin's world against the Rust signatures
/// used by [`invoke`], in one fresh instance (which also shows that the
/// plugin instantiates within the deadline and the memory cap).
pub(crate) fn typecheck(rt: &Runtime, p: &LoadedPlugin) -> Result<(), LoadError> {
    rt.check_instance(p, |store, i| match p.world() {
        World::Scheduler => {
            Runtime::check_export::<PlaceSig, PlaceRet>(p, store, i, "place")?;
            Runtime::check_export::<RebalanceSig, RebalanceRet>(p, store, i, "rebalance")
        }
        World::HaPolicy => Runtime::check_export::<ReactSig, ActionsRet>(p, store, i, "react"),
        World::Sha => {
            Runtime::check_export::<CheckSetupSig, CheckSetupRet>(p, store, i, "check-setup")?;
            Runtime::check_export::<ParseStatusSig, ParseStatusRet>(p, store, i, "parse-status")?;
            Runtime::check_export::<OnStateChangeSig, ActionsRet>(p, store, i, "on-state-change")
        }
        World::OsInstaller => {
            Runtime::check_export::<PlanInstallSig, PlanInstallRet>(p, store, i, "plan-install")
        }
    })
}

/// Asks a component for a decision (fresh instance, limits applied). The
/// answer is not validated here.
pub fn invoke(
    rt: &Runtime,
    p: &LoadedPlugin,
    input: &DecisionInput,
    wall_clock_ms: u64,
) -> Result<Answer, CallError> {
    if input.world() != p.world() {
        return Err(CallError::Instantiate(format!(
            "{} is a {} function; the plugin is a {} plugin",
            input.function(),
            input.world(),
            p.world()
        )));
    }
    let f = input.function();
    let w = wall_clock_ms;
    Ok(match input {
        DecisionInput::Place { view, request } => rt
            .call::<PlaceSig, PlaceRet>(p, f, w, (&PlaceView::new(view, request), request))?
            .0
            .map(DecisionOutput::Placement),
        DecisionInput::Rebalance { view } => rt
            .call::<RebalanceSig, RebalanceRet>(p, f, w, (view,))?
            .0
            .map(DecisionOutput::Moves),
        DecisionInput::React { view, events } => rt
            .call::<ReactSig, ActionsRet>(p, f, w, (view, events.as_slice()))?
            .0
            .map(DecisionOutput::Actions),
        DecisionInput::CheckSetup { host, raw_status } => rt
            .call::<CheckSetupSig, CheckSetupRet>(p, f, w, (host, raw_status.as_str()))?
            .0
            .map(DecisionOutput::SetupCheck),
        DecisionInput::ParseStatus { raw_status } => rt
            .call::<ParseStatusSig, ParseStatusRet>(p, f, w, (raw_status.as_str(),))?
            .0
            .map(DecisionOutput::PairState),
        DecisionInput::OnStateChange {
            view,
            host,
            previous,
            current,
        } => rt
            .call::<OnStateChangeSig, ActionsRet>(
                p,
                f,
                w,
                (view, host.as_str(), previous, current),
            )?
            .0
            .map(DecisionOutput::Actions),
        DecisionInput::PlanInstall { image, request, .. } => rt
            .call::<PlanInstallSig, PlanInstallRet>(p, f, w, (image, request))?
            .0
            .map(DecisionOutput::Plan),
    })
}

/// Native policies, one per world: the built-in defaults, or a vendor's
/// policies linked natively (the SDK harness compares those with their
/// component builds).
#[derive(Clone, Copy)]
pub struct NativePolicies<'a> {
    pub scheduler: &'a dyn SchedulerPolicy,
    pub ha_policy: &'a dyn HaPolicy,
    pub sha: &'a dyn ShaPolicy,
    pub os_installer: &'a dyn OsInstallerPolicy,
}

impl std::fmt::Debug for NativePolicies<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativePolicies")
    }
}

impl NativePolicies<'static> {
    /// nasvisor's default policies.
    pub fn defaults() -> NativePolicies<'static> {
        NativePolicies {
            scheduler: &nasvisor_scheduler::DefaultScheduler,
            ha_policy: &nasvisor_ha_policy::DefaultHaPolicy,
            sha: &nasvisor_sha::DefaultSha,
            os_installer: &nasvisor_os_installer::DefaultOsInstaller,
        }
    }
}

impl<'a> NativePolicies<'a> {
    /// The defaults, with `world`'s policy replaced.
    pub fn scheduler(p: &'a dyn SchedulerPolicy) -> NativePolicies<'a> {
        NativePolicies {
            scheduler: p,
            ..NativePolicies::defaults()
        }
    }
    pub fn ha_policy(p: &'a dyn HaPolicy) -> NativePolicies<'a> {
        NativePolicies {
            ha_policy: p,
            ..NativePolicies::defaults()
        }
    }
    pub fn sha(p: &'a dyn ShaPolicy) -> NativePolicies<'a> {
        NativePolicies {
            sha: p,
            ..NativePolicies::defaults()
        }
    }
    pub fn os_installer(p: &'a dyn OsInstallerPolicy) -> NativePolicies<'a> {
        NativePolicies {
            os_installer: p,
            ..NativePolicies::defaults()
        }
    }
}

/// How long [`invoke_judging_the_plugin`] keeps calling again after faults
/// of the host: other work on the machine comes in bursts (a compiler's
/// code-generation threads, a backup), and a call made after the burst
/// judges the plugin. Five calls in a row were not enough on a 2-core
/// machine running two builds (load 5.5): a 20 ms deadline was starved
/// every time.
pub const HOST_FAULT_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);

/// The pause before calling again after a fault of the host, doubled after
/// each one up to [`HOST_FAULT_MAX_PAUSE`].
const HOST_FAULT_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);
const HOST_FAULT_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Like [`invoke`], for tools that judge a plugin (`nasvisor plugin run`,
/// `plugin replay`): a call that the host failed (no free slot in time, a
/// CPU starved by other work, see [`CallError::is_plugin_fault`]) says
/// nothing about the plugin, so it is made again, after a growing pause,
/// for up to [`HOST_FAULT_BUDGET`]; after that the host's fault is the
/// answer. The daemon does not retry: it falls back to the native default
/// at once, without blame.
pub fn invoke_judging_the_plugin(
    rt: &Runtime,
    p: &LoadedPlugin,
    input: &DecisionInput,
    wall_clock_ms: u64,
) -> Result<Answer, CallError> {
    let started = std::time::Instant::now();
    let mut pause = HOST_FAULT_FIRST_PAUSE;
    let mut attempt = 1u32;
    loop {
        match invoke(rt, p, input, wall_clock_ms) {
            Err(e) if !e.is_plugin_fault() && started.elapsed() + pause < HOST_FAULT_BUDGET => {
                tracing::debug!(attempt, error = %e, "fault of the host; calling the plugin again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(HOST_FAULT_MAX_PAUSE);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Asks the built-in native default policy for a decision.
pub fn invoke_native(input: &DecisionInput, env: &dyn Env) -> Answer {
    invoke_native_with(&NativePolicies::defaults(), input, env)
}

/// Asks a native policy for a decision.
pub fn invoke_native_with(p: &NativePolicies<'_>, input: &DecisionInput, env: &dyn Env) -> Answer {
    match input {
        DecisionInput::Place { view, request } => p
            .scheduler
            .place(env, view, request)
            .map(DecisionOutput::Placement),
        DecisionInput::Rebalance { view } => {
            p.scheduler.rebalance(env, view).map(DecisionOutput::Moves)
        }
        DecisionInput::React { view, events } => p
            .ha_policy
            .react(env, view, events)
            .map(DecisionOutput::Actions),
        DecisionInput::CheckSetup { host, raw_status } => p
            .sha
            .check_setup(env, host, raw_status)
            .map(DecisionOutput::SetupCheck),
        DecisionInput::ParseStatus { raw_status } => p
            .sha
            .parse_status(env, raw_status)
            .map(DecisionOutput::PairState),
        DecisionInput::OnStateChange {
            view,
            host,
            previous,
            current,
        } => p
            .sha
            .on_state_change(env, view, host, previous.as_ref(), current)
            .map(DecisionOutput::Actions),
        DecisionInput::PlanInstall { image, request, .. } => p
            .os_installer
            .plan_install(env, image, request)
            .map(DecisionOutput::Plan),
    }
}

/// The [`Env`] the host gives native policies: logs through `tracing`, the
/// same settings and wall clock a component would see.
#[derive(Debug, Clone)]
pub struct NativeEnv {
    pub settings: Vec<(String, String)>,
    pub wall_clock_ms: u64,
    pub origin: std::time::Instant,
}

impl NativeEnv {
    pub fn new(settings: Vec<(String, String)>, wall_clock_ms: u64) -> NativeEnv {
        NativeEnv {
            settings,
            wall_clock_ms,
            origin: std::time::Instant::now(),
        }
    }
}

impl Env for NativeEnv {
    fn log(&self, level: LogLevel, message: &str, fields: &[(&str, &str)]) {
        let fields = format!("{fields:?}");
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "plugin", plugin = "native", %fields, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "plugin", plugin = "native", %fields, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "plugin", plugin = "native", %fields, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "plugin", plugin = "native", %fields, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "plugin", plugin = "native", %fields, "{message}")
            }
        }
    }
    fn monotonic_now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{cluster_view, place_input};

    #[test]
    fn place_view_keeps_every_host_and_only_the_named_vms() {
        let view = cluster_view(7, 100);
        let DecisionInput::Place { mut request, .. } = place_input(view.clone(), "v", false) else {
            unreachable!()
        };
        let v = PlaceView::new(&view, &request);
        assert_eq!(v.hosts, view.hosts.as_slice());
        assert!(v.vms.is_empty());
        assert_eq!((v.has_quorum, v.now_ms), (view.has_quorum, view.now_ms));
        request.vm.constraints.affinity = vec!["vm-0042".into(), "missing".into()];
        request.vm.constraints.anti_affinity = vec!["vm-0007".into(), "vm-0042".into()];
        request.vm.constraints.pinned_hosts = vec!["host-1".into()];
        let v = PlaceView::new(&view, &request);
        assert_eq!(v.vm_ids(), ["vm-0007", "vm-0042"]);
    }
}
