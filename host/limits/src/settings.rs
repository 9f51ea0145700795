//! The settings and their checks.

use std::time::Duration;

/// The limits of one server (see the crate docs for what each one does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address (one /64 for IPv6) at most.
    pub max_connections_per_address: usize,
    /// The longest TLS handshake.
    pub handshake_timeout: Duration,
    /// The longest wait for a complete request head.
    pub header_timeout: Duration,
    /// The longest silence of a connection with no request in progress.
    pub idle_timeout: Duration,
    /// The longest silence inside a request body.
    pub body_timeout: Duration,
}

impl Default for ServerLimits {
    /// 256 connections, 32 per address, handshake 10 s, header 30 s,
    /// idle 15 s, body 30 s.
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            max_connections_per_address: 32,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// A limit that cannot be used: the setting (as in the configuration file,
/// `max-connections`...) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct LimitError {
    /// The setting.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

/// The largest connection cap.
const MAX_CONNECTIONS: usize = 65_536;
/// The shortest and longest timeout.
const TIMEOUTS: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(3600));

impl ServerLimits {
    /// Checks every limit; the error names the setting and the reason.
    pub fn check(&self) -> Result<(), LimitError> {
        let bad = |field, reason: String| Err(LimitError { field, reason });
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return bad(
                "max-connections",
                format!(
                    "must be 1 to {MAX_CONNECTIONS}, got {}",
                    self.max_connections
                ),
            );
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_address) {
            return bad(
                "max-connections-per-address",
                format!(
                    "must be 1 to max-connections ({}), got {}",
                    self.max_connections, self.max_connections_per_address
                ),
            );
        }
        for (field, t) in [
            ("handshake-timeout-ms", self.handshake_timeout),
            ("header-timeout-ms", self.header_timeout),
            ("idle-timeout-ms", self.idle_timeout),
            ("body-timeout-ms", self.body_timeout),
        ] {
            if !(TIMEOUTS.0..=TIMEOUTS.1).contains(&t) {
                return bad(
                    field,
                    format!(
                        "must be {} to {} ms, got {}",
                        TIMEOUTS.0.as_millis(),
                        TIMEOUTS.1.as_millis(),
                        t.as_millis()
                    ),
                );
            }
        }
        if self.idle_timeout > self.header_timeout {
            return bad(
                "idle-timeout-ms",
                format!(
                    "must not exceed header-timeout-ms ({}), got {}: the header timer also runs \
                     while a connection waits for its next request, so a longer idle timeout \
                     would never apply",
                    self.header_timeout.as_millis(),
                    self.idle_timeout.as_millis()
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_each_bad_limit_is_named() {
        ServerLimits::default().check().unwrap();
        let d = ServerLimits::default;
        let cases = [
            (
                ServerLimits {
                    max_connections: 0,
                    ..d()
                },
                "max-connections",
            ),
            (
                ServerLimits {
                    max_connections_per_address: 300,
                    ..d()
                },
                "max-connections-per-address",
            ),
            (
                ServerLimits {
                    handshake_timeout: Duration::ZERO,
                    ..d()
                },
                "handshake-timeout-ms",
            ),
            (
                ServerLimits {
                    header_timeout: Duration::from_secs(7200),
                    ..d()
                },
                "header-timeout-ms",
            ),
            (
                ServerLimits {
                    idle_timeout: Duration::from_secs(60),
                    ..d()
                },
                "idle-timeout-ms",
            ),
            (
                ServerLimits {
                    body_timeout: Duration::from_millis(10),
                    ..d()
                },
                "body-timeout-ms",
            ),
        ];
        for (limits, field) in cases {
            let e = limits.check().unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }
}
