//! The connection caps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tells the addresses whose connections are not counted (the cluster
/// endpoint exempts its members' addresses, so that strangers filling the
/// slots cannot cut the members off).
pub type Exempt = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Why a connection was closed at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    /// Every slot is taken.
    #[error("{open} connections are open, the limit (max-connections = {limit})")]
    Total {
        /// The connections open.
        open: usize,
        /// The limit.
        limit: usize,
    },
    /// The client's address has every slot it may have.
    #[error(
        "{addr} has {open} connections open, the limit per address \
         (max-connections-per-address = {limit})"
    )]
    PerAddress {
        /// The client address (its /64 for IPv6).
        addr: IpAddr,
        /// Its connections open.
        open: usize,
        /// The limit.
        limit: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_addr: HashMap<IpAddr, usize>,
}

/// Counts the open connections of one server and refuses those beyond its
/// caps. Each admitted connection holds a [`ConnectionPermit`] until it
/// ends.
pub struct ConnectionGate {
    server: &'static str,
    max: usize,
    per_address: usize,
    exempt: Option<Exempt>,
    counts: Mutex<Counts>,
    refused: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ConnectionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGate")
            .field("server", &self.server)
            .field("max", &self.max)
            .field("per_address", &self.per_address)
            .finish_non_exhaustive()
    }
}

/// How often a refusal is logged as a warning (the others at debug level).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The address connections are counted under: IPv4-mapped IPv6 addresses
/// as IPv4, other IPv6 addresses by their /64 (one host usually has a
/// whole /64).
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::V6(s.into())
        }
        v4 => v4,
    }
}

impl ConnectionGate {
    /// A gate for the server named `server` (in logs), with these caps.
    pub fn new(server: &'static str, max: usize, per_address: usize) -> Arc<Self> {
        Self::with_exemption(server, max, per_address, None)
    }

    /// The same, not counting connections from the addresses `exempt`
    /// approves.
    pub fn with_exemption(
        server: &'static str,
        max: usize,
        per_address: usize,
        exempt: Option<Exempt>,
    ) -> Arc<Self> {
        Arc::new(ConnectionGate {
            server,
            max,
            per_address,
            exempt,
            counts: Mutex::new(Counts::default()),
            refused: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// Admits a connection from `ip`, or says why it must be closed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, GateRefusal> {
        let addr = counted_as(ip);
        if self.exempt.as_ref().is_some_and(|e| e(ip.to_canonical())) {
            return Ok(ConnectionPermit {
                gate: self.clone(),
                addr: None,
            });
        }
        let refusal = {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let from_addr = c.by_addr.get(&addr).copied().unwrap_or(0);
            if c.total >= self.max {
                Some(GateRefusal::Total {
                    open: c.total,
                    limit: self.max,
                })
            } else if from_addr >= self.per_address {
                Some(GateRefusal::PerAddress {
                    addr,
                    open: from_addr,
                    limit: self.per_address,
                })
            } else {
                c.total += 1;
                *c.by_addr.entry(addr).or_default() += 1;
                None
            }
        };
        match refusal {
            None => Ok(ConnectionPermit {
                gate: self.clone(),
                addr: Some(addr),
            }),
            Some(r) => {
                self.log_refusal(&r);
                Err(r)
            }
        }
    }

    /// The counted connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// The connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn log_refusal(&self, r: &GateRefusal) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(server = self.server, refused_so_far = n, reason = %r, "closed a new connection");
        } else {
            tracing::debug!(server = self.server, reason = %r, "closed a new connection");
        }
    }

    fn release(&self, addr: IpAddr) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_addr.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                c.by_addr.remove(&addr);
            }
        }
    }
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    gate: Arc<ConnectionGate>,
    /// `None`: an exempt connection, not counted.
    addr: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(a) = self.addr {
            self.gate.release(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_hold_per_address_and_in_total_and_free_on_drop() {
        let g = ConnectionGate::new("test", 3, 2);
        let a1 = g.admit(ip("10.0.0.1")).unwrap();
        let _a2 = g.admit(ip("10.0.0.1")).unwrap();
        let e = g.admit(ip("10.0.0.1")).unwrap_err();
        assert!(matches!(e, GateRefusal::PerAddress { limit: 2, .. }), "{e}");
        assert!(e.to_string().contains("max-connections-per-address = 2"));
        let _b = g.admit(ip("10.0.0.2")).unwrap();
        let e = g.admit(ip("10.0.0.3")).unwrap_err();
        assert_eq!(e, GateRefusal::Total { open: 3, limit: 3 });
        assert_eq!((g.open(), g.refused()), (3, 2));
        drop(a1);
        g.admit(ip("10.0.0.3")).unwrap();
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let g = ConnectionGate::new("test", 10, 1);
        let _a = g.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(g.admit(ip("2001:db8:1:2::ffff")).is_err(), "same /64");
        let _b = g.admit(ip("2001:db8:1:3::1")).unwrap();
        let _c = g.admit(ip("192.0.2.1")).unwrap();
        assert!(
            g.admit(ip("::ffff:192.0.2.1")).is_err(),
            "the same IPv4 host"
        );
    }

    #[test]
    fn exempt_addresses_are_not_counted() {
        let exempt: Exempt = Arc::new(|ip| ip == "10.0.0.9".parse::<IpAddr>().unwrap());
        let g = ConnectionGate::with_exemption("test", 1, 1, Some(exempt));
        let _a = g.admit(ip("10.0.0.1")).unwrap();
        let kept: Vec<_> = (0..5).map(|_| g.admit(ip("10.0.0.9")).unwrap()).collect();
        assert_eq!(g.open(), 1);
        assert!(g.admit(ip("10.0.0.2")).is_err());
        drop(kept);
        assert_eq!(g.open(), 1);
    }
}
