//! Admin token authentication.
//!
//! On first start a random 32-byte token is generated and only its SHA-256
//! hash is stored, in `<data_dir>/admin-token.hash` (mode 0600). The clear
//! token is returned once so the daemon can print it; it is never stored or
//! logged. Requests carry it as `Authorization: Bearer <token>`; the check
//! compares hashes in constant time.

use base64::Engine;
use nasvisor_best_effort::write_private;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use subtle::ConstantTimeEq;

/// File name of the token hash inside the data dir.
pub const TOKEN_HASH_FILE: &str = "admin-token.hash";

/// Errors of the token store.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The hash file could not be read or written.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The hash file exists but does not hold a hex SHA-256.
    #[error("admin token file {0} is corrupt: expected 64 hex digits")]
    Corrupt(PathBuf),
}

/// The admin token verifier. Holds only the token's hash.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    hash: RwLock<[u8; 32]>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_token() -> String {
    loop {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        // A token starting with '-' reads as an option on a command line
        // (`nasvisor --token -x...`).
        if !t.starts_with('-') {
            return t;
        }
    }
}

impl TokenStore {
    /// Loads the token hash from `data_dir`, or creates a token on first
    /// start. Returns the clear token only when it was just created.
    pub fn open(data_dir: &Path) -> Result<(Self, Option<String>), AuthError> {
        let path = data_dir.join(TOKEN_HASH_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let mut h = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut h)
                    .map_err(|_| AuthError::Corrupt(path.clone()))?;
                Ok((
                    Self {
                        path,
                        hash: RwLock::new(h),
                    },
                    None,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = new_token();
                let h = hash(&token);
                write_private(&path, format!("{}\n", hex::encode(h)).as_bytes()).map_err(
                    |source| AuthError::Io {
                        path: path.clone(),
                        source,
                    },
                )?;
                Ok((
                    Self {
                        path,
                        hash: RwLock::new(h),
                    },
                    Some(token),
                ))
            }
            Err(source) => Err(AuthError::Io { path, source }),
        }
    }

    /// Replaces the token with a new random one and returns it (once). The
    /// old token stops working at once.
    pub fn rotate(&self) -> Result<String, AuthError> {
        let token = new_token();
        let h = hash(&token);
        write_private(&self.path, format!("{}\n", hex::encode(h)).as_bytes()).map_err(
            |source| AuthError::Io {
                path: self.path.clone(),
                source,
            },
        )?;
        *self.hash.write().unwrap_or_else(|p| p.into_inner()) = h;
        Ok(token)
    }

    /// True when `token` is the admin token (constant-time comparison).
    pub fn verify(&self, token: &str) -> bool {
        let given = hash(token);
        let stored = *self.hash.read().unwrap_or_else(|p| p.into_inner());
        given.ct_eq(&stored).into()
    }

    /// Checks an `Authorization` header value of the form `Bearer <token>`.
    pub fn verify_header(&self, value: Option<&[u8]>) -> bool {
        let Some(v) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
            return false;
        };
        let Some((scheme, token)) = v.split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_persist_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let (s, t) = TokenStore::open(dir.path()).unwrap();
        let t = t.expect("first start prints a token");
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&t)
                .unwrap()
                .len(),
            32
        );
        let meta = std::fs::metadata(dir.path().join(TOKEN_HASH_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(!std::fs::read_to_string(dir.path().join(TOKEN_HASH_FILE))
            .unwrap()
            .contains(&t));
        assert!(s.verify(&t));
        assert!(!s.verify("wrong"));
        assert!(s.verify_header(Some(format!("Bearer {t}").as_bytes())));
        assert!(!s.verify_header(Some(t.as_bytes())));
        assert!(!s.verify_header(None));

        let (s2, t2) = TokenStore::open(dir.path()).unwrap();
        assert!(t2.is_none());
        assert!(s2.verify(&t));

        let n = s2.rotate().unwrap();
        assert!(s2.verify(&n) && !s2.verify(&t));
        let (s3, _) = TokenStore::open(dir.path()).unwrap();
        assert!(s3.verify(&n) && !s3.verify(&t));
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_HASH_FILE), "nope").unwrap();
        assert!(matches!(
            TokenStore::open(dir.path()),
            Err(AuthError::Corrupt(_))
        ));
    }
}
