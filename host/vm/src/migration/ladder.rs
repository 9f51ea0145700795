//! The downtime limit of a move: it starts low and doubles, up to the
//! allowed maximum, each time the guest dirties memory too fast for the
//! memory copy to converge within it (the way Proxmox VE widens its
//! `migrate_downtime`).

/// The pause a move aims for first, ms. QEMU switches over as soon as it
/// expects the rest to fit in its limit, and the rest then goes at the
/// stream's real (TLS) speed, so the limit must sit well below the pause one
/// wants: with 100 ms an idle guest paused for 50-60 ms, with 25 ms for 5-15.
pub const FIRST_DOWNTIME_MS: u32 = 25;
/// Dirty-bitmap passes without a switch before the limit is doubled.
pub const PASSES_PER_STEP: u64 = 4;

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DowntimeLadder {
    limit: u32,
    max: u32,
    passes_at_step: u64,
}

impl DowntimeLadder {
    /// A ladder up to `max` ms, starting at [`FIRST_DOWNTIME_MS`] (or `max`
    /// when that is lower).
    pub fn new(max: u32) -> Self {
        DowntimeLadder {
            limit: FIRST_DOWNTIME_MS.min(max),
            max,
            passes_at_step: 1,
        }
    }

    /// The limit now, ms.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The new limit to set after `passes` dirty-bitmap passes, if it is
    /// time to widen it.
    pub fn widen(&mut self, passes: u64) -> Option<u32> {
        if self.limit >= self.max || passes < self.passes_at_step + PASSES_PER_STEP {
            return None;
        }
        self.limit = self.limit.saturating_mul(2).min(self.max);
        self.passes_at_step = passes;
        Some(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downtime_limit_starts_low_and_doubles_up_to_the_maximum() {
        let mut l = DowntimeLadder::new(300);
        assert_eq!(l.limit, FIRST_DOWNTIME_MS);
        // The first copy and a few passes: converging may take a while.
        for passes in 1..1 + PASSES_PER_STEP {
            assert_eq!(l.widen(passes), None, "pass {passes}");
        }
        assert_eq!(l.widen(1 + PASSES_PER_STEP), Some(50));
        assert_eq!(l.widen(2 + PASSES_PER_STEP), None);
        assert_eq!(l.widen(1 + 2 * PASSES_PER_STEP), Some(100));
        assert_eq!(l.widen(1 + 3 * PASSES_PER_STEP), Some(200));
        assert_eq!(l.widen(1 + 4 * PASSES_PER_STEP), Some(300));
        assert_eq!(l.widen(1 + 9 * PASSES_PER_STEP), None, "capped");
    }

    #[test]
    fn a_maximum_below_the_first_step_is_used_as_is() {
        let mut l = DowntimeLadder::new(10);
        assert_eq!(l.limit, 10);
        assert_eq!(l.widen(100), None);
    }
}
