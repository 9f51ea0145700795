//! Resuming a lost replica from a record of the writes it missed (a dirty
//! bitmap), in place of a full copy.
//!
//! - **Recording.** When a replica is lost and may come back (its server
//!   still runs on the same passive host, only the link failed),
//!   [`detach_tracking`] puts a dirty bitmap on each replicated disk
//!   *before* the guest goes on alone: from the write the guest was held on
//!   (retried by `cont`), it marks every area written without the replica.
//! - **Resuming.** [`resume`] copies only those areas onto the replica, in
//!   rounds with the guest running (`blockdev-backup`, `sync: bitmap`,
//!   `bitmap-mode: on-success`: a round copies what the bitmap marked when
//!   it began, and the bitmap then marks only what was written during it).
//!   Once little is left, the last round runs with the guest paused and the
//!   replica joins the quorum, as after [`super::link::attach`]. A failed
//!   round leaves the bitmap marking all it marked, so the next resume
//!   misses nothing.
//! - **When it is correct.** The bitmap lives in QEMU's memory, as long as
//!   the VM's QEMU (across restarts of nasvisord). It is only enough when the
//!   replica still holds every write acknowledged before the loss, which
//!   holds while the replica's server kept running: writes it acknowledged
//!   but had not flushed live in its memory (qcow2 metadata) and in the
//!   passive host's page cache. After a restart of that server or of its
//!   host, the caller makes a full copy instead.

use std::future::Future;
use std::time::{Duration, Instant};

use super::link::{self, qmp_err, LinkError, LinkState};
use crate::migration::{MirrorProgress, MirrorTarget};
use crate::qmp::{BlockdevBitmapBackup, BlockdevOptions, JobStatus, NbdNode, QmpClient, TlsClient};

/// The dirty bitmap of a replicated disk whose replica is away.
pub const CHANGES: &str = "nv-replica-changes";
/// Its granularity: a qcow2 cluster.
const GRANULARITY: u64 = 64 << 10;
/// Once at most this much is left to copy, the last round runs with the
/// guest paused.
const LAST_ROUND: u64 = 4 << 20;
/// Rounds with the guest running, at most (a guest that writes faster than
/// the link copies is paused for the rest after that many).
const MAX_ROUNDS: u32 = 12;
/// How long the last round may keep the guest paused.
const LAST_ROUND_WAIT: Duration = Duration::from_secs(30);
/// How often a round's jobs are looked at.
const POLL: Duration = Duration::from_millis(50);

/// What [`resume`] did.
#[derive(Debug)]
pub struct Resumed {
    /// The replicas' sockets (their kill switch).
    pub sockets: link::Sockets,
    /// Bytes copied onto the replicas, over every round.
    pub copied: u64,
    /// Rounds with the guest running.
    pub rounds: u32,
    /// How long the guest was paused for the last round and the swap.
    pub paused: Duration,
}

/// Starts recording, on each replicated disk of `nodes`, the writes its
/// replica misses (unless it already does), then takes the replica out of
/// its quorum as [`link::detach`] does. The guest held on a failed write
/// goes on with `cont` afterwards; [`resume`] brings the replica back.
pub async fn detach_tracking(qmp: &QmpClient, nodes: &[String]) -> Result<(), LinkError> {
    for node in nodes {
        let have = qmp
            .dirty_bitmap(node, CHANGES)
            .await
            .map_err(qmp_err(node, "reading its dirty bitmaps"))?;
        if have.is_none() {
            qmp.block_dirty_bitmap_add(node, CHANGES, GRANULARITY)
                .await
                .map_err(qmp_err(node, "recording the writes its replica misses"))?;
        }
    }
    link::unlink(qmp, nodes).await
}

/// Bytes the record of missed writes marks over `nodes`; `None` when a disk
/// of them has no such record (its replica needs a full copy).
pub async fn missed(qmp: &QmpClient, nodes: &[String]) -> Result<Option<u64>, LinkError> {
    let mut sum = 0;
    for node in nodes {
        match qmp
            .dirty_bitmap(node, CHANGES)
            .await
            .map_err(qmp_err(node, "reading its dirty bitmaps"))?
        {
            Some(b) => sum += b.count,
            None => return Ok(None),
        }
    }
    Ok(Some(sum))
}

/// Drops the record of missed writes of each of `nodes` that has one.
pub(super) async fn forget_changes(qmp: &QmpClient, nodes: &[String]) -> Result<(), LinkError> {
    for node in nodes {
        let have = qmp
            .dirty_bitmap(node, CHANGES)
            .await
            .map_err(qmp_err(node, "reading its dirty bitmaps"))?;
        if have.is_some() {
            qmp.block_dirty_bitmap_remove(node, CHANGES)
                .await
                .map_err(qmp_err(node, "dropping the record of missed writes"))?;
        }
    }
    Ok(())
}

/// Brings each of `targets`' replicas (lost, and kept by a server that ran
/// on) back in step by copying only the writes it missed, then makes it a
/// member of its disk's quorum again (see the module's text). `progress`
/// hears how much of what was missed is copied. On failure every disk is
/// left alone, still recording what its replica misses, and no node of the
/// attempt is left.
pub async fn resume(
    qmp: &QmpClient,
    targets: &[MirrorTarget],
    tls: Option<&TlsClient>,
    cancel: impl Future<Output = ()>,
    progress: impl FnMut(MirrorProgress),
) -> Result<Resumed, LinkError> {
    for t in targets {
        if link::state(qmp, &t.node).await? == LinkState::Replicated {
            return Err(LinkError::Attached {
                disk: t.node.clone(),
            });
        }
        if missed(qmp, std::slice::from_ref(&t.node)).await?.is_none() {
            return Err(LinkError::Untracked {
                disk: t.node.clone(),
            });
        }
    }
    let nodes: Vec<String> = targets.iter().map(|t| t.node.clone()).collect();
    link::clear_leftovers(qmp, &nodes).await?;
    let r = resume_linked(qmp, targets, tls, cancel, progress).await;
    if r.is_err() {
        if let Err(e) = link::unlink(qmp, &nodes).await {
            tracing::warn!(error = %e, "undoing a failed replica resume");
        }
    }
    r
}

async fn resume_linked(
    qmp: &QmpClient,
    targets: &[MirrorTarget],
    tls: Option<&TlsClient>,
    cancel: impl Future<Output = ()>,
    mut progress: impl FnMut(MirrorProgress),
) -> Result<Resumed, LinkError> {
    let mut sockets = Vec::new();
    for t in targets {
        let (server, name, fd) = link::hand_over(qmp, t).await?;
        let nbd = NbdNode::at(&link::replica_node(&t.node), server, &t.export, tls);
        let added =
            link::bounded_open(&fd, &t.node, qmp.blockdev_add(&BlockdevOptions::Nbd(nbd))).await;
        if let Err(e) = added {
            link::close_unused(qmp, &t.node, &name).await;
            return Err(qmp_err(&t.node, "connecting its replica")(e));
        }
        sockets.push((t.node.clone(), fd));
    }
    let nodes: Vec<String> = targets.iter().map(|t| t.node.clone()).collect();
    let left = || async {
        missed(qmp, &nodes)
            .await?
            .ok_or_else(|| LinkError::Untracked {
                disk: nodes.join(", "),
            })
    };
    let total = left().await?;
    tokio::pin!(cancel);
    let mut copied = 0;
    let mut rounds = 0;
    loop {
        let now = left().await?;
        progress(MirrorProgress {
            done: total.saturating_sub(now),
            len: total,
        });
        if now <= LAST_ROUND || rounds >= MAX_ROUNDS {
            break;
        }
        copied += round(qmp, targets, &mut cancel, None).await?;
        rounds += 1;
    }
    let running = qmp
        .query_status()
        .await
        .map_err(qmp_err(&nodes[0], "query-status"))?
        .running;
    if running {
        qmp.stop()
            .await
            .map_err(qmp_err(&nodes[0], "pausing the guest for the last round"))?;
    }
    let paused_at = Instant::now();
    let last = async {
        let n = round(qmp, targets, &mut cancel, Some(LAST_ROUND_WAIT)).await?;
        link::join_quorum(qmp, targets).await?;
        Ok::<u64, LinkError>(n)
    }
    .await;
    if running {
        qmp.cont().await.map_err(qmp_err(
            &nodes[0],
            "resuming the guest after the last round",
        ))?;
    }
    let paused = paused_at.elapsed();
    copied += last?;
    forget_changes(qmp, &nodes).await?;
    progress(MirrorProgress {
        done: total,
        len: total,
    });
    Ok(Resumed {
        sockets: link::Sockets::from(sockets),
        copied,
        rounds,
        paused,
    })
}

/// One round: copies, for each target, what its disk's record marks now
/// onto its replica node. Returns the bytes copied. Fails when a copy
/// fails, `cancel` resolves, or `within` passes; the jobs are then gone and
/// the records mark all they marked.
async fn round(
    qmp: &QmpClient,
    targets: &[MirrorTarget],
    cancel: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    within: Option<Duration>,
) -> Result<u64, LinkError> {
    let mut jobs: Vec<(String, String)> = Vec::new();
    let mut started = Ok(());
    for t in targets {
        let job = link::replica_node(&t.node);
        let backup = BlockdevBitmapBackup::new(&job, &t.node, &job, CHANGES);
        if let Err(e) = qmp.blockdev_bitmap_backup(&backup).await {
            started = Err(qmp_err(&t.node, "copying the writes its replica missed")(e));
            break;
        }
        jobs.push((t.node.clone(), job));
    }
    let r = match started {
        Ok(()) => wait_jobs(qmp, &jobs, cancel, within).await,
        Err(e) => Err(e),
    };
    if r.is_err() {
        // The round's jobs (and its node) go, as an attempt's leftovers.
        let nodes: Vec<String> = jobs.iter().map(|(disk, _)| disk.clone()).collect();
        if let Err(e) = link::clear_leftovers(qmp, &nodes).await {
            tracing::warn!(error = %e, "ending a failed resync round");
        }
    }
    r
}

/// Waits until every one of `jobs` (disk, job id) concluded, and dismisses
/// each; the bytes they copied.
async fn wait_jobs(
    qmp: &QmpClient,
    jobs: &[(String, String)],
    cancel: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    within: Option<Duration>,
) -> Result<u64, LinkError> {
    let deadline = within.map(|d| Instant::now() + d);
    let mut pending: Vec<(String, String)> = jobs.to_vec();
    let mut copied = 0;
    while !pending.is_empty() {
        let list = qmp
            .query_block_jobs()
            .await
            .map_err(qmp_err(&pending[0].0, "query-block-jobs"))?;
        let mut still = Vec::new();
        for (disk, job) in &pending {
            let Some(j) = list.iter().find(|j| j.device == *job) else {
                return Err(LinkError::Resync {
                    disk: disk.clone(),
                    reason: format!("job {job} ended unseen"),
                });
            };
            if j.status != JobStatus::Concluded {
                still.push((disk.clone(), job.clone()));
                continue;
            }
            qmp.job_dismiss(job)
                .await
                .map_err(qmp_err(disk, "job-dismiss"))?;
            if let Some(reason) = &j.error {
                return Err(LinkError::Resync {
                    disk: disk.clone(),
                    reason: reason.clone(),
                });
            }
            copied += j.len;
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(LinkError::Resync {
                disk: pending[0].0.clone(),
                reason: format!(
                    "the last round did not end within {:?}",
                    within.unwrap_or_default()
                ),
            });
        }
        tokio::select! {
            _ = cancel.as_mut() => {
                return Err(LinkError::Resync {
                    disk: pending[0].0.clone(),
                    reason: "cancelled".into(),
                })
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    Ok(copied)
}
