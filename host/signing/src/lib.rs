//! nasvisor's vendor keys: one ed25519 key format for everything a vendor
//! signs (plugin packages and firmware bundles).
//!
//! - A secret key is a PKCS#8 PEM file (mode 0600), its public key an SPKI
//!   PEM file (`.pub`); `nasvisor plugin keygen` writes both.
//! - A key is named by its [`key_id`]: the first 8 bytes of the SHA-256 of
//!   its raw 32 bytes, in hex.
//! - A trusted-key directory holds `*.pub` files ([`read_public_keys_in`]).
//! - Every signature is domain-separated ([`sign`], [`verify`]): it covers a
//!   fixed domain string, which names the kind of document and its format,
//!   followed by the document's exact bytes. The same key can then sign a
//!   plugin manifest and a firmware manifest, and neither signature can be
//!   taken for the other.
//!
//! This crate depends on no runtime (no wasmtime, no async): the plugin
//! host and the firmware bundle code both build on it.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The length of an ed25519 signature in bytes.
pub const SIGNATURE_LENGTH: usize = ed25519_dalek::SIGNATURE_LENGTH;

/// Why a key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a PKCS#8 PEM ed25519 secret key.
    #[error("{path}: not a PKCS#8 ed25519 key: {reason}")]
    NotASigningKey { path: String, reason: String },
    /// The file is not an SPKI PEM ed25519 public key.
    #[error("{path}: not an ed25519 public key: {reason}")]
    NotAPublicKey { path: String, reason: String },
}

impl KeyError {
    /// True when the file or directory does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A short, stable identifier of a public key: the first 8 bytes of the
/// SHA-256 of its raw bytes, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Generates a new signing key.
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// The message a signature of `domain` covers: the domain, then the document.
fn domain_message(domain: &[u8], document: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + document.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(document);
    m
}

/// Signs `document` under `domain` (for example `b"nasvisor-plugin-v1\n"`).
pub fn sign(key: &SigningKey, domain: &[u8], document: &[u8]) -> Signature {
    key.sign(&domain_message(domain, document))
}

/// True when `signature` is `key`'s signature of `document` under `domain`.
pub fn verify(key: &VerifyingKey, domain: &[u8], document: &[u8], signature: &Signature) -> bool {
    key.verify(&domain_message(domain, document), signature)
        .is_ok()
}

/// Writes a signing key (PKCS#8 PEM, mode 0600) and its public key (SPKI
/// PEM). Refuses to overwrite either file; on failure neither is left behind.
pub fn write_keypair(key: &SigningKey, secret: &Path, public: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let pubpem = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut pubf = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(public)?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret)
        .and_then(|mut f| {
            f.write_all(pem.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| pubf.write_all(pubpem.as_bytes()));
    if let Err(e) = written {
        nasvisor_best_effort::remove_file(public);
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            nasvisor_best_effort::remove_file(secret);
        }
        return Err(e);
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a PKCS#8 PEM signing key.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(&read_text(path)?).map_err(|e| KeyError::NotASigningKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads an SPKI PEM public key.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(&read_text(path)?).map_err(|e| KeyError::NotAPublicKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A public key read from a trusted-key directory, with the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub path: PathBuf,
    pub key: VerifyingKey,
}

/// Reads every `*.pub` file of `dir` as a public key, in file-name order.
/// A file that is not a public key fails the whole read: a trust
/// directory is either what its owner meant or refused. Other files are
/// ignored.
pub fn read_public_keys_in(dir: &Path) -> Result<Vec<TrustedKey>, KeyError> {
    let io = |source| KeyError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|x| x == "pub") {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let key = read_public_key(&path)?;
            Ok(TrustedKey { path, key })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate_key();
        let (s, p) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        write_keypair(&k, &s, &p).unwrap();
        assert_eq!(read_signing_key(&s).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(read_public_key(&p).unwrap(), k.verifying_key());
    }

    #[test]
    fn write_keypair_refuses_to_overwrite_and_leaves_the_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let (s, p) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        write_keypair(&generate_key(), &s, &p).unwrap();
        let before = (std::fs::read(&s).unwrap(), std::fs::read(&p).unwrap());
        let e = write_keypair(&generate_key(), &s, &p).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(
            (std::fs::read(&s).unwrap(), std::fs::read(&p).unwrap()),
            before
        );
    }

    #[test]
    fn a_public_key_is_not_a_signing_key_and_the_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (s, p) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        write_keypair(&generate_key(), &s, &p).unwrap();
        let e = read_signing_key(&p).unwrap_err();
        assert!(matches!(e, KeyError::NotASigningKey { .. }), "{e}");
        assert!(e.to_string().contains("k.pub"), "{e}");
        let e = read_public_key(&s).unwrap_err();
        assert!(matches!(e, KeyError::NotAPublicKey { .. }), "{e}");
        let e = read_public_key(&dir.path().join("missing.pub")).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn a_signature_holds_only_in_its_own_domain() {
        let k = generate_key();
        let sig = sign(&k, b"a-v1\n", b"document");
        assert!(verify(&k.verifying_key(), b"a-v1\n", b"document", &sig));
        assert!(!verify(&k.verifying_key(), b"b-v1\n", b"document", &sig));
        assert!(!verify(&k.verifying_key(), b"a-v1\n", b"documenT", &sig));
        let other = generate_key();
        assert!(!verify(
            &other.verifying_key(),
            b"a-v1\n",
            b"document",
            &sig
        ));
    }

    #[test]
    fn a_trusted_directory_gives_its_pub_files_in_order_and_refuses_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (generate_key(), generate_key());
        write_keypair(&b, &dir.path().join("b.key"), &dir.path().join("b.pub")).unwrap();
        write_keypair(&a, &dir.path().join("a.key"), &dir.path().join("a.pub")).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let keys = read_public_keys_in(dir.path()).unwrap();
        let got: Vec<_> = keys.iter().map(|t| t.key).collect();
        assert_eq!(got, vec![a.verifying_key(), b.verifying_key()]);
        assert!(keys[0].path.ends_with("a.pub"));
        std::fs::write(dir.path().join("c.pub"), "garbage").unwrap();
        let e = read_public_keys_in(dir.path()).unwrap_err();
        assert!(e.to_string().contains("c.pub"), "{e}");
        let e = read_public_keys_in(&dir.path().join("none")).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn key_ids_are_short_and_stable() {
        let k = generate_key();
        let id = key_id(&k.verifying_key());
        assert_eq!(id.len(), 16);
        assert_eq!(id, key_id(&k.verifying_key()));
        assert_ne!(id, key_id(&generate_key().verifying_key()));
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
