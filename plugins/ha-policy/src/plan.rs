//! The answer being built: collects actions, keeps at most one action per VM,
//! and emits them in the contract's order.
//!
//! Order of the answer: fences (by host id), failovers (by VM id), switchovers
//! (by VM id), restarts (by VM id), holds (by delay, then reason), notices
//! (critical first, then warning, then info; by message within a severity).
//! Identical holds and notices are emitted once.
//!
//! Limits of the host's validator: free text is clipped to [`MAX_TEXT`]
//! bytes, and an answer holds at most [`MAX_ACTIONS`] actions. Beyond that,
//! notices are dropped first (one notice says how many); if the fences, VM
//! actions and holds alone are too many, the last VM actions are dropped and
//! a short hold asks the host to call again.
//!
//! One action per VM: when two events ask for different actions on the same
//! VM, a failover beats a restart, which beats a switchover (a VM that crashed
//! cannot be live-migrated; a VM whose host was fenced cannot be restarted in
//! place). Between two actions of the same kind the first one asked wins.

pub use nasvisor_plugin_sdk::limits::{clip, MAX_ACTIONS, MAX_TEXT};
use std::collections::{BTreeMap, BTreeSet};

use nasvisor_plugin_sdk::prelude::*;

/// Hold asked for when actions had to be dropped to fit [`MAX_ACTIONS`].
pub const OVERFLOW_HOLD_MS: u64 = 1_000;

/// The kind of a VM action, in increasing precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VmActionKind {
    /// Live move to the passive host.
    Switchover,
    /// Restart in place.
    Restart,
    /// Start on another host.
    Failover,
}

/// An accumulating answer.
#[derive(Debug, Default)]
pub struct Plan {
    fences: BTreeMap<String, String>,
    vm_actions: BTreeMap<String, (VmActionKind, HaAction)>,
    holds: BTreeSet<(u64, String)>,
    notices: BTreeSet<(u8, String)>,
}

/// Sort rank of a severity: critical first.
fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Critical => 0,
        Severity::Warning => 1,
        Severity::Info => 2,
    }
}

/// The severity of a sort rank.
fn rank_severity(r: u8) -> Severity {
    match r {
        0 => Severity::Critical,
        1 => Severity::Warning,
        _ => Severity::Info,
    }
}

impl Plan {
    /// Fence `host` (once; the first reason is kept).
    pub fn fence(&mut self, host: &str, reason: String) {
        self.fences.entry(host.to_string()).or_insert(clip(reason));
    }

    /// True when this answer fences `host`.
    pub fn fences(&self, host: &str) -> bool {
        self.fences.contains_key(host)
    }

    /// The VM action already planned for `vm`, if any.
    pub fn vm_action(&self, vm: &str) -> Option<VmActionKind> {
        self.vm_actions.get(vm).map(|(k, _)| *k)
    }

    /// Plan a VM action unless one of higher or equal precedence is already
    /// planned for the same VM. Returns whether it was kept.
    fn vm(&mut self, vm: &str, kind: VmActionKind, action: HaAction) -> bool {
        match self.vm_actions.get(vm) {
            Some((k, _)) if *k >= kind => false,
            _ => {
                self.vm_actions.insert(vm.to_string(), (kind, action));
                true
            }
        }
    }

    /// Plan a failover of `vm` to `target`.
    pub fn failover(&mut self, vm: &str, target: &str, reason: String) -> bool {
        let a = HaAction::Failover(VmMove {
            vm: vm.into(),
            target: target.into(),
            reason: clip(reason),
        });
        self.vm(vm, VmActionKind::Failover, a)
    }

    /// Plan a switchover of `vm` to `target`.
    pub fn switchover(&mut self, vm: &str, target: &str, reason: String) -> bool {
        let a = HaAction::Switchover(VmMove {
            vm: vm.into(),
            target: target.into(),
            reason: clip(reason),
        });
        self.vm(vm, VmActionKind::Switchover, a)
    }

    /// Plan a restart of `vm` after `delay_ms`.
    pub fn restart(&mut self, vm: &str, delay_ms: u64, reason: String) -> bool {
        let a = HaAction::Restart(VmRestart {
            vm: vm.into(),
            delay_ms,
            reason: clip(reason),
        });
        self.vm(vm, VmActionKind::Restart, a)
    }

    /// Ask the host to wait `delay_ms` and ask again.
    pub fn hold(&mut self, delay_ms: u64, reason: String) {
        self.holds.insert((delay_ms, clip(reason)));
    }

    /// Tell the administrator something.
    pub fn notify(&mut self, severity: Severity, message: String) {
        self.notices
            .insert((severity_rank(severity), clip(message)));
    }

    /// The actions in the contract's order, within [`MAX_ACTIONS`].
    pub fn finish(self) -> Vec<HaAction> {
        let mut out: Vec<HaAction> = self
            .fences
            .into_iter()
            .map(|(host, reason)| HaAction::Fence(FenceHost { host, reason }))
            .collect();
        let mut vm_actions: Vec<(VmActionKind, HaAction)> = self.vm_actions.into_values().collect();
        // Stable sort: within a kind, the BTreeMap already ordered by VM id.
        vm_actions.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
        // Failovers, then switchovers, then restarts.
        let (moves, restarts): (Vec<_>, Vec<_>) = vm_actions
            .into_iter()
            .partition(|(k, _)| *k != VmActionKind::Restart);
        out.extend(moves.into_iter().map(|(_, a)| a));
        out.extend(restarts.into_iter().map(|(_, a)| a));
        let mut holds: Vec<HaAction> = self
            .holds
            .into_iter()
            .map(|(delay_ms, reason)| HaAction::Hold(Hold { delay_ms, reason }))
            .collect();
        let mut notices: Vec<HaAction> = self
            .notices
            .into_iter()
            .map(|(r, message)| {
                HaAction::Notify(Notice {
                    severity: rank_severity(r),
                    message,
                })
            })
            .collect();
        if out.len() + holds.len() + notices.len() <= MAX_ACTIONS {
            out.extend(holds);
            out.extend(notices);
            return out;
        }
        // Too many: keep fences, VM actions and holds first (room for one
        // extra hold and one summary notice), then as many notices as fit.
        let mut dropped_vm_actions = 0;
        if out.len() + holds.len() + 2 > MAX_ACTIONS {
            holds.truncate(MAX_ACTIONS / 4);
            let keep = MAX_ACTIONS - holds.len() - 2;
            dropped_vm_actions = out.len().saturating_sub(keep);
            out.truncate(keep);
            holds.push(HaAction::Hold(Hold {
                delay_ms: OVERFLOW_HOLD_MS,
                reason: format!(
                    "{dropped_vm_actions} more actions did not fit in one answer; asking again"
                ),
            }));
        }
        out.extend(holds);
        let room = MAX_ACTIONS - out.len() - 1;
        let dropped_notices = notices.len().saturating_sub(room);
        notices.truncate(room);
        out.extend(notices);
        out.push(HaAction::Notify(Notice {
            severity: Severity::Warning,
            message: format!(
                "answer too long: {dropped_vm_actions} actions and {dropped_notices} notices left out"
            ),
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(a: &[HaAction]) -> Vec<String> {
        a.iter()
            .map(|a| match a {
                HaAction::Fence(f) => format!("fence {}", f.host),
                HaAction::Failover(m) => format!("failover {}", m.vm),
                HaAction::Switchover(m) => format!("switchover {}", m.vm),
                HaAction::Restart(r) => format!("restart {}", r.vm),
                HaAction::Hold(h) => format!("hold {}", h.delay_ms),
                HaAction::Notify(n) => format!("notify {:?} {}", n.severity, n.message),
            })
            .collect()
    }

    #[test]
    fn actions_come_out_in_contract_order() {
        let mut p = Plan::default();
        p.notify(Severity::Info, "i".into());
        p.hold(5, "h".into());
        p.restart("r1", 1, String::new());
        p.switchover("s1", "h2", String::new());
        p.failover("f2", "h2", String::new());
        p.failover("f1", "h2", String::new());
        p.notify(Severity::Critical, "c".into());
        p.notify(Severity::Warning, "w".into());
        p.fence("hz", String::new());
        p.fence("ha", String::new());
        p.hold(1, "h".into());
        assert_eq!(
            kinds(&p.finish()),
            vec![
                "fence ha",
                "fence hz",
                "failover f1",
                "failover f2",
                "switchover s1",
                "restart r1",
                "hold 1",
                "hold 5",
                "notify Critical c",
                "notify Warning w",
                "notify Info i"
            ]
        );
    }

    #[test]
    fn one_action_per_vm_with_precedence() {
        let mut p = Plan::default();
        assert!(p.switchover("v", "h2", String::new()));
        assert!(p.restart("v", 1, String::new()));
        assert!(!p.switchover("v", "h3", String::new()));
        assert!(p.failover("v", "h2", String::new()));
        assert!(!p.restart("v", 1, String::new()));
        assert!(!p.failover("v", "h9", String::new()));
        assert_eq!(p.vm_action("v"), Some(VmActionKind::Failover));
        let out = p.finish();
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], HaAction::Failover(m) if m.target == "h2"));
    }

    #[test]
    fn long_text_is_clipped() {
        assert_eq!(clip("short".into()), "short");
        let c = clip("é".repeat(3000));
        assert!(c.len() <= MAX_TEXT && c.ends_with("..."), "{}", c.len());
        let mut p = Plan::default();
        p.notify(Severity::Info, "x".repeat(10_000));
        p.hold(1, "y".repeat(10_000));
        for a in p.finish() {
            match a {
                HaAction::Notify(n) => assert!(n.message.len() <= MAX_TEXT),
                HaAction::Hold(h) => assert!(h.reason.len() <= MAX_TEXT),
                _ => {}
            }
        }
    }

    #[test]
    fn too_many_notices_are_summarised() {
        let mut p = Plan::default();
        p.failover("v", "h2", String::new());
        for i in 0..300 {
            p.notify(Severity::Info, format!("n{i:03}"));
        }
        p.notify(Severity::Critical, "important".into());
        let out = p.finish();
        assert_eq!(out.len(), MAX_ACTIONS);
        assert!(matches!(&out[0], HaAction::Failover(_)));
        assert!(matches!(&out[1], HaAction::Notify(n) if n.message == "important"));
        assert!(
            matches!(&out[255], HaAction::Notify(n) if n.message.contains("0 actions and 47 notices left out"))
        );
    }

    #[test]
    fn too_many_vm_actions_keep_fences_and_ask_again() {
        let mut p = Plan::default();
        p.fence("h1", String::new());
        for i in 0..400 {
            p.failover(&format!("v{i:03}"), "h2", String::new());
        }
        p.hold(5, "h".into());
        p.notify(Severity::Critical, "c".into());
        let out = p.finish();
        assert_eq!(out.len(), MAX_ACTIONS);
        assert!(matches!(&out[0], HaAction::Fence(_)));
        let failovers = out
            .iter()
            .filter(|a| matches!(a, HaAction::Failover(_)))
            .count();
        assert_eq!(failovers, MAX_ACTIONS - 1 - 2 - 1);
        assert!(out
            .iter()
            .any(|a| matches!(a, HaAction::Hold(h) if h.delay_ms == OVERFLOW_HOLD_MS)));
        assert!(out
            .iter()
            .any(|a| matches!(a, HaAction::Hold(h) if h.delay_ms == 5)));
        assert!(
            matches!(out.last(), Some(HaAction::Notify(n)) if n.message.contains("148 actions"))
        );
    }

    #[test]
    fn duplicates_are_collapsed() {
        let mut p = Plan::default();
        p.fence("h1", "first".into());
        p.fence("h1", "second".into());
        p.notify(Severity::Info, "same".into());
        p.notify(Severity::Info, "same".into());
        p.hold(10, "x".into());
        p.hold(10, "x".into());
        let out = p.finish();
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], HaAction::Fence(f) if f.reason == "first"));
    }
}
