//! `nasvisor firmware ...`: build, sign, verify and inspect update bundles.
//! These four work locally, on files; the format and the checks are
//! `nasvisor-firmware`'s (docs/firmware.md). `install` and `status` talk to
//! a host (`api::firmware`).

use crate::api::client::CliError;
use crate::api::render::{cell, Out, Render};
use crate::api::table;
use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use nasvisor_firmware::{
    open_file, rfc3339, BuildSpec, Class, DigestOnly, FileSink, Manifest, Policy,
};
use nasvisor_signing::{read_public_keys_in, read_signing_key};
use semver::Version;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use time::OffsetDateTime;

/// How long a bundle stays installable when the build names no expiry.
const DEFAULT_EXPIRY: &str = "180d";

#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Build an update bundle from a payload: a root slot image (class
    /// reboot) or a tar of nasvisord and its plugins (class service);
    /// signed with --key, else unsigned (sign it later).
    Build(BuildArgs),
    /// Sign a bundle with a vendor key (a `nasvisor plugin keygen` key),
    /// replacing any signature; optionally with a new expiry.
    Sign {
        /// The bundle.
        bundle: PathBuf,
        /// The secret key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signed bundle (default: in place).
        /// Long form only: `-o` is the global --output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// Verify a bundle as an appliance would: signature by a trusted key,
    /// product, board, expiry, version, then the payload's size and
    /// sha256. Exits 1 with the reason when it is refused.
    Verify(VerifyArgs),
    /// Show a bundle's manifest, signer and payload, without verifying it.
    Inspect {
        /// The bundle.
        bundle: PathBuf,
    },
    /// Install a bundle on the host (over the API, admins only): streamed
    /// to it, verified whole, written into its inactive slot and made the
    /// next boot (a job). The booted slot is never touched.
    Install {
        /// The bundle.
        bundle: PathBuf,
        /// Follow the install job until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// The host's firmware slots (state, version), its rollback and clock
    /// floors, the pending update and how the last one ended (over the
    /// API).
    Status,
    /// Reboot the host with its reboot command (over the API, admins
    /// only), e.g. into a slot just installed. Refused while VMs run on
    /// it, unless --force.
    Reboot {
        /// Shut the VMs running on the host down first (ACPI, forced off
        /// after --shutdown-timeout), as a job; they start again when
        /// nasvisord is back after the boot.
        #[arg(long)]
        force: bool,
        /// With --force: seconds each guest has to power off before it is
        /// forced off (1-3600, default 180).
        #[arg(long, value_name = "SECONDS", requires = "force")]
        shutdown_timeout: Option<u32>,
        /// With --force: follow the job until the reboot command ran.
        #[arg(long, requires = "force")]
        wait: bool,
    },
}

/// `firmware build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The payload file.
    #[arg(long)]
    payload: PathBuf,
    /// What the update replaces: reboot (a root slot) or service
    /// (nasvisord and plugins).
    #[arg(long)]
    class: Class,
    /// The product the bundle is for.
    #[arg(long)]
    product: String,
    /// A board the bundle runs on; repeatable.
    #[arg(long = "compatible", required = true)]
    compatible: Vec<String>,
    /// The version the bundle installs (semver).
    #[arg(long)]
    version: Version,
    /// The rollback floor: once installed, nothing older may be
    /// (default: --version).
    #[arg(long)]
    min_version: Option<Version>,
    #[command(flatten)]
    expiry: Expiry,
    /// The payload member's name in the bundle (default: the payload's
    /// file name).
    #[arg(long)]
    payload_name: Option<String>,
    /// Sign with this secret key (PKCS#8 PEM); unsigned without it.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The bundle to write. Long form only: `-o` is the global --output.
    #[arg(long)]
    out: PathBuf,
}

/// When a bundle expires.
#[derive(Debug, Args)]
pub struct Expiry {
    /// Expire this long after the creation time (e.g. 180d, 12w, 1y).
    /// The default of a build is 180d.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "expires_at")]
    expires_in: Option<std::time::Duration>,
    /// Expire at this time (RFC 3339, e.g. 2027-01-01T00:00:00Z).
    #[arg(long, value_parser = parse_rfc3339)]
    expires_at: Option<OffsetDateTime>,
}

impl Expiry {
    /// The expiry, counted from `created`; `None` when none was given.
    fn at(&self, created: OffsetDateTime) -> Result<Option<OffsetDateTime>> {
        if let Some(t) = self.expires_at {
            return Ok(Some(t));
        }
        let Some(d) = self.expires_in else {
            return Ok(None);
        };
        let d = time::Duration::try_from(d).map_err(|e| anyhow!("--expires-in: {e}"))?;
        created
            .checked_add(d)
            .map(Some)
            .ok_or_else(|| anyhow!("--expires-in: too far in the future"))
    }
}

/// `firmware verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle.
    bundle: PathBuf,
    /// The directory of trusted public keys (*.pub).
    #[arg(long)]
    trusted_keys: PathBuf,
    /// This product: refuse a bundle for another.
    #[arg(long)]
    product: Option<String>,
    /// This board: refuse a bundle that does not name it.
    #[arg(long)]
    compatible: Option<String>,
    /// The installed version: refuse an older bundle (unless
    /// --allow-downgrade).
    #[arg(long)]
    installed_version: Option<Version>,
    /// The rollback floor (the highest min-version installed so far):
    /// refuse an older bundle, always.
    #[arg(long)]
    rollback_floor: Option<Version>,
    /// Accept a version below --installed-version (never below the floor).
    #[arg(long)]
    allow_downgrade: bool,
    /// Judge the expiry at this time instead of now (RFC 3339).
    #[arg(long, value_parser = parse_rfc3339)]
    at: Option<OffsetDateTime>,
    /// Write the verified payload to this file (only once every check
    /// passed; nothing is left on a refusal).
    #[arg(long)]
    extract: Option<PathBuf>,
}

fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// What `build`, `sign` and `verify` answer: the bundle and its manifest.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct BundleView {
    bundle: PathBuf,
    /// Whether the signature was verified against trusted keys (`verify`)
    /// rather than only written (`build`, `sign`) or read (`inspect`).
    verified: bool,
    manifest: Manifest,
    /// `verify --extract`: where the payload was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    extracted: Option<PathBuf>,
}

/// What `inspect` answers: the manifest as written, unverified.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct InspectView {
    bundle: PathBuf,
    signed: bool,
    manifest: Manifest,
}

impl Render for InspectView {
    const COLUMNS: &'static [&'static str] =
        &["product", "version", "class", "signer", "payload", "size"];

    fn row(&self) -> Vec<String> {
        let m = &self.manifest;
        vec![
            cell(&m.product),
            cell(&m.version.to_string()),
            cell(&m.class.to_string()),
            cell(&m.signer),
            cell(&m.payload.name),
            cell(&m.payload.size),
        ]
    }

    fn show(&self) -> String {
        let m = &self.manifest;
        let signer = match (&m.signer, self.signed) {
            (Some(id), true) => format!("{id} (not verified; use `firmware verify`)"),
            (_, false) => "unsigned".to_string(),
            (None, true) => "a signature, but the manifest names no signer".to_string(),
        };
        table::fields(&[
            ("bundle", self.bundle.display().to_string()),
            ("format", m.format.to_string()),
            ("product", m.product.clone()),
            ("compatible", m.compatible.join(", ")),
            ("version", m.version.to_string()),
            ("min-version", m.min_version.to_string()),
            ("class", m.class.to_string()),
            ("created", rfc3339(m.created)),
            ("expires", rfc3339(m.expires)),
            ("signer", signer),
            ("payload", m.payload.name.clone()),
            ("payload size", format!("{} bytes", m.payload.size)),
            ("payload sha256", m.payload.sha256.clone()),
        ])
    }
}

/// The creation time of a build: `SOURCE_DATE_EPOCH` when set (a
/// reproducible build), else now.
fn created() -> Result<OffsetDateTime> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => {
            let secs: i64 = s
                .trim()
                .parse()
                .map_err(|_| anyhow!("SOURCE_DATE_EPOCH {s:?} is not a number of seconds"))?;
            OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|e| anyhow!("SOURCE_DATE_EPOCH {s:?}: {e}"))
        }
        Err(_) => Ok(OffsetDateTime::now_utc()),
    }
}

fn signer_text(m: &Manifest) -> String {
    match &m.signer {
        Some(id) => format!("signed by {id}"),
        None => "unsigned".into(),
    }
}

/// Runs a command; errors print as one line on stderr, exit 1.
pub fn run(cmd: FirmwareCommand, out: Out) -> ExitCode {
    crate::api::exit(run_inner(cmd, out).map_err(|e| CliError::msg(format!("{e:#}"))))
}

fn run_inner(cmd: FirmwareCommand, out: Out) -> Result<()> {
    match cmd {
        FirmwareCommand::Install { .. }
        | FirmwareCommand::Status
        | FirmwareCommand::Reboot { .. } => Err(anyhow!(
            "firmware install, status and reboot talk to a host: main dispatches them to the API"
        )),
        FirmwareCommand::Build(a) => build(a, out),
        FirmwareCommand::Sign {
            bundle,
            key,
            out: dest,
            expiry,
        } => {
            let key = read_signing_key(&key)?;
            let dest = dest.unwrap_or_else(|| bundle.clone());
            let expires = expiry.at(created()?)?;
            let manifest = nasvisor_firmware::sign(&bundle, &key, expires, &dest)?;
            let view = BundleView {
                bundle: dest,
                verified: false,
                manifest,
                extracted: None,
            };
            out.done(&view, |v| {
                format!(
                    "signed {} {} ({}) with key {} -> {}",
                    v.manifest.product,
                    v.manifest.version,
                    v.manifest.class,
                    v.manifest.signer.as_deref().unwrap_or("-"),
                    v.bundle.display()
                )
            });
            Ok(())
        }
        FirmwareCommand::Verify(a) => verify(a, out),
        FirmwareCommand::Inspect { bundle } => {
            let open = open_file(&bundle)?;
            let view = InspectView {
                signed: open.is_signed(),
                manifest: open.unverified_manifest()?,
                bundle,
            };
            out.show(&view);
            Ok(())
        }
    }
}

fn build(a: BuildArgs, out: Out) -> Result<()> {
    let key = a.key.as_deref().map(read_signing_key).transpose()?;
    let created = created()?;
    let expires = match a.expiry.at(created)? {
        Some(t) => t,
        None => {
            let d = humantime::parse_duration(DEFAULT_EXPIRY).context("the default expiry")?;
            created + time::Duration::try_from(d)?
        }
    };
    let spec = BuildSpec {
        product: a.product,
        compatible: a.compatible,
        version: a.version,
        min_version: a.min_version,
        class: a.class,
        created,
        expires,
        payload_name: a.payload_name,
    };
    let manifest = nasvisor_firmware::build(&spec, &a.payload, key.as_ref(), &a.out)?;
    let view = BundleView {
        bundle: a.out,
        verified: false,
        manifest,
        extracted: None,
    };
    out.done(&view, |v| {
        format!(
            "built {} {} ({}, {} bytes of payload, expires {}, {}) -> {}",
            v.manifest.product,
            v.manifest.version,
            v.manifest.class,
            v.manifest.payload.size,
            rfc3339(v.manifest.expires),
            signer_text(&v.manifest),
            v.bundle.display()
        )
    });
    Ok(())
}

fn verify(a: VerifyArgs, out: Out) -> Result<()> {
    let trusted = read_public_keys_in(&a.trusted_keys).context("--trusted-keys")?;
    let mut policy = Policy::new(trusted.into_iter().map(|t| t.key).collect());
    policy.product = a.product;
    policy.board = a.compatible;
    policy.installed = a.installed_version;
    policy.floor = a.rollback_floor;
    policy.allow_downgrade = a.allow_downgrade;
    if let Some(at) = a.at {
        policy.now = at;
    }
    let checked = open_file(&a.bundle)?.check(&policy)?;
    let (manifest, extracted) = match &a.extract {
        Some(dest) => {
            let sink =
                FileSink::create(dest).with_context(|| format!("--extract {}", dest.display()))?;
            let (m, _, path) = checked.stream_payload(sink)?.into_parts();
            (m, Some(path))
        }
        None => {
            let (m, _, ()) = checked.stream_payload(DigestOnly)?.into_parts();
            (m, None)
        }
    };
    let unchecked = unchecked_note(&policy);
    let view = BundleView {
        bundle: a.bundle,
        verified: true,
        manifest,
        extracted,
    };
    out.done(&view, |v| {
        let mut line = format!(
            "ok: {} {} ({}) {}, expires {}",
            v.manifest.product,
            v.manifest.version,
            v.manifest.class,
            signer_text(&v.manifest),
            rfc3339(v.manifest.expires)
        );
        if let Some(p) = &v.extracted {
            line.push_str(&format!("; payload written to {}", p.display()));
        }
        if !unchecked.is_empty() {
            line.push_str(&format!("; not checked: {unchecked}"));
        }
        line
    });
    Ok(())
}

/// What a verify without the appliance's facts did not check.
fn unchecked_note(p: &Policy) -> String {
    let mut not = Vec::new();
    if p.product.is_none() {
        not.push("product (--product)");
    }
    if p.board.is_none() {
        not.push("board (--compatible)");
    }
    if p.installed.is_none() {
        not.push("downgrade (--installed-version)");
    }
    not.join(", ")
}
