//! Signed plugin packages.
//!
//! A package (`.nvplugin`) is one file:
//!
//! ```text
//! magic      8 bytes  "NVPLUGIN"
//! format     1 byte   1
//! manifest   u32 big-endian length, then that many bytes of JSON (see [`Manifest`])
//! signed     1 byte   0 = unsigned, 1 = signed
//! key        32 bytes ed25519 public key     (only when signed)
//! signature  64 bytes ed25519 signature      (only when signed)
//! component  the rest: the WebAssembly component
//! ```
//!
//! The signature covers `"nasvisor-plugin-v1\n"` followed by the exact
//! manifest bytes; the manifest carries the SHA-256 of the component, so the
//! signature covers the component bytes together with the manifest (name,
//! version, world, WIT version).

//!
//! The keys, their files and ids are `nasvisor-signing`'s, re-exported here
//! for the plugin host's callers; firmware bundles are signed with the same
//! keys, under another signature domain.

use crate::error::LoadError;
use nasvisor_plugin_sdk::World;
pub use nasvisor_signing::{
    generate_key, key_id, read_public_key, read_signing_key, sha256_hex, write_keypair, SigningKey,
    VerifyingKey,
};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"NVPLUGIN";
const FORMAT: u8 = 1;
const SIG_DOMAIN: &[u8] = b"nasvisor-plugin-v1\n";
const MAX_MANIFEST: usize = 64 * 1024;

/// What a plugin says about itself; signed together with its component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: World,
    pub wit_version: String,
    /// Lower-case hex SHA-256 of the component bytes.
    pub component_sha256: String,
}

/// A parsed package. Parsing checks the layout only, not the signature.
#[derive(Debug, Clone)]
pub struct Package {
    pub manifest: Manifest,
    /// The exact manifest bytes the signature covers.
    pub manifest_bytes: Vec<u8>,
    pub signature: Option<(VerifyingKey, nasvisor_signing::Signature)>,
    pub component: Vec<u8>,
}

/// True when `bytes` start like a nasvisor package rather than a bare component.
pub fn is_package(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

impl Package {
    /// Builds a package around `component`, signed with `key` when given.
    pub fn build(
        name: &str,
        version: &str,
        world: World,
        component: Vec<u8>,
        key: Option<&SigningKey>,
    ) -> Package {
        let manifest = Manifest {
            name: name.to_string(),
            version: version.to_string(),
            world,
            wit_version: nasvisor_plugin_sdk::WIT_VERSION.to_string(),
            component_sha256: sha256_hex(&component),
        };
        Package::from_manifest(manifest, component, key)
    }

    /// Builds a package with the given manifest as is (the caller is
    /// responsible for its digest), signed with `key` when given.
    pub fn from_manifest(
        manifest: Manifest,
        component: Vec<u8>,
        key: Option<&SigningKey>,
    ) -> Package {
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
        let signature = key.map(|k| {
            (
                k.verifying_key(),
                nasvisor_signing::sign(k, SIG_DOMAIN, &manifest_bytes),
            )
        });
        Package {
            manifest,
            manifest_bytes,
            signature,
            component,
        }
    }

    /// Serializes the package to its file form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.component.len() + self.manifest_bytes.len() + 128);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&(self.manifest_bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.manifest_bytes);
        match &self.signature {
            None => out.push(0),
            Some((k, s)) => {
                out.push(1);
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(&s.to_bytes());
            }
        }
        out.extend_from_slice(&self.component);
        out
    }

    /// Parses a package file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Package, LoadError> {
        let bad = |m: &str| LoadError::MalformedPackage(m.to_string());
        if !bytes.starts_with(MAGIC) {
            return Err(bad("missing NVPLUGIN magic"));
        }
        let mut rest = &bytes[MAGIC.len()..];
        let (&format, r) = rest
            .split_first()
            .ok_or_else(|| bad("truncated before format"))?;
        if format != FORMAT {
            return Err(LoadError::MalformedPackage(format!(
                "unsupported package format {format} (this host reads format {FORMAT})"
            )));
        }
        rest = r;
        if rest.len() < 4 {
            return Err(bad("truncated manifest length"));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if len > MAX_MANIFEST || rest.len() < len {
            return Err(bad("manifest length out of range"));
        }
        let manifest_bytes = rest[..len].to_vec();
        rest = &rest[len..];
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| LoadError::MalformedPackage(format!("manifest: {e}")))?;
        let (&signed, r) = rest
            .split_first()
            .ok_or_else(|| bad("truncated before signature flag"))?;
        rest = r;
        let signature = match signed {
            0 => None,
            1 => {
                if rest.len() < 96 {
                    return Err(bad("truncated signature"));
                }
                let key = VerifyingKey::from_bytes(rest[..32].try_into().expect("32 bytes"))
                    .map_err(|e| LoadError::MalformedPackage(format!("public key: {e}")))?;
                let sig = nasvisor_signing::Signature::from_bytes(
                    rest[32..96].try_into().expect("64 bytes"),
                );
                rest = &rest[96..];
                Some((key, sig))
            }
            other => {
                return Err(LoadError::MalformedPackage(format!(
                    "signature flag {other} (expected 0 or 1)"
                )))
            }
        };
        if rest.is_empty() {
            return Err(bad("no component bytes"));
        }
        Ok(Package {
            manifest,
            manifest_bytes,
            signature,
            component: rest.to_vec(),
        })
    }

    /// Checks the signature against `trusted` keys and the component digest.
    /// An unsigned package passes only when `developer_mode` is set.
    /// Returns the id of the key that signed it.
    pub fn verify(
        &self,
        trusted: &[VerifyingKey],
        developer_mode: bool,
    ) -> Result<Option<String>, LoadError> {
        let actual = sha256_hex(&self.component);
        let signer = match &self.signature {
            None if developer_mode => None,
            None => return Err(LoadError::Unsigned),
            Some((key, sig)) => {
                let id = key_id(key);
                if !trusted.iter().any(|t| t.as_bytes() == key.as_bytes()) {
                    if developer_mode {
                        tracing::warn!(key_id = %id, "developer mode: loading a plugin signed by an untrusted key");
                    } else {
                        return Err(LoadError::UntrustedKey { key_id: id });
                    }
                }
                if !nasvisor_signing::verify(key, SIG_DOMAIN, &self.manifest_bytes, sig) {
                    return Err(LoadError::BadSignature { key_id: id });
                }
                Some(id)
            }
        };
        if actual != self.manifest.component_sha256 {
            return Err(LoadError::Tampered {
                signed: self.manifest.component_sha256.clone(),
                actual,
            });
        }
        check_wit_version(&self.manifest.wit_version)?;
        Ok(signer)
    }
}

/// WIT packages at 0.x are compatible when major and minor match.
pub fn check_wit_version(found: &str) -> Result<(), LoadError> {
    let host = nasvisor_plugin_sdk::WIT_VERSION;
    let mm = |v: &str| {
        let mut p = v.split('.');
        Some((
            p.next()?.parse::<u64>().ok()?,
            p.next()?.parse::<u64>().ok()?,
            p.next()?.parse::<u64>().ok()?,
        ))
    };
    let compatible = match (mm(found), mm(host)) {
        (Some((fa, fb, _)), Some((ha, hb, _))) => {
            if ha == 0 {
                fa == 0 && fb == hb
            } else {
                fa == ha && fb <= hb
            }
        }
        _ => false,
    };
    if compatible {
        Ok(())
    } else {
        Err(LoadError::IncompatibleWit {
            found: found.to_string(),
            host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(key: Option<&SigningKey>) -> Package {
        Package::build(
            "p",
            "1.0.0",
            World::Scheduler,
            b"\0asm-component".to_vec(),
            key,
        )
    }

    #[test]
    fn signed_package_round_trips_and_verifies() {
        let k = generate_key();
        let bytes = pkg(Some(&k)).to_bytes();
        let p = Package::parse(&bytes).unwrap();
        assert_eq!(p.manifest.name, "p");
        let id = p.verify(&[k.verifying_key()], false).unwrap();
        assert_eq!(id, Some(key_id(&k.verifying_key())));
    }

    #[test]
    fn tampered_component_is_refused() {
        let k = generate_key();
        let mut bytes = pkg(Some(&k)).to_bytes();
        *bytes.last_mut().unwrap() ^= 1;
        let e = Package::parse(&bytes)
            .unwrap()
            .verify(&[k.verifying_key()], false)
            .unwrap_err();
        assert!(matches!(e, LoadError::Tampered { .. }), "{e}");
    }

    #[test]
    fn tampered_manifest_is_refused() {
        let k = generate_key();
        let p = pkg(Some(&k));
        let mut bytes = p.to_bytes();
        // Flip the world name inside the manifest JSON, keeping it valid.
        let s = String::from_utf8_lossy(&bytes).to_string();
        let at = s.find("\"1.0.0\"").unwrap();
        bytes[at + 1] = b'9';
        let e = Package::parse(&bytes)
            .unwrap()
            .verify(&[k.verifying_key()], false)
            .unwrap_err();
        assert!(matches!(e, LoadError::BadSignature { .. }), "{e}");
    }

    #[test]
    fn untrusted_and_unsigned_are_refused_outside_developer_mode() {
        let k = generate_key();
        let other = generate_key();
        let e = pkg(Some(&k))
            .verify(&[other.verifying_key()], false)
            .unwrap_err();
        assert!(matches!(e, LoadError::UntrustedKey { .. }));
        let e = pkg(None).verify(&[k.verifying_key()], false).unwrap_err();
        assert!(matches!(e, LoadError::Unsigned));
        assert_eq!(pkg(None).verify(&[], true).unwrap(), None);
    }

    #[test]
    fn wit_versions() {
        assert!(check_wit_version("0.1.0").is_ok());
        assert!(check_wit_version("0.1.7").is_ok());
        assert!(check_wit_version("0.2.0").is_err());
        assert!(check_wit_version("1.1.0").is_err());
        assert!(check_wit_version("banana").is_err());
    }

    #[test]
    fn truncated_packages_are_malformed() {
        let bytes = pkg(None).to_bytes();
        for cut in [0, 5, 9, 12, 20] {
            assert!(matches!(
                Package::parse(&bytes[..cut]),
                Err(LoadError::MalformedPackage(_))
            ));
        }
    }
}
