//! Installing a `reboot` bundle into the inactive slot, and judging it
//! after the reboot ([`SlotSet::reconcile`]).
//!
//! [`SlotSet::install`], in this order, stopping at the first failure:
//!
//! 1. **Verify, writing nothing.** The whole bundle is verified into a
//!    digest-only sink: signature, product, board, expiry (judged at the
//!    later of the clock and the stored clock floor), version (the floor is
//!    the higher of the stored rollback floor and the booted slot's
//!    version), then the payload's size and SHA-256. A bad bundle, a
//!    corrupt download or a `service` bundle leaves both slots as they
//!    were: the inactive slot may be the one to fall back to.
//! 2. **Invalidate the inactive slot:** remove its entries and its kernel
//!    and initrd from the ESP, so a half-written slot can never be booted.
//!    The booted slot and its entry are never touched.
//! 3. **Stream the payload into the slot's device** through a [`SlotSink`]
//!    (the bundle is verified again on the way: a file changed since step
//!    1 is refused), refusing a payload larger than the slot; on commit,
//!    fsync, drop the cached pages and read the slot back: its SHA-256
//!    must be the signed one.
//! 4. **Copy the slot's `/boot/vmlinuz` and `/boot/initrd.img`** to the ESP
//!    (the slot mounted read-only in a private directory, or extracted by
//!    `fsck.erofs` where it cannot be mounted), each through a temporary
//!    file, fsync and rename.
//! 5. **Only then write its entry** `nasvisor-<gen+1>-<slot>+<tries>.conf`,
//!    atomically: systemd-boot boots it next, `tries` times at most, and
//!    falls back to the booted slot when it never becomes healthy.
//!
//! On any failure the state file records the outcome with its reason; a
//! failure after step 2 leaves the slot without an entry (and without a
//! kernel).

use crate::error::BundleError;
use crate::manifest::{rfc3339, Class, Manifest};
use crate::policy::{next_floor, Policy};
use crate::sink::{DigestOnly, PayloadSink};
use crate::slots::{io_err, Counter, Entry, Slot, SlotError, SlotSet};
use crate::state::{sync_dir, Outcome, OutcomeKind, PendingUpdate, State};
use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use time::OffsetDateTime;

/// The files a `reboot` payload carries for the ESP.
const BOOT_FILES: [(&str, &str); 2] = [
    ("boot/vmlinuz", "vmlinuz"),
    ("boot/initrd.img", "initrd.img"),
];
/// A Secure Boot build's signed unified kernel image on the ESP (the slot
/// carries one per slot it may be written to: [`uki_in_slot`]).
const UKI_NAME: &str = "linux.efi";

/// Where a Secure Boot build's slot image carries its signed unified
/// kernel image for slot `target` (its command line names the slot).
fn uki_in_slot(target: Slot) -> String {
    format!("boot/nasvisor-{target}.efi")
}

/// How much is copied at a time.
const CHUNK: usize = 1024 * 1024;

/// How much of the start of a bundle [`SlotSet::precheck`] needs: the
/// largest manifest and three tar headers, the signature's block, and a
/// payload header.
pub const BUNDLE_HEAD_BYTES: usize = crate::manifest::MAX_MANIFEST_BYTES as usize + 4 * 512;

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The bundle was refused (or its payload could not be written).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The slots, the ESP or the state could not be read or written.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// A bundle of the other class where one class is installed (a
    /// `service` bundle given to the slot install, or the reverse).
    #[error(
        "wrong class: version {version} is a {class} bundle, which this install does not take"
    )]
    WrongClass {
        version: String,
        class: crate::manifest::Class,
    },
    /// Both slot devices are the same device.
    #[error("refusing to install over the booted slot: slot {target}'s device {} is the booted slot {booted}'s", device.display())]
    BootedSlot {
        target: Slot,
        booted: Slot,
        device: PathBuf,
    },
    /// The payload does not fit the slot.
    #[error("payload too large: {size} bytes, slot {slot} ({}) holds {capacity}", device.display())]
    PayloadTooLarge {
        slot: Slot,
        device: PathBuf,
        size: u64,
        capacity: u64,
    },
    /// The written slot's boot files could not be read or copied.
    #[error("boot files of slot {slot}: {reason}")]
    BootFiles { slot: Slot, reason: String },
    /// Secure Boot is on and the board's firmware would refuse the written
    /// slot's boot image (which strands the board: it does not fall back
    /// by itself), so the slot is not marked.
    #[error("slot {slot} would not boot under the board's Secure Boot: {reason}")]
    SecureBoot { slot: Slot, reason: String },
    /// Another install holds the lock.
    #[error("another firmware install is in progress ({} is locked)", lock.display())]
    Busy { lock: PathBuf },
    /// The caller cancelled the install.
    #[error("cancelled")]
    Cancelled,
}

impl InstallError {
    /// A short stable name of the failure, for the outcome and the job.
    pub fn code(&self) -> &'static str {
        match self {
            InstallError::Bundle(BundleError::Sink { source })
                if source.get_ref().is_some_and(|e| e.is::<CancelledIo>()) =>
            {
                "cancelled"
            }
            InstallError::Bundle(e) => e.code(),
            InstallError::Slot(_) => "io",
            InstallError::WrongClass { .. } => "wrong-class",
            InstallError::BootedSlot { .. } => "booted-slot",
            InstallError::PayloadTooLarge { .. } => "payload-too-large",
            InstallError::BootFiles { .. } => "boot-files",
            InstallError::SecureBoot { .. } => "secure-boot",
            InstallError::Busy { .. } => "busy",
            InstallError::Cancelled => "cancelled",
        }
    }

    /// The message with its causes, on one line.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            let m = e.to_string();
            if !s.contains(&m) {
                s.push_str(": ");
                s.push_str(&m);
            }
            cur = e.source();
        }
        s
    }
}

/// The phase an install is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Verifying the whole bundle; nothing written.
    Verifying,
    /// Writing the payload into the slot.
    Writing,
    /// Reading the slot back.
    Checking,
    /// Copying the kernel and initrd, writing the entry.
    Activating,
    Done,
}

/// Where an install is: a phase and the percent of the whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub percent: u8,
}

/// Called as an install goes; `Break` cancels it.
pub type ProgressFn<'a> = dyn FnMut(Progress) -> ControlFlow<()> + 'a;

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Installed {
    pub slot: Slot,
    pub version: String,
    pub generation: u64,
    /// The entry's file name.
    pub entry: String,
}

/// How the pending update was judged by [`SlotSet::reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Nothing pending.
    Nothing,
    /// Still pending (booted but not blessed yet, or tries left on the
    /// other slot).
    StillPending,
    Succeeded {
        slot: Slot,
        version: String,
        floor: Version,
    },
    Failed {
        slot: Slot,
        version: String,
        reason: String,
    },
}

impl SlotSet {
    /// Installs the bundle at `bundle` into the inactive slot (module
    /// documentation). `base` gives the trusted keys, the product, the
    /// board and the clock; the floor, the installed version and the
    /// clock floor come from the slots and the state. The outcome is
    /// recorded in the state file either way.
    pub fn install(
        &self,
        bundle: &Path,
        base: &Policy,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Installed, InstallError> {
        let _lock = self.lock()?;
        let mut version = None;
        let mut target = None;
        let result = self.install_locked(bundle, base, progress, &mut version, &mut target);
        match &result {
            Ok(done) => {
                tracing::info!(slot = %done.slot, version = %done.version, entry = %done.entry, "firmware installed; it boots next");
            }
            Err(e) => self.record_failure(bundle, e, version, target)?,
        }
        result
    }

    /// Records a failed install (of either class) as the last outcome.
    pub(crate) fn record_failure(
        &self,
        bundle: &Path,
        e: &InstallError,
        version: Option<String>,
        slot: Option<Slot>,
    ) -> Result<(), InstallError> {
        tracing::warn!(bundle = %bundle.display(), code = e.code(), error = %e.chain(), "firmware install failed");
        let mut state = self.state()?;
        // An update pending from an earlier install whose entry this one
        // removed (it was rewriting that slot) boots no more: it is not
        // pending any longer.
        let gone = |p: &PendingUpdate| {
            self.entries().is_ok_and(|es| {
                !es.iter()
                    .any(|e| e.slot == p.slot && e.generation == p.generation)
            })
        };
        if state.pending.as_ref().is_some_and(gone) {
            state.pending = None;
        }
        state.last_outcome = Some(Outcome {
            result: OutcomeKind::Failed,
            at: rfc3339(OffsetDateTime::now_utc()),
            version,
            slot,
            code: Some(e.code().to_string()),
            reason: Some(e.chain()),
        });
        state
            .save(&self.state_path())
            .map_err(|e| InstallError::Slot(e.into()))
    }

    fn install_locked(
        &self,
        bundle: &Path,
        base: &Policy,
        progress: &mut ProgressFn<'_>,
        version_out: &mut Option<String>,
        target_out: &mut Option<Slot>,
    ) -> Result<Installed, InstallError> {
        let booted = self.booted()?;
        let target = booted.other();
        let state = self.state()?;
        let policy = self.policy(base, booted, &state)?;
        let device = self.device(target).to_path_buf();
        if same_file(&device, self.device(booted)) {
            return Err(InstallError::BootedSlot {
                target,
                booted,
                device,
            });
        }

        // 1. The whole bundle, into no sink: nothing is written yet.
        report(progress, Phase::Verifying, 0)?;
        let checked = crate::open_file(bundle)?.check(&policy)?;
        let manifest = checked.manifest().clone();
        *version_out = Some(manifest.version.to_string());
        if manifest.class != Class::Reboot {
            return Err(InstallError::WrongClass {
                version: manifest.version.to_string(),
                class: manifest.class,
            });
        }
        *target_out = Some(target);
        let capacity = device_size(&device)?;
        if manifest.payload.size > capacity {
            return Err(InstallError::PayloadTooLarge {
                slot: target,
                device,
                size: manifest.payload.size,
                capacity,
            });
        }
        let size = manifest.payload.size.max(1);
        let _digest_only = checked.stream_payload(Counting {
            inner: DigestOnly,
            written: 0,
            progress: &mut *progress,
            phase: Phase::Verifying,
            range: (0, 30),
            size,
        })?;

        // 2. The inactive slot can no longer boot. Its next entry's
        // generation is above every entry's so far, and the pending one's.
        let generation = self
            .entries()?
            .iter()
            .map(|e| e.generation)
            .chain(state.pending.as_ref().map(|p| p.generation))
            .max()
            .unwrap_or(0)
            + 1;
        self.invalidate(target)?;

        // 3. The payload into the slot, verified again on the way.
        report(progress, Phase::Writing, 30)?;
        let checked = crate::open_file(bundle)?.check(&policy)?;
        if checked.manifest() != &manifest {
            return Err(BundleError::invalid(
                "bundle",
                format!("{} changed while it was installed", bundle.display()),
            )
            .into());
        }
        let sink = SlotSink::open(&device, target, &manifest, &mut *progress)?;
        let result = checked.stream_payload(sink);
        if let Err(e) = result {
            self.invalidate_quietly(target);
            return Err(e.into());
        }

        // 4. and 5. Boot files, then the entry.
        report(progress, Phase::Activating, 95)?;
        let done = self
            .activate(booted, target, &device, &manifest, generation)
            .inspect_err(|_| self.invalidate_quietly(target))?;

        let mut state = self.state()?;
        state.clock_floor = Some(match state.clock_floor {
            Some(c) if c > manifest.created => c,
            _ => manifest.created,
        });
        let now = rfc3339(OffsetDateTime::now_utc());
        state.pending = Some(PendingUpdate {
            slot: target,
            version: manifest.version.to_string(),
            generation: done.generation,
            installed_at: now.clone(),
            manifest,
        });
        state.last_outcome = Some(Outcome {
            result: OutcomeKind::Installed,
            at: now,
            version: Some(done.version.clone()),
            slot: Some(target),
            code: None,
            reason: Some(format!(
                "installed into slot {target}; it boots at the next reboot, {} tries at most",
                self.config().tries
            )),
        });
        state.save(&self.state_path()).map_err(SlotError::from)?;
        report(progress, Phase::Done, 100)?;
        Ok(done)
    }

    /// Checks the start of a bundle (`head`, at least its first
    /// [`BUNDLE_HEAD_BYTES`], or the whole bundle when it is shorter) as an
    /// install would: the signature, and the manifest against the policy of
    /// this appliance now (product, board, expiry, rollback floor, the
    /// installed version, the class). No slot is touched. What a receiver
    /// runs before it stores the rest of an upload: a bundle that an
    /// install would refuse is refused before its payload arrives, and the
    /// manifest says how much room the rest needs.
    pub fn precheck(&self, head: &[u8], base: &Policy) -> Result<Manifest, InstallError> {
        let booted = self.booted()?;
        let state = self.state()?;
        let policy = self.policy(base, booted, &state)?;
        let checked =
            crate::verify::OpenBundle::open(std::io::Cursor::new(head))?.check(&policy)?;
        Ok(checked.manifest().clone())
    }

    /// The appliance's policy: `base`'s keys, product, board; the
    /// installed version (the booted slot's, or the service release
    /// running on it when newer) as installed, and as the floor when above
    /// the stored one; the clock never before the clock floor.
    pub(crate) fn policy(
        &self,
        base: &Policy,
        booted: Slot,
        state: &State,
    ) -> Result<Policy, SlotError> {
        let slot = match self.entry(booted)? {
            Some(e) => self
                .entry_field(&e, "version")?
                .and_then(|v| Version::parse(&v).ok()),
            None => None,
        };
        let installed = self.running_release(state)?.or(slot);
        let floor = match (&state.rollback_floor, &installed) {
            (Some(f), Some(i)) => Some(f.max(i).clone()),
            (f, i) => f.clone().or_else(|| i.clone()),
        };
        Ok(Policy {
            installed,
            floor,
            allow_downgrade: false,
            now: state.trusted_now(base.now),
            ..base.clone()
        })
    }

    /// The install lock: one install at a time (`Busy` otherwise).
    pub(crate) fn lock(&self) -> Result<std::fs::File, InstallError> {
        let (file, path) = self.lock_file("install.lock")?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| InstallError::Busy { lock: path })?;
        Ok(file)
    }

    /// The service lock, waited for: the service release's state changes
    /// one at a time, whichever process (the daemon starting, the one
    /// serving, the watchdog) makes them.
    pub(crate) fn service_lock(&self) -> Result<std::fs::File, SlotError> {
        let (file, path) = self.lock_file("service.lock")?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(format!("cannot lock {}", path.display()))(e.into()))?;
        Ok(file)
    }

    fn lock_file(&self, name: &str) -> Result<(std::fs::File, PathBuf), SlotError> {
        let dir = &self.config().state_dir;
        std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        Ok((file, path))
    }

    /// Removes `slot`'s entries, kernel and initrd from the ESP: it cannot
    /// be booted until an install completes. Never called on the booted
    /// slot.
    fn invalidate(&self, slot: Slot) -> Result<(), SlotError> {
        let dir = self.entries_dir();
        for e in self.entries()?.into_iter().filter(|e| e.slot == slot) {
            let path = dir.join(&e.file);
            std::fs::remove_file(&path)
                .map_err(io_err(format!("cannot remove {}", path.display())))?;
            tracing::info!(slot = %slot, entry = %e.file, "boot entry removed: the slot is being rewritten");
        }
        if dir.exists() {
            sync_dir(&dir).map_err(io_err(format!("cannot sync {}", dir.display())))?;
        }
        let kdir = self.kernel_dir(slot);
        for name in BOOT_FILES
            .map(|(_, name)| name)
            .into_iter()
            .chain([UKI_NAME])
        {
            let path = kdir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("cannot remove {}", path.display()))(e)),
            }
        }
        if kdir.exists() {
            sync_dir(&kdir).map_err(io_err(format!("cannot sync {}", kdir.display())))?;
        }
        Ok(())
    }

    fn invalidate_quietly(&self, slot: Slot) {
        if let Err(e) = self.invalidate(slot) {
            tracing::warn!(slot = %slot, error = %e, "cannot clean up the failed slot's boot files (it has no entry)");
        }
    }

    /// Copies the boot files of the written slot to the ESP, then writes
    /// its entry.
    fn activate(
        &self,
        booted: Slot,
        target: Slot,
        device: &Path,
        manifest: &Manifest,
        generation: u64,
    ) -> Result<Installed, InstallError> {
        let boot_err = |reason: String| InstallError::BootFiles {
            slot: target,
            reason,
        };
        let work = &self.config().state_dir;
        let opened = SlotTree::open(device, work).map_err(boot_err)?;
        let kdir = self.kernel_dir(target);
        std::fs::create_dir_all(&kdir)
            .map_err(io_err(format!("cannot create {}", kdir.display())))?;
        // A Secure Boot build boots its signed unified image (its command
        // line is in it); others the kernel and initrd with the booted
        // entry's options. Under Secure Boot only an image the board's db
        // lets through may be marked.
        let secure = crate::secureboot::secure_boot(&self.config().efivars);
        let uki = resolve_in(&opened.root(), &uki_in_slot(target))
            .ok()
            .filter(|p| p.is_file());
        let boot_lines = match uki {
            Some(src) => {
                if secure == crate::secureboot::SecureBoot::Enforcing {
                    crate::secureboot::check_image(&src, &self.config().efivars, work).map_err(
                        |reason| InstallError::SecureBoot {
                            slot: target,
                            reason: format!("its boot image /{}: {reason}", uki_in_slot(target)),
                        },
                    )?;
                }
                let dest = kdir.join(UKI_NAME);
                copy_durably(&src, &dest).map_err(|e| {
                    boot_err(format!(
                        "cannot copy /{} to {}: {e}",
                        uki_in_slot(target),
                        dest.display()
                    ))
                })?;
                format!("efi /nasvisor/{target}/{UKI_NAME}\n")
            }
            None => {
                if secure == crate::secureboot::SecureBoot::Enforcing {
                    return Err(InstallError::SecureBoot {
                        slot: target,
                        reason: format!(
                            "it has no signed unified kernel image /{} (a build without --uefi-keys)",
                            uki_in_slot(target)
                        ),
                    });
                }
                for (inside, name) in BOOT_FILES {
                    let src = resolve_in(&opened.root(), inside).map_err(boot_err)?;
                    copy_durably(&src, &kdir.join(name)).map_err(|e| {
                        boot_err(format!(
                            "cannot copy /{inside} to {}: {e}",
                            kdir.join(name).display()
                        ))
                    })?;
                }
                let entries = self.entries()?;
                let booted_options = match entries.iter().find(|e| e.slot == booted) {
                    Some(e) => self.entry_field(e, "options")?,
                    None => None,
                };
                let options = entry_options(booted_options.as_deref(), target);
                format!(
                    "linux /nasvisor/{target}/vmlinuz\ninitrd /nasvisor/{target}/initrd.img\noptions {options}\n"
                )
            }
        };
        drop(opened);
        sync_dir(&kdir).map_err(io_err(format!("cannot sync {}", kdir.display())))?;

        let version = manifest.version.to_string();
        let body =
            format!("title nasvisor {version} (slot {target})\nversion {version}\n{boot_lines}");
        let file = Entry::file_name(generation, target, Some(self.config().tries));
        let path = self.entries_dir().join(&file);
        crate::state::write_atomic(&path, body.as_bytes())
            .map_err(io_err(format!("cannot write {}", path.display())))?;
        Ok(Installed {
            slot: target,
            version,
            generation,
            entry: file,
        })
    }

    /// Removes what an install cut short by a crash left in the state
    /// directory: a slot still mounted in a private directory (unmounted)
    /// and the directory itself. Only when no install runs (at start).
    pub fn clean_stale(&self) -> usize {
        let dir = &self.config().state_dir;
        let Ok(rd) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            if !e.file_name().to_string_lossy().starts_with(".slot.") {
                continue;
            }
            let root = e.path().join("root");
            if let Ok(out) = Command::new("umount").arg(&root).output() {
                if out.status.success() {
                    tracing::info!(dir = %root.display(), "unmounted a slot an interrupted install left mounted");
                }
            }
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => n += 1,
                Err(err) => {
                    tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove an interrupted install's directory")
                }
            }
        }
        n
    }

    /// Judges the pending update after a boot (the daemon calls it at
    /// start): the pending slot booted and blessed: succeeded, and the
    /// rollback floor rises (`next_floor`); its entry is bad and the other
    /// slot booted: failed; otherwise it stays pending.
    pub fn reconcile(&self) -> Result<Reconciled, SlotError> {
        let mut state = self.state()?;
        let Some(pending) = state.pending.clone() else {
            return Ok(Reconciled::Nothing);
        };
        let booted = self.booted()?;
        let entry = self.entry(pending.slot)?;
        let now = rfc3339(OffsetDateTime::now_utc());
        let outcome = match (&entry, booted == pending.slot) {
            (Some(e), true) if e.counter == Counter::Blessed => {
                let floor = next_floor(state.rollback_floor.as_ref(), &pending.manifest);
                state.rollback_floor = Some(floor.clone());
                state.last_outcome = Some(Outcome {
                    result: OutcomeKind::Succeeded,
                    at: now,
                    version: Some(pending.version.clone()),
                    slot: Some(pending.slot),
                    code: None,
                    reason: Some(format!(
                        "slot {} booted healthily with {}; rollback floor {floor}",
                        pending.slot, pending.version
                    )),
                });
                Reconciled::Succeeded {
                    slot: pending.slot,
                    version: pending.version.clone(),
                    floor,
                }
            }
            (Some(e), false) if e.is_bad() => {
                let tries = match e.counter {
                    Counter::Trying { done, .. } => done,
                    Counter::Blessed => 0,
                };
                let reason = format!(
                    "slot {} did not become healthy after {tries} tries; back on slot {booted}",
                    pending.slot
                );
                self.fail(&mut state, &pending, now, "unhealthy", reason.clone());
                Reconciled::Failed {
                    slot: pending.slot,
                    version: pending.version.clone(),
                    reason,
                }
            }
            (None, false) => {
                let reason = format!(
                    "slot {}'s boot entry is gone; back on slot {booted}",
                    pending.slot
                );
                self.fail(&mut state, &pending, now, "entry-gone", reason.clone());
                Reconciled::Failed {
                    slot: pending.slot,
                    version: pending.version.clone(),
                    reason,
                }
            }
            _ => return Ok(Reconciled::StillPending),
        };
        state.pending = None;
        state.save(&self.state_path())?;
        match &outcome {
            Reconciled::Succeeded {
                slot,
                version,
                floor,
            } => {
                tracing::info!(slot = %slot, version = %version, floor = %floor, "firmware update succeeded")
            }
            Reconciled::Failed { reason, .. } => {
                tracing::warn!(reason = %reason, "firmware update failed")
            }
            _ => {}
        }
        Ok(outcome)
    }

    fn fail(
        &self,
        state: &mut State,
        pending: &PendingUpdate,
        at: String,
        code: &str,
        reason: String,
    ) {
        state.last_outcome = Some(Outcome {
            result: OutcomeKind::Failed,
            at,
            version: Some(pending.version.clone()),
            slot: Some(pending.slot),
            code: Some(code.into()),
            reason: Some(reason),
        });
    }
}

pub(crate) fn report(
    progress: &mut ProgressFn<'_>,
    phase: Phase,
    percent: u8,
) -> Result<(), InstallError> {
    match progress(Progress { phase, percent }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(InstallError::Cancelled),
    }
}

/// The error a sink's write returns when the caller cancelled (not
/// `Interrupted`, which `write_all` would retry).
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
struct CancelledIo;

fn cancelled() -> std::io::Error {
    std::io::Error::other(CancelledIo)
}

/// The booted slot's options with the slot swapped; the appliance's
/// defaults when there are none. `root=` and `nasvisor.slot=` always name
/// `target`.
fn entry_options(booted_options: Option<&str>, target: Slot) -> String {
    let root = format!("root=PARTLABEL=nasvisor-{target}");
    let slot = format!("nasvisor.slot={target}");
    let Some(options) = booted_options.filter(|o| !o.trim().is_empty()) else {
        return format!("{root} ro rootfstype=erofs {slot} console=ttyS0");
    };
    let mut words: Vec<String> = options
        .split_ascii_whitespace()
        .map(|w| {
            if w.starts_with("root=") {
                root.clone()
            } else if w.starts_with("nasvisor.slot=") {
                slot.clone()
            } else {
                w.to_string()
            }
        })
        .collect();
    if !words.iter().any(|w| w == &root) {
        words.insert(0, root);
    }
    if !words.iter().any(|w| w == &slot) {
        words.push(slot);
    }
    words.join(" ")
}

/// Whether two paths are the same file or device.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            (x.dev(), x.ino()) == (y.dev(), y.ino()) || (x.rdev() != 0 && x.rdev() == y.rdev())
        }
        _ => false,
    }
}

/// A device's (or file's) size in bytes.
fn device_size(device: &Path) -> Result<u64, SlotError> {
    let mut f = std::fs::File::open(device).map_err(io_err(format!(
        "cannot open the slot device {}",
        device.display()
    )))?;
    f.seek(SeekFrom::End(0)).map_err(io_err(format!(
        "cannot size the slot device {}",
        device.display()
    )))
}

/// A sink that only reports progress around another.
struct Counting<'p, 'a, S> {
    inner: S,
    written: u64,
    progress: &'p mut ProgressFn<'a>,
    phase: Phase,
    range: (u8, u8),
    size: u64,
}

impl<S> Counting<'_, '_, S> {
    fn advance(&mut self, n: usize) -> std::io::Result<()> {
        self.written += n as u64;
        let (lo, hi) = self.range;
        let span = u64::from(hi - lo);
        let percent =
            lo + u8::try_from(self.written.min(self.size) * span / self.size).unwrap_or(0);
        match (self.progress)(Progress {
            phase: self.phase,
            percent,
        }) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(cancelled()),
        }
    }
}

impl<S: Write> Write for Counting<'_, '_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.advance(n)?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<S: PayloadSink> PayloadSink for Counting<'_, '_, S> {
    type Output = S::Output;
    fn commit(self) -> std::io::Result<S::Output> {
        self.inner.commit()
    }
    fn discard(self) {
        self.inner.discard()
    }
}

/// A payload into a slot's device: written from its start, never past its
/// end; on commit synced, its cached pages dropped, and read back: the
/// slot's first `size` bytes must have the signed SHA-256. On discard its
/// first block is zeroed (the slot has no entry already).
pub struct SlotSink<'p, 'a> {
    file: std::fs::File,
    device: PathBuf,
    slot: Slot,
    capacity: u64,
    size: u64,
    sha256: String,
    written: u64,
    progress: &'p mut ProgressFn<'a>,
}

impl<'p, 'a> SlotSink<'p, 'a> {
    /// Opens `device` (which must exist: a partition, or a file in tests)
    /// for the payload `manifest` describes.
    pub fn open(
        device: &Path,
        slot: Slot,
        manifest: &Manifest,
        progress: &'p mut ProgressFn<'a>,
    ) -> Result<SlotSink<'p, 'a>, SlotError> {
        let capacity = device_size(device)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
            .map_err(io_err(format!(
                "cannot open the slot device {}",
                device.display()
            )))?;
        Ok(SlotSink {
            file,
            device: device.to_path_buf(),
            slot,
            capacity,
            size: manifest.payload.size,
            sha256: manifest.payload.sha256.clone(),
            written: 0,
            progress,
        })
    }

    fn read_back(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        // Read from the disk, not from the pages just written.
        if let Err(e) = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed) {
            tracing::debug!(device = %self.device.display(), error = %e, "cannot drop the slot's cached pages before the read-back");
        }
        self.file.seek(SeekFrom::Start(0))?;
        let mut hasher = Sha256::new();
        let mut left = self.size;
        let mut buf = vec![0u8; CHUNK];
        let mut last = 0u8;
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = self.file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "slot {} ({}) ends after {} of the payload's {} bytes",
                    self.slot,
                    self.device.display(),
                    self.size - left,
                    self.size
                )));
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
            let percent = 90 + u8::try_from((self.size - left) * 5 / self.size.max(1)).unwrap_or(0);
            if percent != last {
                last = percent;
                if (self.progress)(Progress {
                    phase: Phase::Checking,
                    percent,
                })
                .is_break()
                {
                    return Err(cancelled());
                }
            }
        }
        let actual = hex::encode(hasher.finalize());
        if actual != self.sha256 {
            return Err(std::io::Error::other(format!(
                "slot {} ({}) reads back with sha256 {actual}, the signed payload's is {}",
                self.slot,
                self.device.display(),
                self.sha256
            )));
        }
        Ok(())
    }
}

impl Write for SlotSink<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.capacity {
            return Err(std::io::Error::other(format!(
                "the payload does not fit slot {} ({}, {} bytes)",
                self.slot,
                self.device.display(),
                self.capacity
            )));
        }
        let n = self.file.write(buf)?;
        let before = self.written * 60 / self.size.max(1);
        self.written += n as u64;
        let after = self.written * 60 / self.size.max(1);
        if after != before {
            let percent = 30 + u8::try_from(after.min(60)).unwrap_or(60);
            if (self.progress)(Progress {
                phase: Phase::Writing,
                percent,
            })
            .is_break()
            {
                return Err(cancelled());
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl PayloadSink for SlotSink<'_, '_> {
    type Output = ();
    fn commit(mut self) -> std::io::Result<()> {
        self.read_back()
    }
    fn discard(mut self) {
        let zero = vec![0u8; 4096.min(usize::try_from(self.capacity).unwrap_or(4096))];
        let r = self
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&zero))
            .and_then(|_| self.file.sync_all());
        if let Err(e) = r {
            tracing::warn!(slot = %self.slot, device = %self.device.display(), error = %e, "cannot zero the refused slot's first block (it has no entry)");
        }
    }
}

/// A written slot's files, readable under [`SlotTree::root`]: the erofs
/// mounted read-only (through a loop device for a file) in a private
/// directory, or, where mounting fails (no privilege, no erofs in the
/// kernel), extracted by `fsck.erofs --extract`.
struct SlotTree {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl SlotTree {
    fn open(device: &Path, work: &Path) -> Result<SlotTree, String> {
        std::fs::create_dir_all(work)
            .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(".slot.")
            .tempdir_in(work)
            .map_err(|e| format!("cannot create a directory in {}: {e}", work.display()))?;
        let root = dir.path().join("root");
        std::fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let is_file = std::fs::metadata(device)
            .map(|m| m.is_file())
            .unwrap_or(false);
        let opts = if is_file {
            "ro,nodev,nosuid,noexec,loop"
        } else {
            "ro,nodev,nosuid,noexec"
        };
        let mount = Command::new("mount")
            .args(["-t", "erofs", "-o", opts])
            .arg(device)
            .arg(&root)
            .output();
        match mount {
            Ok(out) if out.status.success() => {
                return Ok(SlotTree { dir, mounted: true });
            }
            Ok(out) => tracing::info!(
                device = %device.display(),
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "cannot mount the slot; extracting it with fsck.erofs"
            ),
            Err(e) => {
                tracing::info!(device = %device.display(), error = %e, "cannot run mount; extracting the slot with fsck.erofs")
            }
        }
        SlotTree::extract(device, dir)
    }

    /// The slot's files extracted by `fsck.erofs --extract` into `dir`'s
    /// `root` (which also checks the image).
    fn extract(device: &Path, dir: tempfile::TempDir) -> Result<SlotTree, String> {
        let root = dir.path().join("root");
        let out = Command::new("fsck.erofs")
            .arg(format!("--extract={}", root.display()))
            .args(["--overwrite", "--no-preserve"])
            .arg(device)
            .output()
            .map_err(|e| format!("cannot run fsck.erofs (erofs-utils): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{} is not a readable erofs image: fsck.erofs: {}",
                device.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SlotTree {
            dir,
            mounted: false,
        })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for SlotTree {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let root = self.root();
        match Command::new("umount").arg(&root).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                tracing::warn!(dir = %root.display(), stderr = %String::from_utf8_lossy(&out.stderr).trim(), "cannot unmount the slot")
            }
            Err(e) => tracing::warn!(dir = %root.display(), error = %e, "cannot run umount"),
        }
    }
}

/// `inside` (relative) under `root`, following symbolic links as if
/// `root` were `/`: an absolute link names a file of the slot, never of the
/// running system, and `..` stops at `root`.
fn resolve_in(root: &Path, inside: &str) -> Result<PathBuf, String> {
    let mut parts: Vec<String> = Vec::new();
    let mut todo: Vec<String> = inside
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let path = parts
            .iter()
            .fold(root.to_path_buf(), |p, s| p.join(s))
            .join(&part);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("/{inside}: {}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 16 {
                return Err(format!("/{inside}: too many symbolic links"));
            }
            let target = std::fs::read_link(&path)
                .map_err(|e| format!("/{inside}: {}: {e}", path.display()))?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                parts.clear();
            }
            todo.extend(
                target
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .rev()
                    .map(str::to_string),
            );
        } else {
            parts.push(part);
        }
    }
    let path = parts.iter().fold(root.to_path_buf(), |p, s| p.join(s));
    let meta = std::fs::metadata(&path).map_err(|e| format!("/{inside}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("/{inside} is not a regular file"));
    }
    Ok(path)
}

/// Copies `src` to `dest` through a temporary file beside it: write,
/// fsync, rename. The caller syncs the directory.
fn copy_durably(src: &Path, dest: &Path) -> std::io::Result<()> {
    let mut tmp = crate::state::temp_beside(dest, ".tmp")?;
    let mut from = std::fs::File::open(src)?;
    std::io::copy(&mut from, &mut tmp)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_options_swap_the_slot_and_keep_the_rest() {
        let o = entry_options(
            Some(
                "root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a console=ttyS0 quiet",
            ),
            Slot::B,
        );
        assert_eq!(
            o,
            "root=PARTLABEL=nasvisor-b ro rootfstype=erofs nasvisor.slot=b console=ttyS0 quiet"
        );
        assert_eq!(
            entry_options(None, Slot::B),
            "root=PARTLABEL=nasvisor-b ro rootfstype=erofs nasvisor.slot=b console=ttyS0"
        );
        assert_eq!(
            entry_options(Some("quiet"), Slot::A),
            "root=PARTLABEL=nasvisor-a quiet nasvisor.slot=a"
        );
    }

    /// Where a slot cannot be mounted, `fsck.erofs --extract` reads it: a
    /// real image with a trailing zero fill (a slot is larger than its
    /// image), and a slot that is no erofs.
    #[test]
    fn a_slot_that_cannot_be_mounted_is_extracted_by_fsck_erofs() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("boot")).unwrap();
        std::fs::write(src.join("boot/vmlinuz-6.1"), b"kernel").unwrap();
        std::os::unix::fs::symlink("vmlinuz-6.1", src.join("boot/vmlinuz")).unwrap();
        std::fs::write(src.join("boot/initrd.img"), b"initrd").unwrap();
        let slot = dir.path().join("slot.img");
        let out = Command::new("mkfs.erofs")
            .arg(&slot)
            .arg(&src)
            .output()
            .expect("mkfs.erofs (erofs-utils)");
        assert!(out.status.success());
        std::fs::File::options()
            .write(true)
            .open(&slot)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let work = |n: &str| {
            let d = dir.path().join(n);
            std::fs::create_dir_all(&d).unwrap();
            tempfile::Builder::new().tempdir_in(&d).unwrap()
        };
        let w = work("w1");
        std::fs::create_dir(w.path().join("root")).unwrap();
        let tree = SlotTree::extract(&slot, w).unwrap();
        assert!(!tree.mounted);
        let kernel = resolve_in(&tree.root(), "boot/vmlinuz").unwrap();
        assert_eq!(std::fs::read(kernel).unwrap(), b"kernel");
        let initrd = resolve_in(&tree.root(), "boot/initrd.img").unwrap();
        assert_eq!(std::fs::read(initrd).unwrap(), b"initrd");

        let junk = dir.path().join("junk.img");
        std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
        let w = work("w2");
        std::fs::create_dir(w.path().join("root")).unwrap();
        let Err(e) = SlotTree::extract(&junk, w) else {
            panic!("a zero-filled slot extracted");
        };
        assert!(e.contains("is not a readable erofs image"), "{e}");
    }

    #[test]
    fn symbolic_links_resolve_inside_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1"), b"k").unwrap();
        std::os::unix::fs::symlink("vmlinuz-6.1", root.join("boot/vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/boot/vmlinuz-6.1", root.join("boot/abs")).unwrap();
        std::os::unix::fs::symlink("../../../etc/passwd", root.join("boot/escape")).unwrap();
        assert_eq!(
            resolve_in(root, "boot/vmlinuz").unwrap(),
            root.join("boot/vmlinuz-6.1")
        );
        assert_eq!(
            resolve_in(root, "boot/abs").unwrap(),
            root.join("boot/vmlinuz-6.1")
        );
        // `..` stops at the slot's root: /etc/passwd of the slot, absent here.
        assert!(resolve_in(root, "boot/escape").is_err());
    }
}
