//! Login throttling: login attempts are counted per user name and per
//! client address when they are let through, before the password is
//! checked, so that attempts arriving together cannot all pass while the
//! first are still being hashed. Past a number of free attempts, each
//! further one must wait twice as long as the last (2 s, 4 s, ... up to
//! 15 min); an attempt made too soon is refused without checking the
//! password (no argon2 cost). A success clears the user's and the
//! address's counts; a count is forgotten 15 min after its last attempt.
//!
//! The counts are this host's: an attacker spreading attempts over the
//! cluster's hosts gets each host's allowance (at most seven).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts on one user name let through, without a success, before
/// attempts must wait.
pub const FREE_USER_FAILURES: u32 = 5;
/// Attempts from one address let through, without a success, before
/// attempts must wait (it may be a NAT with several administrators behind
/// it).
pub const FREE_ADDRESS_FAILURES: u32 = 20;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// How long a count is kept after its last attempt.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most names or addresses tracked; beyond, the stalest are forgotten.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Attempts {
    count: u32,
    last: Instant,
}

/// The wait after `count` unsuccessful attempts when `free` are allowed.
pub fn wait_after(count: u32, free: u32) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    let doublings = (count - free).min(20);
    Duration::from_secs(2u64 << doublings).min(MAX_WAIT)
}

struct Counts<K> {
    free: u32,
    map: Mutex<HashMap<K, Attempts>>,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new(free: u32) -> Self {
        Self {
            free,
            map: Mutex::default(),
        }
    }

    fn retry_in_locked(&self, map: &HashMap<K, Attempts>, k: &K, now: Instant) -> Duration {
        match map.get(k) {
            Some(f) if now.duration_since(f.last) < FORGET_AFTER => {
                wait_after(f.count, self.free).saturating_sub(now.duration_since(f.last))
            }
            _ => Duration::ZERO,
        }
    }

    /// Counts an attempt let through.
    fn attempted_locked(&self, map: &mut HashMap<K, Attempts>, k: &K, now: Instant) {
        if map.len() >= MAX_TRACKED && !map.contains_key(k) {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED {
                if let Some(stalest) = map
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&stalest);
                }
            }
        }
        let f = map.entry(k.clone()).or_insert(Attempts {
            count: 0,
            last: now,
        });
        if now.duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
    }

    fn clear(&self, k: &K) {
        crate::lock(&self.map).remove(k);
    }
}

/// This host's counts of logins not (yet) successful.
pub struct Throttle {
    users: Counts<String>,
    addresses: Counts<IpAddr>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            users: Counts::new(FREE_USER_FAILURES),
            addresses: Counts::new(FREE_ADDRESS_FAILURES),
        }
    }
}

impl Throttle {
    /// `Err(wait)` when a login of `user` from `address` must wait; `Ok`
    /// lets one attempt through and counts it (until [`Self::succeeded`]
    /// clears the counts, it is a failure).
    pub fn check(&self, user: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let user = user.to_string();
        // One lock order (users, then addresses) so that two attempts
        // checked together cannot both see a free slot.
        let mut users = crate::lock(&self.users.map);
        let mut addresses = crate::lock(&self.addresses.map);
        let wait = self
            .users
            .retry_in_locked(&users, &user, now)
            .max(self.addresses.retry_in_locked(&addresses, &address, now));
        if !wait.is_zero() {
            return Err(wait);
        }
        self.users.attempted_locked(&mut users, &user, now);
        self.addresses
            .attempted_locked(&mut addresses, &address, now);
        Ok(())
    }

    /// A login succeeded: the user's and the address's counts are cleared.
    pub fn succeeded(&self, user: &str, address: IpAddr) {
        self.users.clear(&user.to_string());
        self.addresses.clear(&address);
    }
}

/// At most `max` events per `period` per key (a fixed window), counting
/// those left out.
pub struct Rate {
    max: u32,
    period: Duration,
    map: Mutex<HashMap<String, (Instant, u32, u64)>>,
}

impl Rate {
    /// `max` per `period`.
    pub fn new(max: u32, period: Duration) -> Self {
        Self {
            max,
            period,
            map: Mutex::default(),
        }
    }

    /// `Some(n)` when an event of `key` is admitted, `n` being how many
    /// were left out since the last admitted one; `None` when it is left
    /// out.
    pub fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let mut map = crate::lock(&self.map);
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            let period = self.period;
            map.retain(|_, (start, _, _)| now.duration_since(*start) < period);
        }
        let e = map.entry(key.to_string()).or_insert((now, 0, 0));
        if now.duration_since(e.0) >= self.period {
            e.0 = now;
            e.1 = 0;
        }
        if e.1 < self.max {
            e.1 += 1;
            Some(std::mem::take(&mut e.2))
        } else {
            e.2 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn the_wait_doubles_after_the_free_failures_up_to_fifteen_minutes() {
        assert_eq!(wait_after(4, 5), Duration::ZERO);
        assert_eq!(wait_after(5, 5), Duration::from_secs(2));
        assert_eq!(wait_after(6, 5), Duration::from_secs(4));
        assert_eq!(wait_after(10, 5), Duration::from_secs(64));
        assert_eq!(wait_after(30, 5), MAX_WAIT);
        assert_eq!(wait_after(u32::MAX, 5), MAX_WAIT);
    }

    #[test]
    fn a_user_is_throttled_from_any_address_and_a_success_clears_it() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..FREE_USER_FAILURES {
            assert!(t
                .check("alice", if i % 2 == 0 { A } else { B }, now)
                .is_ok());
        }
        assert_eq!(
            t.check("alice", B, now),
            Err(Duration::from_secs(2)),
            "attempts count when let through, before their outcome is known"
        );
        assert!(t.check("bob", A, now).is_ok(), "another user is not held");
        let later = now + Duration::from_secs(2);
        assert!(t.check("alice", A, later).is_ok(), "the wait passes");
        assert!(
            t.check("alice", B, later).is_err(),
            "one attempt per slot, however many arrive at once"
        );
        assert_eq!(t.check("alice", A, later), Err(Duration::from_secs(4)));
        t.succeeded("alice", A);
        assert!(t.check("alice", A, later).is_ok());
    }

    #[test]
    fn an_address_trying_many_names_is_throttled() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..FREE_ADDRESS_FAILURES {
            assert!(t.check(&format!("user{i}"), A, now).is_ok());
        }
        assert!(t.check("someone-new", A, now).is_err());
        assert!(t.check("someone-new", B, now).is_ok());
    }

    #[test]
    fn a_rate_admits_so_many_per_period_and_counts_the_rest() {
        let r = Rate::new(2, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(r.admit("a", now), Some(0));
        assert_eq!(r.admit("a", now), Some(0));
        assert_eq!(r.admit("a", now), None);
        assert_eq!(r.admit("a", now), None);
        assert_eq!(r.admit("b", now), Some(0), "per key");
        let later = now + Duration::from_secs(60);
        assert_eq!(r.admit("a", later), Some(2), "the two left out are counted");
        assert_eq!(r.admit("a", later), Some(0));
    }

    #[test]
    fn a_burst_from_many_threads_gets_exactly_the_free_attempts() {
        let t = std::sync::Arc::new(Throttle::default());
        let now = Instant::now();
        let admitted: u32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let t = t.clone();
                    s.spawn(move || (0..50).filter(|_| t.check("alice", A, now).is_ok()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap() as u32).sum()
        });
        assert_eq!(admitted, FREE_USER_FAILURES);
    }

    #[test]
    fn counts_are_forgotten_after_a_quiet_period() {
        let t = Throttle::default();
        let now = Instant::now();
        while t.check("alice", A, now).is_ok() {}
        assert!(t.check("alice", A, now).is_err());
        let later = now + FORGET_AFTER;
        assert!(t.check("alice", A, later).is_ok());
        assert!(t.check("alice", A, later).is_ok(), "counting starts again");
    }
}
