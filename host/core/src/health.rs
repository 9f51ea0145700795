//! This host's own health checks. They run in a task of their own every
//! few seconds, each with a time limit (a hung NFS mount must not hang the
//! heartbeat), and the heartbeat answer carries their last findings:
//!
//! - each pool this host reaches: mounted read-only, or its filesystem
//!   nearly full; and every minute (not every round: a NAS's disks must be
//!   able to spin down) a write probe (create, write, fsync, remove a file);
//! - the data directory's filesystem nearly full;
//! - the QEMU binary missing or not executable;
//! - a vswitch uplink missing, detached or without carrier.
//!
//! The pools' capacity and free space are measured by these rounds too,
//! and kept ([`Inner::pool_usage`]): the heartbeat's answer, the metrics,
//! placement and `pool list` read them, and never wait on a filesystem
//! from an async task.
//!
//! A check that hangs (a pool on a dead disk or a hard NFS mount does not
//! answer `statfs`) is a finding that names what it was checking, and no
//! new round starts until it returns: the hung thread is not joined by
//! another every few seconds.
//!
//! The leader records the findings in the host's record (`problems`) with
//! an event when they change; the host view shows them as health
//! `degraded`. An administrator's `host degrade` is recorded apart
//! (`maintenance`).

use crate::model::{kind, HostRecord, VswitchRecord};
use crate::{lock, Inner};
use nasvisor_net::{BridgeName, Vswitch};
use nasvisor_storage::PoolUsage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the checks run.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Every how many rounds the pools get a write probe (once a minute).
const PROBE_EVERY_ROUNDS: u64 = 12;
/// How long one round of checks may take before it is a finding itself.
const CHECK_LIMIT: Duration = Duration::from_secs(10);
/// A filesystem with less free than this share of its size is nearly full.
const NEARLY_FULL_SHARE: f64 = 0.05;
/// ... or with less than this many bytes free.
const NEARLY_FULL_BYTES: u64 = 1 << 30;

/// The last findings of this host's checks.
#[derive(Default)]
pub(crate) struct HealthChecks {
    problems: Mutex<Vec<String>>,
    /// What the last write probes found (kept between probe rounds).
    probe_problems: Mutex<Vec<String>>,
    rounds: std::sync::atomic::AtomicU64,
    /// A round that outlived its limit and has not returned yet.
    stuck: Mutex<Option<Arc<Round>>>,
    /// The last measured usage of each pool this host reaches, by name.
    usage: Arc<Mutex<HashMap<String, PoolUsage>>>,
}

/// One round of checks on its blocking thread: what it is checking now,
/// and whether it returned.
struct Round {
    doing: Mutex<String>,
    /// The pool being checked now, if it is one.
    pool: Mutex<Option<String>>,
    finished: std::sync::atomic::AtomicBool,
}

impl Round {
    fn new() -> Round {
        Round {
            doing: Mutex::new("the health checks".into()),
            pool: Mutex::new(None),
            finished: Default::default(),
        }
    }

    fn doing(&self, what: String) {
        *lock(&self.doing) = what;
        *lock(&self.pool) = None;
    }

    fn doing_pool(&self, name: &str, path: &Path) {
        *lock(&self.doing) = format!("pool {name} ({})", path.display());
        *lock(&self.pool) = Some(name.to_string());
    }

    fn what(&self) -> String {
        lock(&self.doing).clone()
    }

    fn finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Marks its round returned when dropped (also when a check panics).
struct Finish(Arc<Round>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0
            .finished
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl HealthChecks {
    /// What the last round found (empty: healthy).
    pub(crate) fn problems(&self) -> Vec<String> {
        lock(&self.problems).clone()
    }

    fn set(&self, p: Vec<String>) {
        *lock(&self.problems) = p;
    }
}

/// What one round checks, gathered from the store on the async side.
struct Targets {
    pools: Vec<(String, PathBuf)>,
    data_dir: PathBuf,
    qemu: PathBuf,
    uplinks: Vec<(String, String)>,
}

impl Inner {
    /// Starts the checks' task; the first round runs at once.
    pub(crate) fn spawn_health_checks(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { break };
                me.check_health_once().await;
                drop(me);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                }
            }
        });
    }

    /// One round of checks, recorded in `self.health`.
    pub(crate) async fn check_health_once(&self) {
        let stuck = lock(&self.health.stuck).clone();
        if let Some(r) = stuck {
            if !r.finished() {
                // The same words as when it began to hang: a finding that
                // changes every round would be an event every round.
                self.set_health(vec![hangs(&r.what())]);
                return;
            }
            *lock(&self.health.stuck) = None;
        }
        let targets = Targets {
            pools: self
                .local_pools()
                .into_iter()
                .map(|p| (p.name, PathBuf::from(p.path)))
                .collect(),
            data_dir: self.cfg.data_dir.clone(),
            qemu: self.cfg.qemu_binary.clone(),
            uplinks: self
                .db
                .list::<VswitchRecord>(kind::VSWITCH)
                .into_iter()
                .filter_map(|s| s.uplink.clone().map(|u| (s.name, u)))
                .collect(),
        };
        let net = self.net.clone();
        let round = self
            .health
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = round.is_multiple_of(PROBE_EVERY_ROUNDS);
        let r = Arc::new(Round::new());
        let on_thread = Arc::clone(&r);
        let usage = Arc::clone(&self.health.usage);
        let run = tokio::task::spawn_blocking(move || {
            let r = Finish(on_thread);
            let mut p = Vec::new();
            let mut probed = Vec::new();
            for (name, path) in &targets.pools {
                r.0.doing_pool(name, path);
                let (found, probe_found, u) = check_pool(name, path, probe);
                p.extend(found);
                probed.extend(probe_found);
                // A pool that cannot be measured any more is not shown
                // with its old figures.
                match u {
                    Some(u) => lock(&usage).insert(name.clone(), u),
                    None => lock(&usage).remove(name),
                };
            }
            r.0.doing(format!(
                "the data directory ({})",
                targets.data_dir.display()
            ));
            p.extend(check_nearly_full("the data directory", &targets.data_dir));
            r.0.doing(format!("the QEMU binary ({})", targets.qemu.display()));
            p.extend(check_qemu(&targets.qemu));
            for (switch, uplink) in &targets.uplinks {
                r.0.doing(format!("vswitch {switch}'s uplink {uplink}"));
                p.extend(check_uplink(&net, switch, uplink));
            }
            (p, probed)
        });
        let problems = match tokio::time::timeout(CHECK_LIMIT, run).await {
            Ok(Ok((mut p, probed))) => {
                let mut kept = lock(&self.health.probe_problems);
                if probe {
                    *kept = probed;
                }
                p.extend(kept.iter().cloned());
                p
            }
            Ok(Err(e)) => vec![format!("the health checks failed: {e}")],
            Err(_) => {
                *lock(&self.health.stuck) = Some(Arc::clone(&r));
                vec![hangs(&r.what())]
            }
        };
        self.set_health(problems);
    }

    /// The pool whose check hangs now (its filesystem does not answer),
    /// if any: work on it is refused at once rather than left to hang one
    /// of the daemon's workers.
    pub(crate) fn hung_pool(&self) -> Option<String> {
        lock(&self.health.stuck)
            .as_ref()
            .filter(|r| !r.finished())
            .and_then(|r| lock(&r.pool).clone())
    }

    /// Pool `name`'s capacity and free space as the health checks last
    /// measured them (every few seconds), if this host reaches it.
    pub(crate) fn pool_usage(&self, name: &str) -> Option<PoolUsage> {
        lock(&self.health.usage).get(name).copied()
    }

    /// Keeps `usage` as pool `name`'s until the next round measures it
    /// (a new pool), or forgets it (`None`: a deleted pool).
    pub(crate) fn note_pool_usage(&self, name: &str, usage: Option<PoolUsage>) {
        let mut all = lock(&self.health.usage);
        match usage {
            Some(u) => all.insert(name.to_string(), u),
            None => all.remove(name),
        };
    }

    fn set_health(&self, problems: Vec<String>) {
        if problems != self.health.problems() {
            tracing::warn!(?problems, "this host's health checks changed");
        }
        self.health.set(problems);
    }

    /// Host `h`'s findings as the cluster knows them: this host's own are
    /// the freshest.
    pub(crate) fn problems_of(&self, h: &HostRecord) -> Vec<String> {
        if h.id == self.host.id {
            self.health.problems()
        } else {
            h.problems.clone()
        }
    }
}

/// The finding of a check of `what` that did not return in time.
fn hangs(what: &str) -> String {
    format!(
        "{what} did not answer within {} s (a hung disk or mount?)",
        CHECK_LIMIT.as_secs()
    )
}

/// A pool's findings, those of its write probe when `probe`, and its
/// usage when it could be measured.
fn check_pool(
    name: &str,
    path: &Path,
    probe: bool,
) -> (Vec<String>, Vec<String>, Option<PoolUsage>) {
    let pool = match nasvisor_storage::Pool::open(name, path) {
        Ok(p) => p,
        Err(e) => {
            return (
                vec![format!("pool {name} cannot be opened: {e}")],
                Vec::new(),
                None,
            )
        }
    };
    let (mut p, mut probed) = (Vec::new(), Vec::new());
    let usage = pool.usage();
    match &usage {
        Ok(u) if u.read_only => p.push(format!(
            "pool {name} is on a filesystem mounted read-only ({})",
            path.display()
        )),
        Ok(_) if probe => {
            if let Err(e) = pool.write_probe() {
                probed.push(format!("pool {name} refuses writes: {e}"));
            }
        }
        Ok(_) => {}
        Err(e) => p.push(format!("pool {name}: {e}")),
    }
    p.extend(check_nearly_full(&format!("pool {name}"), path));
    (p, probed, usage.ok())
}

fn check_nearly_full(what: &str, path: &Path) -> Option<String> {
    let u = nasvisor_storage::fs_usage(path).ok()?;
    let share = u.free_bytes as f64 / u.capacity_bytes.max(1) as f64;
    (share < NEARLY_FULL_SHARE || u.free_bytes < NEARLY_FULL_BYTES).then(|| {
        format!(
            "{what} is nearly full: {} MiB free of {} MiB",
            u.free_bytes >> 20,
            u.capacity_bytes >> 20
        )
    })
}

/// The QEMU binary: a path, or a name looked up in `PATH` as a spawn does.
fn check_qemu(qemu: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if qemu.components().count() > 1 {
        vec![qemu.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(qemu)).collect())
            .unwrap_or_default()
    };
    let runnable = candidates.iter().any(|c| {
        std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    (!runnable).then(|| {
        format!(
            "the QEMU binary {} is missing or not executable: no VM can start here",
            qemu.display()
        )
    })
}

fn check_uplink(net: &nasvisor_net::Net, switch: &str, uplink: &str) -> Option<String> {
    let name = BridgeName::from_short(switch).ok()?;
    match Vswitch::get(net, &name) {
        Ok(Some(vs)) => match vs.uplink {
            Some(u) if !u.attached => Some(format!(
                "vswitch {switch}'s uplink {} is not attached to it",
                u.port
            )),
            Some(u) if !u.carrier => Some(format!(
                "vswitch {switch}'s uplink {} is down (no carrier)",
                u.port
            )),
            Some(_) => None,
            None => Some(format!("vswitch {switch} has lost its uplink {uplink}")),
        },
        Ok(None) => Some(format!("vswitch {switch} is missing on this host")),
        Err(e) => Some(format!("vswitch {switch}: {e}")),
    }
}
