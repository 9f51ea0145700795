//! `service` bundles: a new nasvisord (and its plugins) swapped in without
//! a reboot, kept on the data partition, re-verified at every start, and
//! rolled back when it does not become healthy in time.
//!
//! The payload is a tar of regular files (no links, no devices, no paths
//! out of it): `nasvisord` (required), `nasvisor` (the CLI, optional) and
//! `plugins/<name>` (the signed plugins the release loads instead of the
//! slot's, optional). A release lives in
//! `<state-dir>/service/releases/<version>/`: the verified bundle as it was
//! installed (`bundle.nvfw`) and its payload unpacked (`root/`).
//!
//! The steps, each recorded in the state file ([`ServiceState`]):
//!
//! 1. [`SlotSet::install_service`]: the bundle is verified as a `reboot`
//!    bundle is (signature, product, board, expiry, floors; the installed
//!    version is the higher of the booted slot's and the running
//!    release's), its payload unpacked and checked into a staging
//!    directory, which then becomes the release's; the release becomes
//!    `current` **on trial**, the running one `previous`. Nothing running is
//!    touched: the caller restarts nasvisord.
//! 2. [`SlotSet::service_launch`], when nasvisord starts (from the slot):
//!    the `current` release, when there is one newer than the booted slot,
//!    is verified again from its bundle (signature against the slot's keys,
//!    product, board, rollback floor, payload digest) and unpacked afresh,
//!    and nasvisord runs it (exec). A release on trial is launched once; a
//!    second start of it while still on trial means it died before it was
//!    healthy: it is rolled back.
//! 3. [`SlotSet::service_healthy`]: the release, once it serves, ends its
//!    trial: `succeeded`, and the rollback floor rises to its
//!    `min-version`.
//! 4. [`SlotSet::service_rollback`]: the watchdog the old nasvisord left
//!    behind, when the trial's deadline passes or the new process dies,
//!    puts `previous` back as `current`: `failed`, code `unhealthy`.
//!
//! A reboot into a slot at least as new as the release drops it: the slot
//! carries its own nasvisord.

use crate::error::BundleError;
use crate::install::{report, InstallError, Phase, ProgressFn};
use crate::manifest::{rfc3339, Class, Manifest};
use crate::policy::{next_floor, Policy};
use crate::sink::FileSink;
use crate::slots::{io_err, SlotError, SlotSet};
use crate::state::{sync_dir, Outcome, OutcomeKind, State};
use semver::Version;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The daemon's file in a service payload.
pub const SERVICE_DAEMON: &str = "nasvisord";
/// The CLI's file in a service payload (optional).
pub const SERVICE_CLI: &str = "nasvisor";
/// The plugins' directory in a service payload (optional).
pub const SERVICE_PLUGINS: &str = "plugins";

/// The most members a service payload may have.
const MAX_MEMBERS: usize = 256;

/// The longest name of a plugin file.
const MAX_NAME: usize = 100;

/// The service release state, in the firmware state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceState {
    /// The release nasvisord runs at its next start (`None`: the booted
    /// slot's own nasvisord).
    pub current: Option<String>,
    /// What `current` replaced, to go back to (`None`: the slot's own).
    pub previous: Option<String>,
    /// `current` has not been healthy yet.
    pub trial: Option<Trial>,
}

impl ServiceState {
    /// No release, none to go back to, none on trial.
    pub fn is_empty(&self) -> bool {
        self == &ServiceState::default()
    }
}

/// A release being tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Trial {
    pub version: String,
    /// When it was installed (RFC 3339).
    pub installed_at: String,
    /// How often it was launched.
    pub launches: u32,
    /// Its verified manifest: its `min-version` becomes the floor once it
    /// is healthy.
    pub manifest: Manifest,
}

/// What [`SlotSet::install_service`] staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub version: String,
    /// The release it replaces (`None`: the slot's own nasvisord).
    pub previous: Option<String>,
    /// Its directory.
    pub dir: PathBuf,
}

/// What nasvisord runs ([`SlotSet::service_launch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub version: String,
    /// The unpacked release: `nasvisord` in it, maybe `plugins/`.
    pub root: PathBuf,
    /// Whether it is on trial (not healthy yet).
    pub trial: bool,
}

impl Launch {
    /// The release's nasvisord.
    pub fn daemon(&self) -> PathBuf {
        self.root.join(SERVICE_DAEMON)
    }

    /// The release's plugins, when it carries them.
    pub fn plugins(&self) -> Option<PathBuf> {
        let p = self.root.join(SERVICE_PLUGINS);
        p.is_dir().then_some(p)
    }
}

impl SlotSet {
    /// `<state-dir>/service/releases`.
    pub fn releases_dir(&self) -> PathBuf {
        self.config().state_dir.join("service").join("releases")
    }

    /// The booted slot's version (its entry's), when it has one.
    fn slot_version(&self) -> Result<Option<Version>, SlotError> {
        let booted = self.booted()?;
        Ok(match self.entry(booted)? {
            Some(e) => self
                .entry_field(&e, "version")?
                .and_then(|v| Version::parse(&v).ok()),
            None => None,
        })
    }

    /// The release running now, when it is newer than the booted slot.
    pub(crate) fn running_release(&self, state: &State) -> Result<Option<Version>, SlotError> {
        let slot = self.slot_version()?;
        Ok(state
            .service
            .current
            .as_deref()
            .and_then(|v| Version::parse(v).ok())
            .filter(|v| slot.as_ref().is_none_or(|s| v > s)))
    }

    /// Installs a `service` bundle (module documentation, step 1): verified,
    /// unpacked and checked, then `current` on trial. The caller restarts
    /// nasvisord; until then nothing running changes. The outcome is
    /// recorded either way.
    pub fn install_service(
        &self,
        bundle: &Path,
        base: &Policy,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Staged, InstallError> {
        let _lock = self.lock()?;
        let mut version = None;
        let result = self.install_service_locked(bundle, base, progress, &mut version);
        if let Err(e) = &result {
            self.record_failure(bundle, e, version, None)?;
        }
        result
    }

    fn install_service_locked(
        &self,
        bundle: &Path,
        base: &Policy,
        progress: &mut ProgressFn<'_>,
        version_out: &mut Option<String>,
    ) -> Result<Staged, InstallError> {
        let booted = self.booted()?;
        let state = self.state()?;
        let policy = self.policy(base, booted, &state)?;
        report(progress, Phase::Verifying, 0)?;
        let checked = crate::open_file(bundle)?.check(&policy)?;
        let manifest = checked.manifest().clone();
        *version_out = Some(manifest.version.to_string());
        if manifest.class != Class::Service {
            return Err(InstallError::WrongClass {
                version: manifest.version.to_string(),
                class: manifest.class,
            });
        }
        let releases = self.releases_dir();
        std::fs::create_dir_all(&releases)
            .map_err(io_err(format!("cannot create {}", releases.display())))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&releases)
            .map_err(io_err(format!(
                "cannot create a directory in {}",
                releases.display()
            )))?;
        report(progress, Phase::Writing, 10)?;
        let dest = staging.path().join("payload.tar");
        let sink = FileSink::create(&dest)
            .map_err(BundleError::io(format!("cannot create {}", dest.display())))?;
        // Only a payload that passed every check is unpacked.
        let (_, _, payload) = checked.stream_payload(sink)?.into_parts();
        report(progress, Phase::Checking, 60)?;
        unpack(&payload, &staging.path().join("root"))
            .map_err(|reason| InstallError::Bundle(BundleError::invalid("payload", reason)))?;
        std::fs::remove_file(&payload)
            .map_err(io_err(format!("cannot remove {}", payload.display())))?;
        let kept = staging.path().join("bundle.nvfw");
        copy_synced(bundle, &kept)?;
        report(progress, Phase::Activating, 90)?;

        // The staged directory becomes the release's. A release of the same
        // version (a reinstall) is replaced; a running binary keeps its
        // inode.
        let version = manifest.version.to_string();
        let dir = releases.join(&version);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(io_err(format!("cannot remove {}", dir.display())))?;
        }
        let staged = staging.keep();
        std::fs::rename(&staged, &dir).map_err(io_err(format!(
            "cannot rename {} to {}",
            staged.display(),
            dir.display()
        )))?;
        sync_dir(&releases).map_err(io_err(format!("cannot sync {}", releases.display())))?;

        let _service = self.service_lock()?;
        let mut state = self.state()?;
        let previous = self.running_release(&state)?.map(|v| v.to_string());
        let now = rfc3339(OffsetDateTime::now_utc());
        state.clock_floor = Some(match state.clock_floor {
            Some(c) if c > manifest.created => c,
            _ => manifest.created,
        });
        state.service = ServiceState {
            current: Some(version.clone()),
            previous: previous.clone(),
            trial: Some(Trial {
                version: version.clone(),
                installed_at: now.clone(),
                launches: 0,
                manifest,
            }),
        };
        state.last_outcome = Some(Outcome {
            result: OutcomeKind::Installed,
            at: now,
            version: Some(version.clone()),
            slot: None,
            code: None,
            reason: Some(format!(
                "service release {version} staged; nasvisord restarts into it (previously {})",
                previous.as_deref().unwrap_or("the slot's own")
            )),
        });
        state.save(&self.state_path()).map_err(SlotError::from)?;
        self.prune_releases(&state, false);
        report(progress, Phase::Done, 100)?;
        tracing::info!(version = %version, "service release staged");
        Ok(Staged {
            version,
            previous,
            dir,
        })
    }

    /// At start (module documentation, step 2): the release to run, if
    /// any, verified and unpacked afresh. A release that fails its checks,
    /// or dies on trial, is rolled back (recorded) and the one before it
    /// tried; `None` runs the slot's own nasvisord.
    pub fn service_launch(&self, base: &Policy) -> Result<Option<Launch>, SlotError> {
        let _lock = self.service_lock()?;
        let mut state = self.state()?;
        let slot = self.slot_version()?;
        self.prune_releases(&state, true);
        loop {
            let Some(version) = state.service.current.clone() else {
                return Ok(None);
            };
            let newer = Version::parse(&version)
                .ok()
                .filter(|v| slot.as_ref().is_none_or(|s| v > s));
            if newer.is_none() {
                tracing::info!(release = %version, slot = ?slot.as_ref().map(|v| v.to_string()), "the booted slot is at least as new as the service release; running the slot's nasvisord");
                state.service = ServiceState::default();
                state.save(&self.state_path())?;
                self.prune_releases(&state, false);
                return Ok(None);
            }
            let on_trial = state
                .service
                .trial
                .as_ref()
                .is_some_and(|t| t.version == version);
            if on_trial && state.service.trial.as_ref().is_some_and(|t| t.launches > 0) {
                self.roll_back(
                    &mut state,
                    &version,
                    "unhealthy",
                    format!("service release {version} stopped before it became healthy"),
                );
                state.save(&self.state_path())?;
                continue;
            }
            match self.verify_release(base, &state, &version) {
                Ok(root) => {
                    if let Some(t) = state.service.trial.as_mut().filter(|_| on_trial) {
                        t.launches += 1;
                    }
                    state.save(&self.state_path())?;
                    return Ok(Some(Launch {
                        version,
                        root,
                        trial: on_trial,
                    }));
                }
                Err(reason) => {
                    tracing::error!(release = %version, %reason, "the service release fails its checks; going back");
                    self.roll_back(&mut state, &version, "release-invalid", reason);
                    state.save(&self.state_path())?;
                }
            }
        }
    }

    /// Verifies the kept bundle of `version` against `base` (keys, product,
    /// board) and the rollback floor, at its own creation time (a release
    /// that was good when installed does not stop running when its bundle
    /// expires), and unpacks it afresh into `root/`.
    fn verify_release(
        &self,
        base: &Policy,
        state: &State,
        version: &str,
    ) -> Result<PathBuf, String> {
        let dir = self.releases_dir().join(version);
        let bundle = dir.join("bundle.nvfw");
        let open = crate::open_file(&bundle).map_err(|e| e.to_string())?;
        let created = open
            .unverified_manifest()
            .map_err(|e| e.to_string())?
            .created;
        let policy = Policy {
            installed: None,
            floor: state.rollback_floor.clone(),
            allow_downgrade: false,
            now: created,
            ..base.clone()
        };
        let checked = open.check(&policy).map_err(|e| e.to_string())?;
        if checked.manifest().class != Class::Service
            || checked.manifest().version.to_string() != version
        {
            return Err(format!(
                "{} is not the service bundle of {version}",
                bundle.display()
            ));
        }
        let sink = FileSink::create(&dir.join(".payload.tar")).map_err(|e| e.to_string())?;
        let (_, _, payload) = checked
            .stream_payload(sink)
            .map_err(|e| e.to_string())?
            .into_parts();
        let root = dir.join("root");
        let fresh = dir.join(".root.new");
        let r = unpack(&payload, &fresh);
        std::fs::remove_file(&payload).ok();
        r?;
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        }
        std::fs::rename(&fresh, &root).map_err(|e| format!("{}: {e}", root.display()))?;
        Ok(root)
    }

    /// The release on trial is healthy (step 3): `succeeded`, the floor
    /// rises. `false` when `version` is not on trial.
    pub fn service_healthy(&self, version: &str) -> Result<bool, SlotError> {
        let _lock = self.service_lock()?;
        let path = self.state_path();
        let mut state = self.state()?;
        let Some(trial) = state.service.trial.clone().filter(|t| t.version == version) else {
            return Ok(false);
        };
        let floor = next_floor(state.rollback_floor.as_ref(), &trial.manifest);
        state.rollback_floor = Some(floor.clone());
        state.service.trial = None;
        state.last_outcome = Some(Outcome {
            result: OutcomeKind::Succeeded,
            at: rfc3339(OffsetDateTime::now_utc()),
            version: Some(version.to_string()),
            slot: None,
            code: None,
            reason: Some(format!(
                "service release {version} is healthy; rollback floor {floor}"
            )),
        });
        state.save(&path)?;
        self.prune_releases(&state, false);
        tracing::info!(version, %floor, "service release healthy");
        Ok(true)
    }

    /// The release on trial did not become healthy (step 4): `previous`
    /// is `current` again, `failed` with `reason`. `false` when `version`
    /// is not on trial (it became healthy, or was rolled back already).
    pub fn service_rollback(&self, version: &str, reason: &str) -> Result<bool, SlotError> {
        let _lock = self.service_lock()?;
        let mut state = self.state()?;
        if state
            .service
            .trial
            .as_ref()
            .is_none_or(|t| t.version != version)
        {
            return Ok(false);
        }
        self.roll_back(&mut state, version, "unhealthy", reason.to_string());
        state.save(&self.state_path())?;
        Ok(true)
    }

    fn roll_back(&self, state: &mut State, version: &str, code: &str, reason: String) {
        let back = state.service.previous.take();
        tracing::warn!(release = %version, back = back.as_deref().unwrap_or("the slot's own"), %reason, "service release rolled back");
        state.service.current = back.clone();
        state.service.trial = None;
        state.last_outcome = Some(Outcome {
            result: OutcomeKind::Failed,
            at: rfc3339(OffsetDateTime::now_utc()),
            version: Some(version.to_string()),
            slot: None,
            code: Some(code.to_string()),
            reason: Some(format!(
                "{reason}; back on {}",
                back.map_or("the slot's own nasvisord".to_string(), |v| format!(
                    "service release {v}"
                ))
            )),
        });
    }

    /// Removes releases neither current nor previous (best effort); with
    /// `hidden`, also the staging directories an install cut short left
    /// (only where no install can be running: at start).
    fn prune_releases(&self, state: &State, hidden: bool) {
        let keep = [&state.service.current, &state.service.previous];
        let Ok(rd) = std::fs::read_dir(self.releases_dir()) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && !hidden {
                continue;
            }
            if keep.iter().any(|k| k.as_deref() == Some(name.as_str())) {
                continue;
            }
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove an old service release");
            }
        }
    }
}

/// Copies `from` to `to` and fsyncs it.
fn copy_synced(from: &Path, to: &Path) -> Result<(), SlotError> {
    std::fs::copy(from, to).map_err(io_err(format!(
        "cannot copy {} to {}",
        from.display(),
        to.display()
    )))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io_err(format!("cannot sync {}", to.display())))
}

/// Whether `name` is a plain file name a payload may use.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Unpacks a service payload into `dest` (created; it must not exist),
/// checking each member: a regular file (or the `plugins` directory) at
/// `nasvisord`, `nasvisor` or `plugins/<name>`, nothing twice, at most
/// [`MAX_MEMBERS`]; `nasvisord` is required. Binaries get mode 0755,
/// plugins 0644. On an error `dest` is removed.
pub fn unpack(payload: &Path, dest: &Path) -> Result<(), String> {
    let r = unpack_inner(payload, dest);
    if r.is_err() {
        std::fs::remove_dir_all(dest).ok();
    }
    r
}

fn unpack_inner(payload: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(payload).map_err(|e| format!("{}: {e}", payload.display()))?;
    std::fs::create_dir(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut seen = std::collections::HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for (i, entry) in entries.enumerate() {
        if i >= MAX_MEMBERS {
            return Err(format!("more than {MAX_MEMBERS} members"));
        }
        let mut entry = entry.map_err(|e| format!("member {i}: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("member {i}: {e}"))?
            .to_string_lossy()
            .into_owned();
        let name = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let kind = entry.header().entry_type();
        let parts: Vec<&str> = name.split('/').collect();
        let (path, mode) = match (parts.as_slice(), kind) {
            ([SERVICE_PLUGINS], tar::EntryType::Directory) => {
                std::fs::create_dir_all(dest.join(SERVICE_PLUGINS))
                    .map_err(|e| format!("{name}: {e}"))?;
                continue;
            }
            ([n], tar::EntryType::Regular) if *n == SERVICE_DAEMON || *n == SERVICE_CLI => {
                (dest.join(n), 0o755)
            }
            ([SERVICE_PLUGINS, n], tar::EntryType::Regular) if plain_name(n) => {
                std::fs::create_dir_all(dest.join(SERVICE_PLUGINS))
                    .map_err(|e| format!("{name}: {e}"))?;
                (dest.join(SERVICE_PLUGINS).join(n), 0o644)
            }
            (_, tar::EntryType::Regular | tar::EntryType::Directory) => {
                return Err(format!(
                    "member {name:?}: only {SERVICE_DAEMON}, {SERVICE_CLI} and {SERVICE_PLUGINS}/<name> may be in a service payload"
                ))
            }
            (_, other) => {
                return Err(format!(
                    "member {name:?}: a {other:?} entry; only regular files may be in a service payload"
                ))
            }
        };
        if !seen.insert(name.clone()) {
            return Err(format!("member {name:?} is there twice"));
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| format!("{name}: {e}"))?;
        out.sync_all().map_err(|e| format!("{name}: {e}"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if !seen.contains(SERVICE_DAEMON) {
        return Err(format!("it holds no {SERVICE_DAEMON}"));
    }
    Ok(())
}
