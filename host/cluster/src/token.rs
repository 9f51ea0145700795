//! Join tokens: `nvjt1.<cluster id>.<CA SHA-256 fingerprint>.<secret>`
//! (see [`crate::join`]). Only the SHA-256 of the secret is stored.

use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::types::JoinRefused;

/// The prefix (and version) of a join token's text.
pub const TOKEN_PREFIX: &str = "nvjt1";
/// The longest accepted token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A join token's contents.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The cluster id.
    pub cluster_id: String,
    /// SHA-256 of the cluster CA certificate (64 lower-case hex digits).
    pub ca_fingerprint: String,
    /// The one-time secret (64 lower-case hex digits).
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("cluster_id", &self.cluster_id)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.cluster_id, self.ca_fingerprint, self.secret
        )
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FromStr for JoinToken {
    type Err = JoinRefused;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| JoinRefused::InvalidToken {
            reason: reason.to_owned(),
        };
        let mut parts = s.trim().split('.');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(bad("it does not start with \"nvjt1.\""));
        }
        let (Some(cluster_id), Some(fp), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it must have 4 dot-separated parts"));
        };
        if !is_hex(cluster_id, 16) {
            return Err(bad("the cluster id must be 16 hex digits"));
        }
        if !is_hex(fp, 64) {
            return Err(bad("the CA fingerprint must be 64 hex digits"));
        }
        if !is_hex(secret, 64) {
            return Err(bad("the secret must be 64 hex digits"));
        }
        Ok(Self {
            cluster_id: cluster_id.to_owned(),
            ca_fingerprint: fp.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// SHA-256 (hex) of a token secret: what the cluster stores.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_errors() {
        let t = JoinToken {
            cluster_id: "0123456789abcdef".into(),
            ca_fingerprint: "a".repeat(64),
            secret: "b".repeat(64),
        };
        let s = t.to_string();
        assert!(s.starts_with("nvjt1.0123456789abcdef."));
        assert_eq!(s.parse::<JoinToken>().unwrap(), t);
        assert!(
            !format!("{t:?}").contains(&"b".repeat(64)),
            "the secret is not logged"
        );
        for bad in [
            "",
            "nvjt2.0123456789abcdef.aa.bb",
            "nvjt1.0123456789abcdef",
            &s.replace("nvjt1.0123", "nvjt1.X123"),
            &format!("{s}.extra"),
            &s[..s.len() - 1],
        ] {
            assert!(
                matches!(
                    bad.parse::<JoinToken>(),
                    Err(JoinRefused::InvalidToken { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(secret_hash("x").len(), 64);
    }
}
