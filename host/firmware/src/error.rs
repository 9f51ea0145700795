//! Why a bundle was refused, or could not be built or signed. Each refusal
//! is its own variant, and its message names the field or member and the
//! reason; [`BundleError::code`] gives a short stable name for each, for
//! logs, job outcomes and metrics.

/// A refusal of a bundle, or a failure to build or sign one.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read or written.
    #[error("{context}")]
    Io {
        /// What was being read or written, and which file.
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The bundle ends before `what` is complete.
    #[error("truncated bundle: it ends inside {what}")]
    Truncated { what: String },
    /// The bundle ends where a member belongs.
    #[error("malformed bundle: it ends where {expected} belongs")]
    MissingMember { expected: String },
    /// The bytes are not a bundle's tar layout.
    #[error("malformed bundle: {member}: {reason}")]
    Malformed { member: String, reason: String },
    /// A member stands where another one belongs (or where the bundle
    /// must end).
    #[error("malformed bundle: member {found:?} where {expected} belongs")]
    UnexpectedMember { found: String, expected: String },
    /// The manifest member is larger than any manifest may be; it is not
    /// read.
    #[error(
        "malformed bundle: manifest.json is {size} bytes, more than the {max} a manifest may have"
    )]
    ManifestTooLarge { size: u64, max: u64 },
    /// The bundle has no signature.
    #[error("unsigned bundle: it has no manifest.sig (sign it with `nasvisor firmware sign`)")]
    Unsigned,
    /// No key is trusted, so no bundle can be.
    #[error("no trusted keys: the trusted-key set is empty, so no bundle can be verified")]
    NoTrustedKeys,
    /// No trusted key made this signature.
    #[error("untrusted signer: the bundle is signed by key {key_id}, which is not among the trusted keys")]
    UntrustedSigner {
        /// The key id the manifest names (unverified), or `unknown`.
        key_id: String,
    },
    /// The manifest names a trusted key, but the signature does not verify
    /// with it: the manifest was changed after it was signed.
    #[error("tampered manifest: the signature does not verify with trusted key {key_id} (the manifest was changed after signing)")]
    BadSignature { key_id: String },
    /// A manifest format this build does not read.
    #[error("unsupported bundle format {found}: this build reads format {supported}")]
    UnsupportedFormat { found: String, supported: u32 },
    /// A field of the manifest (or of what a bundle is built from) is
    /// invalid. `field` is a dotted path such as `manifest.payload.sha256`.
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// The bundle is for another product.
    #[error("wrong product: the bundle is for {bundle:?}, this is {expected:?}")]
    WrongProduct { bundle: String, expected: String },
    /// The bundle is for other boards.
    #[error("incompatible board: the bundle is for {}, not {board:?}", compatible.join(", "))]
    IncompatibleBoard {
        board: String,
        compatible: Vec<String>,
    },
    /// The bundle's expiry has passed.
    #[error("expired bundle: it expired at {expires} (now {now})")]
    Expired { expires: String, now: String },
    /// The bundle's version is below the appliance's rollback floor.
    #[error("downgrade below the minimum: version {version} is below {floor}, the lowest version this appliance may install")]
    BelowRollbackFloor { version: String, floor: String },
    /// The bundle's version is below the installed one, and downgrades were
    /// not allowed.
    #[error("downgrade: version {version} is below the installed {installed} (allow it explicitly to go back)")]
    Downgrade { version: String, installed: String },
    /// The payload member differs from what the manifest says it is.
    #[error("payload member: the manifest says payload.{field} is {manifest}, the bundle's member has {member}")]
    PayloadMismatch {
        field: &'static str,
        manifest: String,
        member: String,
    },
    /// The payload ends before its signed size.
    #[error("truncated payload: {got} of its {size} signed bytes")]
    PayloadTruncated { size: u64, got: u64 },
    /// The payload's bytes are not the signed ones.
    #[error("tampered payload: its sha256 is {actual}, the signed one is {signed}")]
    PayloadTampered { signed: String, actual: String },
    /// Something follows the payload other than the end of the archive.
    #[error("trailing data after the payload: {reason}")]
    TrailingData { reason: String },
    /// The sink the payload streams into failed.
    #[error("writing the payload")]
    Sink {
        #[source]
        source: std::io::Error,
    },
    /// A key file could not be read.
    #[error(transparent)]
    Key(#[from] nasvisor_signing::KeyError),
}

impl BundleError {
    /// A short stable name of the refusal, for logs, job outcomes and
    /// metrics.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Io { .. } => "io",
            BundleError::Truncated { .. } => "truncated",
            BundleError::Malformed { .. }
            | BundleError::MissingMember { .. }
            | BundleError::UnexpectedMember { .. } => "malformed",
            BundleError::ManifestTooLarge { .. } => "manifest-too-large",
            BundleError::Unsigned => "unsigned",
            BundleError::NoTrustedKeys => "no-trusted-keys",
            BundleError::UntrustedSigner { .. } => "untrusted-signer",
            BundleError::BadSignature { .. } => "tampered-manifest",
            BundleError::UnsupportedFormat { .. } => "unsupported-format",
            BundleError::InvalidField { .. } => "invalid-field",
            BundleError::WrongProduct { .. } => "wrong-product",
            BundleError::IncompatibleBoard { .. } => "incompatible-board",
            BundleError::Expired { .. } => "expired",
            BundleError::BelowRollbackFloor { .. } => "below-rollback-floor",
            BundleError::Downgrade { .. } => "downgrade",
            BundleError::PayloadMismatch { .. } => "payload-mismatch",
            BundleError::PayloadTruncated { .. } => "truncated",
            BundleError::PayloadTampered { .. } => "tampered-payload",
            BundleError::TrailingData { .. } => "trailing-data",
            BundleError::Sink { .. } => "sink",
            BundleError::Key(_) => "key",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> BundleError {
        BundleError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BundleError {
        let context = context.into();
        move |source| BundleError::Io { context, source }
    }
}
