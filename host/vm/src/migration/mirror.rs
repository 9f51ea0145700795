//! Disk mirrors onto another QEMU's NBD exports: each guest disk node
//! `<node>` gets an NBD client node `mig-<node>` and a full mirror job of
//! the same name. The mirrors are ready when every `BLOCK_JOB_READY` has
//! arrived; once the guest is paused, a non-forced cancel of each ends it in
//! sync (`BLOCK_JOB_COMPLETED` without error, no pivot).

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::{next_event, MigrateError, PROGRESS_EVERY};
use crate::qmp::{
    BlockdevMirror, BlockdevOptions, EventKind, InetAddr, MirrorCopyMode, NbdNode, QmpClient,
    QmpEvent, SocketAddress, TlsClient,
};

/// The prefix of the nodes and jobs of a migration's mirrors.
pub const MIRROR_PREFIX: &str = "mig-";

/// The prefix of the nodes and jobs of an HA VM's replica mirrors.
pub const REPLICA_PREFIX: &str = "rep-";

/// How long forced cancels may take before the NBD nodes are removed anyway.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// One disk to mirror: the guest's node and the export that receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTarget {
    /// The guest disk's node (e.g. `disk0`).
    pub node: String,
    /// The NBD server of the other QEMU.
    pub addr: InetAddr,
    /// The export's name there.
    pub export: String,
}

/// Where the mirrors stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MirrorProgress {
    /// Bytes copied, over every mirror.
    pub done: u64,
    /// Bytes to copy, over every mirror (grows while the guest writes).
    pub len: u64,
}

/// The mirrors of one migration, on the source QEMU.
pub struct MirrorSet {
    qmp: QmpClient,
    events: broadcast::Receiver<QmpEvent>,
    /// NBD client nodes added.
    nodes: Vec<String>,
    /// Mirror jobs started.
    jobs: Vec<String>,
    copied: u64,
    /// The prefix of its nodes and jobs.
    prefix: &'static str,
    /// `None`: QEMU's default (background).
    copy_mode: Option<MirrorCopyMode>,
}

fn job_of(node: &str) -> String {
    format!("{MIRROR_PREFIX}{node}")
}

impl MirrorSet {
    /// An empty set on `qmp` (events are followed from now on).
    pub fn new(qmp: &QmpClient) -> Self {
        MirrorSet {
            events: qmp.events(),
            qmp: qmp.clone(),
            nodes: Vec::new(),
            jobs: Vec::new(),
            copied: 0,
            prefix: MIRROR_PREFIX,
            copy_mode: None,
        }
    }

    /// An empty set of synchronous replica mirrors on `qmp`: nodes and jobs
    /// named `rep-<node>`, and `copy-mode: write-blocking`, so that a guest
    /// write completes only once the replica has it too. Such mirrors are
    /// never finished: once ready, they stay in sync until cancelled.
    pub fn replicas(qmp: &QmpClient) -> Self {
        MirrorSet {
            prefix: REPLICA_PREFIX,
            copy_mode: Some(MirrorCopyMode::WriteBlocking),
            ..MirrorSet::new(qmp)
        }
    }

    /// Connects `target`'s export and starts mirroring its disk onto it.
    /// On failure, what was added stays in the set for [`Self::abort`].
    pub async fn add(
        &mut self,
        target: &MirrorTarget,
        tls: Option<&TlsClient>,
    ) -> Result<(), MigrateError> {
        let server = SocketAddress::Inet(target.addr.clone());
        self.add_over(target, server, tls).await
    }

    /// As [`Self::add`], reaching the export at `server` instead of
    /// `target.addr` (a socket the caller connected and handed over).
    pub async fn add_over(
        &mut self,
        target: &MirrorTarget,
        server: SocketAddress,
        tls: Option<&TlsClient>,
    ) -> Result<(), MigrateError> {
        let name = format!("{}{}", self.prefix, target.node);
        let nbd = NbdNode::at(&name, server, &target.export, tls);
        self.qmp
            .blockdev_add(&BlockdevOptions::Nbd(nbd))
            .await
            .map_err(MigrateError::qmp(format!(
                "connecting {} to {}",
                target.node, target.addr
            )))?;
        self.nodes.push(name.clone());
        self.qmp
            .blockdev_mirror(&BlockdevMirror {
                copy_mode: self.copy_mode,
                ..BlockdevMirror::full(&name, &target.node, &name)
            })
            .await
            .map_err(MigrateError::qmp(format!("mirroring {}", target.node)))?;
        self.jobs.push(name);
        Ok(())
    }

    /// Bytes copied by the last progress read.
    pub fn copied(&self) -> u64 {
        self.copied
    }

    /// Waits until every mirror is in sync (`BLOCK_JOB_READY`), reporting
    /// progress every [`PROGRESS_EVERY`]; fails at once when a mirror ends
    /// or `cancel` resolves.
    pub async fn wait_ready(
        &mut self,
        cancel: impl Future<Output = ()>,
        mut progress: impl FnMut(MirrorProgress),
    ) -> Result<(), MigrateError> {
        tokio::pin!(cancel);
        let mut ready = BTreeSet::new();
        let mut last_error: Option<String> = None;
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while ready.len() < self.jobs.len() {
            let mut poll = false;
            tokio::select! {
                _ = &mut cancel => return Err(MigrateError::Cancelled),
                ev = next_event(&mut self.events, "the disk mirrors to be in sync") => match ev? {
                    Some(EventKind::BlockJobReady { device, .. }) if self.jobs.contains(&device) => {
                        ready.insert(device);
                    }
                    Some(EventKind::BlockJobError { device, operation, .. }) if self.jobs.contains(&device) => {
                        last_error = Some(format!("{operation} error"));
                    }
                    Some(EventKind::BlockJobCompleted { device, error, .. }) if self.jobs.contains(&device) => {
                        let reason = error.or(last_error).unwrap_or_else(|| "it completed on its own".into());
                        return Err(MigrateError::MirrorEnded { job: device, reason });
                    }
                    Some(EventKind::BlockJobCancelled { device, .. }) if self.jobs.contains(&device) => {
                        let reason = last_error.unwrap_or_else(|| "it was cancelled".into());
                        return Err(MigrateError::MirrorEnded { job: device, reason });
                    }
                    Some(_) => {}
                    None => poll = true,
                },
                _ = tick.tick() => poll = true,
            }
            if poll {
                let p = self.poll(&mut ready, last_error.as_deref()).await?;
                progress(p);
            }
        }
        let p = self.poll(&mut ready, last_error.as_deref()).await?;
        progress(p);
        Ok(())
    }

    /// Reads the jobs: progress, and (for lost events) which are ready or
    /// gone.
    async fn poll(
        &mut self,
        ready: &mut BTreeSet<String>,
        last_error: Option<&str>,
    ) -> Result<MirrorProgress, MigrateError> {
        let jobs = self
            .qmp
            .query_block_jobs()
            .await
            .map_err(MigrateError::qmp("query-block-jobs"))?;
        let mut p = MirrorProgress::default();
        for want in &self.jobs {
            let Some(j) = jobs.iter().find(|j| &j.device == want) else {
                return Err(MigrateError::MirrorEnded {
                    job: want.clone(),
                    reason: last_error.unwrap_or("no reason reported").to_string(),
                });
            };
            if j.status.is_ending() {
                return Err(MigrateError::MirrorEnded {
                    job: want.clone(),
                    reason: j
                        .error
                        .clone()
                        .or(last_error.map(str::to_string))
                        .unwrap_or_else(|| format!("it is {:?}", j.status)),
                });
            }
            if j.ready {
                ready.insert(want.clone());
            }
            p.done += j.offset;
            p.len += j.len;
        }
        self.copied = p.done;
        Ok(p)
    }

    /// With the guest paused: ends every mirror in sync (a ready mirror
    /// cancelled completes without pivoting) and waits for each
    /// `BLOCK_JOB_COMPLETED`, up to `timeout`.
    pub async fn finish_in_sync(&mut self, timeout: Duration) -> Result<(), MigrateError> {
        // Only the events from now on matter.
        self.events = self.qmp.events();
        for job in &self.jobs {
            self.qmp
                .block_job_cancel(job, false)
                .await
                .map_err(MigrateError::qmp(format!("ending the mirror {job}")))?;
        }
        let mut left: BTreeSet<String> = self.jobs.iter().cloned().collect();
        let deadline = Instant::now() + timeout;
        while !left.is_empty() {
            let ev = tokio::time::timeout_at(
                deadline.into(),
                next_event(&mut self.events, "the disk mirrors to end"),
            )
            .await
            .map_err(|_| MigrateError::Timeout {
                what: format!("the end of the disk mirrors ({left:?} still running)"),
                waited: timeout,
            })??;
            match ev {
                Some(EventKind::BlockJobCompleted { device, error, .. })
                    if left.contains(&device) =>
                {
                    if let Some(reason) = error {
                        return Err(MigrateError::MirrorEnded {
                            job: device,
                            reason,
                        });
                    }
                    left.remove(&device);
                }
                Some(EventKind::BlockJobCancelled { device, .. }) if left.contains(&device) => {
                    return Err(MigrateError::MirrorEnded {
                        job: device,
                        reason: "it was cancelled before it was in sync".into(),
                    });
                }
                Some(_) => {}
                None => {
                    // Events lost: a job gone can no longer tell how it ended.
                    let jobs = self
                        .qmp
                        .query_block_jobs()
                        .await
                        .map_err(MigrateError::qmp("query-block-jobs"))?;
                    if let Some(gone) = left.iter().find(|l| !jobs.iter().any(|j| &j.device == *l))
                    {
                        return Err(MigrateError::MirrorEnded {
                            job: gone.clone(),
                            reason: "its end was not seen (QMP events lost)".into(),
                        });
                    }
                }
            }
        }
        self.jobs.clear();
        Ok(())
    }

    /// Undoes the mirrors: forced cancels, then the NBD nodes go. Returns
    /// what could not be undone (each also logged at warn).
    pub async fn abort(&mut self) -> Vec<String> {
        let jobs = std::mem::take(&mut self.jobs);
        let nodes = std::mem::take(&mut self.nodes);
        abort_mirrors(&self.qmp, &jobs, &nodes).await
    }
}

/// Forced cancels of `jobs`, a wait for them to go (on their events, at
/// most [`ABORT_WAIT`]), then `blockdev-del` of `nodes`. Returns what
/// failed, each also logged at warn.
async fn abort_mirrors(qmp: &QmpClient, jobs: &[String], nodes: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut warn = |what: String| {
        tracing::warn!(socket = %qmp.path().display(), "{what}");
        problems.push(what);
    };
    let mut events = qmp.events();
    let running: Vec<String> = match qmp.query_block_jobs().await {
        Ok(list) => jobs
            .iter()
            .filter(|j| list.iter().any(|l| &&l.device == j))
            .cloned()
            .collect(),
        Err(e) => {
            warn(format!("query-block-jobs before the cancel: {e}"));
            jobs.to_vec()
        }
    };
    for job in &running {
        if let Err(e) = qmp.block_job_cancel(job, true).await {
            warn(format!("cancelling the mirror {job}: {e}"));
        }
    }
    let deadline = Instant::now() + ABORT_WAIT;
    let mut left: BTreeSet<&String> = running.iter().collect();
    while !left.is_empty() && Instant::now() < deadline {
        let ev = tokio::time::timeout_at(deadline.into(), next_event(&mut events, "cancels")).await;
        match ev {
            Ok(Ok(Some(
                EventKind::BlockJobCancelled { device, .. }
                | EventKind::BlockJobCompleted { device, .. },
            ))) => {
                left.remove(&device);
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => match qmp.query_block_jobs().await {
                Ok(list) => left.retain(|l| list.iter().any(|j| &&j.device == l)),
                Err(_) => break,
            },
            Ok(Err(_)) | Err(_) => break,
        }
    }
    if !left.is_empty() {
        warn(format!(
            "mirrors still running after their cancel: {left:?}"
        ));
    }
    for node in nodes {
        if let Err(e) = qmp.blockdev_del(node).await {
            warn(format!("removing the NBD node {node}: {e}"));
        }
    }
    problems
}

/// The mirror nodes a migration left in a QEMU (after a restart of the
/// daemon that ran it): guest node names whose `mig-` node exists.
pub async fn leftover_mirror_nodes(qmp: &QmpClient) -> Result<Vec<String>, MigrateError> {
    let nodes = qmp
        .query_named_block_nodes()
        .await
        .map_err(MigrateError::qmp("query-named-block-nodes"))?;
    Ok(nodes
        .iter()
        .filter_map(|n| n.node_name.strip_prefix(MIRROR_PREFIX))
        .map(str::to_string)
        .collect())
}

impl MirrorSet {
    /// The set of mirrors a migration left on `qmp` for the guest nodes
    /// `nodes` (found with [`leftover_mirror_nodes`]), to [`Self::abort`].
    pub fn leftover(qmp: &QmpClient, nodes: &[String]) -> Self {
        let mut set = MirrorSet::new(qmp);
        set.nodes = nodes.iter().map(|n| job_of(n)).collect();
        set.jobs = set.nodes.clone();
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::tests::{fake_server, read_msg, send};
    use serde_json::json;

    /// A fake QEMU whose one mirror job polls as running at 40 %, and that
    /// sends `event` right after `blockdev-mirror`; the mirror set is added.
    async fn mirror_set_sending(event: serde_json::Value) -> (tempfile::TempDir, QmpClient) {
        let (dir, path) = fake_server(move |mut r, mut w| async move {
            loop {
                let m = read_msg(&mut r).await;
                let reply = match m["execute"].as_str() {
                    Some("query-block-jobs") => json!([{"device": "mig-disk0", "type": "mirror",
                        "len": 100, "offset": 40, "ready": false, "status": "running"}]),
                    _ => json!({}),
                };
                send(&mut w, json!({"return": reply, "id": m["id"]})).await;
                if m["execute"] == "blockdev-mirror" {
                    send(&mut w, event.clone()).await;
                }
            }
        })
        .await;
        (dir, QmpClient::connect(&path).await.unwrap())
    }

    fn target() -> MirrorTarget {
        MirrorTarget {
            node: "disk0".into(),
            addr: InetAddr::new("127.0.0.1", 1),
            export: "disk0".into(),
        }
    }

    /// The mirrors count as in sync on `BLOCK_JOB_READY`, whatever a poll
    /// of the jobs says: the wait ends on the event, not on a poll.
    #[tokio::test]
    async fn the_mirrors_are_ready_on_the_ready_event_whatever_a_poll_says() {
        let (_dir, qmp) = mirror_set_sending(
            json!({"event": "BLOCK_JOB_READY", "data": {"device": "mig-disk0",
            "type": "mirror", "len": 100, "offset": 100, "speed": 0}}),
        )
        .await;
        let mut set = MirrorSet::new(&qmp);
        set.add(&target(), None).await.unwrap();
        let mut seen = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            set.wait_ready(std::future::pending(), |p| seen.push(p)),
        )
        .await
        .expect("the wait ended on the event")
        .unwrap();
        assert_eq!(seen.last().map(|p| p.len), Some(100), "{seen:?}");
    }

    /// A mirror that ends before it is in sync fails the wait at once,
    /// with QEMU's reason.
    #[tokio::test]
    async fn a_mirror_ending_early_fails_the_wait_with_its_reason() {
        let (_dir, qmp) = mirror_set_sending(
            json!({"event": "BLOCK_JOB_COMPLETED", "data": {"device": "mig-disk0",
            "type": "mirror", "len": 100, "offset": 40, "speed": 0,
            "error": "Input/output error"}}),
        )
        .await;
        let mut set = MirrorSet::new(&qmp);
        set.add(&target(), None).await.unwrap();
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            set.wait_ready(std::future::pending(), |_| {}),
        )
        .await
        .expect("the wait ended on the event")
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("mig-disk0") && msg.contains("Input/output error"),
            "{msg}"
        );
    }
}
