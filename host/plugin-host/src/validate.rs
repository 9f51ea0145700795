//! Validation of plugin answers before the host acts on them. Each rule
//! returns a reason naming the offending item; an answer that breaks any rule
//! is an invalid output, and the host falls back to the native default.

use crate::decision::{DecisionInput, DecisionOutput};
use nasvisor_plugin_sdk::prelude::*;
use std::collections::HashSet;

pub use nasvisor_plugin_sdk::limits::{MAX_ACTIONS, MAX_HOLD_MS, MAX_SEED_BYTES, MAX_TEXT};

fn text(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT {
        return Err(format!(
            "{what} is {} bytes long (at most {MAX_TEXT})",
            s.len()
        ));
    }
    Ok(())
}

fn usable_target(view: &ClusterView, host: &str, what: &str) -> Result<(), String> {
    let h = view
        .host(host)
        .ok_or_else(|| format!("{what} names unknown host {host:?}"))?;
    if h.health != HostHealth::Healthy {
        return Err(format!(
            "{what} targets host {host:?} which is {:?}",
            h.health
        ));
    }
    Ok(())
}

/// Checks `output` for `input`.
pub fn validate(input: &DecisionInput, output: &DecisionOutput) -> Result<(), String> {
    match (input, output) {
        (DecisionInput::Place { view, request }, DecisionOutput::Placement(p)) => {
            placement(view, request, p)
        }
        (DecisionInput::Rebalance { view }, DecisionOutput::Moves(m)) => moves(view, m),
        (DecisionInput::React { view, .. }, DecisionOutput::Actions(a))
        | (DecisionInput::OnStateChange { view, .. }, DecisionOutput::Actions(a)) => {
            actions(view, a)
        }
        (DecisionInput::CheckSetup { .. }, DecisionOutput::SetupCheck(c)) => setup_check(c),
        (DecisionInput::ParseStatus { .. }, DecisionOutput::PairState(s)) => pair_state(s),
        (DecisionInput::PlanInstall { image, request }, DecisionOutput::Plan(p)) => {
            plan(image, request, p)
        }
        (i, _) => Err(format!("answer of the wrong kind for {}", i.function())),
    }
}

fn placement(view: &ClusterView, req: &PlacementRequest, p: &Placement) -> Result<(), String> {
    text("reason", &p.reason)?;
    if !req.eligible_hosts.contains(&p.host) {
        return Err(format!(
            "placement host {:?} is not one of the eligible hosts {:?}",
            p.host, req.eligible_hosts
        ));
    }
    usable_target(view, &p.host, "placement")?;
    match (&p.passive_host, req.vm.ha_enabled) {
        (None, true) => Err(format!(
            "VM {:?} is HA but no passive host was chosen",
            req.vm.id
        )),
        (Some(ph), false) => Err(format!(
            "VM {:?} is not HA but a passive host ({ph:?}) was chosen",
            req.vm.id
        )),
        (Some(ph), true) => {
            if *ph == p.host {
                return Err(format!(
                    "passive host {ph:?} is the same as the active host"
                ));
            }
            if !req.eligible_passive_hosts.contains(ph) {
                return Err(format!(
                    "passive host {ph:?} is not one of the eligible passive hosts {:?}",
                    req.eligible_passive_hosts
                ));
            }
            usable_target(view, ph, "passive placement")
        }
        (None, false) => Ok(()),
    }
}

fn moves(view: &ClusterView, moves: &[RebalanceMove]) -> Result<(), String> {
    if moves.len() > MAX_ACTIONS {
        return Err(format!("{} moves (at most {MAX_ACTIONS})", moves.len()));
    }
    let mut seen = HashSet::new();
    for (i, m) in moves.iter().enumerate() {
        text("reason", &m.reason)?;
        let vm = view
            .vm(&m.vm)
            .ok_or_else(|| format!("move {i} names unknown VM {:?}", m.vm))?;
        if !seen.insert(&m.vm) {
            return Err(format!("VM {:?} is moved twice", m.vm));
        }
        if vm.host.as_deref() != Some(m.source.as_str()) {
            return Err(format!(
                "move {i}: VM {:?} is on {:?}, not on source {:?}",
                m.vm, vm.host, m.source
            ));
        }
        if m.target == m.source {
            return Err(format!("move {i}: target equals source {:?}", m.source));
        }
        usable_target(view, &m.target, &format!("move {i}"))?;
        let t = view.host(&m.target).expect("checked");
        if t.cordoned {
            return Err(format!("move {i}: target {:?} is cordoned", m.target));
        }
        if !t.free.covers(&vm.resources) {
            return Err(format!(
                "move {i}: target {:?} lacks free resources for VM {:?}",
                m.target, m.vm
            ));
        }
    }
    Ok(())
}

fn actions(view: &ClusterView, actions: &[HaAction]) -> Result<(), String> {
    if actions.len() > MAX_ACTIONS {
        return Err(format!("{} actions (at most {MAX_ACTIONS})", actions.len()));
    }
    let mut vms_touched = HashSet::new();
    for (i, a) in actions.iter().enumerate() {
        let needs_quorum = matches!(
            a,
            HaAction::Switchover(_) | HaAction::Failover(_) | HaAction::Fence(_)
        );
        if needs_quorum && !view.has_quorum {
            return Err(format!(
                "action {i} ({}) needs quorum and the view has none",
                kind(a)
            ));
        }
        match a {
            HaAction::Switchover(m) | HaAction::Failover(m) => {
                text("reason", &m.reason)?;
                let vm = view
                    .vm(&m.vm)
                    .ok_or_else(|| format!("action {i} names unknown VM {:?}", m.vm))?;
                if !vms_touched.insert(m.vm.as_str()) {
                    return Err(format!("VM {:?} appears in two actions", m.vm));
                }
                usable_target(view, &m.target, &format!("action {i} ({})", kind(a)))?;
                if vm.host.as_deref() == Some(m.target.as_str()) {
                    return Err(format!(
                        "action {i}: VM {:?} already runs on target {:?}",
                        m.vm, m.target
                    ));
                }
                let reserved = vm.ha.as_ref().is_some_and(|ha| ha.passive == m.target);
                let target = view.host(&m.target).expect("checked");
                if !reserved && !target.free.covers(&vm.resources) {
                    return Err(format!(
                        "action {i}: target {:?} lacks free resources for VM {:?}",
                        m.target, m.vm
                    ));
                }
                if let HaAction::Switchover(_) = a {
                    if vm.state != VmState::Running {
                        return Err(format!(
                            "action {i}: switchover of VM {:?} which is {:?}, not running",
                            m.vm, vm.state
                        ));
                    }
                    let src = vm.host.as_deref().and_then(|h| view.host(h));
                    if src.is_none_or(|h| {
                        !matches!(h.health, HostHealth::Healthy | HostHealth::Degraded)
                    }) {
                        return Err(format!(
                            "action {i}: switchover of VM {:?} needs its host reachable",
                            m.vm
                        ));
                    }
                } else {
                    // I1: a VM may only be restarted elsewhere when its host
                    // is fenced or the VM itself is down.
                    let host_fenced = vm
                        .host
                        .as_deref()
                        .and_then(|h| view.host(h))
                        .is_none_or(|h| h.health == HostHealth::Fenced);
                    let vm_down = matches!(
                        vm.state,
                        VmState::Crashed | VmState::Panicked | VmState::Stopped | VmState::Failed
                    );
                    if !host_fenced && !vm_down {
                        return Err(format!(
                            "action {i}: failover of VM {:?} while its host {:?} is not fenced and the VM is {:?}",
                            m.vm, vm.host, vm.state
                        ));
                    }
                }
            }
            HaAction::Restart(r) => {
                text("reason", &r.reason)?;
                let vm = view
                    .vm(&r.vm)
                    .ok_or_else(|| format!("action {i} names unknown VM {:?}", r.vm))?;
                if !vms_touched.insert(r.vm.as_str()) {
                    return Err(format!("VM {:?} appears in two actions", r.vm));
                }
                if r.delay_ms > MAX_HOLD_MS {
                    return Err(format!(
                        "action {i}: restart delay {} ms is too long",
                        r.delay_ms
                    ));
                }
                if let Some(h) = vm.host.as_deref().and_then(|h| view.host(h)) {
                    if matches!(h.health, HostHealth::Fenced | HostHealth::Unreachable) {
                        return Err(format!(
                            "action {i}: restart of VM {:?} on host {:?} which is {:?}",
                            r.vm, h.id, h.health
                        ));
                    }
                }
            }
            HaAction::Fence(f) => {
                text("reason", &f.reason)?;
                view.host(&f.host)
                    .ok_or_else(|| format!("action {i} fences unknown host {:?}", f.host))?;
            }
            HaAction::Hold(h) => {
                text("reason", &h.reason)?;
                if h.delay_ms > MAX_HOLD_MS {
                    return Err(format!("action {i}: hold of {} ms is too long", h.delay_ms));
                }
            }
            HaAction::Notify(n) => text("message", &n.message)?,
        }
    }
    Ok(())
}

fn kind(a: &HaAction) -> &'static str {
    match a {
        HaAction::Switchover(_) => "switchover",
        HaAction::Failover(_) => "failover",
        HaAction::Restart(_) => "restart",
        HaAction::Fence(_) => "fence",
        HaAction::Hold(_) => "hold",
        HaAction::Notify(_) => "notify",
    }
}

fn setup_check(c: &SetupCheck) -> Result<(), String> {
    if c.problems.len() > MAX_ACTIONS {
        return Err(format!(
            "{} problems (at most {MAX_ACTIONS})",
            c.problems.len()
        ));
    }
    if c.ok != c.problems.is_empty() {
        return Err(format!(
            "ok is {} but {} problems are listed",
            c.ok,
            c.problems.len()
        ));
    }
    for p in &c.problems {
        text("problem code", &p.code)?;
        text("problem message", &p.message)?;
    }
    if let Some(s) = &c.state {
        pair_state(s)?;
    }
    Ok(())
}

fn pair_state(s: &ShaPairState) -> Result<(), String> {
    text("resource-name", &s.resource_name)?;
    if s.sync_percent > 100 {
        return Err(format!("sync-percent {} is over 100", s.sync_percent));
    }
    Ok(())
}

fn plan(image: &ImageMeta, req: &InstallRequest, p: &InstallPlan) -> Result<(), String> {
    const NAMES: [&str; 4] = ["meta-data", "user-data", "network-config", "vendor-data"];
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for f in &p.seed {
        if !NAMES.contains(&f.name.as_str()) {
            return Err(format!(
                "seed file {:?} is not a NoCloud file (meta-data, user-data, network-config, vendor-data)",
                f.name
            ));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(format!("seed file {:?} appears twice", f.name));
        }
        total += f.contents.len();
    }
    if total > MAX_SEED_BYTES {
        return Err(format!("seed is {total} bytes (at most {MAX_SEED_BYTES})"));
    }
    if image.format != ImageFormat::Iso
        && !(seen.contains("meta-data") && seen.contains("user-data"))
    {
        return Err("seed lacks meta-data or user-data".into());
    }
    if !(1_000..=86_400_000).contains(&p.timeout_ms) {
        return Err(format!(
            "timeout-ms {} is out of range (1000..=86400000)",
            p.timeout_ms
        ));
    }
    if let Some(g) = p.disk.resize_gib {
        let image_gib = image.virtual_size_bytes.div_ceil(1 << 30);
        if g < image_gib {
            return Err(format!(
                "resize-gib {g} would shrink the image's {image_gib} GiB disk"
            ));
        }
        if g > 65_536 {
            return Err(format!("resize-gib {g} is over 64 TiB"));
        }
        if req.disk_size_gib > 0 && g != req.disk_size_gib {
            return Err(format!(
                "resize-gib {g} differs from the requested disk-size-gib {}",
                req.disk_size_gib
            ));
        }
    }
    if let Completion::SerialMarker(m) = &p.completion {
        if m.is_empty() || m.len() > 256 || m.contains('\n') {
            return Err("serial marker must be 1 to 256 characters on one line".into());
        }
    }
    if let Some(k) = &p.boot.kernel_args {
        text("kernel-args", k)?;
    }
    Ok(())
}
