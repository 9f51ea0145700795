//! Verifying a bundle, in three steps that only go forward:
//!
//! 1. [`OpenBundle::open`] reads the layout up to the payload's header:
//!    `manifest.json` (at most [`MAX_MANIFEST_BYTES`](crate::MAX_MANIFEST_BYTES),
//!    refused unread when larger), `manifest.sig`, and the payload member's
//!    header. Nothing of it is trusted yet.
//! 2. [`OpenBundle::check`] checks the signature against the trusted keys,
//!    then reads the manifest and checks it against the [`Policy`]
//!    (product, board, expiry, rollback floor, installed version) and the
//!    payload member's name and size. No payload byte has been read.
//! 3. [`CheckedBundle::stream_payload`] streams the payload into a
//!    [`PayloadSink`], hashing as it goes, checks its size and digest and
//!    that nothing follows but the end of the archive, and only then
//!    commits the sink and returns a [`Verified`] token. On any refusal the
//!    sink is discarded.
//!
//! A [`Verified`] can only be made here, so code that holds one holds a
//! payload that passed every check.

use crate::error::BundleError;
use crate::layout::{self, Member, PayloadReader};
use crate::manifest::{Manifest, MANIFEST_MEMBER, MAX_MANIFEST_BYTES, SIGNATURE_MEMBER};
use crate::policy::Policy;
use crate::sink::PayloadSink;
use nasvisor_signing::{key_id, Signature, SIGNATURE_LENGTH};
use std::io::Read;
use std::path::Path;

/// The signature domain of bundle manifests: a signature covers this
/// string, then the exact bytes of `manifest.json`.
pub const SIGNATURE_DOMAIN: &[u8] = b"nasvisor-firmware-bundle-v1\n";

/// How much of the payload is read at a time.
const CHUNK: usize = 64 * 1024;

/// A bundle whose layout was read up to its payload; nothing checked yet.
#[derive(Debug)]
pub struct OpenBundle<R> {
    reader: R,
    manifest_bytes: Vec<u8>,
    signature: Option<Signature>,
    payload: Member,
}

impl<R: Read> OpenBundle<R> {
    /// Reads `manifest.json`, `manifest.sig` (when there is one) and the
    /// payload member's header. Reads at most the manifest bound and three
    /// headers.
    pub fn open(mut reader: R) -> Result<OpenBundle<R>, BundleError> {
        let first = layout::next_member(&mut reader, MANIFEST_MEMBER)?.ok_or_else(|| {
            BundleError::MissingMember {
                expected: MANIFEST_MEMBER.into(),
            }
        })?;
        if first.name != MANIFEST_MEMBER {
            return Err(BundleError::UnexpectedMember {
                found: first.name,
                expected: format!("{MANIFEST_MEMBER} (the first member)"),
            });
        }
        if first.size > MAX_MANIFEST_BYTES {
            return Err(BundleError::ManifestTooLarge {
                size: first.size,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let manifest_bytes = layout::read_small(&mut reader, &first)?;
        let payload_expected = "the payload";
        let second = layout::next_member(&mut reader, SIGNATURE_MEMBER)?.ok_or_else(|| {
            BundleError::MissingMember {
                expected: payload_expected.into(),
            }
        })?;
        let (signature, payload) = if second.name == SIGNATURE_MEMBER {
            if second.size != SIGNATURE_LENGTH as u64 {
                return Err(BundleError::Malformed {
                    member: SIGNATURE_MEMBER.into(),
                    reason: format!(
                        "{} bytes; an ed25519 signature is {SIGNATURE_LENGTH}",
                        second.size
                    ),
                });
            }
            let bytes = layout::read_small(&mut reader, &second)?;
            let signature = Signature::from_slice(&bytes).map_err(|e| BundleError::Malformed {
                member: SIGNATURE_MEMBER.into(),
                reason: e.to_string(),
            })?;
            let payload = layout::next_member(&mut reader, payload_expected)?.ok_or_else(|| {
                BundleError::MissingMember {
                    expected: payload_expected.into(),
                }
            })?;
            (Some(signature), payload)
        } else {
            (None, second)
        };
        if payload.name == MANIFEST_MEMBER || payload.name == SIGNATURE_MEMBER {
            return Err(BundleError::UnexpectedMember {
                found: payload.name,
                expected: payload_expected.into(),
            });
        }
        Ok(OpenBundle {
            reader,
            manifest_bytes,
            signature,
            payload,
        })
    }

    /// The exact bytes of `manifest.json`.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// Whether the bundle has a signature (not whether it holds).
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// The payload member's name and size, as its tar header says.
    pub fn payload_member(&self) -> (&str, u64) {
        (&self.payload.name, self.payload.size)
    }

    /// The manifest as written, checked against no key: for `inspect` and
    /// for signing. Never act on it.
    pub fn unverified_manifest(&self) -> Result<Manifest, BundleError> {
        Manifest::from_slice(&self.manifest_bytes)
    }

    /// Checks the signature against `policy.trusted`, then the manifest
    /// against `policy`, then the payload member against the manifest. No
    /// payload byte is read.
    pub fn check(self, policy: &Policy) -> Result<CheckedBundle<R>, BundleError> {
        let signature = self.signature.ok_or(BundleError::Unsigned)?;
        if policy.trusted.is_empty() {
            return Err(BundleError::NoTrustedKeys);
        }
        let Some(key) = policy.trusted.iter().find(|k| {
            nasvisor_signing::verify(k, SIGNATURE_DOMAIN, &self.manifest_bytes, &signature)
        }) else {
            let claimed = Manifest::claimed_signer(&self.manifest_bytes);
            return Err(match claimed {
                Some(id) if policy.trusted.iter().any(|k| key_id(k) == id) => {
                    BundleError::BadSignature { key_id: id }
                }
                claimed => BundleError::UntrustedSigner {
                    key_id: claimed.unwrap_or_else(|| "unknown".into()),
                },
            });
        };
        let signer = key_id(key);
        let manifest = Manifest::from_slice(&self.manifest_bytes)?;
        if manifest.signer.as_deref() != Some(signer.as_str()) {
            return Err(BundleError::invalid(
                "manifest.signer",
                format!(
                    "names {}, but the bundle is signed by key {signer}",
                    manifest.signer.as_deref().unwrap_or("no key")
                ),
            ));
        }
        policy.check_manifest(&manifest)?;
        check_payload_member(&manifest, &self.payload)?;
        tracing::debug!(
            version = %manifest.version,
            class = %manifest.class,
            signer = %signer,
            "bundle manifest verified; streaming the payload"
        );
        Ok(CheckedBundle {
            reader: self.reader,
            manifest,
            signer,
        })
    }

    /// The payload checked against the unverified manifest only (its
    /// member, size and digest, and the end of the archive): for signing,
    /// which vouches only for a consistent bundle.
    pub(crate) fn unverified_payload(
        self,
        manifest: &Manifest,
    ) -> Result<UnverifiedPayload<R>, BundleError> {
        check_payload_member(manifest, &self.payload)?;
        Ok(UnverifiedPayload {
            reader: PayloadReader::new(self.reader, manifest.payload.size),
            size: manifest.payload.size,
        })
    }
}

/// The payload member must be the one the manifest names, with its size.
fn check_payload_member(manifest: &Manifest, member: &Member) -> Result<(), BundleError> {
    if member.name != manifest.payload.name {
        return Err(BundleError::PayloadMismatch {
            field: "name",
            manifest: format!("{:?}", manifest.payload.name),
            member: format!("{:?}", member.name),
        });
    }
    if member.size != manifest.payload.size {
        return Err(BundleError::PayloadMismatch {
            field: "size",
            manifest: manifest.payload.size.to_string(),
            member: member.size.to_string(),
        });
    }
    Ok(())
}

/// A payload read for signing: hashed as it goes.
pub(crate) struct UnverifiedPayload<R> {
    pub(crate) reader: PayloadReader<R>,
    pub(crate) size: u64,
}

impl<R: Read> UnverifiedPayload<R> {
    /// Checks the digest, the padding and the end of the archive.
    pub(crate) fn finish(self, signed_sha256: &str) -> Result<(), BundleError> {
        let mut rest = self.reader.finish(signed_sha256)?;
        layout::skip_padding(&mut rest, self.size, "the payload's padding")?;
        layout::check_end(&mut rest)
    }
}

/// A bundle whose signature and manifest passed every check; its payload
/// is not read yet.
#[derive(Debug)]
pub struct CheckedBundle<R> {
    reader: R,
    manifest: Manifest,
    signer: String,
}

impl<R: Read> CheckedBundle<R> {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The key id of the trusted key that signed it.
    pub fn signer(&self) -> &str {
        &self.signer
    }

    /// Streams the payload into `sink`, hashing as it goes, then checks the
    /// size, the digest and the end of the archive. Commits the sink and
    /// returns its output only when all hold; discards it otherwise.
    pub fn stream_payload<S: PayloadSink>(
        self,
        mut sink: S,
    ) -> Result<Verified<S::Output>, BundleError> {
        let CheckedBundle {
            reader,
            manifest,
            signer,
        } = self;
        if let Err(e) = pump(reader, &manifest, &mut sink) {
            sink.discard();
            tracing::debug!(version = %manifest.version, error = %e, "bundle payload refused; the sink was discarded");
            return Err(e);
        }
        let output = sink
            .commit()
            .map_err(|source| BundleError::Sink { source })?;
        tracing::info!(
            version = %manifest.version,
            class = %manifest.class,
            signer = %signer,
            bytes = manifest.payload.size,
            "bundle verified"
        );
        Ok(Verified {
            manifest,
            signer,
            output,
        })
    }
}

/// Copies the payload into the sink and checks everything after it.
fn pump<R: Read, S: PayloadSink>(
    reader: R,
    manifest: &Manifest,
    sink: &mut S,
) -> Result<(), BundleError> {
    let size = manifest.payload.size;
    let mut payload = PayloadReader::new(reader, size);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match payload.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::io("cannot read the payload")(e)),
        };
        sink.write_all(&buf[..n])
            .map_err(|source| BundleError::Sink { source })?;
    }
    sink.flush()
        .map_err(|source| BundleError::Sink { source })?;
    UnverifiedPayload {
        reader: payload,
        size,
    }
    .finish(&manifest.payload.sha256)
}

/// A payload that passed every check, and what its sink gave back on
/// commit. Only [`CheckedBundle::stream_payload`] makes one.
#[derive(Debug)]
#[must_use = "a verified payload is the reason to verify"]
pub struct Verified<T> {
    manifest: Manifest,
    signer: String,
    output: T,
}

impl<T> Verified<T> {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The key id of the trusted key that signed it.
    pub fn signer(&self) -> &str {
        &self.signer
    }

    /// What the committed sink gave back.
    pub fn output(&self) -> &T {
        &self.output
    }

    /// The manifest, the signer and the sink's output.
    pub fn into_parts(self) -> (Manifest, String, T) {
        (self.manifest, self.signer, self.output)
    }
}

/// Verifies a bundle from `reader` into `sink`: open, check, stream.
pub fn verify<R: Read, S: PayloadSink>(
    reader: R,
    policy: &Policy,
    sink: S,
) -> Result<Verified<S::Output>, BundleError> {
    OpenBundle::open(reader)?
        .check(policy)?
        .stream_payload(sink)
}

/// Opens a bundle file for reading, buffered.
pub fn open_file(
    path: &Path,
) -> Result<OpenBundle<std::io::BufReader<std::fs::File>>, BundleError> {
    let file = std::fs::File::open(path)
        .map_err(BundleError::io(format!("cannot open {}", path.display())))?;
    OpenBundle::open(std::io::BufReader::with_capacity(CHUNK, file))
}

/// Verifies a bundle file into `sink`.
pub fn verify_file<S: PayloadSink>(
    path: &Path,
    policy: &Policy,
    sink: S,
) -> Result<Verified<S::Output>, BundleError> {
    open_file(path)?.check(policy)?.stream_payload(sink)
}
