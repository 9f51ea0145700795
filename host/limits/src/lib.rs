//! Limits of nasvisor's two HTTPS servers: the admin endpoint
//! (`nasvisor-api`) and the cluster endpoint (`nasvisor-cluster`).
//!
//! A server that any client on the network can reach must not be held by
//! the slowest of them. Each limit is one setting of [`ServerLimits`]:
//!
//! | limit | what happens |
//! |---|---|
//! | `max-connections` | beyond it a new connection is accepted and closed at once ([`ConnectionGate`]) |
//! | `max-connections-per-address` | the same, counted per client address (per /64 for IPv6), so one client cannot take every slot |
//! | `handshake-timeout-ms` | a TLS handshake not finished by then is dropped ([`handshake`]) |
//! | `header-timeout-ms` | a request head must be complete this long after the server starts waiting for it (after the handshake or the previous answer), however slowly it trickles in (hyper's `header_read_timeout`) |
//! | `idle-timeout-ms` | a connection with no request in progress that sends nothing for this long is closed ([`serve_http1`]) |
//! | `body-timeout-ms` | a request body that stops arriving for this long fails ([`TimedBody`], [`read_body`]) |
//!
//! The connection cap closes rather than queues: a queued connection waits
//! behind whatever holds the slots, a closed one fails at once and can be
//! retried, and the server keeps accepting (and closing) instead of leaving
//! clients hanging in the kernel's backlog.

//!
//! The hyper side ([`read_body`], [`serve_http1`], [`handshake`]) is the
//! default feature `http`; without it the crate holds the settings and the
//! connection gate only.

#[cfg(feature = "http")]
mod body;
#[cfg(feature = "http")]
mod conn;
mod gate;
mod settings;

#[cfg(feature = "http")]
pub use body::{read_body, BodyStalled, ReadError, TimedBody};
#[cfg(feature = "http")]
pub use conn::{handshake, serve_http1, ConnError, HandshakeError};
pub use gate::{ConnectionGate, ConnectionPermit, Exempt, GateRefusal};
pub use settings::{LimitError, ServerLimits};
