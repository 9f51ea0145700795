//! Building and signing bundles (the vendor's side).
//!
//! Both write the new bundle to a temporary file beside the output and
//! rename it into place only once every byte was written and checked: a
//! failed build or sign leaves no bundle behind, and signing in place
//! replaces the old file atomically.

use crate::error::BundleError;
use crate::layout::{self, PayloadReader};
use crate::manifest::{Class, Manifest, Payload, FORMAT, MANIFEST_MEMBER, SIGNATURE_MEMBER};
use crate::verify::{open_file, SIGNATURE_DOMAIN};
use nasvisor_signing::{key_id, SigningKey, SIGNATURE_LENGTH};
use semver::Version;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use time::OffsetDateTime;

/// What a bundle is built from, besides its payload file.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub product: String,
    pub compatible: Vec<String>,
    pub version: Version,
    /// The rollback floor; the bundle's own version when `None` (no
    /// downgrade below this release once it is installed).
    pub min_version: Option<Version>,
    pub class: Class,
    pub created: OffsetDateTime,
    pub expires: OffsetDateTime,
    /// The payload member's name; the payload file's name when `None`.
    pub payload_name: Option<String>,
}

/// Builds a bundle of `payload` at `out`, signed with `key` when given.
/// Returns its manifest.
pub fn build(
    spec: &BuildSpec,
    payload: &Path,
    key: Option<&SigningKey>,
    out: &Path,
) -> Result<Manifest, BundleError> {
    let (size, sha256) = hash_file(payload)?;
    let name = match &spec.payload_name {
        Some(n) => n.clone(),
        None => payload
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| BundleError::invalid("payload", "the path names no file"))?,
    };
    let mut manifest = Manifest {
        format: FORMAT,
        product: spec.product.clone(),
        compatible: spec.compatible.clone(),
        version: spec.version.clone(),
        min_version: spec
            .min_version
            .clone()
            .unwrap_or_else(|| spec.version.clone()),
        class: spec.class,
        created: truncate_to_seconds(spec.created),
        expires: truncate_to_seconds(spec.expires),
        payload: Payload { name, size, sha256 },
        signer: None,
    };
    manifest.signer = key.map(|k| key_id(&k.verifying_key()));
    manifest.validate()?;
    let file = std::fs::File::open(payload).map_err(BundleError::io(format!(
        "cannot open {}",
        payload.display()
    )))?;
    let mut data = PayloadReader::new(file, size);
    let tmp = write_bundle(out, &manifest, key, &mut data)?;
    data.finish(&manifest.payload.sha256).map_err(|e| match e {
        BundleError::PayloadTruncated { .. } | BundleError::PayloadTampered { .. } => {
            BundleError::invalid(
                "payload",
                format!("{} changed while the bundle was built", payload.display()),
            )
        }
        e => e,
    })?;
    persist(tmp, out)?;
    tracing::info!(
        out = %out.display(),
        version = %manifest.version,
        class = %manifest.class,
        signer = manifest.signer.as_deref().unwrap_or("none"),
        "bundle built"
    );
    Ok(manifest)
}

/// Signs the bundle at `bundle` with `key` and writes it to `out` (which
/// may be `bundle` itself), with a new expiry when given. The payload is
/// checked against the manifest as it is copied: a bundle whose payload is
/// not the one its manifest describes is not signed. An existing signature
/// is replaced. Returns the signed manifest.
pub fn sign(
    bundle: &Path,
    key: &SigningKey,
    expires: Option<OffsetDateTime>,
    out: &Path,
) -> Result<Manifest, BundleError> {
    let open = open_file(bundle)?;
    let mut manifest = open.unverified_manifest()?;
    manifest.signer = Some(key_id(&key.verifying_key()));
    if let Some(expires) = expires {
        manifest.expires = truncate_to_seconds(expires);
    }
    manifest.validate()?;
    let mut payload = open.unverified_payload(&manifest)?;
    let tmp = write_bundle(out, &manifest, Some(key), &mut payload.reader)?;
    payload.finish(&manifest.payload.sha256)?;
    persist(tmp, out)?;
    tracing::info!(
        bundle = %bundle.display(),
        out = %out.display(),
        version = %manifest.version,
        signer = manifest.signer.as_deref().unwrap_or("none"),
        "bundle signed"
    );
    Ok(manifest)
}

/// The size and SHA-256 of a file, streamed.
fn hash_file(path: &Path) -> Result<(u64, String), BundleError> {
    let mut file = std::fs::File::open(path)
        .map_err(BundleError::io(format!("cannot open {}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(BundleError::io(format!("cannot read {}", path.display())))?;
    if !meta.is_file() {
        return Err(BundleError::invalid(
            "payload",
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut hashing = PayloadReader::new(&mut file, u64::MAX);
    let size = std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(BundleError::io(format!("cannot read {}", path.display())))?;
    Ok((size, hashing.digest()))
}

/// Writes the members to a temporary file beside `out`; the caller checks
/// the payload's digest, then persists it.
fn write_bundle<R: Read>(
    out: &Path,
    manifest: &Manifest,
    key: Option<&SigningKey>,
    payload: &mut PayloadReader<R>,
) -> Result<tempfile::NamedTempFile, BundleError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let writing = BundleError::io(format!("cannot write {}", out.display()));
    let tmp = tempfile::Builder::new()
        .prefix(".nvfw.")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(BundleError::io(format!(
            "cannot create a file in {}",
            dir.display()
        )))?;
    // A bundle is no secret: readable like any download.
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(BundleError::io(format!("cannot write {}", out.display())))?;
    }
    let manifest_bytes = manifest.to_bytes();
    let mtime = u64::try_from(manifest.created.unix_timestamp()).unwrap_or(0);
    let result = (|| {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(256 * 1024, tmp.as_file()));
        layout::append(
            &mut builder,
            MANIFEST_MEMBER,
            manifest_bytes.len() as u64,
            mtime,
            &manifest_bytes[..],
        )?;
        if let Some(key) = key {
            let sig = nasvisor_signing::sign(key, SIGNATURE_DOMAIN, &manifest_bytes).to_bytes();
            layout::append(
                &mut builder,
                SIGNATURE_MEMBER,
                SIGNATURE_LENGTH as u64,
                mtime,
                &sig[..],
            )?;
        }
        layout::append(
            &mut builder,
            &manifest.payload.name,
            manifest.payload.size,
            mtime,
            &mut *payload,
        )?;
        let mut w = builder.into_inner()?;
        w.flush()?;
        w.get_ref().sync_all()
    })();
    result.map_err(writing)?;
    Ok(tmp)
}

fn persist(tmp: tempfile::NamedTempFile, out: &Path) -> Result<(), BundleError> {
    tmp.persist(out)
        .map_err(|e| BundleError::Io {
            context: format!("cannot write {}", out.display()),
            source: e.error,
        })
        .map(drop)
}

/// Manifests hold whole seconds, in UTC.
fn truncate_to_seconds(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0).unwrap_or(t)
}
