//! nasvisord's Prometheus metrics (`GET /metrics` on the admin port).
//!
//! Two kinds of figures:
//! - **Recorded as they happen**, into one process-wide registry
//!   ([`api_request`], [`plugin_decision`], [`plugin_quarantined`],
//!   [`job_finished`], [`migration_switch`], [`raft_commit`],
//!   [`raft_leader_changed`]). Each part of the daemon records its own;
//!   no handle is threaded through the crates, as with `tracing`.
//! - **Read at scrape time** from the cluster's state ([`State`]: VMs by
//!   state, host resources and reservations, jobs, plugins, raft), which
//!   the core fills in for each scrape and [`render`] encodes beside the
//!   recorded ones. They are never stale and leave nothing behind when a
//!   VM or a host goes away.
//!
//! Every label value comes from a closed set (route operation ids, world
//! names, states) or from the cluster's own objects (host names), so a
//! client cannot grow the label space.
//!
//! The text is OpenMetrics 1.0 ([`CONTENT_TYPE`]), which Prometheus reads.

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::LazyLock;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    operation: &'static str,
    method: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    world: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorldLabels {
    world: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, 0.25 ms to about 16 s (17 buckets).
fn fast_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// Seconds, 0.1 s to about 1.8 h (16 buckets): jobs.
fn slow_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

/// Seconds, 1 ms to about 16 s (15 buckets): a guest's pause.
fn pause_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

struct Recorded {
    registry: Registry,
    api: HistogramFamily<ApiLabels>,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: HistogramFamily<DecisionLabels>,
    quarantines: Family<WorldLabels, Counter>,
    jobs: Family<JobLabels, Counter>,
    job_seconds: HistogramFamily<JobLabels>,
    migration_downtime: Histogram,
    migration_pause: Histogram,
    raft_commit: HistogramFamily<ResultLabels>,
    leader_changes: Counter,
}

static RECORDED: LazyLock<Recorded> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("nasvisor");
    let r = Recorded {
        registry: Registry::default(),
        api: Family::new_with_constructor(fast_seconds),
        decisions: Family::default(),
        decision_seconds: Family::new_with_constructor(fast_seconds),
        quarantines: Family::default(),
        jobs: Family::default(),
        job_seconds: Family::new_with_constructor(slow_seconds),
        migration_downtime: pause_seconds(),
        migration_pause: pause_seconds(),
        raft_commit: Family::new_with_constructor(fast_seconds),
        leader_changes: Counter::default(),
    };
    registry.register_with_unit(
        "api_request_duration",
        "Admin API requests by route (operation id; \"unmatched\" for unknown paths), method and status code, from the request's head to its answer",
        Unit::Seconds,
        r.api.clone(),
    );
    registry.register(
        "plugin_decisions",
        "Policy decisions by world and outcome: plugin (its answer was used), native (no plugin), fallback (the plugin failed or a host fault), refused (the validator refused its answer), quarantined",
        r.decisions.clone(),
    );
    registry.register_with_unit(
        "plugin_decision_duration",
        "How long a policy decision took, fresh instance and fallback included",
        Unit::Seconds,
        r.decision_seconds.clone(),
    );
    registry.register(
        "plugin_quarantines",
        "Plugins put in quarantine after consecutive faults, by world",
        r.quarantines.clone(),
    );
    registry.register(
        "jobs_finished",
        "Jobs run by this host that ended, by kind and final state",
        r.jobs.clone(),
    );
    registry.register_with_unit(
        "job_duration",
        "How long the jobs run by this host took, by kind and final state",
        Unit::Seconds,
        r.job_seconds.clone(),
    );
    registry.register_with_unit(
        "migration_downtime",
        "Live migrations from this host: the guest's downtime as QEMU measured it (the last memory pass)",
        Unit::Seconds,
        r.migration_downtime.clone(),
    );
    registry.register_with_unit(
        "migration_pause",
        "Live migrations from this host: the guest's whole pause, from QEMU's stop to the target's resume",
        Unit::Seconds,
        r.migration_pause.clone(),
    );
    registry.register_with_unit(
        "raft_commit_duration",
        "Writes to the replicated store proposed on this host, until committed and applied (result ok) or refused/timed out (error)",
        Unit::Seconds,
        r.raft_commit.clone(),
    );
    registry.register(
        "raft_leader_changes",
        "Changes of the raft leader this host has seen (including to no leader)",
        r.leader_changes.clone(),
    );
    Recorded { registry, ..r }
});

/// One admin API request: its route's operation id (or `unmatched`),
/// method, answer status and duration.
/// Label values are `'static` (the route table's): no allocation per
/// request.
pub fn api_request(operation: &'static str, method: &'static str, code: u16, seconds: f64) {
    RECORDED
        .api
        .get_or_create(&ApiLabels {
            operation,
            method,
            code,
        })
        .observe(seconds);
}

/// One policy decision of `world` (`scheduler`, `ha-policy`, ...) with its
/// outcome (`plugin`, `native`, `fallback`, `refused`, `quarantined`).
pub fn plugin_decision(world: &str, outcome: &str, seconds: f64) {
    let labels = DecisionLabels {
        world: world.to_string(),
        outcome: outcome.to_string(),
    };
    RECORDED.decisions.get_or_create(&labels).inc();
    RECORDED
        .decision_seconds
        .get_or_create(&labels)
        .observe(seconds);
}

/// A plugin of `world` was put in quarantine.
pub fn plugin_quarantined(world: &str) {
    RECORDED
        .quarantines
        .get_or_create(&WorldLabels {
            world: world.to_string(),
        })
        .inc();
}

/// A job of `kind` ended in `state` (`succeeded`, `failed`, `cancelled`)
/// after `seconds`.
pub fn job_finished(kind: &str, state: &str, seconds: f64) {
    let labels = JobLabels {
        kind: kind.to_string(),
        state: state.to_string(),
    };
    RECORDED.jobs.get_or_create(&labels).inc();
    RECORDED.job_seconds.get_or_create(&labels).observe(seconds);
}

/// A live migration's switch: QEMU's downtime and the whole pause, when
/// known.
pub fn migration_switch(downtime_seconds: Option<f64>, pause_seconds: Option<f64>) {
    if let Some(s) = downtime_seconds {
        RECORDED.migration_downtime.observe(s);
    }
    if let Some(s) = pause_seconds {
        RECORDED.migration_pause.observe(s);
    }
}

/// A write to the replicated store, committed (`ok`) or not.
pub fn raft_commit(ok: bool, seconds: f64) {
    RECORDED
        .raft_commit
        .get_or_create(&ResultLabels {
            result: if ok { "ok" } else { "error" }.to_string(),
        })
        .observe(seconds);
}

/// The raft leader this host sees changed.
pub fn raft_leader_changed() {
    RECORDED.leader_changes.inc();
}

/// The cluster as one scrape sees it.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// This host's name.
    pub host: String,
    /// nasvisord's version.
    pub version: String,
    /// How many VMs are in each state (every state listed, zeros too).
    pub vms_by_state: Vec<(String, u64)>,
    /// How many HA VMs are in each protection state.
    pub ha_by_state: Vec<(String, u64)>,
    /// Each member.
    pub hosts: Vec<HostState>,
    /// How many jobs of the cluster are in each state.
    pub jobs_by_state: Vec<(String, u64)>,
    /// Each world's slot on this host.
    pub plugins: Vec<PluginState>,
    /// This host's view of raft.
    pub raft: RaftState,
}

/// One member's resources and reservations.
#[derive(Debug, Clone, Default)]
pub struct HostState {
    pub name: String,
    pub online: bool,
    /// Healthy (not degraded, not in maintenance).
    pub healthy: bool,
    pub cordoned: bool,
    pub leader: bool,
    pub vcpus: u64,
    /// vCPUs of the VMs active on it.
    pub vcpus_used: u64,
    /// vCPUs reserved for HA VMs whose passive host it is.
    pub vcpus_reserved: u64,
    /// Memory VMs may use, bytes.
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_reserved_bytes: u64,
    pub storage_bytes: u64,
    pub storage_free_bytes: u64,
    pub vms: u64,
}

/// One world's slot on this host.
#[derive(Debug, Clone, Default)]
pub struct PluginState {
    pub world: String,
    /// The loaded plugin (`name@version`), empty for the native policy.
    pub plugin: String,
    pub quarantined: bool,
    /// Faults since it was installed.
    pub faults: u64,
}

/// This host's view of raft.
#[derive(Debug, Clone, Default)]
pub struct RaftState {
    pub term: u64,
    pub leader: bool,
    pub has_quorum: bool,
    pub last_applied: u64,
    pub members: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostUse {
    host: String,
    /// `total` (usable by VMs), `used` (active VMs), `reserved` (HA
    /// passive reservations), `free`.
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    world: String,
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    host: String,
    version: String,
}

fn gauge_family<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

fn by_state(registry: &mut Registry, name: &str, help: &str, counts: &[(String, u64)]) {
    let f = gauge_family::<StateLabel>(registry, name, help);
    for (state, n) in counts {
        f.get_or_create(&StateLabel {
            state: state.clone(),
        })
        .set(clamp(*n));
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The scrape-time figures, as a registry of their own.
fn state_registry(s: &State) -> Registry {
    let mut r = Registry::with_prefix("nasvisor");
    let info = gauge_family::<InfoLabels>(
        &mut r,
        "build_info",
        "This host's name and nasvisord's version (always 1)",
    );
    info.get_or_create(&InfoLabels {
        host: s.host.clone(),
        version: s.version.clone(),
    })
    .set(1);
    by_state(
        &mut r,
        "vms",
        "VMs of the cluster by state",
        &s.vms_by_state,
    );
    by_state(
        &mut r,
        "ha_vms",
        "HA VMs of the cluster by protection state",
        &s.ha_by_state,
    );
    by_state(
        &mut r,
        "jobs",
        "Jobs of the cluster by state",
        &s.jobs_by_state,
    );

    let online = gauge_family::<HostLabel>(&mut r, "host_online", "1 when the member is online");
    let healthy = gauge_family::<HostLabel>(
        &mut r,
        "host_healthy",
        "1 when the member's own checks pass (not degraded)",
    );
    let cordoned = gauge_family::<HostLabel>(
        &mut r,
        "host_cordoned",
        "1 when the member takes no new VMs",
    );
    let leader = gauge_family::<HostLabel>(
        &mut r,
        "host_leader",
        "1 for the raft leader, as this host sees it",
    );
    let vms = gauge_family::<HostLabel>(&mut r, "host_vms", "VMs recorded on the member");
    let vcpus = gauge_family::<HostUse>(&mut r, "host_vcpus", "vCPUs of the member: total, used by active VMs, reserved for HA VMs whose passive host it is, free");
    let memory = Family::<HostUse, Gauge>::default();
    r.register_with_unit(
        "host_memory",
        "Memory VMs may use on the member: total, used by active VMs, reserved for HA VMs whose passive host it is, free",
        Unit::Bytes,
        memory.clone(),
    );
    let storage = Family::<HostUse, Gauge>::default();
    r.register_with_unit(
        "host_storage",
        "Local storage of the member: total and free",
        Unit::Bytes,
        storage.clone(),
    );
    for h in &s.hosts {
        let host = HostLabel {
            host: h.name.clone(),
        };
        online.get_or_create(&host).set(h.online.into());
        healthy.get_or_create(&host).set(h.healthy.into());
        cordoned.get_or_create(&host).set(h.cordoned.into());
        leader.get_or_create(&host).set(h.leader.into());
        vms.get_or_create(&host).set(clamp(h.vms));
        let set = |f: &Family<HostUse, Gauge>, kind: &str, v: u64| {
            f.get_or_create(&HostUse {
                host: h.name.clone(),
                kind: kind.to_string(),
            })
            .set(clamp(v));
        };
        set(&vcpus, "total", h.vcpus);
        set(&vcpus, "used", h.vcpus_used);
        set(&vcpus, "reserved", h.vcpus_reserved);
        set(
            &vcpus,
            "free",
            h.vcpus.saturating_sub(h.vcpus_used + h.vcpus_reserved),
        );
        set(&memory, "total", h.memory_bytes);
        set(&memory, "used", h.memory_used_bytes);
        set(&memory, "reserved", h.memory_reserved_bytes);
        set(
            &memory,
            "free",
            h.memory_bytes
                .saturating_sub(h.memory_used_bytes + h.memory_reserved_bytes),
        );
        set(&storage, "total", h.storage_bytes);
        set(&storage, "free", h.storage_free_bytes);
    }

    let quarantined = gauge_family::<PluginLabels>(
        &mut r,
        "plugin_quarantined",
        "1 when this host's plugin of the world is quarantined (the native policy decides)",
    );
    let faults = gauge_family::<PluginLabels>(
        &mut r,
        "plugin_faults",
        "Faults of this host's plugin of the world since it was installed",
    );
    for p in &s.plugins {
        let l = PluginLabels {
            world: p.world.clone(),
            plugin: p.plugin.clone(),
        };
        quarantined.get_or_create(&l).set(p.quarantined.into());
        faults.get_or_create(&l).set(clamp(p.faults));
    }

    let raft = |r: &mut Registry, name: &str, help: &str, v: u64| {
        let g = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        g.set(clamp(v));
        r.register(name, help, g);
    };
    raft(
        &mut r,
        "raft_term",
        "The raft term this host is in",
        s.raft.term,
    );
    raft(
        &mut r,
        "raft_is_leader",
        "1 when this host leads",
        s.raft.leader.into(),
    );
    raft(
        &mut r,
        "raft_has_quorum",
        "1 when this host hears from a majority",
        s.raft.has_quorum.into(),
    );
    raft(
        &mut r,
        "raft_last_applied",
        "The last log index this host applied",
        s.raft.last_applied,
    );
    raft(
        &mut r,
        "raft_members",
        "Voting members of the cluster",
        s.raft.members,
    );
    r
}

/// The whole exposition: `state` and everything recorded so far.
pub fn render(state: &State) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug
    // of a label set, which the tests below cover.
    let _ = encode_registry(&mut out, &state_registry(state));
    let _ = encode_registry(&mut out, &RECORDED.registry);
    let _ = encode_eof(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn recorded_figures_and_the_state_are_encoded_together() {
        api_request("listVms", "GET", 200, 0.002);
        api_request("listVms", "GET", 200, 0.004);
        plugin_decision("scheduler", "plugin", 0.0011);
        plugin_quarantined("ha-policy");
        job_finished("migrate", "succeeded", 3.0);
        migration_switch(Some(0.012), Some(0.02));
        raft_commit(true, 0.003);
        raft_leader_changed();
        let text = render(&State {
            host: "h1".into(),
            version: "0.1.0".into(),
            vms_by_state: vec![("running".into(), 3), ("stopped".into(), 0)],
            hosts: vec![HostState {
                name: "h1".into(),
                online: true,
                vcpus: 8,
                vcpus_used: 3,
                vcpus_reserved: 2,
                memory_bytes: 1 << 30,
                memory_used_bytes: 1 << 29,
                ..Default::default()
            }],
            raft: RaftState {
                term: 4,
                leader: true,
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert_eq!(value(&text, "nasvisor_vms{state=\"running\"}"), Some(3.0));
        assert_eq!(value(&text, "nasvisor_vms{state=\"stopped\"}"), Some(0.0));
        assert_eq!(
            value(&text, "nasvisor_host_vcpus{host=\"h1\",kind=\"free\"}"),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                "nasvisor_host_memory_bytes{host=\"h1\",kind=\"free\"}"
            ),
            Some((1u64 << 29) as f64)
        );
        assert_eq!(value(&text, "nasvisor_raft_term"), Some(4.0));
        assert!(
            value(
                &text,
                "nasvisor_api_request_duration_seconds_count{operation=\"listVms\",method=\"GET\",code=\"200\"}"
            )
            .is_some_and(|n| n >= 2.0),
            "{text}"
        );
        assert!(value(
            &text,
            "nasvisor_plugin_decisions_total{world=\"scheduler\",outcome=\"plugin\"}"
        )
        .is_some_and(|n| n >= 1.0));
        assert!(value(
            &text,
            "nasvisor_plugin_quarantines_total{world=\"ha-policy\"}"
        )
        .is_some_and(|n| n >= 1.0));
        assert!(value(&text, "nasvisor_migration_downtime_seconds_count").is_some_and(|n| n >= 1.0));
        assert!(value(&text, "nasvisor_raft_leader_changes_total").is_some_and(|n| n >= 1.0));
        assert!(value(
            &text,
            "nasvisor_job_duration_seconds_count{kind=\"migrate\",state=\"succeeded\"}"
        )
        .is_some_and(|n| n >= 1.0));
    }

    #[test]
    fn a_host_gone_from_the_state_is_gone_from_the_next_scrape() {
        let one = |name: &str| State {
            hosts: vec![HostState {
                name: name.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(render(&one("old")).contains("host=\"old\""));
        let text = render(&one("new"));
        assert!(!text.contains("host=\"old\""));
        assert!(text.contains("host=\"new\""));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&State {
            host: "a\"b\\c\nd".into(),
            ..Default::default()
        });
        let line = text
            .lines()
            .find(|l| l.starts_with("nasvisor_build_info{"))
            .unwrap();
        assert!(line.contains(r#"host="a\"b\\c\nd""#), "{line}");
    }
}
