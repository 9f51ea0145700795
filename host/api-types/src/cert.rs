//! The form in which nasvisord prints its certificate's fingerprint and the
//! CLI pins it (`--fingerprint`).

use sha2::{Digest, Sha256};

/// SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
