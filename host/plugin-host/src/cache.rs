//! On-disk cache of compiled components.
//!
//! Entries are keyed by the SHA-256 of the component bytes and a hash of the
//! engine's configuration, and authenticated with an HMAC whose key only this
//! host holds (`cache.key`, mode 0600). The host deserializes native code only
//! from entries whose HMAC verifies, i.e. bytes it produced itself.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 32;

/// The compiled-code cache of one engine.
#[derive(Debug)]
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

/// Feeds `Hash` output into SHA-256, so the engine's compatibility hash is
/// stable across processes (unlike `DefaultHasher`'s random keys).
struct ShaHasher(Sha256);
impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CodeCache {
    /// Opens (creating if needed) the cache in `dir` for `engine`.
    pub fn open(dir: &Path, engine: &wasmtime::Engine) -> std::io::Result<CodeCache> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("cache.key");
        let key = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k.try_into().expect("32 bytes"),
            Ok(_) | Err(_) => {
                let mut k = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
                let tmp = dir.join(format!("cache.key.{}", std::process::id()));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&k)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &key_path)?;
                k
            }
        };
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..16]);
        Ok(CodeCache {
            dir: dir.to_path_buf(),
            key,
            engine_hash,
        })
    }

    fn path(&self, component_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{component_sha256}-{}.cwasm", self.engine_hash))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("any key length")
    }

    /// The authenticated serialized code for this component, if cached.
    /// An entry whose tag does not verify is removed and ignored.
    pub fn get(&self, component_sha256: &str) -> Option<Vec<u8>> {
        let path = self.path(component_sha256);
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() < TAG_LEN {
            nasvisor_best_effort::remove_file(&path);
            return None;
        }
        let (tag, code) = bytes.split_at(TAG_LEN);
        let mut mac = self.mac();
        mac.update(component_sha256.as_bytes());
        mac.update(code);
        if mac.verify_slice(tag).is_err() {
            tracing::warn!(path = %path.display(), "compiled-code cache entry failed authentication; discarding it");
            nasvisor_best_effort::remove_file(&path);
            return None;
        }
        Some(code.to_vec())
    }

    /// Stores serialized code for this component (atomically).
    pub fn put(&self, component_sha256: &str, code: &[u8]) -> std::io::Result<()> {
        let mut mac = self.mac();
        mac.update(component_sha256.as_bytes());
        mac.update(code);
        let tag = mac.finalize().into_bytes();
        let path = self.path(component_sha256);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&tag)?;
        f.write_all(code)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Digest of a component's bytes, the cache key.
    pub fn component_key(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }
}
