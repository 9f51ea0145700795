//! This host's firmware (docs/firmware.md, "Installing" and "Status"):
//! the status of its A/B slots, the install of an uploaded bundle into the
//! inactive slot as a job, and the judgement of a pending update at start.
//! The mechanism is `nasvisor-firmware`'s [`SlotSet`]; this module only
//! receives the bundle, runs the install off the async runtime, reports
//! its progress and outcome as a job and as events.

use crate::errors;
use crate::jobs::{FirmwareJob, JobFailure, JobSpec};
use crate::model::Severity;
use crate::Inner;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use nasvisor_api_types::{
    CoreError, FirmwareOutcomeKind, FirmwareOutcomeView, FirmwarePendingView, FirmwareServiceView,
    FirmwareSlotState, FirmwareSlotView, FirmwareView, FirmwareWatchdogView, HardwareWatchdogView,
    JobView,
};
use nasvisor_best_effort::BestEffort;
use nasvisor_firmware::{
    Class, FirmwareStatus, InstallError, OutcomeKind, Policy, Reconciled, SlotConfig, SlotSet,
    SlotState, BUNDLE_HEAD_BYTES,
};
use sha2::{Digest, Sha256};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// What the core needs to manage this host's firmware (`[firmware]` of the
/// daemon's configuration; absent unless the appliance turns it on).
#[derive(Debug, Clone)]
pub struct FirmwareSettings {
    /// The slots, the ESP, the command line, the state directory, the tries.
    pub slots: SlotConfig,
    /// The vendor keys a bundle must be signed by (`*.pub`).
    pub trusted_keys_dir: PathBuf,
    /// This product; a bundle for another is refused.
    pub product: String,
    /// This board; a bundle that does not name it is refused.
    pub board: String,
    /// How long a new service release has to become healthy before the
    /// watchdog rolls it back.
    pub service_deadline: std::time::Duration,
}

impl FirmwareSettings {
    pub(crate) fn slot_set(&self) -> SlotSet {
        SlotSet::new(self.slots.clone())
    }

    /// The policy of an install: the trusted keys, product and board, at
    /// the system clock (the install raises it to the clock floor).
    pub(crate) fn policy(&self) -> Result<Policy, String> {
        let trusted = nasvisor_signing::read_public_keys_in(&self.trusted_keys_dir)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|t| t.key)
            .collect();
        Ok(Policy {
            product: Some(self.product.clone()),
            board: Some(self.board.clone()),
            ..Policy::new(trusted)
        })
    }

    /// At the daemon's start, before anything else: the service release
    /// to run instead of this binary, verified and unpacked (or `None`).
    /// Releases that fail their checks or died on trial are rolled back
    /// on the way (recorded in the state file).
    pub fn service_launch(&self) -> Result<Option<nasvisor_firmware::Launch>, String> {
        let policy = self.policy()?;
        self.slot_set()
            .service_launch(&policy)
            .map_err(|e| e.to_string())
    }

    /// The service release `version`, on trial, did not become healthy:
    /// the previous one is current again. `false` when it is not on trial.
    pub fn service_rollback(&self, version: &str, reason: &str) -> Result<bool, String> {
        self.slot_set()
            .service_rollback(version, reason)
            .map_err(|e| e.to_string())
    }

    /// The service release on trial, if any.
    pub fn service_trial(&self) -> Result<Option<String>, String> {
        let state = self.slot_set().state().map_err(|e| e.to_string())?;
        Ok(state.service.trial.map(|t| t.version))
    }

    /// Where uploaded bundles wait for their install.
    pub(crate) fn upload_dir(&self) -> PathBuf {
        self.slots.state_dir.join("uploads")
    }
}

/// A host without firmware management: a state of the host, not a fault
/// (409, not 5xx).
fn not_enabled() -> CoreError {
    errors::conflict("firmware management is not enabled on this host ([firmware] enabled = false)")
}

impl Inner {
    pub(crate) fn firmware(&self) -> Result<&FirmwareSettings, CoreError> {
        self.cfg.firmware.as_ref().ok_or_else(not_enabled)
    }

    /// `GET /api/v1/host/firmware`.
    pub(crate) async fn firmware_status(&self) -> Result<FirmwareView, CoreError> {
        let settings = self.firmware()?;
        let slots = settings.slot_set();
        let deadline_s = settings.service_deadline.as_secs();
        let status = tokio::task::spawn_blocking(move || slots.status())
            .await
            .map_err(errors::internal)?
            .map_err(|e| match e {
                // A host not booted from a slot: its state, not a fault.
                e @ nasvisor_firmware::SlotError::NotBootedFromSlot { .. } => {
                    errors::conflict(e.to_string())
                }
                e => errors::internal(e),
            })?;
        let service = FirmwareServiceView {
            running: self.cfg.service_release.clone(),
            current: status.service.current.clone(),
            previous: status.service.previous.clone(),
            on_trial: status.service.trial.as_ref().map(|t| t.version.clone()),
            deadline_s,
        };
        let mut v = view(status);
        v.service = Some(service);
        v.watchdog = Some(self.watchdog_view());
        v.secure_boot = Some(
            nasvisor_firmware::secure_boot(&settings.slots.efivars)
                .as_str()
                .to_string(),
        );
        Ok(v)
    }

    /// The board's hardware watchdogs and systemd's watchdog of nasvisord.
    fn watchdog_view(&self) -> FirmwareWatchdogView {
        let hardware =
            nasvisor_firmware::hardware_watchdogs(Path::new(nasvisor_firmware::WATCHDOG_CLASS))
                .into_iter()
                .map(|h| HardwareWatchdogView {
                    device: h.device,
                    identity: h.identity,
                    state: h.state,
                    timeout_s: h.timeout_s,
                })
                .collect();
        FirmwareWatchdogView {
            hardware,
            service_timeout_s: self.cfg.service_watchdog.map(|d| d.as_secs()),
        }
    }

    /// `POST /api/v1/host/firmware/install`: receives the bundle into the
    /// data directory, then installs it as a job; answers with the job
    /// once the bundle is received.
    pub(crate) async fn install_firmware(
        self: &Arc<Self>,
        body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    ) -> Result<JobView, CoreError> {
        let settings = self.firmware()?.clone();
        let received = receive(body, &settings).await?;
        self.start_firmware_install(settings, received.path).await
    }

    /// Installs the bundle at `bundle` (in the upload directory; removed
    /// when the job ends) as a job, and answers with the job.
    pub(crate) async fn start_firmware_install(
        self: &Arc<Self>,
        settings: FirmwareSettings,
        bundle: PathBuf,
    ) -> Result<JobView, CoreError> {
        let (job, ctx) = match self
            .job_start(
                &JobSpec::FirmwareInstall(FirmwareJob {
                    bundle: bundle.display().to_string(),
                }),
                Some(format!("host/{}", self.host.id)),
            )
            .await
        {
            Ok(j) => j,
            Err(e) => {
                std::fs::remove_file(&bundle).best_effort("remove an uploaded bundle");
                return Err(e);
            }
        };
        let me = self.clone();
        tokio::spawn(async move {
            let c = ctx.clone();
            let path = bundle.clone();
            let r = tokio::task::spawn_blocking(move || {
                let policy = settings.policy()?;
                let mut progress = |p: nasvisor_firmware::Progress| {
                    c.progress(
                        f64::from(p.percent) / 100.0,
                        Some(&format!("{:?}", p.phase).to_lowercase()),
                    );
                    if c.is_cancelled() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                };
                let slots = settings.slot_set();
                let chain = |e: InstallError| {
                    if e.code() == "cancelled" {
                        "cancelled".to_string()
                    } else {
                        e.chain()
                    }
                };
                // The class read here only routes the bundle: each install
                // verifies it whole and refuses the other class.
                let class = nasvisor_firmware::open_file(&path)
                    .and_then(|b| b.unverified_manifest())
                    .map(|m| m.class)
                    .map_err(|e| e.to_string())?;
                match class {
                    Class::Reboot => slots
                        .install(&path, &policy, &mut progress)
                        .map(Done::Slot)
                        .map_err(chain),
                    Class::Service => slots
                        .install_service(&path, &policy, &mut progress)
                        .map(Done::Service)
                        .map_err(chain),
                }
            })
            .await;
            std::fs::remove_file(&bundle).best_effort("remove an installed bundle");
            let target = Some(format!("host/{}", me.host.id));
            let mut restart = false;
            let outcome = match r {
                Ok(Ok(Done::Slot(done))) => {
                    let msg = format!(
                        "firmware {} installed into slot {} ({}); it boots at the next reboot",
                        done.version, done.slot, done.entry
                    );
                    me.event("firmware-installed", Severity::Info, target, msg.clone())
                        .await;
                    Ok(msg)
                }
                Ok(Ok(Done::Service(staged))) => {
                    let msg = format!(
                        "service release {} staged (previously {}); nasvisord restarts into it, VMs keep running",
                        staged.version,
                        staged.previous.as_deref().unwrap_or("the slot's own")
                    );
                    me.event(
                        "firmware-service-staged",
                        Severity::Info,
                        target,
                        msg.clone(),
                    )
                    .await;
                    restart = true;
                    Ok(msg)
                }
                Ok(Err(e)) if e == "cancelled" => Err(JobFailure::Cancelled),
                Ok(Err(e)) => {
                    me.event(
                        "firmware-install-failed",
                        Severity::Warning,
                        target,
                        format!("firmware install failed: {e}"),
                    )
                    .await;
                    Err(JobFailure::Failed(e))
                }
                Err(e) => Err(JobFailure::Failed(format!("the install task failed: {e}"))),
            };
            me.job_finish(&ctx, outcome).await;
            if restart {
                // A moment for whoever follows the job (`firmware install
                // --wait` polls every 250 ms) to see it end before the
                // endpoint goes away for the restart.
                tokio::time::sleep(RESTART_GRACE).await;
                me.service_restart.notify_one();
            }
        });
        Ok(job.view())
    }

    /// At start: judges the pending update by the slot booted and its
    /// entry (succeeded: the rollback floor rises; failed: back on the
    /// other slot), and says so in an event. Whether it is still pending.
    pub(crate) async fn reconcile_firmware(&self) -> bool {
        let Some(settings) = self.cfg.firmware.clone() else {
            return false;
        };
        if let Ok(rd) = std::fs::read_dir(settings.upload_dir()) {
            for e in rd.flatten() {
                std::fs::remove_file(e.path()).best_effort("remove a stale uploaded bundle");
            }
        }
        let slots = settings.slot_set();
        tokio::task::spawn_blocking(move || slots.clean_stale())
            .await
            .best_effort("clean what an interrupted install left");
        self.judge_firmware(&settings).await
    }

    /// Judges the pending update (see [`Inner::reconcile_firmware`]) and
    /// says so in an event; whether it is still pending.
    pub(crate) async fn judge_firmware(&self, settings: &FirmwareSettings) -> bool {
        let slots = settings.slot_set();
        let r = tokio::task::spawn_blocking(move || slots.reconcile()).await;
        let target = Some(format!("host/{}", self.host.id));
        match r {
            Ok(Ok(Reconciled::Succeeded {
                slot,
                version,
                floor,
            })) => {
                self.event(
                    "firmware-update-succeeded",
                    Severity::Info,
                    target,
                    format!("firmware {version} booted healthily from slot {slot}; rollback floor {floor}"),
                )
                .await
            }
            Ok(Ok(Reconciled::Failed { version, reason, .. })) => {
                self.event(
                    "firmware-update-failed",
                    Severity::Warning,
                    target,
                    format!("firmware update to {version} failed: {reason}"),
                )
                .await
            }
            Ok(Ok(Reconciled::Nothing)) => {}
            Ok(Ok(Reconciled::StillPending)) => return true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot judge the pending firmware update")
            }
            Err(e) => tracing::error!(error = %e, "the firmware reconcile task failed"),
        }
        false
    }

    /// The service release this process runs, on trial: once the host is
    /// ready (in a cluster: in touch with a majority), it is healthy.
    pub(crate) async fn confirm_service_release(&self) {
        let (Some(settings), Some(version)) =
            (self.cfg.firmware.clone(), self.cfg.service_release.clone())
        else {
            return;
        };
        while !self.has_quorum() {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            }
        }
        let v = version.clone();
        let r = tokio::task::spawn_blocking(move || settings.slot_set().service_healthy(&v)).await;
        match r {
            Ok(Ok(true)) => {
                self.event(
                    "firmware-update-succeeded",
                    Severity::Info,
                    Some(format!("host/{}", self.host.id)),
                    format!("service release {version} is healthy"),
                )
                .await
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot end the service release's trial"),
            Err(e) => tracing::error!(error = %e, "the service release task failed"),
        }
    }

    /// A firmware install interrupted by a restart: its bundle is removed;
    /// the slot it was writing has no boot entry.
    pub(crate) fn recover_firmware_job(&self, job: &FirmwareJob) -> String {
        std::fs::remove_file(&job.bundle).best_effort("remove an interrupted install's bundle");
        "interrupted by a restart of nasvisord; the slot being written has no boot entry (install again)".into()
    }
}

/// Writes the body to a new file in `dir`; removes it when the body ends
/// in an error (a client that broke off, an upload over the limit).
/// Receives an uploaded bundle into the data directory. Its start is
/// checked first, as the install will check it (signature, product, board,
/// expiry, floors, class): a bundle the install would refuse is refused
/// before its payload is stored, and one that the data partition has no
/// room for is refused with what it needs. The body may not run past the
/// bundle its manifest describes.
pub(crate) async fn receive(
    mut body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    settings: &FirmwareSettings,
) -> Result<Received, CoreError> {
    let body_err = |e: std::io::Error| errors::invalid("body", e.to_string());
    let mut head = Vec::with_capacity(BUNDLE_HEAD_BYTES);
    let mut spill = None;
    while head.len() < BUNDLE_HEAD_BYTES {
        let Some(chunk) = body.next().await else {
            break;
        };
        let chunk = chunk.map_err(body_err)?;
        let take = (BUNDLE_HEAD_BYTES - head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..take]);
        if take < chunk.len() {
            spill = Some(chunk.slice(take..));
        }
    }
    let slots = settings.slot_set();
    let policy = settings.policy().map_err(errors::internal)?;
    let checked =
        tokio::task::spawn_blocking(move || slots.precheck(&head, &policy).map(|m| (m, head)))
            .await
            .map_err(errors::internal)?;
    if checked.is_err() {
        // The rest is read and dropped before the refusal is answered: a
        // client still sending a large bundle gets the answer, not a
        // connection cut under its upload.
        while let Some(Ok(_)) = body.next().await {}
    }
    let (manifest, head) = checked.map_err(|e| match e {
        InstallError::Bundle(_) | InstallError::WrongClass { .. } => {
            errors::invalid("bundle", e.chain())
        }
        InstallError::Slot(e @ nasvisor_firmware::SlotError::NotBootedFromSlot { .. }) => {
            errors::conflict(e.to_string())
        }
        e => errors::internal(e.chain()),
    })?;

    let dir = settings.upload_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| errors::internal(format!("cannot create {}: {e}", dir.display())))?;
    // The payload, the head, and at most the 10 KiB record of padding a
    // tar writer may add after the end marker.
    let most = manifest.payload.size + (BUNDLE_HEAD_BYTES + 1024 + 10 * 1024) as u64;
    let no_room = |free: u64| {
        errors::conflict(format!(
            "{} has {} MiB free; bundle {} needs {} MiB there until it is installed",
            dir.display(),
            free >> 20,
            manifest.version,
            most.div_ceil(1 << 20)
        ))
    };
    let free = nasvisor_storage::fs_usage(&dir)
        .map_err(|e| errors::internal(e.to_string()))?
        .free_bytes;
    if free < most {
        while let Some(Ok(_)) = body.next().await {}
        return Err(no_room(free));
    }
    let path = dir.join(format!(
        "{}.nvfw",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| errors::internal(format!("cannot create {}: {e}", path.display())))?;
    let write_err = |e: std::io::Error| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            no_room(nasvisor_storage::fs_usage(&dir).map_or(0, |u| u.free_bytes))
        } else {
            errors::internal(format!("cannot write {}: {e}", path.display()))
        }
    };
    let mut sha = Sha256::new();
    let mut written = head.len() as u64;
    let r: Result<(), CoreError> = async {
        sha.update(&head);
        file.write_all(&head).await.map_err(write_err)?;
        let mut next = spill;
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match body.next().await {
                    Some(c) => c.map_err(body_err)?,
                    None => break,
                },
            };
            written += chunk.len() as u64;
            if written > most {
                return Err(errors::invalid(
                    "body",
                    format!(
                        "longer than the bundle its manifest describes (a payload of {} bytes)",
                        manifest.payload.size
                    ),
                ));
            }
            sha.update(&chunk);
            file.write_all(&chunk).await.map_err(write_err)?;
        }
        file.sync_all().await.map_err(write_err)
    }
    .await;
    if let Err(e) = r {
        drop(file);
        tokio::fs::remove_file(&path)
            .await
            .best_effort("remove a partly received bundle");
        return Err(e);
    }
    Ok(Received {
        path,
        sha256: hex::encode(sha.finalize()),
        size: written,
        manifest,
    })
}

/// A bundle received whole into the upload directory, its start checked.
pub(crate) struct Received {
    /// Where it is.
    pub path: PathBuf,
    /// The SHA-256 of the whole file, hex, hashed as it arrived.
    pub sha256: String,
    /// Its size, bytes.
    pub size: u64,
    /// Its manifest (the signature checked against this host's keys).
    pub manifest: nasvisor_firmware::Manifest,
}

/// How long after a service release's install job ended nasvisord
/// restarts into it.
pub(crate) const RESTART_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What an install job did.
enum Done {
    Slot(nasvisor_firmware::Installed),
    Service(nasvisor_firmware::Staged),
}

/// The API form of the status.
fn view(s: FirmwareStatus) -> FirmwareView {
    FirmwareView {
        booted: s.booted.to_string(),
        slots: s
            .slots
            .into_iter()
            .map(|x| {
                let (state, tries_left, tries_done) = match x.state {
                    SlotState::Booted => (FirmwareSlotState::Booted, None, None),
                    SlotState::Good => (FirmwareSlotState::Good, None, None),
                    SlotState::Pending { tries_left } => {
                        (FirmwareSlotState::Pending, Some(tries_left), None)
                    }
                    SlotState::Bad { tries } => (FirmwareSlotState::Bad, None, Some(tries)),
                    SlotState::Empty => (FirmwareSlotState::Empty, None, None),
                };
                FirmwareSlotView {
                    slot: x.slot.to_string(),
                    state,
                    tries_left,
                    tries_done,
                    version: x.version,
                    generation: x.generation,
                    entry: x.entry,
                    blessed: x.blessed,
                }
            })
            .collect(),
        rollback_floor: s.rollback_floor,
        clock_floor: s.clock_floor,
        pending: s.pending.map(|p| FirmwarePendingView {
            slot: p.slot.to_string(),
            version: p.version,
            generation: p.generation,
            installed_at: p.installed_at,
        }),
        last_outcome: s.last_outcome.map(|o| FirmwareOutcomeView {
            result: match o.result {
                OutcomeKind::Installed => FirmwareOutcomeKind::Installed,
                OutcomeKind::Succeeded => FirmwareOutcomeKind::Succeeded,
                OutcomeKind::Failed => FirmwareOutcomeKind::Failed,
            },
            at: o.at,
            version: o.version,
            slot: o.slot.map(|s| s.to_string()),
            code: o.code,
            reason: o.reason,
        }),
        service: None,
        watchdog: None,
        secure_boot: None,
    }
}

#[cfg(test)]
mod tests {
    //! The install through the core, as the API drives it: a real signed
    //! bundle of a real erofs image streamed in, a job that ends, the
    //! status, and the judgement at start; the slots are sparse files and
    //! the ESP a directory.

    use super::*;
    use crate::{AccelSetting, CoreConfig, NasCore};
    use nasvisor_api_types::{Action, Answer, JobState};
    use nasvisor_firmware::{build, BuildSpec, Class};
    use nasvisor_plugin_host::{PolicyHost, Runtime, RuntimeConfig};
    use std::path::Path;
    use std::time::Duration;

    const OPTIONS: &str =
        "root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a console=ttyS0";

    fn layout(p: &Path) -> (FirmwareSettings, PathBuf) {
        let keys = p.join("keys");
        std::fs::create_dir_all(keys.join("trusted")).unwrap();
        nasvisor_signing::write_keypair(
            &nasvisor_signing::generate_key(),
            &keys.join("vendor.key"),
            &keys.join("trusted/vendor.pub"),
        )
        .unwrap();
        for s in ["a", "b"] {
            std::fs::File::create(p.join(format!("slot-{s}.img")))
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
        }
        let entries = p.join("esp/loader/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(
            entries.join("nasvisor-1-a.conf"),
            format!("title nasvisor 2.0.1 (slot a)\nversion 2.0.1\nlinux /nasvisor/a/vmlinuz\ninitrd /nasvisor/a/initrd.img\noptions {OPTIONS}\n"),
        )
        .unwrap();
        std::fs::write(p.join("cmdline"), OPTIONS).unwrap();
        // The slot image and its bundle.
        let root = p.join("root");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/vmlinuz"), b"kernel 2.1.0").unwrap();
        std::fs::write(root.join("boot/initrd.img"), vec![7u8; 300_000]).unwrap();
        let img = p.join("rootfs.erofs");
        let out = std::process::Command::new("mkfs.erofs")
            .arg(&img)
            .arg(&root)
            .output()
            .expect("mkfs.erofs (erofs-utils)");
        assert!(out.status.success());
        let now = time::OffsetDateTime::now_utc();
        let spec = BuildSpec {
            product: "acme-nas".into(),
            compatible: vec!["acme-nas4".into()],
            version: semver::Version::new(2, 1, 0),
            min_version: None,
            class: Class::Reboot,
            created: now - time::Duration::days(1),
            expires: now + time::Duration::days(180),
            payload_name: Some("rootfs.erofs".into()),
        };
        let key = nasvisor_signing::read_signing_key(&keys.join("vendor.key")).unwrap();
        let bundle = p.join("update.nvfw");
        build(&spec, &img, Some(&key), &bundle).unwrap();
        let settings = FirmwareSettings {
            slots: SlotConfig {
                esp: p.join("esp"),
                devices: [p.join("slot-a.img"), p.join("slot-b.img")],
                cmdline: p.join("cmdline"),
                state_dir: p.join("data/firmware"),
                tries: 3,
                efivars: p.join("efivars"),
            },
            trusted_keys_dir: keys.join("trusted"),
            product: "acme-nas".into(),
            board: "acme-nas4".into(),
            service_deadline: Duration::from_secs(120),
        };
        (settings, bundle)
    }

    async fn start(dir: &Path, firmware: Option<FirmwareSettings>) -> NasCore {
        let mut cfg = CoreConfig::new(dir.join("data"));
        cfg.host_name = "nas1".into();
        cfg.accel = AccelSetting::Tcg;
        cfg.cluster_address = "127.0.0.1:0".into();
        cfg.firmware = firmware;
        let rt = Arc::new(Runtime::new(RuntimeConfig::default(), Vec::new()).unwrap());
        let policy = Arc::new(PolicyHost::new(rt, None));
        let downloader = Arc::new(nasvisor_download::HttpDownloader::new().unwrap());
        NasCore::start(
            cfg,
            policy,
            nasvisor_cluster_net::TlsNet::shared(),
            downloader,
        )
        .await
        .unwrap()
    }

    fn body_of(bytes: Vec<u8>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin {
        futures_util::stream::iter(
            bytes
                .chunks(100_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
    }

    async fn status(core: &NasCore) -> FirmwareView {
        match core.admin(Action::GetFirmware).await.unwrap() {
            Answer::Firmware(v) => *v,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_uploaded_bundle_installs_as_a_job_and_the_next_start_judges_it() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, bundle) = layout(dir.path());
        let core = start(dir.path(), Some(settings.clone())).await;
        let before = status(&core).await;
        assert_eq!(before.booted, "a");
        assert_eq!(before.slots[1].state, FirmwareSlotState::Empty);
        // No efivarfs under the test layout: not a UEFI boot.
        assert_eq!(before.secure_boot.as_deref(), Some("unsupported"));

        let job = core
            .inner
            .install_firmware(body_of(std::fs::read(&bundle).unwrap()))
            .await
            .unwrap();
        assert_eq!(job.kind, "firmware-install");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let job = loop {
            let j = core.inner.get_job(&job.id).await.unwrap();
            if j.state.is_final() {
                break j;
            }
            assert!(std::time::Instant::now() < deadline, "{j:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert!(job.message.unwrap().contains("into slot b"));
        // The received bundle is gone.
        let uploads = std::fs::read_dir(settings.upload_dir()).unwrap().count();
        assert_eq!(uploads, 0);

        let s = status(&core).await;
        assert_eq!(s.slots[1].state, FirmwareSlotState::Pending);
        assert_eq!(s.slots[1].tries_left, Some(3));
        assert_eq!(s.slots[1].version.as_deref(), Some("2.1.0"));
        assert_eq!(s.pending.as_ref().unwrap().slot, "b");
        assert_eq!(
            s.last_outcome.as_ref().unwrap().result,
            FirmwareOutcomeKind::Installed
        );

        // The reboot: slot b booted, and systemd-bless-boot blessed it.
        std::fs::write(
            dir.path().join("cmdline"),
            OPTIONS
                .replace("nasvisor-a", "nasvisor-b")
                .replace("slot=a", "slot=b"),
        )
        .unwrap();
        let entries = dir.path().join("esp/loader/entries");
        std::fs::rename(
            entries.join("nasvisor-2-b+3.conf"),
            entries.join("nasvisor-2-b.conf"),
        )
        .unwrap();
        core.inner.reconcile_firmware().await;
        let s = status(&core).await;
        assert_eq!(s.booted, "b");
        assert_eq!(s.slots[1].state, FirmwareSlotState::Booted);
        assert_eq!(s.rollback_floor.as_deref(), Some("2.1.0"));
        assert_eq!(
            s.last_outcome.as_ref().unwrap().result,
            FirmwareOutcomeKind::Succeeded
        );
        assert!(s.pending.is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_bundle_fails_its_job_with_the_reason_and_a_disabled_host_answers_409() {
        let dir = tempfile::tempdir().unwrap();
        let (mut settings, bundle) = layout(dir.path());
        settings.board = "acme-nas2".into();
        let uploads = settings.upload_dir();
        let core = start(dir.path(), Some(settings.clone())).await;
        // Refused from its start, before the payload is stored: no job.
        let e = core
            .inner
            .install_firmware(body_of(std::fs::read(&bundle).unwrap()))
            .await
            .unwrap_err();
        match &e {
            CoreError::Invalid { field, reason } => {
                assert_eq!(field, "bundle");
                assert!(reason.contains("incompatible board"), "{reason}");
            }
            other => panic!("not a refusal of the bundle: {other:?}"),
        }
        let left = std::fs::read_dir(&uploads).map_or(0, |d| d.count());
        assert_eq!(left, 0, "a refused upload left a file");
        let s = status(&core).await;
        assert_eq!(s.slots[1].state, FirmwareSlotState::Empty);

        // A body that runs past the bundle its manifest describes.
        core.shutdown().await.unwrap();
        let dir3 = tempfile::tempdir().unwrap();
        let (settings, bundle) = layout(dir3.path());
        let uploads = settings.upload_dir();
        let core = start(dir3.path(), Some(settings)).await;
        let mut bytes = std::fs::read(&bundle).unwrap();
        bytes.extend(std::iter::repeat_n(0u8, 200 * 1024));
        let e = core
            .inner
            .install_firmware(body_of(bytes))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CoreError::Invalid { field, reason } if field == "body" && reason.contains("longer than the bundle")),
            "{e:?}"
        );
        let left = std::fs::read_dir(&uploads).map_or(0, |d| d.count());
        assert_eq!(left, 0, "a refused upload left a file");
        core.shutdown().await.unwrap();

        let dir2 = tempfile::tempdir().unwrap();
        let off = start(dir2.path(), None).await;
        let e = off.admin(Action::GetFirmware).await.unwrap_err();
        assert!(matches!(e, CoreError::Conflict { .. }), "{e}");
    }
}
