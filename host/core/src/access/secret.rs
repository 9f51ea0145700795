//! Secrets: API tokens and session tokens (random, stored only as their
//! SHA-256), and passwords (argon2id, PHC strings).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of API tokens.
pub const TOKEN_PREFIX: &str = "nvt_";
/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "nvs_";
/// Longest credential looked at (a longer one is refused unhashed).
pub const MAX_SECRET_LEN: usize = 256;

/// argon2id's memory cost, KiB (19 MiB, 2 passes, 1 lane: the OWASP
/// baseline for argon2id).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// argon2id's passes.
pub const ARGON2_T: u32 = 2;
/// argon2id's lanes.
pub const ARGON2_P: u32 = 1;

/// A new secret: `prefix` and 32 random bytes, base64url.
pub fn new_secret(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// The SHA-256 of a secret: what is stored and looked up. A secret has
/// 256 random bits, so a fast hash is enough (no salt, no stretching):
/// the digest reveals nothing usable, and the lookup stays cheap.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The store key of a secret: its digest, hex.
pub fn key(secret: &str) -> String {
    hex::encode(digest(secret))
}

/// The public id of a token: the first 16 hex digits of its key.
pub fn token_id(key: &str) -> &str {
    &key[..key.len().min(16)]
}

fn argon2() -> Argon2<'static> {
    // The constants are valid parameters (checked by a test).
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password (argon2id, a random salt), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash` (its own parameters
/// are used, so hashes made with older parameters still verify).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash does not parse");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_stored_only_as_their_digest() {
        let a = new_secret(TOKEN_PREFIX);
        let b = new_secret(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 4 + 43, "{a}");
        let k = key(&a);
        assert_eq!(k.len(), 64);
        assert!(!k.contains(&a[4..]));
        assert_eq!(token_id(&k), &k[..16]);
        assert_eq!(key(&a), k, "the digest is stable");
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).expect("valid argon2 parameters");
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsE"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
        assert!(!verify_password("not a hash", "x"));
    }
}
