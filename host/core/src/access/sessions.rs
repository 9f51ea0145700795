//! Login sessions: kept in this host's memory, by the SHA-256 of their
//! token. A session ends at its deadline, after an idle period, at logout,
//! or as soon as its user changes (a new password or role, disabled,
//! deleted: the user's `generation` moves on). A restart of nasvisord ends
//! the sessions it held; API tokens are for what must outlive that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest life of a session.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// A session unused this long ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most sessions held; beyond, the least recently used ends.
const MAX_SESSIONS: usize = 10_000;

/// One session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: String,
    /// The user's generation when it logged in.
    pub generation: u64,
    /// The CSRF token of its cookie requests.
    pub csrf: String,
    /// When it ends at the latest (RFC 3339, for the API).
    pub expires_at: String,
    expires: Instant,
    last_seen: Instant,
}

/// This host's sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Adds a session under `digest` (its token's SHA-256).
    pub fn insert(
        &self,
        digest: [u8; 32],
        user: &str,
        generation: u64,
        csrf: String,
        expires_at: String,
        now: Instant,
    ) {
        let mut map = crate::lock(&self.map);
        map.retain(|_, s| live(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(k) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&k);
            }
        }
        map.insert(
            digest,
            Session {
                user: user.to_string(),
                generation,
                csrf,
                expires_at,
                expires: now + SESSION_TTL,
                last_seen: now,
            },
        );
    }

    /// The live session of `digest`, its idle clock restarted.
    pub fn touch(&self, digest: &[u8; 32], now: Instant) -> Option<Session> {
        let mut map = crate::lock(&self.map);
        let s = map.get_mut(digest)?;
        if !live(s, now) {
            map.remove(digest);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends one session; whether it existed.
    pub fn remove(&self, digest: &[u8; 32]) -> bool {
        crate::lock(&self.map).remove(digest).is_some()
    }

    /// Ends every session of `user`.
    pub fn end_user(&self, user: &str) {
        crate::lock(&self.map).retain(|_, s| s.user != user);
    }

    /// Ends the sessions whose digest `pick` picks.
    pub fn end_where(&self, pick: impl Fn(&[u8; 32]) -> bool) {
        crate::lock(&self.map).retain(|k, _| !pick(k));
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now < s.expires && now.duration_since(s.last_seen) < IDLE_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_at_its_deadline_or_with_its_user() {
        let s = Sessions::default();
        let now = Instant::now();
        s.insert([1; 32], "alice", 3, "c".into(), "t".into(), now);
        s.insert([2; 32], "alice", 3, "c".into(), "t".into(), now);
        s.insert([3; 32], "bob", 1, "c".into(), "t".into(), now);
        let t = now + IDLE_TIMEOUT - Duration::from_secs(1);
        assert_eq!(s.touch(&[1; 32], t).unwrap().generation, 3);
        // [2] was not used: idle.
        assert!(s.touch(&[2; 32], now + IDLE_TIMEOUT).is_none());
        // Used every half hour, [1] still ends at its deadline.
        let mut at = t;
        while at + Duration::from_secs(1800) < now + SESSION_TTL {
            at += Duration::from_secs(1800);
            assert!(s.touch(&[1; 32], at).is_some());
        }
        assert!(s.touch(&[1; 32], now + SESSION_TTL).is_none());
        s.end_user("bob");
        assert!(s.touch(&[3; 32], now).is_none());
        assert!(!s.remove(&[3; 32]));
    }
}
