//! The HA lease: how long this host may keep its HA VMs running without
//! word from the cluster (docs/ha.md, "Fencing").
//!
//! The leader starts a lost host's HA VMs elsewhere once the host has been
//! silent for `offline_after + ha_fence_delay` plus [`FAILOVER_MARGIN`],
//! counted from the last heartbeat answer it received. This host counts
//! the same span from its last confirmed contact with the majority:
//!
//! - on a follower, the moment it made the last answer that the leader
//!   acknowledges in its next heartbeat (`Heartbeat.ack_seq`; the leader
//!   received it later), and no later than the leader's last
//!   acknowledgement by the majority (`Heartbeat.quorum_age_ms`: a deposed
//!   leader renews nothing past the moment it lost the majority). A host
//!   whose answers are lost renews nothing, even if it still hears the
//!   leader;
//! - on the leader, its last acknowledgement by the majority.
//!
//! That contact is never later than the answer the leader saw, so this
//! host's deadline comes first:
//!
//! - the daemon stops its HA VMs itself at the deadline (the quorum watch's
//!   clock, `heartbeat.rs`), and starts them again, if they are still its
//!   own, once the lease is renewed;
//! - the watchdog, a process of its own (`nasvisor_watchdog`), kills their
//!   QEMUs [`WATCHDOG_GRACE`] later when the daemon did not: a daemon that
//!   died or hangs renews nothing.

use crate::model::{kind, VmRecord};
use crate::{lock, Inner};
use nasvisor_api_types::peer::Heartbeat;
use nasvisor_watchdog::{monotonic_ms, Guard, Lease, LeaseFile};
use std::collections::VecDeque;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long after the daemon's own deadline the watchdog kills.
pub(crate) const WATCHDOG_GRACE: Duration = Duration::from_millis(500);
/// How long after a lost host's deadline the leader may start its HA VMs
/// elsewhere: the watchdog's grace, the kill itself, and clock drift.
pub(crate) const FAILOVER_MARGIN: Duration = Duration::from_millis(1500);

/// This host's lease.
#[derive(Default)]
pub(crate) struct HaLease {
    /// The last confirmed contact with the majority, `monotonic_ms`; 0
    /// before the first.
    confirmed_ms: AtomicU64,
    /// The file the watchdog reads (none without a watchdog, as in unit
    /// tests).
    file: OnceLock<LeaseFile>,
    /// What was last written, not to write the same twice.
    written: Mutex<Option<Lease>>,
    /// The last answers to the leader's heartbeats: their `seq` and when
    /// they were made (`monotonic_ms`).
    answers: Mutex<VecDeque<(u64, u64)>>,
    /// The last `seq` given.
    last_seq: AtomicU64,
    /// When the watchdog was last looked for.
    watchdog_checked: Mutex<Option<std::time::Instant>>,
    /// Its pid, as last found (0 before).
    watchdog_pid: std::sync::atomic::AtomicU32,
}

/// How often the daemon checks that its watchdog still runs.
const WATCHDOG_CHECK: Duration = Duration::from_secs(10);

/// How many answers are remembered (the leader acknowledges the last one
/// it received, normally the one before).
const ANSWERS_KEPT: usize = 64;

impl HaLease {
    fn confirmed_ms(&self) -> u64 {
        self.confirmed_ms.load(Ordering::Acquire)
    }

    /// The `seq` of a heartbeat answer being made now.
    pub(crate) fn answer_seq(&self) -> u64 {
        let seq = self.last_seq.fetch_add(1, Ordering::AcqRel) + 1;
        let mut a = lock(&self.answers);
        a.push_back((seq, monotonic_ms()));
        while a.len() > ANSWERS_KEPT {
            a.pop_front();
        }
        seq
    }

    /// When answer `seq` was made, if it is remembered.
    fn answered_at(&self, seq: u64) -> Option<u64> {
        lock(&self.answers)
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, t)| *t)
    }
}

impl Inner {
    /// How long a host may go without contact before it must have stopped
    /// its HA VMs.
    pub(crate) fn ha_fence_after(&self) -> Duration {
        self.cfg.offline_after + self.cfg.ha_fence_delay
    }

    /// Starts (or finds again) the watchdog and takes over the lease it
    /// guards: a daemon that restarts keeps the deadline it had, not a
    /// fresh one (the leader counts from its last answer before the
    /// restart). Without a lease on record, the deadline starts now.
    pub(crate) fn start_ha_lease(&self) {
        let now = monotonic_ms();
        let mut confirmed = now;
        if let Some(exe) = &self.cfg.watchdog_exe {
            let dir = self.ha_lease_dir();
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir);
            if let Err(e) = made {
                tracing::error!(dir = %dir.display(), error = %e, "cannot make the HA lease's directory");
            }
            let file = LeaseFile::new(dir.join("lease.json"));
            match file.read() {
                Ok(Some(l)) if l.expires_at_ms > 0 => {
                    let span = (self.ha_fence_after() + WATCHDOG_GRACE).as_millis() as u64;
                    confirmed = l.expires_at_ms.saturating_sub(span).min(now);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the HA lease; it starts now"),
            }
            match file.fired() {
                Ok(Some(f)) => {
                    let vms: Vec<&str> = f.killed.iter().map(|g| g.vm.as_str()).collect();
                    tracing::warn!(
                        ?vms,
                        "the watchdog killed HA VMs while the daemon was away (their lease lapsed)"
                    );
                    file.clear_fired();
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the watchdog's report"),
            }
            let _ = self.cluster.lease.file.set(file);
            self.keep_watchdog(exe);
        }
        self.cluster
            .lease
            .confirmed_ms
            .store(confirmed, Ordering::Release);
        // Answer numbers of this start never repeat an earlier start's,
        // which the leader may still acknowledge.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        self.cluster.lease.last_seq.store(seed, Ordering::Release);
        self.write_ha_lease();
    }

    /// Where the lease lives: `[cluster] ha-lease-dir`, by default
    /// `/run/nasvisor/ha-<hash of the data directory>`, a tmpfs: the lease
    /// means nothing after a reboot, and it is written twice a second,
    /// which must not keep a NAS's disks from spinning down.
    pub(crate) fn ha_lease_dir(&self) -> std::path::PathBuf {
        use sha2::Digest;
        self.cfg.ha_lease_dir.clone().unwrap_or_else(|| {
            let dir = std::fs::canonicalize(&self.cfg.data_dir)
                .unwrap_or_else(|_| self.cfg.data_dir.clone());
            let hash = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
            std::path::PathBuf::from("/run/nasvisor")
                .join(format!("ha-{}", &hex::encode(hash)[..16]))
        })
    }

    /// Starts the watchdog again when it is gone (at most every
    /// [`WATCHDOG_CHECK`]): a daemon that hangs later must still be fenced.
    pub(crate) fn keep_watchdog(&self, exe: &std::path::Path) {
        let Some(file) = self.cluster.lease.file.get() else {
            return;
        };
        {
            let mut last = lock(&self.cluster.lease.watchdog_checked);
            if last.is_some_and(|t| t.elapsed() < WATCHDOG_CHECK) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let log = file
            .path()
            .parent()
            .map(|d| d.join("watchdog.log"))
            .unwrap_or_else(|| "watchdog.log".into());
        match nasvisor_watchdog::ensure_running(exe, file, &log) {
            Ok(pid) => {
                let before = self.cluster.lease.watchdog_pid.swap(pid, Ordering::AcqRel);
                if before != pid {
                    tracing::info!(pid, "HA watchdog running");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the HA watchdog: a dead or hung daemon's HA VMs would not be fenced")
            }
        }
    }

    /// Records a contact with the majority `age` ago, and hands the new
    /// deadline to the watchdog.
    fn renew_ha_lease(&self, age: Duration) {
        self.renew_ha_lease_at(monotonic_ms().saturating_sub(age.as_millis() as u64));
    }

    fn renew_ha_lease_at(&self, at: u64) {
        self.cluster
            .lease
            .confirmed_ms
            .fetch_max(at, Ordering::AcqRel);
        self.write_ha_lease();
    }

    /// On a follower, at a leader's heartbeat: the contact counts from
    /// the moment this host made the answer the leader acknowledges (the
    /// leader saw it later), and not later than the leader's last
    /// acknowledgement by the majority. Nothing without an acknowledged
    /// answer.
    pub(crate) fn renew_ha_lease_from(&self, h: &Heartbeat) {
        let Some(answered) = h.ack_seq.and_then(|s| self.cluster.lease.answered_at(s)) else {
            return;
        };
        let majority = monotonic_ms().saturating_sub(h.quorum_age_ms);
        self.renew_ha_lease_at(answered.min(majority));
    }

    /// On the leader: its lease runs from the majority's last
    /// acknowledgement (nothing when it has none).
    pub(crate) fn renew_own_ha_lease(&self) {
        if let Some(age) = self.db.store().quorum_ack_age() {
            if age <= self.cfg.offline_after {
                self.renew_ha_lease(age);
            }
        }
    }

    /// Whether this host's lease was ever confirmed.
    #[cfg(test)]
    pub(crate) fn ha_lease_confirmed(&self) -> bool {
        self.cluster.lease.confirmed_ms() > 0
    }

    /// Whether this host, in a cluster, went without contact past its
    /// deadline.
    pub(crate) fn ha_lease_lapsed(&self) -> bool {
        let confirmed = self.cluster.lease.confirmed_ms();
        self.multi_host()
            && confirmed > 0
            && monotonic_ms() > confirmed + self.ha_fence_after().as_millis() as u64
    }

    /// The HA VMs with a QEMU on this host.
    pub(crate) fn local_ha_vms(&self) -> Vec<VmRecord> {
        self.processes
            .ids()
            .into_iter()
            .filter_map(|id| self.db.get::<VmRecord>(kind::VM, &id).map(|(v, _)| v))
            .filter(|v| v.ha)
            .collect()
    }

    /// Writes the lease for the watchdog: the deadline and this host's HA
    /// QEMUs. Called when the lease is renewed and when an HA VM starts
    /// or stops here.
    pub(crate) fn write_ha_lease(&self) {
        let Some(file) = self.cluster.lease.file.get() else {
            return;
        };
        let confirmed = self.cluster.lease.confirmed_ms();
        let guests: Vec<Guard> = if self.multi_host() {
            self.local_ha_vms()
                .iter()
                .filter_map(|v| {
                    let pid = self.processes.runtime(&v.id).pid?;
                    Guard::of(&v.name, pid as u32).ok()
                })
                .collect()
        } else {
            Vec::new()
        };
        let lease = Lease {
            expires_at_ms: confirmed + (self.ha_fence_after() + WATCHDOG_GRACE).as_millis() as u64,
            guests,
        };
        let mut written = lock(&self.cluster.lease.written);
        if written.as_ref() == Some(&lease) {
            return;
        }
        match file.write(&lease) {
            Ok(()) => *written = Some(lease),
            Err(e) => tracing::error!(error = %e, "cannot write the HA lease for the watchdog"),
        }
    }
}
