//! nasvisor's signed firmware update bundles.
//!
//! A bundle (`.nvfw`) is a POSIX (ustar) tar archive of exactly these
//! members, in this order:
//!
//! 1. `manifest.json`: the [`Manifest`] (product, compatible boards,
//!    version, rollback floor, class, creation and expiry, the payload's
//!    name, size and SHA-256, the signer's key id), at most
//!    [`MAX_MANIFEST_BYTES`];
//! 2. `manifest.sig`: 64 bytes, the ed25519 signature of
//!    [`SIGNATURE_DOMAIN`] followed by the exact bytes of `manifest.json`,
//!    by a vendor key (`nasvisor-signing`, the keys plugins are signed
//!    with); absent in an unsigned bundle, which no verifier accepts;
//! 3. the payload: a root slot image (`reboot` class) or a tar of
//!    nasvisord and its plugins (`service` class);
//!
//! then the end-of-archive marker. Nothing else: no other member, no data
//! after the end.
//!
//! Verification ([`verify`], or [`OpenBundle`] step by step) checks the
//! signature and every field against a [`Policy`] before it reads a byte
//! of the payload, then streams the payload into a [`PayloadSink`],
//! hashing as it goes, and commits the sink only when the size and digest
//! match: the caller gets a [`Verified`] token or an error, never a
//! payload of unknown worth. [`build`] and [`sign`] are the vendor's side.
//! docs/firmware.md describes the format, the checks and their order.
//!
//! On the appliance, [`SlotSet`] reads the A/B slots and the boot
//! entries, [`SlotSet::install`] installs a `reboot` bundle into the
//! inactive slot, [`SlotSet::reconcile`] judges it after the reboot, and
//! [`State`] keeps the rollback floor, the clock floor and the outcome.

mod build;
mod error;
mod install;
mod layout;
mod manifest;
mod policy;
mod secureboot;
mod service;
mod sink;
mod slots;
mod state;
mod verify;
mod watchdog;

pub use build::{build, sign, BuildSpec};
pub use error::BundleError;
pub use install::{
    InstallError, Installed, Phase, Progress, ProgressFn, Reconciled, SlotSink, BUNDLE_HEAD_BYTES,
};
pub use manifest::{rfc3339, Class, Manifest, Payload, FORMAT, MAX_MANIFEST_BYTES};
pub use policy::{next_floor, Policy};
pub use secureboot::{check_image, secure_boot, x509_certificates, SecureBoot};
pub use service::{
    unpack as unpack_service_payload, Launch, ServiceState, Staged, Trial, SERVICE_CLI,
    SERVICE_DAEMON, SERVICE_PLUGINS,
};
pub use sink::{DigestOnly, FileSink, PayloadSink};
pub use slots::{
    Counter, Entry, FirmwareStatus, Slot, SlotConfig, SlotError, SlotSet, SlotState, SlotStatus,
    EFIVARS,
};
pub use state::{
    write_atomic, Outcome, OutcomeKind, PendingUpdate, State, StateError, STATE_FORMAT,
};
pub use verify::{
    open_file, verify, verify_file, CheckedBundle, OpenBundle, Verified, SIGNATURE_DOMAIN,
};
pub use watchdog::{hardware_watchdogs, HardwareWatchdog, WATCHDOG_CLASS};
